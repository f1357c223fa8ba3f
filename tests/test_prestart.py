"""Pre-started training processes (nanochat/prestart.py, tools/supervisor.py's spare): a run served
by a spare behaves like a plain one (sandboxed, scored apart), its clock starts at `go`, and a spare
that cannot serve the run (another harness, dead) is replaced."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers_runs import make_run, no_run_processes_left, tiny_train
from helpers_tools import snapshot
from nanochat import prepare
from tools import supervisor
from tools.supervisor import RUN_MARKER_ENV, discard_spare, run_training, start_spare

ROOT = Path(__file__).resolve().parent.parent

# train.py reports who ran it: its run (the sandbox's marker), its run clock, its bytecode settings
FACTS = f"""
import json, os, sys
print("facts " + json.dumps({{"run": os.environ.get("{RUN_MARKER_ENV}"), "started": os.environ.get("NANOCHAT_STARTED_AT"),
                             "prefix": sys.pycache_prefix, "nobytecode": os.environ.get("PYTHONDONTWRITEBYTECODE"),
                             "seed": H.seed}}),
      flush=True)
"""


@pytest.fixture
def ws(tmp_path, cpu_data):
    ws, _ = make_run(tmp_path, cpu_data, tiny_train(FACTS))
    yield ws
    discard_spare()


def facts(result) -> dict:
    line = next(l for l in Path(result.log_path).read_text().splitlines() if l.startswith("facts "))
    return json.loads(line[len("facts "):])


@pytest.mark.slow(22)
def test_the_next_run_is_served_by_the_spare_and_counts_from_go_and_a_stale_spare_is_replaced(ws, tmp_path):
    logs = tmp_path / "run" / "logs"
    before = snapshot(ws)
    first = run_training(ws, logs_dir=logs, prestart=True, seed=11)
    assert first.status == "ok", first
    assert facts(first)["seed"] == 11 and first.seed == 11                # a spare started for this run
    assert Path(first.log_path).read_text().startswith("[prestart]")    # started then, told to go at once
    assert supervisor._spare is None              # none after a run: the campaign asks when another will follow
    start_spare(ws, logs_dir=logs)
    spare = supervisor._spare
    assert spare is not None and spare.proc.poll() is None               # the next run's sandbox, warming up
    start_spare(ws, logs_dir=logs)
    assert supervisor._spare is spare                                    # a live spare for this harness is kept
    time.sleep(1.0)
    asked = time.time()
    second = run_training(ws, logs_dir=logs, prestart=True, seed=12345)
    assert second.status == "ok" and second.val_bpb == first.val_bpb, second
    seen = facts(second)
    assert seen["seed"] == 12345                                         # the seed came with `go`
    assert seen["run"] == spare.marker                                   # the spare ran it
    assert asked <= float(seen["started"]) <= time.time()               # its clock started at go, not at spawn
    assert seen["nobytecode"] == "1"                                     # nothing can be planted beside a source
    assert snapshot(ws) == before                                        # the workspace is untouched
    assert supervisor._spare is None

    # a spare for another harness, or a dead one, is replaced
    start_spare(ws, logs_dir=logs)
    stale = supervisor._spare
    harness = json.loads((ws.root / "harness.json").read_text())
    (ws.root / "harness.json").write_text(json.dumps({**harness, "time_budget": 7}))
    run = run_training(ws, logs_dir=logs, prestart=True)
    assert run.status == "ok" and facts(run)["run"] != stale.marker and stale.proc.poll() is not None
    start_spare(ws, logs_dir=logs)
    dead = supervisor._spare
    os.killpg(dead.proc.pid, signal.SIGKILL)
    dead.proc.wait()
    run = run_training(ws, logs_dir=logs, prestart=True)
    assert run.status == "ok" and facts(run)["run"] != dead.marker

    start_spare(ws, logs_dir=logs)
    next_spare = supervisor._spare
    discard_spare()
    assert supervisor._spare is None and next_spare.proc.poll() is not None
    assert no_run_processes_left(logs.parent)


@pytest.mark.slow(15)
def test_a_plain_run_leaves_no_spare_and_where_torch_has_no_bytecode_compiles_it_privately(ws, tmp_path,
                                                                                          monkeypatch):
    """Without prestart the run's clock is its process's and no spare is left. And never a shared
    bytecode cache: a .pyc planted there would be loaded by later runs."""
    monkeypatch.setattr(supervisor, "torch_has_bytecode", lambda: False)
    run = run_training(ws, logs_dir=tmp_path / "run" / "logs", seed=7)
    assert run.status == "ok", run
    assert facts(run)["started"] is None and facts(run)["seed"] == 7
    assert supervisor._spare is None
    assert facts(run)["prefix"] == "/tmp/pycache"


def test_a_prestarted_process_runs_nothing_without_go(tmp_path):
    (tmp_path / "train.py").write_text("open('ran', 'w').write('yes')\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "nanochat.prestart", "train.py"], cwd=tmp_path, env=env,
                         input=b"", capture_output=True, timeout=120)
    assert out.returncode == 0 and not (tmp_path / "ran").exists()
    out = subprocess.run([sys.executable, "-m", "nanochat.prestart", "train.py"], cwd=tmp_path, env=env,
                         input=f"go {time.time()}\n".encode(), capture_output=True, timeout=120)
    assert out.returncode == 0 and (tmp_path / "ran").read_text() == "yes"
    assert out.stdout.decode().startswith("[prestart] warm-up")


def test_the_harness_clock_starts_when_the_run_was_asked_for(monkeypatch):
    monkeypatch.setenv(prepare.STARTED_ENV, "1700000000.5")
    assert prepare._run_start_time() == 1700000000.5
    monkeypatch.setenv(prepare.STARTED_ENV, "soon")   # garbage: the process start, as without prestart
    assert abs(prepare._run_start_time() - prepare._process_start_time()) < 1e-6


@pytest.mark.parametrize("profile, sets_up_cuda", [("cpu", False), ("h100", True)])
def test_the_warm_up_sets_up_cuda_only_for_a_gpu_profile(tmp_path, monkeypatch, profile, sets_up_cuda):
    """A cpu-profile run on a machine with a GPU neither touches CUDA nor says it did."""
    import torch
    from nanochat import prestart

    class CudaTouched(Exception):
        pass

    def touched():
        raise CudaTouched

    (tmp_path / "harness.json").write_text(json.dumps({"profile": profile, "data": "builtin"}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NANOCHAT_HARNESS", raising=False)
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):     # use_compile_cache sets them: undo it
        monkeypatch.setenv(name, str(tmp_path / name))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)    # a GPU is visible
    monkeypatch.setattr(torch.cuda, "init", touched)
    if sets_up_cuda:
        with pytest.raises(CudaTouched):
            prestart.warm_up()
    else:
        assert prestart.warm_up() is False      # so the log says "warm-up (imports)", no CUDA
