"""Pre-started training processes (nanochat/prestart.py, tools/supervisor.py's spare) and the
bytecode cache: a run served by a spare behaves like a plain one, its clock starts at `go`, and a
spare that cannot serve the run (another harness, dead) is replaced."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers_tools import make_workspace, snapshot
from nanochat import prepare
from tools import supervisor
from tools.supervisor import discard_spare, run_training

ROOT = Path(__file__).resolve().parent.parent

# train.py reports who ran it: its pid, its run clock, its bytecode cache
TRAIN = '''
import json, os, sys
print("facts " + json.dumps({"pid": os.getpid(), "started": os.environ.get("NANOCHAT_STARTED_AT"),
                             "prefix": sys.pycache_prefix, "nobytecode": os.environ.get("PYTHONDONTWRITEBYTECODE")}))
sys.path.insert(0, {harness_dir!r})
import fakeharness as H
H.finish(val_bpb=1.25, training_seconds=1.0, num_steps=1)
'''
FAKE_HARNESS = '''
import json, os
def finish(val_bpb, **stats):
    print("---")
    print(f"val_bpb:          {val_bpb:.6f}")
    with open(os.environ["NANOCHAT_RESULT_FILE"], "w") as f:
        json.dump({"status": "ok", "val_bpb": val_bpb, **stats}, f)
'''


@pytest.fixture
def ws(tmp_path, cache_dir):
    harness_dir = tmp_path / "fake_harness"
    harness_dir.mkdir()
    (harness_dir / "fakeharness.py").write_text(FAKE_HARNESS)
    yield make_workspace(tmp_path, train_py=TRAIN.replace("{harness_dir!r}", repr(str(harness_dir))))
    discard_spare()


def facts(result) -> dict:
    line = next(l for l in Path(result.log_path).read_text().splitlines() if l.startswith("facts "))
    return json.loads(line[len("facts "):])


def alive(pid) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def gone(pid, timeout=10.0) -> bool:
    end = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < end:
        time.sleep(0.05)
    return not alive(pid)


def test_the_next_run_is_served_by_the_spare_and_counts_from_go(ws, tmp_path, cache_dir):
    logs = tmp_path / "run" / "logs"
    before = snapshot(ws)
    first = run_training(ws, logs_dir=logs, prestart=True)
    assert first.status == "ok" and first.val_bpb == 1.25, first
    assert Path(first.log_path).read_text().startswith("[prestart]")    # started then, told to go at once
    spare = supervisor._spare
    assert spare is not None and alive(spare.proc.pid)                  # the next run's process, warming up
    time.sleep(1.0)
    asked = time.time()
    second = run_training(ws, logs_dir=logs, prestart=True)
    assert second.status == "ok" and second.val_bpb == 1.25, second
    seen = facts(second)
    assert seen["pid"] == spare.proc.pid                                # the spare ran it
    assert asked <= float(seen["started"]) <= time.time()               # its clock started at go, not at spawn
    env = prepare.HarnessConfig.read(ws.root / "harness.json").python_env({"PYTHONDONTWRITEBYTECODE": "1"})
    assert (seen["prefix"], seen["nobytecode"]) == (env.get("PYTHONPYCACHEPREFIX"), env.get("PYTHONDONTWRITEBYTECODE"))
    assert snapshot(ws) == before                                       # no __pycache__ in the workspace
    next_spare = supervisor._spare
    discard_spare()
    assert supervisor._spare is None and gone(next_spare.proc.pid)


def test_a_spare_for_another_harness_or_a_dead_spare_is_replaced(ws, tmp_path):
    logs = tmp_path / "run" / "logs"
    assert run_training(ws, logs_dir=logs, prestart=True).status == "ok"
    stale = supervisor._spare
    harness = json.loads((ws.root / "harness.json").read_text())
    (ws.root / "harness.json").write_text(json.dumps({**harness, "time_budget": 7}))
    run = run_training(ws, logs_dir=logs, prestart=True)
    assert run.status == "ok" and facts(run)["pid"] != stale.proc.pid and gone(stale.proc.pid)

    dead = supervisor._spare
    os.kill(dead.proc.pid, signal.SIGKILL)
    assert gone(dead.proc.pid)
    run = run_training(ws, logs_dir=logs, prestart=True)
    assert run.status == "ok" and facts(run)["pid"] != dead.proc.pid


def test_without_prestart_no_spare_is_left(ws, tmp_path):
    run = run_training(ws, logs_dir=tmp_path / "run" / "logs")
    assert run.status == "ok" and facts(run)["started"] is None
    assert supervisor._spare is None


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


def test_training_processes_cache_bytecode_under_the_campaign_cache_where_site_packages_has_none(tmp_path):
    config = prepare.HarnessConfig(profile="cpu", cache_dir=str(tmp_path / "c"))
    env = {"PYTHONDONTWRITEBYTECODE": "1", "KEEP": "x"}
    assert config.python_env(env, site_has_bytecode=False) == {"KEEP": "x", "PYTHONPYCACHEPREFIX": str(tmp_path / "c" / "pycache")}
    assert config.python_env(env, site_has_bytecode=True) == env   # a normal install: its own bytecode is used
