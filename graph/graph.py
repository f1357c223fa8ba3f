"""
The campaign graph, wired in one place (build_graph):

    setup -> stop_check -> [director] -> agent -> judge -> [confirm -> judge]* -> stop_check -> ... -> END
    stop_check -> llm_wait -> stop_check    (the LLM endpoint down: wait, probe, spend no iteration)

- setup: runs the baseline --noise-runs times with different seeds (the campaign's first measure of
  seed noise).
- stop_check: ends the campaign on a stop condition (stop_reason), else routes to llm_wait while the
  LLM is down, to the director when graph/director.py's `director_due` says so, else to the agent.
- agent: one experiment, a tool-calling loop over the four tools (graph/agent.py).
- judge: records each run as a row of results.tsv and applies graph/noise.py's rule: discard,
  keep, or (a run that beats the best's mean) confirm. The verdict row carries the experiment's
  LLM tokens: the agent's calls of the iteration and the director's calls that preceded it.
- confirm: re-runs the experiment's commit with a fresh seed and hands the run back to judge.
- llm_wait: after graph/outage.py's OUTAGE_ITERATIONS iterations in a row lost to an unreachable
  LLM, waits with a growing back-off and probes the endpoint instead of spending iterations;
  --max-llm-outage ends the campaign.

Every node is idempotent on resume: a node re-run after a kill finds what its killed run already
did (recorded rows, a commit) and does not do it twice; a run killed mid-way is run again with the
same seed.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import asdict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from graph import noise, outage, results, usage
from graph.agent import DESCRIPTION_CHARS, EXPERIMENT_REF, run_agent
from graph.campaign import Campaign, CampaignError
from graph.director import director_due
from graph.state import CampaignState, Outcome
from graph.tracing import annotate
from tools import RunResult
from tools.workspace import git

FAULT_ENV = "AUTORESEARCH_FAULT"   # tests only: SIGKILL this process at a named point (resume tests)


# -----------------------------------------------------------------------------
# Nodes

def foreign(c: Campaign, state: CampaignState) -> str:
    """Why `state` must not run here: it belongs to another campaign (a LangGraph server resuming a
    run it persisted for another campaign, say). "" when it is this campaign's, or predates the key."""
    owner = state.get("campaign")
    if not owner or owner == c.identity:
        return ""
    return (f"refused: this thread's state belongs to campaign {owner}, not to this graph's campaign "
            f"{c.identity} ({c.run_dir}); start a new thread")


def owned(c: Campaign, node):
    """`node`, refusing (CampaignError) to run on another campaign's state: a run resumed mid-way
    must not train, record or commit anything in this campaign."""
    def guarded(state: CampaignState, config: RunnableConfig) -> dict:
        reason = foreign(c, state)
        if reason:
            raise CampaignError(reason)
        return node(state, config)
    guarded.__name__ = node.__name__
    return guarded


def setup_node(c: Campaign):
    def setup(state: CampaignState, config: RunnableConfig) -> dict:
        reason = foreign(c, state)
        if reason:                           # stop_check says the same and ends the run
            annotate(config, status="refused")
            return {"stop_reason": reason}
        if state.get("best_commit"):
            annotate(config, iteration=0, commit=_short(state["best_commit"]), status="done before")
            return {"campaign": c.identity}
        started = state.get("started_at") or time.time()
        runs = c.noise_runs
        done = c.rows(0)
        while not done or done[-1].status == results.MEASURE:   # killed mid-way: the missing runs only
            k = len(done) + 1
            c.workspace.discard()
            c.on_event("phase", {"iteration": 0, "phase": "baseline training" if runs == 1 else
                                 f"baseline training (run {k} of {runs}: measuring seed noise)"})
            run = c.train(0, k, baseline=True)
            if run.status != "ok":
                c.on_event("error", {"message": f"the baseline train.py failed ({run.status}): {run.message}"})
                annotate(config, iteration=0, status=f"baseline {run.status}")
                return {"campaign": c.identity, "stop_reason": f"baseline failed: {run.status}", "started_at": started,
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
                **_measured(run, k, values, measured, reason),
                **(_tokens(None, None) if status == results.KEEP else {})})     # the baseline calls no LLM
            c.on_event("recorded", {"iteration": 0, "status": status, "val_bpb": run.val_bpb, "description": "baseline",
                                    "reason": reason})
            done = c.rows(0)
        row = done[-1]
        best = noise.standing(results.rows(c.results_path)).best_mean
        annotate(config, iteration=0, commit=row.commit, val_bpb=best, status=row.status)
        return {"campaign": c.identity, "iteration": 0, "baseline_val_bpb": best, "best_val_bpb": best,
                "best_commit": c.workspace.best_commit(), "stall": 0, "plateau": 0, "directive": "", "started_at": started,
                "stop_reason": ""}
    return setup


def stop_check_node(c: Campaign):
    def stop_check(state: CampaignState, config: RunnableConfig) -> dict:
        reason = foreign(c, state) or stop_reason(c, state)
        annotate(config, iteration=state.get("iteration"), commit=_short(state.get("best_commit")),
                 val_bpb=state.get("best_val_bpb"), status="stop" if reason else "continue",
                 stall=state.get("stall", 0))
        c.on_event("stall", {"stall": state.get("stall", 0), "patience": c.settings.plateau_patience})
        if reason or state.get("campaign"):
            return {"stop_reason": reason}
        return {"stop_reason": reason, "campaign": c.identity}   # a checkpoint from before the key
    return stop_check


def route_after_stop_check(c: Campaign):
    def route(state: CampaignState) -> str:
        if state.get("stop_reason"):
            return END
        if outage.down(state):
            return "llm_wait"
        if c.director is not None and director_due(state, c.settings.plateau_patience):
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
        recorded = results.rows(c.results_path)
        best = noise.standing(recorded).best_mean
        spent = usage.totals(recorded)
        c.on_event("verdict", {"iteration": iteration, "status": row.status, "best": best, "reason": row.reason,
                               "runs": len(rows), "tokens": usage.totals([row]).total, "total_tokens": spent.total,
                               "cost": spent.cost(*c.settings.llm_prices)})
        annotate(config, iteration=iteration, commit=row.commit, val_bpb=row.val_bpb, status=row.status,
                 best_val_bpb=best)
        directive_used = bool(outcome.get("directive"))
        return {"iteration": iteration, "best_val_bpb": best, "best_commit": c.workspace.best_commit(),
                "stall": 0 if kept else state.get("stall", 0) + 1,
                "plateau": 0 if kept else state.get("plateau", 0) + 1,
                "directive": "" if directive_used else state.get("directive", ""),
                "llm_outage": outage.after_iteration(state, outcome), "outcome": {},
                "director_usage": {}}     # the director's tokens are on this row now
    return judge


def route_after_judge(state: CampaignState) -> str:
    return "confirm" if (state.get("outcome") or {}).get("confirm") else "stop_check"


def confirm_node(c: Campaign):
    def confirm(state: CampaignState, config: RunnableConfig) -> dict:
        """Run the candidate's commit again on the next seed; the judge records it."""
        iteration = state["iteration"] + 1
        attempt = len(c.rows(iteration)) + 1
        c.workspace.checkout(experiment_commit(c, iteration))
        annotate(config, iteration=iteration, commit=_short(c.workspace.head()), run=attempt)
        c.on_event("phase", {"iteration": iteration, "phase": f"confirming (run {attempt} of {c.noise_runs})"})
        run = c.train(iteration, attempt)
        fault_point("confirm-after-run")
        return {"outcome": {**(state.get("outcome") or {}), "run": asdict(run), "attempt": attempt, "confirm": False}}
    return confirm


def experiment_commit(c: Campaign, iteration: int) -> str | None:
    """The experiment's code, committed when it was trained (graph/agent.py)."""
    return git(c.workspace.root, "rev-parse", "-q", "--verify", EXPERIMENT_REF.format(iteration), check=False) or None


def record(c: Campaign, state: CampaignState, iteration: int, outcome: Outcome, attempt: int):
    """Judge one run of an experiment and append its row (flushed). Its code was committed under
    refs/autoresearch/experiments/ when it trained; confirmation runs ran that commit again."""
    run = RunResult(**outcome["run"]) if outcome.get("run") else None
    description = outcome.get("description") or "(no description)"
    recorded = results.rows(c.results_path)   # read once: the standing before this run, and with it
    before = noise.standing(recorded)
    earlier = [r.val_bpb for r in recorded
               if r.iteration == iteration and r.val_bpb is not None and r.status != results.CRASH]
    if run is not None and outcome.get("trained_source") and not experiment_commit(c, iteration):
        # a checkpoint from before runs were committed as they trained: commit its code now
        c.workspace.snapshot(outcome["trained_source"], f"experiment {iteration}", EXPERIMENT_REF.format(iteration))
    sha = (experiment_commit(c, iteration) or "-") if run is not None else "-"
    values, measured = earlier, before.noise
    if run is None:
        status = results.NO_RUN
        reason = outcome.get("note") or "the agent did not train"
        if description != reason[:DESCRIPTION_CHARS]:   # no answer: the description is the note already
            description = f"{description} ({reason})"
    elif run.status != "ok":
        status = results.CRASH
        reason = (f"crashed ({run.status})" if attempt == 1 else
                  f"confirmation run {attempt} crashed ({run.status}): a change must train reliably to be kept")
    else:
        values = earlier + [run.val_bpb]
        measured = noise.standing(recorded, extra=(iteration, run.val_bpb)).noise
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
        **(_tokens(outcome.get("usage"), state.get("director_usage")) if status != results.MEASURE else {}),
    })
    fault_point("judge-after-row")


def _measured(run: RunResult | None, attempt: int, values: list, measured: noise.Noise, reason: str) -> dict:
    """The noise columns of a row: its seed, the experiment's runs so far, their mean, the campaign's σ."""
    m = noise.mean(values)
    return {"seed": run.seed if run and run.seed is not None else "", "runs": attempt if run else 0,
            "mean": f"{m:.6f}" if m is not None else "", "reason": reason,
            "sigma": f"{measured.sigma:.6f}" if measured.sigma is not None else ""}


def _tokens(agent: dict | None, director: dict | None) -> dict:
    """The token columns of an experiment's verdict row (a measure row leaves them empty)."""
    agent, director = usage.add(agent), usage.add(director)
    return {"agent_input_tokens": agent[usage.IN], "agent_output_tokens": agent[usage.OUT],
            "director_input_tokens": director[usage.IN], "director_output_tokens": director[usage.OUT]}


def _short(sha: str | None) -> str | None:
    return sha[:7] if sha else None


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
    outage_reason = outage.stop_reason(state.get("llm_outage"), s.max_llm_outage)
    if outage_reason:
        return outage_reason
    if s.max_llm_tokens is not None or s.max_llm_cost is not None:
        return llm_budget_spent(c)
    return ""


def llm_budget_spent(c: Campaign) -> str:
    """The --max-llm-tokens / --max-llm-cost stop, on the totals results.tsv records (so a resumed
    campaign counts what its earlier sessions spent)."""
    s = c.settings
    spent = usage.totals(results.rows(c.results_path))
    if s.max_llm_tokens is not None and spent.total >= s.max_llm_tokens:
        return (f"reached --max-llm-tokens {s.max_llm_tokens}: the campaign's LLM calls used {spent.total} tokens "
                f"(agent {spent.agent}, director {spent.director})")
    cost = spent.cost(*s.llm_prices)
    if s.max_llm_cost is not None and cost is not None and cost >= s.max_llm_cost:
        return (f"reached --max-llm-cost {s.max_llm_cost}: the campaign's LLM calls cost ${cost:.4f} "
                f"({spent.total} tokens at ${s.llm_price_in_per_mtok or 0}/${s.llm_price_out_per_mtok or 0} "
                f"per million input/output tokens)")
    return ""


# -----------------------------------------------------------------------------
# Wiring

def build_graph(c: Campaign, checkpointer=None):
    g = StateGraph(CampaignState)
    g.add_node("setup", setup_node(c))
    g.add_node("stop_check", stop_check_node(c))
    g.add_node("agent", owned(c, agent_node(c)))
    g.add_node("judge", owned(c, judge_node(c)))
    g.add_edge(START, "setup")
    g.add_edge("setup", "stop_check")
    g.add_node("llm_wait", outage.wait_node(c))
    g.add_edge("llm_wait", "stop_check")
    targets = ["agent", "llm_wait", END]
    if c.director is not None:
        g.add_node("director", c.director.subgraph())
        g.add_edge("director", "agent")
        targets.append("director")
    g.add_conditional_edges("stop_check", route_after_stop_check(c), targets)
    g.add_node("confirm", owned(c, confirm_node(c)))
    g.add_edge("agent", "judge")
    g.add_conditional_edges("judge", route_after_judge, ["confirm", "stop_check"])
    g.add_edge("confirm", "judge")
    return g.compile(checkpointer=checkpointer)
