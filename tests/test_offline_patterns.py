"""graph/offline/patterns.py against the real formats: the answers of the real tools
(tools/lc_tools.py) and the real prompts rendered by graph/prompts.py. A format changed on either
side fails here, instead of silently blinding the offline researcher and director."""

import re
from pathlib import Path

import pytest

from helpers_tools import make_workspace
from graph import results
from graph.offline import patterns
from graph.offline.constants import constants_in_text, parse_constants
from graph.offline.search import move_from_patch, parse_history, plan
from graph.prompts import directive_section, render_prompt
from tools import RunResult, make_tools
from tools.patching import DIVIDER_RE, REPLACE_RE, SEARCH_RE

FIXTURE = (Path(__file__).parent / "fixtures" / "train.py").read_text()
TASK = dict(iteration=3, best_val_bpb="1.400000", best_runs=2, baseline_val_bpb="1.500000",
            noise="σ = 0.0100 per run (6 repeated runs)", stall="", max_agent_steps=12, others="")


@pytest.fixture
def tools(tmp_path):
    """The four real tools on a workspace holding FIXTURE, with a real results.tsv behind read_metrics."""
    ws = make_workspace(tmp_path, train_py=FIXTURE)
    tsv = tmp_path / "results.tsv"
    found = make_tools(ws, results_path=tsv, logs_dir=tmp_path / "logs", history=lambda: results.history_table(tsv))
    return {t.name: t for t in found}, ws, tmp_path


# -----------------------------------------------------------------------------
# the tools' answers


def test_file_text_undoes_the_real_read_file_numbering(tools):
    tools, _, _ = tools
    answer = tools["read_file"].invoke({"path": "train.py"})
    header, *lines = answer.splitlines()
    assert not patterns.NUMBERED.match(header)
    assert all(patterns.NUMBERED.match(line) for line in lines)
    assert patterns.file_text(answer) == FIXTURE.rstrip("\n")
    assert parse_constants(patterns.file_text(answer)) == parse_constants(FIXTURE)


def test_the_agent_prompt_shows_what_read_file_prints(tmp_path):
    """agent_system.md's example line is exactly read_file's line; the old `12| ` form is refused."""
    system = render_prompt("agent_system", {})
    example = re.search(r"`( *(\d+))\\t([^`]+)`", system)
    assert example, "agent_system.md shows no read_file line like `    12\\tDEPTH = 8`"
    number, text = int(example.group(2)), example.group(3)
    ws = make_workspace(tmp_path, train_py="".join(f"# {i}\n" for i in range(1, number)) + text + "\n")
    [read_file, *_] = make_tools(ws, logs_dir=tmp_path / "logs")
    shown = read_file.invoke({"path": "train.py", "start_line": number, "end_line": number}).splitlines()[1]
    assert shown == f"{example.group(1)}\t{text}"
    assert patterns.NUMBERED.match(shown).group(1) == text
    assert not patterns.NUMBERED.match(f"{number:>6}| {text}")


def test_apply_patch_answers_and_our_patches(tools):
    tools, ws, _ = tools
    move = plan(parse_constants(FIXTURE), [])[0]
    assert move_from_patch(move.patch).key == move.key
    answer = tools["apply_patch"].invoke({"patch": move.patch})
    assert answer.startswith("Applied") and not patterns.reports_failure("apply_patch", answer)
    assert move.changes[0].new_line in (ws.root / "train.py").read_text()
    # the same patch again: its SEARCH is gone
    missed = tools["apply_patch"].invoke({"patch": move.patch})
    assert patterns.reports_failure("apply_patch", missed) and patterns.PATCH_MISS.search(missed), missed
    refused = tools["apply_patch"].invoke({"patch": "prepare.py\n" + patterns.patch_block("x", "y")})
    assert patterns.reports_failure("apply_patch", refused), refused
    # our markers are the plain form of tools/patching.py's
    assert SEARCH_RE.match(patterns.SEARCH) and DIVIDER_RE.match(patterns.DIVIDER) and REPLACE_RE.match(patterns.REPLACE)


def test_read_file_errors_are_failures(tools):
    tools, _, _ = tools
    assert patterns.reports_failure("read_file", tools["read_file"].invoke({"path": "nope.py"}))
    assert not patterns.reports_failure("read_file", tools["read_file"].invoke({"path": "train.py"}))


def test_run_figures_read_the_real_run_answers(tools):
    tools, _, tmp_path = tools
    assert patterns.run_figures(tools["read_metrics"].invoke({})) == (None, None)
    logs = tmp_path / "logs"
    logs.mkdir()
    RunResult("ok", "", {"val_bpb": 1.2345671, "training_seconds": 300.0}).save(logs / "run-1.json")
    ok = tools["read_metrics"].invoke({})
    assert patterns.run_figures(ok) == ("ok", "1.234567"), ok
    crash = RunResult("crash", "train.py raised ValueError", tail="Traceback ...")
    assert patterns.run_figures(crash.to_text()) == ("crash", None)     # what run_training answers


# -----------------------------------------------------------------------------
# the prompts


def test_the_task_prompt_gives_back_its_history_and_directive(tmp_path):
    tsv = tmp_path / "results.tsv"
    rows = [(0, results.KEEP, "baseline", ""), (1, results.KEEP, "MATRIX_LR: 0.04 -> 0.06", ""),
            (2, results.DISCARD, "DEPTH: 8 -> 9", "I think you could try DEPTH 9"),
            (3, results.CRASH, "HEAD_DIM: 128 -> 256", ""), (4, results.NO_RUN, "WINDOW_PATTERN: \"SSSL\" -> \"SL\"", "")]
    for iteration, status, description, directive in rows:
        results.append_row(tsv, {"iteration": iteration, "status": status, "val_bpb": "1.400000", "runs": 1,
                                 "description": description, "directive": directive})
    history = results.history_table(tsv)
    directive = "I think you could try setting EMBEDDING_LR to 0.9, since\nembeddings see few updates."
    task = render_prompt("agent_task", dict(TASK, history=history, directive_section=directive_section(directive)))
    found, rest = patterns.split_directive(task)
    assert found == directive
    assert [(p.name, p.old, p.new, p.status) for p in parse_history(rest)] == [
        ("MATRIX_LR", 0.04, 0.06, "keep"), ("DEPTH", 8.0, 9.0, "discard"),
        ("HEAD_DIM", 128.0, 256.0, "crash"), ("WINDOW_PATTERN", "SSSL", "SL", "no-run")]
    # no pending directive: the task has none, though the history marks rows [directive]
    assert "[directive]" in history
    assert patterns.split_directive(render_prompt("agent_task", dict(TASK, history=history, directive_section="")))[0] == ""


def test_every_verdict_of_results_is_a_status_word():
    for status in (results.KEEP, results.DISCARD, results.CRASH, results.NO_RUN):
        assert patterns.STATUSES[patterns.STATUS_WORD.search(f"| {status} |").group(1)] == status


def test_the_director_prompts_give_back_their_parts():
    prompt = render_prompt("director_summarize", {"train_py": FIXTURE})
    assert patterns.prompt_step(prompt) == "summarize"
    assert patterns.code_block(prompt).strip() == FIXTURE.strip()

    summary = "- model: DEPTH = 8, ASPECT_RATIO = 64\n- optimizer: MATRIX_LR = 0.04"
    history = "iter | val_bpb | status | description\n   1 | 1.5 | discard | DEPTH: 8 -> 9"
    paper = "Title: Cooldown\n\nAbstract: a long cooldown phase helps."
    prompt = render_prompt("director_directive", dict(summary=summary, history=history, stall="3 without a new best",
                                                      paper=paper))
    assert patterns.prompt_step(prompt) == "directive"
    assert patterns.section(prompt, ("train.py", "summary")) == summary
    assert patterns.section(prompt, ("history",)) == history
    assert patterns.section(prompt, ("read", "paper")) == paper
    assert set(constants_in_text(summary)) == {"DEPTH", "ASPECT_RATIO", "MATRIX_LR"}
    assert f'"{patterns.TENTATIVE}"' in prompt          # the prompt asks for directives that start so


def test_the_agent_prompt_shows_our_patch_markers():
    system = render_prompt("agent_system", {})
    assert all(marker in system for marker in (patterns.SEARCH, patterns.DIVIDER, patterns.REPLACE))


def test_the_offline_researcher_leaves_constants_other_agents_are_changing():
    """prompts/agent_others.md lists the changed lines of the experiments in flight; the offline
    researcher reads the names off `+NAME = ...` lines and picks another constant."""
    from graph.agent import others_text
    claims = [{"agent": "a2", "device": "1", "iteration": 5, "trying": "-MATRIX_LR = 0.02 | +MATRIX_LR = 0.03"},
              {"agent": "a3", "device": "0", "iteration": 6, "trying": ""}]
    task = render_prompt("agent_task", dict(TASK, history="(no experiments yet)", directive_section="",
                                            others=others_text(claims)))
    assert "agent a3 (device 0), experiment 6: still thinking" in task
    assert patterns.in_flight_names(task) == ["MATRIX_LR"]
    assert patterns.in_flight_names(task.replace("Running now on other agents", "Something else")) == []
