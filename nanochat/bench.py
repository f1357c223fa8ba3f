"""
Speed figures for a train.py: run it as a subprocess with a short budget and report MFU, tokens/s,
step-time spread, startup, overhead and eval time, as the H100 performance targets define them.

    python -m nanochat.bench --profile h100 --data PATH --time-budget 60 --runs 2 --cold

The first run after --cold starts from an empty compile cache (a campaign's first experiment);
later runs find it warm (every experiment after the first). --set NAME=VALUE overrides a top-level
constant of the copy that runs (a Python literal, e.g. --set COMPILE=False --set WINDOW_PATTERN='"SSSL"').
--seeds N runs it N times with H.seed = 1..N (--first-seed K: K..K+N-1) and reports val_bpb's mean and seed noise σ (the
spread the campaign's judge measures; docs/NOISE.md). Side by side: --train A.py --train B.py
--seeds N runs each file with the same N seeds, interleaved, and prints mean ± σ of val_bpb, step
time, MFU and overhead per file, and each file's val_bpb difference from the first with its
two-sided p (Welch's t-test):

    python -m nanochat.bench --train nanochat/train.py --train mine.py --seeds 3 --time-budget 50

Figures (from train.py's per-step lines and the harness's summary; run by hand, so the harness scores in-process):
  step p50/p90      timed steps only (after train.py's untimed warm-up steps)
  mfu_steady        the harness's MFU rescaled from the mean to the median timed step (the mean, if
                    the log's step lines are not ours)
  tok/s             tokens per step / median step time
  overhead          total_seconds - training_seconds (compile, warm-up steps, eval; the imports and CUDA
                    set-up too with --no-prestart, else they happen before `go`, shown as prestart s)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nanochat.config import (HARNESS_FILE, PROFILES, SEED_ENV, SUMMARY_ENV, TEMPLATE_PATH, HarnessConfig,
                             render_train_py, torch_has_bytecode)
from nanochat.prestart import READY_ENV

STEP_RE = re.compile(r"^step (\d+) \|.*\| dt ([\d.]+)ms")
UNTIMED_RE = re.compile(r"after (\d+) untimed steps")
BATCH_RE = re.compile(r"^batch: ([\d,]+) tokens/step")


def override_constants(text: str, overrides: dict[str, str]) -> str:
    """Replace `NAME = value` at the top level of a train.py; the comment after it stays."""
    for name, value in overrides.items():
        pattern = re.compile(rf"^{name} = [^#\n]*?(\s*#.*)?$", re.M)
        if not pattern.search(text):
            raise SystemExit(f"bench: train.py has no top-level constant {name}")
        text = pattern.sub(lambda m: f"{name} = {value}{m.group(1) or ''}", text, count=1)
    return text


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def parse_log(text: str) -> dict:
    """Per-step dt (ms) of every step, the number of untimed steps and tokens per step."""
    steps = [(int(m.group(1)), float(m.group(2))) for m in map(STEP_RE.match, text.splitlines()) if m]
    untimed = UNTIMED_RE.search(text)
    batch = next((m for m in map(BATCH_RE.match, text.splitlines()) if m), None)
    return {"steps": steps, "untimed": int(untimed.group(1)) if untimed else None,
            "tokens_per_step": int(batch.group(1).replace(",", "")) if batch else None}


def figures(log: dict, result: dict) -> dict:
    """The performance figures of one run."""
    untimed = log["untimed"] or 0
    timed = [dt for step, dt in log["steps"] if step > untimed]
    out = {k: result.get(k) for k in ("val_bpb", "training_seconds", "total_seconds", "startup_seconds",
                                      "eval_seconds", "mfu_percent", "num_steps", "peak_vram_mb")}
    out["status"] = result.get("status")
    first = [dt for step, dt in log["steps"] if step == 1]
    out["first_step_s"] = round(first[0] / 1000, 1) if first else None
    if result.get("status") == "ok":
        out["overhead_s"] = round(result["total_seconds"] - result["training_seconds"], 1)
    if timed:
        p50, p90 = percentile(timed, 50), percentile(timed, 90)
        mean = statistics.fmean(timed)
        out.update(timed_steps=len(timed), step_p50_ms=round(p50, 1), step_p90_ms=round(p90, 1),
                   p90_over_p50=round(p90 / p50, 3), step_min_ms=round(min(timed), 1),
                   step_max_ms=round(max(timed), 1))
        if log["tokens_per_step"]:
            out["tok_per_s"] = round(log["tokens_per_step"] / (p50 / 1000))
        if result.get("mfu_percent") is not None:
            out["mfu_steady"] = round(result["mfu_percent"] * mean / p50, 2)
    elif result.get("mfu_percent") is not None:   # a train.py that logs steps its own way: its mean MFU
        out["mfu_steady"] = result["mfu_percent"]
    return out


def run_once(workdir: Path, python: str, log_path: Path, timeout: float, prestart: bool,
             seed: int | None = None) -> tuple[str, dict, float, float | None]:
    """One run of workdir/train.py: (log, result, wall seconds from go, seconds the prestart warm-up took).
    With prestart, the process is started first and told to go once warm, as a campaign's spare is."""
    result_path, ready_path = workdir / "result.json", workdir / "ready"
    result_path.unlink(missing_ok=True)
    ready_path.unlink(missing_ok=True)
    env = {**os.environ, SUMMARY_ENV: str(result_path), READY_ENV: str(ready_path), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TEMPLATE_PATH.parent.parent), os.environ.get("PYTHONPATH")]))}
    if seed is not None:
        env[SEED_ENV] = str(seed)
    cmd = [python, "-m", "nanochat.prestart", "train.py"] if prestart else [python, "train.py"]
    if not torch_has_bytecode():   # as a campaign's sandbox does: bytecode private to the run
        env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    ready = None
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.PIPE if prestart else subprocess.DEVNULL)
        if prestart:
            while not ready_path.exists() and proc.poll() is None:
                time.sleep(0.05)
            ready = float(ready_path.read_text()) if ready_path.exists() else None
        t0 = time.time()
        if prestart:
            proc.stdin.write(f"go {t0:.3f}\n".encode())
            proc.stdin.close()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "timeout"
    wall = time.time() - t0
    text = log_path.read_text(errors="replace")
    result = json.loads(result_path.read_text()) if result_path.exists() else {"status": f"no result (rc {rc})"}
    return text, result, wall, ready


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nanochat.bench", description=__doc__.split("\n\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", action="append", default=None,
                    help="a train.py to measure (default: the template); give it twice or more to compare side by side")
    ap.add_argument("--profile", default="h100", choices=sorted(PROFILES))
    ap.add_argument("--data", default="builtin")
    ap.add_argument("--time-budget", type=float, default=60.0, help="seconds of timed training per run")
    ap.add_argument("--runs", type=int, default=2, help="runs in a row, sharing the compile cache")
    ap.add_argument("--seeds", type=int, default=0, metavar="N",
                    help="run N times with H.seed = 1..N (instead of --runs) and report val_bpb's mean and seed σ")
    ap.add_argument("--first-seed", type=int, default=1, metavar="K",
                    help="with --seeds N: use seeds K..K+N-1 (e.g. to split the seeds over GPUs)")
    ap.add_argument("--cold", action="store_true", help="empty the compile cache before the first run")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a constant (every file)")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--label", default="", help="a name for this variant in the output (one file only)")
    ap.add_argument("--log-dir", default=None, help="keep each run's log (and the figures as JSON) here")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--no-prestart", dest="prestart", action="store_false",
                    help="start each run cold (python train.py) instead of from a pre-started process, "
                         "as a campaign does (its imports and CUDA set-up overlap the agent's turn)")
    args = ap.parse_args(argv)

    overrides = dict(item.split("=", 1) for item in args.set)
    variants = []   # (label, train.py text)
    files = args.train or [str(TEMPLATE_PATH)]
    for path in files:
        train = Path(path).resolve()
        text = render_train_py(args.profile) if train == TEMPLATE_PATH.resolve() else train.read_text()
        label = args.label if args.label and len(files) == 1 else \
            train.stem + "".join(f" {k}={v}" for k, v in overrides.items())
        while label in [v[0] for v in variants]:     # two files of one name: number them
            label += "'"
        variants.append((label, override_constants(text, overrides)))
    if len(variants) > 1 and not args.seeds:
        ap.error("side by side needs --seeds N: each file runs N times, with H.seed = 1..N")
    config = HarnessConfig(profile=args.profile, data=args.data, time_budget=args.time_budget,
                           cache_dir=args.cache_dir)
    if args.cold:
        shutil.rmtree(config.compile_cache, ignore_errors=True)
    log_dir = Path(args.log_dir) if args.log_dir else None
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nanochat-bench-") as tmp:
        works = []
        for k, (_, text) in enumerate(variants):
            work = Path(tmp) / str(k)
            work.mkdir()
            (work / "train.py").write_text(text)
            config.write(work / HARNESS_FILE)
            works.append(work)
        # interleaved (A1 B1 A2 B2 ...): whatever drifts on the machine meets every file alike
        for i in range(args.seeds or args.runs):
            for (label, _), work in zip(variants, works):
                kind = "cold" if args.cold and i == 0 else "warm" if args.cold or i > 0 else "run"
                name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{label}-{i + 1}-{kind}")[:80]
                log_path = (log_dir or work) / f"{name}.log"
                seed = args.first_seed + i if args.seeds else None
                out, result, wall, ready = run_once(work, sys.executable, log_path, args.timeout, args.prestart, seed)
                row = {"label": label, "run": i + 1, "seed": seed, "cache": kind, "wall_s": round(wall, 1),
                       "prestart_s": round(ready, 1) if ready is not None else None, **figures(parse_log(out), result)}
                if log_dir:
                    steps = [dt for _, dt in parse_log(out)["steps"]]
                    (log_dir / f"{name}.json").write_text(json.dumps({**row, "step_ms": steps}, indent=1))
                rows.append(row)
                print(json.dumps(row), flush=True)
                if result.get("status") != "ok":
                    print("\n".join(out.splitlines()[-25:]), file=sys.stderr)
    for label, _ in variants:
        print_table([r for r in rows if r["label"] == label])
    if args.seeds:
        print_comparison(compare(rows, [label for label, _ in variants]))
    return 0 if all(r.get("status") == "ok" for r in rows) else 1


COMPARED = (("val_bpb", "val_bpb"), ("step_p50_ms", "step p50 ms"), ("mfu_steady", "MFU%"), ("overhead_s", "overhead s"))


def compare(rows: list[dict], labels: list[str]) -> list[dict]:
    """Per label: mean and σ (across seeds) of each COMPARED figure; for every label after the
    first, its val_bpb difference from the first and that difference's two-sided p (Welch's t-test)."""
    from scipy.stats import ttest_ind   # lazy: only the side-by-side summary needs it
    out, first = [], None
    for label in labels:
        summary = {"label": label}
        for key, _ in COMPARED:
            values = [r[key] for r in rows if r["label"] == label and r.get("status") == "ok"
                      and isinstance(r.get(key), (int, float))]
            summary[key] = values
            summary[f"{key}_mean"] = statistics.fmean(values) if values else None
            summary[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else None
        if first is None:
            first = summary
        elif summary["val_bpb"] and first["val_bpb"]:
            summary["delta_val_bpb"] = summary["val_bpb_mean"] - first["val_bpb_mean"]
            if len(summary["val_bpb"]) > 1 and len(first["val_bpb"]) > 1:
                summary["p_value"] = float(ttest_ind(summary["val_bpb"], first["val_bpb"], equal_var=False).pvalue)
        out.append(summary)
    return out


def print_comparison(summaries: list[dict]) -> None:
    def cell(s, key):
        mean, sd = s.get(f"{key}_mean"), s.get(f"{key}_sd")
        if mean is None:
            return "-"
        digits = 4 if key == "val_bpb" else 1
        return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")
    n = max((len(s["val_bpb"]) for s in summaries), default=0)
    print(f"\nmean ± σ over seeds (n = {n} each; σ is the seed noise of one run)")
    print(" | ".join(["train.py", *(h for _, h in COMPARED), f"Δ val_bpb vs {summaries[0]['label']}", "p (Welch)"]))
    for s in summaries:
        delta = f"{s['delta_val_bpb']:+.4f}" if s.get("delta_val_bpb") is not None else "-"
        p = f"{s['p_value']:.3g}" if s.get("p_value") is not None else "-"
        print(" | ".join([s["label"], *(cell(s, key) for key, _ in COMPARED), delta, p]))


COLUMNS = [("seed", "seed"), ("cache", "cache"), ("prestart_s", "prestart s"), ("mfu_steady", "MFU%"), ("mfu_percent", "MFU%(all)"), ("tok_per_s", "tok/s"),
           ("step_p50_ms", "p50 ms"), ("step_p90_ms", "p90 ms"), ("p90_over_p50", "p90/p50"),
           ("first_step_s", "step1 s"), ("startup_seconds", "startup s"), ("overhead_s", "overhead s"),
           ("eval_seconds", "eval s"), ("val_bpb", "val_bpb"), ("num_steps", "steps"), ("peak_vram_mb", "VRAM MB")]


def print_table(rows: list[dict]) -> None:
    print(f"\n{rows[0]['label'] if rows else ''}")
    print(" | ".join(h for _, h in COLUMNS))
    for r in rows:
        print(" | ".join(str(r.get(k, "-")) for k, _ in COLUMNS))


if __name__ == "__main__":
    sys.exit(main())
