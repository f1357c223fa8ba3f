"""LLM token usage: each experiment's verdict row carries its agent's and director's tokens (the
measure rows none), --max-llm-tokens / --max-llm-cost stop a campaign with a clear reason after
the experiment is recorded, and a resumed campaign counts what its earlier sessions spent.

Like tests/test_director.py, the real compiled graph runs (real workspace and tools, the offline
researcher and director or a fake OpenAI server) with training faked, so a campaign is seconds.
"""

import random
import sqlite3
from pathlib import Path

import pytest
from langchain_core.outputs import ChatResult

import graph.campaign as campaign_module
import tools.lc_tools as lc_tools
from graph import results, usage
from graph.campaign import Campaign, resume_input
from graph.checkpoints import redacting_saver
from graph.configuration import Credentials, Settings
from graph.graph import build_graph
from graph.llm import make_models, offline_models
from graph.offline import OfflineDirector, OfflineResearcher
from graph.papers import PaperCache, PaperSource
from helpers_tools import make_workspace
from tests.fake_openai import FakeOpenAI, error, rate_limited, reply, tool_calls_reply
from tools import RunResult

FIXTURE_TRAIN = Path(__file__).parent / "fixtures" / "train.py"
CALL_IN, CALL_OUT = 100, 10        # what each call of the metered models reports


def run_result(val_bpb: float) -> RunResult:
    return RunResult(status="ok", message="ok", metrics={"val_bpb": val_bpb, "training_seconds": 1.0,
                                                         "total_seconds": 1.5, "peak_vram_mb": 0.0})


@pytest.fixture
def fake_training(monkeypatch):
    """The baseline and confirmation runs (Campaign.train) score `train_scores` in turn (then 1.0);
    the agent's runs score `agent_scores` in turn (then 1.1, worse: a steady stall)."""
    scores = {"train": [], "agent": []}

    def train(workspace, **kw):
        return run_result(scores["train"].pop(0) if scores["train"] else 1.0)

    def agent(workspace, **kw):
        return run_result(scores["agent"].pop(0) if scores["agent"] else 1.1)

    monkeypatch.setattr(campaign_module, "run_training", train)
    monkeypatch.setattr(lc_tools, "run_training", agent)
    return scores


class Metered:
    """Every reply reports CALL_IN / CALL_OUT tokens; `calls` (a field of the model) counts them."""

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        result = super()._generate(messages, stop, run_manager, **kwargs)
        result.generations[0].message.usage_metadata = {"input_tokens": CALL_IN, "output_tokens": CALL_OUT,
                                                        "total_tokens": CALL_IN + CALL_OUT}
        self.calls.append(1)
        return result


class MeteredResearcher(Metered, OfflineResearcher):
    calls: list = []


class MeteredDirector(Metered, OfflineDirector):
    calls: list = []


def metered_models():
    base = offline_models()
    agent, director = MeteredResearcher(calls=[]), MeteredDirector(calls=[])
    return base.__class__(agent=agent, director=director, reasoner=director, offline=True, label="metered")


def make_campaign(tmp_path, models=None, ws=None, **settings) -> Campaign:
    ws = ws or make_workspace(tmp_path, train_py=FIXTURE_TRAIN.read_text())
    kw = dict(offline=True, plateau_patience=99, max_iterations=3, runs_dir=tmp_path / "runs", noise_runs=1,
              prestart=False)     # runs are faked: no training process to start ahead
    s = Settings(**{**kw, **settings})
    run_dir = tmp_path / "runs" / "test"
    run_dir.mkdir(parents=True, exist_ok=True)
    c = Campaign(settings=s, run_dir=run_dir, models=models or metered_models(), workspace=ws)
    c.add_director(papers=PaperSource(PaperCache(tmp_path / "papers"), None), rng=random.Random(0))
    return c


def run(c: Campaign) -> dict:
    return build_graph(c).invoke({}, {"recursion_limit": 10_000})


def tokens(row) -> tuple:
    return (row.agent_input_tokens, row.agent_output_tokens, row.director_input_tokens, row.director_output_tokens)


# -----------------------------------------------------------------------------
# recording


def test_each_verdict_row_carries_its_agent_and_director_tokens(tmp_path, fake_training):
    models = metered_models()
    c = make_campaign(tmp_path, models, plateau_patience=1, max_iterations=3)   # the director fires before 2 and 3
    final = run(c)
    rows = results.rows(c.results_path)
    assert rows[0].fmt == "ours" and [r.iteration for r in rows] == [0, 1, 2, 3]
    assert tokens(rows[0]) == (0, 0, 0, 0)                  # the baseline calls no LLM
    agent_calls = [r.agent_input_tokens // CALL_IN for r in rows[1:]]
    assert all(n >= 2 for n in agent_calls)                  # a tool call and an answer at least
    assert all(r.agent_output_tokens == CALL_OUT * n for r, n in zip(rows[1:], agent_calls))
    assert sum(agent_calls) == len(models.agent.calls)       # every call counted once, on its experiment
    # the director's calls (a summary and a directive; the summary is cached while the code is the same)
    # are on the row of the experiment they preceded
    assert rows[1].director_input_tokens == 0
    assert rows[2].director_input_tokens > 0 and rows[3].director_input_tokens > 0
    assert (rows[2].director_input_tokens + rows[3].director_input_tokens) == CALL_IN * len(models.director.calls)
    assert not final.get("director_usage")                   # nothing left pending once recorded
    spent = usage.totals(rows)
    assert spent.total == (CALL_IN + CALL_OUT) * (len(models.agent.calls) + len(models.director.calls))


def test_measure_rows_carry_no_tokens(tmp_path, fake_training):
    # two runs per measured code: the baseline at 1.0 and 1.02, the candidate 0.9 confirmed at 0.9
    fake_training["train"] += [1.0, 1.02, 0.9]
    fake_training["agent"] += [0.9]
    c = make_campaign(tmp_path, noise_runs=2, max_iterations=1)
    run(c)
    rows = results.rows(c.results_path)
    assert [(r.iteration, r.status) for r in rows] == [(0, "measure"), (0, "keep"), (1, "measure"), (1, "keep")]
    assert tokens(rows[0]) == tokens(rows[2]) == (None, None, None, None)
    assert tokens(rows[1]) == (0, 0, 0, 0)
    assert rows[3].agent_input_tokens > 0 and rows[3].agent_output_tokens > 0


def test_usage_over_http_counts_the_successful_calls_only(tmp_path, fake_training):
    with FakeOpenAI() as server:
        # each answer reports 10 input and 5 output tokens (tests/fake_openai.py); the failures none
        server.push(rate_limited(retry_after="0"), tool_calls_reply(("run_training", {})), error(500),
                    reply("lr tweak over HTTP"))
        s = Settings(agent_model="fake-model", llm_max_attempts=3)
        creds = Credentials(openai_api_key="sk-test", openai_base_url=server.base_url)
        models = make_models(s.with_credentials(creds))
        c = make_campaign(tmp_path, models, offline=False, agent_model="fake-model", llm_max_attempts=3,
                          max_iterations=1)
        run(c)
    rows = results.rows(c.results_path)
    assert rows[1].description == "lr tweak over HTTP"
    assert tokens(rows[1]) == (20, 10, 0, 0)


# -----------------------------------------------------------------------------
# the stops


def test_max_llm_tokens_stops_after_the_experiment_is_recorded(tmp_path, fake_training):
    c = make_campaign(tmp_path, max_iterations=10, max_llm_tokens=1)
    final = run(c)
    rows = results.rows(c.results_path)
    assert [r.iteration for r in rows] == [0, 1]             # the experiment that crossed it is recorded
    spent = usage.totals(rows).total
    assert spent > 0
    assert final["stop_reason"].startswith(f"reached --max-llm-tokens 1: the campaign's LLM calls used {spent} tokens")


def test_max_llm_cost_stops_at_the_priced_total(tmp_path, fake_training):
    # each experiment: 2+ calls of 100 in / 10 out at $1M / $10M per million: $100 + $100 per call
    c = make_campaign(tmp_path, max_iterations=10, max_llm_cost=700, llm_price_in_per_mtok=1e6,
                      llm_price_out_per_mtok=1e7)
    final = run(c)
    rows = results.rows(c.results_path)
    cost = usage.totals(rows).cost(1e6, 1e7)
    before = usage.totals(rows[:-1]).cost(1e6, 1e7)
    assert cost >= 700 > before                              # it stopped at the first experiment that crossed it
    assert final["stop_reason"].startswith("reached --max-llm-cost 700.0: the campaign's LLM calls cost $")


def test_max_llm_cost_needs_a_price():
    with pytest.raises(ValueError, match="--max-llm-cost needs a price"):
        Settings(max_llm_cost=5)


def test_a_resumed_campaign_counts_its_earlier_sessions(tmp_path, fake_training):
    """The totals come from results.tsv: a new process (a new Campaign, a new connection to the
    checkpoints) that resumes counts the first session's tokens towards --max-llm-tokens."""
    db = tmp_path / "checkpoints.sqlite"
    cfg = {"configurable": {"thread_id": "campaign"}, "recursion_limit": 10_000}

    def session(ws=None, **settings):
        c = make_campaign(tmp_path, ws=ws, **settings)
        conn = sqlite3.connect(db, check_same_thread=False)
        try:
            g = build_graph(c, checkpointer=redacting_saver(conn, c.redactor))
            return c, g.invoke(resume_input(c, g, cfg), cfg)
        finally:
            conn.close()

    c, final = session(max_iterations=2)
    assert final["stop_reason"] == "reached --max-iterations 2"
    first = usage.totals(results.rows(c.results_path)).total
    assert first > 0
    # the limit lies just past the first session's total: one more experiment crosses it
    c, final = session(ws=c.workspace, max_iterations=10, max_llm_tokens=first + 1)
    rows = results.rows(c.results_path)
    assert [r.iteration for r in rows] == [0, 1, 2, 3]
    total = usage.totals(rows).total
    assert total > first
    assert final["stop_reason"].startswith(f"reached --max-llm-tokens {first + 1}: the campaign's LLM calls "
                                           f"used {total} tokens")
    # a limit already spent stops a resumed campaign before it starts another experiment
    c, final = session(ws=c.workspace, max_iterations=10, max_llm_tokens=first)
    assert [r.iteration for r in results.rows(c.results_path)] == [0, 1, 2, 3]
    assert final["stop_reason"].startswith(f"reached --max-llm-tokens {first}:")
