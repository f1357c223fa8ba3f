"""
Run the workspace's train.py once under the campaign's harness, sandboxed, and score it apart.

train.py is hostile code: a model wrote it, and it is rewarded for a low val_bpb. So a run is:

1. Checks: the harness copy and the data still match the campaign's pin (tools/harness_pin.py),
   and train.py compiles (tools/integrity.py adds a quick first answer on obvious tricks).
2. Training, in a bubblewrap sandbox (tools/sandbox.py) that sees the train split but not the
   validation split, the run dir, the workspace's .git, $HOME or any secret. Its cwd is a scratch
   directory holding a copy of train.py; it ends by exporting the model's forward there
   (nanochat/handoff.py). Killed with everything it started at a wall limit or when the campaign dies.
3. Scoring, in a second sandbox that runs no code of train.py: nanochat/scorer.py loads the handed
   graph of tensor operators, probes it for causality and computes val_bpb with the frozen metric.
   Only that process's verdict becomes the run's val_bpb.
4. After: HEAD, refs/autoresearch/* and results.tsv must be what they were before the run.

Prestart (optional): once the campaign knows another run will follow, start_spare starts that
run's sandbox, so its imports and CUDA set-up (nanochat/prestart.py) overlap the agent's thinking;
`go` starts it with the latest train.py copied into its scratch directory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nanochat.config import (DATA_ENV, DEFAULT_SEED, HANDOFF_ENV, HANDOFF_FAILURE, HANDOFF_GRAPH, HANDOFF_STATS, HARNESS_ENV, HARNESS_FILE,
                             PROFILES, SEED_ENV, SUMMARY_KEYS, TRAIN_DATA_FILES, TRAIN_FILE, HarnessConfig, summary_text,
                             torch_has_bytecode)
from nanochat.scorer import RESULT_MARKER
from tools import integrity, sandbox
from tools.harness_pin import HarnessPin
from tools.workspace import Workspace

# -----------------------------------------------------------------------------
# Constants

STATUSES = ("ok", "crash", "oom", "nan", "timeout", "invalid")
DEFAULT_BUDGET = 300.0   # seconds, when neither harness.json nor the profile says (autoresearch's 5 min)
WALL_SLACK = 120.0       # wall limit = 2 x budget + this: startup, compile, export
SCORER_WALL = 600.0      # the scorer's own wall limit: loading, the causality probe, evaluation
TAIL_LINES = 40          # log lines shown to the model after a failure
TAIL_CHARS = 8_000       # ... and at most this many characters of them
MAX_LINE_CHARS = 2_000   # a longer output line is cut in the log (a 30 MB line must not flood anything)
MAX_LOG_BYTES = 32 * 2**20  # output past this is counted, not kept
REDACT_MARGIN = 1_024    # bytes past a cut that are still redacted with the line (a secret's longest encoding)
PID_FILE = "training.pid"  # in the run directory (the parent of logs/), while a training runs
HANDOFF_DIR = "handoff"  # in a run's scratch directory: what H.finish leaves for the scorer
COMPILE_SEED = "compile-cache"  # in the run dir: the baseline's compile caches, copied into every later run
RUN_MARKER_ENV = "AUTORESEARCH_RUN"   # in every process of a run: how kill_stale_runs finds leftovers
OOM_MARKERS = ("CUDA out of memory", "OutOfMemoryError")
UNSAFE_WARNING = ("WARNING: this run was NOT sandboxed (--unsafe-no-sandbox): train.py ran with the campaign "
                  "user's rights and could have read secrets or changed the harness; its score is not trustworthy.")
TRUSTED_KEYS = ("val_bpb", "eval_seconds", "total_seconds")   # measured by the scorer and the supervisor only
PR_SET_PDEATHSIG = 1     # from <linux/prctl.h>

# loaded before any fork: the child only calls it
LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform.startswith("linux") else None
# PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process. Tool calls
# may run on short-lived worker threads, so every child is forked from this one long-lived thread.
SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="training-spawner")
RUN_LOCK = threading.Lock()  # one training at a time per process: they would share the GPU
# ... and one at a time per GPU on this machine, across processes: agents sharing a GPU
# (--agents-per-gpu) would each get a fraction of the steps their budget buys (device_lock)
DEVICE_LOCK_DIR = Path(tempfile.gettempdir()) / f"autoresearch-{os.getuid()}-gpus"


@dataclass
class RunResult:
    status: str                  # one of STATUSES
    message: str                 # what happened, in a sentence the model can act on
    metrics: dict = field(default_factory=dict)  # the scorer's val_bpb and the run's own figures
    log_path: str | None = None  # the training's stdout+stderr (bounded), then the harness's summary
    tail: str = ""               # the log's last lines (bounded)
    returncode: int | None = None
    wall_seconds: float = 0.0
    sandboxed: bool = True
    seed: int | None = None      # H.seed of the run

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
        if not self.sandboxed:
            out.append(UNSAFE_WARNING)
        if self.log_path:
            out.append(f"full log: {log_dir_name}/{Path(self.log_path).name} (readable with read_file)")
        if tail and self.status != "ok" and self.tail:
            out += ["last lines of the log:", self.tail]
        return "\n".join(out)

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path) -> "RunResult":
        return cls(**json.loads(Path(path).read_text()))


def format_metric(v) -> str:
    """val_bpb as the harness prints it: 6 decimals."""
    return f"{v:.6f}" if isinstance(v, (int, float)) else str(v)


def time_budget(config: dict) -> float:
    if config.get("time_budget"):
        return float(config["time_budget"])
    profile = PROFILES.get(config.get("profile", ""))
    return float(profile.time_budget) if profile else DEFAULT_BUDGET


# -----------------------------------------------------------------------------
# Processes: forked from one thread, dying with the campaign, killed as a group

def die_with_parent(parent_pid: int, extra=None):
    """preexec_fn: SIGKILL this child when the campaign process dies, however it dies; then `extra`
    (resource limits) before exec."""
    def setup():
        if LIBC is not None:
            LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl: nobody supervises us
            os._exit(1)
        if extra is not None:
            extra()
    return setup


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def wait_unreaped(pid: int, timeout: float, watch=None) -> bool | str:
    """Wait for `pid` to exit without reaping it: as a zombie it keeps its process group id reserved,
    so killing the group afterwards cannot hit an unrelated process. True if it exited in time,
    False at the timeout, or what `watch()` returned (a reason to stop it) when that is not None."""
    end = time.monotonic() + timeout
    next_watch = time.monotonic() + 1.0
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        now = time.monotonic()
        if now >= end:
            return False
        if watch is not None and now >= next_watch:
            reason = watch()
            if reason:
                return reason
            next_watch = now + 1.0
        time.sleep(0.05)


def campaign_key(run_dir) -> str:
    """What every run marker of a campaign starts with: its processes can be found by it alone."""
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:12]


def new_marker(run_dir) -> str:
    return f"{campaign_key(run_dir)}-{uuid.uuid4().hex}"


def run_processes(run_dir=None, keep=()) -> list[int]:
    """Pids of the live processes of runs (of the campaign in `run_dir`, else of any campaign),
    found by the run marker in their environment, except those whose marker is in `keep`."""
    prefix = f"{RUN_MARKER_ENV}={campaign_key(run_dir) if run_dir else ''}".encode()
    kept = {f"{RUN_MARKER_ENV}={m}".encode() for m in keep if m}
    return marked_processes(prefix, kept)


def marked_processes(prefix: bytes, kept=frozenset()) -> list[int]:
    """Pids of this user's live processes with an environment entry starting with `prefix` (and not
    one of `kept`): how a campaign finds what it started, whatever a process did to its name."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue  # gone already, or not ours to read
        if any(e.startswith(prefix) and e not in kept for e in env):
            found.append(int(proc.name))
    return found


def kill_stale_runs(run_dir, keep=()) -> list[int]:
    """Kill every process of the campaign in `run_dir` that a previous campaign process (or run)
    left behind, except the runs whose markers are in `keep` (this process's waiting spare), and
    remove the scratch directories its pid file names. Returns the pids killed."""
    killed = []
    for pid in run_processes(run_dir, keep):
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (ProcessLookupError, PermissionError):
            pass
    pid_file = Path(run_dir) / PID_FILE
    if pid_file.exists():
        try:
            for d in json.loads(pid_file.read_text()).get("scratch", []):
                shutil.rmtree(d, ignore_errors=True)
        except (ValueError, OSError, AttributeError):
            pass
        pid_file.unlink(missing_ok=True)
    return killed


# -----------------------------------------------------------------------------
# Output: bounded, redacted, linear in its size however long the lines

class LogWriter:
    """Copies a process's output to the log file line by line: each line redacted, cut at
    MAX_LINE_CHARS, and nothing past MAX_LOG_BYTES kept (only counted). A cut line is redacted
    with REDACT_MARGIN bytes more than it keeps, so a secret across the cut is still masked."""

    def __init__(self, log, on_progress=None, redact=None, max_bytes=MAX_LOG_BYTES):
        self.log, self.on_progress, self.redact, self.max_bytes = log, on_progress, redact, max_bytes
        self.pending = bytearray()
        self.skipping = False       # inside a line already cut: drop bytes up to its end
        self.written = self.dropped = 0

    def feed(self, chunk: bytes) -> None:
        start = 0
        while start < len(chunk):
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if not self.skipping:
                room = MAX_LINE_CHARS + REDACT_MARGIN - len(self.pending)
                self.pending += piece[:max(room, 0)]
                self.skipping = len(piece) > room
            if end < 0:
                return
            self._line(bytes(self.pending))
            self.pending.clear()
            self.skipping = False
            start = end + 1

    def close(self) -> None:
        if self.pending:
            self._line(bytes(self.pending))
            self.pending.clear()
        if self.dropped:
            self.write_text(f"[log truncated: {self.dropped} more bytes of output were not kept]\n")

    def write_text(self, text: str) -> None:
        self.log.write(text.encode())
        self.log.flush()

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace")
        if self.redact is not None:
            text = self.redact(text)
        if len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS] + " [line cut]"
        data = (text + "\n").encode()
        if self.written + len(data) > self.max_bytes:
            self.dropped += len(data)
        else:
            self.log.write(data)
            self.log.flush()
            self.written += len(data)
        if self.on_progress is not None:
            last = text.rsplit("\r", 1)[-1]   # a progress bar redrawn with \r: its last state
            if last:
                try:
                    self.on_progress(last)
                except Exception:
                    pass  # a broken progress bar must not break the run


def pump(stream, writer: LogWriter) -> None:
    while chunk := stream.read1(65536):
        writer.feed(chunk)
    writer.close()


def read_tail(path: Path, lines: int = TAIL_LINES, chars: int = TAIL_CHARS) -> str:
    """The last lines of a log, as a terminal shows them (\\r-redrawn lines keep their last state),
    reading only its end."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 4 * chars))
        text = f.read().decode("utf-8", errors="replace")
    shown = [line.rsplit("\r", 1)[-1] for line in text.rstrip("\n").split("\n")][-lines:]
    out = "\n".join(shown)
    return out[-chars:]


# -----------------------------------------------------------------------------
# Classification

def classify(returncode, stopped, failure, handoff_ok, log_tail, wall_limit, budget) -> tuple[str, str]:
    """The training's status before scoring: ('ok', '') if its model should be scored."""
    if stopped is False:
        return "timeout", (f"train.py ran past the wall limit of {wall_limit:.0f} s (time budget {budget:.0f} s) "
                           f"and was killed with all its processes; the training loop must stop at the budget.")
    if isinstance(stopped, str):
        return "crash", stopped
    status, error = (failure or {}).get("status"), str((failure or {}).get("error") or "")[:500]
    if status == "nan":
        return "nan", (f"the harness stopped the run because the loss diverged (NaN or exploding): {error} "
                       f"Lower the learning rate or fix the numerics.")
    if status in STATUSES and status != "ok":
        return status, f"the harness reported '{status}': {error}"
    if any(marker in log_tail for marker in OOM_MARKERS):
        return "oom", "the run ran out of GPU memory; use a smaller batch, model or sequence length."
    if returncode == 0 and handoff_ok:
        return "ok", ""
    if returncode == 0:
        return "crash", "train.py exited without handing its model over: it must end by calling H.finish(model, ...)."
    if returncode is not None and returncode < 0:
        return "crash", (f"train.py was killed by {signal.Signals(-returncode).name} (exit code {returncode}); "
                         f"if nothing else explains it, the machine may have run out of memory.")
    return "crash", f"train.py crashed with exit code {returncode}; see the end of the log."


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text()[:100_000])
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# -----------------------------------------------------------------------------
# One sandboxed process

@dataclass
class Launch:
    """Everything about where a run's processes live and what they see."""
    ws: Workspace
    pin: HarnessPin
    gpu: str | None
    python: str
    unsafe: bool = False

    @property
    def max_processes(self) -> int:
        return sandbox.DEFAULT_MAX_PROCESSES

    @property
    def max_scratch_bytes(self) -> int:
        return sandbox.DEFAULT_MAX_SCRATCH_BYTES

    @property
    def config(self) -> HarnessConfig:
        return HarnessConfig.read(self.ws.root / HARNESS_FILE)

    @property
    def cuda(self) -> bool:
        return self.config.resolved_profile().device == "cuda"

    def key(self) -> tuple:
        harness = (self.ws.root / HARNESS_FILE).read_bytes()
        return (str(self.ws.root), self.gpu, self.python, harness, str(self.pin.root), self.unsafe)

    def start(self, argv: list[str], scratch: Path, ro: dict, env: dict, marker: str,
              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
              name: str = "run") -> tuple[subprocess.Popen, sandbox.ProcessCap]:
        cap = sandbox.ProcessCap(self.max_processes, name=f"{name}-{marker[:8]}")
        env = {**env, RUN_MARKER_ENV: marker}
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpu)
        if not torch_has_bytecode():    # never a shared bytecode cache: a planted .pyc would reach later runs
            env["PYTHONPYCACHEPREFIX"] = "/tmp/pycache"
        if self.unsafe:
            cmd, proc_env, cwd = self._unsafe(argv, scratch, ro, env)
        else:
            box = sandbox.Sandbox(scratch=scratch, harness=self.pin.package_parent, ro=ro, gpu=self.cuda, env=env,
                                  tmp_bytes=self.max_scratch_bytes)
            cmd, proc_env, cwd = box.command([self.python, *argv]), {"PATH": os.environ.get("PATH", ""),
                                                                     RUN_MARKER_ENV: marker}, scratch

        def limits():
            cap.enter()
            sandbox.limit_file_size(self.max_scratch_bytes)

        proc = SPAWNER.submit(
            subprocess.Popen, cmd, cwd=cwd, env=proc_env, stdin=stdin, stdout=stdout, stderr=stderr,
            start_new_session=True,  # its own process group (and session), killed as a whole
            preexec_fn=die_with_parent(os.getpid(), limits),
        ).result()
        return proc, cap

    def _unsafe(self, argv, scratch, ro, env):
        """--unsafe-no-sandbox: the same environment and paths, mapped onto the host, no isolation."""
        mapping = {sandbox.WORK_DIR: str(scratch), sandbox.HARNESS_DIR: str(self.pin.package_parent)}
        view = Path(tempfile.mkdtemp(prefix=".view-", dir=scratch))
        for src, dest in ro.items():        # the same tree of paths, as symlinks
            link = view / dest.lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(src)
            mapping.setdefault(dest, str(link))
            mapping.setdefault(os.path.dirname(dest), str(link.parent))

        def host(value: str) -> str:
            for inside, outside in sorted(mapping.items(), key=lambda kv: -len(kv[0])):
                if value == inside or value.startswith(inside + "/"):
                    return outside + value[len(inside):]
            return value
        box = sandbox.Sandbox(scratch=scratch, harness=self.pin.package_parent, env=env)
        proc_env = {k: host(v) for k, v in box.environment().items()}
        proc_env["PATH"] = os.environ.get("PATH", "")
        proc_env["HOME"] = proc_env["TMPDIR"] = str(scratch)
        return [self.python, *[host(a) for a in argv]], proc_env, str(scratch)


def _train_view(pin: HarnessPin) -> dict:
    """The data a training run sees: the train split's files, one by one (never val.bin)."""
    return {str(pin.data_dir / name): f"{sandbox.DATA_DIR}/{name}" for name in TRAIN_DATA_FILES}


# -----------------------------------------------------------------------------
# The spare: a pre-started training sandbox waiting for `go`

@dataclass
class Spare:
    proc: subprocess.Popen
    cap: sandbox.ProcessCap
    key: tuple
    scratch: Path
    marker: str

    def discard(self) -> None:
        kill_group(self.proc.pid)
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream:
                stream.close()
        self.cap.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


_spare: Spare | None = None   # at most one per process, guarded by RUN_LOCK


def _start_training(launch: Launch, prestart: bool, train_py: Path | None = None, seed: int | None = None) -> Spare:
    """A training sandbox: a fresh scratch directory with harness.json (and train.py if given; a
    spare gets it at `go`), running train.py, or with `prestart` warming up and waiting for `go`
    (which also brings the seed)."""
    scratch = Path(tempfile.mkdtemp(prefix="autoresearch-run-"))
    os.chmod(scratch, 0o700)
    (scratch / HANDOFF_DIR).mkdir()
    shutil.copyfile(launch.ws.root / HARNESS_FILE, scratch / HARNESS_FILE)
    if train_py is not None:
        shutil.copyfile(train_py, scratch / TRAIN_FILE)
    caches = launch.pin.root.parent / COMPILE_SEED
    if caches.is_dir():   # a copy: what this run adds to its caches dies with its scratch directory
        shutil.copytree(caches, scratch / sandbox.COMPILE_DIR, symlinks=True)
    marker = new_marker(launch.pin.root.parent)
    env = {HARNESS_ENV: f"{sandbox.WORK_DIR}/{HARNESS_FILE}", DATA_ENV: sandbox.DATA_DIR,
           HANDOFF_ENV: f"{sandbox.WORK_DIR}/{HANDOFF_DIR}"}
    if seed is not None:
        env[SEED_ENV] = str(int(seed))
    argv = ["-m", "nanochat.prestart", TRAIN_FILE] if prestart else [TRAIN_FILE]
    proc, cap = launch.start(argv, scratch, _train_view(launch.pin), env, marker,
                             stdin=subprocess.PIPE if prestart else subprocess.DEVNULL, name="train")
    return Spare(proc, cap, launch.key(), scratch, marker)


def _take_spare(key) -> Spare | None:
    """The waiting spare if it can serve this run (same key, still alive); any other one is killed."""
    global _spare
    spare, _spare = _spare, None
    if spare is not None and (spare.key != key or spare.proc.poll() is not None):
        spare.discard()
        spare = None
    return spare


def start_spare(workspace, *, logs_dir, gpu=None, python: str = sys.executable, unsafe: bool = False) -> None:
    """Start the next run's training sandbox now, warming up until run_training(prestart=True) tells
    it to go. A campaign calls this once it knows another run will follow (not after its last run,
    where the spare would only be killed). A live spare for the same harness is kept. Like a run, a
    spare starts only from a verified harness pin: HarnessTampered otherwise."""
    global _spare
    ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
    if not unsafe:
        sandbox.require()
    with RUN_LOCK:
        pin = ensure_pin(Path(logs_dir).resolve().parent, ws)
        pin.verify()
        launch = Launch(ws, pin, gpu, python, unsafe)
        _spare = _take_spare(launch.key()) or _start_training(launch, prestart=True)


def discard_spare() -> None:
    """Kill the waiting spare, if any (a campaign calls this when it ends)."""
    with RUN_LOCK:
        spare = _take_spare(None)
        if spare is not None:
            spare.discard()


def _go(spare: Spare, seed: int) -> bool:
    try:
        spare.proc.stdin.write(f"go {time.time():.3f} {int(seed)}\n".encode())
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


def ensure_pin(run_dir: Path, ws: Workspace) -> HarnessPin:
    """The campaign's harness pin; made here on a campaign's first run if it has none yet."""
    pin = HarnessPin.open(run_dir)
    if pin is None:
        from nanochat.prepare import prepare_data   # lazy: imports torch
        data = prepare_data(HarnessConfig.read(ws.root / HARNESS_FILE), log=lambda s: None)
        pin = HarnessPin.create(run_dir, data.dir)
    return pin


def run_training(workspace, *, logs_dir, gpu=None, wall_limit: float | None = None, python: str = sys.executable,
                 on_progress=None, run_name: str | None = None, prestart: bool = False, results_path=None,
                 redact=None, unsafe: bool = False, seed_compile_cache: bool = False,
                 seed: int = DEFAULT_SEED) -> RunResult:
    """Run the workspace's train.py once, with H.seed = `seed`, and say how it went. The log goes to `logs_dir/<name>.log`
    and the RunResult to `logs_dir/<name>.json`; the pid file and the harness pin live in
    logs_dir's parent (the run dir). `redact` masks secrets in every line of the log. With
    `prestart` the run is a pre-started process: start_spare's, if it can serve this run, else one
    started now and told to go at once.
    Raises HarnessTampered or TamperError (tools/workspace.py) when the harness or the campaign's
    records changed: the campaign must stop. Without bwrap (and not `unsafe`) raises SandboxError."""
    global _spare
    ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
    if not unsafe:
        sandbox.require()
    logs_dir = Path(logs_dir).resolve()
    logs_dir.mkdir(parents=True, exist_ok=True)
    run_dir = logs_dir.parent
    budget = time_budget(ws.harness_config())
    wall_limit = float(wall_limit or 2 * budget + WALL_SLACK)
    guarded = [p for p in (results_path,) if p]

    with RUN_LOCK:
        kill_stale_runs(run_dir, keep=[_spare.marker] if _spare else [])
        pin = ensure_pin(run_dir, ws)
        pin.verify()
        launch = Launch(ws, pin, gpu, python, unsafe)
        before = ws.fingerprint(extra_files=guarded)
        log_path = new_log_path(logs_dir, run_name)
        refused = precheck((ws.root / TRAIN_FILE).read_text())
        spare = _take_spare(launch.key()) if prestart else None
        if refused:
            log_path.write_text(refused.message + "\n")
            refused.log_path = str(log_path)
            if spare is not None:
                _spare = spare   # still good for the next run
            result = refused
        else:
            with device_lock(gpu):
                result = supervise(launch, log_path, run_dir, wall_limit, budget, on_progress, redact, spare,
                                   prestart, seed_compile_cache, seed)
        result.sandboxed, result.seed = not unsafe, seed
        result.save(log_path.with_suffix(".json"))
        ws.verify_unchanged(before, extra_files=guarded)
        pin.verify()
        return result


@contextmanager
def device_lock(gpu: str | None):
    """Hold GPU `gpu` (an index of CUDA_VISIBLE_DEVICES; None: none named, no lock) for one run and
    its scoring. A run's val_bpb is what its wall-clock budget buys on a whole GPU: two runs at once
    on one GPU would each get about half the steps, and their verdicts would compare nothing. The
    lock is a file lock, so it spans processes (parallel agents) and the kernel drops it when its
    holder dies."""
    if gpu is None:
        yield
        return
    DEVICE_LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
    with open(DEVICE_LOCK_DIR / f"gpu-{gpu}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def precheck(source: str) -> RunResult | None:
    """A RunResult if train.py must not run at all: it does not compile, or the integrity check
    refuses it at once (a quick answer; the sandbox and the scorer are the boundary)."""
    try:
        compile(source, TRAIN_FILE, "exec")
    except SyntaxError as err:
        return RunResult("crash", f"train.py does not compile: {err.msg} at line {err.lineno}; it was not run.")
    violations = integrity.check_source(source)
    if violations:
        return RunResult("invalid", "train.py was not run: it contains code that tries to forge the metric or "
                                    "tamper with the harness. Remove it:\n" + integrity.format_violations(violations))
    return None


def supervise(launch: Launch, log_path: Path, run_dir: Path, wall_limit: float, budget: float, on_progress,
              redact, spare: Spare | None, prestart: bool, seed_compile_cache: bool = False,
              seed: int = DEFAULT_SEED) -> RunResult:
    pid_file = run_dir / PID_FILE
    start = time.monotonic()
    started_at = time.time()
    with open(log_path, "wb") as log:
        writer = LogWriter(log, on_progress, redact)
        if launch.unsafe:
            writer.write_text(UNSAFE_WARNING + "\n")
        if spare is not None:   # the spare reads train.py at `go`: the latest edit is what runs
            shutil.copyfile(launch.ws.root / TRAIN_FILE, spare.scratch / TRAIN_FILE)
        if spare is None or not _go(spare, seed):   # no spare (or it died): start one now and go at once
            if spare is not None:
                spare.discard()
            spare = _start_training(launch, prestart, launch.ws.root / TRAIN_FILE, seed)
            if prestart:
                _go(spare, seed)
        proc, scratch = spare.proc, spare.scratch
        pid_file.write_text(json.dumps({"pid": proc.pid, "marker": spare.marker, "scratch": [str(scratch)],
                                        "log": str(log_path), "started": started_at}))
        try:
            reader = threading.Thread(target=pump, args=(proc.stdout, writer), daemon=True)
            reader.start()

            def too_much_disk():
                used = sandbox.disk_usage(scratch)
                if used > launch.max_scratch_bytes:
                    return (f"train.py's directory grew past the {_size(launch.max_scratch_bytes)} allowed "
                            f"({_size(used)} written), and the run was stopped.")
                return None
            stopped = wait_unreaped(proc.pid, wall_limit, watch=too_much_disk)
            kill_group(proc.pid)   # the sandbox (and with it every process inside it) or leftovers
            proc.wait()
            reader.join(timeout=10)   # EOF once every holder of the pipe is gone
            handoff = scratch / HANDOFF_DIR
            failure = read_json(handoff / HANDOFF_FAILURE)
            stats = read_json(handoff / HANDOFF_STATS) or {}
            handoff_ok = (handoff / HANDOFF_GRAPH).is_file()
            status, message = classify(proc.returncode, stopped, failure, handoff_ok, read_tail(log_path),
                                       wall_limit, budget)
            if seed_compile_cache and status == "ok":
                keep_compile_seed(scratch / sandbox.COMPILE_DIR, run_dir / COMPILE_SEED)
            metrics = {}
            if status == "ok":
                verdict = score(launch, handoff, scratch.parent, spare.marker)
                status = verdict.get("status", "crash")
                if status == "ok":
                    # train.py's own figures are informative; the metric and the clocks are not its to give
                    own = {k: v for k, v in stats.items() if k in SUMMARY_KEYS and k not in TRUSTED_KEYS
                           and isinstance(v, (int, float)) and not isinstance(v, bool)}
                    metrics = {"val_bpb": verdict["val_bpb"], **own, "eval_seconds": verdict.get("eval_seconds"),
                               "total_seconds": round(time.time() - started_at, 1)}
                    message = "the run finished and the harness's scorer measured its model."
                    writer.write_text(summary_text(metrics) + "\n")
                else:
                    message = verdict.get("error") or "the scorer failed"
                    writer.write_text(f"[scorer] {status}: {message}\n")
        finally:
            if proc.returncode is None:   # interrupted (KeyboardInterrupt, ...)
                kill_group(proc.pid)
                proc.wait()
            spare.cap.close()
            pid_file.unlink(missing_ok=True)
            shutil.rmtree(scratch, ignore_errors=True)
    return RunResult(status, message, metrics, str(log_path), read_tail(log_path), proc.returncode,
                     round(time.monotonic() - start, 1))


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def keep_compile_seed(caches: Path, seed: Path) -> None:
    """The baseline's compile caches become the campaign's seed, once (never replaced)."""
    if seed.exists() or not caches.is_dir():
        return
    tmp = seed.with_name(seed.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(caches, tmp, symlinks=True)
    os.replace(tmp, seed)


def score(launch: Launch, handoff: Path, tmp_root: Path, marker: str) -> dict:
    """Run the scorer on a handoff in its own sandbox: the full prepared data, the handoff,
    no train.py. Its last RESULT_MARKER line on stdout is the verdict."""
    scratch = Path(tempfile.mkdtemp(prefix="autoresearch-score-", dir=tmp_root))
    try:
        shutil.copyfile(launch.ws.root / HARNESS_FILE, scratch / HARNESS_FILE)
        ro = {str(launch.pin.data_dir): sandbox.DATA_DIR, str(handoff): sandbox.HANDOFF_MOUNT}
        env = {HARNESS_ENV: f"{sandbox.WORK_DIR}/{HARNESS_FILE}", DATA_ENV: sandbox.DATA_DIR}
        with open(scratch / "scorer.log", "wb") as err:
            proc, cap = launch.start(["-m", "nanochat.scorer", sandbox.HANDOFF_MOUNT], scratch, ro, env, marker,
                                     stdout=subprocess.PIPE, stderr=err, name="score")
            try:
                out, _ = proc.communicate(timeout=SCORER_WALL)
            except subprocess.TimeoutExpired:
                kill_group(proc.pid)
                proc.wait()
                return {"status": "invalid", "error": f"scoring the model took over {SCORER_WALL:.0f} s"}
            finally:
                kill_group(proc.pid)
                cap.close()
        lines = [l for l in out.decode("utf-8", "replace").splitlines() if l.startswith(RESULT_MARKER)]
        if not lines:
            tail = (scratch / "scorer.log").read_text(errors="replace")[-300:]
            return {"status": "crash", "error": f"the scorer ended without a verdict (exit {proc.returncode}): "
                                                f"{re.sub(r'[0-9]+', 'N', tail)}"}
        return json.loads(lines[-1][len(RESULT_MARKER):])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
