"""graph/status.py (`python -m graph.status`): a campaign's state from its files alone; and
graph/run.py's LiveUI without a terminal (plain progress lines)."""

import io
import json
import os
import time
from types import SimpleNamespace

import pytest
from rich.console import Console

from graph import results, status
from graph.run import LiveUI
from nanochat.config import HarnessConfig

STEP = "step {:05d} | {:5.1f}% | loss {:.4f} | lr x1.00 | dt 158.3ms | 1,234 tok/s"


def row(iteration, status_, val_bpb, description, run=1, mean="", sigma=""):
    return {"commit": f"abc{iteration}def", "val_bpb": f"{val_bpb:.6f}", "status": status_, "description": description,
            "iteration": iteration, "runs": run, "seed": run, "mean": mean, "sigma": sigma}


@pytest.fixture
def run_dir(tmp_path):
    """A campaign mid-way: baseline (2 runs), a discard, a keep (2 runs), iteration 3 training."""
    d = tmp_path / "night1"
    (d / "logs").mkdir(parents=True)
    (d / "workspace").mkdir()
    HarnessConfig(profile="cpu", time_budget=100).write(d / "workspace" / "harness.json")
    tsv = d / results.RESULTS_FILE
    for r in (row(0, "measure", 1.00, "baseline"), row(0, "keep", 1.02, "baseline", 2, "1.010000"),
              row(1, "discard", 1.05, "wider MLP"), row(2, "measure", 0.98, "higher LR"),
              row(2, "keep", 0.99, "higher LR", 2, "0.985000")):
        results.append_row(tsv, r)
    (d / "logs" / "iter-00002-run-2.log").write_text(STEP.format(900, 100.0, 3.0) + "\n")
    (d / "logs" / "iter-00002-run-2.json").write_text(json.dumps({"status": "ok", "metrics": {"val_bpb": 0.99}}))
    live = d / "logs" / "iter-00003-agent-1.log"
    live.write_text("model: 1.0M params\n" + "".join(STEP.format(n, n / 10, 4 - n / 100) + "\n" for n in range(1, 124)))
    (d / "training.pid").write_text(json.dumps({"pid": os.getpid(), "log": str(live), "started": time.time() - 20}))
    sf = status.StatusFile(d, "night1", max_iterations=20, max_hours=None, patience=3)
    for kind, data in [("phase", {"iteration": 3, "phase": "agent thinking"}), ("stall", {"stall": 1, "patience": 3}),
                       ("verdict", {"best": 0.985}),
                       ("tool", {"iteration": 3, "name": "read_file", "args": {"path": "train.py"}}),
                       ("tool", {"iteration": 3, "name": "apply_patch", "args": {"patch": "x" * 500}}),
                       ("tool", {"iteration": 3, "name": "run_training", "args": {}}),
                       ("phase", {"iteration": 3, "phase": "training"})]:
        sf.event(kind, data)
    return d


def test_status_shows_phase_best_training_tools_and_rows(run_dir, capsys):
    before = sorted(p.name for p in run_dir.rglob("*"))
    assert status.main([str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"campaign  night1: running (pid {os.getpid()}" in out
    assert "phase     iteration 3, training" in out
    assert "best      val_bpb 0.985000 ± 0.0112 (σ per run), mean of 2 run(s), experiment 2 abc2def" in out
    assert "stall     1 experiment(s) without improvement" in out
    assert "after iteration 20 (--max-iterations)" in out and "no STOP file" in out
    # the live log: its last step line, the share of the 100 s budget and what is left of it
    assert "training  logs/iter-00003-agent-1.log: step 123, 12.3% of the budget, loss 2.7700, ETA 1m27s" in out
    assert "read_file(path='train.py')" in out and "run_training()" in out
    assert "x" * 80 not in out                                  # tool arguments are clipped
    assert "  iter  status    val_bpb   agent  description" in out
    assert out.count("higher LR") == 2 and "wider MLP" in out and out.count("baseline") == 2
    assert sorted(p.name for p in run_dir.rglob("*")) == before   # nothing written


def test_status_after_the_run_and_the_campaign_ended(run_dir, capsys):
    (run_dir / "training.pid").unlink()
    os.utime(run_dir / "logs" / "iter-00003-agent-1.log", (1, 1))   # the other log is the newest
    (run_dir / "STOP").touch()
    sf = status.StatusFile.__new__(status.StatusFile)
    sf.path, sf.state = run_dir / status.STATUS_FILE, json.loads((run_dir / status.STATUS_FILE).read_text())
    sf.end("STOP file found in the run dir")
    assert status.main([str(run_dir), "--follow"]) == 0           # ended: --follow returns at once
    out = capsys.readouterr().out
    assert "night1: ended: STOP file found in the run dir" in out
    assert "last run  logs/iter-00002-run-2.log: ok, val_bpb 0.990000 (step 900, 100%)" in out
    assert "STOP file present" in out


def test_a_campaign_whose_process_is_gone(run_dir, capsys):
    state = json.loads((run_dir / status.STATUS_FILE).read_text())
    (run_dir / status.STATUS_FILE).write_text(json.dumps({**state, "pid": 2**22 + 12345}))
    (run_dir / "training.pid").unlink()
    assert status.main([str(run_dir), "--follow"]) == 0
    assert "not running: its process" in capsys.readouterr().out


def test_results_only_campaign(tmp_path, capsys):
    """No status.json (Studio, an older campaign): results and logs still show."""
    results.append_row(tmp_path / results.RESULTS_FILE, row(0, "keep", 1.0, "baseline"))
    assert status.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "state unknown" in out and "best      val_bpb 1.000000 (seed noise not measured)" in out
    assert "training  no run yet" in out


@pytest.mark.parametrize("make", [lambda p: p / "nope", lambda p: p])
def test_no_campaign_is_an_error(tmp_path, capsys, make):
    assert status.main([str(make(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and ("no such directory" in err or "holds no campaign" in err)


def test_status_file_is_replaced_atomically(tmp_path, monkeypatch):
    sf = status.StatusFile(tmp_path, "c")
    replaced = []
    real = os.replace
    monkeypatch.setattr(status.os, "replace", lambda a, b: replaced.append((a, b)) or real(a, b))
    sf.event("phase", {"iteration": 1, "phase": "agent thinking"})
    assert replaced and replaced[0][1] == tmp_path / "status.json" and replaced[0][0] != replaced[0][1]
    assert json.loads((tmp_path / "status.json").read_text())["phase"] == "agent thinking"
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_without_a_terminal_training_progress_is_plain_lines(tmp_path, monkeypatch):
    buf = io.StringIO()
    ui = LiveUI(SimpleNamespace(run_dir=tmp_path), out=Console(file=buf, force_terminal=False, width=200))
    clock = [1000.0]
    monkeypatch.setattr("graph.run.time.monotonic", lambda: clock[0])
    with ui:
        ui.event("phase", {"iteration": 3, "phase": "training"})
        for n in range(1, 201):       # 0.5% a step, 0.1 s a step
            clock[0] += 0.1
            ui.training_line(STEP.format(n, n / 2, 4 - n / 100))
        ui.training_line("not a step line")
        clock[0] += 31                # a slow stretch: a line every 30 s even within one tenth
        ui.training_line(STEP.format(201, 100.0, 1.99))
    lines = buf.getvalue().splitlines()
    assert lines[0] == "iter 3 | training | best - | stall 0"
    progress = [line for line in lines if line.startswith("  training ")]
    assert progress[:3] == ["  training 0% (step 1, loss 3.99)", "  training 10% (step 20, loss 3.80)",
                            "  training 20% (step 40, loss 3.60)"]
    assert len(progress) == 12 and progress[-1] == "  training 100% (step 201, loss 1.99)"
    assert "\x1b" not in buf.getvalue()


def test_a_parallel_campaign_shows_each_agent(run_dir, capsys):
    """Moved under agents/a1 (the running one) with a finished a2 beside it: the campaign's best and
    rows from its results.tsv, a line per agent, and the live run of the one training."""
    parallel = run_dir.parent / "par"
    (parallel / "agents").mkdir(parents=True)
    run_dir.rename(parallel / "agents" / "a1")
    a1 = parallel / "agents" / "a1"
    (a1 / results.RESULTS_FILE).rename(parallel / results.RESULTS_FILE)
    pid = json.loads((a1 / "training.pid").read_text())
    (a1 / "training.pid").write_text(json.dumps({**pid, "log": str(a1 / "logs" / "iter-00003-agent-1.log")}))
    a2 = status.StatusFile(parallel / "agents" / "a2", "par")
    (parallel / "agents" / "a2").mkdir()
    a2.event("phase", {"iteration": 4, "phase": "agent thinking"})
    assert not status.ended(parallel)
    a2.end("reached --max-iterations 4")
    assert status.main([str(parallel)]) == 0
    out = capsys.readouterr().out
    assert "campaign  par: 2 agents, 1 running" in out
    assert "best      val_bpb 0.985000" in out
    assert "agent a1   training, experiment 3" in out and "step 123, 12.3% of the budget" in out
    assert "agent a2   ended: reached --max-iterations 4" in out
    assert "wider MLP" in out
