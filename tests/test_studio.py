"""LangGraph Studio: `langgraph dev` opens the campaign graph and runs it, and a thread holding another
campaign's state is refused, never replayed into this campaign (graph/studio.py, graph/graph.py: foreign)."""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from graph import results
from graph.campaign import CampaignError, open_campaign
from graph.configuration import Settings
from graph.graph import build_graph
from graph.llm import offline_models
from helpers_runs import NOISY_TRAIN

ROOT = Path(__file__).resolve().parent.parent
NO_CLI = "langgraph-cli[inmem] is not installed (the `studio` extra: make setup, or pip install -e '.[studio]')"
HAS_CLI = all(importlib.util.find_spec(m) for m in ("langgraph_cli", "langgraph_api", "langgraph_runtime_inmem"))


def test_a_thread_of_another_campaign_is_refused_not_replayed(tmp_path, cpu_data):
    config, _ = cpu_data
    settings = Settings(campaign="mine", runs_dir=tmp_path / "runs", profile="cpu", data=config.data,
                        offline=True, unsafe_no_sandbox=True)     # nothing trains here
    campaign, _ = open_campaign(settings, offline_models())
    graph = build_graph(campaign, checkpointer=InMemorySaver())
    other = "mine@0123456789ab"                      # same name, another workspace: another campaign
    assert campaign.identity.startswith("mine@") and campaign.identity != other

    cfg = {"configurable": {"thread_id": "stale"}}
    final = graph.invoke({"campaign": other}, cfg)    # from the start: setup and stop_check refuse
    assert final["stop_reason"].startswith("refused") and other in final["stop_reason"]
    assert final["campaign"] == other and "best_commit" not in final

    cfg = {"configurable": {"thread_id": "mid-way"}}  # resumed mid-way, at the judge: it raises
    graph.update_state(cfg, {"campaign": other, "iteration": 0, "best_commit": "abc",
                             "outcome": {"description": "x", "run": None}}, as_node="agent")
    with pytest.raises(CampaignError, match="belongs to campaign mine@0123456789ab"):
        graph.invoke(None, cfg)
    assert not campaign.results_path.exists()         # nothing recorded in this campaign


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env(tmp_path, data: str) -> dict:
    """Offline and isolated: no key, no tracing, no AUTORESEARCH_* but ours."""
    env = {k: v for k, v in os.environ.items()
           if not (k.endswith("_API_KEY") or k.startswith(("LANGSMITH_", "LANGCHAIN_", "OPENAI_", "DEEPSEEK_"))
                   or (k.startswith("AUTORESEARCH_") and k != "AUTORESEARCH_CACHE"))}
    env.update({"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                "PYTHONUNBUFFERED": "1", "LANGSMITH_TRACING": "false",
                "LANGGRAPH_CLI_NO_ANALYTICS": "1",
                "AUTORESEARCH_RUNS_DIR": str(tmp_path / "runs"), "AUTORESEARCH_CAMPAIGN": "t",
                "AUTORESEARCH_OFFLINE": "true", "AUTORESEARCH_PROFILE": "cpu", "AUTORESEARCH_DATA": data,
                "AUTORESEARCH_TIME_BUDGET": "1", "AUTORESEARCH_NOISE_RUNS": "1",
                "AUTORESEARCH_MAX_ITERATIONS": "1", "AUTORESEARCH_TRAIN": str(NOISY_TRAIN)})
    return env


@pytest.mark.slow(18)
@pytest.mark.skipif(not HAS_CLI, reason=NO_CLI)
def test_langgraph_dev_runs_a_campaign_to_the_end(tmp_path, cpu_data):
    import httpx
    from langgraph_sdk import get_sync_client
    config, _ = cpu_data
    server_dir = tmp_path / "server"            # its .langgraph_api/ and no .env of the checkout
    server_dir.mkdir()
    spec = json.loads((ROOT / "langgraph.json").read_text())
    spec["graphs"] = {g: str(ROOT / path) for g, path in spec["graphs"].items()}
    spec["dependencies"] = [str(ROOT)]
    spec.pop("env", None)
    (server_dir / "langgraph.json").write_text(json.dumps(spec))
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "langgraph_cli", "dev", "--no-reload", "--no-browser", "--port", str(port)],
                            cwd=server_dir, env=_server_env(tmp_path, config.data), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "langgraph dev did not come up in 120 s"
            time.sleep(0.5)

        client = get_sync_client(url=url)
        thread = client.threads.create()
        run = client.runs.create(thread["thread_id"], "campaign", input={})
        final = client.runs.join(thread["thread_id"], run["run_id"])
        status = client.runs.get(thread["thread_id"], run["run_id"])["status"]
        assert status == "success", (status, final, (tmp_path / "server.log").read_text()[-3000:])
        assert final["stop_reason"] == "reached --max-iterations 1", final
        assert final["campaign"].startswith("t@")
        rows = results.rows(tmp_path / "runs" / "t" / results.RESULTS_FILE)
        assert [r.iteration for r in rows] == [0, 1], [(r.iteration, r.status) for r in rows]
        assert rows[0].description == "baseline" and rows[0].status == results.KEEP

        stale = client.threads.create(graph_id="campaign")   # another campaign's state on this server: refused
        client.threads.update_state(stale["thread_id"], {"campaign": "other@0123456789ab"}, as_node="setup")
        run = client.runs.create(stale["thread_id"], "campaign", input=None)
        final = client.runs.join(stale["thread_id"], run["run_id"])
        assert final["stop_reason"].startswith("refused"), final
        assert len(results.rows(tmp_path / "runs" / "t" / results.RESULTS_FILE)) == 2
    finally:
        os.killpg(proc.pid, signal.SIGINT)        # as Ctrl-C: the server shuts down cleanly
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail("langgraph dev did not stop within 30 s of SIGINT")
        log.close()
    from helpers_runs import no_run_processes_left
    assert no_run_processes_left(tmp_path / "runs" / "t")
