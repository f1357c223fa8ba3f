"""
Run the workspace's train.py once under the campaign's harness, supervised.

- Before: train.py must compile and pass the integrity check (tools/integrity.py).
- During: a subprocess in its own process group, cwd the workspace, its environment scrubbed of
  secrets, killed with its whole group at a hard wall limit. It dies with the campaign process even
  on kill -9 (PR_SET_PDEATHSIG), and a pid file lets a resumed campaign kill what is left.
- Prestart (optional): the next run's process is started as soon as a run ends, so its imports,
  CUDA context and compiler warm-up (nanochat/prestart.py) overlap the agent's thinking; `go`
  starts it, and the harness counts total_seconds from then.
- After: the metric comes from the JSON result file the harness writes to $NANOCHAT_RESULT_FILE (a
  fresh path outside the workspace), never from stdout; the run is classified as one status.
"""

import ctypes
import ctypes.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from tools import integrity
from tools.workspace import HARNESS_FILE, PROJECT_ROOT, TRAIN_FILE, Workspace

# -----------------------------------------------------------------------------
# Constants

STATUSES = ("ok", "crash", "oom", "nan", "timeout", "invalid")
# never visible to train.py: an edited script could print or send them anywhere
SECRET_PATTERNS = ("*_API_KEY", "*_TOKEN", "*SECRET*", "*PASSWORD*",
                   "OPENAI_*", "DEEPSEEK_*", "LANGSMITH_*", "LANGCHAIN_*")
RESULT_ENV = "NANOCHAT_RESULT_FILE"   # where the harness writes its JSON result
HARNESS_ENV = "NANOCHAT_HARNESS"      # which harness.json load_harness() reads
DEFAULT_BUDGET = 300.0   # seconds, when neither harness.json nor the profile says (autoresearch's 5 min)
WALL_SLACK = 120.0       # wall limit = 2 x budget + this: startup, compile, evaluation
TAIL_LINES = 40          # log lines shown to the model after a failure
PID_FILE = "training.pid"  # in the run directory (the parent of logs/), while a training runs
OOM_MARKERS = ("CUDA out of memory", "OutOfMemoryError")
SUMMARY_LINE_RE = re.compile(r"^\s*val_bpb:\s*(\S*)")  # the harness's summary line, or a forgery of it
PR_SET_PDEATHSIG = 1     # from <linux/prctl.h>

# loaded before any fork: the child only calls it
LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform.startswith("linux") else None
# PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process. Tool calls
# may run on short-lived worker threads, so every child is forked from this one long-lived thread.
SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="training-spawner")
RUN_LOCK = threading.Lock()  # one training at a time per process: they would share the GPU
STARTED_ENV = "NANOCHAT_STARTED_AT"   # set by nanochat/prestart.py at `go`, never inherited


@dataclass
class RunResult:
    status: str                  # one of STATUSES
    message: str                 # what happened, in a sentence the model can act on
    metrics: dict = field(default_factory=dict)  # the harness's summary figures (val_bpb, ...)
    log_path: str | None = None  # the full stdout+stderr of the run
    tail: str = ""               # the log's last TAIL_LINES lines
    returncode: int | None = None
    wall_seconds: float = 0.0

    @property
    def val_bpb(self) -> float | None:
        v = self.metrics.get("val_bpb")
        return float(v) if isinstance(v, (int, float)) else None

    def to_text(self, log_dir_name: str = "logs", tail: bool = True) -> str:
        """The answer the model sees."""
        out = [f"status: {self.status}"]
        if self.status == "ok":
            out += [f"{k}: {format_metric(v) if k == 'val_bpb' else v}" for k, v in self.metrics.items()]
        else:
            out.append(self.message)
        if self.log_path:
            out.append(f"full log: {log_dir_name}/{Path(self.log_path).name} (readable with read_file)")
        if tail and self.status != "ok" and self.tail:
            out += [f"last {TAIL_LINES} lines of the log:", self.tail]
        return "\n".join(out)

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path) -> "RunResult":
        return cls(**json.loads(Path(path).read_text()))


def format_metric(v) -> str:
    """val_bpb as the harness prints it: 6 decimals."""
    return f"{v:.6f}" if isinstance(v, (int, float)) else str(v)


# -----------------------------------------------------------------------------
# The child process: environment, parent-death signal, process group

def scrub_env(env: dict) -> dict:
    return {k: v for k, v in env.items() if not any(fnmatchcase(k.upper(), p) for p in SECRET_PATTERNS)}


def child_env(root: Path, result_file: str, gpu) -> dict:
    env = scrub_env(dict(os.environ))
    env.pop(STARTED_ENV, None)
    env[RESULT_ENV] = result_file
    env[HARNESS_ENV] = str(root / HARNESS_FILE)
    env["PYTHONUNBUFFERED"] = "1"         # lines reach the log and the progress bar as printed
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # nothing lands in the workspace...
    try:                                  # ...but bytecode may be cached under the campaign cache
        from nanochat.prepare import HarnessConfig  # lazy: imports torch
        env = HarnessConfig.read(root / HARNESS_FILE).python_env(env)
    except Exception:
        pass
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    return env


def die_with_parent(parent_pid: int):
    """preexec_fn: SIGKILL this child when the campaign process dies, however it dies."""
    def setup():
        if LIBC is not None:
            LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl: nobody supervises us
            os._exit(1)
    return setup


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def wait_unreaped(pid: int, timeout: float) -> bool:
    """Wait for `pid` to exit without reaping it: as a zombie it keeps its process group id reserved,
    so killing the group afterwards cannot hit an unrelated process. True if it exited in time."""
    end = time.monotonic() + timeout
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.05)


def pump(stream, log, on_progress) -> None:
    """Copy the child's output to the log as it comes; hand each line to on_progress."""
    pending = ""
    while chunk := stream.read1(65536):
        log.write(chunk)
        log.flush()
        if on_progress is None:
            continue
        pending += chunk.decode("utf-8", errors="replace")
        *lines, pending = re.split(r"[\r\n]", pending)
        for line in lines:
            if line:
                try:
                    on_progress(line)
                except Exception:
                    pass  # a broken progress bar must not break the run


def kill_stale_runs(run_dir) -> list[int]:
    """Kill every process of a training a previous campaign process left behind (found through the
    pid file in `run_dir` and the unique result path in their environment). Returns the pids killed."""
    pid_file = Path(run_dir) / PID_FILE
    if not pid_file.exists():
        return []
    try:
        info = json.loads(pid_file.read_text())
        marker = f"{RESULT_ENV}={info['result_file']}".encode()
    except (ValueError, KeyError, OSError):
        pid_file.unlink(missing_ok=True)
        return []
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
        except (OSError, ProcessLookupError):
            continue  # gone already, or not ours to read
    shutil.rmtree(Path(info["result_file"]).parent, ignore_errors=True)
    pid_file.unlink(missing_ok=True)
    return killed


# -----------------------------------------------------------------------------
# Classification

def time_budget(config: dict) -> float:
    if config.get("time_budget"):
        return float(config["time_budget"])
    try:
        from nanochat.prepare import PROFILES  # lazy: imports torch
        return float(PROFILES[config["profile"]].time_budget)
    except Exception:
        return DEFAULT_BUDGET


def same_number(printed: str, actual) -> bool:
    """Whether a printed value is `actual` as printed with that many decimals."""
    try:
        value = float(printed)
    except ValueError:
        return False
    if not isinstance(actual, (int, float)) or math.isnan(value) or math.isnan(actual):
        return False
    decimals = len(printed.split(".")[1]) if "." in printed and "e" not in printed.lower() else 6
    return abs(value - actual) <= 0.5 * 10 ** -decimals + 1e-9 * abs(actual)


def log_lines(log_text: str) -> list[str]:
    """The log as a terminal would show it: progress bars redrawn with \\r keep their last state."""
    return [line.rsplit("\r", 1)[-1] for line in log_text.split("\n")]


def classify(returncode, timed_out, result, log_text, wall_limit, budget) -> tuple[str, str]:
    status = (result or {}).get("status")
    error = (result or {}).get("error") or ""
    if timed_out:
        return "timeout", (f"train.py ran past the wall limit of {wall_limit:.0f} s (time budget {budget:.0f} s) "
                           f"and was killed with all its processes; the training loop must stop at the budget.")
    if status == "ok" and returncode == 0:
        printed = [m.group(1) for line in log_lines(log_text) if (m := SUMMARY_LINE_RE.match(line))]
        forged = [p for p in printed if not same_number(p, result.get("val_bpb"))]
        if forged:
            return "invalid", (f"the log has a 'val_bpb: {forged[0]}' line that differs from the harness's "
                               f"measurement ({format_metric(result.get('val_bpb'))}); train.py must not print its own "
                               f"metric, so this run does not count.")
        return "ok", "the run finished and the harness measured it."
    if status == "nan":
        return "nan", (f"the harness stopped the run because the loss diverged (NaN or exploding): {error} "
                       f"Lower the learning rate or fix the numerics.")
    if any(marker in log_text for marker in OOM_MARKERS):
        return "oom", "the run ran out of GPU memory; use a smaller batch, model or sequence length."
    if returncode == 0 and result is None:
        return "crash", "train.py exited without the harness's summary: it must end by calling H.finish(...)."
    if status == "ok":
        return "crash", f"train.py crashed after the harness's summary (exit code {returncode})."
    if status in STATUSES:
        return status, f"the harness reported '{status}': {error}"
    if returncode is not None and returncode < 0:
        return "crash", (f"train.py was killed by {signal.Signals(-returncode).name} (exit code {returncode}); "
                         f"if nothing else explains it, the machine may have run out of memory.")
    return "crash", f"train.py crashed with exit code {returncode}; see the end of the log."


def read_result(path: Path) -> dict | None:
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


# -----------------------------------------------------------------------------
# The spare: a pre-started training process waiting for `go`

@dataclass
class Spare:
    proc: subprocess.Popen
    key: tuple                  # (workspace, gpu, python, harness.json): it only serves a run with the same
    result_dir: Path            # its private result file's directory (outside the workspace)

    @property
    def result_file(self) -> Path:
        return self.result_dir / "result.json"

    def discard(self) -> None:
        kill_group(self.proc.pid)
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream:
                stream.close()
        shutil.rmtree(self.result_dir, ignore_errors=True)


_spare: Spare | None = None   # at most one per process, guarded by RUN_LOCK


def _spare_key(ws: Workspace, gpu, python) -> tuple:
    harness = ws.root / HARNESS_FILE
    return (str(ws.root), gpu, python, harness.read_bytes() if harness.exists() else b"")


def _start_process(ws: Workspace, gpu, python, prestart: bool) -> Spare:
    result_dir = Path(tempfile.mkdtemp(prefix="nanochat-result-"))  # outside the workspace, fresh per run
    cmd = [python, "-m", "nanochat.prestart", TRAIN_FILE] if prestart else [python, TRAIN_FILE]
    proc = SPAWNER.submit(
        subprocess.Popen, cmd, cwd=ws.root, env=child_env(ws.root, str(result_dir / "result.json"), gpu),
        stdin=subprocess.PIPE if prestart else subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group (and session), killed as a whole
        preexec_fn=die_with_parent(os.getpid()),
    ).result()
    return Spare(proc, _spare_key(ws, gpu, python), result_dir)


def _take_spare(key) -> Spare | None:
    """The waiting spare if it can serve this run (same key, still alive); any other one is killed."""
    global _spare
    spare, _spare = _spare, None
    if spare is not None and (spare.key != key or spare.proc.poll() is not None):
        spare.discard()
        spare = None
    return spare


def discard_spare() -> None:
    """Kill the waiting spare, if any (a campaign calls this when it ends)."""
    with RUN_LOCK:
        spare = _take_spare(None)
        if spare is not None:
            spare.discard()


def _go(spare: Spare) -> bool:
    try:
        spare.proc.stdin.write(f"go {time.time():.3f}\n".encode())
        spare.proc.stdin.close()
        return True
    except (BrokenPipeError, OSError, ValueError):
        return False


# -----------------------------------------------------------------------------
# The run

def new_log_path(logs_dir: Path, run_name: str | None) -> Path:
    base = run_name or time.strftime("run-%Y%m%d-%H%M%S")
    path, n = logs_dir / f"{base}.log", 2
    while path.exists():
        path, n = logs_dir / f"{base}-{n}.log", n + 1
    return path


def run_training(workspace, *, logs_dir, gpu=None, wall_limit: float | None = None, python: str = sys.executable,
                 on_progress=None, run_name: str | None = None, prestart: bool = False) -> RunResult:
    """Run the workspace's train.py once and say how it went. The log goes to `logs_dir/<name>.log`
    and the RunResult to `logs_dir/<name>.json`; the pid file lives in logs_dir's parent (the run dir).
    With `prestart`, the run uses the spare process if one is waiting, and a new spare is started
    for the next run as soon as this one ends."""
    global _spare
    ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
    logs_dir = Path(logs_dir)
    logs_dir.mkdir(parents=True, exist_ok=True)
    run_dir = logs_dir.parent
    budget = time_budget(ws.harness_config())
    wall_limit = float(wall_limit or 2 * budget + WALL_SLACK)

    with RUN_LOCK:
        kill_stale_runs(run_dir)
        log_path = new_log_path(logs_dir, run_name)
        source = (ws.root / TRAIN_FILE).read_text()
        refused = precheck(source)
        if refused:
            log_path.write_text(refused.message + "\n")
            refused.log_path = str(log_path)
        spare = _take_spare(_spare_key(ws, gpu, python)) if prestart else None
        if refused and spare is not None:
            _spare = spare   # still good for the next run
        result = refused or supervise(ws, log_path, run_dir, gpu, wall_limit, budget, python, on_progress,
                                      spare, prestart)
        result.save(log_path.with_suffix(".json"))
        if prestart and _spare is None:
            _spare = _start_process(ws, gpu, python, prestart=True)
        return result


def precheck(source: str) -> RunResult | None:
    """A RunResult if train.py must not run at all: it does not compile, or it fails the integrity check."""
    try:
        compile(source, TRAIN_FILE, "exec")
    except SyntaxError as err:
        return RunResult("crash", f"train.py does not compile: {err.msg} at line {err.lineno}; it was not run.")
    violations = integrity.check_source(source)
    if violations:
        return RunResult("invalid", "train.py was not run: it contains code that could forge the metric or tamper "
                                    "with the harness. Remove it:\n" + integrity.format_violations(violations))
    return None


def supervise(ws, log_path, run_dir, gpu, wall_limit, budget, python, on_progress,
              spare: Spare | None = None, prestart: bool = False) -> RunResult:
    pid_file = run_dir / PID_FILE
    start = time.monotonic()
    proc, reader, timed_out, result_dir = None, None, False, None
    try:
        with open(log_path, "wb") as log:
            if spare is None or not _go(spare):   # no spare (or it died): start one now and go at once
                if spare is not None:
                    spare.discard()
                spare = _start_process(ws, gpu, python, prestart)
                if prestart:
                    _go(spare)
            proc, result_dir = spare.proc, spare.result_dir
            result_file = spare.result_file
            pid_file.write_text(json.dumps({"pid": proc.pid, "pgid": proc.pid, "result_file": str(result_file),
                                            "log": str(log_path), "started": time.time()}))
            reader = threading.Thread(target=pump, args=(proc.stdout, log, on_progress), daemon=True)
            reader.start()
            timed_out = not wait_unreaped(proc.pid, wall_limit)
            kill_group(proc.pid)  # at the limit, or leftovers (workers) after a normal exit
            proc.wait()
            reader.join(timeout=10)  # EOF once the whole group is gone
    finally:
        if proc is not None and proc.returncode is None:  # interrupted (KeyboardInterrupt, ...)
            kill_group(proc.pid)
            proc.wait()
        pid_file.unlink(missing_ok=True)
        result = read_result(result_dir / "result.json") if result_dir else None
        if result_dir:
            shutil.rmtree(result_dir, ignore_errors=True)

    log_text = log_path.read_bytes().decode("utf-8", errors="replace")
    status, message = classify(proc.returncode, timed_out, result, log_text, wall_limit, budget)
    metrics = {k: v for k, v in (result or {}).items() if k not in ("status", "error")} if status == "ok" else {}
    tail = "\n".join(line for line in log_lines(log_text.rstrip("\n"))[-TAIL_LINES:])
    return RunResult(status, message, metrics, str(log_path), tail, proc.returncode,
                     round(time.monotonic() - start, 1))
