"""The offline chat models: `RuleBasedChat`, and the researcher that plays the agent's part.

They let a campaign run end to end without an API key, through the same graph and the same
tools: `OfflineResearcher` emits real tool calls (read_file -> apply_patch -> run_training ->
final answer); `OfflineDirector` (director.py) answers the director's prompts.

Both are stateless: every reply is derived from the message list alone, so a resumed campaign
behaves exactly as an uninterrupted one. What to try is search.py's and directive.py's; how the
tools' answers read is patterns.py's; this module only turns messages into calls and answers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool

from graph.offline.constants import parse_constants
from graph.offline.directive import DirectiveReading, read_directive
from graph.offline.patterns import (file_text, in_flight_names, refused_duplicate, reports_failure, reverse_patch,
                                    run_figures, split_directive)
from graph.offline.search import Move, move_from_patch, parse_history, plan
from graph.prompts import message_text

# -----------------------------------------------------------------------------
# constants

OFFLINE_LABEL = "offline researcher (no LLM)"
NO_EXPERIMENT_LEFT = "no untried experiment left"
TRAIN_PY = "train.py"
MAX_PATCH_TRIES = 3  # candidates tried in one iteration when apply_patch refuses them
MAX_DUPLICATES = 3   # candidates tried in one iteration when run_training refuses them as duplicates
MAX_READ_TRIES = 2


# -----------------------------------------------------------------------------
# message plumbing


@dataclass
class Turn:
    name: str
    args: dict[str, Any]
    result: ToolMessage | None = None

    @property
    def text(self) -> str:
        return message_text(self.result.content) if self.result is not None else ""

    @property
    def ok(self) -> bool:
        if self.result is None or getattr(self.result, "status", "success") == "error":
            return False
        return not reports_failure(self.name, self.text)


@dataclass
class Iteration:
    task: str
    turns: list[Turn] = field(default_factory=list)


def current_iteration(messages: Sequence[BaseMessage]) -> Iteration:
    """The last human message (the task) and the tool calls and results after it."""
    start = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=-1)
    it = Iteration(message_text(messages[start].content) if start >= 0 else "")
    by_id: dict[str, Turn] = {}
    for m in messages[start + 1:]:
        if isinstance(m, AIMessage):
            for call in m.tool_calls:
                turn = Turn(call["name"], dict(call.get("args") or {}))
                it.turns.append(turn)
                if call.get("id"):
                    by_id[call["id"]] = turn
        elif isinstance(m, ToolMessage) and m.tool_call_id in by_id:
            by_id[m.tool_call_id].result = m
    return it


def _tool_call(name: str, args: dict[str, Any], it: Iteration, note: str) -> AIMessage:
    digest = hashlib.sha256(f"{it.task}|{len(it.turns)}|{name}".encode()).hexdigest()[:10]
    call = {"name": name, "args": args, "id": f"call_offline_{len(it.turns) + 1}_{digest}", "type": "tool_call"}
    return AIMessage(content=f"{OFFLINE_LABEL}: {note}", tool_calls=[call])


def rough_usage(messages: Sequence[BaseMessage], reply: AIMessage) -> dict[str, int]:
    """Token usage as an LLM would report it, estimated at 4 characters a token, so traces of an
    offline campaign carry usage like real ones (no tokenizer: it is only an order of magnitude)."""
    def tokens(m: BaseMessage) -> int:
        calls = "".join(f"{c['name']}{c.get('args')}" for c in getattr(m, "tool_calls", None) or [])
        return (len(message_text(m.content)) + len(calls) + 3) // 4 + 1

    prompt, completion = sum(tokens(m) for m in messages), tokens(reply)
    return {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion}


def _bound_names(tools: Sequence[Any]) -> tuple[str, ...]:
    names = []
    for tool in tools:
        try:
            names.append(convert_to_openai_tool(tool)["function"]["name"])
        except Exception:  # an exotic tool format: its name is enough for us
            names.append(getattr(tool, "name", None) or getattr(tool, "__name__", str(tool)))
    return tuple(names)


# -----------------------------------------------------------------------------
# the models


class RuleBasedChat(BaseChatModel):
    """A chat model whose answers come from `respond(messages)` (rules, no LLM): binds tools like
    any chat model and reports a rough token usage, so traces look like a real model's."""

    tool_names: tuple[str, ...] = ()
    label: ClassVar[str] = OFFLINE_LABEL

    @property
    def _llm_type(self) -> str:
        return type(self).__name__

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> RuleBasedChat:
        return self.model_copy(update={"tool_names": _bound_names(tools)})

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        reply = self.respond(messages)
        message = reply if isinstance(reply, AIMessage) else AIMessage(content=reply)
        message.response_metadata["model_name"] = self.label
        message.usage_metadata = rough_usage(messages, message)
        return ChatResult(generations=[ChatGeneration(message=message)])


class OfflineResearcher(RuleBasedChat):
    """Plays the agent's part with real tool calls, one constant change per iteration."""

    def respond(self, messages: Sequence[BaseMessage]) -> AIMessage:
        it = current_iteration(messages)
        directive, rest = split_directive(it.task)
        history = parse_history(rest)

        reads = [t for t in it.turns if t.name == "read_file" and t.ok]
        if not reads:
            failed = [t for t in it.turns if t.name == "read_file"]
            if len(failed) >= MAX_READ_TRIES:
                return self._final("could not read train.py", [failed[-1].text[:200]
                                                                 if failed[-1].result else "no result"])
            return self._call("read_file", {"path": TRAIN_PY}, it, "reading train.py")
        constants = parse_constants(file_text(reads[-1].text))

        patches = [t for t in it.turns if t.name == "apply_patch"]
        failed_keys = [m.key for t in patches if not t.ok and (m := move_from_patch(t.args.get("patch", "")))]
        # a change run_training refused as a duplicate (another agent has it) is undone, then another is tried
        applied, since, duplicates = None, 0, []
        for i, turn in enumerate(it.turns):
            if turn.name == "apply_patch" and turn.ok:
                undone = applied is not None and turn.args.get("patch") == reverse_patch(applied.args.get("patch", ""))
                applied, since = (None, i) if undone else (turn, i)
            elif turn.name == "run_training" and applied is not None and refused_duplicate(turn.text):
                duplicates.append(applied)
        last = it.turns[-1]
        if last.name == "run_training" and refused_duplicate(last.text) and applied is not None:
            if len(duplicates) >= MAX_DUPLICATES:
                return self._final(f"no experiment: {len(duplicates)} changes were refused as duplicates",
                                   [last.text[:200]])
            return self._call("apply_patch", {"patch": reverse_patch(applied.args.get("patch", ""))}, it,
                              "undoing that change: " + last.text[:120])
        failed_keys += [m.key for t in duplicates if (m := move_from_patch(t.args.get("patch", "")))]

        if applied is not None:
            move = move_from_patch(applied.args.get("patch", ""))
            runs = [t for t in it.turns[since:] if t.name == "run_training"]
            if not runs:
                what = move.description if move else "the patch"
                return self._call("run_training", {}, it, f"training with {what}")
            return self._report(move, runs[-1], constants, history, directive, failed_keys)

        refused = [t for t in patches if not t.ok]
        if len(refused) >= MAX_PATCH_TRIES:
            return self._final(f"no experiment: {len(refused)} patches were refused",
                               [refused[-1].text[:200]])
        # a constant another agent is changing right now is theirs to try (the ledger refuses duplicates)
        move, reading = self._choose(constants, history, directive, failed_keys, set(in_flight_names(rest)))
        if move is None:
            lines = [f"directive: {reading.verdict} - {reading.why}"] if reading else []
            return self._final(NO_EXPERIMENT_LEFT, lines + ["every move I know on the constants of train.py was tried"])
        return self._call("apply_patch", {"patch": move.patch}, it, f"trying {move.description} ({move.reason})")

    def _call(self, name: str, args: dict[str, Any], it: Iteration, note: str) -> AIMessage:
        if self.tool_names and name not in self.tool_names:  # bound, but without the tool we need
            return self._final(f"no experiment: the {name} tool is not available", [])
        return _tool_call(name, args, it, note)

    def _choose(self, constants, history, directive, exclude, busy=frozenset()) -> tuple[Move | None, DirectiveReading | None]:
        reading = read_directive(directive, constants, history, exclude) if directive else None
        if reading and reading.move is not None:
            return reading.move, reading
        moves = plan(constants, history, exclude)
        free = [m for m in moves if m.name not in busy]     # other agents are changing these now
        moves = free or moves
        return (moves[0] if moves else None), reading

    def _report(self, move: Move | None, run: Turn, constants, history, directive, failed_keys) -> AIMessage:
        status, bpb = run_figures(run.text)
        outcome = f"run status {status or ('error' if not run.ok else 'unknown')}"
        if bpb:
            outcome += f", val_bpb {bpb}"
        if move is None:  # not one of our patches: nothing to re-derive
            return self._final("unrecognised patch", [f"{outcome}."])
        lines: list[str] = []
        if directive:
            # Re-read the directive as when choosing (same inputs, same answer: we are stateless).
            exclude = [k for k in failed_keys if k != move.key]
            reading = read_directive(directive, constants, history, exclude)
            if reading.move is None or reading.move.key != move.key:
                why = reading.why if reading.verdict == "rejected" else "I could not apply its change"
                reading = DirectiveReading("rejected", why)
            lines.append(f"directive: {reading.verdict} - {reading.why}")
        reason = next((m.reason for m in plan(constants, history, [k for k in failed_keys if k != move.key])
                       if m.key == move.key), "")
        lines.append(f"{outcome}." + (f" Why this one: {reason}." if reason and not directive else ""))
        return self._final(move.description or "unrecognised patch", lines)

    def _final(self, description: str, lines: Sequence[str]) -> AIMessage:
        body = [description]
        body += [ln for ln in lines if ln.startswith("directive:")]
        body += [f"{OFFLINE_LABEL}: " + " ".join(ln for ln in lines if ln and not ln.startswith("directive:"))]
        return AIMessage(content="\n".join(body).rstrip(": ").rstrip())

