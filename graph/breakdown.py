"""
The report's figures over wall-clock time, for the whole campaign and per agent and per GPU.

A campaign of parallel agents (results.tsv ours v5) names on every row the agent that ran it and
the device it ran on; the report then breaks its counts down by either. The campaign's wall span,
which the device duty and the experiments per hour divide by, lives here too, because the groups
measure theirs the same way. graph/report.py defines the figures (its docstring) and renders them.
"""

import datetime as dt
import re

from graph.results import CRASH, NO_RUN, has_placement

# -----------------------------------------------------------------------------
# Constants

UNNAMED = "-"        # the group of rows that name no agent or device (results.tsv's word for none)
HOUR = 3600.0
# the figures this module adds to the report's; all None for a format that has no timestamps to go by
KEYS = ("experiments_per_hour", "gpu_duty_pct", "agents", "gpus", "by_agent", "by_gpu")


# -----------------------------------------------------------------------------
# Wall time

def started(r):
    """When the row's run began: a row is stamped when it is recorded, after its run, so the run
    began total_seconds earlier (a row without total_seconds, e.g. a no-run, at its timestamp)."""
    return r.timestamp - dt.timedelta(seconds=r.total_seconds or 0.0)


def wall_seconds(rows):
    """From the earliest run's start to the latest timestamp; None without timestamps. With one
    agent the earliest start is the first row's; with several, runs overlap and it may not be."""
    stamped = [r for r in rows if r.timestamp is not None]
    if not stamped:
        return None
    try:
        return (max(r.timestamp for r in stamped) - min(started(r) for r in stamped)).total_seconds()
    except TypeError:  # one timestamp with a zone, one without: no honest answer
        return None


def _per_hour(count, wall):
    return count / wall * HOUR if wall else None


def _duty_pct(rows, wall, devices=1):
    # the share of the wall time the devices spent training, averaged over the devices
    training = sum(r.training_seconds or 0.0 for r in rows)
    return training / (wall * devices) * 100 if wall else None


# -----------------------------------------------------------------------------
# Per agent, per GPU

def _natural(name):
    # a2 before a10, GPU 2 before GPU 10; the unnamed group last
    return (name == UNNAMED, [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name)])


def _groups(rows, column):
    """{name: its rows, file order}, names in natural order; rows that name none under UNNAMED."""
    groups = {}
    for r in rows:
        groups.setdefault(getattr(r, column) or UNNAMED, []).append(r)
    return {name: groups[name] for name in sorted(groups, key=_natural)}


def _counts(rows):
    verdicts = [r for r in rows if r.is_verdict]
    return {
        "experiments": len(verdicts),
        "keeps": sum(r.kept for r in verdicts),
        "crashes": sum(r.status == CRASH for r in verdicts),
        "runs": sum(r.status != NO_RUN for r in rows),
        # over the group's own span: an agent that joined late is not charged for the time before
        "experiments_per_hour": _per_hour(len(verdicts), wall_seconds(rows)),
    }


def _names(rows, column):
    return {getattr(r, column) for r in rows} - {""}


def figures(rows):
    """The figures of KEYS for rows of one of our formats (see graph/report.py for definitions)."""
    wall = wall_seconds(rows)
    placed = bool(rows) and has_placement(rows[0].fmt)
    agents, gpus = _names(rows, "agent"), _names(rows, "gpu")
    by_gpu = None
    if gpus:
        by_gpu = {name: {**_counts(group), "gpu_duty_pct": _duty_pct(group, wall) if name != UNNAMED else None}
                  for name, group in _groups(rows, "gpu").items()}
    return {
        "experiments_per_hour": _per_hour(sum(r.is_verdict for r in rows), wall),
        # several GPUs training at once would make a duty over 100%: it is their mean
        "gpu_duty_pct": _duty_pct(rows, wall, max(len(gpus), 1)),
        "agents": len(agents) if placed else None,
        "gpus": len(gpus) if placed else None,
        "by_agent": {name: _counts(group) for name, group in _groups(rows, "agent").items()} if agents else None,
        "by_gpu": by_gpu,
    }


def tables(figures, device="device"):
    """The report's tables, [(title, header, lines)]: per agent, per GPU, each when the rows name
    any. `device`: what trained, as the report's labels name it ("GPU", "CPU" or "device")."""
    def cells(name, f):
        per_hour = f"{f['experiments_per_hour']:.2f}" if f["experiments_per_hour"] is not None else "—"
        return [name, str(f["experiments"]), str(f["keeps"]), str(f["crashes"]), str(f["runs"]), per_hour]

    header = ["experiments", "keeps", "crashes", "runs", "experiments / hour"]
    out = []
    if figures.get("by_agent"):
        out.append(("Per agent", ["agent"] + header, [cells(name, f) for name, f in figures["by_agent"].items()]))
    if figures.get("by_gpu"):
        lines = [cells(name, f) + [f"{f['gpu_duty_pct']:.1f}%" if f["gpu_duty_pct"] is not None else "—"]
                 for name, f in figures["by_gpu"].items()]
        out.append((f"Per {device}", [device] + header + [f"{device} duty"], lines))
    return out
