"""The director: fires exactly after K stalls (never before), reads papers without waiting on
arXiv, falls back when arXiv or the LLM fails, and its directive reaches the agent and results.tsv.

The campaign tests drive the real compiled graph (real workspace, real tools, the offline
researcher as the agent) with training faked: the baseline scores 1.0, experiments score what
the test scripts. No test touches the network: arXiv is a fake search function or a fake client.
"""

import random
import re
import threading
import time
from pathlib import Path

import arxiv
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult

import graph.agent as agent_module
import graph.campaign as campaign_module
import tools.lc_tools as lc_tools
from graph import papers as papers_module
from graph import results
from graph.configuration import Settings
from graph.director import Director, clean_directive, short_form
from graph.agent import CHOICES
from graph.campaign import Campaign
from graph.graph import build_graph
from graph.llm import offline_models
from graph.papers import PaperCache, PaperSource, Query, arxiv_search, fetch_random_paper
from helpers_tools import make_workspace
from tools import RunResult

FIXTURE_TRAIN = Path(__file__).parent / "fixtures" / "train.py"
BASELINE_BPB = 1.0
WORSE_BPB = 1.1
PAPER = {"id": "2401.00001v1", "title": "Warmup Matters for Small Transformers",
         "summary": "We find that a short learning rate warmup helps small models.",
         "authors": ["A. Author"], "categories": ["cs.LG"], "url": "http://arxiv.org/abs/2401.00001v1",
         "fetched_at": "2026-01-01T00:00:00+00:00"}


# -----------------------------------------------------------------------------
# helpers


def run_result(val_bpb: float) -> RunResult:
    return RunResult(status="ok", message="ok", metrics={"val_bpb": val_bpb, "training_seconds": 1.0,
                                                         "total_seconds": 1.5, "peak_vram_mb": 0.0})


@pytest.fixture
def fake_training(monkeypatch):
    """Training without training: the baseline scores 1.0; experiment n scores scores[n-1]
    (default: always worse, a steady stall)."""
    scores: list[float] = []
    calls = []

    def experiment(workspace, **kwargs):
        calls.append(1)
        return run_result(scores[len(calls) - 1] if len(calls) <= len(scores) else WORSE_BPB)

    monkeypatch.setattr(campaign_module, "run_training", lambda workspace, **kw: run_result(BASELINE_BPB))
    monkeypatch.setattr(lc_tools, "run_training", experiment)
    return scores


@pytest.fixture
def agent_prompts(monkeypatch):
    """Every task (HumanMessage) the agent model received, by iteration."""
    seen: dict[int, str] = {}
    real = agent_module.invoke_with_retry

    def recording(model, messages, **kwargs):
        task = next(m for m in messages if isinstance(m, HumanMessage))
        iteration = int(re.match(r"# Experiment (\d+)", task.content).group(1))    # agent_task.md's title
        seen.setdefault(iteration, task.content)
        return real(model, messages, **kwargs)

    monkeypatch.setattr(agent_module, "invoke_with_retry", recording)
    return seen


def make_campaign(tmp_path, *, patience=3, iterations=6, papers=None, models=None, **settings):
    ws = make_workspace(tmp_path, train_py=FIXTURE_TRAIN.read_text())
    settings.setdefault("noise_runs", 1)    # one run per experiment: the fake scores are the verdicts
    s = Settings(offline=True, plateau_patience=patience, max_iterations=iterations, prestart=False,  # runs faked
                 runs_dir=tmp_path / "runs", **settings)
    run_dir = tmp_path / "runs" / "test"
    run_dir.mkdir(parents=True)
    events: list[tuple[str, dict]] = []
    c = Campaign(settings=s, run_dir=run_dir, models=models or offline_models(), workspace=ws,
                 on_event=lambda kind, data: events.append((kind, data)))
    c.add_director(papers=papers or PaperSource(PaperCache(tmp_path / "papers"), None), rng=random.Random(0))
    return c, events


def run_campaign(c: Campaign) -> dict:
    return build_graph(c).invoke({}, {"recursion_limit": 10_000})


def director_before(events) -> list[int]:
    """The iterations whose agent ran right after a director firing."""
    fired, pending = [], False
    for kind, data in events:
        if kind == "director":
            assert not pending, "the director fired twice without an agent in between"
            pending = True
        elif kind == "phase" and data["phase"] == "agent thinking" and pending:
            fired.append(data["iteration"])
            pending = False
    return fired


class ScriptedChat(BaseChatModel):
    """A chat model answering from a script (or raising), recording every prompt."""
    replies: list = []
    prompts: list = []

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        self.prompts.append("\n".join(str(m.content) for m in messages))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, BaseException):
            raise reply
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=reply))])


def with_models(director=None, reasoner=None):
    base = offline_models()
    return base.__class__(agent=base.agent, director=director or base.director, reasoner=reasoner or base.reasoner,
                          offline=False, label="scripted")


# -----------------------------------------------------------------------------
# the plateau counter


@pytest.mark.parametrize("patience, iterations, expected", [
    (3, 10, [4, 7, 10]),
    (2, 7, [3, 5, 7]),
    (3, 3, []),          # never before K stalls
    (1, 3, [2, 3]),
])
def test_fires_every_k_stalls_under_a_steady_stall(tmp_path, fake_training, patience, iterations, expected):
    c, events = make_campaign(tmp_path, patience=patience, iterations=iterations)
    final = run_campaign(c)
    assert director_before(events) == expected
    assert final["iteration"] == iterations and final["stall"] == iterations   # stall is not reset
    assert final["plateau"] == (iterations - expected[-1] + 1 if expected else iterations)


def test_a_keep_restarts_the_count(tmp_path, fake_training):
    fake_training.extend([WORSE_BPB, 0.9, WORSE_BPB, WORSE_BPB, WORSE_BPB, WORSE_BPB])   # iteration 2 keeps
    c, events = make_campaign(tmp_path, patience=2, iterations=6)
    final = run_campaign(c)
    assert director_before(events) == [5]      # not before 3 (the keep reset the count), then after 3, 4
    assert final["best_val_bpb"] == 0.9 and final["stall"] == 4


def test_director_nodes_are_visible_in_the_graph(tmp_path):
    c, _ = make_campaign(tmp_path)
    nodes = set(build_graph(c).get_graph(xray=True).nodes)
    assert {"director:summarize", "director:paper", "director:directive"} <= nodes


# -----------------------------------------------------------------------------
# the directive reaches the agent and results.tsv


def test_directive_reaches_the_agent_prompt_and_the_results_row(tmp_path, fake_training, agent_prompts):
    c, events = make_campaign(tmp_path, patience=2, iterations=4)
    run_campaign(c)
    directives = [d for kind, d in events if kind == "director"]
    assert len(directives) == 1 and directives[0]["text"].startswith("I think you could try")
    text = directives[0]["text"]

    assert text in agent_prompts[3] and "Directive from the director" in agent_prompts[3]
    for i in (1, 2, 4):
        assert "Directive from the director" not in agent_prompts[i]   # only the iteration after a firing

    rows = {r.iteration: r for r in results.rows(c.results_path)}
    assert rows[3].directive == directives[0]["short"] and len(rows[3].directive) <= 120
    assert rows[3].agent_choice in CHOICES
    assert all(not rows[i].directive and not rows[i].agent_choice for i in (0, 1, 2, 4))


def test_the_offline_director_uses_the_paper_and_never_names_it(tmp_path, fake_training):
    cache = PaperCache(tmp_path / "papers")
    cache.save(PAPER)
    c, events = make_campaign(tmp_path, patience=1, iterations=2, papers=PaperSource(cache, None))
    run_campaign(c)
    papers = [d for kind, d in events if kind == "paper"]
    assert papers[0]["title"] == PAPER["title"] and papers[0]["source"].startswith("cache")
    for kind, d in events:
        if kind == "director":
            assert PAPER["title"].lower() not in d["text"].lower()


# -----------------------------------------------------------------------------
# the LLM path and its fallback


def test_llm_director_gets_summary_history_stall_and_paper(tmp_path, fake_training):
    summarizer = ScriptedChat(replies=["- DEPTH 8, Muon for matrices, AdamW for the rest"], prompts=[])
    reasoner = ScriptedChat(replies=["<think>the warmup paper...</think>I think you could try a 5% warmup, "
                                     "as in Warmup Matters for Small Transformers. It steadies Muon early."],
                            prompts=[])
    cache = PaperCache(tmp_path / "papers")
    cache.save(PAPER)
    c, events = make_campaign(tmp_path, patience=2, iterations=2, papers=PaperSource(cache, None),
                              models=with_models(summarizer, reasoner))
    out = c.director.subgraph().invoke({"iteration": 2, "stall": 2, "plateau": 2, "best_val_bpb": 1.0,
                                        "baseline_val_bpb": 1.0})
    assert "MATRIX_LR = 0.04" in summarizer.prompts[0]          # it read train.py
    prompt = reasoner.prompts[0]
    assert "Muon for matrices" in prompt and PAPER["summary"] in prompt and "The last 2 experiment(s)" in prompt
    assert out["code_summary"].startswith("- DEPTH 8")
    assert out["directive"] == ("I think you could try a 5% warmup, as in a recent idea. It steadies Muon early.")
    assert out["directive_short"] == "I think you could try a 5% warmup, as in a recent idea."
    assert out["plateau"] == 0 and out["paper"]["id"] == PAPER["id"]


def test_llm_failure_falls_back_to_the_offline_director(tmp_path, fake_training):
    down = ScriptedChat(replies=[ConnectionError("connection refused")], prompts=[])
    broken = ScriptedChat(replies=[ValueError("400 bad request")], prompts=[])
    c, events = make_campaign(tmp_path, patience=1, iterations=2, models=with_models(down, broken),
                              llm_max_attempts=1)
    run_campaign(c)          # the campaign goes on
    directives = [d for kind, d in events if kind == "director"]
    assert len(directives) == 1 and directives[0]["text"].startswith("I think you could try")
    assert directives[0]["fallback"]
    errors = [d["message"] for kind, d in events if kind == "error"]
    assert any("summarize" in e and "offline director" in e for e in errors)
    assert any("directive" in e and "offline director" in e for e in errors)


def test_short_form_and_cleaning():
    long = ("I think you could try setting UNEMBEDDING_LR to 0.00267, from 0.004 now: the history has barely "
            "touched UNEMBEDDING_LR, and the output layer's learning rate shapes the early loss curve.")
    assert short_form(long) == "I think you could try setting UNEMBEDDING_LR to 0.00267, from 0.004 now"
    assert short_form("I think you could try MATRIX_LR 0.06, e.g. higher. Then more.") == \
        "I think you could try MATRIX_LR 0.06, e.g. higher."
    assert len(short_form("word " * 100)) <= 120
    assert clean_directive('"I think you could try 2401.00001v1 ideas."', PAPER) == "I think you could try a recent idea ideas."


# -----------------------------------------------------------------------------
# arXiv: the query ladder, the real client wrapper, failures and time-outs


def test_no_result_drops_the_category_then_tries_another_term():
    queries = []
    paper = fetch_random_paper(["optimizer", "attention"], ["cs.LG", "cs.CL"],
                               lambda q: queries.append(q) or None, random.Random(1))
    assert paper is None
    texts = [q.text for q in queries]
    assert len(texts) == 4
    assert texts[0].startswith('all:"') and " AND cat:cs." in texts[0]
    assert texts[1] == texts[0].split(" AND ")[0]                 # the same term, any category
    assert queries[2].term != queries[0].term and " AND cat:" in texts[2]
    assert texts[3] == f'all:"{queries[2].term}"'
    assert all(0 <= q.offset < papers_module.MAX_OFFSET for q in queries)


def test_the_ladder_stops_at_the_first_paper():
    queries = []
    answer = lambda q: queries.append(q) or (PAPER if q.category is None else None)   # noqa: E731
    assert fetch_random_paper(["optimizer"], ["cs.LG"], answer, random.Random(2)) == PAPER
    assert [q.category for q in queries] == ["cs.LG", None]


class FakeArxivClient:
    made: list = []

    def __init__(self, page_size=100, delay_seconds=3.0, num_retries=3):
        self.kwargs = dict(page_size=page_size, delay_seconds=delay_seconds, num_retries=num_retries)
        self.searches = []
        FakeArxivClient.made.append(self)

    def results(self, search, offset=0):
        self.searches.append((search.query, search.max_results, offset, search.sort_by))
        if "empty" in search.query:
            return iter(())
        if "boom" in search.query:
            raise arxiv.HTTPError("https://export.arxiv.org/api/query", 0, 503)
        return iter([arxiv.Result("http://arxiv.org/abs/2401.00001v1", title="Warmup  Matters\n for Small",
                                  summary="An\nabstract.", authors=[arxiv.Result.Author("A. Author")],
                                  categories=["cs.LG"])])


def test_arxiv_search_asks_for_one_paper_at_the_offset(monkeypatch):
    FakeArxivClient.made = []
    monkeypatch.setattr(arxiv, "Client", FakeArxivClient)
    search = arxiv_search()
    paper = search(Query("optimizer", "cs.LG", 17))
    client = FakeArxivClient.made[0]
    assert client.kwargs == {"page_size": papers_module.PAGE_SIZE, "delay_seconds": papers_module.DELAY_SECONDS,
                             "num_retries": papers_module.NUM_RETRIES}
    assert client.searches == [('all:"optimizer" AND cat:cs.LG', 18, 17, arxiv.SortCriterion.Relevance)]
    assert paper["id"] == "2401.00001v1" and paper["title"] == "Warmup Matters for Small"
    assert paper["summary"] == "An abstract." and paper["authors"] == ["A. Author"]
    assert set(paper) == {"id", "title", "summary", "authors", "categories", "url", "fetched_at"}
    assert search(Query("empty", None, 3)) is None
    with pytest.raises(arxiv.HTTPError):
        search(Query("boom", None, 0))


def source_with(tmp_path, fetch, timeout=5.0, cached=False) -> PaperSource:
    cache = PaperCache(tmp_path / "papers")
    if cached:
        cache.save(PAPER)
    return PaperSource(cache, fetch, timeout=timeout, rng=random.Random(0))


def test_a_fetched_paper_is_cached_on_disk_and_reused_offline(tmp_path):
    src = source_with(tmp_path, lambda: PAPER)
    src.start()
    assert src.wait(5)
    paper, where = src.take()
    assert paper == PAPER and where == "arxiv (prefetched)"
    assert (tmp_path / "papers" / "2401.00001v1.json").is_file()
    assert src.wait(5)       # take() re-armed a fetch for the next firing

    offline = PaperSource(PaperCache(tmp_path / "papers"), None)
    offline.start()          # no fetch function: never touches the network
    paper, where = offline.take()
    assert paper == PAPER and where.startswith("cache (offline")


@pytest.mark.parametrize("cached", [False, True])
def test_arxiv_error_gives_a_cached_paper_or_none(tmp_path, cached):
    def fail():
        raise arxiv.HTTPError("https://export.arxiv.org/api/query", 1, 503)
    src = source_with(tmp_path, fail, cached=cached)
    src.start()
    assert src.wait(5)
    assert "HTTPError" in src.last_error
    paper, where = src.take()
    if cached:
        assert paper == PAPER and where.startswith("cache (arXiv gave nothing (HTTPError")
    else:
        assert paper is None and where.startswith("no paper this time (arXiv gave nothing (HTTPError")


def test_empty_result_gives_no_paper(tmp_path):
    src = source_with(tmp_path, lambda: None)
    src.start()
    assert src.wait(5)
    paper, where = src.take()
    assert paper is None and "no result" in where


def test_a_hanging_fetch_is_abandoned_after_the_timeout(tmp_path):
    release = threading.Event()
    calls = []

    def hang():
        calls.append(1)
        release.wait(30)
        return PAPER

    src = source_with(tmp_path, hang, timeout=0.2, cached=True)
    try:
        src.start()
        assert src.wait(5)                      # the prefetcher gave up on its own
        assert "timed out" in src.last_error
        paper, where = src.take()
        assert paper == PAPER and "timed out" in where
        assert src.wait(5) and len(calls) == 2  # take() armed a new fetch, which timed out too
    finally:
        release.set()


def test_the_prefetch_never_blocks_an_iteration(tmp_path, fake_training):
    """A fetch stuck for 30 s: the paper node answers at once, and the campaign runs on."""
    release = threading.Event()
    src = source_with(tmp_path, lambda: release.wait(30) and PAPER, timeout=60)
    try:
        c, events = make_campaign(tmp_path, patience=1, iterations=3, papers=src)
        started = time.monotonic()
        out = c.director.paper({"iteration": 1}, {})
        assert time.monotonic() - started < 1.0
        assert out["paper"] is None and src.busy
        started = time.monotonic()
        run_campaign(c)
        assert time.monotonic() - started < 20
        assert director_before(events) == [2, 3]
        sources = [d["source"] for kind, d in events if kind == "paper"]
        assert sources and all(s.startswith("no paper this time (the next paper is still being fetched") for s in sources)
    finally:
        release.set()


def test_open_campaign_attaches_a_director(tmp_path, cpu_data):
    from graph.campaign import open_campaign
    config, _ = cpu_data        # prepared already, in the tests' cache ($AUTORESEARCH_CACHE)
    settings = Settings(offline=True, runs_dir=tmp_path / "runs", campaign="c1", profile="cpu", data=config.data)
    c, resumed = open_campaign(settings, offline_models())
    assert isinstance(c.director, Director) and not resumed
    assert c.director.papers.fetch is None                      # offline: no network at all
    assert c.director.papers.cache.folder == Path(config.cache_dir) / "papers"


@pytest.mark.slow(12)
def test_end_to_end_on_the_cpu_harness(tmp_path, cpu_data, monkeypatch):
    """The real harness, sandbox and scorer for both experiments, on a train.py that trains nothing
    (helpers_runs.NOISY_TRAIN, with the template's constants): a discard, the director, an
    experiment that carries its directive. min_improvement is huge so nothing is kept: the stall is
    certain. Only the baseline is faked, to save a run."""
    monkeypatch.setattr(campaign_module, "run_training", lambda workspace, **kw: run_result(BASELINE_BPB))
    from helpers_runs import NOISY_TRAIN
    from nanochat.prepare import HarnessConfig
    from tools import Workspace
    config, _ = cpu_data
    pinned = HarnessConfig(profile="cpu", data=config.data, time_budget=1, cache_dir=config.cache_dir)
    ws = Workspace.create(tmp_path / "ws", pinned, NOISY_TRAIN.read_text())
    s = Settings(offline=True, plateau_patience=1, max_iterations=2, min_improvement=100.0, runs_dir=tmp_path / "runs")
    run_dir = tmp_path / "runs" / "e2e"
    run_dir.mkdir(parents=True)
    events = []
    c = Campaign(settings=s, run_dir=run_dir, models=offline_models(), workspace=ws,
                 on_event=lambda kind, data: events.append((kind, data)))
    c.add_director(papers=PaperSource(PaperCache(tmp_path / "papers"), None))
    final = run_campaign(c)
    assert final["iteration"] == 2 and director_before(events) == [2]
    rows = {r.iteration: r for r in results.rows(c.results_path)}
    assert rows[1].status in ("discard", "crash") and not rows[1].directive
    assert rows[2].directive.startswith("I think you could try") and rows[2].agent_choice in CHOICES
