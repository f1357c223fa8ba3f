"""The campaign graph for LangGraph Studio and `langgraph dev` (named in langgraph.json).

    langgraph dev          # from the repository root; Studio opens the graph "campaign"

`make_graph` builds a campaign from the settings of the environment and `.env` (the same
`AUTORESEARCH_*` variables as the CLI; no command line here): campaign `$AUTORESEARCH_CAMPAIGN`, or
"studio", under `$AUTORESEARCH_RUNS_DIR` (default `runs/`). The first call creates its run dir and
workspace; later calls reopen them, so the server may call the factory as often as it likes.
The graph is compiled without a checkpointer: the LangGraph server brings its own. Start a run
with the input `{}`; stop conditions are the CLI's (`AUTORESEARCH_MAX_ITERATIONS`, a STOP file, ...).

Traces go where the server sends them (LangSmith when its variables are set); the run dir's
traces.jsonl is written by `python -m graph.run` only.
"""

from __future__ import annotations

from langchain_core.runnables import RunnableConfig

from graph.campaign import WORKSPACE_DIR, Campaign, open_campaign
from graph.configuration import Settings
from graph.graph import build_graph
from graph.llm import make_models

STUDIO_CAMPAIGN = "studio"


def studio_settings() -> Settings:
    settings = Settings()      # environment and .env only: the server owns the command line
    if "campaign" not in settings.model_fields_set:   # not the CLI's date default: one stable campaign
        settings.campaign = STUDIO_CAMPAIGN
    return settings


def open_studio_campaign(settings: Settings) -> Campaign:
    """The settings' campaign, opened as the CLI opens it: reopened if it exists, else created."""
    run_dir = (settings.runs_dir / settings.campaign).resolve()
    exists = (run_dir / WORKSPACE_DIR).exists()
    campaign, _ = open_campaign(settings.model_copy(update={"resume": exists}), make_models(settings))
    return campaign


def make_graph(config: RunnableConfig | None = None):
    """The compiled campaign graph (no checkpointer), for the LangGraph server."""
    return build_graph(open_studio_campaign(studio_settings()))
