"""The campaign graph for LangGraph Studio and `langgraph dev` (named in langgraph.json).

    make studio            # installs the `studio` extra, runs `langgraph dev --no-reload --no-browser`

`make_graph` builds a campaign from the settings of the environment and `.env` (the same
`AUTORESEARCH_*` variables as the CLI; no command line here): campaign `$AUTORESEARCH_CAMPAIGN`, or
"studio", under `$AUTORESEARCH_RUNS_DIR`, or STUDIO_RUNS_DIR: outside the repository, so that what a
campaign writes (train.py, the harness copy) never trips the dev server's file watcher. The first
call creates its run dir and workspace, later ones reopen it; the campaign is opened once per server
process (reopening kills stale training processes, which would be the running one's), so the
server may call the factory as often as it likes. The factory is async and does its blocking work
(imports, git, data preparation) in a thread: the dev server's blockbuster forbids blocking calls on
its event loop. The graph is compiled without a checkpointer: the LangGraph server brings its own.
Start a run with the input `{}`; stop conditions are the CLI's (`AUTORESEARCH_MAX_ITERATIONS`, a
STOP file, ...). A thread whose state belongs to another campaign (a run the server persisted in
`.langgraph_api/` and resumes after a restart with other settings) is refused (graph/graph.py:
foreign), never replayed into this one.

Traces go where the server sends them (LangSmith when its variables are set); the run dir's
traces.jsonl is written by `python -m graph.run` only.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from langchain_core.runnables import RunnableConfig

STUDIO_CAMPAIGN = "studio"
STUDIO_RUNS_DIR = Path.home() / ".local" / "share" / "autoresearch-graph" / "runs"

_lock = threading.Lock()
_graphs: dict[Path, object] = {}     # run dir -> compiled graph: one campaign opening per process


def studio_settings():
    from graph.configuration import Settings
    settings = Settings()      # environment and .env only: the server owns the command line
    if "campaign" not in settings.model_fields_set:   # not the CLI's date default: one stable campaign
        settings.campaign = STUDIO_CAMPAIGN
    if "runs_dir" not in settings.model_fields_set:   # not runs/: the dev server watches the repository
        settings.runs_dir = STUDIO_RUNS_DIR
    return settings


def open_studio_campaign(settings):
    """The settings' campaign, opened as the CLI opens it: reopened if it exists, else created."""
    from graph.campaign import WORKSPACE_DIR, open_campaign
    from graph.llm import make_models
    run_dir = (settings.runs_dir / settings.campaign).resolve()
    exists = (run_dir / WORKSPACE_DIR).exists()
    campaign, _ = open_campaign(settings.model_copy(update={"resume": exists}), make_models(settings))
    return campaign


def studio_graph():
    """The compiled campaign graph (no checkpointer), built once per run dir and process. Blocking."""
    from graph.graph import build_graph
    settings = studio_settings()
    key = (settings.runs_dir / settings.campaign).resolve()
    with _lock:
        if key not in _graphs:
            _graphs[key] = build_graph(open_studio_campaign(settings))
        return _graphs[key]


async def make_graph(config: RunnableConfig | None = None):
    """The factory langgraph.json names: studio_graph(), off the server's event loop."""
    return await asyncio.to_thread(studio_graph)
