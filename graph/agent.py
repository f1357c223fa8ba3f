"""
The agent node's work: one experiment as a bounded tool-calling loop.

The agent model gets the task (the best score, the seed noise, the history, a pending directive)
and calls the four tools (tools/lc_tools.py) until it answers without a tool call or spends
--max-agent-steps. Every run_training call commits the code it trained under
refs/autoresearch/experiments/N (the last run of the iteration is the experiment); the judge
then only decides. The answer's first line is the experiment's description, and with a directive
pending it says whether the agent followed, adapted or rejected it.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableConfig

from graph import noise, usage
from graph.results import clip
from graph.campaign import Campaign
from graph.ledger import DESCRIPTION_CHARS, EXPERIMENT_REF
from graph.llm import LLMUnavailable, invoke_with_retry
from graph.prompts import AGENT_OTHERS, AGENT_SYSTEM, AGENT_TASK, directive_section, message_text, render_prompt
from graph.state import CampaignState, Outcome
from tools import RunResult
from tools.redact import clip_for_model

CHOICES = ("followed", "adapted", "rejected")
OTHERS_SHOWN = 24        # in-flight experiments listed in the prompt (hundreds of agents: a count for the rest)


def run_agent(c: Campaign, state: CampaignState, iteration: int, directive: str,
              config: RunnableConfig | None = None) -> Outcome:
    s = c.settings
    tools = {t.name: t for t in c.tools(seed=c.seed(iteration, 1), iteration=iteration)}
    now = c.ledger.standing()
    values = {
        "iteration": iteration,
        "best_val_bpb": f"{state['best_val_bpb']:.6f}",
        "best_runs": len(now.best),
        "noise": noise_text(c, now),
        "baseline_val_bpb": f"{state['baseline_val_bpb']:.6f}",
        "history": c.ledger.history(),
        "others": others_text(c.ledger.in_flight(c.agent), s.prompts_dir) if c.parallel else "",
        "stall": stall_text(state.get("stall", 0), s.plateau_patience),
        "directive_section": directive_section(directive, s.prompts_dir),
        "max_agent_steps": s.max_agent_steps,
    }
    messages = [SystemMessage(render_prompt(AGENT_SYSTEM, {}, s.prompts_dir)),
                HumanMessage(render_prompt(AGENT_TASK, values, s.prompts_dir))]
    model = c.models.agent.bind_tools(list(tools.values()))
    outcome: Outcome = {"directive": directive, "agent_choice": "", "run": None, "description": "",
                        "usage": usage.add()}
    steps = 0
    final: AIMessage | None = None

    def on_retry(attempt, wait, error):
        c.on_event("retry", {"attempt": attempt, "wait": wait, "error": error})

    while True:
        try:
            ai = invoke_with_retry(model, messages, max_attempts=s.llm_max_attempts, on_retry=on_retry,
                                   config=config, redactor=c.redactor)
        except LLMUnavailable as e:          # its message already says "LLM unavailable after ..."
            outcome["note"] = str(e)
            outcome["llm_error"] = e.last_error
            outcome["llm_down_since"] = time.time() - e.elapsed
            c.on_event("error", {"message": outcome["note"]})
            break
        outcome["usage"] = usage.add(outcome["usage"], usage.of_message(ai))   # retries' failures return none
        if not usage.reported(ai):
            c.on_event("usage_missing", {"iteration": iteration, "who": "agent"})
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
        # in a parallel campaign: the same code as an experiment done or in flight is not trained again
        refused = c.ledger.propose(c.agent, iteration, source) if c.parallel else ""
        if refused:
            outcome["note"] = clip(refused, 160)       # the row's reason, if it never trains after all
            c.on_event("refused", {"iteration": iteration, "message": refused})
            return ToolMessage(refused, tool_call_id=call["id"], name=name)
        c.on_event("phase", {"iteration": iteration, "phase": "training"})
        result = tool.invoke({**call, "type": "tool_call"}, config)
        run = result.artifact
        if isinstance(run, RunResult):   # the code exactly as trained, kept or not (the agent may edit on)
            outcome["run"] = asdict(run)
            outcome["commit"] = c.workspace.snapshot(source, f"experiment {iteration}",
                                                     EXPERIMENT_REF.format(iteration))
            c.on_event("trained", {"iteration": iteration, "status": run.status, "val_bpb": run.val_bpb,
                                   "sandboxed": run.sandboxed})
        c.on_event("phase", {"iteration": iteration, "phase": "agent thinking"})
        return ToolMessage(result.content, tool_call_id=call["id"], name=name)
    try:
        content = tool.invoke(args, config)
    except Exception as e:           # a tool bug must not end the campaign: tell the model
        content = clip_for_model(f"Error: {name} failed: {e}", redactor=c.redactor)
    return ToolMessage(str(content), tool_call_id=call["id"], name=name)


def noise_text(c: Campaign, now: noise.Standing) -> str:
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


def others_text(claims: list[dict], prompts_dir=None) -> str:
    """The `{others}` of agent_task.md: the other agents' experiments in flight, or ''."""
    if not claims:
        return ""
    lines = [f"- agent {c['agent']} (device {c.get('device') or '?'}), experiment {c['iteration']}: "
             f"{c.get('trying') or 'still thinking'}" for c in claims[:OTHERS_SHOWN]]
    if len(claims) > OTHERS_SHOWN:
        lines.append(f"- and {len(claims) - OTHERS_SHOWN} more (code identical to one in flight is refused)")
    return render_prompt(AGENT_OTHERS, {"claims": "\n".join(lines)}, prompts_dir)


def stall_text(stall: int, patience: int) -> str:
    if stall == 0:
        return "The last experiment improved the best result (or this is the first one)."
    return (f"The last {stall} experiment(s) did not improve on the best "
            f"(after every {patience} in a row, the director suggests a new direction).")
