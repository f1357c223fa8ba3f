"""The offline researcher and director: real tool calls, a history-aware search, determinism."""

import re
from pathlib import Path

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool

from graph.offline import OFFLINE_LABEL, OfflineDirector, OfflineResearcher, parse_history
from graph.offline.constants import parse_constants
from graph.offline.models import NO_EXPERIMENT_LEFT
from graph.prompts import directive_section, render_prompt

FIXTURE = (Path(__file__).parent / "fixtures" / "train.py").read_text()
DESCRIPTION = re.compile(r"^([A-Z][A-Z0-9_]*): (\S+) -> ([^\s,]+)")
BLOCK = re.compile(r"<<<<<<< SEARCH\n(.*?)\n=======\n(.*?)\n>>>>>>> REPLACE", re.S)


# -----------------------------------------------------------------------------
# a tiny stand-in for the tools and the graph


def apply_patch_text(text: str, patch: str) -> str:
    """SEARCH/REPLACE applier: each SEARCH must occur exactly once."""
    blocks = BLOCK.findall(patch)
    assert blocks, patch
    for search, replace in blocks:
        assert text.count(search) == 1, f"SEARCH not unique or missing: {search!r}"
        text = text.replace(search, replace)
    return text


def numbered(text: str) -> str:
    """What read_file answers (test_offline_patterns checks the real tool against patterns.py)."""
    lines = text.splitlines()
    return "\n".join([f"train.py (lines 1-{len(lines)} of {len(lines)})"]
                     + [f"{i:6d}\t{line}" for i, line in enumerate(lines, 1)])


def history_table(rows: list[tuple[str, str]]) -> str:
    lines = ["| # | commit | val_bpb | status | description |", "|---|---|---|---|---|",
             "| 0 | abc1234 | 1.500000 | keep | baseline |"]
    for i, (status, description) in enumerate(rows, 1):
        lines.append(f"| {i} | {i:07x} | {1.5 - i / 1000:.6f} | {status} | {description} |")
    return "\n".join(lines)


def task(rows: list[tuple[str, str]], directive: str | None = None, iteration: int = 1) -> HumanMessage:
    text = render_prompt("agent_task", dict(
        iteration=iteration, best_val_bpb="1.400000", best_runs=3, baseline_val_bpb="1.500000",
        noise="σ = 0.0100 per run (6 repeated runs)",
        history=history_table(rows), directive_section=directive_section(directive),
        stall="", max_agent_steps=12, others="",
    ))
    return HumanMessage(text)


RUN_OK = "status: ok\nval_bpb: 1.234567\ntraining_seconds: 300.0"
DUPLICATE = ("Refused: agent a2 is training this same code right now (experiment 7: -X | +Y). Its result will "
             "be in the history; try a different change, then call run_training again.")


def run_iteration(model, source: str, rows, directive=None, patch_ok=lambda patch: True, run=lambda source: RUN_OK):
    """Drive one iteration like the graph would; returns (final message, calls, patched source).
    `run(source)` answers run_training for the source as patched."""
    messages = [SystemMessage(render_prompt("agent_system", {})), task(rows, directive)]
    calls, patched = [], source
    for _ in range(12):
        reply = model.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            return reply, calls, patched
        call = reply.tool_calls[0]
        calls.append(call)
        if call["name"] == "read_file":
            out = numbered(source)
        elif call["name"] == "apply_patch":
            if patch_ok(call["args"]["patch"]):
                patched = apply_patch_text(patched, call["args"]["patch"])
                out = "applied 1 SEARCH/REPLACE block to train.py"
            else:
                out = "error: SEARCH block 1 not found in train.py"
        elif call["name"] == "run_training":
            out = run(patched)
        else:
            out = "unknown tool"
        messages.append(ToolMessage(out, tool_call_id=call["id"], name=call["name"]))
    raise AssertionError("the researcher never finished")


def researcher():
    return OfflineResearcher().bind_tools([])


# -----------------------------------------------------------------------------
# the researcher


def test_protocol_three_tool_calls_then_parseable_answer():
    final, calls, patched = run_iteration(researcher(), FIXTURE, [])
    assert [c["name"] for c in calls] == ["read_file", "apply_patch", "run_training"]
    assert calls[0]["args"] == {"path": "train.py"}
    assert all(c["id"] and c["type"] == "tool_call" for c in calls)
    first, second = final.content.splitlines()[:2]
    m = DESCRIPTION.match(first)
    assert m, first
    name, old, new = m.groups()
    assert parse_constants(FIXTURE)[name].text == old
    assert parse_constants(patched)[name].text == new
    assert second.startswith(OFFLINE_LABEL)
    assert "1.234567" in second
    # Only that line (and coupled ones) changed.
    changed = [a for a, b in zip(FIXTURE.splitlines(), patched.splitlines()) if a != b]
    assert 1 <= len(changed) <= 2


def test_description_parses_back_from_a_history_row():
    final, _, _ = run_iteration(researcher(), FIXTURE, [])
    description = final.content.splitlines()[0]
    (past,) = parse_history(history_table([("keep", description)]))
    assert past.status == "keep" and past.name == DESCRIPTION.match(description).group(1)


def test_continues_a_kept_direction():
    source = FIXTURE.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.06")
    final, calls, patched = run_iteration(researcher(), source, [("keep", "MATRIX_LR: 0.04 -> 0.06")])
    assert final.content.splitlines()[0] == "MATRIX_LR: 0.06 -> 0.09"
    assert "MATRIX_LR = 0.09  # Muon" in patched
    assert "continues MATRIX_LR" in final.content


def test_tries_the_other_direction_after_a_discarded_step():
    final, _, _ = run_iteration(researcher(), FIXTURE, [("discard", "MATRIX_LR: 0.04 -> 0.06")])
    assert final.content.splitlines()[0] == "MATRIX_LR: 0.04 -> 0.0267"
    assert "other direction" in final.content
    # but not when the other direction was tried already: then something else
    final, _, _ = run_iteration(researcher(), FIXTURE, [("discard", "MATRIX_LR: 0.04 -> 0.0267"),
                                                        ("discard", "MATRIX_LR: 0.04 -> 0.06")])
    assert not final.content.splitlines()[0].startswith("MATRIX_LR")


def test_never_repeats_across_30_iterations():
    source, rows, seen = FIXTURE, [], set()
    model = researcher()
    for i in range(30):
        final, calls, patched = run_iteration(model, source, rows)
        description = final.content.splitlines()[0]
        if description == NO_EXPERIMENT_LEFT:
            break
        name, old, new = DESCRIPTION.match(description).groups()
        key = (name, float(eval(old)) if old[0].isdigit() else old, float(eval(new)) if new[0].isdigit() else new)
        assert key not in seen, f"iteration {i} repeats {description}"
        seen.add(key)
        status = ("keep", "discard", "discard", "crash")[(i * 7 + len(name)) % 4]
        if status == "keep":
            source = patched
        rows.append((status, description))
    assert len(seen) == 30


def test_deterministic_for_the_same_history():
    rows = [("keep", "MATRIX_LR: 0.04 -> 0.06"), ("discard", "DEPTH: 8 -> 9"), ("crash", "HEAD_DIM: 128 -> 256")]
    source = FIXTURE.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.06")
    a = run_iteration(OfflineResearcher().bind_tools([]), source, rows)
    b = run_iteration(OfflineResearcher(), source, rows)
    assert a[0].content == b[0].content
    assert [c["args"] for c in a[1]] == [c["args"] for c in b[1]]
    assert [c["id"] for c in a[1]] == [c["id"] for c in b[1]]


def test_different_histories_can_start_differently():
    starts = {run_iteration(researcher(), FIXTURE, [("discard", f"SEED: {s} -> {s + 1}")])[0].content.splitlines()[0]
              for s in range(8)}
    assert len(starts) > 1  # the tie-break is seeded by the history


def test_failed_patch_moves_on_to_the_next_candidate():
    refused = []

    def patch_ok(patch):
        if not refused:
            refused.append(patch)
            return False
        return True

    final, calls, _ = run_iteration(researcher(), FIXTURE, [], patch_ok=patch_ok)
    assert [c["name"] for c in calls] == ["read_file", "apply_patch", "apply_patch", "run_training"]
    assert calls[1]["args"]["patch"] != calls[2]["args"]["patch"]
    assert DESCRIPTION.match(final.content)


def test_a_change_refused_as_a_duplicate_is_undone_and_another_is_trained():
    """Another agent runs the same change (the ledger refuses it): undo it, try the next candidate."""
    trained = []

    def run(source):
        trained.append(source)
        return DUPLICATE if len(trained) == 1 else RUN_OK

    final, calls, patched = run_iteration(researcher(), FIXTURE, [], run=run)
    assert [c["name"] for c in calls] == ["read_file", "apply_patch", "run_training", "apply_patch", "apply_patch",
                                          "run_training"]
    first, undo, second = (c["args"]["patch"] for c in calls if c["name"] == "apply_patch")
    assert apply_patch_text(apply_patch_text(FIXTURE, first), undo) == FIXTURE
    assert patched == apply_patch_text(FIXTURE, second) != trained[0]      # only the second change is in
    assert first != second                                                  # another change
    assert DESCRIPTION.match(final.content)
    name, value = second.split("=======")[1].split(">>>>>>>")[0].split("#")[0].split("=")
    assert final.content.splitlines()[0].startswith(name.strip()) and value.strip() in final.content.splitlines()[0]


def test_gives_up_after_bounded_duplicate_refusals():
    final, calls, _ = run_iteration(researcher(), FIXTURE, [], run=lambda source: DUPLICATE)
    assert [c["name"] for c in calls].count("run_training") == 3
    assert "no experiment: 3 changes were refused as duplicates" in final.content


def test_gives_up_after_bounded_patch_failures():
    final, calls, _ = run_iteration(researcher(), FIXTURE, [], patch_ok=lambda p: False)
    assert [c["name"] for c in calls].count("apply_patch") == 3
    assert "run_training" not in [c["name"] for c in calls]
    assert OFFLINE_LABEL in final.content


def test_says_so_when_every_experiment_was_tried():
    source = 'WINDOW_PATTERN = "SSSL"\n'
    rows = []
    for _ in range(5):
        final, calls, _ = run_iteration(researcher(), source, rows)
        description = final.content.splitlines()[0]
        if description == NO_EXPERIMENT_LEFT:
            break
        rows.append(("discard", description))
    assert description == NO_EXPERIMENT_LEFT
    assert len(rows) == 3  # "L", "SL", "SSL"
    assert [c["name"] for c in calls] == ["read_file"]  # no training


def test_follows_the_offline_directors_directive():
    summary = OfflineDirector().invoke(render_prompt("director_summarize", {"train_py": FIXTURE})).content
    directive = OfflineDirector().invoke(render_prompt("director_directive", dict(
        summary=summary, history=history_table([("discard", "DEPTH: 8 -> 9")]), stall="3 without a new best", paper="",
    ))).content
    final, calls, _ = run_iteration(researcher(), FIXTURE, [("discard", "DEPTH: 8 -> 9")], directive=directive)
    lines = final.content.splitlines()
    assert lines[1].startswith("directive: followed"), final.content
    name = DESCRIPTION.match(lines[0]).group(1)
    assert name in directive
    assert OFFLINE_LABEL in lines[2]


def test_rejects_a_directive_it_cannot_map():
    final, calls, _ = run_iteration(researcher(), FIXTURE, [], directive="I think you could try SwiGLU in the MLP.")
    assert final.content.splitlines()[1].startswith("directive: rejected")
    assert [c["name"] for c in calls] == ["read_file", "apply_patch", "run_training"]


def test_bind_tools_accepts_real_tools():
    @tool
    def read_file(path: str, start_line: int = 1, end_line: int | None = None) -> str:
        """Read a file."""
        return ""

    bound = OfflineResearcher().bind_tools([read_file])
    assert isinstance(bound, OfflineResearcher) and bound.tool_names == ("read_file",)


def test_runs_inside_a_langgraph_tool_loop():
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    workspace = {"train.py": FIXTURE}

    @tool
    def read_file(path: str, start_line: int = 1, end_line: int | None = None) -> str:
        """Read a file with numbered lines."""
        return numbered(workspace[path])

    @tool
    def apply_patch(patch: str) -> str:
        """Apply SEARCH/REPLACE blocks to train.py."""
        workspace["train.py"] = apply_patch_text(workspace["train.py"], patch)
        return "applied"

    @tool
    def run_training() -> str:
        """Train for the budget."""
        return "status: ok\nval_bpb: 1.111111"

    @tool
    def read_metrics() -> str:
        """The last run's metrics."""
        return "val_bpb: 1.111111"

    tools = [read_file, apply_patch, run_training, read_metrics]
    model = OfflineResearcher().bind_tools(tools)
    graph = StateGraph(MessagesState)
    graph.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    out = graph.compile().invoke({"messages": [task([])]})
    final = out["messages"][-1]
    assert isinstance(final, AIMessage) and not final.tool_calls
    assert DESCRIPTION.match(final.content) and "1.111111" in final.content
    assert workspace["train.py"] != FIXTURE


# -----------------------------------------------------------------------------
# the director


def test_director_summarizes_the_constants():
    summary = OfflineDirector().invoke(render_prompt("director_summarize", {"train_py": FIXTURE})).content
    assert "offline director (no LLM)" in summary
    for fragment in ["DEPTH = 8", "MATRIX_LR = 0.04", 'WINDOW_PATTERN = "SSSL"', "TOTAL_BATCH_TOKENS = 2**19", "GPT"]:
        assert fragment in summary


def directive_for(rows, paper=""):
    summary = OfflineDirector().invoke(render_prompt("director_summarize", {"train_py": FIXTURE})).content
    prompt = render_prompt("director_directive", dict(
        summary=summary, history=history_table(rows), stall="3 experiments without a new best", paper=paper))
    return OfflineDirector().invoke([SystemMessage("You direct research."), HumanMessage(prompt)]).content


def test_director_writes_one_tentative_directive():
    text = directive_for([("discard", "MATRIX_LR: 0.04 -> 0.06"), ("discard", "DEPTH: 8 -> 9")])
    assert text.startswith("I think you could try")
    assert re.search(r"\b[A-Z][A-Z0-9_]+ to \S+", text)
    assert text == directive_for([("discard", "MATRIX_LR: 0.04 -> 0.06"), ("discard", "DEPTH: 8 -> 9")])


def test_director_never_names_the_paper_and_may_use_its_idea():
    paper = ("Title: Cooldown Is All You Need\n"
             "Abstract: We study the learning rate schedule and show that a long cooldown phase ...")
    text = directive_for([("discard", "MATRIX_LR: 0.04 -> 0.06")], paper=paper)
    assert text.startswith("I think you could try")
    assert "Cooldown Is All You Need" not in text
    assert "WARMDOWN_RATIO" in text or "FINAL_LR_FRAC" in text


def test_director_pushes_a_kept_direction():
    # In the summary MATRIX_LR is still 0.04, so the kept 0.04 -> 0.06 does not apply; use 0.06.
    summary = OfflineDirector().invoke(render_prompt(
        "director_summarize", {"train_py": FIXTURE.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.06")})).content
    prompt = render_prompt("director_directive", dict(
        summary=summary, history=history_table([("keep", "MATRIX_LR: 0.04 -> 0.06")]), stall="", paper=""))
    text = OfflineDirector().invoke(prompt).content
    assert text.startswith("I think you could try setting MATRIX_LR to 0.09")


def test_only_the_last_task_counts_so_resumes_match():
    rows = [("keep", "MATRIX_LR: 0.04 -> 0.06")]
    source = FIXTURE.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.06")
    fresh = [task(rows)]
    earlier = [task([]), AIMessage("DEPTH: 8 -> 9"), *fresh]  # a graph that keeps old turns
    model = researcher()
    assert model.invoke(fresh).tool_calls[0]["args"] == model.invoke(earlier).tool_calls[0]["args"]
    read = ToolMessage(numbered(source), tool_call_id=model.invoke(fresh).tool_calls[0]["id"])
    a = model.invoke(fresh + [model.invoke(fresh), read])
    b = model.invoke(earlier + [model.invoke(earlier), read])
    assert a.tool_calls[0]["args"] == b.tool_calls[0]["args"]


def test_a_history_with_a_directive_column_is_not_a_pending_directive():
    text = ("## History (with directives)\n\n| 1 | discard | DEPTH: 8 -> 9 | I think you could try setting MATRIX_LR to 0.06 |\n")
    messages = [HumanMessage(text)]
    model = researcher()
    messages += [model.invoke(messages)]
    messages += [ToolMessage(numbered(FIXTURE), tool_call_id=messages[-1].tool_calls[0]["id"])]
    messages += [model.invoke(messages)]
    messages += [ToolMessage("applied", tool_call_id=messages[-1].tool_calls[0]["id"])]
    messages += [model.invoke(messages)]
    messages += [ToolMessage("status: ok\nval_bpb: 1.2", tool_call_id=messages[-1].tool_calls[0]["id"])]
    final = model.invoke(messages)
    assert "directive:" not in final.content
    assert not final.content.startswith("DEPTH: 8 -> 9")


def test_refuses_politely_when_a_needed_tool_is_not_bound():
    @tool
    def read_metrics() -> str:
        """The last run's metrics."""
        return ""

    reply = OfflineResearcher().bind_tools([read_metrics]).invoke([task([])])
    assert not reply.tool_calls and "read_file tool is not available" in reply.content


def test_int_zero_ratios_and_underscored_ints():
    source = "WARMUP_RATIO = 0\nWEIGHT_DECAY = 0\nTOTAL_BATCH_TOKENS = 65_536\nDEVICE_BATCH_SIZE = 8\n"
    seen = set()
    rows = []
    for _ in range(6):
        final, _, _ = run_iteration(researcher(), source, rows)
        seen.add(final.content.splitlines()[0])
        rows.append(("discard", final.content.splitlines()[0]))
    assert {"WARMUP_RATIO: 0 -> 0.05", "WEIGHT_DECAY: 0 -> 0.1", "TOTAL_BATCH_TOKENS: 65_536 -> 131_072",
            "TOTAL_BATCH_TOKENS: 65_536 -> 32_768, DEVICE_BATCH_SIZE: 8 -> 4"} <= seen


def test_director_without_markers_and_unknown_steps():
    director = OfflineDirector()
    assert director.invoke(f"Summarize:\n```python\n{FIXTURE}```").content.startswith("offline director (no LLM)")
    assert director.invoke("Write one directive.\n## Current train.py\nDEPTH = 8\n").content.startswith(
        "I think you could try setting DEPTH to")
    assert "nothing to add" in director.invoke("<!-- step: pick-paper -->\nWhich paper?").content


# -----------------------------------------------------------------------------
# the package


def test_the_search_policy_is_pure_python():
    """constants, knobs, search, directive and patterns import only the standard library and each
    other: the search can be tested and reused without LangChain."""
    import ast
    import sys

    pure = {"constants", "knobs", "search", "directive", "patterns"}
    folder = Path(__file__).resolve().parent.parent / "graph" / "offline"
    for name in sorted(pure):
        tree = ast.parse((folder / f"{name}.py").read_text())
        imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        imported += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        foreign = [m for m in imported if m.split(".")[0] not in sys.stdlib_module_names | {"__future__"}
                   and m not in {f"graph.offline.{p}" for p in pure}]
        assert foreign == [], f"{name}.py imports {foreign}"
