"""The campaign engine: full CPU campaigns driven by scripted models, over HTTP, resumed after kill -9."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

import graph.campaign as campaign_module
from graph import results
from graph.configuration import Credentials, Settings
from graph.llm import make_models, offline_models
from graph.prompts import PromptError
from graph.run import run_campaign
from helpers_runs import NOISY_TRAIN
from nanochat.prepare import render_train_py
from tools.workspace import git
from tests.fake_openai import FakeOpenAI, delayed, error, rate_limited, reply, tool_calls_reply

ROOT = Path(__file__).resolve().parent.parent
LR_LINE = next(l for l in render_train_py("cpu").splitlines() if l.startswith("MATRIX_LR = "))


STEPS_LINE = next(l for l in render_train_py("cpu").splitlines() if l.startswith("UNTIMED_STEPS = "))
STEPS_TO_CRASH = f"<<<<<<< SEARCH\n{STEPS_LINE}\n=======\nUNTIMED_STEPS = 1 // 0\n>>>>>>> REPLACE\n"


def patch_lr(value: float) -> str:
    return f"<<<<<<< SEARCH\n{LR_LINE}\n=======\nMATRIX_LR = {value}\n>>>>>>> REPLACE\n"


class Scripted(BaseChatModel):
    """Answers from a fixed list of AIMessages, recording every message list it was given."""
    script: list
    seen: list = []

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools, **kwargs):
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.seen.append(list(messages))
        if not self.script:
            return ChatResult(generations=[ChatGeneration(message=AIMessage("out of script"))])
        return ChatResult(generations=[ChatGeneration(message=self.script.pop(0))])


def call(name, i, **args):
    return {"name": name, "args": args, "id": f"{name}-{i}", "type": "tool_call"}


def experiment(i, lr, description):
    """One iteration: read, patch, train, answer."""
    return [AIMessage("", tool_calls=[call("read_file", i, path="train.py")]),
            AIMessage("", tool_calls=[call("apply_patch", i, patch=patch_lr(lr))]),
            AIMessage("", tool_calls=[call("run_training", i)]),
            AIMessage(f"{description}\nbecause why not")]


def settings_for(tmp_path, cpu_data, **kw) -> Settings:
    config, _ = cpu_data
    # one run per experiment (noise-blind): these tests are about the loop; tests/test_noise_campaign.py
    # runs the noise-aware judge
    base = dict(campaign="t", runs_dir=tmp_path / "runs", profile="cpu", data=config.data, time_budget=1,
                max_iterations=2, offline=True, plateau_patience=99, noise_runs=1)
    return Settings(**{**base, **kw})


def tsv(settings) -> list:
    return results.rows(settings.runs_dir / settings.campaign / "results.tsv")


def workspace_dir(settings) -> Path:
    return settings.runs_dir / settings.campaign / "workspace"


@pytest.mark.slow(22)
def test_scripted_campaign_records_every_experiment(tmp_path, cpu_data, monkeypatch):
    settings = settings_for(tmp_path, cpu_data, max_iterations=3)
    warmed = []          # the spare training processes the campaign asked for (prestart is on by default)
    real_start_spare = campaign_module.start_spare
    monkeypatch.setattr(campaign_module, "start_spare",
                        lambda ws, **kw: warmed.append(kw) or real_start_spare(ws, **kw))
    agent = Scripted(script=[
        *experiment(1, 0.03, "MATRIX_LR 0.03"),
        AIMessage("", tool_calls=[call("apply_patch", 2, patch="<<<<<<< SEARCH\nnot in the file\n=======\nx\n>>>>>>> REPLACE")]),
        AIMessage("Gave up: my patch did not apply"),                       # an iteration without training
        AIMessage("", tool_calls=[call("apply_patch", 3, patch=patch_lr("oops("))]),   # refused: syntax
        AIMessage("", tool_calls=[call("apply_patch", 3, patch=STEPS_TO_CRASH)]),   # compiles, then raises
        AIMessage("", tool_calls=[call("run_training", 3)]),
        AIMessage("UNTIMED_STEPS 1 // 0 (a crash)"),
    ])
    models = dataclasses.replace(offline_models(), agent=agent, offline=False, label="scripted")
    final = run_campaign(settings, models)
    rows = tsv(settings)
    assert [r.iteration for r in rows] == [0, 1, 2, 3]
    assert rows[0].status == "keep" and rows[0].description == "baseline"
    assert rows[1].description == "MATRIX_LR 0.03" and rows[1].status in ("keep", "discard")
    assert rows[2].status == "no-run" and "Gave up" in rows[2].description
    assert rows[3].status == "crash" and rows[3].val_bpb in (None, 0.0)
    assert final["stop_reason"] == "reached --max-iterations 3"
    ws = workspace_dir(settings)
    best = git(ws, "rev-parse", "refs/autoresearch/best")
    assert git(ws, "rev-parse", "HEAD") == best and not git(ws, "status", "--porcelain", "--untracked-files=no")
    kept = [r for r in rows if r.status == "keep"]
    assert best.startswith(kept[-1].commit)
    # every experiment that trained has its code reachable, with the change it made
    assert "MATRIX_LR = 0.03" in git(ws, "show", f"{rows[1].commit}:train.py")
    # the agent saw the history and the best score in its task
    task = agent.seen[-1][1].content
    assert "MATRIX_LR 0.03" in task and f"{kept[-1].val_bpb:.6f}" in task
    assert (settings.runs_dir / "t" / "report.md").exists() and (settings.runs_dir / "t" / "progress.png").exists()
    # the agent's runs are logged by iteration; status.json says how the campaign ended
    logs = sorted(p.name for p in (settings.runs_dir / "t" / "logs").glob("*.log"))
    assert logs == ["iter-00000-baseline-1.log", "iter-00001-agent-1.log", "iter-00003-agent-1.log"], logs
    state = json.loads((settings.runs_dir / "t" / "status.json").read_text())
    assert state["ended"] and state["stop_reason"] == "reached --max-iterations 3" and state["iteration"] == 3
    # a spare before each experiment, none after the last; the agent's runs were pre-started processes
    assert len(warmed) == 3
    logs_dir = settings.runs_dir / "t" / "logs"
    assert all((logs_dir / name).read_text().startswith("[prestart]") for name in logs[1:])


@pytest.mark.slow(18)
def test_campaign_over_http_survives_429_500_and_timeouts_and_records_an_llm_that_keeps_failing(tmp_path, cpu_data,
                                                                                                 monkeypatch):
    import functools
    import graph.agent as agent_module
    from graph.llm import invoke_with_retry
    # the back-off is test_llm.py's; here it is short (Retry-After is still honoured: 1 s)
    monkeypatch.setattr(agent_module, "invoke_with_retry",
                        functools.partial(invoke_with_retry, initial_wait=0.05, max_wait=0.2))
    # the LLM's faults are tested here, not the model: its train.py trains nothing
    settings = settings_for(tmp_path, cpu_data, offline=False, max_iterations=2, llm_timeout=1.5,
                            llm_max_attempts=4, agent_model="fake-model", train=NOISY_TRAIN)
    lr = "<<<<<<< SEARCH\nMATRIX_LR = 0.04\n=======\nMATRIX_LR = 0.025\n>>>>>>> REPLACE\n"
    with FakeOpenAI() as server:
        server.push(
            rate_limited(retry_after="1"),
            tool_calls_reply(("read_file", {"path": "train.py"})),
            error(500),
            tool_calls_reply(("apply_patch", {"patch": lr})),
            delayed(5),                                            # past the 1.5 s client timeout
            tool_calls_reply(("run_training", {})),
            error(503),
            reply("MATRIX_LR 0.025 over HTTP"),
            error(500), error(502), error(500), error(503),            # experiment 2: every attempt fails
        )
        creds = Credentials(openai_api_key="sk-test-secret", openai_base_url=server.base_url)
        settings = settings.with_credentials(creds)
        models = make_models(settings)
        assert not models.offline
        final = run_campaign(settings, models)
        bodies = [r.body for r in server.requests]
    rows = tsv(settings)
    assert [r.iteration for r in rows] == [0, 1, 2]
    assert rows[1].description == "MATRIX_LR 0.025 over HTTP" and rows[1].status in ("keep", "discard")
    assert len(bodies) == 12                                 # every fault was retried, nothing more
    # an LLM that keeps failing is recorded, not fatal
    assert rows[2].status == "no-run" and "LLM unavailable" in rows[2].description
    assert final["stop_reason"] == "reached --max-iterations 2"
    assert any(t["function"]["name"] == "run_training" for t in bodies[0]["tools"])
    logs = "".join(p.read_text() for p in (settings.runs_dir / "t" / "logs").glob("*.log"))
    assert "sk-test-secret" not in logs


@pytest.mark.slow(10)
def test_prompt_edits_apply_next_iteration_and_broken_prompt_is_clear(tmp_path, cpu_data):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "agent_system.md").write_text("RULES VERSION ONE")
    settings = settings_for(tmp_path, cpu_data, prompts_dir=prompts, max_iterations=2)

    class Editing(Scripted):
        def _generate(self, messages, stop=None, run_manager=None, **kw):
            out = super()._generate(messages, stop, run_manager, **kw)
            if len(self.seen) == 1:   # mid-campaign edit by the user
                (prompts / "agent_system.md").write_text("RULES VERSION TWO")
            return out

    agent = Editing(script=[AIMessage("nothing this time"), AIMessage("nothing again")])
    run_campaign(settings, dataclasses.replace(offline_models(), agent=agent, offline=False))
    assert agent.seen[0][0].content == "RULES VERSION ONE"
    assert agent.seen[1][0].content == "RULES VERSION TWO"

    (prompts / "agent_task.md").write_text("best so far {bestt_bpb}")
    settings2 = settings.model_copy(update={"resume": True, "max_iterations": 3})
    with pytest.raises(PromptError) as e:
        run_campaign(settings2, dataclasses.replace(offline_models(), agent=Scripted(script=[]), offline=False))
    assert "agent_task.md" in str(e.value) and "bestt_bpb" in str(e.value)


# -----------------------------------------------------------------------------
# The offline researcher, for real

@pytest.mark.slow(45)
def test_offline_researcher_improves_a_detuned_baseline(tmp_path, cpu_data):
    """Start from a batch 4x too small: a few offline experiments must find a better setting. Every
    run trains exactly MAX_STEPS steps (the 60-s budget never binds), so what a run learns does not
    depend on how busy the machine is. At 30 steps doubling the batch gained 0.083 bpb here
    (2026-11-30; 0.25 at 60 steps, nothing dependable at 20). A keep must gain 0.01 bpb, so
    noise-level "improvements" don't lock the search onto one knob."""
    settings = settings_for(tmp_path, cpu_data, max_iterations=3, time_budget=60, min_improvement=0.01)
    run_dir = settings.runs_dir / settings.campaign
    from nanochat.prepare import HarnessConfig
    from tools import Workspace
    config, _ = cpu_data
    detuned = render_train_py("cpu")
    for name, value in [("TOTAL_BATCH_TOKENS", 2**9), ("DEVICE_BATCH_SIZE", 2), ("MAX_STEPS", 30)]:
        line = next(l for l in detuned.splitlines() if l.startswith(f"{name} = "))
        detuned = detuned.replace(line, f"{name} = {value}")
    Workspace.create(run_dir / "workspace", HarnessConfig(profile="cpu", data=config.data, time_budget=60), detuned)
    (run_dir / "checkpoints.sqlite").touch()        # start it as a resumable campaign of our own
    final = run_campaign(settings.model_copy(update={"resume": True}), offline_models())
    rows = tsv(settings)
    assert len(rows) == 4
    assert final["best_val_bpb"] < rows[0].val_bpb - 0.03, [(r.description, r.val_bpb) for r in rows]
    descriptions = [r.description for r in rows[1:]]
    assert len(set(descriptions)) == len(descriptions)        # never the same experiment twice
    assert all("offline" not in d for d in descriptions)


# -----------------------------------------------------------------------------
# Durability: kill -9 at any moment, then --resume

def _cli(tmp_path, cpu_data, *extra, env_extra=None):
    config, _ = cpu_data
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update({"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env_extra or {})})
    args = [sys.executable, "-m", "graph.run", "--campaign", "k", "--runs-dir", str(tmp_path / "runs"),
            "--profile", "cpu", "--data", config.data, "--time-budget", "1", "--max-iterations", "2",
            "--offline", "--noise-runs", "1", *extra]
    if "--resume" not in extra:      # a train.py that trains nothing: these tests are about the records
        args += ["--train", str(NOISY_TRAIN)]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _no_training_left(run_dir: Path) -> bool:
    from helpers_runs import no_run_processes_left
    return no_run_processes_left(run_dir)


def _check_finished(tmp_path):
    run_dir = tmp_path / "runs" / "k"
    rows = results.rows(run_dir / "results.tsv")
    assert [r.iteration for r in rows] == [0, 1, 2], [(r.iteration, r.status) for r in rows]
    ws = run_dir / "workspace"
    assert git(ws, "rev-parse", "HEAD") == git(ws, "rev-parse", "refs/autoresearch/best")
    assert not git(ws, "status", "--porcelain", "--untracked-files=no")
    kept = [r for r in rows if r.status == "keep"]
    assert git(ws, "rev-parse", "HEAD").startswith(kept[-1].commit)
    assert _no_training_left(run_dir)


def _rows(tmp_path) -> list:
    tsv = tmp_path / "runs" / "k" / "results.tsv"
    return results.rows(tsv) if tsv.exists() else []


def _wait_for_training(tmp_path, proc, iteration: int):
    """Until experiment `iteration` trains: the rows before it are in and a run's pid file is there."""
    pid_file = tmp_path / "runs" / "k" / "training.pid"
    deadline = time.time() + 240
    while time.time() < deadline:
        if len(_rows(tmp_path)) == iteration and pid_file.exists():
            time.sleep(1.0)
            return
        if proc.poll() is not None:
            pytest.fail(f"the campaign ended before experiment {iteration} trained: {proc.stdout.read()[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"experiment {iteration} never started training")


@pytest.mark.slow(45)
def test_kill_9_at_every_point_of_an_experiment_then_resume_loses_and_doubles_nothing(tmp_path, cpu_data):
    """One campaign, killed with -9 in its judge before the row is written, then after, then in the
    middle of a training run; each time --resume goes on from where it stopped. Then a finished
    campaign is extended, and a STOP file written while it runs ends it after that experiment."""
    from helpers_runs import processes_of_runs
    run_dir = tmp_path / "runs" / "k"

    killed = _cli(tmp_path, cpu_data, env_extra={"AUTORESEARCH_FAULT": "judge-before-row"})
    killed.communicate(timeout=400)
    assert killed.returncode == -signal.SIGKILL
    assert [r.iteration for r in _rows(tmp_path)] == [0]           # experiment 1 trained, not recorded
    killed = _cli(tmp_path, cpu_data, "--resume", env_extra={"AUTORESEARCH_FAULT": "judge-after-row"})
    out = killed.communicate(timeout=400)[0]
    assert killed.returncode == -signal.SIGKILL and "resumed" in out, out[-3000:]
    assert [r.iteration for r in _rows(tmp_path)] == [0, 1]         # recorded once, not trained again
    assert len(list((run_dir / "logs").glob("iter-00001-*.log"))) == 1

    proc = _cli(tmp_path, cpu_data, "--resume")
    _wait_for_training(tmp_path, proc, 2)
    assert processes_of_runs(run_dir), "experiment 2 should be training"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _no_training_left(run_dir)            # the sandbox dies with its parent, and everything in it
    assert [r.iteration for r in _rows(tmp_path)] == [0, 1]
    out = _cli(tmp_path, cpu_data, "--resume").communicate(timeout=400)[0]
    assert "resumed" in out, out[-3000:]
    _check_finished(tmp_path)

    (run_dir / "STOP").write_text("")           # left from before: it does not stop the extended campaign
    proc = _cli(tmp_path, cpu_data, "--resume", "--max-iterations", "5")
    _wait_for_training(tmp_path, proc, 3)
    (run_dir / "STOP").write_text("")
    out = proc.communicate(timeout=400)[0]
    assert proc.returncode == 0 and "STOP file found in the run dir" in out, out[-3000:]
    assert [r.iteration for r in _rows(tmp_path)] == [0, 1, 2, 3]
    assert _no_training_left(run_dir)


def test_resume_without_campaign_and_existing_campaign_are_clear_errors(tmp_path, cpu_data):
    from graph.run import main
    base = ["--runs-dir", str(tmp_path / "runs"), "--campaign", "nope", "--offline"]
    assert main([*base, "--resume"]) == 2
    (tmp_path / "runs" / "nope").mkdir(parents=True)
    (tmp_path / "runs" / "nope" / "x").write_text("")
    assert main(base) == 2
    # bad harness input is refused before anything is created
    assert main(["--runs-dir", str(tmp_path / "runs"), "--campaign", "bad", "--offline",
                 "--data", str(tmp_path / "no-such-corpus")]) == 2
    assert main(["--runs-dir", str(tmp_path / "runs"), "--campaign", "bad", "--offline", "--profile", "tpu"]) == 2
    assert not (tmp_path / "runs" / "bad").exists()


def pin(tmp_path, name="pinned", **harness):
    """A run dir holding only a campaign's harness pin (enough to refuse a resume)."""
    from nanochat.config import HarnessConfig
    ws = tmp_path / "runs" / name / "workspace"
    ws.mkdir(parents=True)
    HarnessConfig(**{"profile": "cpu", "data": "builtin", **harness}).write(ws / "harness.json")
    return ws.parent


def test_resume_refuses_explicit_harness_flags_that_differ_from_the_pin(tmp_path, capsys, monkeypatch):
    from graph.run import main
    pin(tmp_path, time_budget=8)
    base = ["--runs-dir", str(tmp_path / "runs"), "--campaign", "pinned", "--offline", "--resume"]
    assert main([*base, "--time-budget", "15", "--profile", "gpu-small"]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "pinned to profile cpu, data builtin, 8s per run" in out, out
    assert "--profile gpu-small, --time-budget 15" in out
    assert "python -m graph.run --campaign NEW_NAME --profile gpu-small --time-budget 15" in out
    monkeypatch.setenv("AUTORESEARCH_DATA", "climbmix")     # the environment is as explicit as the command line
    assert main(base) == 2
    assert "--data climbmix" in capsys.readouterr().out


def test_harness_flags_left_out_or_equal_to_the_pin_are_no_change(tmp_path):
    from graph.campaign import harness_changes
    from nanochat.config import HarnessConfig
    pinned = HarnessConfig(profile="cpu", data="builtin", time_budget=8)
    assert harness_changes(Settings(campaign="x", resume=True), pinned) == []   # defaults: the pin rules
    assert harness_changes(Settings(campaign="x", profile="cpu", time_budget=8, data="builtin"), pinned) == []
    profile_budget = HarnessConfig(profile="cpu")                  # pinned: the profile's own 15 s
    assert harness_changes(Settings(campaign="x", time_budget=15), profile_budget) == []
    assert harness_changes(Settings(campaign="x", time_budget=16), profile_budget) == ["--time-budget 16"]


def test_a_cpu_campaign_says_at_the_start_that_its_verdicts_are_noisy():
    from graph.run import describe_harness
    from nanochat.config import HarnessConfig
    cpu = describe_harness(HarnessConfig(profile="cpu", data="builtin"))
    assert cpu[0] == "harness: profile cpu, data builtin, 15s per run on the CPU (no GPU)"
    assert len(cpu) == 2 and "noisy" in cpu[1] and "0.024 bpb" in cpu[1] and "not research results" in cpu[1]
    assert describe_harness(HarnessConfig(profile="h100", data="climbmix")) == \
        ["harness: profile h100, data climbmix, 300s per run"]
