"""
results.tsv: one row per experiment, appended and fsync'ed before the campaign moves on, so a
killed process never loses a recorded experiment. The first five columns are autoresearch's.
"""

import datetime as dt
import os
from pathlib import Path

from graph.report import read_results

COLUMNS = ["commit", "val_bpb", "memory_gb", "status", "description", "iteration", "best_val_bpb",
           "training_seconds", "total_seconds", "directive", "agent_choice", "timestamp", "sandbox"]
HISTORY_ROWS = 40        # rows of history the agent sees (the oldest are summarised by count)


def clean(text: str, limit: int = 300) -> str:
    """One TSV cell: no tabs or newlines, bounded length."""
    text = " ".join(("" if text is None else str(text)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


def rows(path: Path):
    if not path.exists() or path.stat().st_size == 0:
        return []
    return read_results(path)


def row_for_iteration(path: Path, iteration: int):
    return next((r for r in rows(path) if r.iteration == iteration), None)


def history_table(path: Path, limit: int = HISTORY_ROWS) -> str:
    """A compact table of past experiments for the agent's and director's prompts."""
    all_rows = rows(path)
    if not all_rows:
        return "(no experiments yet)"
    shown = all_rows[-limit:]
    lines = []
    if len(all_rows) > len(shown):
        older = all_rows[: len(all_rows) - len(shown)]
        keeps = sum(r.kept for r in older)
        lines.append(f"({len(older)} older experiments not shown, {keeps} of them kept)")
    lines.append("iter | val_bpb  | status  | description")
    for r in shown:
        bpb = f"{r.val_bpb:.6f}" if r.val_bpb else "   -    "
        led = " [directive]" if r.directive else ""
        lines.append(f"{r.iteration if r.iteration is not None else r.index:>4} | {bpb} | {r.status:<7} | {r.description}{led}")
    return "\n".join(lines)
