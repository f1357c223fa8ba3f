"""
results.tsv: one row per training run, appended and fsync'ed before the campaign moves on, so a
killed process never loses a recorded run. The first five columns are autoresearch's. An
experiment (one iteration's code) may be run several times with different seeds; its last row
carries the verdict, the earlier ones have status `measure`.

This module is the format's one home: its columns (and the older headers still read), the status
words, the Row a line parses into, the reader and the writer. graph/report.py computes figures
from what read_results returns; the columns' meaning is in docs/INTERFACES.md.
"""

import csv
import datetime as dt
import logging
import math
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# -----------------------------------------------------------------------------
# Constants

RESULTS_FILE = "results.tsv"

# each version of ours appended columns, so the older headers are prefixes of this one
COLUMNS = ("commit", "val_bpb", "memory_gb", "status", "description",        # autoresearch's
           "iteration", "best_val_bpb", "training_seconds", "total_seconds", "directive",
           "agent_choice", "timestamp",                                      # ours-v1
           "sandbox",                                                        # ours-v2
           "seed", "runs", "mean", "sigma", "reason",                        # ours-v3: multi-run
           "agent_input_tokens", "agent_output_tokens",                      # ours-v4: LLM tokens
           "director_input_tokens", "director_output_tokens",
           "agent", "gpu")                                                   # ours (v5): who ran it, where
TOKEN_COLUMNS = COLUMNS[18:22]
PLACEMENT_COLUMNS = COLUMNS[22:]   # text, not numbers: an agent's name, a CUDA index or "cpu"

# header -> format name; matched on the exact column names, lower-cased, in order
FORMATS = {
    "ours": COLUMNS,
    "ours-v4": COLUMNS[:22],     # before the agent and gpu columns (one agent on one device)
    "ours-v3": COLUMNS[:18],     # before the token columns
    "ours-v2": COLUMNS[:13],     # one run per experiment
    "ours-v1": COLUMNS[:12],     # before the sandbox
    "autoresearch": COLUMNS[:5],
    "autoautoresearch": ("iter", "val_bpb", "best_val_bpb", "memory_gb", "status", "description",
                         "timestamp"),
}

KEEP, DISCARD, CRASH, NO_RUN = "keep", "discard", "crash", "no-run"     # verdicts
# one run of a multi-run measurement; the verdict is on a later row of the same iteration
MEASURE = "measure"
# spellings other tools (or a hand-edited file) use for the same statuses
STATUS_ALIASES = {"kept": KEEP, "baseline": KEEP, "discarded": DISCARD, "crashed": CRASH,
                  "no_run": NO_RUN, "norun": NO_RUN}
# a directive counts for a keep only if the agent actually acted on it
LED_CHOICES = ("followed", "adapted")

HISTORY_ROWS = 40        # experiments the agent sees in full; it sees every older one on a short line
OLDER_DESCRIPTION_CHARS = 60

log = logging.getLogger("graph.results")


class ResultsError(Exception):
    """A problem the user can fix (wrong path, foreign file); graph.report's CLI prints it and exits 2."""


# -----------------------------------------------------------------------------
# Reading

@dataclass
class Row:
    """One line of results.tsv: one training run (or a no-run). A row of a format that does not
    record runs (ours v1, v2 and the foreign ones, or a writer that left `runs` empty) is an experiment of its
    own: runs 1 (0 for a no-run) and mean = val_bpb."""
    index: int                 # 0-based position among the parsed rows; 0 is the baseline's (first) run
    fmt: str                   # which of FORMATS the row was read from
    status: str                # normalized: keep | discard | crash | no-run | measure | (anything else, lower-cased)
    val_bpb: float | None      # this run's; None when it produced no metric (crash convention 0.000000)
    description: str = ""
    commit: str = ""
    memory_gb: float | None = None
    iteration: int | None = None
    training_seconds: float | None = None
    total_seconds: float | None = None
    directive: str = ""
    agent_choice: str = ""
    timestamp: datetime | None = None
    seed: int | None = None
    runs: int | None = None    # runs of this experiment recorded up to and including this row
    mean: float | None = None  # mean val_bpb of the experiment's successful runs up to this row
    sigma: float | None = None  # the campaign's pooled seed-noise estimate after this row
    reason: str = ""
    # LLM tokens of the experiment (ours since v4, verdict rows; None: not recorded, e.g. a measure row)
    agent_input_tokens: int | None = None
    agent_output_tokens: int | None = None
    director_input_tokens: int | None = None
    director_output_tokens: int | None = None
    # who ran it and where (ours v5; "" when not recorded): the agent's name ("a1", "a2", ...) and
    # the device, a CUDA index ("0", "1", ...) or "cpu"
    agent: str = ""
    gpu: str = ""

    @property
    def kept(self):
        return self.status == KEEP

    @property
    def number(self) -> int:
        """The experiment's number: the campaign's own, else (autoresearch's rows) the row's position."""
        return self.iteration if self.iteration is not None else self.index

    @property
    def is_verdict(self):
        """The row closes its experiment: its status is the experiment's verdict."""
        return self.status != MEASURE

    @property
    def is_baseline(self):
        """The row belongs to the baseline experiment: iteration 0, or the first row where the
        format has no iteration (autoresearch)."""
        return self.iteration == 0 if self.iteration is not None else self.index == 0

    @property
    def directive_led(self):
        return bool(self.directive) and self.agent_choice in LED_CHOICES


def _number(text, kind=float):
    """Empty means unknown (None); anything else must parse, or the row is damaged."""
    text = text.strip()
    return kind(text) if text else None


def _lenient_number(text):
    # memory_gb is informational only: a stray "N/A" should not cost us the whole experiment
    try:
        return _number(text)
    except ValueError:
        return None


def _timestamp(text):
    text = text.strip()
    return datetime.fromisoformat(text) if text else None


def _metric(text):
    # autoresearch writes 0.000000 for a crashed run; nan/inf/negatives are no metric either
    value = float(text)
    return value if math.isfinite(value) and value > 0 else None


def _status(text):
    status = text.strip().lower()
    return STATUS_ALIASES.get(status, status)


def _parse_row(fmt, fields, index):
    """One tsv line's fields -> Row. Raises ValueError on a damaged line."""
    columns = FORMATS[fmt]
    if len(fields) != len(columns):
        raise ValueError(f"{len(fields)} fields, expected {len(columns)}")
    f = dict(zip(columns, fields))
    if not f["status"].strip():
        raise ValueError("empty status")
    row = Row(index=index, fmt=fmt, status=_status(f["status"]), val_bpb=_metric(f["val_bpb"]),
              description=f["description"].strip(), memory_gb=_lenient_number(f["memory_gb"]))
    ours = fmt.startswith("ours")
    if ours or fmt == "autoresearch":
        row.commit = f["commit"].strip()
    if ours:
        row.iteration = _number(f["iteration"], int)
        row.training_seconds = _number(f["training_seconds"])
        row.total_seconds = _number(f["total_seconds"])
        row.directive = f["directive"].strip()
        row.agent_choice = f["agent_choice"].strip().lower()
    if fmt == "autoautoresearch":
        row.iteration = _number(f["iter"], int)
    if ours or fmt == "autoautoresearch":
        row.timestamp = _timestamp(f["timestamp"])
    if "runs" in f:
        row.seed = _number(f["seed"], int)
        row.runs = _number(f["runs"], int)
        row.mean = _metric(f["mean"]) if f["mean"].strip() else None
        row.sigma = _number(f["sigma"])
        row.reason = f["reason"].strip()
    for column in TOKEN_COLUMNS:
        if column in f:
            setattr(row, column, _number(f[column], int))
    for column in PLACEMENT_COLUMNS:
        if column in f:
            setattr(row, column, f[column].strip())
    if row.runs is None:       # the row does not say: it is its own experiment
        row.runs = 0 if row.status == NO_RUN else 1
        row.mean = row.val_bpb
    return row


def resolve_tsv(path):
    """A run dir or a tsv file -> the tsv path. Raises ResultsError if there is none."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, RESULTS_FILE)
    if not os.path.isfile(path):
        raise ResultsError(f"no results file at {path}")
    return path


def has_tokens(fmt):
    """The format records the LLM tokens of each experiment."""
    return TOKEN_COLUMNS[0] in FORMATS.get(fmt, ())


def has_placement(fmt):
    """The format records which agent ran each row, and on which device (ours v5)."""
    return PLACEMENT_COLUMNS[0] in FORMATS.get(fmt, ())


def multi_run(fmt):
    """The format records several runs per experiment (seed, runs, mean, sigma)."""
    return "runs" in FORMATS.get(fmt, ())


def detect_format(header_line):
    columns = tuple(c.strip().lower() for c in header_line.lstrip("\ufeff").rstrip("\r\n").split("\t"))
    for fmt, expected in FORMATS.items():
        if columns == expected:
            return fmt
    known = "; ".join(f"{fmt} ({len(cols)} columns)" for fmt, cols in FORMATS.items())
    raise ResultsError(f"unknown results.tsv header {header_line.strip()!r}; known formats: {known}")


def read_results(path):
    """Parse a results.tsv (or the one in a run dir) into a list of Row, in file order.

    Blank lines are skipped silently; damaged lines (wrong column count, unparsable numbers,
    typically the last line of a campaign killed mid-write) are skipped with a logged warning.
    """
    tsv = resolve_tsv(path)
    with open(tsv, encoding="utf-8", newline="") as f:
        lines = f.read().splitlines(keepends=True)
    if not lines:
        raise ResultsError(f"{tsv} is empty (no header line)")
    fmt = detect_format(lines[0])
    parsed = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        # QUOTE_NONE: descriptions are free text, a stray quote must not swallow the next rows
        fields = next(csv.reader([line.rstrip("\r\n")], delimiter="\t", quoting=csv.QUOTE_NONE))
        try:
            parsed.append(_parse_row(fmt, fields, len(parsed)))
        except ValueError as e:
            partial = lineno == len(lines) and not line.endswith("\n")
            what = "partial last line (campaign killed mid-write?)" if partial else "damaged line"
            log.warning("%s:%d: skipping %s: %s", tsv, lineno, what, e)
    return parsed


def rows(path: Path):
    if not path.exists() or path.stat().st_size == 0:
        return []
    return read_results(path)


def history_table(path: Path, limit: int = HISTORY_ROWS) -> str:
    """Every experiment of the campaign (its verdict), one line each, for the agent's and director's
    prompts: the last `limit` in full (an experiment measured several times shows the mean of its
    runs and n; a discard near the best says it was within noise), the older ones shorter."""
    verdicts = [r for r in rows(path) if r.is_verdict]
    if not verdicts:
        return "(no experiments yet)"
    sigma = next((r.sigma for r in reversed(verdicts) if r.sigma), None)   # the campaign's latest estimate
    lines = ["iter | val_bpb (mean ± σ, n runs)   | status  | description"]
    older = len(verdicts) - limit
    several = len({r.agent for r in verdicts if r.agent}) > 1       # a parallel campaign: say whose
    for i, r in enumerate(verdicts):
        value = r.mean if r.mean is not None else r.val_bpb
        if i < older:               # compact: the number, the score, the verdict, the description's start
            lines.append(f"{r.number:>4} | {f'{value:.6f}' if value else '-':<28} | {r.status:<7} | "
                         f"{clip(r.description, OLDER_DESCRIPTION_CHARS)}")
            continue
        if value and (r.runs or 0) > 1:
            bpb = f"{value:.6f}" + (f" ± {sigma:.4f}" if r.kept and sigma else "") + f" (n={r.runs})"
        else:
            bpb = f"{value:.6f}" if value else "-"
        notes = " [directive]" if r.directive else ""
        if "within noise" in (r.reason or ""):
            notes += " [within noise of the best]"
        if several and r.agent:
            notes += f" [agent {r.agent}]"
        lines.append(f"{r.number:>4} | {bpb:<28} | {r.status:<7} | "
                     f"{r.description}{notes}")
    if sigma:
        lines.append(f"(seed noise: σ = {sigma:.4f} per run)")
    return "\n".join(lines)


# -----------------------------------------------------------------------------
# Writing

def clip(text: str, limit: int) -> str:
    """At most `limit` characters, an ellipsis marking a cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def clean(text: str, limit: int = 300) -> str:
    """One TSV cell: no tabs or newlines, bounded length."""
    return clip(" ".join(("" if text is None else str(text)).split()), limit)


def ensure_header(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        path.write_text("\t".join(COLUMNS) + "\n")


def append_row(path: Path, row: dict) -> None:
    """One row, in the columns of the file's own header (a campaign from before a column was added
    keeps its header)."""
    ensure_header(path)
    with open(path, encoding="utf-8") as f:
        columns = f.readline().rstrip("\r\n").split("\t")
    cells = {k: "" for k in columns}
    cells.update({k: v for k, v in row.items() if k in cells})
    cells["timestamp"] = cells["timestamp"] or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    line = "\t".join(clean(cells[k]) for k in columns) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
