"""What scripts/ledger_simulation.py must get right for docs/SCALING.md to be worth reading: the GPU
duty of the simplest case, the gain from sharing a GPU between two agents, and a serial ledger that
stops throughput from growing once it is saturated. Fixed seeds, simulated hours: well under a second
each."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import ledger_simulation as sim  # noqa: E402

FREE_LEDGER = {call: 0.0 for call in sim.SERVICE_MS}


def test_duty_with_no_thinking_and_a_free_ledger_is_budget_over_run_time():
    # Nothing but training: each GPU is busy all the time, and only the budget of a run is useful.
    f = sim.simulate(gpus=2, budget=60, overhead=15, overhead_spread=0, llm_median=0, confirm_share=0,
                     service_ms=FREE_LEDGER, rtt_local_ms=0, hours=1, warmup=0.1, seed=1)
    assert f["gpu_duty"] == pytest.approx(60 / 75, abs=0.005)
    assert f["experiments_per_hour"] == pytest.approx(2 * 3600 / 75, rel=0.02)
    assert f["ledger_utilisation"] == 0


def test_a_second_agent_per_gpu_trains_while_the_first_thinks():
    # About 64 s of LLM requests per experiment against a 77.5-s run: one agent leaves its GPU idle
    # nearly half the time, two keep it almost always busy (a GPU can't do better than 60/77.5).
    common = dict(gpus=4, budget=60, llm_requests=2, llm_after_run=1, llm_median=30, llm_spread=0.3,
                  hours=2, warmup=0.25, seed=2)
    one = sim.simulate(agents_per_gpu=1, **common)
    two = sim.simulate(agents_per_gpu=2, **common)
    assert one["gpu_duty"] < 0.5
    assert two["gpu_duty"] > one["gpu_duty"] + 0.2
    assert two["gpu_duty"] <= 60 / 77.5 + 0.01
    assert two["experiments_per_hour"] > 1.4 * one["experiments_per_hour"]


def test_a_saturated_ledger_caps_throughput_whatever_the_gpus():
    # A 2-s record serves at most 1800 experiments an hour (no confirmations: one record each).
    # Below that, GPUs add experiments in proportion; near it, doubling them adds little, and the
    # agents queue for minutes (the short calls wait behind the records: FIFO).
    slow = {**sim.SERVICE_MS, "record": 2000.0}
    runs = {g: sim.simulate(gpus=g, budget=60, confirm_share=0, service_ms=slow, hours=1, warmup=0.25, seed=3)
            for g in (8, 16, 128, 256)}
    exp = {g: f["experiments_per_hour"] for g, f in runs.items()}
    assert exp[16] == pytest.approx(2 * exp[8], rel=0.05)
    assert exp[256] < 1.2 * exp[128]
    assert max(exp.values()) < 1800
    assert runs[256]["ledger_utilisation"] > 0.8
    assert runs[256]["wait_p99_ms"] > 100 * 2000


def test_every_run_is_one_results_row():
    # Half the experiments are confirmed on 2 more runs: 2 rows per experiment on average.
    f = sim.simulate(gpus=8, agents_per_gpu=2, budget=60, confirm_share=0.5, noise_runs=3,
                     hours=2, warmup=0.25, seed=4)
    rows_per_hour = f["rows_per_night"] / sim.NIGHT_HOURS
    assert rows_per_hour == pytest.approx(2 * f["experiments_per_hour"], rel=0.05)
