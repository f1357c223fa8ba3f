"""Traces: the campaign's run tree in a LangSmith server (a local fake) and in traces.jsonl, no secret in either."""

import asyncio
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from graph import results
from helpers_runs import NOISY_TRAIN
from graph.configuration import Credentials
from graph.llm import chat_model, invoke_with_retry
from graph.offline import OfflineDirector
from graph.prompts import PACKAGED_DIR
from graph.tracing import (RUN_FIELDS, TRACES_FILE, JsonlTracer, Redactor, annotate, read_traces,
                           start_tracing, upload_traces)
from tests.fake_langsmith import FakeLangSmith
from tests.fake_openai import FakeOpenAI, reply, tool_calls_reply

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-proj-TRACESECRET0123456789abcdef"              # a provider key (credentials)
TOKEN = "hunter2-service-token-42"                       # a *_TOKEN variable: not key-shaped at all
LS_KEY = "lsv2_pt_0123456789abcdef0123456789abcdef_0123456789"   # LangSmith's own key
SECRETS = (KEY, TOKEN, LS_KEY)
NODE_KEYS = ("campaign", "iteration", "commit", "status")


def metadata(run: dict) -> dict:
    return (run.get("extra") or {}).get("metadata") or {}


def id_path(run: dict) -> list[str]:
    """The run ids of a dotted order, root first (each tracer stamps its own start times)."""
    return [part.split("Z", 1)[1] for part in run["dotted_order"].split(".")]


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a secret leaked into {where}"


@pytest.fixture
def secrets_env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("MY_SERVICE_TOKEN", TOKEN)


@pytest.fixture
def langsmith(monkeypatch):
    """A fake LangSmith server, and the standard variables pointing at it (langsmith caches them)."""
    from langsmith import utils as ls_utils

    def clear():
        ls_utils.get_env_var.cache_clear()
        ls_utils.get_tracer_project.cache_clear()

    with FakeLangSmith() as server, monkeypatch.context() as mp:
        for name in ("LANGCHAIN_TRACING_V2", "LANGCHAIN_ENDPOINT", "LANGCHAIN_API_KEY", "LANGCHAIN_PROJECT"):
            mp.delenv(name, raising=False)
        mp.setenv("LANGSMITH_TRACING", "true")
        mp.setenv("LANGSMITH_API_KEY", LS_KEY)
        mp.setenv("LANGSMITH_ENDPOINT", server.url)
        mp.setenv("LANGSMITH_PROJECT", "autoresearch-test")
        clear()
        try:
            yield server
        finally:
            mp.undo()
            clear()


@pytest.fixture
def no_langsmith(monkeypatch):
    from langsmith import utils as ls_utils
    for name in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING"):
        monkeypatch.delenv(name, raising=False)
    ls_utils.get_env_var.cache_clear()
    yield
    ls_utils.get_env_var.cache_clear()


# -----------------------------------------------------------------------------
# a real campaign, traced


@pytest.mark.slow(12)
def test_a_campaign_reaches_langsmith_as_a_tree_and_the_run_dir_as_jsonl(tmp_path, cache_dir, tiny_corpus,
                                                                          secrets_env, langsmith):
    from graph.run import main
    prompts = tmp_path / "prompts"      # the secrets reach the agent's prompt (and so the LLM runs' inputs)
    prompts.mkdir()
    (prompts / "agent_system.md").write_text((PACKAGED_DIR / "agent_system.md").read_text()
                                             + f"\nTest credentials: {KEY} and {TOKEN} and {LS_KEY}.\n")
    argv = ["--campaign", "traced", "--runs-dir", str(tmp_path / "runs"), "--offline", "--profile", "cpu",
            "--time-budget", "1", "--max-iterations", "1", "--data", str(tiny_corpus), "--prompts-dir", str(prompts),
            "--noise-runs", "1",   # one run per experiment: the tree below has no confirm node
            "--train", str(NOISY_TRAIN)]     # a train.py that trains nothing: the loop is traced, not the model

    assert main(argv) == 0      # main flushes the LangSmith client before it returns

    server = langsmith
    run_dir = tmp_path / "runs" / "traced"
    rows = {r.iteration: r for r in results.rows(run_dir / "results.tsv")}

    # one trace: the root, then one run per node execution, in order
    [root] = server.children(None)
    assert root["name"] == "campaign" and root["end_time"] and not root.get("error")
    assert metadata(root)["campaign"] == "traced" and metadata(root)["models"].startswith("offline")
    nodes = server.children(root["id"])
    assert [n["name"] for n in nodes] == ["setup", "stop_check", "agent", "judge", "stop_check"]
    assert all(r["trace_id"] == root["id"] for r in server.runs.values())
    setup, plateau, agent, judge, last = nodes

    # every node run says which campaign, iteration, commit and status it is about
    for node in nodes:
        assert all(metadata(node).get(k) is not None for k in NODE_KEYS), (node["name"], metadata(node))
        assert metadata(node)["campaign"] == "traced"
    assert {k: metadata(setup)[k] for k in ("iteration", "commit", "val_bpb", "status")} == \
        {"iteration": 0, "commit": rows[0].commit, "val_bpb": rows[0].val_bpb, "status": "keep"}
    assert {k: metadata(judge)[k] for k in ("iteration", "commit", "val_bpb", "status")} == \
        {"iteration": 1, "commit": rows[1].commit, "val_bpb": rows[1].val_bpb, "status": rows[1].status}
    assert metadata(agent)["iteration"] == 1 and metadata(agent)["commit"] == rows[0].commit
    assert metadata(agent)["status"] == "ok" and metadata(agent)["val_bpb"] == rows[1].val_bpb
    assert metadata(plateau)["status"] == "continue" and metadata(last)["status"] == "stop"

    # under agent: its LLM calls, with token usage, and its tool calls, named after the tools
    steps = server.children(agent["id"])
    llm_runs = [r for r in steps if r["run_type"] == "llm"]
    assert [r["name"] for r in steps if r["run_type"] == "tool"] == ["read_file", "apply_patch", "run_training"]
    assert len(llm_runs) == 4
    for run in llm_runs:
        usage = metadata(run)["usage_metadata"]
        assert usage["input_tokens"] > 0 and usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert metadata(run)["iteration"] == 1      # what the node annotated reaches its children
    assert "val_bpb" in json.dumps(steps[-2]["outputs"])     # run_training's answer

    # the run dir holds the same runs, as LangSmith run fields, one a line
    jsonl_text = (run_dir / TRACES_FILE).read_text()
    lines = read_traces(run_dir / TRACES_FILE)
    assert len(lines) == len(jsonl_text.splitlines()) == len(server.runs)
    assert all(list(line) == list(RUN_FIELDS) for line in lines)
    by_id = {line["id"]: line for line in lines}
    assert set(by_id) == set(server.runs)
    for run_id, run in server.runs.items():
        line = by_id[run_id]
        assert (line["name"], line["run_type"], line["parent_run_id"], id_path(line)) == \
            (run["name"], run["run_type"], run.get("parent_run_id"), id_path(run))
        assert sorted(line["inputs"] or {}) == sorted(run.get("inputs") or {}), run["name"]    # chat: messages
        assert sorted(line["outputs"] or {}) == sorted(run.get("outputs") or {}), run["name"]
        for key in ("campaign", "iteration", "commit", "val_bpb", "status", "usage_metadata"):
            assert metadata(line).get(key) == metadata(run).get(key), (run["name"], key)
    assert lines[-1]["name"] == "campaign"      # written as runs end: the root last

    # no secret in anything that left, and they were there to leak: masked in the prompt
    assert_no_secret(server.raw, "the LangSmith payloads")
    assert_no_secret(jsonl_text, TRACES_FILE)
    assert "Test credentials: *** and *** and ***." in jsonl_text
    assert "Test credentials: *** and *** and ***." in server.raw

    # and traces.jsonl uploads later as the same tree
    from langsmith import Client
    with FakeLangSmith() as later:
        assert upload_traces(run_dir, client=Client(api_url=later.url, api_key="lsv2_pt_later")) == len(lines)
        assert {i: (r["name"], r.get("parent_run_id")) for i, r in later.runs.items()} == \
            {i: (r["name"], r["parent_run_id"]) for i, r in by_id.items()}


# -----------------------------------------------------------------------------
# the layer alone (no training): a real ChatOpenAI client, tool errors, annotate


class S(TypedDict, total=False):
    done: bool


def fake_campaign(run_dir: Path):
    settings = SimpleNamespace(campaign="unit", credentials=Credentials(openai_api_key=KEY))
    return SimpleNamespace(settings=settings, run_dir=run_dir, models=SimpleNamespace(label="fake", provider="openai"))


def one_node_graph(body):
    g = StateGraph(S)
    g.add_node("agent", body)
    g.add_edge(START, "agent")
    g.add_edge("agent", END)
    return g.compile()


def test_llm_and_tool_runs_nest_under_the_node_with_usage_and_without_secrets(tmp_path, secrets_env, langsmith):
    @tool
    def leak(what: str) -> str:
        """Answer with a secret."""
        return f"here: {KEY} / Authorization: Bearer {TOKEN}"

    @tool
    def fail(what: str) -> str:
        """Fail with a secret in the message."""
        raise ValueError(f"refused {what} with key {KEY}")

    with FakeOpenAI() as llm_server:
        llm_server.push(tool_calls_reply(("leak", {"what": "key"}), ("fail", {"what": TOKEN})),
                        reply(f"done, the key was {KEY}"))
        model = chat_model(model="fake-model", api_key=KEY, base_url=llm_server.base_url, timeout=10)

        def agent(state: S, config) -> dict:
            annotate(config, iteration=7, commit="abc1234")
            messages = [HumanMessage(f"use {KEY} and {TOKEN}")]
            ai = invoke_with_retry(model.bind_tools([leak, fail]), messages, max_attempts=1, config=config)
            messages.append(ai)
            messages.append(leak.invoke({**ai.tool_calls[0], "type": "tool_call"}, config))
            with pytest.raises(ValueError):
                fail.invoke(ai.tool_calls[1]["args"], config)
            invoke_with_retry(model, messages, max_attempts=1, config=config)
            annotate(config, val_bpb=1.25, status="keep")
            return {"done": True}

        tracing = start_tracing(fake_campaign(tmp_path))
        assert tracing.client is not None
        one_node_graph(agent).invoke({}, tracing.config())
        tracing.close()

    server = langsmith
    jsonl_text = (tmp_path / TRACES_FILE).read_text()
    for runs, where in ((list(server.runs.values()), "LangSmith"), (read_traces(tmp_path / TRACES_FILE), "jsonl")):
        by_name = {}
        for r in runs:
            by_name.setdefault(r["name"], []).append(r)
        [root], [node] = by_name["campaign"], by_name["agent"]
        assert node["parent_run_id"] == root["id"], where
        children = sorted((r for r in runs if r.get("parent_run_id") == node["id"]), key=lambda r: r["dotted_order"])
        assert [(r["name"], r["run_type"]) for r in children] == \
            [("ChatOpenAI", "llm"), ("leak", "tool"), ("fail", "tool"), ("ChatOpenAI", "llm")], where
        assert {k: metadata(node).get(k) for k in ("campaign", "iteration", "commit", "val_bpb", "status")} == \
            {"campaign": "unit", "iteration": 7, "commit": "abc1234", "val_bpb": 1.25, "status": "keep"}, where
        for llm in children[0], children[3]:
            assert metadata(llm)["usage_metadata"]["total_tokens"] == 15, where   # the server's usage
            assert metadata(llm)["iteration"] == 7 and metadata(llm)["campaign"] == "unit", where
        assert "ValueError" in children[2]["error"] and "***" in children[2]["error"], where
    assert_no_secret(server.raw, "the LangSmith payloads")
    assert_no_secret(jsonl_text, TRACES_FILE)
    assert "here: *** / Authorization: Bearer ***" in jsonl_text


def test_without_langsmith_only_the_jsonl_is_written(tmp_path, no_langsmith):
    def agent(state: S, config) -> dict:
        annotate(config, iteration=2)
        OfflineDirector().invoke([HumanMessage("summarize this")], config)
        return {"done": True}

    tracing = start_tracing(fake_campaign(tmp_path))
    assert tracing.client is None and [type(c) for c in tracing.callbacks] == [JsonlTracer]
    one_node_graph(agent).invoke({}, tracing.config())
    tracing.close()

    lines = read_traces(tmp_path / TRACES_FILE)
    assert [r["name"] for r in lines] == ["OfflineDirector", "agent", "campaign"]   # as each run ends
    llm, node, root = lines
    assert llm["parent_run_id"] == node["id"] and node["parent_run_id"] == root["id"] and root["parent_run_id"] is None
    assert llm["trace_id"] == node["trace_id"] == root["id"]
    assert llm["dotted_order"].startswith(node["dotted_order"] + ".")
    assert llm["start_time"] <= llm["end_time"] and [e["name"] for e in llm["events"]] == ["start", "end"]
    assert metadata(llm)["usage_metadata"]["output_tokens"] > 0      # the offline models estimate usage
    assert metadata(node)["iteration"] == metadata(llm)["iteration"] == 2
    assert annotate(None, iteration=1) is None and annotate({}, iteration=1) is None   # untraced: a no-op


def test_the_redactor_masks_secret_values_and_key_shapes_anywhere():
    env = {"OPENAI_API_KEY": KEY, "HF_TOKEN": "hf_abcdefghijklmnop", "DB_PASSWORD": "correct horse battery",
           "MY_SERVICE_TOKEN": TOKEN, "TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin",
           "AUTORESEARCH_CAMPAIGN": "night-of-the-long-runs"}
    r = Redactor.from_env(Credentials(deepseek_api_key="ds-0123456789abcdef"), env)
    assert set(r.secrets) == {KEY, "hf_abcdefghijklmnop", "correct horse battery", TOKEN, "ds-0123456789abcdef"}
    payload = {"messages": [[{"content": f"key {KEY}, pw correct horse battery"}]],
               TOKEN: ("ds-0123456789abcdef", 3, None), "other": "sk-live-abcdefghijkl and Bearer abc.def-ghi"}
    assert r(payload) == {"messages": [[{"content": "key ***, pw ***"}]], "***": ["***", 3, None],
                          "other": "*** and ***"}
    assert r("TOKENIZERS_PARALLELISM=false on /usr/bin, TOTAL_BATCH_TOKENS = 2**19") == \
        "TOKENIZERS_PARALLELISM=false on /usr/bin, TOTAL_BATCH_TOKENS = 2**19"


# -----------------------------------------------------------------------------
# LangGraph Studio


def test_langgraph_json_names_the_studio_factory_and_it_builds_the_campaign_graph(tmp_path, monkeypatch, no_langsmith,
                                                                                  cpu_data):
    config = json.loads((ROOT / "langgraph.json").read_text())
    assert config["dependencies"] == ["."] and config["env"] == ".env"
    path, _, attr = config["graphs"]["campaign"].partition(":")
    assert (ROOT / path).is_file() and path == "./graph/studio.py" and attr == "make_graph"

    for name in [k for k in os.environ if k.startswith("AUTORESEARCH_") and k != "AUTORESEARCH_CACHE"]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AUTORESEARCH_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("AUTORESEARCH_OFFLINE", "true")
    monkeypatch.setenv("AUTORESEARCH_PROFILE", "cpu")
    monkeypatch.setenv("AUTORESEARCH_DATA", cpu_data[0].data)   # prepared already (not the builtin corpus)
    monkeypatch.chdir(tmp_path)     # no .env from the developer's checkout
    from graph import studio

    assert asyncio.iscoroutinefunction(studio.make_graph)    # blocking work off the server's event loop
    graph = asyncio.run(studio.make_graph())
    assert {"setup", "stop_check", "agent", "judge"} <= set(graph.get_graph().nodes)
    assert graph.checkpointer is None       # the LangGraph server brings its own
    assert (tmp_path / "runs" / "studio" / "workspace" / "train.py").is_file()
    again = asyncio.run(studio.make_graph({"configurable": {}}))   # the server calls it again and again:
    assert again is graph                                          # the campaign is opened once

    monkeypatch.delenv("AUTORESEARCH_RUNS_DIR")     # by default, runs live outside the watched repository
    assert not studio.studio_settings().runs_dir.resolve().is_relative_to(ROOT)
