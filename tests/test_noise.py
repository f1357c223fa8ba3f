"""graph/noise.py: the pooled seed noise, the keep test's every branch, the seeds, and the
judge's error rates in a simulation with a fixed generator (scripts/judge_simulation.py)."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from graph.noise import DISCARD, KEEP, MEASURE, Noise, critical_t, decide, run_seed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import judge_simulation  # noqa: E402


def test_pooled_sigma_by_hand():
    # groups: [1, 3] (squares 2, df 1), [2, 2, 5] (mean 3: 1 + 1 + 4 = 6, df 2), [9] (nothing)
    noise = Noise.pooled([[1.0, 3.0], [2.0, 2.0, 5.0], [9.0]])
    assert noise.df == 3 and noise.runs == 5
    assert noise.sigma == pytest.approx(math.sqrt(8 / 3))
    assert Noise.pooled([[1.0], [2.0]]) == Noise(None, 0, 0)


def test_critical_t_is_students_and_none_without_df():
    assert critical_t(0.975, 2) == pytest.approx(4.3027, abs=1e-4)
    assert critical_t(0.975, 1000) == pytest.approx(1.962, abs=1e-3)
    assert critical_t(0.975, 0) == math.inf


def test_seeds_differ_per_run_and_repeat_on_resume():
    seeds = {run_seed("c", i, r) for i in range(50) for r in range(1, 4)}
    assert len(seeds) == 150 and all(0 <= s < 2**31 for s in seeds)
    assert run_seed("c", 3, 2) == run_seed("c", 3, 2) != run_seed("other", 3, 2)


BEST = [1.00, 1.02, 0.98]                     # mean 1.00
NOISE = Noise(0.02, 10, 12)


def test_a_first_run_that_does_not_beat_the_best_mean_is_discarded_at_once():
    d = decide([1.01], BEST, NOISE, runs=3)
    assert d.status == DISCARD and "within noise of the best" in d.reason and "0.5σ" in d.reason
    far = decide([1.20], BEST, NOISE, runs=3)
    assert far.status == DISCARD and "within noise" not in far.reason and "10.0σ" in far.reason


def test_a_first_run_below_the_best_mean_is_confirmed_with_fresh_seeds():
    d = decide([0.99], BEST, NOISE, runs=3)
    assert d.status == MEASURE and "confirming with 2 more seed(s)" in d.reason
    # one lucky run is below the best single run (0.98) by far, and still only a candidate
    assert decide([0.90], BEST, NOISE, runs=3).status == MEASURE


def test_confirmation_stops_once_the_mean_no_longer_beats_the_best():
    d = decide([0.99, 1.03], BEST, NOISE, runs=3)
    assert d.status == DISCARD and d.reason.startswith("within noise: after 2 runs") and "no longer beats" in d.reason


def test_confirmation_stops_when_the_mean_could_not_pass_the_test():
    # Δ 0.0075 held over 3 runs: t = 0.0075 / (0.02 * sqrt(2/3)) = 0.46 < half of t(0.975, 11) = 2.20
    d = decide([0.99, 0.995], BEST, NOISE, runs=3)
    assert d.status == DISCARD and "too little to pass" in d.reason
    assert d.t == pytest.approx(0.0075 / (0.02 * math.sqrt(2 / 3)))
    # Δ 0.0275: t would be 1.68, over half of 2.20: one more run
    assert decide([0.97, 0.985], BEST, NOISE, runs=3).status == MEASURE


def test_the_test_keeps_only_a_gain_beyond_the_noise():
    # Δ = 0.05, se = 0.02 * sqrt(2/3) = 0.01633, t = 3.06 >= t(0.975, 10) = 2.23
    keep = decide([0.95, 0.94, 0.96], BEST, NOISE, runs=3)
    assert keep.status == KEEP and keep.t == pytest.approx(0.05 / (0.02 * math.sqrt(2 / 3)))
    assert keep.reason.startswith("confirmed:") and "df 10" in keep.reason
    # Δ = 0.02: t = 1.22 < 2.23
    near = decide([0.98, 0.97, 0.99], BEST, NOISE, runs=3)
    assert near.status == DISCARD and near.reason.startswith("within noise:")
    # the same gain with little pooled evidence (df 2: t(0.975) = 4.30) is not enough either
    assert decide([0.95, 0.94, 0.96], BEST, Noise(0.02, 2, 3), runs=3).status == DISCARD


def test_min_improvement_applies_on_top_of_the_test():
    d = decide([0.95, 0.94, 0.96], BEST, NOISE, runs=3, min_improvement=0.06)
    assert d.status == DISCARD and "below --min-improvement" in d.reason


def test_one_noise_run_is_the_old_single_run_judge_and_says_so():
    d = decide([0.999], BEST, Noise(None, 0), runs=1)
    assert d.status == KEEP and "noise not measured" in d.reason


def test_runs_that_never_differ_keep_any_real_gain():
    assert decide([0.9, 0.9, 0.9], [1.0, 1.0, 1.0], Noise(0.0, 4, 6), runs=3).status == KEEP


def test_the_noise_aware_judge_keeps_a_tenth_of_the_flukes_the_old_one_keeps():
    """100-experiment null campaigns, fixed generator: the figures docs/NOISE.md reports, at a
    smaller scale. Bounds are loose (Monte Carlo), but far apart: the old judge keeps ~4."""
    draw = judge_simulation.Draw(np.random.default_rng(0), 0.06)
    f = judge_simulation.figures(draw, noise_runs=3, campaigns=120)
    assert f["false_keeps_per_100_old"] > 3.0
    assert f["false_keeps_per_100_new"] < 1.0
    assert f["detect_4sigma_first_new"] > 0.85 and f["detect_2sigma_first_new"] > 0.3
    assert 10 < f["confirm_share_pct"] < 50


def test_the_agent_history_shows_verdicts_with_mean_sigma_n_and_within_noise(tmp_path):
    from graph import results
    from graph.offline import parse_history
    tsv = tmp_path / "results.tsv"
    rows = [  # iteration, status, val_bpb, runs, mean, sigma, description, reason
        (0, "measure", 1.01, 1, 1.01, "", "baseline", ""),
        (0, "keep", 0.99, 2, 1.00, 0.014142, "baseline", "baseline: mean of 2 run(s)"),
        (1, "measure", 0.98, 1, 0.98, 0.014142, "MATRIX_LR: 0.04 -> 0.06", "beats the best mean"),
        (1, "discard", 1.00, 2, 0.99, 0.012910, "MATRIX_LR: 0.04 -> 0.06", "within noise: after 2 runs ..."),
        (2, "discard", 1.30, 1, 1.30, 0.012910, "DEPTH: 4 -> 8", "does not beat the best mean"),
    ]
    for it, status, bpb, runs, mean, sigma, description, reason in rows:
        results.append_row(tsv, {"iteration": it, "status": status, "val_bpb": f"{bpb:.6f}", "runs": runs,
                                 "mean": f"{mean:.6f}", "sigma": sigma, "description": description, "reason": reason})
    text = results.history_table(tsv)
    lines = text.splitlines()
    assert len(lines) == 5                               # header, 3 verdicts (no measure row), σ line
    assert "1.000000 ± 0.0129 (n=2)" in lines[1] and "keep" in lines[1]
    assert "0.990000 (n=2)" in lines[2] and "[within noise of the best]" in lines[2]
    assert "1.300000" in lines[3] and "within noise" not in lines[3]
    assert lines[-1] == "(seed noise: σ = 0.0129 per run)"
    assert [(p.name, p.status) for p in parse_history(text)] == [("MATRIX_LR", "discard"), ("DEPTH", "discard")]


def test_the_history_lists_every_experiment_the_older_ones_short(tmp_path):
    """Past HISTORY_ROWS, older experiments stay in the prompt on a short line (not a count), and
    in a campaign of several agents each line says whose it was."""
    from graph import results
    from graph.offline import parse_history
    tsv = tmp_path / "results.tsv"
    results.append_row(tsv, {"iteration": 0, "status": "keep", "val_bpb": "1.000000", "runs": 1, "mean": "1.000000",
                             "description": "baseline", "agent": "a1"})
    for i in range(1, 46):
        results.append_row(tsv, {"iteration": i, "status": "discard", "val_bpb": f"{1 + i / 100:.6f}", "runs": 1,
                                 "mean": f"{1 + i / 100:.6f}", "agent": f"a{1 + i % 2}",
                                 "description": f"MATRIX_LR: 0.04 -> 0.{i:02d} " + "because " * 20})
    lines = results.history_table(tsv, limit=40).splitlines()
    assert len(lines) == 1 + 46 and "not shown" not in "\n".join(lines)
    assert lines[2].startswith("   1 | 1.010000") and lines[2].endswith("…") and len(lines[2]) < 110
    assert "[agent" not in lines[2]                                   # short lines carry no notes
    assert lines[-1].startswith("  45 |") and lines[-1].endswith("[agent a2]") and "because " * 20 in lines[-1]
    assert len(parse_history("\n".join(lines))) == 45                 # the offline researcher reads them all
