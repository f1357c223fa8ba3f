"""
The campaign workspace: a directory holding a git repository whose tracked files are the
editable `train.py` and `harness.json` (the pin of the frozen harness: profile, data, budget).

Keep = commit and move the `best` ref; discard = reset to the best commit. Every path the agent
names goes through `resolve`, which confines it to the workspace (plus a few read-only mounts such
as the harness source) and says clearly why a path is refused.
"""

import json
import os
import subprocess
import tempfile
from pathlib import Path

from tools import integrity, patching

# -----------------------------------------------------------------------------
# Constants

TRAIN_FILE = "train.py"        # the only file the agent may edit
HARNESS_FILE = "harness.json"  # same name as nanochat.prepare.HARNESS_FILE (not imported: no torch here)
BEST_REF = "refs/autoresearch/best"  # a ref, not a branch: survives resume, invisible to `git branch`
PROJECT_ROOT = Path(__file__).resolve().parents[1]  # holds the nanochat package
HARNESS_SOURCE = PROJECT_ROOT / "nanochat" / "prepare.py"  # shown to the agent read-only
HARNESS_ALIASES = ("prepare.py", "nanochat/prepare.py")    # the names the agent may use for it
PAGE_LINES = 250       # lines per read_file page: a whole small file, a screenful of a long one
MAX_LINE_CHARS = 400   # longer lines are cut: a minified blob must not flood the context
# commits must not depend on the user's git config (identity, signing, hooks)
GIT_CONFIG = ["-c", "user.name=autoresearch", "-c", "user.email=autoresearch@localhost",
              "-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null"]


class WorkspaceError(Exception):
    """A user error (bad path, missing file): its message is a sentence the model can act on."""


def git(root, *args, check=True) -> str:
    proc = subprocess.run(["git", *GIT_CONFIG, "-C", str(root), *args],
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {root}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def harness_json_text(config) -> str:
    """harness.json text from a HarnessConfig (a pydantic model), a dict or a JSON string."""
    if hasattr(config, "model_dump_json"):
        text = config.model_dump_json(indent=2)
    elif isinstance(config, dict):
        text = json.dumps(config, indent=2)
    else:
        text = str(config)
    json.loads(text)  # refuse to pin a campaign to something that is not JSON
    return text if text.endswith("\n") else text + "\n"


class Workspace:
    def __init__(self, root, harness_source=HARNESS_SOURCE):
        self.root = Path(root).resolve()
        self.harness_source = Path(harness_source) if harness_source else None

    # -------------------------------------------------------------------------
    # Creation and git bookkeeping

    @classmethod
    def create(cls, path, config, train_py: str | None = None, *, harness_source=HARNESS_SOURCE):
        """A new workspace at `path` (absent or empty) with `train_py` and `config` committed as
        the baseline. `train_py=None` renders the template for the config's profile."""
        root = Path(path)
        if root.exists() and any(root.iterdir()):
            raise WorkspaceError(f"cannot create a workspace in {root}: the directory is not empty")
        harness_text = harness_json_text(config)
        if train_py is None:
            from nanochat.prepare import render_train_py  # lazy: imports torch
            train_py = render_train_py(json.loads(harness_text)["profile"])
        root.mkdir(parents=True, exist_ok=True)
        git(root, "init", "-q")
        # the harness may leave bytecode behind; it is never part of an experiment
        (root / ".git" / "info").mkdir(parents=True, exist_ok=True)
        (root / ".git" / "info" / "exclude").write_text("__pycache__/\n")
        (root / TRAIN_FILE).write_text(train_py)
        (root / HARNESS_FILE).write_text(harness_text)
        git(root, "add", TRAIN_FILE, HARNESS_FILE)
        git(root, "commit", "-q", "-m", "baseline")
        git(root, "update-ref", BEST_REF, "HEAD")
        return cls(root, harness_source)

    @classmethod
    def open(cls, path, *, harness_source=HARNESS_SOURCE):
        root = Path(path)
        if not (root / ".git").exists() or not (root / TRAIN_FILE).is_file():
            raise WorkspaceError(f"{root} is not a campaign workspace (no git repository with {TRAIN_FILE})")
        ws = cls(root, harness_source)
        if not git(root, "rev-parse", "-q", "--verify", BEST_REF, check=False):
            git(root, "update-ref", BEST_REF, "HEAD")  # an older workspace: its HEAD is the best
        return ws

    def head(self) -> str:
        return git(self.root, "rev-parse", "HEAD")

    def best_commit(self) -> str:
        return git(self.root, "rev-parse", BEST_REF)

    def is_dirty(self) -> bool:
        return bool(git(self.root, "status", "--porcelain", "--untracked-files=no"))

    def diff(self, against: str | None = None) -> str:
        """The unified diff of train.py from `against` (default: the best commit) to the working tree."""
        return git(self.root, "diff", against or self.best_commit(), "--", TRAIN_FILE)

    def commit(self, message: str) -> str:
        """Commit the current train.py (an experiment, kept or not) without moving `best`.
        Returns the new HEAD; with nothing to commit, the current HEAD."""
        if self.is_dirty():
            git(self.root, "add", TRAIN_FILE)
            git(self.root, "commit", "-q", "-m", message)
        return self.head()

    def keep(self, message: str = "keep") -> str:
        """Keep the experiment: commit train.py if it changed and make HEAD the best commit."""
        sha = self.commit(message)
        git(self.root, "update-ref", BEST_REF, sha)
        return sha

    def discard(self) -> str:
        """Throw the experiment away: reset train.py (and HEAD) to the best commit."""
        best = self.best_commit()
        git(self.root, "reset", "-q", "--hard", best)
        git(self.root, "clean", "-q", "-fd")  # files a run left in the workspace
        return best

    # -------------------------------------------------------------------------
    # The one edit the agent can make

    def apply_patch(self, patch: str) -> str:
        """Apply a patch (unified diff or SEARCH/REPLACE blocks) to train.py, all or nothing.
        Returns a summary of what changed; raises patching.PatchError and leaves the file as it was
        if the patch does not apply, breaks the syntax or adds code the integrity check refuses."""
        train = self.root / TRAIN_FILE
        source = train.read_text()
        result = patching.apply_patch(source, patch)
        known = {(v.what, v.reason) for v in integrity.check_source(source)}
        added = [v for v in integrity.check_source(result.text) if (v.what, v.reason) not in known]
        if added:
            raise patching.PatchError("the patch was refused, nothing was changed: it adds code that could tamper "
                                      "with the harness or its metric:\n" + integrity.format_violations(added))
        # write next to the file and rename: the file is never half-written
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".train.py.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(result.text)
            os.chmod(tmp, train.stat().st_mode & 0o777)
            os.replace(tmp, train)
        except BaseException:
            os.unlink(tmp)
            raise
        return result.summary

    def harness_config(self) -> dict:
        return json.loads((self.root / HARNESS_FILE).read_text())

    # -------------------------------------------------------------------------
    # Paths the agent names

    def resolve(self, path: str, mounts: dict | None = None) -> Path:
        """The real file behind an agent-given path, confined to the workspace.
        `mounts` maps extra read-only names (a file, or a directory as a prefix) to real paths."""
        name = (path or "").strip().strip("'\"`")
        if not name:
            raise WorkspaceError("the path is empty: name a file in the workspace, e.g. 'train.py'")
        if Path(name).is_absolute():
            raise WorkspaceError(f"'{path}' is an absolute path: use a path relative to the workspace, e.g. 'train.py'")
        name = os.path.normpath(name)
        if name == ".." or name.startswith("../"):
            raise WorkspaceError(f"'{path}' points outside the workspace: only files inside it can be read")
        if name in HARNESS_ALIASES:
            if self.harness_source is None or not self.harness_source.is_file():
                raise WorkspaceError("the harness source prepare.py is not available in this campaign")
            return self.harness_source
        for mount, target in (mounts or {}).items():
            if name == mount or name.startswith(mount.rstrip("/") + "/"):
                return confine(Path(target), Path(target) / os.path.relpath(name, mount), path)
        if name == ".git" or name.startswith(".git/"):
            raise WorkspaceError(f"'{path}' is git's internal data, not a workspace file")
        return confine(self.root, self.root / name, path)

    def read(self, path: str, start_line: int = 1, end_line: int | None = None, mounts=None) -> str:
        return numbered_lines(self.resolve(path, mounts), path, start_line, end_line)


def confine(root: Path, candidate: Path, shown: str) -> Path:
    """`candidate` with symlinks resolved, provided it stays under `root`."""
    real = candidate.resolve()
    if real != root.resolve() and root.resolve() not in real.parents:
        raise WorkspaceError(f"'{shown}' resolves to a file outside the workspace (a symlink?): it cannot be read")
    return real


def numbered_lines(file: Path, shown: str, start_line: int = 1, end_line: int | None = None) -> str:
    """The file's lines `start_line..end_line` numbered like `cat -n`, at most PAGE_LINES of them,
    with a note on how to read on."""
    if file.is_dir():
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in file.iterdir() if p.name != ".git")
        return f"'{shown}' is a directory. It contains: {', '.join(entries) or '(nothing)'}"
    if not file.is_file():
        raise WorkspaceError(f"'{shown}' does not exist in the workspace; the editable file is 'train.py' "
                             f"and the harness source is 'prepare.py'")
    data = file.read_bytes()
    if b"\0" in data[:8192]:
        raise WorkspaceError(f"'{shown}' is a binary file ({len(data)} bytes) and cannot be shown as text")
    lines = data.decode("utf-8", errors="replace").splitlines()
    total = len(lines)
    if total == 0:
        return f"'{shown}' is empty."
    try:
        start = 1 if start_line is None else int(start_line)
        end = None if end_line is None else int(end_line)
    except (TypeError, ValueError):
        raise WorkspaceError("start_line and end_line must be whole numbers")
    if start < 1:
        raise WorkspaceError(f"start_line must be 1 or more (got {start}): lines are numbered from 1")
    if start > total:
        raise WorkspaceError(f"start_line {start} is past the end of '{shown}', which has {total} lines")
    if end is not None and end < start:
        raise WorkspaceError(f"end_line ({end}) is before start_line ({start})")
    end = min(total, end if end is not None else total, start + PAGE_LINES - 1)
    out = [f"{shown} (lines {start}-{end} of {total})"]
    for n in range(start, end + 1):
        line = lines[n - 1]
        if len(line) > MAX_LINE_CHARS:
            line = line[:MAX_LINE_CHARS] + f" ... [line cut, {len(line)} chars]"
        out.append(f"{n:6d}\t{line}")
    wanted_end = total if end_line is None else min(int(end_line), total)
    if end < wanted_end:
        out.append(f"... {total - end} more lines. To read on, call read_file with path='{shown}', "
                   f"start_line={end + 1}.")
    return "\n".join(out)
