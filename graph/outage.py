"""
An LLM endpoint that stays unreachable: wait for it instead of spending iterations.

After OUTAGE_ITERATIONS consecutive iterations ended by `LLMUnavailable`, stop_check routes to the
`llm_wait` node instead of the agent: it waits (FIRST_WAIT seconds, doubling up to MAX_WAIT, never
past the --max-llm-outage deadline), reports each wait as an `llm_wait` event, then probes the
endpoint with one small call. A failed probe loops back through stop_check (so Ctrl-C, STOP and
--max-hours still apply, and --max-llm-outage ends the campaign); a successful one hands over to the
agent for a normal iteration. Waiting writes no row and does not advance the iteration count.

The outage lives in the checkpointed state (`CampaignState.llm_outage`, wall-clock times), so a
campaign killed mid-outage and resumed keeps its clock.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig

from graph.llm import LLMUnavailable, invoke_with_retry
from graph.state import CampaignState, LLMOutage, Outcome
from graph.tracing import annotate

if TYPE_CHECKING:   # graph/campaign.py imports this module (resume_input)
    from graph.campaign import Campaign

# -----------------------------------------------------------------------------
# the schedule

OUTAGE_ITERATIONS = 2   # consecutive iterations with the LLM unreachable before the campaign waits instead
FIRST_WAIT = 30.0       # seconds before the first probe, doubled after each failed one...
MAX_WAIT = 300.0        # ...up to this
POLL = 1.0              # how often a wait looks for Ctrl-C (at once) and a STOP file
PROBE = "Reply with the single word: ok"
STOP_PREFIX = "the LLM endpoint was unreachable for"


def down(state: CampaignState) -> bool:
    """The endpoint is considered down: the campaign waits rather than starting an iteration."""
    return (state.get("llm_outage") or {}).get("iterations", 0) >= OUTAGE_ITERATIONS


def after_iteration(state: CampaignState, outcome: Outcome, now: float | None = None) -> LLMOutage | None:
    """The outage record once an iteration is judged: one more failed iteration, or none at all
    when the LLM answered to the end."""
    if not outcome.get("llm_error"):
        return None
    now = time.time() if now is None else now
    before = state.get("llm_outage") or {}
    return {"since": before.get("since") or outcome.get("llm_down_since") or now,
            "iterations": before.get("iterations", 0) + 1, "waits": before.get("waits", 0),
            "checked_at": now, "error": outcome["llm_error"]}


def next_wait(outage: LLMOutage, limit_s: float, now: float | None = None) -> float:
    """Seconds to wait before the next probe: the back-off, never past the outage deadline."""
    now = time.time() if now is None else now
    backoff = min(FIRST_WAIT * 2 ** min(outage.get("waits", 0), 60), MAX_WAIT)
    return max(0.0, min(backoff, outage["since"] + limit_s - now))


def stop_reason(outage: LLMOutage | None, limit_min: float) -> str:
    """Why the campaign ends, once the endpoint has been seen unreachable for --max-llm-outage."""
    if not outage or outage.get("iterations", 0) < OUTAGE_ITERATIONS:
        return ""
    if outage["checked_at"] - outage["since"] < limit_min * 60:
        return ""
    return f"{STOP_PREFIX} {limit_min:g} min (last error: {outage.get('error') or 'unknown'})"


def on_resume(values: CampaignState) -> dict:
    """The state update for `--resume` of a campaign that had ended. One the outage ended gets a
    fresh clock (it is told to try again; it probes before any iteration); any other keeps its
    clock, as a campaign resumed after kill -9 does."""
    outage = values.get("llm_outage")
    if not outage or not (values.get("stop_reason") or "").startswith(STOP_PREFIX):
        return {}
    now = time.time()
    return {"llm_outage": {**outage, "since": now, "checked_at": now, "waits": 0}}


def probe(c: Campaign, config: RunnableConfig | None = None) -> str:
    """One call to the agent model: '' when it answers (any answer, or an error that is not about
    reaching it), else the short error."""
    try:
        invoke_with_retry(c.models.agent, [HumanMessage(PROBE)], max_attempts=1, config=config,
                          redactor=c.redactor)
    except LLMUnavailable as e:
        return e.last_error or "unreachable"
    except Exception:      # reachable (a 400, a 401, ...): the agent's own call will say what is wrong
        return ""
    return ""


def sleep(c: Campaign, seconds: float) -> bool:
    """Wait, looking for Ctrl-C (at once) and a STOP file (every POLL s). False: stop asked."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if c.stop_requested.wait(min(left, POLL)) or (c.run_dir / "STOP").exists():
            return False
    return not c.stop_requested.is_set()


# -----------------------------------------------------------------------------
# the node

def wait_node(c: Campaign):
    def llm_wait(state: CampaignState, config: RunnableConfig) -> dict:
        outage: LLMOutage = dict(state["llm_outage"])
        limit_s = c.settings.max_llm_outage * 60
        wait = next_wait(outage, limit_s)
        down_for = time.time() - outage["since"]
        annotate(config, iteration=state.get("iteration"), status="waiting for the LLM")
        c.on_event("llm_wait", {"iteration": state.get("iteration", 0), "wait": wait, "down_for": down_for,
                                "limit": limit_s, "error": outage.get("error", ""), "waits": outage.get("waits", 0) + 1})
        if not sleep(c, wait):
            return {}                          # stop_check says why
        error = probe(c, config)
        now = time.time()
        outage["waits"] = outage.get("waits", 0) + 1
        if error:
            return {"llm_outage": {**outage, "checked_at": now, "error": error}}
        c.on_event("llm_back", {"iteration": state.get("iteration", 0), "down_for": now - outage["since"]})
        # on probation: one more failed iteration and it waits again, on the same clock
        return {"llm_outage": {**outage, "iterations": OUTAGE_ITERATIONS - 1}}
    return llm_wait
