"""Parallel campaigns on Ray, on the CPU (`--workers 2`): two agents over HTTP share one campaign
(unique rows, both contribute, they see each other's experiments, more experiments an hour than one
agent when the LLM's latency dominates), a driver killed with -9 and resumed, an agent's process
killed mid-run. Each test starts real agents, sandboxes and training runs: a minute or two."""

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
from tools.supervisor import marked_processes, run_processes

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
LATENCY = 2.0        # seconds per LLM request: 4 requests an experiment, ~8 s against ~6 s of training


def campaign(tmp_path, cpu_data, name, *flags, server=None, resume=False) -> subprocess.Popen:
    config, _ = cpu_data
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "DEEPSEEK_")) and k != "AUTORESEARCH_FAULT"}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    if server is not None:
        env.update(OPENAI_API_KEY="sk-test-parallel", OPENAI_BASE_URL=server.base_url)
    args = [sys.executable, "-m", "graph.run", "--campaign", name, "--runs-dir", str(tmp_path / "runs"),
            *([] if resume else ["--profile", "cpu", "--data", config.data, "--time-budget", "2"]),
            "--noise-runs", "1", "--plateau-patience", "99", *flags, *(["--resume"] if resume else []),
            *([] if server is not None else ["--offline"])]
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 420) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def rows_of(tmp_path, name) -> list:
    return results.rows(tmp_path / "runs" / name / results.RESULTS_FILE)


def check_every_experiment_once(rows, n: int):
    """Numbers 1..n, each with exactly one verdict; no run recorded twice."""
    assert Counter((r.iteration, r.runs) for r in rows).most_common(1)[0][1] == 1, rows
    verdicts = Counter(r.iteration for r in rows if r.is_verdict)
    assert sorted(verdicts) == list(range(0, n + 1)) and set(verdicts.values()) == {1}, verdicts


def per_hour(rows) -> float:
    """Experiments an hour after the baseline: from the baseline's verdict to the last row."""
    start = next(r.timestamp for r in rows if r.is_baseline and r.is_verdict)
    done = [r for r in rows if r.is_verdict and not r.is_baseline]
    return len(done) / ((done[-1].timestamp - start).total_seconds() / 3600)


def wait_for(check, timeout: float, what: str, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the campaign ended while waiting for {what}: {proc.stdout.read()[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_agents_share_a_campaign_and_outpace_one_when_the_llm_is_slow(tmp_path, cpu_data):
    with ResearcherServer(latency=LATENCY) as server:
        finish(campaign(tmp_path, cpu_data, "one", "--max-iterations", "3", server=server))
        out = finish(campaign(tmp_path, cpu_data, "two", "--workers", "2", "--max-iterations", "6", server=server))
        prompts = [json.dumps(r.body.get("messages", [])) for r in server.requests]
    one, two = rows_of(tmp_path, "one"), rows_of(tmp_path, "two")
    check_every_experiment_once(two, 6)
    assert {r.agent for r in two if r.iteration} == {"a1", "a2"}, out[-2000:]     # both contribute
    assert {r.gpu for r in two} == {"cpu"}
    assert all(r.agent == "a1" for r in one)
    # each saw what the other was running (prompts/agent_others.md) and its rows in the history
    assert any("Running now on other agents" in p and "agent a2" in p for p in prompts)
    assert any("Running now on other agents" in p and "agent a1" in p for p in prompts)
    # the best only improves in file order: every keep was judged against the best recorded before it
    kept = [r.mean for r in two if r.kept]
    assert kept == sorted(kept, reverse=True) and len(set(kept)) == len(kept)
    assert per_hour(two) > 1.3 * per_hour(one), (per_hour(one), per_hour(two))
    agents = tmp_path / "runs" / "two" / "agents"
    assert sorted(p.name for p in agents.iterdir()) == ["a1", "a2"]
    for agent in ("a1", "a2"):        # one trace file and one checkpointed thread each
        assert (agents / agent / "traces.jsonl").stat().st_size > 0
        assert (agents / agent / "checkpoints.sqlite").exists()
        assert '"agent": "%s"' % agent in (agents / agent / "traces.jsonl").read_text()
    report = (tmp_path / "runs" / "two" / "report.md").read_text()
    assert "Per agent" in report


def test_kill_9_of_the_driver_then_resume_loses_and_doubles_nothing(tmp_path, cpu_data):
    proc = campaign(tmp_path, cpu_data, "k", "--workers", "2", "--max-iterations", "6")
    run_dir = tmp_path / "runs" / "k"
    wait_for(lambda: len([r for r in rows_of(tmp_path, "k") if r.iteration]) >= 2, 300, "two experiments", proc)
    wait_for(lambda: run_processes(run_dir / "agents" / "a1") or run_processes(run_dir / "agents" / "a2"),
             120, "a training run", proc)
    os.kill(proc.pid, signal.SIGKILL)              # the driver only: Ray and the agents lose it
    proc.wait()
    before = rows_of(tmp_path, "k")
    out = finish(campaign(tmp_path, cpu_data, "k", "--workers", "2", "--max-iterations", "6", resume=True))
    after = rows_of(tmp_path, "k")
    assert after[: len(before)] == before           # nothing rewritten
    check_every_experiment_once(after, 6)
    for agent in ("a1", "a2"):
        assert run_processes(run_dir / "agents" / agent) == []
        status = subprocess.run(["git", "status", "--porcelain"], cwd=run_dir / "agents" / agent / "workspace",
                                capture_output=True, text=True).stdout
        assert status == "", status
    assert json.loads((run_dir / "ledger.json").read_text())["claims"] == {}, out[-2000:]
    assert marked_processes(ray_mark(run_dir).encode()) == []      # no Ray process of it left behind


def test_an_agent_killed_mid_run_is_recorded_as_a_crash_and_the_others_carry_on(tmp_path, cpu_data):
    proc = campaign(tmp_path, cpu_data, "lost", "--workers", "2", "--max-iterations", "5")
    a2 = tmp_path / "runs" / "lost" / "agents" / "a2"

    def a2_training():
        try:
            status = json.loads((a2 / "status.json").read_text())
        except (OSError, ValueError):
            return None
        experiment = status.get("iteration", 0) >= 1        # an experiment's run, not a baseline run
        return status["pid"] if experiment and status.get("phase") == "training" and run_processes(a2) else None
    pid = wait_for(a2_training, 300, "agent a2 training", proc)
    os.kill(pid, signal.SIGKILL)
    out = finish(proc)
    rows = rows_of(tmp_path, "lost")
    check_every_experiment_once(rows, 5)
    lost = [r for r in rows if r.status == results.CRASH and r.agent == "a2"]
    assert len(lost) == 1 and "process died" in lost[0].reason, out[-2000:]
    assert "agent a2 lost" in out
    assert all(r.agent == "a1" for r in rows if r.iteration and r.iteration > lost[0].iteration)
    wait_for(lambda: run_processes(a2) == [], 30, "a2's training run to end")
