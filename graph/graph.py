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
import shutil
import time
from dataclasses import asdict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from graph import outage, results, usage
from graph.agent import run_agent
from graph.campaign import Campaign, CampaignError
from graph.director import director_due
from graph.ledger import EXPERIMENT_REF, fault_point
from graph.state import CampaignState, Outcome
from graph.tracing import annotate
from tools.workspace import BEST_REF, git


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
        failed = {"campaign": c.identity, "started_at": started, "iteration": 0, "stall": 0, "plateau": 0}
        runs = c.noise_runs
        done = c.rows(0)
        while not done or done[-1].status == results.MEASURE:   # killed mid-way: the missing runs only
            k = c.ledger.claim_baseline_run(c.agent)
            if k == 0:        # the other runs are being trained by other agents of a parallel campaign
                reason = wait_for_baseline(c)
                if reason:
                    return {**failed, "stop_reason": reason}
                done = c.rows(0)
                continue
            c.workspace.discard()
            c.on_event("phase", {"iteration": 0, "phase": "baseline training" if runs == 1 else
                                 f"baseline training (run {k} of {runs}: measuring seed noise)"})
            run = c.train(0, k, baseline=True)
            if run.status != "ok":
                c.on_event("error", {"message": f"the baseline train.py failed ({run.status}): {run.message}"})
                annotate(config, iteration=0, status=f"baseline {run.status}")
                if c.parallel:                                     # the other agents stop too
                    c.ledger.halt(f"baseline failed: {run.status}")
                return {**failed, "stop_reason": f"baseline failed: {run.status}"}
            row = c.ledger.record_baseline(c.agent, c.device, k, asdict(run))
            c.on_event("recorded", {"iteration": 0, "status": row.status, "val_bpb": run.val_bpb,
                                    "description": "baseline", "reason": row.reason})
            done = c.rows(0)
        adopt_compile_seed(c)
        row = done[-1]
        best = c.ledger.best()
        annotate(config, iteration=0, commit=row.commit, val_bpb=best["mean"], status=row.status)
        sync_to_best(c, best)
        return {"campaign": c.identity, "iteration": 0, "baseline_val_bpb": best["mean"], "best_val_bpb": best["mean"],
                "best_commit": best["commit"], "stall": 0, "plateau": 0, "directive": "", "started_at": started,
                "stop_reason": ""}
    return setup


def wait_for_baseline(c: Campaign, poll: float = 1.0) -> str:
    """Wait while other agents train the baseline's remaining runs: "" once one of them is recorded
    (or the baseline is complete), else why the campaign stops (a failed baseline, Ctrl-C, STOP)."""
    c.on_event("phase", {"iteration": 0, "phase": "waiting for the other agents' baseline runs"})
    recorded = len(c.rows(0))
    while len(c.rows(0)) == recorded and not c.ledger.claim_baseline_run(c.agent):
        reason = c.ledger.stop_reason() or ("interrupted (Ctrl-C)" if c.stop_requested.is_set() else "")
        if reason:
            return reason
        time.sleep(poll)
    return ""


def adopt_compile_seed(c: Campaign) -> None:
    """In a parallel campaign, an agent that did not train the baseline's first run starts from the
    compile caches that run seeded (tools/supervisor.py COMPILE_SEED), so its runs do not all pay a
    cold compile (~20 s on an H200). The seed stays the baseline's code's, never an experiment's."""
    from tools.supervisor import COMPILE_SEED
    own = c.run_dir / COMPILE_SEED
    seeder = c.ledger.compile_seeder() if c.parallel and not own.exists() else ""
    source = c.run_dir.parent / seeder / COMPILE_SEED
    if seeder and seeder != c.agent and source.is_dir():
        shutil.copytree(source, own.with_suffix(".tmp"), dirs_exist_ok=True)
        os.replace(own.with_suffix(".tmp"), own)


def sync_to_best(c: Campaign, best: dict | None = None) -> dict:
    """Put the agent's workspace at the campaign's best code. A parallel agent's workspace is its own
    repository: the best code, which another agent may have found, is committed there as its best."""
    best = best or c.ledger.best()
    if c.parallel and c.workspace.source(BEST_REF) != best["source"]:
        c.workspace.snapshot(best["source"], f"best: {best['commit'][:7]}", BEST_REF)
    c.workspace.discard()
    return best


def experiment_number(state: CampaignState) -> int:
    """The experiment this agent works on: the one its stop check claimed (a checkpoint from
    before claims: the one after the last it recorded)."""
    return state.get("experiment") or state["iteration"] + 1


def stop_check_node(c: Campaign):
    def stop_check(state: CampaignState, config: RunnableConfig) -> dict:
        reason = foreign(c, state) or stop_reason(c, state)
        claimed = {}
        if not reason:
            claimed = c.ledger.claim(c.agent, c.device, state.get("started_at"))
            reason = claimed.get("stop", "")
        if not reason:
            c.warm_spare()       # a run will follow: its process warms up while the agent thinks
        annotate(config, iteration=state.get("iteration"), commit=_short(state.get("best_commit")),
                 val_bpb=state.get("best_val_bpb"), status="stop" if reason else "continue",
                 stall=state.get("stall", 0))
        c.on_event("stall", {"stall": state.get("stall", 0), "patience": c.settings.plateau_patience})
        update = {"stop_reason": reason, **({"experiment": claimed["iteration"]} if "iteration" in claimed else {})}
        if reason or state.get("campaign"):
            return update
        return {**update, "campaign": c.identity}   # a checkpoint from before the key
    return stop_check


def route_after_stop_check(c: Campaign):
    def route(state: CampaignState) -> str:
        if state.get("stop_reason"):
            return END
        if outage.down(state):
            return "llm_wait"
        if c.director is not None and director_fires(c, state):
            return "director"
        return "agent"
    return route


def director_fires(c: Campaign, state: CampaignState) -> bool:
    """One agent's plateau (graph/director.py's rule), or in a parallel campaign the campaign's: the
    first agent to see it runs the director, once for all (the ledger resets the count)."""
    if c.parallel:
        return c.ledger.director_due(c.agent, c.settings.plateau_patience)
    return director_due(state, c.settings.plateau_patience)


def agent_node(c: Campaign):
    def agent(state: CampaignState, config: RunnableConfig) -> dict:
        iteration = experiment_number(state)
        closed = next((r for r in c.rows(iteration) if r.is_verdict), None)
        if closed is not None:   # resumed into an experiment closed while this agent was gone (abandoned):
            return {"outcome": {"description": closed.description, "note": closed.reason}}   # its row stands
        sync_to_best(c)     # a resumed iteration starts from the best code, like a fresh one
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
        iteration = experiment_number(state)
        outcome: Outcome = state.get("outcome") or {}
        attempt = outcome.get("attempt", 1)
        source = outcome.get("trained_source") or experiment_source(c, iteration) if outcome.get("run") else None
        row = c.ledger.record(c.agent, c.device, iteration, attempt, dict(outcome), source,
                              state.get("directive_short", ""), state.get("director_usage"))
        rows = c.rows(iteration)
        c.on_event("recorded", {"iteration": iteration, "status": row.status, "val_bpb": row.val_bpb,
                                "description": row.description, "reason": row.reason})
        if row.status == results.MEASURE:        # a candidate: confirm it on a fresh seed
            c.workspace.checkout(experiment_commit(c, iteration))
            annotate(config, iteration=iteration, commit=row.commit, val_bpb=row.val_bpb, status=row.status)
            return {"outcome": {**outcome, "confirm": True}}
        kept = row.kept
        best = sync_to_best(c)
        spent = c.ledger.spent()
        c.on_event("verdict", {"iteration": iteration, "status": row.status, "best": best["mean"], "reason": row.reason,
                               "runs": len(rows), "tokens": usage.totals([row]).total, "total_tokens": spent.total,
                               "cost": spent.cost(*c.settings.llm_prices)})
        annotate(config, iteration=iteration, commit=row.commit, val_bpb=row.val_bpb, status=row.status,
                 best_val_bpb=best["mean"])
        directive_used = bool(outcome.get("directive"))
        return {"iteration": iteration, "best_val_bpb": best["mean"], "best_commit": best["commit"],
                "stall": 0 if kept else state.get("stall", 0) + 1,
                "plateau": 0 if kept else state.get("plateau", 0) + 1,
                "directive": "" if directive_used else state.get("directive", ""),
                "llm_outage": outage.after_iteration(state, outcome), "outcome": {}, "experiment": 0,
                "director_usage": {}}     # the director's tokens are on this row now
    return judge


def route_after_judge(state: CampaignState) -> str:
    return "confirm" if (state.get("outcome") or {}).get("confirm") else "stop_check"


def confirm_node(c: Campaign):
    def confirm(state: CampaignState, config: RunnableConfig) -> dict:
        """Run the candidate's commit again on the next seed; the judge records it."""
        iteration = experiment_number(state)
        attempt = len(c.rows(iteration)) + 1
        c.workspace.checkout(experiment_commit(c, iteration))
        annotate(config, iteration=iteration, commit=_short(c.workspace.head()), run=attempt)
        c.on_event("phase", {"iteration": iteration, "phase": f"confirming (run {attempt} of {c.noise_runs})"})
        run = c.train(iteration, attempt)
        fault_point("confirm-after-run")
        return {"outcome": {**(state.get("outcome") or {}), "run": asdict(run), "attempt": attempt, "confirm": False}}
    return confirm


def experiment_commit(c: Campaign, iteration: int) -> str | None:
    """The experiment's code in the agent's workspace, committed when it was trained (graph/agent.py)."""
    return git(c.workspace.root, "rev-parse", "-q", "--verify", EXPERIMENT_REF.format(iteration), check=False) or None


def experiment_source(c: Campaign, iteration: int) -> str | None:
    sha = experiment_commit(c, iteration)
    return c.workspace.source(sha) if sha else None


def _short(sha: str | None) -> str | None:
    return sha[:7] if sha else None


def stop_reason(c: Campaign, state: CampaignState) -> str:
    """This agent's own reasons to stop; the campaign's (STOP, --max-hours, --max-iterations, the
    LLM budget) are the ledger's, asked when the stop check claims the next experiment."""
    if not state.get("best_commit"):          # the baseline failed: nothing to improve on
        return state.get("stop_reason") or "no baseline"
    if c.stop_requested.is_set():
        return "interrupted (Ctrl-C)"
    return outage.stop_reason(state.get("llm_outage"), c.settings.max_llm_outage)


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
