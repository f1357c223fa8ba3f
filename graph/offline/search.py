"""The offline researcher's search: which experiment to run next, from train.py and the history.

Pure Python (no LangChain, no I/O): the chat models in models.py and director.py call it. It is a
small greedy search over the top-level constants of train.py that knobs.py knows:

- an experiment changes one constant (two lines for coupled constants), e.g. `MATRIX_LR: 0.04 -> 0.06`;
- it never repeats an experiment of the history (same constant, same old value, same new value);
- after a kept change it pushes further the same way (0.04 -> 0.06 kept: try 0.09);
- after a discarded change it avoids the opposite move on that constant for now;
- otherwise it rotates to the least-explored constant; ties are broken by a generator seeded with
  the history's hash, so the same history always gives the same experiment.

The history is whatever text the task shows: every line with `NAME: old -> new` and a status word
is a past experiment (patterns.py reads it), so the researcher needs no memory of its own.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from graph.offline.constants import Constant, Value, canonical, format_value, literal_value, parse_constants
from graph.offline.knobs import Rule, priority, rule_for
from graph.offline.patterns import history_entries, patch_block, patch_blocks

# -----------------------------------------------------------------------------
# constants

SEQ_LEN_NAMES = ("MAX_SEQ_LEN", "SEQ_LEN", "SEQUENCE_LEN", "SEQUENCE_LENGTH")  # if train.py has one


# -----------------------------------------------------------------------------
# experiments


@dataclass(frozen=True)
class Change:
    constant: Constant
    new: Value

    @property
    def new_text(self) -> str:
        return format_value(self.new, self.constant)

    @property
    def description(self) -> str:
        return f"{self.constant.name}: {self.constant.text} -> {self.new_text}"

    @property
    def new_line(self) -> str:
        a, b = self.constant.span
        return self.constant.line[:a] + self.new_text + self.constant.line[b:]


@dataclass(frozen=True)
class Move:
    """One experiment: a primary change, plus coupled ones (e.g. the device batch size)."""

    changes: tuple[Change, ...]
    direction: int = 0  # +1 up, -1 down, 0 for a choice
    reason: str = ""

    @property
    def name(self) -> str:
        return self.changes[0].constant.name

    @property
    def key(self) -> tuple[str, Value, Value]:
        first = self.changes[0]
        return (first.constant.name, canonical(first.constant.value), canonical(first.new))

    @property
    def description(self) -> str:
        return ", ".join(c.description for c in self.changes)

    @property
    def patch(self) -> str:
        return "\n".join(patch_block(c.constant.line, c.new_line) for c in self.changes) + "\n"


@dataclass(frozen=True)
class Past:
    """One experiment of the history, as parsed back from its description."""

    name: str
    old: Value
    new: Value
    status: str  # keep | discard | crash | no-run | unknown

    @property
    def key(self) -> tuple[str, Value, Value]:
        return (self.name, self.old, self.new)

    @property
    def direction(self) -> int:
        if isinstance(self.old, float) and isinstance(self.new, float):
            return (self.new > self.old) - (self.new < self.old)
        return 0


def parse_history(text: str) -> list[Past]:
    """Experiments in the history text: any line with `NAME: old -> new` and a status word."""
    past: list[Past] = []
    for name, old_text, new_text, status in history_entries(text):
        old, new = literal_value(old_text), literal_value(new_text)
        if old is None or new is None:
            continue
        past.append(Past(name, canonical(old), canonical(new), status))
    return past


# -----------------------------------------------------------------------------
# candidates and their order


def candidate_moves(constants: dict[str, Constant]) -> list[Move]:
    """Every one-step move of every known constant present, in file order."""
    moves: list[Move] = []
    for c in constants.values():
        rule = rule_for(c.name)
        if rule is None or (rule.kind == "choice") != isinstance(c.value, str):
            continue
        for new, direction in _steps(c, rule):
            move = couple(Move((Change(c, new),), direction), constants)
            if move is not None:
                moves.append(move)
    return moves


def _steps(c: Constant, rule: Rule) -> list[tuple[Value, int]]:
    v = c.value
    if rule.kind == "choice":
        return [(alt, 0) for alt in rule.choices if alt != v]
    # An int stays an int only under whole steps: `WARMUP_RATIO = 0` + 0.05 must give 0.05.
    is_int = isinstance(v, int) and float(rule.step).is_integer()
    if rule.kind == "mul":
        if v == 0:
            return [(float(rule.seed), 1)] if rule.seed is not None else []
        elif is_int:
            step = int(rule.step)
            raw = [(v * step, 1), (v // step if v % step == 0 else None, -1)]
        else:  # rounded to 3 significant digits, as a person would write a learning rate
            raw = [(float(f"{v * rule.step:.3g}"), 1), (float(f"{v / rule.step:.3g}"), -1)]
    else:
        raw = [(v + rule.step, 1), (v - rule.step, -1)]
    hi = rule.hi
    if rule.fraction_hi is not None and isinstance(v, float) and 0 < v <= rule.fraction_hi:
        hi = rule.fraction_hi
    steps: list[tuple[Value, int]] = []
    for new, direction in raw:
        if new is None:
            continue
        if rule.lo is not None:
            new = max(new, rule.lo)
        if hi is not None:
            new = min(new, hi)
        new = int(round(new)) if is_int else float(f"{new:.6g}")
        if canonical(new) != canonical(v) and (new, direction) not in steps:
            steps.append((new, direction))
    return steps


def couple(move: Move, constants: dict[str, Constant]) -> Move | None:
    """Keep DEVICE_BATCH_SIZE consistent when TOTAL_BATCH_TOKENS halves (accumulation stays whole)."""
    first = move.changes[0]
    dbs = constants.get("DEVICE_BATCH_SIZE")
    if first.constant.name != "TOTAL_BATCH_TOKENS" or dbs is None or not isinstance(dbs.value, int):
        return move
    tokens, device = int(first.new), dbs.value
    if tokens >= int(first.constant.value):
        return move  # more tokens per step: more accumulation, the micro-batch still fits
    seq = next((constants[n].value for n in SEQ_LEN_NAMES
                if n in constants and isinstance(constants[n].value, int)), None)
    if seq is not None and tokens % (device * seq) == 0:
        return move  # we know the sequence length: whole micro-batches still fit
    if device % 2 == 0:
        return Move(move.changes + (Change(dbs, device // 2),), move.direction, move.reason)
    if seq is None and tokens % device == 0:
        return move  # best effort: the ratio stays whole
    return None


def plan(constants: dict[str, Constant], history: Sequence[Past], exclude: Iterable[tuple] = ()) -> list[Move]:
    """Untried moves, best first. Deterministic: ties are broken by the history's hash."""
    tried = {p.key for p in history} | set(exclude)
    moves = [m for m in candidate_moves(constants) if m.key not in tried]
    rng = random.Random(history_seed(history))
    counts = Counter(p.name for p in history)

    # 1. push further along a kept change whose value train.py still has
    first: list[Move] = []
    for p in reversed(history):
        c = constants.get(p.name)
        if p.status != "keep" or not p.direction or c is None or canonical(c.value) != p.new:
            continue
        for m in moves:
            if m.name == p.name and m.direction == p.direction and m.key not in {f.key for f in first}:
                reason = f"continues {p.name}: {_fmt(p.old)} -> {_fmt(p.new)}, which was kept"
                first.append(Move(m.changes, m.direction, reason))
                break

    # 2. a step that was just discarded: try the same constant in the other direction
    #    (coordinate search: if lowering X hurt, raising X is the most informative next step)
    last = history[-1] if history else None
    kept_undo = {(p.name, p.new, p.old) for p in history if p.status == "keep"}
    if last and last.status == "discard" and last.direction:
        c = constants.get(last.name)
        for m in moves:
            if (m.name == last.name and m.direction == -last.direction and c is not None
                    and canonical(c.value) == last.old and m.key not in {f.key for f in first}
                    and m.key not in kept_undo):
                first.append(Move(m.changes, m.direction, f"{last.name}: {_fmt(last.old)} -> {_fmt(last.new)} "
                                                          f"was discarded, so the other direction"))
                break

    # 4. going back on a kept change waits until everything else was tried
    def is_opposite(m: Move) -> bool:
        return m.key in kept_undo

    # 3. otherwise the least-explored constant, in a seeded order
    names = sorted({m.name for m in moves})
    rng.shuffle(names)
    rank = {name: i for i, name in enumerate(names)}
    rest = [m for m in moves if m.key not in {f.key for f in first}]
    rng.shuffle(rest)
    rest.sort(key=lambda m: (is_opposite(m), counts[m.name], priority(m.name), rank[m.name]))
    rest = [Move(m.changes, m.direction, _rotation_reason(m, counts, is_opposite(m))) for m in rest]
    return first + rest


def _rotation_reason(m: Move, counts: Counter, opposite: bool) -> str:
    if opposite:
        return f"it goes back on a recent result for {m.name}, but everything else was tried"
    n = counts[m.name]
    if n == 0:
        return f"{m.name} has not been tried yet"
    return f"{m.name} is among the least explored constants ({n} experiment{'s' if n != 1 else ''} so far)"


def history_seed(history: Sequence[Past]) -> int:
    text = "\n".join(f"{p.name}|{p.old}|{p.new}|{p.status}" for p in history)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _fmt(value: Value) -> str:
    return f'"{value}"' if isinstance(value, str) else f"{value:g}"


def move_from_patch(patch: str) -> Move | None:
    """The experiment a SEARCH/REPLACE patch of ours makes (to describe it after the run)."""
    changes: list[Change] = []
    for search, replace in patch_blocks(patch):
        before, after = parse_constants(search), parse_constants(replace)
        for name, c in before.items():
            if name in after and canonical(after[name].value) != canonical(c.value):
                changes.append(Change(c, after[name].value))
    if not changes:
        return None
    first = changes[0]
    return Move(tuple(changes), sign(first.new, first.constant.value))


def sign(new: Value, old: Value) -> int:
    """+1 up, -1 down, 0 for no change or a string."""
    if isinstance(new, str) or isinstance(old, str):
        return 0
    return (new > old) - (new < old)

