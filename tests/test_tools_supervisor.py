"""tools/supervisor.py with synthetic train.py scripts: statuses, metric integrity, process hygiene.

The scripts emulate the harness protocol through a small module placed OUTSIDE the workspace
(train.py itself may not mention the result file)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers_tools import make_workspace, snapshot
from tools.supervisor import PID_FILE, kill_stale_runs, run_training, scrub_env, same_number

FAKE_HARNESS = '''
import json, os, sys

def _write(result):
    path = os.environ.get("NANOCHAT_RESULT_FILE")
    if path:
        with open(path, "w") as f:
            json.dump(result, f)

def finish(val_bpb=0.9, **stats):
    print("---")
    print(f"val_bpb:          {val_bpb:.6f}")
    for k, v in stats.items():
        print(f"{k}: {v}")
    _write({"status": "ok", "val_bpb": val_bpb, **stats})

def fail(status, message):
    print(f"FAIL: {status}: {message}")
    _write({"status": status, "error": message})
    sys.exit(3)
'''


@pytest.fixture
def campaign(tmp_path):
    """A factory: workspace whose train.py is `body` after importing the fake harness as H."""
    harness_dir = tmp_path / "fake_harness"
    harness_dir.mkdir()
    (harness_dir / "fakeharness.py").write_text(FAKE_HARNESS)

    def make(body):
        header = f"import sys\nsys.path.insert(0, {str(harness_dir)!r})\nimport fakeharness as H\n"
        ws = make_workspace(tmp_path, train_py=header + textwrap.dedent(body))
        return ws, tmp_path / "run" / "logs"
    return make


def alive(pid) -> bool:
    """Running (a zombie waiting for its reaper does not count)."""
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def group_alive(pgid) -> bool:
    return any(alive(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()
               and _pgid(p) == pgid)


def group_gone(pgid, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _pgid(proc_dir):
    try:
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, ValueError, IndexError):
        return None


def test_ok_run_reports_the_harness_metric(campaign):
    ws, logs = campaign("""
        for step in range(3):
            print(f"step {step}", flush=True)
        H.finish(val_bpb=0.987654321, training_seconds=1.5, num_steps=3)
    """)
    before = snapshot(ws)
    lines = []
    r = run_training(ws, logs_dir=logs, on_progress=lines.append)
    assert r.status == "ok", r
    assert r.val_bpb == pytest.approx(0.987654321) and r.metrics["num_steps"] == 3
    assert r.returncode == 0 and "step 2" in lines
    assert Path(r.log_path).parent == logs and Path(r.log_path).read_text().startswith("step 0")
    assert json.loads(Path(r.log_path).with_suffix(".json").read_text())["status"] == "ok"
    assert "status: ok" in r.to_text() and "val_bpb: 0.987654" in r.to_text()
    assert not (logs.parent / PID_FILE).exists()
    assert snapshot(ws) == before


def test_a_script_that_raises_is_a_crash_with_the_traceback(campaign):
    ws, logs = campaign("""
        print("starting")
        raise ValueError("shapes do not match")
    """)
    before = snapshot(ws)
    r = run_training(ws, logs_dir=logs)
    assert r.status == "crash" and "exit code 1" in r.message
    assert "ValueError: shapes do not match" in r.tail and "last 40 lines" in r.to_text()
    assert snapshot(ws) == before


def test_exit_0_without_summary_is_a_crash(campaign):
    ws, logs = campaign('print("forgot to finish")\n')
    before = snapshot(ws)
    r = run_training(ws, logs_dir=logs)
    assert r.status == "crash"
    assert r.message == "train.py exited without the harness's summary: it must end by calling H.finish(...)."
    assert snapshot(ws) == before


def test_nan_is_reported_by_the_harness(campaign):
    ws, logs = campaign('H.fail("nan", "loss is nan at step 7")\n')
    before = snapshot(ws)
    r = run_training(ws, logs_dir=logs)
    assert r.status == "nan" and r.returncode == 3 and "loss is nan at step 7" in r.message
    assert r.metrics == {}
    assert snapshot(ws) == before


def test_the_harness_can_mark_a_run_invalid(campaign):
    ws, logs = campaign('H.fail("invalid", "the model looks at future tokens")\n')
    r = run_training(ws, logs_dir=logs)
    assert r.status == "invalid" and "future tokens" in r.message and r.returncode == 3


def test_out_of_memory(campaign):
    ws, logs = campaign('raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")\n')
    r = run_training(ws, logs_dir=logs)
    assert r.status == "oom" and "smaller batch" in r.message


def test_a_printed_summary_line_is_refused_before_running(campaign):
    ws, logs = campaign("""
        print("val_bpb: 0.1")
        H.finish(val_bpb=0.9)
    """)
    before = snapshot(ws)
    r = run_training(ws, logs_dir=logs)
    assert r.status == "invalid" and r.returncode is None
    assert "was not run" in r.message and "val_bpb:" in r.message
    assert snapshot(ws) == before


def test_a_forged_summary_line_that_slips_past_the_check_makes_the_run_invalid(campaign):
    ws, logs = campaign("""
        H.finish(val_bpb=0.9)
        print("val" + "_bpb: 0.100000")
    """)
    before = snapshot(ws)
    r = run_training(ws, logs_dir=logs)
    assert r.status == "invalid" and "val_bpb: 0.100000" in r.message and "0.900000" in r.message
    assert r.metrics == {} and r.val_bpb is None
    assert snapshot(ws) == before


def test_syntax_error_is_not_run(campaign):
    ws, logs = campaign("def broken(:\n")
    r = run_training(ws, logs_dir=logs)
    assert r.status == "crash" and "does not compile" in r.message and r.returncode is None


def test_a_hanging_script_is_killed_with_its_whole_group(campaign):
    ws, logs = campaign("""
        import os, subprocess, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(f"pids {os.getpid()} {child.pid}", flush=True)
        time.sleep(600)
    """)
    before = snapshot(ws)
    start = time.monotonic()
    r = run_training(ws, logs_dir=logs, wall_limit=3)
    assert r.status == "timeout" and "wall limit of 3 s" in r.message
    assert time.monotonic() - start < 15
    pid, child = map(int, Path(r.log_path).read_text().split()[1:3])
    time.sleep(0.2)
    assert not alive(pid) and not alive(child)
    assert not group_alive(pid)
    assert group_gone(pid)  # nothing left in the group, not even a zombie (init reaps those)
    assert not (logs.parent / PID_FILE).exists()
    assert snapshot(ws) == before


def test_the_child_sees_no_secrets_and_the_campaign_gpu(campaign, monkeypatch):
    secrets = {"OPENAI_API_KEY": "sk-1", "DEEPSEEK_API_KEY": "sk-2", "ANTHROPIC_API_KEY": "sk-3",
               "HF_TOKEN": "hf", "GITHUB_TOKEN": "gh", "MY_SECRET_SAUCE": "x", "AWS_SECRET_ACCESS_KEY": "a",
               "OPENAI_BASE_URL": "u", "DEEPSEEK_MODEL": "m", "LANGSMITH_PROJECT": "p",
               "LANGCHAIN_TRACING_V2": "true", "DB_PASSWORD": "pw"}
    for k, v in secrets.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("HARMLESS_SETTING", "kept")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    ws, logs = campaign("""
        import os
        for k in sorted(os.environ):
            print("ENV", k, flush=True)
        print("GPU", os.environ.get("CUDA_VISIBLE_DEVICES"))
        H.finish(val_bpb=1.0)
    """)
    r = run_training(ws, logs_dir=logs, gpu=3)
    assert r.status == "ok", r
    seen = {line.split()[1] for line in Path(r.log_path).read_text().splitlines() if line.startswith("ENV ")}
    assert not seen & set(secrets), seen & set(secrets)
    assert "HARMLESS_SETTING" in seen and "NANOCHAT_RESULT_FILE" in seen and "NANOCHAT_HARNESS" in seen
    assert "GPU 3" in Path(r.log_path).read_text()


def test_scrub_env_patterns():
    env = {"OPENAI_API_KEY": 1, "openai_api_key": 1, "X_TOKEN": 1, "TOP_SECRET_X": 1, "LANGCHAIN_API": 1,
           "PATH": 1, "HOME": 1, "TOKENIZERS_PARALLELISM": 1, "CUDA_VISIBLE_DEVICES": 1}
    assert set(scrub_env(env)) == {"PATH", "HOME", "TOKENIZERS_PARALLELISM", "CUDA_VISIBLE_DEVICES"}


def test_same_number():
    assert same_number("0.900000", 0.9) and same_number("0.987654", 0.987654321)
    assert not same_number("0.100000", 0.9) and not same_number("abc", 0.9) and not same_number("nan", 0.9)


CAMPAIGN = """
import sys
sys.path.insert(0, {root!r})
from tools.workspace import Workspace
from tools.supervisor import run_training
run_training(Workspace.open({ws!r}, harness_source=None), logs_dir={logs!r}, wall_limit=120)
"""


def test_training_dies_with_the_campaign_and_stale_runs_are_killed(campaign):
    """kill -9 of the campaign: train.py dies at once (parent-death signal); its own children
    survive it, and kill_stale_runs(run_dir) (what a resumed campaign calls) finds and kills them."""
    ws, logs = campaign("""
        import os, subprocess, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(f"pids {os.getpid()} {child.pid}", flush=True)
        time.sleep(600)
    """)
    run_dir = logs.parent
    root = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen([sys.executable, "-c", CAMPAIGN.format(root=root, ws=str(ws.root), logs=str(logs))])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            logs_found = list(logs.glob("*.log")) if logs.exists() else []
            if logs_found and logs_found[0].read_text().startswith("pids"):
                break
            time.sleep(0.1)
        pid, child = map(int, logs_found[0].read_text().split()[1:3])
        info = json.loads((run_dir / PID_FILE).read_text())
        assert info["pid"] == pid and alive(pid) and alive(child)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid), "train.py outlived the campaign"
        assert alive(child)  # a grandchild is not covered by the parent-death signal...
        assert kill_stale_runs(run_dir) == [child]  # ...but the resumed campaign kills it
        time.sleep(0.2)
        assert not alive(child) and not (run_dir / PID_FILE).exists()
        assert kill_stale_runs(run_dir) == []
    finally:
        proc.kill()
