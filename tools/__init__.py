"""The agent's hands: read_file, apply_patch, run_training, read_metrics, confined to a campaign workspace."""

from tools.lc_tools import make_tools
from tools.supervisor import RunResult, kill_stale_runs, run_training
from tools.workspace import Workspace

__all__ = ["make_tools", "Workspace", "run_training", "RunResult", "kill_stale_runs"]
