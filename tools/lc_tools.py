"""
The four LangChain tools the agent sees, bound to one campaign by make_tools(...).

They know nothing of the graph. Every user error comes back as a string the model can act on
(the tools never raise for those); run_training also returns its RunResult as the ToolMessage's
artifact, so the graph can read the status and metrics without parsing text.

Every answer passes the campaign's redactor (when given) and is clipped to MODEL_OUTPUT_CHARS
(its head and tail, with a marker): a secret never reaches the model, nor does a flood.
"""

import sys
from pathlib import Path
from typing import Callable

from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from nanochat.config import DEFAULT_SEED
from tools.patching import MAX_PATCH_BYTES, PatchError
from tools.redact import MODEL_OUTPUT_CHARS, Redactor, clip_for_model
from tools.supervisor import WALL_SLACK, RunResult, run_training, time_budget
from tools.workspace import PAGE_LINES, Workspace, WorkspaceError

# -----------------------------------------------------------------------------
# Constants

LOGS_MOUNT = "logs"        # the name under which the agent reads the run logs

READ_FILE_DESCRIPTION = f"""Show a file with numbered lines (number, tab, text). The numbers are for reference only:
never copy them into a patch.
Readable files: 'train.py' (the training script you edit), 'harness.json' (this campaign's pinned settings:
profile, data, time budget), 'prepare.py' (the frozen harness: data, tokenizer, evaluation; read-only) and
the run logs under 'logs/' (e.g. 'logs/iter-00003-agent-1.log'; 'logs' lists them).
At most {PAGE_LINES} lines are shown per call; the answer says how to read on."""

APPLY_PATCH_DESCRIPTION = f"""Edit train.py (the only editable file). Send either

1) one or more SEARCH/REPLACE blocks, each replacing lines copied exactly from the current train.py:
<<<<<<< SEARCH
LEARNING_RATE = 0.02
=======
LEARNING_RATE = 0.04
>>>>>>> REPLACE

2) or a unified diff:
--- a/train.py
+++ b/train.py
@@ -10,3 +10,3 @@
 context line
-old line
+new line
 context line

Each block or hunk must match exactly one place in train.py: include enough unchanged lines to make it
unique. Small whitespace or line-number mistakes are tolerated. All edits apply or none does; an edit
that leaves train.py unable to compile is refused and the error names the line. prepare.py and
harness.json are read-only. train.py must not print 'val_bpb:' lines or touch the harness's evaluation.
Maximum patch size {MAX_PATCH_BYTES // 1000} KB. The answer summarizes what changed."""

RUN_TRAINING_DESCRIPTION = """Train the current train.py once under this campaign's harness (fixed time budget of
{budget:.0f} s of training, plus startup and evaluation; killed at {wall:.0f} s). Answers with the status:
'ok' with the metrics (val_bpb, validation bits per byte: lower is better), or 'crash', 'oom' (out of
GPU memory), 'nan' (the loss diverged), 'timeout', 'invalid' (the scorer could not use the model, or its
predictions depend on later tokens), with the reason and the last lines of the log. train.py runs in a
sandbox that sees the train split only; H.finish(model, ...) hands the model to a separate scorer, which
computes val_bpb on the validation split. Takes no arguments."""

READ_METRICS_DESCRIPTION = """Show the last training run's status and metrics, and the campaign's experiments
(val_bpb as the mean of each experiment's runs, status, description) with the seed noise.
Takes no arguments."""


class ReadFileArgs(BaseModel):
    path: str = Field(description="File to show, relative to the workspace: 'train.py', 'harness.json', "
                                  "'prepare.py', or a log such as 'logs/<name>.log'.")
    start_line: int = Field(1, description="First line to show, counting from 1.")
    end_line: int | None = Field(None, description=f"Last line to show (inclusive); default: up to "
                                                   f"{PAGE_LINES} lines from start_line.")


class ApplyPatchArgs(BaseModel):
    patch: str = Field(description="SEARCH/REPLACE blocks or a unified diff for train.py.")


class NoArgs(BaseModel):
    pass


def invalid_arguments(err) -> str:
    problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in err.errors())
    return f"The tool was called with invalid arguments ({problems}). Check the argument names and types and call it again."


# -----------------------------------------------------------------------------
# read_metrics helpers

def last_run(logs_dir: Path) -> RunResult | None:
    saved = sorted(logs_dir.glob("*.json"), key=lambda p: p.stat().st_mtime) if logs_dir.exists() else []
    for path in reversed(saved):
        try:
            return RunResult.load(path)
        except (ValueError, TypeError, OSError):
            continue
    return None


# -----------------------------------------------------------------------------
# The tools

def make_tools(workspace: Workspace, *, results_path=None, logs_dir, gpu=None, wall_limit=None,
               python: str = sys.executable, on_progress=None, prestart: bool = False,
               redactor: Redactor | None = None, output_chars: int = MODEL_OUTPUT_CHARS,
               unsafe: bool = False, seed: int = DEFAULT_SEED,
               history: Callable[[], str] | None = None, run_name: str | None = None) -> list[StructuredTool]:
    """[read_file, apply_patch, run_training, read_metrics] bound to one campaign: its workspace,
    its results.tsv (optional), the run's logs/ directory, its GPU and wall limit. Every
    run_training call trains with H.seed = `seed`, so the agent's own runs in one experiment
    compare edits, not seeds. read_metrics shows the last run and `history()`, the campaign's
    experiments as its owner formats them (the tools know no results format).
    With `run_name` (the campaign's `iter-00003-agent`), the k-th run_training call's log is
    `logs/<run_name>-<k>.log`; without it, the supervisor names it by the time.

    Each answer goes through `redactor` (the campaign's; none: only clipped) as the model sees text,
    then is clipped to `output_chars` characters."""
    logs_dir = Path(logs_dir)
    budget = time_budget(workspace.harness_config())
    wall = wall_limit or 2 * budget + WALL_SLACK  # only for the description: the supervisor decides

    def for_model(text: str) -> str:
        return clip_for_model(text, output_chars, redactor)

    def read_file(path: str, start_line: int = 1, end_line: int | None = None) -> str:
        try:
            return for_model(workspace.read(path, start_line, end_line, mounts={LOGS_MOUNT: logs_dir}))
        except WorkspaceError as err:
            return for_model(f"Error: {err}.")

    def apply_patch(patch: str) -> str:
        try:
            return for_model(workspace.apply_patch(patch))
        except PatchError as err:
            return for_model(f"Error: {err}")

    calls = 0

    def run_training_tool() -> tuple[str, RunResult]:
        nonlocal calls
        calls += 1
        result = run_training(workspace, logs_dir=logs_dir, gpu=gpu, wall_limit=wall_limit, python=python,
                              on_progress=on_progress, prestart=prestart, results_path=results_path,
                              redact=redactor.text if redactor else None, unsafe=unsafe, seed=seed,
                              run_name=f"{run_name}-{calls}" if run_name else None)
        return for_model(result.to_text(LOGS_MOUNT)), result

    def read_metrics() -> str:
        run = last_run(logs_dir)
        head = "No training run yet: call run_training." if run is None else "Last run:\n" + run.to_text(LOGS_MOUNT, tail=False)
        return for_model(head + "\n\n" + (history() if history else "No experiments recorded yet."))

    common = dict(handle_validation_error=invalid_arguments)
    return [
        StructuredTool.from_function(read_file, name="read_file", description=READ_FILE_DESCRIPTION,
                                     args_schema=ReadFileArgs, **common),
        StructuredTool.from_function(apply_patch, name="apply_patch", description=APPLY_PATCH_DESCRIPTION,
                                     args_schema=ApplyPatchArgs, **common),
        StructuredTool.from_function(run_training_tool, name="run_training",
                                     description=RUN_TRAINING_DESCRIPTION.format(budget=budget, wall=wall),
                                     args_schema=NoArgs, response_format="content_and_artifact", **common),
        StructuredTool.from_function(read_metrics, name="read_metrics", description=READ_METRICS_DESCRIPTION,
                                     args_schema=NoArgs, **common),
    ]
