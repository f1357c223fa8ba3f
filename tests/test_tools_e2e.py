"""End to end on the CPU: a workspace from the real template and harness, one short supervised run."""

import pytest

from tools import Workspace, make_tools, run_training


@pytest.mark.slow
def test_real_template_trains_and_reports_a_harness_metric(tmp_path, cpu_data):
    from nanochat.prepare import HarnessConfig, render_train_py
    config, _ = cpu_data  # the tiny local corpus, already prepared in the test cache
    pinned = HarnessConfig(profile="cpu", data=config.data, time_budget=1, cache_dir=config.cache_dir)
    ws = Workspace.create(tmp_path / "ws", pinned, render_train_py("cpu"))
    logs = tmp_path / "run" / "logs"
    progress = []

    r = run_training(ws, logs_dir=logs, on_progress=progress.append)

    assert r.status == "ok", r.to_text()
    assert isinstance(r.val_bpb, float) and 0 < r.val_bpb < 20
    assert r.metrics["num_steps"] > 0 and r.metrics["training_seconds"] >= 1
    assert any(line.startswith("step ") for line in progress)
    assert f"val_bpb:            {r.val_bpb:.6f}" in (logs / r.log_path.rsplit("/", 1)[1]).read_text()
    assert not ws.is_dirty()

    read_file, *_, read_metrics = make_tools(ws, logs_dir=logs)
    assert "The frozen harness" in read_file.invoke({"path": "prepare.py"})
    assert f"val_bpb: {r.val_bpb:.6f}" in read_metrics.invoke({})
