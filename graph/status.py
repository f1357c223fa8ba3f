"""
`python -m graph.status RUN_DIR [--follow]`: what a campaign is doing, from any terminal.

    python -m graph.status runs/night1            # once
    python -m graph.status runs/night1 --follow   # refreshed every FOLLOW_SECONDS until it ends (or Ctrl-C)

It reads files only and never writes into the run dir, so it works while the campaign runs:
- `status.json`: what results.tsv and the logs do not hold (phase, iteration, stall, stop
  conditions, the agent's last tool calls, whether the campaign ended). The campaign writes it
  on every event (StatusFile, wired in graph/run.py), replacing it atomically;
- `results.tsv`: the best val_bpb with its runs and the pooled seed noise (graph/noise.py), the
  last rows;
- `training.pid` (the supervisor's, while a run trains) names the live log; otherwise the newest
  `logs/*.log` is the last run. Its last `step ... | pct% | loss ...` line gives the progress.

A campaign without status.json (started before it existed, or from Studio) still shows its
results and logs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import time
from pathlib import Path

from graph import noise, results

STATUS_FILE = "status.json"
PID_FILE = "training.pid"    # tools/supervisor.py's (not imported: that module starts a thread pool)
TOOLS_KEPT = 5               # the agent's last tool calls in status.json
ARG_CHARS = 60               # each tool argument, clipped
ROWS_SHOWN = 5               # the last rows of results.tsv shown
TAIL_BYTES = 64 * 1024       # read from the end of a log for its last step line
FOLLOW_SECONDS = 2.0
STEP_RE = re.compile(r"^step (\d+) \|\s*([\d.]+)%(?:\s*\|\s*loss ([\d.]+))?")


class StatusError(Exception):
    """No campaign to show: the message says why (the CLI exits 2)."""


def parse_step(line: str) -> tuple[int, float, float | None] | None:
    """A train.py progress line -> (step, percent of the budget, loss), else None."""
    m = STEP_RE.match(line)
    if not m:
        return None
    return int(m.group(1)), float(m.group(2)), float(m.group(3)) if m.group(3) else None


# -----------------------------------------------------------------------------
# The campaign's side: status.json

class StatusFile:
    """status.json in the run dir, kept from the campaign's (already redacted) events. Each event
    rewrites it whole: a temporary file, then os.replace, so a reader never sees half of one.
    Writing it never stops the campaign."""

    def __init__(self, run_dir: Path, campaign: str = "", max_iterations: int | None = None,
                 max_hours: float | None = None, patience: int | None = None):
        self.path = Path(run_dir) / STATUS_FILE
        self.state = {"campaign": campaign, "pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.time(), "updated": time.time(), "phase": "starting", "iteration": 0,
                      "best": None, "stall": 0, "patience": patience, "max_iterations": max_iterations,
                      "max_hours": max_hours, "tools": [], "ended": False, "stop_reason": ""}
        self.write()

    def event(self, kind: str, data: dict) -> None:
        s = self.state
        if "iteration" in data and kind in ("phase", "tool", "recorded"):
            s["iteration"] = data["iteration"]
        if kind == "phase":
            s["phase"] = data["phase"]
        elif kind == "verdict":
            s["best"] = data.get("best")
        elif kind == "stall":
            s["stall"], s["patience"] = data["stall"], data.get("patience", s["patience"])
        elif kind == "tool":
            args = {k: results.clean(str(v), ARG_CHARS) for k, v in (data.get("args") or {}).items()}
            s["tools"] = (s["tools"] + [{"iteration": data.get("iteration"), "name": data["name"], "args": args,
                                         "at": time.time()}])[-TOOLS_KEPT:]
        elif kind == "error":
            s["error"] = results.clean(str(data.get("message", "")), 300)
        self.write()

    def end(self, stop_reason: str) -> None:
        self.state.update(ended=True, stop_reason=stop_reason, phase="ended")
        self.write()

    def write(self) -> None:
        self.state["updated"] = time.time()
        tmp = self.path.with_name(f".{STATUS_FILE}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.state, indent=1) + "\n")
            os.replace(tmp, self.path)
        except OSError:
            pass


# -----------------------------------------------------------------------------
# Reading

def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def alive(pid) -> bool | None:
    """Whether process `pid` runs here (None: cannot tell)."""
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return None
    return True


def running(status: dict) -> bool | None:
    """The campaign process is running: True, False, or None when status.json cannot tell
    (none, or written on another host)."""
    if not status:
        return None
    if status.get("ended"):
        return False
    if status.get("host") != socket.gethostname():
        return None
    return alive(status.get("pid"))


def last_step(log: Path) -> tuple[int, float, float | None] | None:
    """The last progress line of a training log."""
    try:
        with open(log, "rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - TAIL_BYTES, 0))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    for line in reversed(text.splitlines()):
        step = parse_step(line)
        if step:
            return step
    return None


def budget(run_dir: Path) -> float | None:
    """The campaign's training budget in seconds, from its pinned harness.json."""
    try:
        from nanochat.config import HarnessConfig
        return HarnessConfig.read(run_dir / "workspace" / "harness.json").budget
    except Exception:
        return None


def current_run(run_dir: Path) -> dict | None:
    """The live run (named by training.pid) or else the newest log: its name, progress and result."""
    pid = read_json(run_dir / PID_FILE)
    live = bool(pid.get("log")) and alive(pid.get("pid")) is not False
    if live:
        log = Path(pid["log"])
    else:
        logs = sorted((run_dir / "logs").glob("*.log"), key=lambda p: p.stat().st_mtime) \
            if (run_dir / "logs").is_dir() else []
        if not logs:
            return None
        log = logs[-1]
    run = {"log": log, "live": live, "step": last_step(log), "started": pid.get("started") if live else None}
    if not live:
        run["result"] = read_json(log.with_suffix(".json"))
    return run


def duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def run_line(run_dir: Path, run: dict, now: float) -> str:
    name = os.path.relpath(run["log"], run_dir) if run["log"].is_relative_to(run_dir) else str(run["log"])
    step = run["step"]
    if run["live"]:
        if step is None:
            return f"training  {name}: starting (no step yet)"
        n, pct, loss = step
        total = budget(run_dir)
        if total is not None:
            eta = f"ETA {duration(total * (100 - pct) / 100)} of training (+ evaluation)"
        elif run.get("started") and pct > 0:
            eta = f"ETA ~{duration((now - run['started']) * (100 - pct) / pct)}"
        else:
            eta = "ETA unknown"
        loss_text = f", loss {loss:.4f}" if loss is not None else ""
        return f"training  {name}: step {n}, {pct:.1f}% of the budget{loss_text}, {eta}"
    result = run.get("result") or {}
    bpb = (result.get("metrics") or {}).get("val_bpb")
    outcome = result.get("status", "no result")
    if isinstance(bpb, (int, float)):
        outcome += f", val_bpb {bpb:.6f}"
    at = f" (step {step[0]}, {step[1]:.0f}%)" if step else ""
    return f"last run  {name}: {outcome}{at}"


def stop_line(run_dir: Path, status: dict, now: float) -> str:
    parts = []
    if status.get("max_iterations") is not None:
        parts.append(f"after iteration {status['max_iterations']} (--max-iterations)")
    if status.get("max_hours") is not None:
        parts.append(f"after {status['max_hours']:g} h (--max-hours; this start has run "
                     f"{duration(now - status.get('started', now))})")
    if not status:
        parts.append("limits unknown (no status.json)")
    elif not parts:
        parts.append("no limit (a STOP file or Ctrl-C)")
    stop = run_dir / "STOP"
    parts.append("STOP file present: stopping after this experiment" if stop.exists() else "no STOP file")
    return "stop      " + "; ".join(parts)


def render(run_dir: Path, now: float | None = None) -> str:
    """The status text of the campaign in `run_dir`. Raises StatusError if there is no campaign."""
    run_dir = Path(run_dir)
    now = time.time() if now is None else now
    if not run_dir.is_dir():
        raise StatusError(f"{run_dir}: no such directory")
    tsv = run_dir / results.RESULTS_FILE
    if not any((run_dir / p).exists() for p in (STATUS_FILE, results.RESULTS_FILE, "workspace")):
        raise StatusError(f"{run_dir} holds no campaign (no {STATUS_FILE}, {results.RESULTS_FILE} or workspace/)")
    status = read_json(run_dir / STATUS_FILE)
    try:
        rows = results.rows(tsv)
    except results.ResultsError as e:
        raise StatusError(str(e)) from None
    if agent_dirs(run_dir):
        return render_parallel(run_dir, rows, now)
    out = []

    state = running(status)
    if status.get("ended"):
        head = f"ended: {status.get('stop_reason') or 'done'}"
    elif state is False:
        head = (f"not running: its process ({status.get('pid')}) is gone (killed?); "
                f"continue it with python -m graph.run --campaign {status.get('campaign') or run_dir.name} --resume")
    elif state is None and not status:
        head = "state unknown (no status.json: started from Studio, or by an older version)"
    else:
        head = f"running (pid {status.get('pid')}, for {duration(now - status.get('started', now))})"
    out.append(f"campaign  {status.get('campaign') or run_dir.name}: {head}")
    if status:
        updated = f"updated {duration(now - status.get('updated', now))} ago"
        out.append(f"phase     iteration {status.get('iteration', 0)}, {status.get('phase', '?')} ({updated})")
    elif rows:
        out.append(f"phase     iteration {max((r.number for r in rows), default=0)} recorded (phase unknown)")

    out.append(best_line(rows))
    if status:
        patience = f" (the director steps in every {status['patience']})" if status.get("patience") else ""
        out.append(f"stall     {status.get('stall', 0)} experiment(s) without improvement{patience}")
    out.append(stop_line(run_dir, status, now))

    run = current_run(run_dir)
    out.append(run_line(run_dir, run, now) if run else "training  no run yet")

    tools = status.get("tools") or []
    if tools:
        out.append("agent's last tool calls:")
        for t in tools:
            args = ", ".join(f"{k}={v!r}" for k, v in (t.get("args") or {}).items())
            out.append(f"  #{t.get('iteration', '?'):<4} {t.get('name')}({args})  {duration(now - t.get('at', now))} ago")
    if status.get("error") and not status.get("ended"):
        out.append(f"last error: {status['error']}")

    return "\n".join(out + last_rows(rows))


def best_line(rows) -> str:
    now_at = noise.standing(rows)
    if now_at.best_mean is None:
        return "best      - (nothing kept yet)"
    sigma = f" ± {now_at.noise.sigma:.4f} (σ per run)" if now_at.noise.sigma else " (seed noise not measured)"
    kept = next((r for r in reversed(rows) if r.kept), None)
    where = f", experiment {kept.number} {kept.commit}".rstrip() if kept else ""
    return f"best      val_bpb {now_at.best_mean:.6f}{sigma}, mean of {len(now_at.best)} run(s){where}"


def last_rows(rows) -> list[str]:
    if not rows:
        return ["results.tsv: no rows yet"]
    out = [f"results.tsv (last {min(ROWS_SHOWN, len(rows))} of {len(rows)} rows):",
           "  iter  status    val_bpb   agent  description"]
    for r in rows[-ROWS_SHOWN:]:
        bpb = f"{r.val_bpb:.6f}" if r.val_bpb is not None else "-"
        out.append(f"  {r.number:>4}  {r.status:<8}  {bpb:<8}  {r.agent or '-':<5}  {results.clean(r.description, 70)}")
    return out


def agent_dirs(run_dir: Path) -> list[Path]:
    """A parallel campaign's agents' folders (graph/parallel.py), each with its own status.json."""
    agents = Path(run_dir) / "agents"
    return sorted((p for p in agents.iterdir() if p.is_dir()), key=lambda p: (len(p.name), p.name)) \
        if agents.is_dir() else []


def render_parallel(run_dir: Path, rows, now: float) -> str:
    """A parallel campaign: the best and the last rows from results.tsv, then a few lines per agent."""
    agents = [(p, read_json(p / STATUS_FILE)) for p in agent_dirs(run_dir)]
    live = sum(1 for _, s in agents if running(s) and not s.get("ended"))
    out = [f"campaign  {run_dir.name}: {len(agents)} agents, {live} running", best_line(rows)]
    for folder, status in agents:
        state = running(status)
        if status.get("ended"):
            head = f"ended: {status.get('stop_reason') or 'done'}"
        elif state is False:
            head = f"gone (pid {status.get('pid')})"
        else:
            head = f"{status.get('phase', '?')}, experiment {status.get('iteration', 0)}"
        out.append(f"agent {folder.name:<4} {head}")
        run = current_run(folder)
        if run and run["live"]:
            out.append("  " + run_line(folder, run, now))
    return "\n".join(out + last_rows(rows))


def ended(run_dir: Path) -> bool:
    """Nothing more will happen: the campaign ended, or its process (every agent's) is gone."""
    folders = agent_dirs(run_dir) or [Path(run_dir)]
    return all(running(read_json(folder / STATUS_FILE)) is False for folder in folders)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m graph.status", description=__doc__.split("\n\n")[0].strip())
    p.add_argument("run_dir", type=Path, help="the campaign's run dir, e.g. runs/night1")
    p.add_argument("--follow", "-f", action="store_true",
                   help=f"refresh every {FOLLOW_SECONDS:.0f} s until the campaign ends (or Ctrl-C)")
    args = p.parse_args(argv)
    clear = "\033[2J\033[H" if sys.stdout.isatty() else ""
    try:
        while True:
            text = render(args.run_dir)
            print((clear if args.follow else "") + text, flush=True)
            if not args.follow or ended(args.run_dir):
                return 0
            time.sleep(FOLLOW_SECONDS)
            if not clear:
                print()
    except StatusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
