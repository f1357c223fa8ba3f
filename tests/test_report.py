"""Tests for graph/report.py and the reader in graph/results.py. Every expected figure is worked out by hand next to its fixture."""

import json
import logging
import os
import subprocess
import sys
import time

import pytest

from graph.plot import plot_progress
from graph.report import PLOT_FILE, REPORT_FILE, compute_figures, main, write_report
from graph import results
from graph.results import FORMATS, ResultsError, read_results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED_KEYS = {"experiments", "keeps", "keep_rate_pct", "total_improvement_pct",
                 "improvement_per_experiment_pct", "longest_stall", "best_val_bpb", "baseline_val_bpb"}


def tsv(*lines, end="\n"):
    """Join tab-separated fields written with ' | ' in the fixtures (easier to read than \\t)."""
    return "\n".join(line.replace(" | ", "\t") for line in lines) + end


V2_HEADER = "\t".join(FORMATS["ours-v2"])
# 7 rows: K D K C D K D. Timestamps every 360 s. Row 2's keep followed a directive; row 5's keep
# came with a directive the agent rejected (so it is agent-led); row 6 is a discard with the
# lowest bpb of all (discarded for memory), which must not count as best.
V2_ROWS = [
    "aaaaaaa | 1.000000 | 40.0 | keep | baseline | 0 | 1.000000 | 300.0 | 340.0 |  |  | 2026-05-01T00:00:00Z | bwrap",
    "bbbbbbb | 1.010000 | 40.1 | discard | gelu | 1 | 1.000000 | 300.0 | 340.0 |  |  | 2026-05-01T00:06:00Z | bwrap",
    "ccccccc | 0.980000 | 41.0 | keep | wider mlp | 2 | 0.980000 | 300.0 | 340.0 | go wider | followed | 2026-05-01T00:12:00Z | bwrap",
    "ddddddd | 0.000000 | 0.0 | crash | depth 20 (OOM) | 3 | 0.980000 | 10.0 | 20.0 |  |  | 2026-05-01T00:18:00Z | bwrap",
    "eeeeeee | 0.990000 | 41.0 | discard | lr 0.1 | 4 | 0.980000 | 300.0 | 340.0 |  |  | 2026-05-01T00:24:00Z | bwrap",
    "fffffff | 0.950000 | 41.0 | keep | qk-norm | 5 | 0.950000 | 300.0 | 340.0 | bigger batch | rejected | 2026-05-01T00:30:00Z | bwrap",
    "1111111 | 0.940000 | 79.0 | discard | 2x batch, memory blows up | 6 | 0.950000 | 300.0 | 355.0 | bigger batch | adapted | 2026-05-01T00:36:00Z | bwrap",
]
V2_EXPECTED = {
    "format": "ours-v2",
    "experiments": 7,
    "keeps": 3,                                   # rows 0, 2, 5
    "keep_rate_pct": 3 / 7 * 100,                 # 42.857...
    "baseline_val_bpb": 1.0,
    "best_val_bpb": 0.95,                         # not 0.94 (discarded), not 0.0 (crash)
    "total_improvement_pct": 5.0,                 # (1.00 - 0.95) / 1.00 * 100
    "improvement_per_experiment_pct": 5.0 / 6,    # 6 experiments after the baseline
    "longest_stall": 2,                           # rows 3-4 (crash, discard)
    "crashes": 1,
    "directive_keeps": 1,                         # row 2 (followed)
    "agent_keeps": 1,                             # row 5 (directive rejected); baseline is neither
    # training: 5*300 + 10 + 300 = 1810 s; wall: 36 min = 2160 s + the baseline's total 340 s = 2500 s
    "gpu_duty_pct": 1810 / 2500 * 100,            # 72.4
    "experiments_per_hour": 7 / (2500 / 3600),    # 10.08 over the same wall
    "agents": None, "gpus": None, "by_agent": None, "by_gpu": None,   # the format names neither
    # one run per experiment: no noise measured, nothing confirmed, every later keep noise-blind
    "runs": 7, "total_improvement_bpb": 0.05, "total_improvement_sigma": None, "sigma": None,
    "noise_runs": 1, "confirmed_keeps": 0, "rejected_candidates": 0, "single_run_keeps": 2,
    "confirm_share_pct": 0.0, "noise_share_pct": 0.0,
}

V3_HEADER = "\t".join(FORMATS["ours-v3"])      # before the token columns (ours v4): still read
# 13 rows, 6 experiments, timestamps every 360 s. The baseline runs 3 seeds (mean 1.04, σ = the
# sample std of 1.05, 1.04, 1.03 = 0.01); iteration 1 is a single-run discard; iteration 2 beats the best,
# is confirmed on two more seeds and kept (its directive followed); iteration 3's first run has
# the lowest val_bpb of the file (0.95) but its confirmation fails (mean 1.01): a measure row is
# never the best; iteration 4 crashes on its confirmation run; iteration 5 never ran. σ is
# re-pooled to 0.012 after iteration 3. Row 3 has no total_seconds (its training_seconds count).
V3_ROWS = [
    # commit | val_bpb | mem | status | description | iter | best | train s | total s | directive | choice | timestamp | sandbox | seed | runs | mean | sigma | reason
    "aaaaaaa | 1.050000 | 40.0 | measure | baseline | 0 | 1.050000 | 300.0 | 340.0 |  |  | 2026-05-01T00:00:00Z | bwrap | 1 | 1 | 1.050000 |  | seed noise: run 1 of 3",
    "aaaaaaa | 1.040000 | 40.0 | measure | baseline | 0 | 1.045000 | 300.0 | 340.0 |  |  | 2026-05-01T00:06:00Z | bwrap | 2 | 2 | 1.045000 |  | seed noise: run 2 of 3",
    "aaaaaaa | 1.030000 | 40.0 | keep | baseline | 0 | 1.040000 | 300.0 | 340.0 |  |  | 2026-05-01T00:12:00Z | bwrap | 3 | 3 | 1.040000 | 0.010000 | baseline: mean of 3 runs",
    "bbbbbbb | 1.045000 | 40.1 | discard | gelu | 1 | 1.040000 | 300.0 |  |  |  | 2026-05-01T00:18:00Z | bwrap | 1 | 1 | 1.045000 | 0.010000 | worse than best 1.0400",
    "ccccccc | 1.000000 | 41.0 | measure | wider mlp | 2 | 1.040000 | 300.0 | 340.0 | go wider | followed | 2026-05-01T00:24:00Z | bwrap | 1 | 1 | 1.000000 | 0.010000 | beats best by 4.0σ: confirming",
    "ccccccc | 1.010000 | 41.0 | measure | wider mlp | 2 | 1.040000 | 300.0 | 340.0 | go wider | followed | 2026-05-01T00:30:00Z | bwrap | 2 | 2 | 1.005000 | 0.010000 | confirming: run 2 of 3",
    "ccccccc | 0.990000 | 41.0 | keep | wider mlp | 2 | 1.000000 | 300.0 | 340.0 | go wider | followed | 2026-05-01T00:36:00Z | bwrap | 3 | 3 | 1.000000 | 0.010000 | confirmed: mean 1.0000 vs best 1.0400, t=6.93 > 2.78",
    "ddddddd | 0.950000 | 41.0 | measure | lr 0.1 | 3 | 1.000000 | 300.0 | 340.0 |  |  | 2026-05-01T00:42:00Z | bwrap | 1 | 1 | 0.950000 | 0.010000 | beats best by 5.0σ: confirming",
    "ddddddd | 1.040000 | 41.0 | measure | lr 0.1 | 3 | 1.000000 | 300.0 | 340.0 |  |  | 2026-05-01T00:48:00Z | bwrap | 2 | 2 | 0.995000 | 0.010000 | confirming: run 2 of 3",
    "ddddddd | 1.040000 | 41.0 | discard | lr 0.1 | 3 | 1.000000 | 300.0 | 340.0 |  |  | 2026-05-01T00:54:00Z | bwrap | 3 | 3 | 1.010000 | 0.012000 | within noise: mean 1.0100 vs best 1.0000",
    "eeeeeee | 0.980000 | 60.0 | measure | depth 20 | 4 | 1.000000 | 300.0 | 340.0 |  |  | 2026-05-01T01:00:00Z | bwrap | 1 | 1 | 0.980000 | 0.012000 | beats best by 1.7σ: confirming",
    "eeeeeee | 0.000000 | 0.0 | crash | depth 20 | 4 | 1.000000 | 10.0 | 20.0 |  |  | 2026-05-01T01:06:00Z | bwrap | 2 | 2 | 0.980000 | 0.012000 | crashed on confirmation run 2 (OOM)",
    "- | 0.000000 | 0.0 | no-run | patch never applied | 5 | 1.000000 |  |  |  |  | 2026-05-01T01:12:00Z |  |  | 0 |  | 0.012000 | gave up: the patch did not apply",
]

V3_EXPECTED = {
    "format": "ours-v3",
    "experiments": 6,                             # verdict rows 2, 3, 6, 9, 11, 12 (iterations 0-5)
    "runs": 12,                                   # every row but the no-run
    "keeps": 2,                                   # iterations 0 and 2
    "keep_rate_pct": 2 / 6 * 100,
    "baseline_val_bpb": 1.04,                     # the baseline's mean; not 1.05 (first row), not 1.03 (verdict run)
    "best_val_bpb": 1.0,                          # iteration 2's mean; not 0.95 (a measure row), not 0.99 (verdict run)
    "total_improvement_pct": 0.04 / 1.04 * 100,   # 3.846...
    "total_improvement_bpb": 0.04,
    "total_improvement_sigma": 0.04 / 0.012,      # 3.33: σ is the last recorded one
    "improvement_per_experiment_pct": 0.04 / 1.04 * 100 / 5,  # 5 experiments after the baseline
    "longest_stall": 3,                           # iterations 3-5: discard, crash, no-run
    "crashes": 1,
    "sigma": 0.012,
    "noise_runs": 3,
    "confirmed_keeps": 1,                         # iteration 2
    "rejected_candidates": 1,                     # iteration 3; iteration 1 never went to confirmation
    "single_run_keeps": 0,
    # time: 11 runs * 340 s, but row 3 has only its training_seconds (300), the crash 20, the
    # no-run nothing: 10*340 + 300 + 20 = 3720 s. Confirmation rows (iteration > 0, runs >= 2):
    # rows 5, 6, 8, 9 (340 each) and the crash (20) = 1380 s; noise rows: rows 1, 2 = 680 s.
    "confirm_share_pct": 1380 / 3720 * 100,       # 37.1
    "noise_share_pct": 680 / 3720 * 100,          # 18.3
    "directive_keeps": 1,                         # iteration 2 (followed)
    "agent_keeps": 0,
    # training: 11*300 + 10 = 3310 s; wall: 72 min = 4320 s + the first row's total 340 s = 4660 s
    "gpu_duty_pct": 3310 / 4660 * 100,            # 71.0
    "experiments_per_hour": 6 / (4660 / 3600),    # 4.64
    "agents": None, "gpus": None, "by_agent": None, "by_gpu": None,
    # no token columns in this format: no token figures (not zeros)
    "llm_tokens": None, "agent_tokens": None, "director_tokens": None, "tokens_per_experiment": None,
    "llm_cost": None,
}

V4_HEADER = "\t".join(FORMATS["ours-v4"])   # before the agent and gpu columns (ours v5): still read
# the v3 campaign with the LLM tokens (agent in, agent out, director in, director out) on its
# verdict rows; the measure rows leave them empty. Iteration 2 followed a directive: the director's
# tokens are on its verdict row.
V4_TOKENS = {2: "0 | 0 | 0 | 0", 3: "1000 | 200 | 0 | 0", 6: "3000 | 500 | 800 | 100", 9: "2000 | 300 | 0 | 0",
             11: "1500 | 250 | 0 | 0", 12: "400 | 50 | 0 | 0"}
V4_ROWS = [row + " | " + V4_TOKENS.get(i, " |  |  | ") for i, row in enumerate(V3_ROWS)]
PRICES = (0.5, 2.0)      # dollars per million input, output tokens
V4_EXPECTED = {
    **V3_EXPECTED,
    "format": "ours-v4",
    "agent_tokens": 7900 + 1300,                  # in + out over the verdict rows
    "director_tokens": 900,
    "llm_tokens": 10100,
    "input_tokens": 8700, "output_tokens": 1400,
    "tokens_per_experiment": 10100 / 5,           # 5 experiments after the baseline
    "llm_cost": (8700 * 0.5 + 1400 * 2.0) / 1e6,  # $0.00725
    "cost_per_experiment": (8700 * 0.5 + 1400 * 2.0) / 1e6 / 5,
}

V5_HEADER = "\t".join(FORMATS["ours"])
# two agents on two GPUs. The baseline's two noise runs start together at 00:00 on GPUs 0 and 1
# (agent a1); then a1 works on GPU 0 and a2 on GPU 1. a2's iteration 3 never ran: its row names no
# GPU. Rows are recorded in time order; each run started total_seconds (340; the crash 20) before
# its timestamp. Runs, seconds after 00:00 (start -> stamp):
#   row  agent gpu iter status   start  stamp
#   0    a1    0   0    measure      0    340
#   1    a1    1   0    keep         0    340
#   2    a2    1   1    discard    360    700
#   3    a1    0   2    measure    400    740
#   4    a2    -   3    no-run     760    760  (no run: starts at its stamp)
#   5    a1    0   2    keep       760   1100
#   6    a2    1   4    crash     1090   1110
#   7    a2    1   5    measure   1120   1460
#   8    a1    0   6    discard   1160   1500
#   9    a2    1   5    keep      1460   1800
V5_ROWS = [
    # commit | val_bpb | mem | status | description | iter | best | train s | total s | directive | choice | timestamp | sandbox | seed | runs | mean | sigma | reason | tokens (4) | agent | gpu
    "aaaaaaa | 1.050000 | 40.0 | measure | baseline | 0 | 1.050000 | 300.0 | 340.0 |  |  | 2026-05-01T00:05:40Z | bwrap | 1 | 1 | 1.050000 |  | seed noise: run 1 of 2 |  |  |  |  | a1 | 0",
    "aaaaaaa | 1.030000 | 40.0 | keep | baseline | 0 | 1.040000 | 300.0 | 340.0 |  |  | 2026-05-01T00:05:40Z | bwrap | 2 | 2 | 1.040000 | 0.014142 | baseline: mean of 2 runs | 0 | 0 | 0 | 0 | a1 | 1",
    "bbbbbbb | 1.045000 | 40.1 | discard | gelu | 1 | 1.040000 | 300.0 | 340.0 |  |  | 2026-05-01T00:11:40Z | bwrap | 3 | 1 | 1.045000 | 0.014142 | worse than best 1.0400 | 1000 | 200 | 0 | 0 | a2 | 1",
    "ccccccc | 1.000000 | 41.0 | measure | wider mlp | 2 | 1.040000 | 300.0 | 340.0 |  |  | 2026-05-01T00:12:20Z | bwrap | 4 | 1 | 1.000000 | 0.014142 | beats best: confirming |  |  |  |  | a1 | 0",
    "- | 0.000000 | 0.0 | no-run | patch never applied | 3 | 1.040000 |  |  |  |  | 2026-05-01T00:12:40Z |  |  | 0 |  | 0.014142 | gave up: the patch did not apply | 400 | 50 | 0 | 0 | a2 | ",
    "ccccccc | 0.990000 | 41.0 | keep | wider mlp | 2 | 0.995000 | 300.0 | 340.0 |  |  | 2026-05-01T00:18:20Z | bwrap | 5 | 2 | 0.995000 | 0.014142 | confirmed | 3000 | 500 | 0 | 0 | a1 | 0",
    "ddddddd | 0.000000 | 0.0 | crash | depth 20 | 4 | 0.995000 | 10.0 | 20.0 |  |  | 2026-05-01T00:18:30Z | bwrap | 6 | 1 |  | 0.014142 | crashed (OOM) | 1500 | 250 | 0 | 0 | a2 | 1",
    "eeeeeee | 0.950000 | 41.0 | measure | qk-norm | 5 | 0.995000 | 300.0 | 340.0 |  |  | 2026-05-01T00:24:20Z | bwrap | 7 | 1 | 0.950000 | 0.014142 | beats best: confirming |  |  |  |  | a2 | 1",
    "fffffff | 1.010000 | 41.0 | discard | lr 0.1 | 6 | 0.995000 | 300.0 | 340.0 |  |  | 2026-05-01T00:25:00Z | bwrap | 8 | 1 | 1.010000 | 0.014142 | worse than best 0.9950 | 900 | 100 | 0 | 0 | a1 | 0",
    "eeeeeee | 0.960000 | 41.0 | keep | qk-norm | 5 | 0.955000 | 300.0 | 340.0 |  |  | 2026-05-01T00:30:00Z | bwrap | 9 | 2 | 0.955000 | 0.014142 | confirmed | 2000 | 300 | 0 | 0 | a2 | 1",
]
V5_EXPECTED = {
    "format": "ours",
    "experiments": 7,                              # verdict rows 1, 2, 4, 5, 6, 8, 9
    "keeps": 3, "crashes": 1, "runs": 9,           # every row but the no-run
    "agents": 2, "gpus": 2,                        # the no-run's empty gpu is no GPU
    # wall: the baseline's runs start at 0, the last row is stamped at 1800 s: half an hour
    "experiments_per_hour": 7 / 0.5,               # 14.0
    # training: GPU 0 4*300 = 1200 s, GPU 1 300+300+10+300+300 = 1210 s; two GPUs over 1800 s each
    "gpu_duty_pct": (1200 + 1210) / (1800 * 2) * 100,   # 66.9, the mean of the two GPUs' duties
    "by_agent": {
        # rows 0, 1, 3, 5, 8: verdicts 1 (keep), 5 (keep), 8; from 0 to 1500 s
        "a1": {"experiments": 3, "keeps": 2, "crashes": 0, "runs": 5, "experiments_per_hour": 3 / (1500 / 3600)},
        # rows 2, 4, 6, 7, 9: verdicts 2, 4 (no-run), 6 (crash), 9 (keep); from 360 to 1800 s = 0.4 h
        "a2": {"experiments": 4, "keeps": 1, "crashes": 1, "runs": 4, "experiments_per_hour": 4 / 0.4},
    },
    "by_gpu": {
        # rows 0, 3, 5, 8: verdicts 5 (keep), 8; from 0 to 1500 s; 1200 s trained of the campaign's 1800
        "0": {"experiments": 2, "keeps": 1, "crashes": 0, "runs": 4, "experiments_per_hour": 2 / (1500 / 3600),
              "gpu_duty_pct": 1200 / 1800 * 100},
        # rows 1, 2, 6, 7, 9: verdicts 1 (the baseline, a keep), 2, 6 (crash), 9 (keep); from 0 to 1800 s
        "1": {"experiments": 4, "keeps": 2, "crashes": 1, "runs": 5, "experiments_per_hour": 4 / 0.5,
              "gpu_duty_pct": 1210 / 1800 * 100},
        # the no-run alone: no span to divide by, no device to be busy
        "-": {"experiments": 1, "keeps": 0, "crashes": 0, "runs": 0, "experiments_per_hour": None,
              "gpu_duty_pct": None},
    },
}

AUTORESEARCH = tsv(
    "commit | val_bpb | memory_gb | status | description",
    "a1b2c3d | 0.997900 | 44.0 | keep | baseline",
    "b2c3d4e | 1.005000 | 44.2 | discard | switch to GeLU activation",
    "c3d4e5f | 0.000000 | 0.0 | crash | double model width (OOM)",
    "d4e5f6a | 0.993200 | 44.0 | keep | increase LR to 0.04",
    "e5f6a7b | 0.995000 | 44.1 | discard | warmdown 0.5",
)
AUTORESEARCH_EXPECTED = {
    "format": "autoresearch",
    "experiments": 5,
    "keeps": 2,
    "keep_rate_pct": 40.0,
    "baseline_val_bpb": 0.9979,
    "best_val_bpb": 0.9932,
    "total_improvement_pct": 0.0047 / 0.9979 * 100,        # 0.47099...
    "improvement_per_experiment_pct": 0.0047 / 0.9979 * 100 / 4,
    "longest_stall": 2,                                    # discard, crash
    "crashes": 1,
    "directive_keeps": None, "agent_keeps": None, "gpu_duty_pct": None,  # not in this format
    "experiments_per_hour": None, "agents": None, "by_agent": None,
    "runs": 5, "total_improvement_bpb": 0.0047, "sigma": None, "total_improvement_sigma": None,
    "noise_runs": 1, "confirmed_keeps": 0, "rejected_candidates": 0, "single_run_keeps": 1,
    "confirm_share_pct": None, "noise_share_pct": None,  # no seconds in this format
}

# statuses in mixed case on purpose
AUTOAUTO = tsv(
    "iter | val_bpb | best_val_bpb | memory_gb | status | description | timestamp",
    "0 | 1.100000 | 1.100000 | 20.1 | KEEP | baseline | 2026-05-01T00:00:00",
    "1 | 1.090000 | 1.090000 | 20.1 | Keep | lr warmup 200 | 2026-05-01T00:06:00",
    "2 | 1.095000 | 1.090000 | 20.1 | DISCARD | gelu | 2026-05-01T00:12:00",
    "3 | 0.000000 | 1.090000 | 0.0 | CRASH | flash attn typo | 2026-05-01T00:18:00",
    "4 | 1.080000 | 1.080000 | 20.2 | keep | rope base 50k | 2026-05-01T00:24:00",
)
AUTOAUTO_EXPECTED = {
    "format": "autoautoresearch",
    "experiments": 5,
    "keeps": 3,
    "keep_rate_pct": 60.0,
    "baseline_val_bpb": 1.1,
    "best_val_bpb": 1.08,
    "total_improvement_pct": 0.02 / 1.1 * 100,             # 1.8181...
    "improvement_per_experiment_pct": 0.02 / 1.1 * 100 / 4,
    "longest_stall": 2,
    "crashes": 1,
    "directive_keeps": None, "agent_keeps": None, "gpu_duty_pct": None,
    "runs": 5, "total_improvement_bpb": 0.02, "sigma": None, "single_run_keeps": 2,
    "confirm_share_pct": None,
}


def write_run(tmp_path, text, name="run-a"):
    run = tmp_path / name
    run.mkdir()
    (run / "results.tsv").write_text(text, encoding="utf-8")
    return run


def assert_figures(got, expected):
    for key, want in expected.items():
        if isinstance(want, dict):   # per agent, per GPU: the same names, each one's figures
            assert list(got[key]) == list(want), key
            for name, figures in want.items():
                assert_figures(got[key][name], figures)
        elif isinstance(want, float):
            assert got[key] == pytest.approx(want, rel=1e-9), key
        else:
            assert got[key] == want, key


def cli(*args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "graph.report", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


# -----------------------------------------------------------------------------
# the three formats

@pytest.mark.parametrize("text, expected", [
    (tsv(V3_HEADER, *V3_ROWS), V3_EXPECTED),
    (tsv(V2_HEADER, *V2_ROWS), V2_EXPECTED),
    (AUTORESEARCH, AUTORESEARCH_EXPECTED),
    (AUTOAUTO, AUTOAUTO_EXPECTED),
], ids=["ours", "ours-v2", "autoresearch", "autoautoresearch"])
def test_formats_figures(tmp_path, text, expected):
    run = write_run(tmp_path, text)
    rows = read_results(run / "results.tsv")
    assert len([r for r in rows if r.is_verdict]) == expected["experiments"]
    assert_figures(compute_figures(rows), expected)
    # a run dir and the tsv inside it read the same
    assert_figures(compute_figures(read_results(run)), expected)


def test_rows_parsed_fields(tmp_path):
    run = write_run(tmp_path, tsv(V2_HEADER, *V2_ROWS))
    rows = read_results(run)
    assert [r.status for r in rows] == ["keep", "discard", "keep", "crash", "discard", "keep", "discard"]
    assert rows[3].val_bpb is None  # 0.000000 means no metric
    assert rows[2].directive == "go wider" and rows[2].agent_choice == "followed" and rows[2].directive_led
    assert not rows[5].directive_led  # rejected
    assert rows[0].directive == "" and rows[0].iteration == 0
    assert rows[6].timestamp.isoformat() == "2026-05-01T00:36:00+00:00"
    aa = read_results(write_run(tmp_path, AUTOAUTO, "aa"))
    assert [r.status for r in aa] == ["keep", "keep", "discard", "crash", "keep"]
    assert [r.iteration for r in aa] == [0, 1, 2, 3, 4]


def test_v3_rows_parsed_fields(tmp_path):
    rows = read_results(write_run(tmp_path, tsv(V3_HEADER, *V3_ROWS)))
    assert rows[0].fmt == "ours-v3" and len(rows) == 13
    assert [r.iteration for r in rows] == [0, 0, 0, 1, 2, 2, 2, 3, 3, 3, 4, 4, 5]
    assert [r.is_verdict for r in rows] == [False, False, True, True, False, False, True, False, False, True,
                                            False, True, True]
    assert [r.is_baseline for r in rows] == [True] * 3 + [False] * 10
    assert [r.seed for r in rows] == [1, 2, 3, 1, 1, 2, 3, 1, 2, 3, 1, 2, None]
    assert [r.runs for r in rows] == [1, 2, 3, 1, 1, 2, 3, 1, 2, 3, 1, 2, 0]
    assert [r.sigma for r in rows[:3]] == [None, None, 0.01] and rows[-1].sigma == 0.012
    assert rows[7].val_bpb == 0.95 and rows[7].mean == 0.95 and rows[9].mean == 1.01
    assert rows[11].val_bpb is None and rows[11].mean == 0.98   # the crash keeps its successful run's mean
    assert rows[12].mean is None and rows[12].reason == "gave up: the patch did not apply"
    assert rows[6].directive_led and rows[6].reason.startswith("confirmed: mean 1.0000")


def test_rows_without_runs_are_experiments_of_one_run(tmp_path):
    # older formats, and a v3 file whose writer leaves the new columns empty (graph.py before the judge)
    v2 = read_results(write_run(tmp_path, tsv(V2_HEADER, *V2_ROWS), "v2"))
    assert [r.runs for r in v2] == [1] * 7 and [r.mean for r in v2] == [r.val_bpb for r in v2]
    assert all(r.is_verdict for r in v2) and [r.is_baseline for r in v2] == [True] + [False] * 6
    assert all(r.seed is None and r.sigma is None for r in v2)
    ar = read_results(write_run(tmp_path, AUTORESEARCH, "ar"))
    assert [r.iteration for r in ar] == [None] * 5 and [r.is_baseline for r in ar] == [True] + [False] * 4
    path = tmp_path / "new.tsv"
    results.append_row(path, {"commit": "aaaaaaa", "val_bpb": "1.000000", "status": "keep", "iteration": 0})
    results.append_row(path, {"commit": "-", "val_bpb": "0.000000", "status": "no-run", "iteration": 1})
    assert path.read_text().splitlines()[0] == "\t".join(FORMATS["ours"])   # a new file gets the current header
    base, skipped = read_results(path)
    assert (base.runs, base.mean, base.seed, base.sigma) == (1, 1.0, None, None)
    assert (skipped.runs, skipped.mean) == (0, None)


def test_append_row_keeps_an_old_header(tmp_path):
    path = tmp_path / "results.tsv"
    path.write_text(tsv(V2_HEADER, V2_ROWS[0]))
    results.append_row(path, {"commit": "bbbbbbb", "val_bpb": "1.010000", "status": "measure", "iteration": 1,
                              "seed": 7, "runs": 1, "mean": "1.010000", "reason": "confirming"})
    lines = path.read_text().splitlines()
    assert lines[0] == V2_HEADER and len(lines[2].split("\t")) == 13
    assert read_results(path)[1].status == "measure"


def test_longest_stall_counts_a_trailing_stall(tmp_path):
    text = tsv("commit | val_bpb | memory_gb | status | description",
               "a | 1.0 | 1 | keep | baseline",
               "b | 1.1 | 1 | discard | x",
               "c | 0.9 | 1 | keep | y",
               "d | 1.1 | 1 | discard | z",
               "e | 0.0 | 0 | crash | w",
               "f | 1.2 | 1 | discard | v")
    figures = compute_figures(read_results(write_run(tmp_path, text)))
    assert figures["longest_stall"] == 3
    assert figures["keeps"] == 2 and figures["experiments"] == 6


def test_baseline_only_and_header_only(tmp_path):
    only = compute_figures(read_results(write_run(tmp_path, tsv(V2_HEADER, V2_ROWS[0]), "one")))
    assert only["experiments"] == 1 and only["keeps"] == 1 and only["keep_rate_pct"] == 100.0
    assert only["total_improvement_pct"] == 0.0
    assert only["improvement_per_experiment_pct"] is None  # nothing after the baseline to divide by
    assert only["longest_stall"] == 0
    assert only["gpu_duty_pct"] == pytest.approx(300 / 340 * 100)  # wall = 0 + the baseline's total_seconds

    empty_run = write_run(tmp_path, tsv(V2_HEADER), "empty")
    assert compute_figures(read_results(empty_run))["experiments"] == 0
    write_report(empty_run)  # a campaign that has not finished its baseline still gets a report
    assert (empty_run / PLOT_FILE).stat().st_size > 1000


def test_measure_rows_are_never_best_nor_experiments(tmp_path):
    # a campaign killed while confirming iteration 2: its two runs are measure rows without a verdict,
    # and the first has the lowest val_bpb of the file
    text = tsv(V3_HEADER, *V3_ROWS[:4],
               V3_ROWS[7].replace("| 3 | 1.000000 |", "| 2 | 1.040000 |"),     # 0.95, runs 1
               V3_ROWS[8].replace("| 3 | 1.000000 |", "| 2 | 1.040000 |"))     # 1.04, runs 2, mean 0.995
    rows = read_results(write_run(tmp_path, text))
    assert [r.status for r in rows[-2:]] == ["measure", "measure"] and rows[-2].val_bpb == 0.95
    figures = compute_figures(rows)
    assert figures["best_val_bpb"] == 1.04 and figures["total_improvement_pct"] == 0.0
    assert figures["experiments"] == 2 and figures["runs"] == 6
    assert figures["confirmed_keeps"] == figures["rejected_candidates"] == 0
    assert figures["longest_stall"] == 1   # the unfinished experiment is no verdict yet


# a v3 campaign run with --noise-runs 1: the baseline once, no σ, a later keep on one run
NOISE_BLIND = tsv(
    V3_HEADER,
    "aaaaaaa | 1.000000 | 40.0 | keep | baseline | 0 | 1.000000 | 300.0 | 340.0 |  |  | 2026-05-01T00:00:00Z | bwrap | 1 | 1 | 1.000000 |  | baseline: one run",
    "bbbbbbb | 0.990000 | 40.0 | keep | rope 50k | 1 | 0.990000 | 300.0 | 340.0 |  |  | 2026-05-01T00:06:00Z | bwrap | 1 | 1 | 0.990000 |  | beats best 1.0000 (no noise measured)",
)


def test_noise_blind_campaign(tmp_path):
    run = write_run(tmp_path, NOISE_BLIND)
    figures = write_report(run)
    assert_figures(figures, {"experiments": 2, "runs": 2, "keeps": 2, "best_val_bpb": 0.99, "sigma": None,
                             "total_improvement_bpb": 0.01, "total_improvement_sigma": None, "noise_runs": 1,
                             "single_run_keeps": 1, "confirmed_keeps": 0, "noise_share_pct": 0.0})
    noise = (run / REPORT_FILE).read_text(encoding="utf-8").split("## Noise")[1].split("## Crashes")[0]
    assert "No seed noise measured" in noise
    assert "**single-run keeps: 1**" in noise
    assert "Rejected candidates" not in noise


def test_report_md_v3(tmp_path):
    run = write_run(tmp_path, tsv(V3_HEADER, *V3_ROWS), name="night-8")
    assert_figures(write_report(run), V3_EXPECTED)
    md = (run / REPORT_FILE).read_text(encoding="utf-8")
    assert "Source: `results.tsv` (ours-v3 format, 13 rows)." in md
    assert "## LLM usage" not in md and "| LLM tokens" not in md     # the format records none
    for line in ("| training runs (every seed) | 12 |", "| total improvement (bpb) | 0.040000 |",
                 "| total improvement (σ) | 3.33σ |", "| seed noise σ (one run) | 0.012000 |",
                 "| confirmed keeps (2+ runs) | 1 |", "| rejected candidates (failed confirmation) | 1 |",
                 "| single-run keeps (no noise check) | 0 |", "| confirmation runs' share of run time | 37.1% |",
                 "| noise runs' share of run time | 18.3% |", "| device duty (training / wall time) | 71.0% |"):
        assert line in md, line
    kept = md.split("## Kept experiments")[1].split("## Noise")[0]
    assert "| # | commit | mean ± σ | runs | vs previous best | description | led by |" in kept
    assert "| 0 | `aaaaaaa` | 1.040000 ± 0.0100 | 3 |  | baseline | baseline |" in kept
    assert "| 2 | `ccccccc` | 1.000000 ± 0.0100 | 3 | -3.846% | wider mlp | directive (followed) |" in kept
    assert kept.count("| `") == 2   # the verdicts only: no measure row, no discard
    noise = md.split("## Noise")[1].split("## Crashes")[0]
    assert "Seed noise σ = 0.012000" in noise and "the baseline's 3 runs" in noise
    assert "0.040000 bpb, is 3.33σ" in noise
    assert "- confirmed keeps: 1" in noise and "- rejected candidates: 1" in noise
    assert "single-run keeps" not in noise    # only said when there are some
    assert "| 3 | `ddddddd` | 1.010000 ± 0.0120 | 3 | lr 0.1 | within noise: mean 1.0100 vs best 1.0000 |" in noise
    assert "gelu" not in noise                # a single-run discard is no rejected candidate
    crashes = md.split("## Crashes")[1].split("## Definitions")[0]
    assert "| 4 | `eeeeeee` | depth 20 | crashed on confirmation run 2 (OOM) |" in crashes
    definitions = md.split("## Definitions")[1]
    assert "- confirmed keeps: keep verdicts after the baseline resting on 2 or more runs." in definitions


def test_cli_json_v3(tmp_path):
    run = write_run(tmp_path, tsv(V3_HEADER, *V3_ROWS))
    res = cli(run, "--json")
    assert res.returncode == 0, res.stderr
    figures = json.loads(res.stdout)
    assert set(V3_EXPECTED) <= figures.keys()
    assert_figures(figures, V3_EXPECTED)


# -----------------------------------------------------------------------------
# damaged input

def test_truncated_last_line_and_blank_lines(tmp_path, caplog):
    # a blank line mid-file, and a campaign killed while writing its 8th row
    text = tsv(V2_HEADER, *V2_ROWS[:3], "", *V2_ROWS[3:], "2222222\t0.93", end="")
    run = write_run(tmp_path, text)
    with caplog.at_level(logging.WARNING, logger="graph.results"):
        rows = read_results(run)
    assert len(rows) == 7
    assert_figures(compute_figures(rows), V2_EXPECTED)
    assert len(caplog.records) == 1 and "partial last line" in caplog.text and ":10:" in caplog.text


def test_truncated_timestamp_on_last_line_is_skipped(tmp_path, caplog):
    # the write stopped inside the timestamp (the last field but one)
    cut = V2_ROWS[1].replace("bbbbbbb", "3333333").rsplit(" | ", 1)[0][: -len("6:00Z")]
    run = write_run(tmp_path, tsv(V2_HEADER, *V2_ROWS, cut, end=""))
    with caplog.at_level(logging.WARNING, logger="graph.results"):
        assert len(read_results(run)) == 7
    assert "partial last line" in caplog.text


def test_damaged_middle_line_is_skipped(tmp_path, caplog):
    text = tsv("commit | val_bpb | memory_gb | status | description",
               "a | 1.0 | 1 | keep | baseline",
               "b | oops | 1 | discard | x",
               "c | 0.9 | 1 | keep | y")
    with caplog.at_level(logging.WARNING, logger="graph.results"):
        rows = read_results(write_run(tmp_path, text))
    assert [r.commit for r in rows] == ["a", "c"]
    assert "damaged line" in caplog.text and ":3:" in caplog.text


def test_all_runs_crashed_after_baseline(tmp_path):
    text = tsv("commit | val_bpb | memory_gb | status | description",
               "a | 1.000000 | 1 | keep | baseline",
               "b | 0.000000 | 0 | crash | x",
               "c | 0.000000 | 0 | CRASH | y")
    figures = compute_figures(read_results(write_run(tmp_path, text)))
    assert figures["best_val_bpb"] == 1.0 and figures["total_improvement_pct"] == 0.0
    assert figures["crashes"] == 2 and figures["longest_stall"] == 2


def test_unknown_header_exits_2(tmp_path):
    run = write_run(tmp_path, tsv("step | loss | acc", "1 | 2.0 | 0.5"))
    res = cli(run)
    assert res.returncode == 2
    assert "unknown results.tsv header" in res.stderr and "Traceback" not in res.stderr
    with pytest.raises(ResultsError):
        read_results(run)


@pytest.mark.parametrize("what", ["missing file", "dir without tsv", "empty file"])
def test_missing_or_empty_exits_2(tmp_path, what):
    if what == "missing file":
        target = tmp_path / "nope" / "results.tsv"
    elif what == "dir without tsv":
        target = tmp_path
    else:
        target = write_run(tmp_path, "")
    res = cli(target)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("report: error:") and "Traceback" not in res.stderr
    assert res.stdout == ""


# -----------------------------------------------------------------------------
# CLI and outputs

def test_cli_json(tmp_path):
    run = write_run(tmp_path, AUTORESEARCH)
    res = cli(run / "results.tsv", "--json")
    assert res.returncode == 0, res.stderr
    figures = json.loads(res.stdout)
    assert REQUIRED_KEYS <= figures.keys()
    assert_figures(figures, AUTORESEARCH_EXPECTED)
    assert sorted(os.listdir(run)) == ["results.tsv"]      # --json only prints: no report.md, no progress.png


def test_cli_json_writes_nothing_so_out_is_refused(tmp_path, capsys):
    run = write_run(tmp_path, tsv(V2_HEADER, *V2_ROWS))
    assert main([str(run), "--json"]) == 0
    assert_figures(json.loads(capsys.readouterr().out), V2_EXPECTED)
    assert sorted(os.listdir(run)) == ["results.tsv"]
    with pytest.raises(SystemExit) as e:
        main([str(run), "--out", str(tmp_path / "elsewhere"), "--json"])
    assert e.value.code == 2 and not (tmp_path / "elsewhere").exists()


def test_cli_out_dir(tmp_path):
    run = write_run(tmp_path, tsv(V2_HEADER, *V2_ROWS))
    out = tmp_path / "elsewhere"
    assert main([str(run), "--out", str(out)]) == 0
    assert (out / REPORT_FILE).exists() and (out / PLOT_FILE).exists()
    assert not (run / REPORT_FILE).exists()


@pytest.mark.parametrize("profile, word", [("cpu", "CPU"), ("h100", "GPU"), ("gpu-small", "GPU"),
                                           ("tpu", "device"), (None, "device")])
def test_duty_names_the_device_of_the_pinned_profile(tmp_path, capsys, profile, word):
    run = write_run(tmp_path, tsv(V2_HEADER, *V2_ROWS))
    if profile:
        (run / "workspace").mkdir()
        (run / "workspace" / "harness.json").write_text(json.dumps({"profile": profile, "data": "builtin"}))
    figures = write_report(run)
    assert figures["gpu_duty_pct"] == pytest.approx(72.4)             # the JSON key stays
    assert f"| {word} duty (training / wall time) | 72.4% |" in (run / REPORT_FILE).read_text()
    assert main([str(run)]) == 0
    assert f"{word} duty (training / wall time): 72.4%" in capsys.readouterr().out


def test_main_human_output(tmp_path, capsys):
    run = write_run(tmp_path, AUTOAUTO)
    assert main([str(run)]) == 0
    printed = capsys.readouterr().out
    assert "keep rate: 60.0%" in printed and "wrote" in printed


def test_report_md_contents(tmp_path):
    run = write_run(tmp_path, tsv(V2_HEADER, *V2_ROWS), name="night-7")
    figures = write_report(run)
    assert_figures(figures, V2_EXPECTED)
    md = (run / REPORT_FILE).read_text(encoding="utf-8")
    assert md.startswith("# Campaign report: night-7\n")
    assert f"({PLOT_FILE})" in md
    assert "| keep rate | 42.9% |" in md
    assert "| total improvement | 5.000% |" in md
    assert "| longest stall (consecutive non-keeps) | 2 |" in md
    assert "| device duty (training / wall time) | 72.4% |" in md   # no harness pin: the device is unknown
    kept = md.split("## Kept experiments")[1].split("## Crashes")[0]
    assert "| 2 | `ccccccc` | 0.980000 | -2.000% | wider mlp | directive (followed) |" in kept
    assert "| 5 | `fffffff` | 0.950000 | -3.061% | qk-norm | agent |" in kept
    assert "gelu" not in kept and "memory blows up" not in kept  # discards are not listed
    crashes = md.split("## Crashes")[1].split("## Definitions")[0]
    assert "| 3 | `ddddddd` | depth 20 (OOM) |" in crashes and "wider mlp" not in crashes


@pytest.mark.parametrize("text", [tsv(V3_HEADER, *V3_ROWS), tsv(V2_HEADER, *V2_ROWS), AUTORESEARCH],
                         ids=["ours", "ours-v2", "autoresearch"])
def test_progress_png_is_a_real_image(tmp_path, text):
    import matplotlib.image
    run = write_run(tmp_path, text)
    write_report(run)
    png = run / PLOT_FILE
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000  # a plotted chart, not an empty canvas
    img = matplotlib.image.imread(png)
    height, width = img.shape[:2]
    assert 400 <= height <= 2000 and 800 <= width <= 3000 and width > height
    # not a blank image: a real chart has many distinct colours
    assert len({tuple(px) for px in img.reshape(-1, img.shape[2])[::37].round(2).tolist()}) > 20
    assert not any(p.name.endswith(".tmp") or ".tmp." in p.name for p in run.iterdir())


def _artists(fig):
    ax = fig.axes[0]
    points = {c.get_label(): c.get_offsets().tolist() for c in ax.collections if c.get_label()[:1] != "_"}
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines}
    return ax, points, lines


def test_progress_v3_plots_experiments_runs_and_the_noise_band(tmp_path):
    rows = read_results(write_run(tmp_path, tsv(V3_HEADER, *V3_ROWS)))
    fig = plot_progress("night-8", rows, compute_figures(rows), tmp_path / "p.png")
    ax, points, lines = _artists(fig)
    # x is the iteration: every run a dot (measure rows too), every verdict's mean a marker
    assert [x for x, _ in points["one run (a seed)"]] == [0, 0, 0, 1, 2, 2, 2, 3, 3, 3, 4]
    assert points["kept (mean of its runs)"] == [[0, pytest.approx(1.04)], [2, pytest.approx(1.0)]]
    assert points["discarded (mean of its runs)"] == [[1, pytest.approx(1.045)], [3, pytest.approx(1.01)]]
    assert [x for x, _ in points["crash / no metric"]] == [4, 5]
    # the running best is the best mean: never the 0.95 measure run nor the 0.99 verdict run
    xs, ys = lines["running best"]
    assert xs == [0, 1, 2, 3, 4, 5] and ys == pytest.approx([1.04, 1.04, 1.0, 1.0, 1.0, 1.0])
    band = next(c for c in ax.collections if c.get_label() == "±1σ seed noise (σ = 0.0120)")
    edge = band.get_paths()[0].vertices[:, 1]
    assert edge.min() == pytest.approx(1.0 - 0.012) and edge.max() == pytest.approx(1.04 + 0.012)
    assert ax.get_title() == ("night-8: 6 experiments (12 runs), 2 kept, 3.85% better than baseline "
                              "(0.0400 bpb = 3.3σ)")
    assert (tmp_path / "p.png").stat().st_size > 20_000


def test_progress_old_format_plots_rows(tmp_path):
    rows = read_results(write_run(tmp_path, tsv(V2_HEADER, *V2_ROWS)))
    fig = plot_progress("night-7", rows, compute_figures(rows), tmp_path / "p.png")
    ax, points, lines = _artists(fig)
    assert "one run (a seed)" not in points and not any("σ" in label for label in points)
    assert points["kept"] == [[0, 1.0], [2, 0.98], [5, 0.95]]
    assert [x for x, _ in points["discarded"]] == [1, 4, 6] and [x for x, _ in points["crash / no metric"]] == [3]
    assert lines["running best"][1] == pytest.approx([1.0, 1.0, 0.98, 0.98, 0.98, 0.95, 0.95])
    assert ax.get_title() == "night-7: 7 experiments, 3 kept, 5.00% better than baseline"


def test_write_report_is_fast_and_leaks_no_figures(tmp_path):
    import matplotlib.pyplot as plt
    rows = [V2_ROWS[0]] + [V2_ROWS[1 + i % 6].replace(f"| {1 + i % 6} |", f"| {i + 1} |") for i in range(199)]
    run = write_run(tmp_path, tsv(V2_HEADER, *rows))
    write_report(run)  # warm-up: imports matplotlib and builds its font cache
    start = time.perf_counter()
    figures = write_report(run)
    assert time.perf_counter() - start < 1.0
    assert figures["experiments"] == 200
    assert plt.get_fignums() == []


def test_results_module_needs_neither_report_nor_matplotlib():
    # graph/results.py is the format's home: the writer must load without the report or its plotting
    code = ("import graph.results, sys; "
            "assert 'graph.report' not in sys.modules, 'graph.report'; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO, timeout=60)
    assert res.returncode == 0, res.stderr


# -----------------------------------------------------------------------------
# LLM tokens (ours v4)

def test_v4_token_columns_are_read_and_summed(tmp_path):
    rows = read_results(write_run(tmp_path, tsv(V4_HEADER, *V4_ROWS)))
    assert rows[0].fmt == "ours-v4" and len(rows) == 13
    assert [r.agent_input_tokens for r in rows] == [None, None, 0, 1000, None, None, 3000, None, None, 2000,
                                                    None, 1500, 400]
    assert rows[6].director_input_tokens == 800 and rows[6].director_output_tokens == 100
    assert_figures(compute_figures(rows, PRICES), V4_EXPECTED)
    # no price: every token figure, no cost
    unpriced = compute_figures(rows)
    assert unpriced["llm_tokens"] == 10100 and unpriced["llm_cost"] is None and unpriced["cost_per_experiment"] is None
    # one price alone counts the other as 0
    assert compute_figures(rows, (None, 2.0))["llm_cost"] == pytest.approx(1400 * 2.0 / 1e6)


def test_report_md_llm_usage(tmp_path):
    run = write_run(tmp_path, tsv(V4_HEADER, *V4_ROWS), name="night-9")
    assert_figures(write_report(run, prices=PRICES), V4_EXPECTED)
    md = (run / REPORT_FILE).read_text(encoding="utf-8")
    for line in ("| LLM tokens (agent + director) | 10,100 |", "| agent tokens | 9,200 |",
                 "| director tokens | 900 |", "| LLM tokens per experiment | 2,020 |", "| LLM cost | $0.0072 |"):
        assert line in md, line
    usage = md.split("## LLM usage")[1].split("## Crashes")[0]
    assert "10,100 tokens, $0.0072: agent 9,200, director 900; input 8,700, output 1,400." in usage
    assert "| 2 | 3,500 | 900 | keep | wider mlp |" in usage.splitlines()[usage.splitlines().index(
        "| # | agent tokens | director tokens | status | description |") + 2]   # the costliest first
    assert "- ours v4 and later, with a price set: LLM cost $" in md.split("## Definitions")[1]
    write_report(run)
    assert "(no price set, so no cost)" in (run / REPORT_FILE).read_text(encoding="utf-8")


def test_cli_prices_from_flags_and_environment(tmp_path, monkeypatch):
    run = write_run(tmp_path, tsv(V4_HEADER, *V4_ROWS))
    res = cli(run, "--json", "--llm-price-in-per-mtok", "0.5", "--llm-price-out-per-mtok", "2")
    assert res.returncode == 0, res.stderr
    assert_figures(json.loads(res.stdout), V4_EXPECTED)
    monkeypatch.setenv("AUTORESEARCH_LLM_PRICE_IN_PER_MTOK", "0.5")
    monkeypatch.setenv("AUTORESEARCH_LLM_PRICE_OUT_PER_MTOK", "2")
    res = cli(run, "--json")
    assert json.loads(res.stdout)["llm_cost"] == pytest.approx(V4_EXPECTED["llm_cost"])


# -----------------------------------------------------------------------------
# parallel agents (ours v5): the agent and gpu columns

def test_v5_agent_and_gpu_columns_are_read(tmp_path):
    rows = read_results(write_run(tmp_path, tsv(V5_HEADER, *V5_ROWS)))
    assert rows[0].fmt == "ours" and len(rows) == 10
    assert [r.agent for r in rows] == ["a1", "a1", "a2", "a1", "a2", "a1", "a2", "a2", "a1", "a2"]
    assert [r.gpu for r in rows] == ["0", "1", "1", "0", "", "0", "1", "1", "0", "1"]
    assert rows[9].agent_input_tokens == 2000       # the token columns stay where they were
    # the formats before v5 read with no agent and no GPU
    for name, header, text in (("v4", V4_HEADER, V4_ROWS), ("v3", V3_HEADER, V3_ROWS), ("v2", V2_HEADER, V2_ROWS)):
        old = read_results(write_run(tmp_path, tsv(header, *text), name))
        assert old and all(r.agent == "" and r.gpu == "" for r in old)


def test_v5_per_agent_and_per_gpu_figures(tmp_path):
    figures = compute_figures(read_results(write_run(tmp_path, tsv(V5_HEADER, *V5_ROWS))))
    assert_figures(figures, V5_EXPECTED)
    # the groups add up to the campaign
    for groups in (figures["by_agent"], figures["by_gpu"]):
        for key in ("experiments", "keeps", "crashes", "runs"):
            assert sum(g[key] for g in groups.values()) == figures[key], key


def test_report_md_v5_tables(tmp_path, capsys):
    run = write_run(tmp_path, tsv(V5_HEADER, *V5_ROWS), name="night-10")
    (run / "workspace").mkdir()
    (run / "workspace" / "harness.json").write_text(json.dumps({"profile": "h100", "data": "builtin"}))
    assert_figures(write_report(run), V5_EXPECTED)
    md = (run / REPORT_FILE).read_text(encoding="utf-8")
    for line in ("| experiments per hour (wall time) | 14.00 |", "| GPU duty (training / wall time) | 66.9% |",
                 "| agents | 2 |", "| GPUs | 2 |"):
        assert line in md, line
    agents = md.split("## Per agent")[1].split("## Per GPU")[0]
    assert "| agent | experiments | keeps | crashes | runs | experiments / hour |" in agents
    assert "| a1 | 3 | 2 | 0 | 5 | 7.20 |" in agents and "| a2 | 4 | 1 | 1 | 4 | 10.00 |" in agents
    gpus = md.split("## Per GPU")[1].split("## Kept experiments")[0]
    assert "| GPU | experiments | keeps | crashes | runs | experiments / hour | GPU duty |" in gpus
    assert "| 0 | 2 | 1 | 0 | 4 | 4.80 | 66.7% |" in gpus and "| 1 | 4 | 2 | 1 | 5 | 8.00 | 67.2% |" in gpus
    assert "| - | 1 | 0 | 0 | 0 | — | — |" in gpus
    assert "- ours v5 only: agents, GPUs" in md.split("## Definitions")[1]
    # --json: the same figures, the groups as objects keyed by name
    assert main([str(run), "--json"]) == 0
    assert_figures(json.loads(capsys.readouterr().out), V5_EXPECTED)


def test_v4_report_has_no_per_agent_table(tmp_path):
    run = write_run(tmp_path, tsv(V4_HEADER, *V4_ROWS))
    assert_figures(write_report(run, prices=PRICES), {**V4_EXPECTED, "agents": None, "gpus": None, "by_agent": None, "by_gpu": None})
    md = (run / REPORT_FILE).read_text(encoding="utf-8")
    assert "## Per agent" not in md and "## Per device" not in md and "| agents |" not in md


def test_v5_rows_that_name_no_agent_nor_gpu(tmp_path):
    # a writer from before the parallel campaign, on a v5 header: no tables, one device
    blank = [row.rsplit(" | ", 2)[0] + " |  | " for row in V5_ROWS]
    run = write_run(tmp_path, tsv(V5_HEADER, *blank))
    figures = write_report(run)
    assert_figures(figures, {"agents": 0, "gpus": 0, "by_agent": None, "by_gpu": None,
                             "experiments_per_hour": 14.0, "gpu_duty_pct": 2410 / 1800 * 100})
    assert "## Per agent" not in (run / REPORT_FILE).read_text(encoding="utf-8")


def test_append_row_writes_agent_and_gpu_and_keeps_a_v4_header(tmp_path):
    row = {"commit": "bbbbbbb", "val_bpb": "1.010000", "status": "discard", "iteration": 1, "seed": 7, "runs": 1,
           "agent_input_tokens": 10, "agent": "a2", "gpu": "1"}
    new = tmp_path / "new.tsv"
    results.append_row(new, row)
    assert new.read_text().splitlines()[0] == V5_HEADER
    assert (read_results(new)[0].agent, read_results(new)[0].gpu) == ("a2", "1")
    # a v4 campaign resumed: its header stays, its new rows have no agent and no gpu
    old = tmp_path / "results.tsv"
    old.write_text(tsv(V4_HEADER, V4_ROWS[2]))
    results.append_row(old, row)
    lines = old.read_text().splitlines()
    assert lines[0] == V4_HEADER and [len(line.split("\t")) for line in lines] == [22, 22, 22]
    appended = read_results(old)[1]
    assert appended.fmt == "ours-v4" and appended.agent_input_tokens == 10 and (appended.agent, appended.gpu) == ("", "")
