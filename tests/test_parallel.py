"""A parallel campaign on Ray, on the CPU (`--workers 2`): two agents over HTTP share one campaign
(unique rows, both contribute, each sees what the other runs); an agent's process killed mid-run
becomes a crash row while the other goes on, and a driver killed with -9 resumes losing and
doubling nothing. One campaign with real agents, sandboxes, runs and scoring (of a train.py that
trains nothing, helpers_runs.NOISY_TRAIN): about a minute.
How much faster several agents are is measured on GPUs (docs/SCALING.md), not timed here."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from graph import results
from tests.fake_openai import ResearcherServer
from graph.parallel import ray_mark
from helpers_runs import NOISY_TRAIN
from tools.supervisor import marked_processes, run_processes

pytest.importorskip("ray")
pytestmark = pytest.mark.slow(75)

ROOT = Path(__file__).resolve().parent.parent
LATENCY = 0.5        # seconds per LLM request, 4 requests an experiment: the agents think while others train


def campaign(tmp_path, cpu_data, name, *flags, server=None, resume=False) -> subprocess.Popen:
    config, _ = cpu_data
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "DEEPSEEK_")) and k != "AUTORESEARCH_FAULT"}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    if server is not None:
        env.update(OPENAI_API_KEY="sk-test-parallel", OPENAI_BASE_URL=server.base_url)
    args = [sys.executable, "-m", "graph.run", "--campaign", name, "--runs-dir", str(tmp_path / "runs"),
            # a train.py that trains nothing: the sharing of one campaign is tested, not the model
            *([] if resume else ["--profile", "cpu", "--data", config.data, "--time-budget", "1",
                                 "--train", str(NOISY_TRAIN)]),
            "--noise-runs", "1", "--plateau-patience", "99", *flags, *(["--resume"] if resume else []),
            *([] if server is not None else ["--offline"])]
    # the console goes to a file: Ray's processes may hold a pipe open after the driver is killed
    log = tmp_path / f"{name}{'-resumed' if resume else ''}.console"
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    proc.console = log
    return proc


def console(proc: subprocess.Popen) -> str:
    return proc.console.read_text(errors="replace")


def finish(proc: subprocess.Popen, timeout: float = 420) -> str:
    proc.wait(timeout=timeout)
    out = console(proc)
    assert proc.returncode == 0, out[-3000:]
    return out


def rows_of(tmp_path, name) -> list:
    return results.rows(tmp_path / "runs" / name / results.RESULTS_FILE)


def check_every_experiment_once(rows, n: int):
    """Numbers 1..n, each with exactly one verdict; no run recorded twice."""
    assert Counter((r.iteration, r.runs) for r in rows).most_common(1)[0][1] == 1, rows
    verdicts = Counter(r.iteration for r in rows if r.is_verdict)
    assert sorted(verdicts) == list(range(0, n + 1)) and set(verdicts.values()) == {1}, verdicts


def wait_for(check, timeout: float, what: str, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the campaign ended while waiting for {what}: {console(proc)[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def agent_training(home: Path):
    """The agent's pid while it trains an experiment (not a baseline run), else None."""
    try:
        status = json.loads((home / "status.json").read_text())
    except (OSError, ValueError):
        return None
    experiment = status.get("iteration", 0) >= 1
    return status["pid"] if experiment and status.get("phase") == "training" and run_processes(home) else None


def test_two_agents_share_a_campaign_and_a_lost_agent_or_a_killed_driver_lose_and_double_nothing(tmp_path, cpu_data):
    """Two agents over HTTP, each seeing what the other runs. Agent a2's process is killed mid-run:
    one crash row, and a1 goes on alone. Then the driver is killed with -9 while a1 trains, and
    --resume (both agents again) finishes the campaign."""
    run_dir = tmp_path / "runs" / "k"
    a1, a2 = run_dir / "agents" / "a1", run_dir / "agents" / "a2"
    with ResearcherServer(latency=LATENCY) as server:
        proc = campaign(tmp_path, cpu_data, "k", "--workers", "2", "--max-iterations", "5", server=server)
        os.kill(wait_for(lambda: agent_training(a2), 300, "agent a2 training", proc), signal.SIGKILL)
        lost = wait_for(lambda: [r for r in rows_of(tmp_path, "k") if r.status == results.CRASH and r.agent == "a2"],
                        120, "a2's crash row", proc)
        assert len(lost) == 1 and "process died" in lost[0].reason, lost
        wait_for(lambda: run_processes(a2) == [], 30, "a2's training run to end")
        # a1 carries on: it records an experiment after the crash, then trains again
        wait_for(lambda: any(r.agent == "a1" and r.is_verdict and r.iteration > lost[0].iteration
                             for r in rows_of(tmp_path, "k")), 240, "a1 to go on", proc)
        wait_for(lambda: agent_training(a1), 240, "a1 training", proc)
        os.kill(proc.pid, signal.SIGKILL)              # the driver only: Ray and the agents lose it
        proc.wait()
        before = rows_of(tmp_path, "k")
        assert "agent a2 lost" in console(proc)
        assert all(r.agent == "a1" for r in before if r.iteration > lost[0].iteration)
        out = finish(campaign(tmp_path, cpu_data, "k", "--workers", "2", "--max-iterations", "5", server=server,
                              resume=True))
        prompts = [json.dumps(r.body.get("messages", [])) for r in server.requests]
    after = rows_of(tmp_path, "k")
    assert after[: len(before)] == before           # nothing rewritten
    check_every_experiment_once(after, 5)
    assert [r for r in after if r.status == results.CRASH] == lost
    assert {r.agent for r in after if r.iteration} == {"a1", "a2"} and {r.gpu for r in after} == {"cpu"}
    # each saw what the other was running (prompts/agent_others.md) and its rows in the history
    assert any("Running now on other agents" in p and "agent a2" in p for p in prompts)
    assert any("Running now on other agents" in p and "agent a1" in p for p in prompts)
    # the best only improves in file order: every keep was judged against the best recorded before it
    kept = [r.mean for r in after if r.kept]
    assert kept == sorted(kept, reverse=True) and len(set(kept)) == len(kept)
    assert sorted(p.name for p in (run_dir / "agents").iterdir()) == ["a1", "a2"]
    for home in (a1, a2):
        assert run_processes(home) == []
        status = subprocess.run(["git", "status", "--porcelain"], cwd=home / "workspace",
                                capture_output=True, text=True).stdout
        assert status == "", status
        # one trace file and one checkpointed thread each
        assert '"agent": "%s"' % home.name in (home / "traces.jsonl").read_text()
        assert (home / "checkpoints.sqlite").exists()
    assert "Per agent" in (run_dir / "report.md").read_text()
    assert json.loads((run_dir / "ledger.json").read_text())["claims"] == {}, out[-2000:]
    assert marked_processes(ray_mark(run_dir).encode()) == []      # no Ray process of it left behind
