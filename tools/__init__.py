"""The agent's hands: read_file, apply_patch, run_training, read_metrics, confined to a campaign workspace.

Names load on first use, so the supervisor and the sandbox (tools.supervisor) work without LangChain."""

import importlib

_HOMES = {"make_tools": "tools.lc_tools", "Workspace": "tools.workspace", "run_training": "tools.supervisor",
          "RunResult": "tools.supervisor", "kill_stale_runs": "tools.supervisor"}
__all__ = list(_HOMES)


def __getattr__(name):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'tools' has no attribute {name!r}")
