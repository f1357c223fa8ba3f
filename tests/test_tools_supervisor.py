"""tools/supervisor.py: a sandboxed run of a real (tiny) train.py on the real harness, scored apart.
Statuses, what the model is told, the bounded log, and process hygiene."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers_runs import log_text, make_run, no_run_processes_left, processes_of_runs, saved, tiny_train
from helpers_tools import snapshot
from tools.supervisor import PID_FILE, LogWriter, RunResult, read_tail, run_training

pytestmark = pytest.mark.slow


def test_an_ok_run_is_scored_by_the_harness_and_leaves_the_workspace_as_it_was(tmp_path, cpu_data):
    ws, logs = make_run(tmp_path, cpu_data, tiny_train('print("step 1 | hello", flush=True)'))
    before = snapshot(ws)
    lines = []
    r = run_training(ws, logs_dir=logs, on_progress=lines.append)
    assert r.status == "ok", r
    assert 2 < r.val_bpb < 30 and r.metrics["num_steps"] == 1 and r.metrics["eval_seconds"] > 0
    assert r.sandboxed and "step 1 | hello" in lines
    log = log_text(r)
    assert log.startswith("step 1 | hello") and f"val_bpb:            {r.val_bpb:.6f}" in log
    assert saved(r)["status"] == "ok"
    assert "status: ok" in r.to_text() and f"val_bpb: {r.val_bpb:.6f}" in r.to_text()
    assert not (logs.parent / PID_FILE).exists() and no_run_processes_left(logs.parent)
    assert snapshot(ws) == before


@pytest.mark.parametrize("body,status,words", [
    ('raise ValueError("boom")', "crash", "ValueError: boom"),
    ('H.fail("nan", "loss is nan at step 3")', "nan", "loss is nan at step 3"),
    ('raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")', "oom", "out of GPU memory"),
])
def test_failures_are_classified_with_the_reason(tmp_path, cpu_data, body, status, words):
    ws, logs = make_run(tmp_path, cpu_data, tiny_train(body))
    r = run_training(ws, logs_dir=logs)
    assert r.status == status, r
    assert words in r.to_text() and r.val_bpb is None


def test_exit_0_without_handing_the_model_over_is_a_crash(tmp_path, cpu_data):
    ws, logs = make_run(tmp_path, cpu_data, tiny_train('print("done")', finish=False))
    r = run_training(ws, logs_dir=logs)
    assert r.status == "crash" and "H.finish" in r.message


def test_a_printed_summary_line_and_a_syntax_error_are_refused_before_running(tmp_path, cpu_data):
    ws, logs = make_run(tmp_path, cpu_data, tiny_train('print("val_bpb: 0.5")'))
    r = run_training(ws, logs_dir=logs)
    assert r.status == "invalid" and "val_bpb:" in r.message and r.returncode is None
    ws2, logs2 = make_run(tmp_path, cpu_data, "def broken(:\n", name="run2")
    r2 = run_training(ws2, logs_dir=logs2)
    assert r2.status == "crash" and "does not compile" in r2.message and r2.returncode is None


def test_a_hanging_run_is_killed_at_the_wall_limit_with_every_process(tmp_path, cpu_data):
    ws, logs = make_run(tmp_path, cpu_data, tiny_train('''
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print("sleeping", flush=True)
        time.sleep(600)
    '''))
    t0 = time.monotonic()
    r = run_training(ws, logs_dir=logs, wall_limit=8)
    assert r.status == "timeout" and "wall limit" in r.message
    assert time.monotonic() - t0 < 40
    assert no_run_processes_left(logs.parent)


CAMPAIGN = """
import sys
sys.path.insert(0, {root!r})
from tools.workspace import Workspace
from tools.supervisor import run_training
run_training(Workspace.open({ws!r}), logs_dir={logs!r}, wall_limit=300)
"""


def test_kill_9_of_the_campaign_ends_every_process_of_the_run_even_daemons(tmp_path, cpu_data):
    """fork(); setsid(); fork(): a daemon that leaves the process group and session still dies with
    the sandbox's PID namespace when the campaign process is killed."""
    ws, logs = make_run(tmp_path, cpu_data, tiny_train('''
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(600)
            os._exit(0)
        print("daemon started", flush=True)
        time.sleep(600)
    '''))
    root = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen([sys.executable, "-c", CAMPAIGN.format(root=root, ws=str(ws.root), logs=str(logs))])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = list(logs.glob("*.log")) if logs.exists() else []
            if found and "daemon started" in found[0].read_text():
                break
            time.sleep(0.1)
        assert len(processes_of_runs(logs.parent)) >= 2, "the run and its daemon should be running"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while processes_of_runs(logs.parent) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert no_run_processes_left(logs.parent), "a process of the run outlived the campaign"
    finally:
        proc.kill()


def test_a_flood_of_output_is_bounded_everywhere_and_read_in_linear_time(tmp_path, cpu_data):
    ws, logs = make_run(tmp_path, cpu_data, tiny_train('''
        import sys
        sys.stdout.write("x" * 30_000_000)
        sys.stdout.flush()
        raise SystemExit(1)
    '''))
    t0 = time.monotonic()
    r = run_training(ws, logs_dir=logs)
    assert r.status == "crash"
    assert time.monotonic() - t0 < 60
    assert len(r.to_text()) < 20_000 and len(r.tail) < 10_000
    assert Path(r.log_path).stat().st_size < 100_000


def test_the_log_writer_cuts_long_lines_and_caps_the_log(tmp_path):
    out = tmp_path / "log"
    with open(out, "wb") as f:
        w = LogWriter(f, max_bytes=10_000)
        w.feed(b"a" * 5_000_000 + b"\nshort line\n")
        for _ in range(2000):
            w.feed(b"y" * 100 + b"\n")
        w.close()
    lines = out.read_text().splitlines()
    assert lines[0].endswith("[line cut]") and len(lines[0]) < 2_100 and lines[1] == "short line"
    assert out.stat().st_size < 11_000 and "more bytes of output were not kept" in lines[-1]
    assert "line cut" in read_tail(out, lines=1000) or len(read_tail(out)) <= 8_000


def test_without_a_sandbox_a_campaign_refuses_to_start_and_unsafe_runs_say_so(tmp_path, cpu_data, monkeypatch, capsys):
    from graph.run import main
    from tools import sandbox
    monkeypatch.setitem(sandbox._checked, "reason", "bubblewrap (bwrap) is not installed")
    config, _ = cpu_data
    args = ["--campaign", "nobox", "--runs-dir", str(tmp_path / "runs"), "--profile", "cpu", "--data", config.data,
            "--time-budget", "1", "--max-iterations", "0", "--offline", "--noise-runs", "1"]
    assert main(args) == 2
    out = capsys.readouterr().out
    assert "bwrap" in out and "apt-get install bubblewrap" in out and "--unsafe-no-sandbox" in out
    assert not (tmp_path / "runs" / "nobox").exists()

    assert main([*args, "--unsafe-no-sandbox"]) == 0
    header, *rows = [line.split("\t") for line in (tmp_path / "runs" / "nobox" / "results.tsv").read_text().splitlines()]
    assert rows and all(row[header.index("sandbox")] == "none" for row in rows)
    assert rows[0][header.index("status")] == "keep" and 2 < float(rows[0][header.index("val_bpb")]) < 30
    r = RunResult.load(next((tmp_path / "runs" / "nobox" / "logs").glob("*.json")))
    assert not r.sandboxed and "NOT sandboxed" in r.to_text() and "NOT sandboxed" in log_text(r)


def test_a_secret_across_a_cut_line_is_still_masked(tmp_path):
    from tools.redact import Redactor
    secret = "sk-cut-across-7f3a9c1e5b2d4f60e8"
    out = tmp_path / "log"
    with open(out, "wb") as f:
        w = LogWriter(f, redact=Redactor([secret]).text)
        w.feed(b"a" * 1_990 + secret.encode() + b"b" * 100_000 + b"\n" + secret[::-1].encode() + b"\n")
        w.close()
    text = out.read_text()
    assert "sk-cut" not in text and secret[::-1][:8] not in text
    assert text.splitlines()[0].endswith("[line cut]") and len(text.splitlines()[0]) < 2_100


def test_device_lock_lets_one_run_at_a_time_use_a_gpu(tmp_path, monkeypatch):
    """Two processes naming the same GPU: the second waits until the first lets go; another GPU
    or none is not held up."""
    import subprocess
    import sys
    import time

    from tools import supervisor
    monkeypatch.setattr(supervisor, "DEVICE_LOCK_DIR", tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, fcntl; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('held', flush=True); time.sleep(3)"), str(tmp_path / "gpu-7.lock")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    start = time.monotonic()
    with supervisor.device_lock("3"), supervisor.device_lock(None):
        assert time.monotonic() - start < 1.0
    with supervisor.device_lock("7"):
        waited = time.monotonic() - start         # the holder lets go when it exits, 3 s after "held"
    assert waited > 2.0
    holder.wait()
