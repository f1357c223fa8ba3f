"""A dead LLM endpoint: after OUTAGE_ITERATIONS lost iterations the campaign waits (growing back-off,
reported live) instead of writing a no-run row per iteration, stops after --max-llm-outage with one
clear reason, stops at once on Ctrl-C, keeps its clock across a resume, and carries on when the
endpoint comes back.

The real compiled graph, workspace and tools; training is faked (tests/test_director.py's way); the
agent talks HTTP to a closed port (dead) or to tests/fake_openai.py (dropped connections, then
answers). The back-off constants are shrunk to tenths of a second.
"""

import dataclasses
import socket
import threading
import time
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import MemorySaver

import graph.campaign as campaign_module
import graph.outage as outage
import tools.lc_tools as lc_tools
from graph import results
from graph.campaign import Campaign, resume_input
from graph.configuration import Settings
from graph.graph import build_graph
from graph.llm import chat_model, offline_models
from helpers_tools import make_workspace
from tests.fake_openai import FakeOpenAI, drop, reply, tool_calls_reply
from tools import RunResult

FIXTURE_TRAIN = Path(__file__).parent / "fixtures" / "train.py"


def run_result(val_bpb: float) -> RunResult:
    return RunResult(status="ok", message="ok", metrics={"val_bpb": val_bpb, "training_seconds": 1.0,
                                                         "total_seconds": 1.5, "peak_vram_mb": 0.0})


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    """Tiny back-off, and training without training (baseline 1.0, every experiment 1.1)."""
    monkeypatch.setattr(outage, "FIRST_WAIT", 0.1)
    monkeypatch.setattr(outage, "MAX_WAIT", 0.4)
    monkeypatch.setattr(outage, "POLL", 0.05)
    monkeypatch.setattr(campaign_module, "run_training", lambda workspace, **kw: run_result(1.0))
    monkeypatch.setattr(lc_tools, "run_training", lambda workspace, **kw: run_result(1.1))


def dead_url() -> str:
    """An endpoint nobody listens on: every call is refused at once (a connection error)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def make_campaign(tmp_path, base_url: str, **settings):
    ws = make_workspace(tmp_path, train_py=FIXTURE_TRAIN.read_text())
    s = Settings(**{"noise_runs": 1, "plateau_patience": 99, "max_iterations": 10, "llm_max_attempts": 1,
                    "prestart": False,      # runs are faked: no training process to start ahead
                    "runs_dir": tmp_path / "runs", **settings})
    run_dir = tmp_path / "runs" / "test"
    run_dir.mkdir(parents=True)
    agent = chat_model(model="fake-model", api_key="sk-test", base_url=base_url, timeout=5)
    models = dataclasses.replace(offline_models(), agent=agent, offline=False, label="fake")
    events: list[tuple[str, dict]] = []
    c = Campaign(settings=s, run_dir=run_dir, models=models, workspace=ws,
                 on_event=lambda kind, data: events.append((kind, data)))
    c.add_director()
    return c, events


def of(events, kind) -> list[dict]:
    return [data for k, data in events if k == kind]


CFG = {"configurable": {"thread_id": "campaign"}, "recursion_limit": 10_000}


def test_a_dead_endpoint_waits_instead_of_burning_iterations_then_stops(tmp_path):
    c, events = make_campaign(tmp_path, dead_url(), max_llm_outage=0.02)   # 1.2 s
    started = time.monotonic()
    final = build_graph(c).invoke({}, CFG)
    took = time.monotonic() - started
    rows = results.rows(c.results_path)
    # the two iterations that did fail are recorded; the waiting added no row and no iteration
    assert [r.status for r in rows] == ["keep", "no-run", "no-run"]
    assert final["iteration"] == outage.OUTAGE_ITERATIONS == 2
    for row in rows[1:]:          # said once, not "LLM unavailable: LLM unavailable ... (LLM unavailable: ...)"
        assert row.description.startswith("LLM unavailable after 1 attempts in ")
        assert row.description.endswith("last error: connection error")
        assert row.description.count("LLM unavailable") == 1 and row.reason.count("LLM unavailable") == 1
    errors = [d["message"] for d in of(events, "error")]
    assert len(errors) == 2 and all(m.count("LLM unavailable") == 1 for m in errors)
    waits = of(events, "llm_wait")
    assert len(waits) >= 3, waits
    seconds = [w["wait"] for w in waits]
    assert seconds[:3] == pytest.approx([0.1, 0.2, 0.4], abs=0.01)      # doubling, then capped
    assert all(s <= 0.4 + 1e-9 for s in seconds)
    assert all(w["error"] == "connection error" and w["limit"] == pytest.approx(1.2) for w in waits)
    assert [w["waits"] for w in waits] == list(range(1, len(waits) + 1))
    assert final["stop_reason"] == "the LLM endpoint was unreachable for 0.02 min (last error: connection error)"
    assert took < 10, took
    print(f"dead endpoint: {len(waits)} waits, stopped after {took:.2f}s")


def test_ctrl_c_stops_a_waiting_campaign_at_once_and_resume_keeps_the_clock(tmp_path, monkeypatch):
    monkeypatch.setattr(outage, "FIRST_WAIT", 60.0)
    monkeypatch.setattr(outage, "MAX_WAIT", 60.0)
    c, events = make_campaign(tmp_path, dead_url(), max_llm_outage=0.05)   # 3 s
    waiting = threading.Event()
    c.on_event.handler = lambda kind, data: (events.append((kind, data)), kind == "llm_wait" and waiting.set())
    threading.Thread(target=lambda: waiting.wait(30) and c.stop_requested.set(), daemon=True).start()
    g = build_graph(c, checkpointer=MemorySaver())
    final = g.invoke({}, CFG)
    assert final["stop_reason"] == "interrupted (Ctrl-C)"        # during the 60 s wait
    assert 0 < of(events, "llm_wait")[0]["wait"] <= 3.0    # cut to the 3 s deadline (less what the calls took)
    stopped = time.monotonic()
    since = final["llm_outage"]["since"]
    assert len(results.rows(c.results_path)) == 3

    # --resume: the outage's clock goes on from where it was
    c.stop_requested.clear()
    final = g.invoke(resume_input(c, g, CFG), CFG)
    assert final["llm_outage"]["since"] == since
    assert final["stop_reason"].startswith("the LLM endpoint was unreachable for 0.05 min")
    assert time.monotonic() - stopped < 4
    assert len(results.rows(c.results_path)) == 3

    # --resume after the outage stopped it: a fresh clock (a full 3 s to the deadline again)
    before = len(of(events, "llm_wait"))
    c.on_event.handler = lambda kind, data: (events.append((kind, data)),
                                             kind == "llm_wait" and c.stop_requested.set())
    final = g.invoke(resume_input(c, g, CFG), CFG)
    assert final["llm_outage"]["since"] > since and final["stop_reason"] == "interrupted (Ctrl-C)"
    assert 1.5 < of(events, "llm_wait")[before]["wait"] <= 3.0    # not the spent clock's 0 (a busy machine: less)
    assert len(results.rows(c.results_path)) == 3


def test_an_endpoint_that_comes_back_resumes_normal_iterations(tmp_path):
    with FakeOpenAI() as server:
        server.push(drop(), drop(),                   # iterations 1 and 2: no answer
                    drop(),                           # the first probe: still down
                    reply("ok"),                      # the second probe: back
                    tool_calls_reply(("run_training", {})), reply("trained after the outage"))
        c, events = make_campaign(tmp_path, server.base_url, max_iterations=3)
        final = build_graph(c).invoke({}, CFG)
        probes = [r.body["messages"][-1]["content"] for r in server.requests[2:4]]
    rows = results.rows(c.results_path)
    assert [r.status for r in rows] == ["keep", "no-run", "no-run", "discard"]
    assert rows[3].iteration == 3 and rows[3].description == "trained after the outage"
    assert [w["wait"] for w in of(events, "llm_wait")] == pytest.approx([0.1, 0.2], abs=0.01)
    assert len(of(events, "llm_back")) == 1
    assert probes == [outage.PROBE, outage.PROBE]
    assert final["stop_reason"] == "reached --max-iterations 3" and final["llm_outage"] is None


# -----------------------------------------------------------------------------
# the rules, without a graph

def test_outage_record_schedule_and_stop_reason():
    failed = {"llm_error": "connection error", "llm_down_since": 100.0}
    one = outage.after_iteration({}, failed, now=110.0)
    assert one == {"since": 100.0, "iterations": 1, "waits": 0, "checked_at": 110.0, "error": "connection error"}
    assert not outage.down({"llm_outage": one})
    two = outage.after_iteration({"llm_outage": one}, {**failed, "llm_down_since": 150.0}, now=160.0)
    assert two["since"] == 100.0 and two["iterations"] == 2 and outage.down({"llm_outage": two})
    assert outage.after_iteration({"llm_outage": two}, {"run": None}) is None      # it answered: over
    assert outage.next_wait({**two, "waits": 0}, limit_s=3600, now=160.0) == 0.1
    assert outage.next_wait({**two, "waits": 1}, limit_s=3600, now=160.0) == 0.2
    assert outage.next_wait({**two, "waits": 9}, limit_s=3600, now=160.0) == 0.4
    assert outage.next_wait({**two, "waits": 10_000}, limit_s=3600, now=160.0) == 0.4
    assert outage.next_wait(two, limit_s=60, now=159.95) == pytest.approx(0.05)     # never past the deadline
    assert outage.next_wait(two, limit_s=60, now=500.0) == 0.0
    assert outage.stop_reason(two, 1.0) == "the LLM endpoint was unreachable for 1 min (last error: connection error)"
    assert outage.stop_reason(two, 1.5) == "" and outage.stop_reason(one, 0.1) == "" and outage.stop_reason(None, 1) == ""
    # --resume: only a campaign the outage ended restarts the clock
    assert outage.on_resume({"llm_outage": two, "stop_reason": "interrupted (Ctrl-C)"}) == {}
    fresh = outage.on_resume({"llm_outage": two, "stop_reason": outage.stop_reason(two, 1.0)})["llm_outage"]
    assert fresh["since"] > 1e9 and fresh["since"] == fresh["checked_at"] and fresh["waits"] == 0
    assert outage.down({"llm_outage": fresh}) and outage.stop_reason(fresh, 1.0) == ""


def test_max_llm_outage_setting():
    from graph.configuration import parse_settings
    assert Settings().max_llm_outage == 30
    assert parse_settings(["--max-llm-outage", "5"]).max_llm_outage == 5
    with pytest.raises(SystemExit):
        parse_settings(["--max-llm-outage", "0"])
