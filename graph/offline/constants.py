"""The top-level constants of train.py, as the offline researcher reads and rewrites them.

A constant is a `NAME = value` line whose value is a literal or simple arithmetic on numbers
(`2**19`, `512 * 1024`). Values compare by meaning (`0.06 == 0.060`), and a new value is written
the way the old one was (quotes, `2**k`, underscores, float-ness), so a patch changes only the
value and keeps the line's comment.

These regexes read Python assignments (in train.py, or in a summary that quotes them); the
formats of tool output and prompt text are in patterns.py.
"""

from __future__ import annotations

import ast
import io
import math
import re
import tokenize
from collections import Counter
from dataclasses import dataclass

# -----------------------------------------------------------------------------
# constants

Value = int | float | str

_ASSIGN = re.compile(r"^([A-Z][A-Z0-9_]*)\s*(?::[^=]+)?=(?!=)")     # NAME = / NAME: type = (not ==)
_IN_PROSE = re.compile(r"\b([A-Z][A-Z0-9_]{1,})\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s,;()]+)")
_POWER_OF_TWO = re.compile(r"2\s*\*\*\s*\d+")


@dataclass(frozen=True)
class Constant:
    """A top-level `NAME = value` assignment of train.py."""

    name: str
    value: Value
    text: str  # the value as written, e.g. "2**19"
    line: str = ""  # the whole line, for SEARCH blocks ("" when read from a summary)
    span: tuple[int, int] = (0, 0)  # where `text` sits in `line`


# -----------------------------------------------------------------------------
# reading


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
    for m in _IN_PROSE.finditer(text):
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


# -----------------------------------------------------------------------------
# comparing and writing


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
        if _POWER_OF_TWO.fullmatch(like.text) and value > 0 and value & (value - 1) == 0:
            return f"2**{value.bit_length() - 1}"
        return f"{value:_}" if "_" in like.text else str(value)
    text = f"{value:.6g}"
    return text if any(ch in text for ch in ".einf") else text + ".0"
