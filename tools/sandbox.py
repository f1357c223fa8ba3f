"""
The sandbox every training run and every scoring run lives in: bubblewrap (bwrap), a well-kept
unprivileged container tool (the one Flatpak uses).

Inside, a run sees a read-only system (/usr, the Python install and its packages), the pinned copy
of the harness, the data the run may see (training: the train split only), one writable scratch
directory (its cwd) and a private /tmp of bounded size. It does not see $HOME, the project
checkout, the run dir, the workspace's .git, any .env, or the rest of the data cache. It has its own
PID, IPC, UTS, network (loopback only) and user namespaces, no capabilities, an environment built
from an allowlist, and it dies with the campaign (--die-with-parent: when bwrap goes, the kernel
kills every process of the PID namespace). A cap on processes comes from a pids cgroup where one
can be made, else RLIMIT_NPROC; a cap on file size from RLIMIT_FSIZE (the supervisor also watches
the scratch directory's total size).
"""

from __future__ import annotations

import glob
import os
import resource
import shutil
import site
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

# -----------------------------------------------------------------------------
# Constants

BWRAP = "bwrap"
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: `sudo apt-get install bubblewrap`; Fedora: `sudo dnf install "
                "bubblewrap`) and make sure unprivileged user namespaces are enabled "
                "(`sysctl kernel.unprivileged_userns_clone=1`, or on Ubuntu 24.04+ "
                "`sysctl kernel.apparmor_restrict_unprivileged_userns=0`); or, knowing that train.py then runs "
                "with your rights, pass --unsafe-no-sandbox")
SANDBOX_UID = 65534                  # nobody: the run owns nothing outside its scratch directory
WORK_DIR = "/sandbox/work"           # the scratch directory, the run's cwd
HARNESS_DIR = "/sandbox/harness"     # the pinned harness package (PYTHONPATH)
DATA_DIR = "/sandbox/data"           # the data the run may see
HANDOFF_MOUNT = "/sandbox/handoff"   # the scorer's read-only view of the model a training run handed over
COMPILE_DIR = ".compile"             # torch.compile's caches, in the scratch directory
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt")
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime",
             "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/hosts", "/etc/ssl/certs", "/etc/os-release")
GPU_DEVICES = ("/dev/nvidia*", "/dev/nvidia-caps/*", "/dev/dri")
# variables a run may inherit; every other one (keys, tokens, paths into $HOME) stays outside
ENV_ALLOWLIST = ("LANG", "LC_ALL", "TZ", "TERM", "LD_LIBRARY_PATH", "CUDA_HOME", "OMP_NUM_THREADS",
                 "MKL_NUM_THREADS", "PYTORCH_CUDA_ALLOC_CONF", "NVIDIA_DRIVER_CAPABILITIES", "NVIDIA_VISIBLE_DEVICES",
                 "TORCH_CUDA_ARCH_LIST", "TORCH_LOGS", "TORCHINDUCTOR_COMPILE_THREADS")
DEFAULT_MAX_PROCESSES = 4096          # threads count too: inductor's compile workers, data loaders
DEFAULT_MAX_SCRATCH_BYTES = 16 * 2**30   # writable area: scratch dir (watched) and /tmp (a tmpfs of this size)
CGROUP_NAME = "autoresearch-sandbox"


class SandboxError(RuntimeError):
    """No sandbox can be set up here: the message names the fix."""


# -----------------------------------------------------------------------------
# Availability

_checked: dict[str, str | None] = {}


def unavailable_reason() -> str | None:
    """None when bwrap can build a sandbox here, else why not (cached per process)."""
    if "reason" in _checked:
        return _checked["reason"]
    reason = None
    if not sys.platform.startswith("linux"):
        reason = "sandboxed training needs Linux (bubblewrap)"
    elif shutil.which(BWRAP) is None:
        reason = "bubblewrap (bwrap) is not installed"
    else:
        probe = subprocess.run([BWRAP, *_namespace_args(), "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
                                "--", "/bin/true"], capture_output=True, text=True)
        if probe.returncode != 0:
            reason = f"bwrap cannot create namespaces here ({probe.stderr.strip()[:200]})"
    _checked["reason"] = reason
    return reason


def require() -> None:
    reason = unavailable_reason()
    if reason:
        raise SandboxError(f"cannot sandbox training runs: {reason}. Fix: {INSTALL_HINT}.")


def _namespace_args() -> list[str]:
    args = ["--unshare-all", "--unshare-user", "--disable-userns", "--uid", str(SANDBOX_UID),
            "--gid", str(SANDBOX_UID), "--die-with-parent", "--new-session"]
    if os.geteuid() == 0:
        args += ["--cap-drop", "ALL"]
    return args


# -----------------------------------------------------------------------------
# The command

@dataclass
class Sandbox:
    """What one sandboxed process sees. `ro`/`rw` map host paths to paths inside."""
    scratch: Path                                  # host dir, writable, mounted at WORK_DIR (the cwd)
    harness: Path                                  # host dir holding the harness package `nanochat/`
    ro: dict[str, str] = field(default_factory=dict)
    gpu: bool = False
    env: dict[str, str] = field(default_factory=dict)
    tmp_bytes: int = DEFAULT_MAX_SCRATCH_BYTES

    def command(self, argv: list[str]) -> list[str]:
        args = [BWRAP, *_namespace_args(), "--clearenv",
                # /tmp first: a Python or a venv living under /tmp is bound on top of it below
                "--proc", "/proc", "--dev", "/dev", "--size", str(self.tmp_bytes), "--tmpfs", "/tmp"]
        for d in SYSTEM_DIRS:
            if os.path.islink(d):
                args += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                args += ["--ro-bind", d, d]
        for f in ETC_FILES:
            args += ["--ro-bind-try", f, f]
        for d in python_dirs():
            args += ["--ro-bind", d, d]
        if self.gpu:
            for pattern in GPU_DEVICES:
                for dev in sorted(glob.glob(pattern)):
                    args += ["--dev-bind", dev, dev]
            args += ["--ro-bind-try", "/sys", "/sys"]   # CUDA reads the PCI topology
        args += ["--ro-bind", str(self.harness), HARNESS_DIR]
        for src, dest in self.ro.items():
            args += ["--ro-bind", str(src), dest]
        args += ["--bind", str(self.scratch), WORK_DIR, "--chdir", WORK_DIR]
        for key, value in self.environment().items():
            args += ["--setenv", key, value]
        args += ["--remount-ro", "/"]   # the root bwrap builds is a tmpfs: nothing may be written there either
        return [*args, "--", *argv]

    def environment(self) -> dict[str, str]:
        env = {k: os.environ[k] for k in ENV_ALLOWLIST if k in os.environ}
        env.update({
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": "/tmp", "TMPDIR": "/tmp", "USER": "nobody",
            "PYTHONPATH": HARNESS_DIR, "PYTHONNOUSERSITE": "1", "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",   # nothing can be planted beside a source
            # compile caches are private to the run (a shared writable cache would let one run leave
            # files, weights say, for the next one); the supervisor may seed them (tools/supervisor.py)
            "TORCHINDUCTOR_CACHE_DIR": f"{WORK_DIR}/{COMPILE_DIR}/inductor",
            "TRITON_CACHE_DIR": f"{WORK_DIR}/{COMPILE_DIR}/triton",
        })
        env.update(self.env)
        return env


def python_dirs() -> list[str]:
    """The interpreter and its packages, read-only: prefixes and site-packages, outside which the
    run sees nothing of the host's Python. A directory inside another one is left out."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sysconfig.get_paths()["stdlib"],
                  sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
                  str(Path(sys.executable).resolve().parent.parent), *site.getsitepackages()}
    dirs = sorted({os.path.realpath(d) for d in candidates if d and os.path.isdir(d)} |
                  {d for d in candidates if d and os.path.isdir(d)})
    dirs = [d for d in dirs if not any(d == s or d.startswith(s + "/") for s in SYSTEM_DIRS)]
    return [d for d in dirs if not any(d != o and d.startswith(o.rstrip("/") + "/") for o in dirs)]


# -----------------------------------------------------------------------------
# Resource limits, applied in the child before bwrap starts (preexec)

class ProcessCap:
    """At most `limit` processes and threads for one sandboxed run: a pids cgroup where this
    process may make one (root, or a delegated cgroup), else RLIMIT_NPROC, which the kernel counts
    per user (and does not apply to root)."""

    def __init__(self, limit: int = DEFAULT_MAX_PROCESSES, name: str = "run"):
        self.limit = limit
        self.cgroup = _make_pids_cgroup(f"{name}-{os.getpid()}", limit)

    @property
    def mechanism(self) -> str:
        if self.cgroup:
            return f"pids cgroup ({self.limit})"
        return f"RLIMIT_NPROC ({self.limit} more)" if os.geteuid() != 0 else "none (root without a pids cgroup)"

    def enter(self) -> None:
        """In the child, before exec: join the cgroup (all descendants follow), or cap NPROC."""
        if self.cgroup:
            with open(os.path.join(self.cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        elif os.geteuid() != 0:
            mine = _processes_of_uid(os.getuid())
            resource.setrlimit(resource.RLIMIT_NPROC, (mine + self.limit, mine + self.limit))

    def close(self) -> None:
        """Remove the cgroup once its last process has gone (a killed sandbox takes a moment)."""
        for _ in range(40):
            if not self.cgroup:
                return
            try:
                os.rmdir(self.cgroup)
                self.cgroup = None
            except FileNotFoundError:
                self.cgroup = None
            except OSError:
                time.sleep(0.05)


def _pids_root() -> str | None:
    """A writable pids hierarchy: cgroup v1's pids controller, or the cgroup v2 root with pids."""
    v1, v2 = "/sys/fs/cgroup/pids", "/sys/fs/cgroup"
    if os.path.isfile(os.path.join(v1, "cgroup.procs")) and os.access(v1, os.W_OK):
        return v1
    controllers = os.path.join(v2, "cgroup.controllers")
    if os.path.isfile(controllers) and "pids" in Path(controllers).read_text().split() and os.access(v2, os.W_OK):
        return v2
    return None


def _make_pids_cgroup(name: str, limit: int) -> str | None:
    root = _pids_root()
    if root is None:
        return None
    try:
        parent = os.path.join(root, CGROUP_NAME)
        os.makedirs(parent, exist_ok=True)
        if root == "/sys/fs/cgroup":   # cgroup v2: the controller must be enabled down to our children
            for level in (root, parent):
                with open(os.path.join(level, "cgroup.subtree_control"), "w") as f:
                    f.write("+pids")
        path = os.path.join(parent, name)
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "pids.max"), "w") as f:
            f.write(str(limit))
        return path
    except OSError:
        return None


def _processes_of_uid(uid: int) -> int:
    n = 0
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                n += p.stat().st_uid == uid
            except OSError:
                pass
    return n


def limit_file_size(max_bytes: int) -> None:
    """In the child: no single file written may exceed max_bytes (the write fails with EFBIG)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))


def disk_usage(path: Path) -> int:
    """Bytes under `path` (files only; links not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total
