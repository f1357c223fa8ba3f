"""The offline director: summarizes train.py, then writes one tentative directive (no LLM).

It answers by the step marker of the director's prompts (`<!-- step: summarize -->`,
`<!-- step: directive -->`) and returns plain text. Its directive is the researcher's own best
next move (search.py), worded as advice; a paper in the prompt may pick among the moves through
its keywords, but is never named.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import ClassVar

from langchain_core.messages import BaseMessage

from graph.offline.constants import constants_in_text, parse_constants
from graph.offline.knobs import GROUPS, keywords, rationale
from graph.offline.models import RuleBasedChat
from graph.offline.patterns import TENTATIVE, code_block, prompt_step, section
from graph.offline.search import parse_history, plan
from graph.prompts import message_text

# -----------------------------------------------------------------------------
# constants

DIRECTOR_LABEL = "offline director (no LLM)"


# -----------------------------------------------------------------------------
# the director


class OfflineDirector(RuleBasedChat):
    """Plays the director's part: summarizes train.py, then writes one tentative directive."""

    label: ClassVar[str] = DIRECTOR_LABEL

    def respond(self, messages: Sequence[BaseMessage]) -> str:
        prompt = "\n\n".join(message_text(m.content) for m in messages)
        step = prompt_step(prompt) or _guess_step(prompt)
        if step == "summarize":
            return summarize(code_block(prompt))
        if step == "directive":
            return write_directive(prompt)
        return f"{DIRECTOR_LABEL}: nothing to add for step {step!r}."


def _guess_step(prompt: str) -> str:
    """For a prompt without its marker (e.g. an override that dropped it)."""
    if "```python" in prompt:
        return "summarize"
    if "directive" in prompt.lower() or TENTATIVE.lower() in prompt.lower():
        return "directive"
    return "unknown"


def summarize(code: str) -> str:
    """A compact, factual summary: the constants by group, then the code's outline."""
    constants = parse_constants(code)
    lines = [f"{DIRECTOR_LABEL}: summary of train.py ({len(code.splitlines())} lines)"]
    grouped: set[str] = set()
    for title, names in GROUPS:
        present = [constants[n] for n in names if n in constants]
        grouped.update(c.name for c in present)
        if not present:
            continue
        items = [f"{c.name} = {c.text}" for c in present]
        if title == "model" and {"DEPTH", "ASPECT_RATIO"} <= constants.keys():
            depth, ratio = constants["DEPTH"].value, constants["ASPECT_RATIO"].value
            if isinstance(depth, int) and isinstance(ratio, int):
                items.insert(2, f"model_dim about {depth * ratio}")
        lines.append(f"- {title}: " + ", ".join(items))
    others = [f"{c.name} = {c.text}" for c in constants.values() if c.name not in grouped]
    if others:
        lines.append("- other constants: " + ", ".join(others[:12]))
    try:
        tree = ast.parse(code)
        classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
        functions = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        if classes:
            lines.append("- classes: " + ", ".join(classes))
        if functions:
            lines.append("- functions: " + ", ".join(functions))
    except SyntaxError:
        lines.append("- (the code does not parse as Python)")
    return "\n".join(lines)


def write_directive(prompt: str) -> str:
    """One directive in tentative language, from the summary, the history and an optional paper."""
    paper = section(prompt, ("read", "paper"))
    history_text = section(prompt, ("history",)) or prompt
    constants = constants_in_text(section(prompt, ("train.py", "summary")) or prompt)
    history = parse_history(history_text)
    moves = plan(constants, history)
    if not moves:
        return (f"{TENTATIVE} one change beyond the top-level constants, such as the MLP's activation "
                "or the initialization scale, since every simple constant change has been tried.")
    move, why = moves[0], ""
    if moves[0].reason.startswith("continues"):
        why = f"{moves[0].reason.replace('continues ', 'moving ', 1)}, so the optimum may lie further that way"
    elif paper.strip():
        text = paper.lower()
        scored = [(sum(text.count(k) for k in keywords(m.name)), -i, m) for i, m in enumerate(moves)]
        score, _, best = max(scored, key=lambda s: (s[0], s[1]))
        if score > 0:
            move, why = best, f"an idea I came across suggests it, and {rationale(best.name, 'it is cheap to test')}"
    if not why:
        why = rationale(move.name, "it has not been explored yet")
        why = f"the history has barely touched {move.name}, and {why}"
    first, *coupled = move.changes
    extra = "".join(f" (and {c.constant.name} to {c.new_text})" for c in coupled)
    return (f"{TENTATIVE} setting {first.constant.name} to {first.new_text}{extra}, "
            f"from {first.constant.text} now: {why}.")


