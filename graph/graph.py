"""
The campaign graph:

    setup -> plateau -> [director] -> agent -> judge -> [confirm -> judge]* -> plateau -> ... -> END

setup runs the baseline --noise-runs times with different seeds (the campaign's first measure of
seed noise); plateau sends the campaign through the director (graph/director.py) once
--plateau-patience experiments in a row went without a keep, counting from the last keep or the
last director firing, so a steady stall meets the director every K; agent is a tool-calling loop
over the four tools; judge records each run as a row of results.tsv and applies graph/noise.py's
rule: discard, keep, or (a run that beats the best's mean) confirm, which re-runs the same commit
with a fresh seed and hands the run back to judge. Every node is idempotent on resume: a node
re-run after a kill finds what its killed run already did (recorded rows, a commit) and does not
do it twice; a run killed mid-way is run again with the same seed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from graph import noise, results
from graph.configuration import Settings
from graph.llm import LLMUnavailable, Models, invoke_with_retry
from graph.prompts import directive_section, message_text, render_prompt
from graph.state import CampaignState, Outcome
from graph.tracing import annotate
from nanochat.config import HARNESS_FILE, HarnessConfig
from tools import RunResult, Workspace, make_tools, run_training
from tools.redact import Redactor, clip_for_model
from tools.workspace import git

EXPERIMENT_REF = "refs/autoresearch/experiments/{:05d}"   # every experiment's code stays reachable
CHOICES = ("followed", "adapted", "rejected")
FAULT_ENV = "AUTORESEARCH_FAULT"   # tests only: SIGKILL this process at a named point (resume tests)
DESCRIPTION_CHARS = 200


@dataclass
class Campaign:
    """Everything the nodes need that is not state: settings, paths, models, tools, the UI.

    `redactor` is the campaign's one redactor (tools/redact.py): the provider keys and every
    secret-looking environment value. What goes to the LLM, the tools' answers, the checkpoints
    and the traces passes it."""
    settings: Settings
    run_dir: Path
    models: Models
    workspace: Workspace
    on_event: Callable[[str, dict], None] = lambda kind, data: None   # the UI (graph/run.py)
    on_progress: Callable[[str], None] | None = None                  # training stdout lines
    stop_requested: threading.Event = field(default_factory=threading.Event)
    director: object | None = None      # graph.director.Director, when the director is enabled
    redactor: Redactor | None = None    # None: Redactor.from_env(settings.credentials), built here

    def __post_init__(self):
        if self.redactor is None:
            self.redactor = Redactor.from_env(self.settings.credentials)

    @property
    def results_path(self) -> Path:
        return self.run_dir / "results.tsv"

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def noise_runs(self) -> int:
        """Runs of each measured code: the baseline's, and a candidate's before it can be kept."""
        if self.settings.noise_runs:
            return self.settings.noise_runs
        device = HarnessConfig.read(self.workspace.root / HARNESS_FILE).resolved_profile().device
        return noise.default_runs(device)

    def seed(self, iteration: int, run: int) -> int:
        return noise.run_seed(self.settings.campaign, iteration, run)

    def tools(self, seed: int):
        return make_tools(self.workspace, results_path=self.results_path, logs_dir=self.logs_dir,
                          gpu=self.settings.gpu, on_progress=self.on_progress, prestart=self.settings.prestart,
                          redactor=self.redactor, unsafe=self.settings.unsafe_no_sandbox, seed=seed,
                          history=lambda: results.history_table(self.results_path))

    def train(self, run_name: str, seed: int, baseline: bool = False) -> RunResult:
        """A run outside the agent's loop: the baseline's (the first one's compile caches seed every
        later run) and the confirmations'."""
        return run_training(self.workspace, logs_dir=self.logs_dir, gpu=self.settings.gpu,
                            on_progress=self.on_progress, run_name=run_name, prestart=self.settings.prestart,
                            results_path=self.results_path, redact=self.redactor.text,
                            unsafe=self.settings.unsafe_no_sandbox, seed_compile_cache=baseline, seed=seed)

    def rows(self, iteration: int) -> list:
        return [r for r in results.rows(self.results_path) if r.iteration == iteration]


# -----------------------------------------------------------------------------
# Nodes

def setup_node(c: Campaign):
    def setup(state: CampaignState, config: RunnableConfig) -> dict:
        if state.get("best_commit"):
            annotate(config, iteration=0, commit=_short(state["best_commit"]), status="done before")
            return {}
        started = state.get("started_at") or time.time()
        runs = c.noise_runs
        done = c.rows(0)
        while not done or done[-1].status == results.MEASURE:   # killed mid-way: the missing runs only
            k = len(done) + 1
            c.workspace.discard()
            c.on_event("phase", {"iteration": 0, "phase": "baseline training" if runs == 1 else
                                 f"baseline training (run {k} of {runs}: measuring seed noise)"})
            run = c.train(f"iter-00000-baseline-{k}", seed=c.seed(0, k), baseline=k == 1)
            if run.status != "ok":
                c.on_event("error", {"message": f"the baseline train.py failed ({run.status}): {run.message}"})
                annotate(config, iteration=0, status=f"baseline {run.status}")
                return {"stop_reason": f"baseline failed: {run.status}", "started_at": started,
                        "iteration": 0, "stall": 0, "plateau": 0}
            sha = c.workspace.keep("baseline")
            values = [r.val_bpb for r in done if r.val_bpb is not None] + [run.val_bpb]
            measured = noise.Noise.pooled([values])
            if k < runs:
                status, reason = results.MEASURE, f"baseline run {k} of {runs} (measuring seed noise)"
            else:
                status = results.KEEP
                reason = f"baseline: mean of {k} run(s); " + (measured.describe() if k > 1 else
                                                              "--noise-runs 1: seed noise not measured")
            results.append_row(c.results_path, {
                **_row(sha, run, status, "baseline", 0, noise.mean(values) if status == results.KEEP else None),
                **_measured(run, k, values, measured, reason)})
            c.on_event("recorded", {"iteration": 0, "status": status, "val_bpb": run.val_bpb, "description": "baseline",
                                    "reason": reason})
            done = c.rows(0)
        row = done[-1]
        best = standing(results.rows(c.results_path)).best_mean
        annotate(config, iteration=0, commit=row.commit, val_bpb=best, status=row.status)
        return {"iteration": 0, "baseline_val_bpb": best, "best_val_bpb": best,
                "best_commit": c.workspace.best_commit(), "stall": 0, "plateau": 0, "directive": "", "started_at": started,
                "stop_reason": ""}
    return setup


def plateau_node(c: Campaign):
    def plateau(state: CampaignState, config: RunnableConfig) -> dict:
        reason = stop_reason(c, state)
        annotate(config, iteration=state.get("iteration"), commit=_short(state.get("best_commit")),
                 val_bpb=state.get("best_val_bpb"), status="stop" if reason else "continue",
                 stall=state.get("stall", 0))
        c.on_event("stall", {"stall": state.get("stall", 0), "patience": c.settings.plateau_patience})
        return {"stop_reason": reason}
    return plateau


def route_after_plateau(c: Campaign):
    def route(state: CampaignState) -> str:
        if state.get("stop_reason"):
            return END
        # `plateau`, not `stall`: the director resets it, so a steady stall with K=3 meets the
        # director before iterations 4, 7, 10, ... and never before K experiments without a keep
        if c.director is not None and state.get("plateau", 0) >= c.settings.plateau_patience:
            return "director"
        return "agent"
    return route


def agent_node(c: Campaign):
    def agent(state: CampaignState, config: RunnableConfig) -> dict:
        iteration = state["iteration"] + 1
        c.workspace.discard()     # a resumed iteration starts from the best code, like a fresh one
        annotate(config, iteration=iteration, commit=_short(c.workspace.head()))   # also on its LLM/tool runs
        directive = state.get("directive", "")
        c.on_event("phase", {"iteration": iteration, "phase": "agent thinking"})
        outcome = run_agent(c, state, iteration, directive, config)
        run = outcome.get("run") or {}
        annotate(config, val_bpb=(run.get("metrics") or {}).get("val_bpb"), status=run.get("status", "no-run"))
        return {"outcome": outcome}
    return agent


def judge_node(c: Campaign):
    def judge(state: CampaignState, config: RunnableConfig) -> dict:
        iteration = state["iteration"] + 1
        outcome: Outcome = state.get("outcome") or {}
        attempt = outcome.get("attempt", 1)
        rows = c.rows(iteration)
        if len(rows) < attempt:   # not recorded yet (a judge killed after recording skips to the end)
            record(c, state, iteration, outcome, attempt)
            rows = c.rows(iteration)
        row = rows[-1]
        sha = experiment_commit(c, iteration)
        c.on_event("recorded", {"iteration": iteration, "status": row.status, "val_bpb": row.val_bpb,
                                "description": row.description, "reason": row.reason})
        if row.status == results.MEASURE:        # a candidate: confirm it on a fresh seed
            c.workspace.checkout(sha)
            annotate(config, iteration=iteration, commit=row.commit, val_bpb=row.val_bpb, status=row.status)
            return {"outcome": {**outcome, "confirm": True}}
        kept = row.kept
        if kept:
            c.workspace.checkout(sha)
            c.workspace.keep(f"keep {iteration}")
        else:
            c.workspace.discard()
        best = standing(results.rows(c.results_path)).best_mean
        c.on_event("verdict", {"iteration": iteration, "status": row.status, "best": best, "reason": row.reason,
                               "runs": len(rows)})
        annotate(config, iteration=iteration, commit=row.commit, val_bpb=row.val_bpb, status=row.status,
                 best_val_bpb=best)
        directive_used = bool(outcome.get("directive"))
        return {"iteration": iteration, "best_val_bpb": best, "best_commit": c.workspace.best_commit(),
                "stall": 0 if kept else state.get("stall", 0) + 1,
                "plateau": 0 if kept else state.get("plateau", 0) + 1,
                "directive": "" if directive_used else state.get("directive", ""),
                "outcome": {}}
    return judge


def route_after_judge(state: CampaignState) -> str:
    return "confirm" if (state.get("outcome") or {}).get("confirm") else "plateau"


def confirm_node(c: Campaign):
    def confirm(state: CampaignState, config: RunnableConfig) -> dict:
        """Run the candidate's commit again on the next seed; the judge records it."""
        iteration = state["iteration"] + 1
        attempt = len(c.rows(iteration)) + 1
        c.workspace.checkout(experiment_commit(c, iteration))
        annotate(config, iteration=iteration, commit=_short(c.workspace.head()), run=attempt)
        c.on_event("phase", {"iteration": iteration, "phase": f"confirming (run {attempt} of {c.noise_runs})"})
        run = c.train(f"iter-{iteration:05d}-run-{attempt}", seed=c.seed(iteration, attempt))
        fault_point("confirm-after-run")
        return {"outcome": {**(state.get("outcome") or {}), "run": asdict(run), "attempt": attempt, "confirm": False}}
    return confirm


@dataclass
class Standing:
    """Where the campaign stands, from results.tsv: the best code's runs and the pooled noise."""
    best: list
    noise: noise.Noise

    @property
    def best_mean(self) -> float | None:
        return noise.mean(self.best)


def standing(rows: list, extra: tuple[int, float] | None = None) -> Standing:
    """From the recorded runs `rows` (plus `extra`, an (iteration, val_bpb) not recorded yet)."""
    groups: dict[int, list[float]] = {}
    best_iteration = None
    for r in rows:
        if r.iteration is None:
            continue
        if r.val_bpb is not None and r.status != results.CRASH:
            groups.setdefault(r.iteration, []).append(r.val_bpb)
        if r.kept:
            best_iteration = r.iteration
    best = list(groups.get(best_iteration, []))
    if extra is not None:
        groups.setdefault(extra[0], []).append(extra[1])
    return Standing(best, noise.Noise.pooled(groups.values()))


def experiment_commit(c: Campaign, iteration: int) -> str | None:
    return git(c.workspace.root, "rev-parse", "-q", "--verify", EXPERIMENT_REF.format(iteration), check=False) or None


def record(c: Campaign, state: CampaignState, iteration: int, outcome: Outcome, attempt: int):
    """Judge one run of an experiment and append its row (flushed). The first run's code is
    committed and kept reachable under refs/autoresearch/experiments/; later runs ran that commit."""
    run = RunResult(**outcome["run"]) if outcome.get("run") else None
    description = outcome.get("description") or "(no description)"
    recorded = results.rows(c.results_path)   # read once: the standing before this run, and with it
    before = standing(recorded)
    earlier = [r.val_bpb for r in recorded
               if r.iteration == iteration and r.val_bpb is not None and r.status != results.CRASH]
    sha = experiment_commit(c, iteration) or "-"
    if run is not None and attempt == 1:
        # commit exactly the code that was trained, kept or not, and keep a ref to it
        c.workspace.discard()
        (c.workspace.root / "train.py").write_text(outcome.get("trained_source") or "")
        sha = c.workspace.commit(f"experiment {iteration}: {description}")
        git(c.workspace.root, "update-ref", EXPERIMENT_REF.format(iteration), sha)
    values, measured = earlier, before.noise
    if run is None:
        status = results.NO_RUN
        reason = outcome.get("note") or "the agent did not train"
        description = f"{description} ({reason})"
    elif run.status != "ok":
        status = results.CRASH
        reason = (f"crashed ({run.status})" if attempt == 1 else
                  f"confirmation run {attempt} crashed ({run.status}): a change must train reliably to be kept")
    else:
        values = earlier + [run.val_bpb]
        measured = standing(recorded, extra=(iteration, run.val_bpb)).noise
        decision = noise.decide(values, before.best, measured, c.noise_runs, c.settings.min_improvement,
                                c.settings.confidence)
        status, reason = decision.status, decision.reason
    new_best = noise.mean(values) if status == results.KEEP else before.best_mean
    fault_point("judge-before-row")
    results.append_row(c.results_path, {
        **_row(sha, run, status, description, iteration, new_best),
        **_measured(run, attempt, values, measured, reason),
        "directive": (state.get("directive_short") or outcome["directive"]) if outcome.get("directive") else "",
        "agent_choice": outcome.get("agent_choice", ""),
    })
    fault_point("judge-after-row")


def _measured(run: RunResult | None, attempt: int, values: list, measured: noise.Noise, reason: str) -> dict:
    """The noise columns of a row: its seed, the experiment's runs so far, their mean, the campaign's σ."""
    m = noise.mean(values)
    return {"seed": run.seed if run and run.seed is not None else "", "runs": attempt if run else 0,
            "mean": f"{m:.6f}" if m is not None else "", "reason": reason,
            "sigma": f"{measured.sigma:.6f}" if measured.sigma is not None else ""}


def fault_point(name: str) -> None:
    """Crash-test hook: with AUTORESEARCH_FAULT=<name>, die here as a kill -9 would."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _row(sha: str, run: RunResult | None, status: str, description: str, iteration: int, best) -> dict:
    m = run.metrics if run and run.status == "ok" else {}
    return {
        "commit": sha[:7] if sha and sha != "-" else "-",
        "val_bpb": f"{m.get('val_bpb', 0.0):.6f}",
        "memory_gb": f"{m.get('peak_vram_mb', 0.0) / 1024:.1f}",
        "status": status,
        "description": description,
        "iteration": iteration,
        "best_val_bpb": f"{best:.6f}" if best else "",
        "training_seconds": m.get("training_seconds", ""),
        "total_seconds": m.get("total_seconds", run.wall_seconds if run else ""),
        "sandbox": ("bwrap" if run.sandboxed else "none") if run else "",
    }


def stop_reason(c: Campaign, state: CampaignState) -> str:
    s = c.settings
    if not state.get("best_commit"):          # the baseline failed: nothing to improve on
        return state.get("stop_reason") or "no baseline"
    if c.stop_requested.is_set():
        return "interrupted (Ctrl-C)"
    if (c.run_dir / "STOP").exists():
        return "STOP file found in the run dir"
    if s.max_iterations is not None and state.get("iteration", 0) >= s.max_iterations:
        return f"reached --max-iterations {s.max_iterations}"
    if s.max_hours is not None and time.time() - state.get("started_at", time.time()) >= s.max_hours * 3600:
        return f"reached --max-hours {s.max_hours}"
    return ""


# -----------------------------------------------------------------------------
# The agent: a bounded tool-calling loop

def run_agent(c: Campaign, state: CampaignState, iteration: int, directive: str,
              config: RunnableConfig | None = None) -> Outcome:
    s = c.settings
    tools = {t.name: t for t in c.tools(seed=c.seed(iteration, 1))}
    now = standing(results.rows(c.results_path))
    values = {
        "iteration": iteration,
        "best_val_bpb": f"{state['best_val_bpb']:.6f}",
        "best_runs": len(now.best),
        "noise": noise_text(c, now),
        "baseline_val_bpb": f"{state['baseline_val_bpb']:.6f}",
        "history": results.history_table(c.results_path),
        "stall": stall_text(state.get("stall", 0), s.plateau_patience),
        "directive_section": directive_section(directive, s.prompts_dir),
        "max_agent_steps": s.max_agent_steps,
    }
    messages = [SystemMessage(render_prompt("agent_system", {}, s.prompts_dir)),
                HumanMessage(render_prompt("agent_task", values, s.prompts_dir))]
    model = c.models.agent.bind_tools(list(tools.values()))
    outcome: Outcome = {"directive": directive, "agent_choice": "", "run": None, "description": ""}
    steps = 0
    final: AIMessage | None = None

    def on_retry(attempt, wait, error):
        c.on_event("retry", {"attempt": attempt, "wait": wait, "error": error})

    while True:
        try:
            ai = invoke_with_retry(model, messages, max_attempts=s.llm_max_attempts, on_retry=on_retry,
                                   config=config, redactor=c.redactor)
        except LLMUnavailable as e:
            outcome["note"] = f"LLM unavailable: {e}"
            c.on_event("error", {"message": outcome["note"]})
            break
        messages.append(ai)
        if not ai.tool_calls:
            final = ai
            break
        for call in ai.tool_calls:
            steps += 1
            if steps > s.max_agent_steps:
                messages.append(ToolMessage(f"Refused: the step budget of {s.max_agent_steps} tool calls is spent. "
                                            "Answer now without tool calls.", tool_call_id=call["id"]))
                continue
            messages.append(call_tool(c, tools, call, outcome, iteration, config))
        if steps > s.max_agent_steps + 2:     # it keeps calling tools after being told to stop
            outcome["note"] = "the agent ran out of tool-call steps"
            break
    text = message_text(final.content) if final else ""
    lines = [line.strip().strip("#*` ").strip() for line in text.splitlines() if line.strip()]
    outcome["description"] = (lines[0] if lines else outcome.get("note", "no description"))[:DESCRIPTION_CHARS]
    if directive:
        lowered = text.lower()
        outcome["agent_choice"] = next((ch for ch in CHOICES if f"directive: {ch}" in lowered),
                                       next((ch for ch in CHOICES if ch in lowered), "rejected"))
    if outcome.get("run") is None and not outcome.get("note"):
        outcome["note"] = "the agent did not train"
    return outcome


def call_tool(c: Campaign, tools: dict, call: dict, outcome: Outcome, iteration: int,
              config: RunnableConfig | None = None) -> ToolMessage:
    name, args = call["name"], call.get("args") or {}
    tool = tools.get(name)
    if tool is None:
        return ToolMessage(f"Error: there is no tool {name!r}; use one of {sorted(tools)}.", tool_call_id=call["id"])
    c.on_event("tool", {"iteration": iteration, "name": name, "args": args})
    if name == "run_training":
        source = (c.workspace.root / "train.py").read_text()
        c.on_event("phase", {"iteration": iteration, "phase": "training"})
        result = tool.invoke({**call, "type": "tool_call"}, config)
        run = result.artifact
        if isinstance(run, RunResult):
            outcome["run"] = asdict(run)
            outcome["trained_source"] = source
            c.on_event("trained", {"iteration": iteration, "status": run.status, "val_bpb": run.val_bpb,
                                   "sandboxed": run.sandboxed})
        c.on_event("phase", {"iteration": iteration, "phase": "agent thinking"})
        return ToolMessage(result.content, tool_call_id=call["id"], name=name)
    try:
        content = tool.invoke(args, config)
    except Exception as e:           # a tool bug must not end the campaign: tell the model
        content = clip_for_model(f"Error: {name} failed: {e}", redactor=c.redactor)
    return ToolMessage(str(content), tool_call_id=call["id"], name=name)


def _short(sha: str | None) -> str | None:
    return sha[:7] if sha else None


def noise_text(c: Campaign, now: Standing) -> str:
    """The campaign's seed noise and the margin a candidate must beat the best by, for the agent."""
    runs = c.noise_runs
    if runs == 1:
        return "not measured (--noise-runs 1): a change is kept on one run that beats the best"
    if now.noise.sigma is None:
        return "not measured yet"
    crit = noise.critical_t(c.settings.confidence, now.noise.df + runs - 1)   # the df once confirmed
    margin = crit * now.noise.sigma * (1 / max(len(now.best), 1) + 1 / runs) ** 0.5
    return (f"σ = {now.noise.sigma:.4f} per run ({now.noise.runs} repeated runs). A candidate is re-run to "
            f"{runs} runs and kept if their mean beats the best mean by about {margin:.4f} or more "
            f"(t ≥ {crit:.2f}, one-sided {c.settings.confidence:.1%})")


def stall_text(stall: int, patience: int) -> str:
    if stall == 0:
        return "The last experiment improved the best result (or this is the first one)."
    return (f"The last {stall} experiment(s) did not improve on the best "
            f"(after every {patience} in a row, the director suggests a new direction).")


# -----------------------------------------------------------------------------
# Wiring

def build_graph(c: Campaign, checkpointer=None):
    g = StateGraph(CampaignState)
    g.add_node("setup", setup_node(c))
    g.add_node("plateau", plateau_node(c))
    g.add_node("agent", agent_node(c))
    g.add_node("judge", judge_node(c))
    g.add_edge(START, "setup")
    g.add_edge("setup", "plateau")
    targets = ["agent", END]
    if c.director is not None:
        g.add_node("director", c.director.subgraph())
        g.add_edge("director", "agent")
        targets.append("director")
    g.add_conditional_edges("plateau", route_after_plateau(c), targets)
    g.add_node("confirm", confirm_node(c))
    g.add_edge("agent", "judge")
    g.add_conditional_edges("judge", route_after_judge, ["confirm", "plateau"])
    g.add_edge("confirm", "judge")
    return g.compile(checkpointer=checkpointer)
