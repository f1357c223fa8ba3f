"""nanochat.bench: log parsing and figures (no training run), constant overrides."""

import json

import pytest

from nanochat import bench, prepare

LOG = """model: 50.3M params, depth 8, dim 512, windows [1024, 2048]
batch: 524,288 tokens/step = 64 rows x 2048 x 4 accum
budget: 20s of training on cuda, after 2 untimed steps (setup took 13.5s)
step 00001 |   0.0% | loss 9.0115 | lr x1.00 | dt 6355.5ms | 82,493 tok/s
step 00002 |   0.0% | loss 9.0589 | lr x1.00 | dt 500.0ms | 1,048,576 tok/s
step 00003 |   1.8% | loss 9.0829 | lr x1.00 | dt 400.0ms | 1,310,720 tok/s
step 00004 |   3.7% | loss 9.0137 | lr x1.00 | dt 420.0ms | 1,248,304 tok/s
step 00005 |   5.6% | loss 8.8466 | lr x1.00 | dt 410.0ms | 1,278,751 tok/s
---
val_bpb:            1.792709
"""


def test_parse_log_reads_every_step_and_the_untimed_count():
    log = bench.parse_log(LOG)
    assert log["untimed"] == 2 and log["tokens_per_step"] == 524288
    assert [s for s, _ in log["steps"]] == [1, 2, 3, 4, 5]
    assert log["steps"][0][1] == pytest.approx(6355.5)


def test_figures_use_timed_steps_only():
    result = {"status": "ok", "val_bpb": 1.79, "training_seconds": 1.23, "total_seconds": 20.0,
              "startup_seconds": 9.0, "eval_seconds": 5.0, "mfu_percent": 30.0}
    f = bench.figures(bench.parse_log(LOG), result)
    assert f["timed_steps"] == 3                     # steps 3..5; 1 and 2 are untimed
    assert f["step_p50_ms"] == pytest.approx(410.0)
    assert f["step_p90_ms"] == pytest.approx(418.0)  # linear interpolation between 410 and 420
    assert f["p90_over_p50"] == pytest.approx(418.0 / 410.0, abs=1e-3)
    assert f["tok_per_s"] == round(524288 / 0.410)
    assert f["overhead_s"] == pytest.approx(18.8)
    assert f["mfu_steady"] == pytest.approx(30.0 * 410.0 / 410.0, abs=0.01)   # mean of 400/410/420 = p50
    assert f["first_step_s"] == pytest.approx(6.4)


def test_override_constants_keeps_comments_and_refuses_unknown_names():
    text = prepare.render_train_py("cpu")
    out = bench.override_constants(text, {"MAX_STEPS": "7", "COMPILE": "False"})
    assert "\nMAX_STEPS = 7 " in out and "\nCOMPILE = False " in out
    assert out.count("# 0: train for the time budget") == 1
    with pytest.raises(SystemExit):
        bench.override_constants(text, {"NO_SUCH_CONSTANT": "1"})


def test_compare_gives_mean_sigma_and_welchs_test_against_the_first_file():
    from scipy.stats import t as student
    rows = [{"label": "a", "status": "ok", "val_bpb": 1.0, "step_p50_ms": 300.0},
            {"label": "b", "status": "ok", "val_bpb": 0.9, "step_p50_ms": 310.0},
            {"label": "a", "status": "ok", "val_bpb": 1.2, "step_p50_ms": 302.0},
            {"label": "b", "status": "ok", "val_bpb": 1.0, "step_p50_ms": 312.0},
            {"label": "b", "status": "crash"}]                           # a failed run counts in no figure
    a, b = bench.compare(rows, ["a", "b"])
    assert a["val_bpb_mean"] == pytest.approx(1.1) and a["val_bpb_sd"] == pytest.approx(0.02 ** 0.5)
    assert b["step_p50_ms_mean"] == pytest.approx(311.0) and "delta_val_bpb" not in a
    assert b["delta_val_bpb"] == pytest.approx(-0.15)
    # Welch by hand: variances 0.02 and 0.005 over 2 runs each
    se2 = 0.02 / 2 + 0.005 / 2
    df = se2 ** 2 / ((0.02 / 2) ** 2 + (0.005 / 2) ** 2)
    assert b["p_value"] == pytest.approx(2 * student.sf(0.15 / se2 ** 0.5, df))


@pytest.mark.slow
def test_side_by_side_runs_each_file_on_the_same_seeds_and_reports_the_difference(tmp_path, cpu_data, capsys):
    from pathlib import Path
    fixture = (Path(__file__).parent / "fixtures" / "noisy_train.py").read_text()
    (tmp_path / "plain.py").write_text(fixture)
    (tmp_path / "better.py").write_text(fixture.replace("base = -1.0", "base = 1.0"))   # w 0.73: ~0.2 bpb lower
    config, _ = cpu_data
    code = bench.main(["--train", str(tmp_path / "plain.py"), "--train", str(tmp_path / "better.py"),
                       "--profile", "cpu", "--data", config.data, "--time-budget", "1", "--seeds", "2",
                       "--no-prestart"])
    out = capsys.readouterr().out
    assert code == 0, out
    runs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(r["label"], r["seed"]) for r in runs] == [("plain", 1), ("better", 1), ("plain", 2), ("better", 2)]
    table = out[out.index("mean ± σ over seeds"):].splitlines()
    better = next(line for line in table if line.startswith("better |"))
    assert float(better.split(" | ")[-2]) < -0.1          # Δ val_bpb vs plain
