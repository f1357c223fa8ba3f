"""Parallel campaigns without starting Ray: the flags, the agents they plan, and the message when
Ray is not installed."""

import builtins

import pytest

from graph.campaign import CampaignError
from graph.configuration import Settings, parse_settings
from graph import parallel
from graph.parallel import Slot, cpu_threads_per_agent, import_ray, plan_slots, requested_gpus


def test_the_flags_plan_one_agent_per_gpu_slot():
    s = parse_settings(["--gpus", "0, 1", "--agents-per-gpu", "2"])
    assert s.gpus == "0,1" and s.parallel and requested_gpus(s) == ["0", "1"]
    assert plan_slots(s, 2) == [Slot("a1", 0.5), Slot("a2", 0.5), Slot("a3", 0.5), Slot("a4", 0.5)]
    assert requested_gpus(parse_settings(["--gpus", "ALL"])) is None
    workers = parse_settings(["--workers", "3"])
    assert workers.parallel and plan_slots(workers, 0) == [Slot("a1", 0.0), Slot("a2", 0.0), Slot("a3", 0.0)]
    assert not Settings().parallel
    with pytest.raises(CampaignError, match="sees no GPU"):
        plan_slots(parse_settings(["--gpus", "all"]), 0)


def test_cpu_agents_share_the_cores_unless_the_user_set_the_threads(monkeypatch):
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert [cpu_threads_per_agent(n) for n in (1, 3, 8, 20)] == ["8", "2", "1", "1"]
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert cpu_threads_per_agent(3) == "5"


@pytest.mark.parametrize("argv, message", [
    (["--gpus", "0,x"], "--gpus takes `all` or distinct GPU indices"),
    (["--gpus", "1,1"], "--gpus takes `all` or distinct GPU indices"),
    (["--gpus", "0", "--workers", "2"], "give one of them"),
    (["--gpus", "0", "--gpu", "1"], "with --gpus the agents get theirs"),
    (["--agents-per-gpu", "2"], "--agents-per-gpu needs --gpus"),
    (["--workers", "0"], "workers"),
])
def test_bad_parallel_flags_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse_settings(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_without_ray_a_parallel_campaign_says_how_to_install_it(monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(CampaignError, match=r"pip install -e '\.\[ray\]'"):
        import_ray()
