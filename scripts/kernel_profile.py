"""
Where a train.py's GPU time goes: run it under torch.profiler (CUDA kernels only) from the first
timed step to the end of training, then print the kernels by total time, per optimizer step.
A development tool: it wraps the harness's loader and finish() from the outside.

    python scripts/kernel_profile.py WORKDIR_WITH_TRAIN_PY_AND_HARNESS_JSON [--top 40] [--out FILE]
"""

import argparse
import json
import os
import runpy
import sys
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from nanochat import prepare

ap = argparse.ArgumentParser()
ap.add_argument("workdir")
ap.add_argument("--top", type=int, default=40)
ap.add_argument("--out", default=None)
ap.add_argument("--skip-batches", type=int, default=None, help="loader batches before profiling starts")
args = ap.parse_args()
os.chdir(args.workdir)
sys.path.insert(0, os.getcwd())
sys.argv = ["train.py"]

prof = profile(activities=[ProfilerActivity.CUDA])
state = {"batches": 0, "started": None, "skip": args.skip_batches}
next_batch = prepare.TrainLoader.__next__


def counting_next(self):
    if state["skip"] is None:   # default: the h100 template's first 2 steps (1 untimed + 1), 4 micro-batches each
        state["skip"] = 8
    if state["batches"] == state["skip"]:
        torch.cuda.synchronize()
        prof.start()
        state["started"] = time.time()
    state["batches"] += 1
    return next_batch(self)


def finish_and_report(self, model, **stats):
    torch.cuda.synchronize()
    wall = time.time() - state["started"]
    prof.stop()
    micro = state["batches"] - state["skip"]
    table = defaultdict(lambda: [0, 0.0])
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            row = table[e.name]
            row[0] += 1
            row[1] += e.device_time_total / 1000.0   # ms
    total = sum(r[1] for r in table.values())
    steps = micro / 4
    print(f"\n[kernel_profile] {micro} micro-batches (~{steps:.1f} steps) in {wall:.2f}s wall; "
          f"kernel time {total:.0f} ms = {100 * total / 1000 / wall:.1f}% of wall; per step: wall "
          f"{1000 * wall / steps:.1f} ms, kernels {total / steps:.1f} ms")
    rows = sorted(table.items(), key=lambda kv: -kv[1][1])
    for name, (n, ms) in rows[:args.top]:
        print(f"{ms / steps:8.2f} ms/step {100 * ms / total:5.1f}% {n / steps:7.1f}x  {name[:110]}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"wall_s": wall, "micro": micro, "kernels": [(k, n, ms) for k, (n, ms) in rows]}, f)
    sys.stdout.flush()
    os._exit(0)


prepare.TrainLoader.__next__ = counting_next
prepare.Harness.finish = finish_and_report
runpy.run_path("train.py", run_name="__main__")
