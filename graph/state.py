"""The campaign's one typed state, checkpointed after every node (SQLite, in the run dir)."""

from typing import TypedDict


class Outcome(TypedDict, total=False):
    """What the agent did in one iteration, handed from the agent node to the judge."""
    description: str        # first line of the agent's final answer
    run: dict | None        # the iteration's last training run (tools.RunResult as a dict)
    commit: str             # that run's code, committed as it trained (refs/autoresearch/experiments/N)
    trained_source: str     # older checkpoints only: the code itself, committed by the judge
    directive: str          # the directive that was pending for this iteration ("" if none)
    agent_choice: str       # followed | adapted | rejected | "" (no directive)
    note: str               # why there was no run (LLM unavailable, out of steps, ...)
    llm_error: str          # the LLM could not be reached to the end: the last error ("connection error")
    llm_down_since: float   # wall-clock time of that unanswered call's first attempt
    attempt: int            # which run of the experiment `run` is: 1 the agent's, 2.. confirmations
    confirm: bool           # the judge wants another run of this experiment (graph/noise.py)
    usage: dict             # the agent's LLM tokens this iteration (graph/usage.py: input_tokens, output_tokens)


class LLMOutage(TypedDict, total=False):
    """The LLM endpoint unreachable for consecutive iterations (graph/outage.py); wall-clock times."""
    since: float            # the first failed attempt of the first failed iteration
    iterations: int         # consecutive iterations it failed (from OUTAGE_ITERATIONS on: waiting)
    waits: int              # waits done (the back-off doubles with each)
    checked_at: float       # the last failed attempt (an iteration's or a probe's)
    error: str              # the last error, short ("connection error", "503 server error")


class CampaignState(TypedDict, total=False):
    campaign: str           # whose state this is: Campaign.identity, set by setup; every node refuses another's
    iteration: int          # the last experiment this agent recorded (the baseline is 0)
    experiment: int         # the experiment it works on now, claimed from the ledger by the stop check (0: none)
    baseline_val_bpb: float
    best_val_bpb: float     # the best code's mean over its runs
    best_commit: str
    stall: int              # consecutive iterations without a keep (shown to the prompts and the UI)
    plateau: int            # the director's count (graph/director.py: director_due)
    directive: str          # pending director directive for the next agent iteration ("" if none)
    directive_short: str
    code_summary: str       # the director's summary of the current train.py
    paper: dict | None      # the paper the director last read (graph/papers.py: id, title, summary, ...)
    outcome: Outcome
    started_at: float       # wall-clock start of the campaign (for --max-hours)
    stop_reason: str        # set when the campaign should end
    llm_outage: LLMOutage | None   # the LLM unreachable, iterations in a row (None: it answers)
    director_usage: dict    # the director's LLM tokens since the last verdict row (recorded on the next one)
