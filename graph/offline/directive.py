"""How the offline researcher reads a pending directive: as one of its own moves, or not at all.

A directive is advice in prose ("I think you could try setting MATRIX_LR to 0.06, ..."). The
researcher follows it when it names a constant it knows and a value it can write and has not
tried; adapts it (its own step on that constant, the way the words lean) when only the value
fails; rejects it otherwise, saying why on the second line of its answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from graph.offline.constants import Constant, Value, canonical, literal_value
from graph.offline.knobs import Rule, rule_for
from graph.offline.patterns import directive_lean, directive_value, first_mention
from graph.offline.search import Change, Move, Past, candidate_moves, couple, sign


@dataclass(frozen=True)
class DirectiveReading:
    verdict: str  # followed | adapted | rejected
    why: str
    move: Move | None = None


def read_directive(directive: str, constants: dict[str, Constant], history: Sequence[Past],
                   exclude: Iterable[tuple] = ()) -> DirectiveReading:
    """Map a directive onto one of our moves: the exact change, another step on its constant, or none."""
    tried = {p.key for p in history} | set(exclude)
    mentioned = [n for n in sorted(constants, key=lambda n: first_mention(directive, n))
                 if first_mention(directive, n) >= 0]
    mentioned = [n for n in mentioned if rule_for(n)]
    if not mentioned:
        return DirectiveReading("rejected", "it names no top-level constant of train.py I know how to change")
    name = mentioned[0]
    c = constants[name]
    written = directive_value(directive, name)
    target = _coerce(literal_value(written) if written is not None else None, c, rule_for(name))
    if target is not None and canonical(target) != canonical(c.value):
        move = couple(Move((Change(c, target),), sign(target, c.value)), constants)
        if move is not None and move.key not in tried:
            return DirectiveReading("followed", f"it names {name} and a value not tried yet", move)
    direction = directive_lean(directive)
    options = [m for m in candidate_moves(constants) if m.name == name and m.key not in tried]
    options.sort(key=lambda m: m.direction != direction)
    if options:
        why = f"I made my own step on {name}, which it names" + (
            "; its exact change was already tried" if target is not None else "")
        return DirectiveReading("adapted", why, options[0])
    return DirectiveReading("rejected", f"every step I know on {name} was already tried")


def _coerce(target: Value | None, c: Constant, rule: Rule | None) -> Value | None:
    """The directive's value in the constant's type and bounds, else None."""
    if target is None or isinstance(target, str) != isinstance(c.value, str):
        return None
    if isinstance(target, str):
        return target
    if isinstance(c.value, int):
        if not float(target).is_integer():
            return None
        target = int(target)
    else:
        target = float(target)
    if rule and ((rule.lo is not None and target < rule.lo) or (rule.hi is not None and target > rule.hi)):
        return None
    return target
