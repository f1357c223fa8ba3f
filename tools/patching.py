"""
Parse and apply the patches a model writes to train.py. Pure functions, no I/O, no LangChain.

Two formats are accepted:
- SEARCH/REPLACE blocks (one or more, each optionally preceded by a file-name line):
      <<<<<<< SEARCH
      old lines
      =======
      new lines
      >>>>>>> REPLACE
- a unified diff (`--- a/train.py` / `+++ b/train.py` headers optional, `@@ ... @@` hunks).

Both become a list of edits (old lines -> new lines). Each edit must match exactly one place in
the file; matching is tolerant of what models get wrong (line numbers, a/ b/ prefixes, trailing
whitespace, indentation drift) but never guesses between two places. All edits apply or none does,
and a result that does not compile is refused.
"""

import difflib
import os
import re
from dataclasses import dataclass

# -----------------------------------------------------------------------------
# Constants

TARGET = "train.py"
MAX_PATCH_BYTES = 200_000   # a patch this big is a rewrite gone wrong, not an experiment
MAX_DIFF_LINES = 40         # the summary shows at most this much of the resulting diff
SEARCH_RE = re.compile(r"^\s*<{5,9}\s*SEARCH\s*$")
DIVIDER_RE = re.compile(r"^\s*={5,9}\s*$")
REPLACE_RE = re.compile(r"^\s*>{5,9}\s*REPLACE\s*$")
HUNK_RE = re.compile(r"^@@\s*(?:-(\d+)(?:,\d+)?\s*\+\d+(?:,\d+)?\s*)?@@")  # numbers optional: models drop them
FENCE_RE = re.compile(r"^\s*```")
CAT_N_RE = re.compile(r"^ *\d+\t")  # a line copied from read_file's output, number and all
FILENAME_RE = re.compile(r"^[\w./\\-]+\.\w+$")  # a bare path such as train.py or a/nanochat/prepare.py


class PatchError(Exception):
    """The patch cannot be applied: the message says why and what to do instead."""


@dataclass
class Edit:
    old: list[str]       # lines to find (without newlines)
    new: list[str]       # lines to put in their place
    label: str           # "block 2" or "hunk 1": how errors name it
    hint: int | None = None  # the line number a diff hunk claims (only used to report)


@dataclass
class PatchResult:
    text: str            # the new train.py
    summary: str         # what changed, for the model


# -----------------------------------------------------------------------------
# Parsing

def parse_patch(patch: str) -> list[Edit]:
    if not patch or not patch.strip():
        raise PatchError("the patch is empty: send a unified diff or SEARCH/REPLACE blocks that change train.py")
    if len(patch.encode()) > MAX_PATCH_BYTES:
        raise PatchError(f"the patch is {len(patch.encode()) // 1000} KB, over the {MAX_PATCH_BYTES // 1000} KB "
                         f"limit: send smaller, targeted edits")
    lines = patch.replace("\r\n", "\n").split("\n")
    if any(SEARCH_RE.match(l) for l in lines):
        return parse_search_replace(lines)
    if any(HUNK_RE.match(l) for l in lines):
        return parse_unified_diff(lines)
    raise PatchError("the patch is neither a unified diff (with @@ hunks) nor SEARCH/REPLACE blocks "
                     "(<<<<<<< SEARCH / ======= / >>>>>>> REPLACE); resend it in one of these formats")


def check_target(name: str) -> None:
    """Only train.py may be edited, whatever the path it is named by."""
    name = name.strip().strip("`*'\":")
    for prefix in ("a/", "b/"):
        if name.startswith(prefix) and len(name) > 2:
            name = name[2:]
    if os.path.basename(name) == TARGET:
        return
    if os.path.basename(name) in ("prepare.py", "harness.json"):
        raise PatchError(f"'{name}' is part of the frozen harness and is read-only: apply_patch only edits train.py")
    raise PatchError(f"apply_patch only edits train.py, not '{name}'; nothing was changed")


def parse_search_replace(lines: list[str]) -> list[Edit]:
    edits, i = [], 0
    while i < len(lines):
        if not SEARCH_RE.match(lines[i]):
            i += 1
            continue
        label = f"SEARCH/REPLACE block {len(edits) + 1}"
        # a file-name line may precede the block, possibly with a ``` fence in between
        j = i - 1
        while j >= 0 and (not lines[j].strip() or FENCE_RE.match(lines[j])):
            j -= 1
        if j >= 0 and FILENAME_RE.match(lines[j].strip().strip("`*'\":")):
            check_target(lines[j])
        try:
            mid = next(k for k in range(i + 1, len(lines)) if DIVIDER_RE.match(lines[k]) or SEARCH_RE.match(lines[k]))
            assert DIVIDER_RE.match(lines[mid])
            end = next(k for k in range(mid + 1, len(lines)) if REPLACE_RE.match(lines[k]) or SEARCH_RE.match(lines[k]))
            assert REPLACE_RE.match(lines[end])
        except (StopIteration, AssertionError):
            raise PatchError(f"{label} is not closed: each block needs '<<<<<<< SEARCH', the old lines, "
                             f"'=======', the new lines, then '>>>>>>> REPLACE'")
        old, new = lines[i + 1:mid], lines[mid + 1:end]
        if old and all(CAT_N_RE.match(l) for l in old if l.strip()):
            # copied from read_file with the line numbers: drop them (in REPLACE too, if there)
            old = [CAT_N_RE.sub("", l, count=1) for l in old]
            if all(CAT_N_RE.match(l) for l in new if l.strip()):
                new = [CAT_N_RE.sub("", l, count=1) for l in new]
        if not any(l.strip() for l in old):
            raise PatchError(f"the SEARCH part of {label} is empty: copy the existing lines to replace "
                             f"(to add code, SEARCH for the line before the insertion point and repeat it in REPLACE)")
        edits.append(Edit(old, new, label))
        i = end + 1
    return edits


def parse_unified_diff(lines: list[str]) -> list[Edit]:
    edits, i = [], 0
    current = None
    while i < len(lines):
        line = lines[i]
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            old_name, new_name = ((h[4:].split() or [""])[0] for h in (line, lines[i + 1]))  # drop timestamps
            if old_name == "/dev/null":
                raise PatchError("the diff creates a new file; apply_patch only edits the existing train.py")
            if new_name == "/dev/null":
                raise PatchError("the diff deletes a file; apply_patch only edits train.py")
            check_target(old_name)
            check_target(new_name)
            current = None
            i += 2
            continue
        m = HUNK_RE.match(line)
        if m:
            current = Edit([], [], f"hunk {len(edits) + 1}", int(m.group(1)) if m.group(1) else None)
            edits.append(current)
        elif current is not None:
            if line.startswith("\\"):       # "\ No newline at end of file"
                pass
            elif line.startswith("-"):
                current.old.append(line[1:])
            elif line.startswith("+"):
                current.new.append(line[1:])
            elif line.startswith(" ") or line == "":  # models drop the space of blank context lines
                current.old.append(line[1:])
                current.new.append(line[1:])
            else:
                current = None              # prose after the diff: the hunk is over
        i += 1
    for e in edits:
        # blank context at a hunk's end is usually the patch's own trailing newline
        while e.old and e.new and not e.old[-1].strip() and not e.new[-1].strip():
            e.old.pop(), e.new.pop()
        if not any(l.strip() for l in e.old):
            raise PatchError(f"{e.label} has no context or removed lines, so there is no way to tell where it goes: "
                             f"include a few unchanged lines around the change")
    if not edits:
        raise PatchError("the diff has no hunks")
    return edits


# -----------------------------------------------------------------------------
# Matching: exact first, then ever looser, stopping at the first level with any match

def norm_trailing(line: str) -> str:
    return line.rstrip()


def norm_spaces(line: str) -> str:
    return " ".join(line.split())


LEVELS = [
    ("exactly", lambda l: l),
    ("ignoring trailing whitespace", norm_trailing),
    ("ignoring indentation and spacing", norm_spaces),
]


def find(lines: list[str], old: list[str], norm) -> list[int]:
    """Start indices where `old` matches `lines` under `norm`; blank lines match blank lines."""
    target = [norm(l) for l in old]
    have = [norm(l) for l in lines]
    n = len(target)
    return [i for i in range(len(have) - n + 1) if have[i:i + n] == target]


def reindent(new: list[str], old: list[str], found: list[str]) -> list[str]:
    """When the old lines matched only after ignoring indentation, shift the new lines by the same
    amount the file's lines differ from the patch's (if that difference is uniform)."""
    def indent(l):
        return len(l) - len(l.lstrip())
    pairs = [(indent(o), indent(f)) for o, f in zip(old, found) if o.strip()]
    deltas = {f - o for o, f in pairs}
    if len(deltas) != 1:
        return new
    delta = deltas.pop()
    if delta > 0:
        return [" " * delta + l if l.strip() else l for l in new]
    return [l[min(-delta, indent(l)):] if l.strip() else l for l in new]


def locate(lines: list[str], edit: Edit) -> tuple[int, str]:
    for how, norm in LEVELS:
        hits = find(lines, edit.old, norm)
        if len(hits) == 1:
            return hits[0], how
        if len(hits) > 1:
            where = ", ".join(str(h + 1) for h in hits[:5])
            raise PatchError(f"{edit.label} matches {len(hits)} places in train.py (lines {where}); "
                             f"include more unchanged lines around the change so it matches exactly one")
    first = next(l for l in edit.old if l.strip())
    near = [i + 1 for i, l in enumerate(lines) if norm_spaces(l) == norm_spaces(first)]
    hint = (f" Its first line '{first.strip()[:80]}' occurs at line {', '.join(map(str, near[:5]))}, "
            f"but the lines after it differ." if near else
            f" Its first line '{first.strip()[:80]}' does not occur in train.py.")
    raise PatchError(f"{edit.label} does not match train.py: the old lines must be copied exactly from the "
                     f"current file.{hint} Use read_file to see the current text.")


# -----------------------------------------------------------------------------
# Applying

def apply_edits(source: str, edits: list[Edit]) -> tuple[str, list[str]]:
    lines = source.split("\n")
    trailing_newline = source.endswith("\n")
    if trailing_newline:
        lines.pop()
    notes = []
    for edit in edits:  # in order, each on the result of the previous one (like git apply)
        at, how = locate(lines, edit)
        found = lines[at:at + len(edit.old)]
        new = reindent(edit.new, edit.old, found) if how == LEVELS[2][0] else edit.new
        lines[at:at + len(edit.old)] = new
        span = f"line {at + 1}" if len(found) == 1 else f"lines {at + 1}-{at + len(found)}"
        note = f"{edit.label}: replaced {span} with {plural(len(new), 'line')}"
        if how != "exactly":
            note += f" (matched {how})"
        if edit.hint and edit.hint != at + 1:
            note += f" (the hunk said line {edit.hint})"
        notes.append(note)
    text = "\n".join(lines) + ("\n" if trailing_newline else "")
    return text, notes


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def syntax_error_message(text: str, err: SyntaxError) -> str:
    lines = text.split("\n")
    n = err.lineno or 0
    shown = "\n".join(f"{i:6d}\t{lines[i - 1]}" for i in range(max(1, n - 2), min(len(lines), n + 2) + 1))
    return (f"the patched train.py would not compile: {err.msg} at line {n}; nothing was changed. "
            f"The patched text around it:\n{shown}")


def apply_patch(source: str, patch: str) -> PatchResult:
    """Apply `patch` to the text of train.py. Raises PatchError (and changes nothing) on any problem."""
    edits = parse_patch(patch)
    text, notes = apply_edits(source, edits)
    if text == source:
        raise PatchError("the patch changes nothing: its new lines are the same as the old ones")
    try:
        compile(text, TARGET, "exec")
    except SyntaxError as err:
        raise PatchError(syntax_error_message(text, err))
    diff = list(difflib.unified_diff(source.splitlines(), text.splitlines(), "a/train.py", "b/train.py",
                                     n=1, lineterm=""))[2:]
    if len(diff) > MAX_DIFF_LINES:
        diff = diff[:MAX_DIFF_LINES] + [f"... ({len(diff) - MAX_DIFF_LINES} more diff lines)"]
    before, after = source.count("\n"), text.count("\n")
    summary = (f"Applied {plural(len(edits), 'edit')} to train.py "
               f"({before} -> {after} lines).\n" + "\n".join(notes) + "\n" + "\n".join(diff))
    return PatchResult(text, summary)
