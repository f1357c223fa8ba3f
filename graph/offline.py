"""The built-in offline researcher and director: chat models with no LLM behind them.

They let a campaign run end to end without an API key, through the same graph and the same
tools: `OfflineResearcher` emits real tool calls (read_file -> apply_patch -> run_training ->
final answer), `OfflineDirector` answers the director's prompts.

Both are stateless: every reply is derived from the message list alone, so a resumed campaign
behaves exactly as an uninterrupted one. The researcher's search is a small greedy one over the
top-level constants of train.py:

- an experiment changes one constant (two lines for coupled constants), e.g. `MATRIX_LR: 0.04 -> 0.06`;
- it never repeats an experiment of the history (same constant, same old value, same new value);
- after a kept change it pushes further the same way (0.04 -> 0.06 kept: try 0.09);
- after a discarded change it avoids the opposite move on that constant for now;
- otherwise it rotates to the least-explored constant; ties are broken by a generator seeded with
  the history's hash, so the same history always gives the same experiment.
"""

from __future__ import annotations

import ast
import hashlib
import io
import math
import random
import re
import tokenize
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool

# -----------------------------------------------------------------------------
# constants

OFFLINE_LABEL = "offline researcher (no LLM)"
DIRECTOR_LABEL = "offline director (no LLM)"
NO_EXPERIMENT_LEFT = "no untried experiment left"
TRAIN_PY = "train.py"
MAX_PATCH_TRIES = 3  # candidates tried in one iteration when apply_patch refuses them
MAX_READ_TRIES = 2
TENTATIVE = "I think you could try"

SEARCH, DIVIDER, REPLACE = "<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE"
STATUSES = {"keep": "keep", "kept": "keep", "discard": "discard", "discarded": "discard",
            "crash": "crash", "crashed": "crash", "no-run": "no-run"}
SEQ_LEN_NAMES = ("MAX_SEQ_LEN", "SEQ_LEN", "SEQUENCE_LEN", "SEQUENCE_LENGTH")  # if train.py has one


@dataclass(frozen=True)
class Rule:
    """How a constant may move: multiply/divide by `step`, add/subtract `step`, or pick a choice."""

    kind: str  # "mul" | "add" | "choice"
    step: float = 0.0
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    seed: float | None = None  # a "mul" constant at 0 moves to this value instead
    fraction_hi: float | None = None  # a float value in (0, hi] is a fraction: stays <= hi


RULES: dict[str, Rule] = {
    "MATRIX_LR": Rule("mul", 1.5),
    "EMBEDDING_LR": Rule("mul", 1.5),
    "UNEMBEDDING_LR": Rule("mul", 1.5),
    "SCALAR_LR": Rule("mul", 1.5),
    "WEIGHT_DECAY": Rule("mul", 2.0, seed=0.1),
    "WARMUP_RATIO": Rule("add", 0.05, lo=0.0, hi=0.5),
    "WARMDOWN_RATIO": Rule("add", 0.2, lo=0.0, hi=1.0),
    "FINAL_LR_FRAC": Rule("add", 0.05, lo=0.0, hi=1.0),
    "DEPTH": Rule("add", 1, lo=1),
    "ASPECT_RATIO": Rule("add", 16, lo=16),
    "HEAD_DIM": Rule("mul", 2, lo=16, hi=256),
    "SHORT_WINDOW": Rule("mul", 2, lo=1e-6, fraction_hi=1.0),
    "TOTAL_BATCH_TOKENS": Rule("mul", 2, lo=1),
    "WINDOW_PATTERN": Rule("choice", choices=("L", "SL", "SSL", "SSSL")),
}
LR_RULE = Rule("mul", 1.5)  # any other *_LR constant

# Among equally explored constants, cheap and usually fruitful knobs come first (learning rates
# and schedule), then regularization and batch, then the architecture; seeded order within a tier.
PRIORITY = {   # expected impact in a short fixed-time run, most first (a prior, not a rule)
    "MATRIX_LR": 0,                       # Muon moves almost all the weights
    "TOTAL_BATCH_TOKENS": 0,              # sets how many optimizer steps fit in the budget
    "EMBEDDING_LR": 1, "WARMDOWN_RATIO": 1,
    "UNEMBEDDING_LR": 2, "SCALAR_LR": 2, "WARMUP_RATIO": 2, "FINAL_LR_FRAC": 2, "WEIGHT_DECAY": 2,
    "DEPTH": 3, "ASPECT_RATIO": 3, "HEAD_DIM": 3, "WINDOW_PATTERN": 3, "SHORT_WINDOW": 3,
}

# Why a change might help, for the director's directives (one clause each).
RATIONALE = {
    "MATRIX_LR": "the matrix learning rate sets how fast most of the weights move in a short run",
    "EMBEDDING_LR": "the embeddings see few updates per token, so their learning rate matters",
    "UNEMBEDDING_LR": "the output layer's learning rate shapes the early loss curve",
    "SCALAR_LR": "the scalar parameters are cheap to tune and often mis-set",
    "WEIGHT_DECAY": "regularization interacts with the learning rates in a short run",
    "WARMUP_RATIO": "the first steps decide whether the fast learning rates are stable",
    "WARMDOWN_RATIO": "how long the learning rate cools down is often worth more than its peak",
    "FINAL_LR_FRAC": "where the schedule ends changes the last, most valuable steps",
    "DEPTH": "under a fixed time budget the balance between depth and step speed is worth checking",
    "ASPECT_RATIO": "width trades capacity against speed under a fixed time budget",
    "HEAD_DIM": "fewer, larger heads or more, smaller ones change both speed and quality",
    "SHORT_WINDOW": "the short attention window trades context for speed",
    "TOTAL_BATCH_TOKENS": "the batch size trades the number of steps against their quality",
    "WINDOW_PATTERN": "the mix of short and long attention layers trades context for speed",
}
# Words in a paper's title/abstract that point at a constant (the director takes only the idea).
PAPER_KEYWORDS = {
    "MATRIX_LR": ("learning rate", "muon", "optimizer", "orthogonal"),
    "EMBEDDING_LR": ("embedding",),
    "UNEMBEDDING_LR": ("unembedding", "output layer", "logit"),
    "SCALAR_LR": ("scalar", "gain", "gate"),
    "WEIGHT_DECAY": ("weight decay", "regulariz"),
    "WARMUP_RATIO": ("warmup", "warm-up", "stabil"),
    "WARMDOWN_RATIO": ("schedule", "cooldown", "cool-down", "decay phase", "annealing", "warmdown"),
    "FINAL_LR_FRAC": ("schedule", "annealing", "final learning rate"),
    "DEPTH": ("depth", "deeper", "layers"),
    "ASPECT_RATIO": ("width", "wider", "scaling law", "compute-optimal"),
    "HEAD_DIM": ("head dimension", "attention heads", "multi-head"),
    "SHORT_WINDOW": ("sliding window", "local attention", "window"),
    "TOTAL_BATCH_TOKENS": ("batch size", "critical batch", "gradient noise"),
    "WINDOW_PATTERN": ("sliding window", "local attention", "long context", "hybrid attention"),
}

_ASSIGN = re.compile(r"^([A-Z][A-Z0-9_]*)\s*(?::[^=]+)?=(?!=)")
_DESCRIPTION = re.compile(r"\b([A-Z][A-Z0-9_]*): ([^\s,|]+) -> ([^\s,|]+)")
_STATUS = re.compile(r"(?<![\w-])(keep|kept|discard|discarded|crash|crashed|no-run)(?![\w-])", re.I)
_NUMBERED = re.compile(r"^\s*\d+(?:\| ?|\t)(.*)$")   # read_file's "  12\tcode" (or "12| code")
_STEP_MARKER = re.compile(r"<!--\s*step:\s*([\w-]+)\s*-->")
_FAILURE = re.compile(
    r"^\W*(error|failed|failure|fail|patch failed|rejected|could not|cannot|can't|invalid|no match)\b", re.I
)
_PATCH_MISS = re.compile(r"not found|did not match|does not match|no match|not unique|ambiguous", re.I)


# -----------------------------------------------------------------------------
# train.py constants

Value = int | float | str


@dataclass(frozen=True)
class Constant:
    """A top-level `NAME = value` assignment of train.py."""

    name: str
    value: Value
    text: str  # the value as written, e.g. "2**19"
    line: str = ""  # the whole line, for SEARCH blocks ("" when read from a summary)
    span: tuple[int, int] = (0, 0)  # where `text` sits in `line`


def parse_constants(source: str) -> dict[str, Constant]:
    """Top-level constants with a literal (or simple arithmetic) value; names assigned twice are skipped."""
    found: dict[str, Constant] = {}
    seen: Counter[str] = Counter()
    for line in source.splitlines():
        m = _ASSIGN.match(line)
        if not m:
            continue
        name = m.group(1)
        seen[name] += 1
        code, _comment = _split_comment(line[m.end():])
        text = code.strip()
        value = literal_value(text)
        if value is None:
            continue
        start = m.end() + len(code) - len(code.lstrip())
        found[name] = Constant(name, value, text, line, (start, start + len(text)))
    return {name: c for name, c in found.items() if seen[name] == 1}


def constants_in_text(text: str) -> dict[str, Constant]:
    """`NAME = value` pairs anywhere in prose (e.g. a summary of train.py), first one wins."""
    found: dict[str, Constant] = {}
    for m in re.finditer(r"\b([A-Z][A-Z0-9_]{1,})\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s,;()]+)", text):
        name, raw = m.group(1), m.group(2).rstrip(".")
        value = literal_value(raw)
        if value is not None and name not in found:
            found[name] = Constant(name, value, raw)
    return found


def literal_value(text: str) -> Value | None:
    """A literal int/float/str, or simple arithmetic on numbers (`2**19`, `512 * 1024`); else None."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = _arithmetic(text)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _arithmetic(text: str) -> int | float | None:
    ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Pow: lambda a, b: a ** b}

    def ev(node: ast.AST) -> int | float:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise ValueError("exponent too large")
            return ops[type(node.op)](left, right)
        raise ValueError("not simple arithmetic")

    try:
        return ev(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, TypeError):
        return None


def _split_comment(rest: str) -> tuple[str, str]:
    try:
        for tok in tokenize.generate_tokens(io.StringIO(rest).readline):
            if tok.type == tokenize.COMMENT:
                return rest[: tok.start[1]], rest[tok.start[1]:]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return rest, ""


def canonical(value: Value) -> Value:
    """Values compare by meaning: 0.06 == 0.060, 2**19 == 524288."""
    if isinstance(value, (int, float)):
        return float(f"{float(value):.6g}")
    return value


def format_value(value: Value, like: Constant) -> str:
    """Write `value` the way `like` is written (quotes, 2**k, underscores, float-ness)."""
    if isinstance(value, str):
        quote = like.text[0] if like.text[:1] in ("'", '"') else '"'
        return f"{quote}{value}{quote}"
    if isinstance(value, int):
        if re.fullmatch(r"2\s*\*\*\s*\d+", like.text) and value > 0 and value & (value - 1) == 0:
            return f"2**{value.bit_length() - 1}"
        return f"{value:_}" if "_" in like.text else str(value)
    text = f"{value:.6g}"
    return text if any(ch in text for ch in ".einf") else text + ".0"


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
        blocks = [f"{SEARCH}\n{c.constant.line}\n{DIVIDER}\n{c.new_line}\n{REPLACE}" for c in self.changes]
        return "\n".join(blocks) + "\n"


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
    for line in text.splitlines():
        m = _DESCRIPTION.search(line)
        if not m:
            continue
        old, new = literal_value(m.group(2)), literal_value(m.group(3))
        if old is None or new is None:
            continue
        status = _STATUS.search(line[: m.start()] + " " + line[m.end():])
        past.append(Past(m.group(1), canonical(old), canonical(new),
                         STATUSES[status.group(1).lower()] if status else "unknown"))
    return past


def rule_for(name: str) -> Rule | None:
    return RULES.get(name) or (LR_RULE if name.endswith("_LR") else None)


def candidate_moves(constants: dict[str, Constant]) -> list[Move]:
    """Every one-step move of every known constant present, in file order."""
    moves: list[Move] = []
    for c in constants.values():
        rule = rule_for(c.name)
        if rule is None or (rule.kind == "choice") != isinstance(c.value, str):
            continue
        for new, direction in _steps(c, rule):
            move = _couple(Move((Change(c, new),), direction), constants)
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


def _couple(move: Move, constants: dict[str, Constant]) -> Move | None:
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
    rest.sort(key=lambda m: (is_opposite(m), counts[m.name], PRIORITY.get(m.name, 1), rank[m.name]))
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
    for block in re.finditer(rf"{re.escape(SEARCH)}\n(.*?)\n{DIVIDER}\n(.*?)\n{re.escape(REPLACE)}", patch, re.S):
        before, after = parse_constants(block.group(1)), parse_constants(block.group(2))
        for name, c in before.items():
            if name in after and canonical(after[name].value) != canonical(c.value):
                changes.append(Change(c, after[name].value))
    if not changes:
        return None
    first = changes[0]
    direction = 0
    if not isinstance(first.new, str):
        direction = (first.new > first.constant.value) - (first.new < first.constant.value)
    return Move(tuple(changes), direction)


# -----------------------------------------------------------------------------
# directives (as the researcher reads them)


@dataclass(frozen=True)
class DirectiveReading:
    verdict: str  # followed | adapted | rejected
    why: str
    move: Move | None = None


def read_directive(directive: str, constants: dict[str, Constant], history: Sequence[Past],
                   exclude: Iterable[tuple] = ()) -> DirectiveReading:
    """Map a directive onto one of our moves: the exact change, another step on its constant, or none."""
    tried = {p.key for p in history} | set(exclude)
    mentioned = [n for n in sorted(constants, key=lambda n: _first_index(directive, n)) if _first_index(directive, n) >= 0]
    mentioned = [n for n in mentioned if rule_for(n)]
    if not mentioned:
        return DirectiveReading("rejected", "it names no top-level constant of train.py I know how to change")
    name = mentioned[0]
    c = constants[name]
    target = _coerce(_directive_target(directive, name), c, rule_for(name))
    if target is not None and canonical(target) != canonical(c.value):
        move = _couple(Move((Change(c, target),), _sign(target, c.value)), constants)
        if move is not None and move.key not in tried:
            return DirectiveReading("followed", f"it names {name} and a value not tried yet", move)
    direction = _directive_direction(directive)
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


def _first_index(text: str, name: str) -> int:
    m = re.search(rf"\b{re.escape(name)}\b", text)
    return m.start() if m else -1


def _directive_target(directive: str, name: str) -> Value | None:
    tail = directive[_first_index(directive, name):]
    m = (re.match(rf"{name}: [^\s,]+ -> ([^\s,;)]+)", tail)
         or re.search(r"\bto\s+(\"[^\"]*\"|'[^']*'|[-+]?[0-9][0-9_.eE+\-*]*)", tail.split("\n")[0]))
    return literal_value(m.group(1).rstrip(".")) if m else None


def _directive_direction(directive: str) -> int:
    text = directive.lower()
    if re.search(r"\b(increas|rais|higher|larger|bigger|more|doubl|longer|deeper|wider)", text):
        return 1
    if re.search(r"\b(decreas|lower|reduc|smaller|less|halv|shorter|shallower|narrower)", text):
        return -1
    return 0


def _sign(new: Value, old: Value) -> int:
    if isinstance(new, str) or isinstance(old, str):
        return 0
    return (new > old) - (new < old)


def split_directive(task: str) -> tuple[str, str]:
    """(pending directive, the task without it). The directive is the section under a heading
    that mentions 'directive' (its quoted lines if any), else a free-standing 'I think you could
    try' line; lines of a history table (with '|' or tabs) never count."""
    lines = task.splitlines()
    for i, line in enumerate(lines):
        heading = re.match(r"^(#+)\s+(.*)$", line)
        title = heading.group(2).lower() if heading else ""
        if "directive" not in title or "history" in title:
            continue
        level, end = len(heading.group(1)), len(lines)
        for j in range(i + 1, len(lines)):
            h = re.match(r"^(#+)\s", lines[j])
            if h and len(h.group(1)) <= level:
                end = j
                break
        body = lines[i + 1:end]
        quoted = [ln[1:].strip() for ln in body if ln.startswith(">")]
        directive = "\n".join(quoted).strip() or "\n".join(body).strip()
        return directive, "\n".join(lines[:i] + lines[end:])
    for i, line in enumerate(lines):
        if TENTATIVE.lower() in line.lower() and "|" not in line and "\t" not in line:
            return line.strip().lstrip("> "), "\n".join(lines[:i] + lines[i + 1:])
    return "", task


# -----------------------------------------------------------------------------
# message plumbing


@dataclass
class Turn:
    name: str
    args: dict[str, Any]
    result: ToolMessage | None = None

    @property
    def ok(self) -> bool:
        if self.result is None or getattr(self.result, "status", "success") == "error":
            return False
        text = _text(self.result.content)
        if _FAILURE.search(text):
            return False
        return not (self.name == "apply_patch" and _PATCH_MISS.search(text))


@dataclass
class Iteration:
    task: str
    turns: list[Turn] = field(default_factory=list)


def current_iteration(messages: Sequence[BaseMessage]) -> Iteration:
    """The last human message (the task) and the tool calls and results after it."""
    start = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=-1)
    it = Iteration(_text(messages[start].content) if start >= 0 else "")
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


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks
        return "\n".join(b if isinstance(b, str) else str(b.get("text", "")) for b in content)
    return str(content)


def file_text(read_result: str) -> str:
    """Undo read_file's numbering (`   12| DEPTH = 8` -> `DEPTH = 8`)."""
    lines = read_result.splitlines()
    numbered = [_NUMBERED.match(ln) for ln in lines]
    if lines and sum(m is not None for m in numbered) >= len(lines) / 2:
        return "\n".join(m.group(1) for m in numbered if m)
    return read_result


def _tool_call(name: str, args: dict[str, Any], it: Iteration, note: str) -> AIMessage:
    digest = hashlib.sha256(f"{it.task}|{len(it.turns)}|{name}".encode()).hexdigest()[:10]
    call = {"name": name, "args": args, "id": f"call_offline_{len(it.turns) + 1}_{digest}", "type": "tool_call"}
    return AIMessage(content=f"{OFFLINE_LABEL}: {note}", tool_calls=[call])


def rough_usage(messages: Sequence[BaseMessage], reply: AIMessage) -> dict[str, int]:
    """Token usage as an LLM would report it, estimated at 4 characters a token, so traces of an
    offline campaign carry usage like real ones (no tokenizer: it is only an order of magnitude)."""
    def tokens(m: BaseMessage) -> int:
        calls = "".join(f"{c['name']}{c.get('args')}" for c in getattr(m, "tool_calls", None) or [])
        return (len(_text(m.content)) + len(calls) + 3) // 4 + 1

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
# the researcher


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
                return self._final("could not read train.py", [_text(failed[-1].result.content)[:200]
                                                                 if failed[-1].result else "no result"])
            return self._call("read_file", {"path": TRAIN_PY}, it, "reading train.py")
        constants = parse_constants(file_text(_text(reads[-1].result.content)))

        patches = [t for t in it.turns if t.name == "apply_patch"]
        runs = [t for t in it.turns if t.name == "run_training"]
        applied = next((t for t in reversed(patches) if t.ok), None)
        failed_keys = [m.key for t in patches if not t.ok and (m := move_from_patch(t.args.get("patch", "")))]

        if applied is not None:
            move = move_from_patch(applied.args.get("patch", ""))
            if not runs:
                what = move.description if move else "the patch"
                return self._call("run_training", {}, it, f"training with {what}")
            return self._report(move, runs[-1], constants, history, directive, failed_keys)

        if len(patches) >= MAX_PATCH_TRIES:
            return self._final(f"no experiment: {len(patches)} patches were refused",
                               [_text(patches[-1].result.content)[:200] if patches[-1].result else ""])
        move, reading = self._choose(constants, history, directive, failed_keys)
        if move is None:
            lines = [f"directive: {reading.verdict} - {reading.why}"] if reading else []
            return self._final(NO_EXPERIMENT_LEFT, lines + ["every move I know on the constants of train.py was tried"])
        return self._call("apply_patch", {"patch": move.patch}, it, f"trying {move.description} ({move.reason})")

    def _call(self, name: str, args: dict[str, Any], it: Iteration, note: str) -> AIMessage:
        if self.tool_names and name not in self.tool_names:  # bound, but without the tool we need
            return self._final(f"no experiment: the {name} tool is not available", [])
        return _tool_call(name, args, it, note)

    def _choose(self, constants, history, directive, exclude) -> tuple[Move | None, DirectiveReading | None]:
        reading = read_directive(directive, constants, history, exclude) if directive else None
        if reading and reading.move is not None:
            return reading.move, reading
        moves = plan(constants, history, exclude)
        return (moves[0] if moves else None), reading

    def _report(self, move: Move | None, run: Turn, constants, history, directive, failed_keys) -> AIMessage:
        result = _text(run.result.content) if run.result else ""
        status = re.search(r"status:\s*([\w-]+)", result)
        bpb = re.search(r"val_bpb:\s*([0-9.]+)", result)
        outcome = f"run status {status.group(1) if status else ('error' if not run.ok else 'unknown')}"
        if bpb:
            outcome += f", val_bpb {bpb.group(1)}"
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


# -----------------------------------------------------------------------------
# the director


class OfflineDirector(RuleBasedChat):
    """Plays the director's part: summarizes train.py, then writes one tentative directive."""

    label: ClassVar[str] = DIRECTOR_LABEL

    def respond(self, messages: Sequence[BaseMessage]) -> str:
        prompt = "\n\n".join(_text(m.content) for m in messages)
        steps = _STEP_MARKER.findall(prompt)
        step = steps[-1] if steps else _guess_step(prompt)
        if step == "summarize":
            return summarize(_code_block(prompt))
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


def _code_block(prompt: str) -> str:
    m = re.search(r"```(?:python|py)?\n(.*?)```", prompt, re.S)
    return m.group(1) if m else prompt


GROUPS = [
    ("model", ("DEPTH", "ASPECT_RATIO", "HEAD_DIM", "WINDOW_PATTERN", "SHORT_WINDOW")),
    ("batch", ("TOTAL_BATCH_TOKENS", "DEVICE_BATCH_SIZE")),
    ("optimizer", ("MATRIX_LR", "EMBEDDING_LR", "UNEMBEDDING_LR", "SCALAR_LR", "WEIGHT_DECAY")),
    ("schedule", ("WARMUP_RATIO", "WARMDOWN_RATIO", "FINAL_LR_FRAC")),
]


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
    paper = _section(prompt, ("read", "paper"))
    history_text = _section(prompt, ("history",)) or prompt
    constants = constants_in_text(_section(prompt, ("train.py", "summary")) or prompt)
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
        scored = [(sum(text.count(k) for k in PAPER_KEYWORDS.get(m.name, ())), -i, m) for i, m in enumerate(moves)]
        score, _, best = max(scored, key=lambda s: (s[0], s[1]))
        if score > 0:
            move, why = best, f"an idea I came across suggests it, and {RATIONALE.get(best.name, 'it is cheap to test')}"
    if not why:
        why = RATIONALE.get(move.name, "it has not been explored yet")
        why = f"the history has barely touched {move.name}, and {why}"
    first, *coupled = move.changes
    extra = "".join(f" (and {c.constant.name} to {c.new_text})" for c in coupled)
    return (f"{TENTATIVE} setting {first.constant.name} to {first.new_text}{extra}, "
            f"from {first.constant.text} now: {why}.")


def _section(prompt: str, words: tuple[str, ...]) -> str:
    """The text under the first Markdown heading containing any of `words` (to the next heading)."""
    lines = prompt.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("#") and any(w in line.lower() for w in words):
            body = []
            for nxt in lines[i + 1:]:
                if nxt.startswith("#"):
                    break
                body.append(nxt)
            return "\n".join(body).strip()
    return ""
