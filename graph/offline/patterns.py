"""Every format the offline models read: the tools' answers and the prompts' text, in one place.

The offline researcher and director understand the campaign only through text: read_file's
numbered lines, apply_patch's and run_training's answers, the history table and the pending
directive in the task, the sections of the director's prompts. Each of those formats is written
somewhere else (tools/, graph/results.py, prompts/*.md); the regexes that read them are all here,
and tests/test_offline_patterns.py pins them against the real tools' output and the real rendered
prompts, so a change of format fails a test instead of silently blinding the offline models.

(The regexes over Python assignments, `NAME = value`, are constants.py's.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# -----------------------------------------------------------------------------
# constants

# The director's prompt asks for directives that start with this (prompts/director_directive.md).
TENTATIVE = "I think you could try"

# SEARCH/REPLACE blocks, as tools/patching.py reads them (we write only the plainest form).
SEARCH, DIVIDER, REPLACE = "<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE"
PATCH_BLOCK = re.compile(rf"{re.escape(SEARCH)}\n(.*?)\n{DIVIDER}\n(.*?)\n{re.escape(REPLACE)}", re.S)

# read_file (tools/workspace.py numbered_lines): a header line, then `{n:6d}\t{line}` like `cat -n`
# (prompts/agent_system.md shows the agent the same format).
NUMBERED = re.compile(r"^ *\d+\t(.*)$")

# A tool's answer that says it did not work. apply_patch and read_file answer "Error: ..."; the
# other words are for tools of other shapes (a test double, an MCP server), which say it their way.
FAILURE = re.compile(
    r"^\W*(error|failed|failure|fail|patch failed|rejected|could not|cannot|can't|invalid|no match)\b", re.I
)
PATCH_MISS = re.compile(r"not found|did not match|does not match|no match|not unique|ambiguous", re.I)

# run_training and read_metrics (tools/supervisor.py RunResult.to_text): `status: ok`, `val_bpb: 0.123456`.
RUN_STATUS = re.compile(r"status:\s*([\w-]+)")
RUN_BPB = re.compile(r"val_bpb:\s*([0-9.]+)")

# The history (graph/results.py history_table, or any table): a row is an experiment when its
# description says `NAME: old -> new` and a status word stands outside that description.
DESCRIPTION = re.compile(r"\b([A-Z][A-Z0-9_]*): ([^\s,|]+) -> ([^\s,|]+)")
STATUS_WORD = re.compile(r"(?<![\w-])(keep|kept|discard|discarded|crash|crashed|no-run)(?![\w-])", re.I)
STATUSES = {"keep": "keep", "kept": "keep", "discard": "discard", "discarded": "discard",
            "crash": "crash", "crashed": "crash", "no-run": "no-run"}

# Prompts: Markdown headings, the director's step marker, the code block of director_summarize.md.
HEADING = re.compile(r"^(#+)\s+(.*)$")
STEP_MARKER = re.compile(r"<!--\s*step:\s*([\w-]+)\s*-->")
CODE_BLOCK = re.compile(r"```(?:python|py)?\n(.*?)```", re.S)

# A directive's wording: `NAME: old -> new`, or "... NAME to VALUE", and which way it leans.
TO_VALUE = re.compile(r"\bto\s+(\"[^\"]*\"|'[^']*'|[-+]?[0-9][0-9_.eE+\-*]*)")
LEANS_UP = re.compile(r"\b(increas|rais|higher|larger|bigger|more|doubl|longer|deeper|wider)")
LEANS_DOWN = re.compile(r"\b(decreas|lower|reduc|smaller|less|halv|shorter|shallower|narrower)")


# -----------------------------------------------------------------------------
# tool output


def file_text(read_result: str) -> str:
    """Undo read_file's numbering (`    12\tDEPTH = 8` -> `DEPTH = 8`; the header line goes)."""
    lines = read_result.splitlines()
    numbered = [NUMBERED.match(ln) for ln in lines]
    if lines and sum(m is not None for m in numbered) >= len(lines) / 2:
        return "\n".join(m.group(1) for m in numbered if m)
    return read_result


def reports_failure(tool: str, text: str) -> bool:
    """Whether a tool's answer says it failed (apply_patch also fails when its SEARCH missed)."""
    return bool(FAILURE.search(text)) or (tool == "apply_patch" and bool(PATCH_MISS.search(text)))


def run_figures(text: str) -> tuple[str | None, str | None]:
    """(status, val_bpb) as a training run's answer writes them, None where absent."""
    status, bpb = RUN_STATUS.search(text), RUN_BPB.search(text)
    return (status.group(1) if status else None), (bpb.group(1) if bpb else None)


def patch_block(old: str, new: str) -> str:
    return f"{SEARCH}\n{old}\n{DIVIDER}\n{new}\n{REPLACE}"


def reverse_patch(patch: str) -> str:
    """The patch that undoes one of ours (each block's SEARCH and REPLACE swapped)."""
    return "\n".join(patch_block(new, old) for old, new in patch_blocks(patch))


def refused_duplicate(run_answer: str) -> bool:
    """Whether run_training refused to train because the code is a duplicate (graph/ledger.py:
    the same code as an experiment done, or as one another agent is running)."""
    return run_answer.lstrip().startswith("Refused:") and "same code" in run_answer


def patch_blocks(patch: str) -> list[tuple[str, str]]:
    """(SEARCH text, REPLACE text) of each block of a patch written like patch_block's."""
    return PATCH_BLOCK.findall(patch)


# -----------------------------------------------------------------------------
# prompt text


def history_entries(text: str) -> Iterator[tuple[str, str, str, str]]:
    """(name, old, new, status) for each line with `NAME: old -> new`; status "unknown" without a word."""
    for line in text.splitlines():
        m = DESCRIPTION.search(line)
        if not m:
            continue
        status = STATUS_WORD.search(line[: m.start()] + " " + line[m.end():])
        yield m.group(1), m.group(2), m.group(3), STATUSES[status.group(1).lower()] if status else "unknown"


def prompt_step(prompt: str) -> str | None:
    """The director's step named by the prompt's last `<!-- step: NAME -->` marker."""
    steps = STEP_MARKER.findall(prompt)
    return steps[-1] if steps else None


def code_block(prompt: str) -> str:
    """The first fenced code block (the train.py of director_summarize.md), else the whole prompt."""
    m = CODE_BLOCK.search(prompt)
    return m.group(1) if m else prompt


def section(prompt: str, words: tuple[str, ...]) -> str:
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


IN_FLIGHT_CHANGE = re.compile(r"\+\s*([A-Za-z_][A-Za-z0-9_]*)\s*=")


def in_flight_names(task: str) -> list[str]:
    """The constants other agents are changing now: `+NAME = ...` lines under a heading that says
    what is running on other agents (prompts/agent_others.md)."""
    names, inside = [], False
    for line in task.splitlines():
        heading = HEADING.match(line)
        if heading:
            inside = "running now" in heading.group(2).lower()
        elif inside:
            names += IN_FLIGHT_CHANGE.findall(line)
    return names


def split_directive(task: str) -> tuple[str, str]:
    """(pending directive, the task without it). The directive is the section under a heading
    that mentions 'directive' (its quoted lines if any), else a free-standing 'I think you could
    try' line; lines of a history table (with '|' or tabs) never count."""
    lines = task.splitlines()
    for i, line in enumerate(lines):
        heading = HEADING.match(line)
        title = heading.group(2).lower() if heading else ""
        if "directive" not in title or "history" in title:
            continue
        level, end = len(heading.group(1)), len(lines)
        for j in range(i + 1, len(lines)):
            h = HEADING.match(lines[j])
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
# a directive's wording


def first_mention(text: str, name: str) -> int:
    """Where `name` first appears as a word in `text`, -1 if nowhere."""
    m = re.search(rf"\b{re.escape(name)}\b", text)
    return m.start() if m else -1


def directive_value(directive: str, name: str) -> str | None:
    """The value a directive gives `name`, as written (`NAME: a -> VALUE` or `NAME ... to VALUE`)."""
    tail = directive[first_mention(directive, name):]
    m = (re.match(rf"{name}: [^\s,]+ -> ([^\s,;)]+)", tail)
         or TO_VALUE.search(tail.split("\n")[0]))
    return m.group(1).rstrip(".") if m else None


def directive_lean(directive: str) -> int:
    """+1 if the directive's words push up (increase, double, ...), -1 if down, 0 if neither."""
    text = directive.lower()
    if LEANS_UP.search(text):
        return 1
    if LEANS_DOWN.search(text):
        return -1
    return 0
