"""
What the sandbox costs: the same train.py run three ways on one machine, one after the other.

  by hand      python train.py, the model scored in the same process (no isolation at all)
  unsandboxed  the campaign's supervisor with --unsafe-no-sandbox: a scratch dir and a separate scorer
  sandboxed    the campaign's supervisor as a campaign runs it: bubblewrap for training and scoring

Each run prints its step time (median of the timed steps), training, startup, export and eval seconds,
and its overhead (total - training). Every run starts with cold compile caches (a sandboxed run's are
private to it), so the three are alike in that.

    python scripts/sandbox_overhead.py --profile h100 --data /tmp/corpus --time-budget 60
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nanochat.config import SUMMARY_ENV, HarnessConfig, render_train_py  # noqa: E402

STEP_RE = re.compile(r"^step (\d+) \|.*\| dt ([\d.]+)ms")


def step_ms(log: str) -> float | None:
    dts = [float(m.group(2)) for m in map(STEP_RE.match, log.splitlines()) if m and int(m.group(1)) > 1]
    return round(statistics.median(dts), 1) if dts else None


def by_hand(work: Path, config: HarnessConfig, budget: float) -> dict:
    config.model_copy(update={"time_budget": budget}).write(work / "harness.json")
    summary = work / "summary.json"
    summary.unlink(missing_ok=True)
    t0 = time.time()
    proc = subprocess.run([sys.executable, "train.py"], cwd=work, capture_output=True, text=True,
                          env={**os.environ, SUMMARY_ENV: str(summary), "PYTHONPATH": str(ROOT)})
    out = json.loads(summary.read_text()) if summary.exists() else {"status": f"rc {proc.returncode}",
                                                                     "tail": proc.stdout[-2000:] + proc.stderr[-2000:]}
    return {**out, "wall": round(time.time() - t0, 1), "step_ms": step_ms(proc.stdout)}


def supervised(run_dir: Path, config: HarnessConfig, train_py: str, unsafe: bool, baseline: bool = True) -> dict:
    """One run as a campaign makes it: the baseline (cold caches, which then seed later runs) or,
    with baseline=False, the next run of the same campaign (starting from that seed)."""
    from tools.supervisor import run_training
    from tools.workspace import Workspace
    ws = Workspace.create(run_dir / "workspace", config, train_py) if baseline else Workspace.open(run_dir / "workspace")
    t0 = time.time()
    r = run_training(ws, logs_dir=run_dir / "logs", unsafe=unsafe, seed_compile_cache=baseline)
    log = Path(r.log_path).read_text()
    out = {"status": r.status, **r.metrics, "wall": round(time.time() - t0, 1), "step_ms": step_ms(log)}
    if r.status != "ok":
        out["message"], out["tail"] = r.message, r.tail[-3000:]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="h100")
    ap.add_argument("--data", required=True)
    ap.add_argument("--time-budget", type=float, default=60)
    ap.add_argument("--only", default="hand,unsafe,sandbox",
                    help="runs in order: hand, unsafe, sandbox, and unsafe-next / sandbox-next (a second run of "
                         "that campaign, after its baseline)")
    args = ap.parse_args()
    config = HarnessConfig(profile=args.profile, data=args.data, time_budget=args.time_budget)
    train_py = render_train_py(args.profile)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="sbx-") as tmp:
        tmp = Path(tmp)
        (tmp / "hand").mkdir()
        (tmp / "hand" / "train.py").write_text(train_py)
        for name in args.only.split(","):
            if name == "hand":
                rows[name] = by_hand(tmp / "hand", config, args.time_budget)
            elif name.endswith("-next"):   # the campaign's second run, from the baseline's compile caches
                base = name.removesuffix("-next")
                rows[name] = supervised(tmp / base, config, train_py, unsafe=base == "unsafe", baseline=False)
            else:
                rows[name] = supervised(tmp / name, config, train_py, unsafe=name == "unsafe")
            r = rows[name]
            if isinstance(r.get("total_seconds"), (int, float)):
                r["overhead_s"] = round(r["total_seconds"] - r["training_seconds"], 1)
            print(name, json.dumps(r), flush=True)
    keys = ["status", "val_bpb", "step_ms", "num_steps", "training_seconds", "startup_seconds", "export_seconds",
            "eval_seconds", "total_seconds", "overhead_s", "wall"]
    print("\n| run | " + " | ".join(keys) + " |")
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(str(r.get(k, "-")) for k in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
