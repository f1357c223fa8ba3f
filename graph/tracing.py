"""Traces of a campaign: a tree of runs per graph invocation, in LangSmith and in the run dir.

    tracing = start_tracing(campaign)          # graph/run.py
    graph.invoke(inputs, {**cfg, **tracing.config()})
    tracing.close()                            # flushes LangSmith

The tree: a root run `campaign`, one child per node execution (`setup`, `stop_check`, `agent`,
`judge`, `director`, ...), and under `agent` its LLM calls and its tool calls (`read_file`,
`apply_patch`, `run_training`, `read_metrics`). Nodes tag their run with `annotate(config, ...)`:
campaign, iteration, commit, val_bpb, status (see docs/OBSERVABILITY.md).

Two sinks, same runs, same redaction:

- `traces.jsonl` in the run dir, always (cheap; a local record that survives without LangSmith):
  one finished run per line, in LangSmith's run fields, appended and flushed as each run ends.
- LangSmith, when `LANGSMITH_TRACING=true` (with `LANGSMITH_API_KEY`, optionally `LANGSMITH_ENDPOINT`
  and `LANGSMITH_PROJECT`): any server that speaks its API.

No secret leaves: every payload goes through the campaign's `Redactor` (tools/redact.py, the one
redactor of the campaign) that masks the provider keys, the values of `*_API_KEY` / `*_TOKEN` /
`*_SECRET` / `*_PASSWORD`-like environment variables, their encodings (reversed, hex, base64), and
anything shaped like a key (`sk-...`, `Bearer ...`, LangSmith's secret rules).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import sys
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackManager
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.langchain import LangChainTracer
from langchain_core.tracers.schemas import Run

from tools.redact import Redactor

TRACES_FILE = "traces.jsonl"
ROOT_RUN_NAME = "campaign"
# the fields of a LangSmith run that a trace line holds, in this order
RUN_FIELDS = ("id", "trace_id", "dotted_order", "parent_run_id", "name", "run_type", "start_time",
              "end_time", "inputs", "outputs", "error", "extra", "tags", "events")


# -----------------------------------------------------------------------------
# Run tree helpers


def annotate(config: Mapping | None, **metadata: Any) -> None:
    """Add metadata to the run of the node that got `config`, and to the runs it starts afterwards.

    For a LangGraph node `def node(state, config)`: `annotate(config, iteration=3, status="keep")`
    tags the node's own run (whatever the tracers: LangSmith and the JSONL file) and, from then on,
    the LLM and tool runs the node starts with that config. None values are left out.
    """
    metadata = {k: v for k, v in metadata.items() if v is not None}
    manager = (config or {}).get("callbacks")
    if not metadata or not isinstance(manager, BaseCallbackManager):
        return
    if manager.parent_run_id is not None:
        for handler in manager.handlers:
            run = getattr(handler, "run_map", {}).get(str(manager.parent_run_id))
            if run is not None:   # the tracer's own record of the node run, sent when it ends
                run.extra["metadata"] = {**(run.extra.get("metadata") or {}), **metadata}
    manager.add_metadata(metadata)


def usage_from_outputs(outputs: Mapping | None) -> dict | None:
    """Summed `usage_metadata` of an LLM run's generations (input/output/total tokens), or None."""
    total: dict[str, int] | None = None
    for batch in (outputs or {}).get("generations") or []:
        for generation in batch or []:
            message = generation.get("message") if isinstance(generation, Mapping) else None
            kwargs = message.get("kwargs") if isinstance(message, Mapping) else None
            usage = kwargs.get("usage_metadata") if isinstance(kwargs, Mapping) else None
            if isinstance(usage, Mapping):
                total = total or {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
                for key in total:
                    total[key] += int(usage.get(key) or 0)
    return total


def _jsonable(obj: Any) -> Any:
    """`json.dumps` default: LangChain objects as LangChain serializes them, the rest as data."""
    from langchain_core.load import Serializable, dumpd
    if isinstance(obj, Serializable):
        return dumpd(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if isinstance(obj, (uuid.UUID, Path)):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    return repr(obj)


def run_record(run: Run) -> dict[str, Any]:
    """A finished run as LangSmith's run fields, JSON-ready (before redaction)."""
    record = {f: getattr(run, f, None) for f in RUN_FIELDS}
    extra = {k: v for k, v in (run.extra or {}).items() if not k.startswith("__")}
    if run.run_type == "llm" and (usage := usage_from_outputs(run.outputs)) is not None:
        extra["metadata"] = {**(extra.get("metadata") or {}), "usage_metadata": usage}
    record["extra"] = extra
    return json.loads(json.dumps(record, default=_jsonable))


# -----------------------------------------------------------------------------
# Tracers


class JsonlTracer(BaseTracer):
    """Writes every finished run (any depth) as one redacted JSON line, flushed at once.

    Runs are written as they end (children before their parents), so a killed campaign keeps
    everything that finished. Runs keep no children in memory: a night-long trace stays small.
    """

    name = "jsonl-tracer"

    def __init__(self, path: str | Path, redactor: Redactor | None = None, **kwargs: Any):
        # chat models' inputs as messages (not flattened text), like LangSmith's own tracer
        super().__init__(_schema_format="original+chat", **kwargs)
        self.path = Path(path)
        self.redactor = redactor or Redactor()
        self._lock = threading.Lock()

    @staticmethod
    def _add_child_run(parent_run: Run, child_run: Run) -> None:
        pass   # each run is written on its own; no need to keep the tree

    def _persist_run(self, run: Run) -> None:
        pass   # only called for roots; every run is written by _on_run_update

    def _on_chat_model_start(self, run: Run) -> None:
        run.run_type = "llm"   # LangSmith's run type for chat models too

    def _on_run_update(self, run: Run) -> None:
        try:
            line = json.dumps(self.redactor(run_record(run)), ensure_ascii=False)
        except Exception as e:  # a trace problem must never stop the campaign
            print(f"warning: could not write the trace of run {run.name}: {e}", file=sys.stderr)
            return
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()


class LeanLangChainTracer(LangChainTracer):
    """LangChain's LangSmith tracer, minus the in-memory tree: each run is posted and patched on
    its own anyway, and a night-long campaign would otherwise keep every run in its root."""

    @staticmethod
    def _add_child_run(parent_run: Run, child_run: Run) -> None:
        pass


def langsmith_enabled() -> bool:
    from langsmith import utils as ls_utils
    return bool(ls_utils.tracing_is_enabled())


def langsmith_client(redactor: Redactor):
    """A LangSmith client (endpoint, key from the standard variables) that redacts inputs, outputs,
    metadata and errors before they leave."""
    from langsmith import Client
    return Client(anonymizer=redactor)


def read_traces(path: str | Path) -> list[dict[str, Any]]:
    """The runs of a traces.jsonl, in file order (a truncated last line is skipped)."""
    runs = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            runs.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return runs


# -----------------------------------------------------------------------------
# The campaign's tracing


@dataclasses.dataclass
class Tracing:
    """The callbacks and invoke config of one campaign run; `close()` flushes what is pending."""

    jsonl_path: Path
    redactor: Redactor
    callbacks: list
    metadata: dict[str, Any]
    client: Any = None          # the LangSmith client, when LangSmith tracing is on
    project: str | None = None

    def config(self) -> dict[str, Any]:
        """Keys to merge into the graph's invoke config."""
        return {"callbacks": self.callbacks, "run_name": ROOT_RUN_NAME, "metadata": dict(self.metadata)}

    def describe(self) -> str:
        where = f"{self.jsonl_path}"
        if self.client is not None:
            where += f" and LangSmith (project {self.project or 'default'} at {self.client.api_url})"
        return where

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.flush()
            except Exception as e:  # the campaign is recorded; a tracing outage is only a warning
                print(f"warning: could not flush the LangSmith traces: {e}", file=sys.stderr)


def start_tracing(campaign, *, environ: Mapping[str, str] | None = None) -> Tracing:
    """Tracing for a campaign (graph.graph.Campaign): the JSONL file always, LangSmith when enabled."""
    settings = campaign.settings
    redactor = getattr(campaign, "redactor", None) if environ is None else None
    redactor = redactor or Redactor.from_env(settings.credentials, environ)
    jsonl = campaign.run_dir / TRACES_FILE
    callbacks: list = [JsonlTracer(jsonl, redactor)]
    metadata = {
        "campaign": settings.campaign,
        "models": campaign.models.label,
        "provider": getattr(campaign.models, "provider", ""),
    }
    if getattr(campaign, "parallel", False):       # one trace tree per agent of a parallel campaign
        metadata.update(agent=campaign.agent, gpu=campaign.device)
    client = project = None
    if langsmith_enabled():
        from langsmith import utils as ls_utils
        try:
            client = langsmith_client(redactor)
            project = ls_utils.get_tracer_project()
            callbacks.append(LeanLangChainTracer(client=client, project_name=project))
        except Exception as e:  # a tracing misconfiguration must not stop a campaign
            print(f"warning: LangSmith tracing is on but could not start ({redactor.text(str(e))}); "
                  f"tracing to {jsonl} only", file=sys.stderr)
            client = project = None
    return Tracing(jsonl, redactor, callbacks, metadata, client, project)


# -----------------------------------------------------------------------------
# Upload later: `python -m graph.tracing upload runs/<campaign>`


def upload_traces(path: str | Path, client=None, project: str | None = None) -> int:
    """Send the runs of a traces.jsonl (or of a run dir's) to LangSmith; returns how many.

    Runs keep their ids and tree fields (trace_id, dotted_order, parent_run_id) and go parents
    first. `client`: default, one from the standard LANGSMITH_* variables (redacting again).
    """
    path = Path(path)
    if path.is_dir():
        path = path / TRACES_FILE
    client = client or langsmith_client(Redactor.from_env())
    runs = sorted(read_traces(path), key=lambda r: r.get("dotted_order") or "")
    for run in runs:
        fields = {k: run.get(k) for k in RUN_FIELDS if k not in ("name", "inputs", "run_type")}
        client.create_run(run["name"], run.get("inputs") or {}, run["run_type"], project_name=project, **fields)
    client.flush()
    return len(runs)


def main(argv: list[str] | None = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m graph.tracing",
                                     description="Upload a campaign's traces.jsonl to LangSmith (LANGSMITH_* variables).")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upload", help="upload runs/<campaign>/traces.jsonl")
    up.add_argument("path", help="a run dir or a traces.jsonl file")
    up.add_argument("--project", default=None, help="LangSmith project (default: $LANGSMITH_PROJECT)")
    args = parser.parse_args(argv)
    count = upload_traces(args.path, project=args.project)
    print(f"uploaded {count} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
