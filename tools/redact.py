"""The one redactor: whatever leaves the campaign process for the LLM, the logs, the checkpoints or
the traces passes a `Redactor` first.

    redactor = Redactor.from_env(settings.credentials.secrets())   # the keys + secret-looking env values
    redactor.text(s)                    # str -> str, every secret replaced by ***
    redactor.text(s, assignments=False) # the model's view: leaves `flops_per_token = ...` readable
    redactor(obj)                       # the same, deep, over dicts / lists / str (LangSmith's anonymizer)
    redactor.bytes_same_length(b)       # bytes -> as many bytes, secrets as '*' (msgpack stays valid)
    stream = redactor.stream()          # a byte stream (a training log) in chunks:
    log.write(stream.feed(chunk)); ...; log.write(stream.flush())
    clip_for_model(s)                   # the head and tail of a long tool output, 20 000 chars at most
    make_undumpable()                   # no core dumps, no ptrace, no /proc/<pid>/mem of this process

What is masked:

1. The campaign's secret values (each of at least MIN_SECRET_CHARS), and their encodings: the value
   reversed, in hex (lower and upper case) and in base64 (standard and URL-safe, padded or not),
   including inside a longer base64 text, at any of the three byte alignments.
2. Anything shaped like a key: `sk-...`, `Bearer ...`, and LangSmith's curated rules (provider key
   prefixes, JWTs, private key blocks, `Authorization:` headers, `scheme://user:password@`).
3. Text only, on unless `assignments=False`: the value assigned to a secret-looking name
   (`API_KEY=...`, `token: ...`). A heuristic: it also masks `flops_per_token = model.flops_per_token()`
   in train.py, so what the model reads (tool outputs, prompts) leaves it out, or the agent could
   not patch such a line. Secret values and key shapes are masked everywhere.

Every pattern runs in linear time: LangSmith's rules that backtrack quadratically on long runs
(`a.a.a.a...`) are used in rewritten, bounded forms. Bytes (checkpoints, streams) get rule 1 only:
a key-shaped pattern could run into a neighbouring msgpack header, and a same-length mask there
would silently change the data.

This module is tools/: it imports nothing from graph/ (the layering rule).
"""

from __future__ import annotations

import base64
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

# -----------------------------------------------------------------------------
# Constants

MASK = "***"
MIN_SECRET_CHARS = 8    # shorter env values ("true", "0") are not secrets, and masking them would garble text
MIN_VARIANT_CHARS = 8   # an encoding shorter than this would mask innocent text
MODEL_OUTPUT_CHARS = 20_000   # what one tool answer may hand the model

# environment variables whose values are secrets: OPENAI_API_KEY, LANGSMITH_API_KEY, HF_TOKEN, ...
SECRET_ENV_NAME = re.compile(r"(?i)(^|_)(API_?KEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)(_|$)")

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3

# Key shapes. A pattern with a group named `s` masks that group (the rest stays readable, e.g. the
# header name); any other masks its whole match. A lookbehind right after a leading literal
# (`sk-(?<!\wsk-)`) is `\b` before it, but lets the engine scan for the literal.
KEY_PATTERNS = (
    r"sk-(?<!\wsk-)[A-Za-z0-9_\-*]{6,}",
    r"(?i)bearer(?<!\wbearer)\s{1,8}[A-Za-z0-9._\-~+/=*]{6,}",
)

# LangSmith's rules (langsmith.anonymizer.DEFAULT_SECRET_RULES) that are slow upstream, each with
# the form used instead. Upstream, a run of 40 000 characters such as `a.a.a....` keeps the
# KEY=value rule busy for a minute and a half, and the URL rule for seconds: they start a match at
# every word boundary and scan the whole run from each. The rewrites start a match only where a
# run of name characters starts, bound what follows a keyword, consume a private key's body
# possessively, and put a literal first (a lookbehind stands for the `\b`), so the engine can
# scan for it.
_NAME_KEYWORDS = (r"API[_-]?KEY[_-]?SALT|LICENSE[_-]?KEY|API[_-]?KEY|SECRET|TOKEN|PASSWORD|PASSWD|"
                  r"PRIVATE[_-]?KEY|ACCESS[_-]?KEY|AUTH[_-]?TOKEN|CLIENT[_-]?SECRET")
ASSIGNMENT_PATTERN = (
    rf"(?i)(?:{_NAME_KEYWORDS})(?![A-Za-z0-9])(?:[_.-][A-Za-z0-9]{{1,32}}+){{0,4}}[\"']?\s{{0,8}}[:=]\s{{0,8}}"
    r"[\"']?(?:(?:bearer|token|basic)\s{1,8})?(?P<s>[^\s\"'&;]{6,})")
_UPSTREAM_REWRITES = {
    # AWS access key ids
    r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[0-9A-Z]{16}\b":
        r"(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])(?<!\w....)[0-9A-Z]{16}\b",
    # Stripe keys
    r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{20,}\b":
        r"[sr]k_(?:live|test)_(?<!\w[sr]k_....._)[A-Za-z0-9]{20,}\b",
    # JWT
    r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+":
        r"eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+",
    # private key blocks
    r"-----BEGIN (?:[A-Z0-9 ]+ )?PRIVATE KEY(?: BLOCK)?-----[\s\S]+?-----END (?:[A-Z0-9 ]+ )?PRIVATE KEY(?: BLOCK)?-----":
        r"-----BEGIN (?:[A-Z0-9 ]{1,64} )?PRIVATE KEY(?: BLOCK)?-----(?:[^-]++|-(?!----))*+"
        r"-----END (?:[A-Z0-9 ]{1,64} )?PRIVATE KEY(?: BLOCK)?-----",
    # NAME=value: ASSIGNMENT_PATTERN (text only, optional)
    r'''\b([A-Za-z0-9_.-]*(?:API[_-]?KEY[_-]?SALT|LICENSE[_-]?KEY|API[_-]?KEY|SECRET|TOKEN|PASSWORD|PASSWD'''
    r'''|PRIVATE[_-]?KEY|ACCESS[_-]?KEY|AUTH[_-]?TOKEN|CLIENT[_-]?SECRET)(?![A-Za-z0-9])(?:[_.-][A-Za-z0-9]+)*'''
    r'''["']?\s*[:=]\s*["']?)(?:(?:bearer|token|basic)\s+)?[^\s"'&;]{6,}''': None,
    # Authorization headers
    r'''\b(authorization|x-api-key|x-auth-token)(["']?\s*[:=]\s*["']?)(bearer\s+|token\s+|basic\s+)?'''
    r"[A-Za-z0-9._~+/-]{8,}=*":
        r"(?i)(?:authorization(?<!\wauthorization)|x-api-key(?<!\wx-api-key)|x-auth-token(?<!\wx-auth-token))"
        r"[\"']?\s{0,8}[:=]\s{0,8}[\"']?(?:(?:bearer|token|basic)\s{1,8})?(?P<s>[A-Za-z0-9._~+/-]{8,}=*)",
    # Bearer tokens
    r"\b(Bearer\s+)[A-Za-z0-9._~+/-]{10,}=*":
        r"(?i)bearer(?<!\wbearer)\s{1,8}(?P<s>[A-Za-z0-9._~+/-]{10,}=*)",
    # scheme://user:password@host
    r"\b([a-z][a-z0-9+.-]*://[^:@/\s]*:)[^@/\s]+(@)":
        r"(?i)[a-z](?<![a-z0-9+.-][a-z])[a-z0-9+.-]{0,31}://[^:@/\s]*:(?P<s>[^@/\s]+)@",
}


class _Rule:
    """One key-shape pattern. A case-insensitive one also runs, faster, as a case-sensitive
    pattern over the lowered text when the text is ASCII (the same indices)."""

    def __init__(self, pattern: str | re.Pattern):
        self.pattern = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)
        self.group = "s" if "s" in self.pattern.groupindex else 0
        self.lower = None
        if self.pattern.flags & re.IGNORECASE:
            source = self.pattern.pattern
            source = source[4:] if source.startswith("(?i)") else source
            # lowercase the literals, not the escapes (\S is not \s) nor the group syntax (?P<s>
            source = re.sub(r"\\.|\(\?P[<=]|[A-Z]+",
                            lambda m: m.group().lower() if m.group()[0] not in "\\(" else m.group(), source)
            try:
                self.lower = re.compile(source, self.pattern.flags & ~re.IGNORECASE)
            except re.error:  # pragma: no cover - an inline flag elsewhere: the slow way then
                self.lower = None

    def spans(self, text: str, lowered: str | None) -> list[tuple[int, int]]:
        if self.lower is not None and lowered is not None:
            matches = self.lower.finditer(lowered)
        else:
            matches = self.pattern.finditer(text)
        return [m.span(self.group) for m in matches]


def _key_rules() -> list[_Rule]:
    """Our key shapes, the rewritten LangSmith rules, then LangSmith's other rules as they are."""
    rules = [_Rule(p) for p in KEY_PATTERNS] + [_Rule(p) for p in _UPSTREAM_REWRITES.values() if p]
    try:
        from langsmith.anonymizer import DEFAULT_SECRET_RULES
    except ImportError:  # pragma: no cover - older langsmith
        return rules
    for rule in DEFAULT_SECRET_RULES:
        pattern = rule["pattern"]
        source = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
        if source not in _UPSTREAM_REWRITES:
            rules.append(_Rule(pattern))
    return rules


_KEY_RULES = _key_rules()
_ASSIGNMENT_RULE = _Rule(ASSIGNMENT_PATTERN)


# -----------------------------------------------------------------------------
# Encodings of a secret


def encodings(secret: str) -> set[str]:
    """The secret and the forms it may leak in: reversed, hex, base64 (also mid-text), >= 8 chars each."""
    raw = secret.encode("utf-8")
    out = {secret, secret[::-1], raw.hex(), raw.hex().upper()}
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode("ascii")
        out |= {whole, whole.rstrip("=")}
        # Inside a longer base64 text the secret starts at byte offset 0, 1 or 2 of a 3-byte group.
        # Each base64 character holds 6 bits; keep those made of the secret's bits alone.
        for offset in range(3):
            shifted = encode(b"\0" * offset + raw).decode("ascii")
            first = -(-8 * offset // 6)                    # the first character past the prefix's bits
            last = 8 * (offset + len(raw)) // 6            # the characters before the secret's end
            out.add(shifted[first:last])
    return {v for v in out if len(v) >= MIN_VARIANT_CHARS}


# -----------------------------------------------------------------------------
# The redactor


class Redactor:
    """Masks the campaign's secrets, their encodings and key-shaped text (see the module doc).

    `redactor(obj)` returns a copy of dicts / lists / strings with secrets masked: it is the
    `anonymizer` of the LangSmith client and the last step before a trace line is written.
    """

    def __init__(self, secrets: Iterable[str] = ()):
        # longest first, so a secret containing another is masked whole
        self.secrets = sorted({s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_CHARS},
                              key=len, reverse=True)
        self.variants = sorted({v for s in self.secrets for v in encodings(s)}, key=lambda v: (-len(v), v))
        self.rules = _KEY_RULES
        self.assignment_rules = [_ASSIGNMENT_RULE]
        self._literal = re.compile("|".join(map(re.escape, self.variants))) if self.variants else None
        raw = sorted({v.encode("utf-8") for v in self.variants}, key=lambda v: (-len(v), v))
        self._literal_bytes = re.compile(b"|".join(map(re.escape, raw))) if raw else None
        self.longest = max((len(v) for v in raw), default=0)   # in bytes

    @classmethod
    def from_env(cls, secrets: Iterable[str] | Any = (), environ: Mapping[str, str] | None = None) -> Redactor:
        """These secret values (or an object with `.secrets()`, e.g. `settings.credentials`) and the
        value of every environment variable whose name looks secret (`*_API_KEY`, `*_TOKEN`, ...)."""
        environ = os.environ if environ is None else environ
        if secrets is None:
            secrets = ()
        elif isinstance(secrets, str):
            secrets = [secrets]
        elif hasattr(secrets, "secrets") and callable(secrets.secrets):
            secrets = secrets.secrets()
        values = list(secrets) + [v for k, v in environ.items() if SECRET_ENV_NAME.search(k)]
        return cls(values)

    def extended(self, secrets: Iterable[str]) -> Redactor:
        """A redactor that also knows these values (itself when they add nothing)."""
        more = {s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_CHARS} - set(self.secrets)
        return Redactor([*self.secrets, *more]) if more else self

    # -- text

    def text(self, text: str, *, assignments: bool = True) -> str:
        """`text` with every secret, encoding and key shape (and, with `assignments`, every value
        assigned to a secret-looking name) replaced by ***."""
        masked, _ = self._mask_values(text)
        return _masked(masked, self._shape_spans(masked, assignments), 0, len(masked))

    def _mask_values(self, text: str) -> tuple[str, list[tuple[int, int, int]]]:
        """Step 1: the secret values and their encodings as ***. Returns the text and, for each
        mask, (start, end) in `text` and its start in the result."""
        if self._literal is None:
            return text, []
        out, moves, pos, size = [], [], 0, 0
        for m in self._literal.finditer(text):
            out.append(text[pos:m.start()])
            size += m.start() - pos
            moves.append((m.start(), m.end(), size))
            out.append(MASK)
            size += len(MASK)
            pos = m.end()
        if not moves:
            return text, []
        out.append(text[pos:])
        return "".join(out), moves

    def _shape_spans(self, text: str, assignments: bool) -> list[tuple[int, int]]:
        """Step 2, over step 1's result: the [start, end) ranges of key shapes, sorted and merged."""
        found: list[tuple[int, int]] = []
        lowered = text.lower() if text.isascii() else None
        for rule in self.rules + self.assignment_rules if assignments else self.rules:
            found += rule.spans(text, lowered)
        found.sort()
        merged: list[tuple[int, int]] = []
        for start, end in found:
            if end <= start:
                continue
            if merged and start <= merged[-1][1]:
                if end > merged[-1][1]:
                    merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        return merged

    def window(self, text: str, start: int, end: int, *, assignments: bool = True) -> str:
        """`self.text(text[start:end])`, for a window of a text: a secret that the window's edges
        cut is masked too, provided it lies in `text` (give a margin on both sides)."""
        masked, moves = self._mask_values(text)
        return _masked(masked, self._shape_spans(masked, assignments),
                       _moved(start, moves, at_start=True), _moved(end, moves, at_start=False))

    def __call__(self, obj: Any, *, assignments: bool = True) -> Any:
        if isinstance(obj, str):
            return self.text(obj, assignments=assignments)
        if isinstance(obj, Mapping):
            return {self.text(k, assignments=assignments) if isinstance(k, str) else k:
                    self(v, assignments=assignments) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self(v, assignments=assignments) for v in obj]
        return obj

    # -- bytes

    def bytes_same_length(self, data: bytes) -> bytes:
        """`data` with the UTF-8 bytes of every secret and encoding replaced by as many b'*'.

        The length and everything else stay as they were, so a msgpack or JSON document stays
        valid. Key shapes are not masked here (see the module doc)."""
        data = bytes(data)
        if self._literal_bytes is None:
            return data
        return self._literal_bytes.sub(lambda m: b"*" * (m.end() - m.start()), data)

    def stream(self) -> StreamRedactor:
        """A redactor for a byte stream read in chunks (a training log): see StreamRedactor."""
        return StreamRedactor(self)


class StreamRedactor:
    """Masks secrets in a byte stream that arrives in chunks, even a secret split across chunks.

        stream = redactor.stream()
        while chunk := pipe.read1(65536):
            log.write(stream.feed(chunk))
        log.write(stream.flush())

    Output is input with each secret's bytes (and its encodings') replaced by as many b'*': the
    same bytes, the same length, in the same order. It lags by at most the longest encoding
    (about two bytes per secret byte) until the next chunk or `flush()`.
    """

    def __init__(self, redactor: Redactor):
        self.redactor = redactor
        self.keep = max(redactor.longest - 1, 0)   # a secret cut by the chunk's end starts in these
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        """The part of the stream so far that can no longer be the start of a secret, masked."""
        masked = self.redactor.bytes_same_length(self._held + bytes(chunk))
        cut = max(len(masked) - self.keep, 0)
        # held back already masked: a secret that ends in it was masked whole just now
        self._held = masked[cut:]
        return masked[:cut]

    def flush(self) -> bytes:
        """The rest, at the end of the stream."""
        rest, self._held = self.redactor.bytes_same_length(self._held), b""
        return rest


# -----------------------------------------------------------------------------
# What the model may read at once


def clip_for_model(text: str, limit: int = MODEL_OUTPUT_CHARS, redactor: Redactor | None = None) -> str:
    """`text` when it has at most `limit` characters, else its head and tail around a marker
    `[... N characters cut ...]`, `limit` characters in all. Linear time: slices, however long
    the lines are.

    With a `redactor`, what is kept is redacted as the model sees text (`assignments=False`):
    the same as `clip_for_model(redactor.text(text, assignments=False))`, except that a long text
    is redacted only around what is kept (a margin wider than any secret), so a 30 MB answer
    costs what a 20 KB one does."""
    if redactor is None:
        return _clip(text, limit)
    if len(text) <= 2 * (limit + CLIP_MARGIN):
        return _clip(redactor.text(text, assignments=False), limit)
    head, tail = _head_tail(limit)
    kept_head = redactor.window(text[:head + CLIP_MARGIN], 0, head, assignments=False)
    kept_tail = redactor.window(text[len(text) - tail - CLIP_MARGIN:], CLIP_MARGIN, tail + CLIP_MARGIN,
                                assignments=False)
    return kept_head + _marker(len(text) - head - tail) + kept_tail


CLIP_MARGIN = 16_384   # wider than any secret, encoding or key block: one crossing a cut is seen whole
_MARKER_CHARS = 48     # room for the marker, whatever N


def _head_tail(limit: int) -> tuple[int, int]:
    keep = max(limit - _MARKER_CHARS, 0)
    return keep // 2, keep - keep // 2


def _marker(cut: int) -> str:
    return f"\n[... {cut} characters cut ...]\n"


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head, tail = _head_tail(limit)
    return text[:head] + _marker(len(text) - head - tail) + (text[len(text) - tail:] if tail else "")


def _moved(pos: int, moves: list[tuple[int, int, int]], *, at_start: bool) -> int:
    """Where position `pos` of a text is after `_mask_values` (moves: its masks); inside a mask,
    the mask's start for a window's start, its end for a window's end: the mask is kept."""
    shift = 0
    for start, end, new_start in moves:
        if pos <= start:
            break
        if pos < end:
            return new_start if at_start else new_start + len(MASK)
        shift = new_start + len(MASK) - end
    return pos + shift


def _masked(text: str, spans: list[tuple[int, int]], start: int, end: int) -> str:
    """text[start:end] with the spans (of `text`) masked, a span cut by `start` or `end` too."""
    out, pos = [], start
    for a, b in spans:
        a, b = max(a, start), min(b, end)
        if b <= a:
            continue
        out += [text[pos:a], MASK]
        pos = b
    out.append(text[pos:end])
    return "".join(out)


# -----------------------------------------------------------------------------
# The process itself


def _libc():
    import ctypes
    import ctypes.util
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - a static interpreter
        return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def make_undumpable() -> bool:
    """prctl(PR_SET_DUMPABLE, 0): no core dump of this process, and other processes of the same
    user cannot ptrace it or read its memory (/proc/<pid>/mem, environ), where the keys live.
    Children start dumpable again at exec. Returns whether it was done (False off Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    libc = _libc()
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:   # pragma: no cover - never fails for 0
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
    return True


def is_dumpable() -> bool | None:
    """prctl(PR_GET_DUMPABLE) of this process; None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    return _libc().prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1
