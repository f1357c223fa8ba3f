"""Shared by the supervisor, prestart and hostile-train.py tests: workspaces whose train.py is a tiny
real model on the real harness (so a run is seconds), and process checks."""

import json
import os
import textwrap
from pathlib import Path

from tools.supervisor import run_processes
from tools.workspace import Workspace

# A real train.py that trains nothing, with the template's constants for the offline researcher to
# turn: campaigns that test the loop, not the model, run it (a run costs ~5 s of CPU, the template's ~8).
NOISY_TRAIN = Path(__file__).parent / "fixtures" / "noisy_train.py"

# a causal, position-wise model: trains nothing, exports in a second, scores log-ish(vocab)
TINY = '''\
import torch
import torch.nn as nn
from nanochat.prepare import load_harness

H = load_harness()


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(H.vocab_size, 16)
        self.head = nn.Linear(16, H.vocab_size)

    def forward(self, idx):
        return self.head(self.emb(idx))


model = Tiny()
{body}
H.finish(model, training_seconds=0.1, num_steps=1, num_params=1, depth=1, mfu_percent=0.0, startup_seconds=0.0)
'''


def tiny_train(body: str = "", finish: bool = True) -> str:
    text = TINY.replace("{body}", textwrap.dedent(body))
    return text if finish else text.rsplit("H.finish(", 1)[0]


def make_run(tmp_path, cpu_data, train_py: str, name: str = "run"):
    """(workspace, logs dir) of a fresh campaign dir on the tests' prepared data."""
    config, _ = cpu_data
    run_dir = tmp_path / name
    ws = Workspace.create(run_dir / "workspace", config, train_py)
    return ws, run_dir / "logs"


def processes_of_runs(run_dir=None) -> list[int]:
    """Pids of every live process of a training or scoring run (of the campaign in `run_dir`)."""
    return run_processes(run_dir)


def no_run_processes_left(run_dir=None, timeout: float = 10.0) -> bool:
    """True once no process of a run (of the campaign in `run_dir`, else of any) is alive: killed
    ones may take a moment to go."""
    import time
    end = time.monotonic() + timeout
    while processes_of_runs(run_dir):
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


def log_text(result) -> str:
    return Path(result.log_path).read_text()


def saved(result) -> dict:
    return json.loads(Path(result.log_path).with_suffix(".json").read_text())


def env_without(*names) -> dict:
    return {k: v for k, v in os.environ.items() if k not in names}
