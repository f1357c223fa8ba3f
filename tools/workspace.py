"""
The campaign workspace: a directory holding a git repository whose tracked files are the
editable `train.py` and `harness.json` (the pin of the frozen harness: profile, data, budget).

Keep = commit and move the `best` ref; discard = reset to the best commit. Every path the agent
names goes through `resolve`, which confines it to the workspace (plus a few read-only mounts such
as the harness source) and says clearly why a path is refused.

train.py is hostile code that runs inside the workspace. It once set `core.fsmonitor` in
`.git/config`, and the campaign's own `git status` then ran its script with the campaign's
environment (API keys). So every git command goes through `git()`, which reads no global or system
configuration, overrides every key that runs a program, and first puts the parts of `.git` that
git reads as configuration back to what the campaign wrote (`restore_git_dir`). `fingerprint` and
`verify_unchanged` check around each training run that HEAD, the campaign's refs and results.tsv
did not move.
"""

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from nanochat.config import HARNESS_FILE, TRAIN_FILE, render_train_py
from tools import integrity, patching

# -----------------------------------------------------------------------------
# Constants

REF_PREFIX = "refs/autoresearch/"    # the campaign's refs: best, experiments/NNNNN
BEST_REF = REF_PREFIX + "best"       # a ref, not a branch: survives resume, invisible to `git branch`
PROJECT_ROOT = Path(__file__).resolve().parents[1]  # holds the nanochat package
HARNESS_SOURCE = PROJECT_ROOT / "nanochat" / "prepare.py"  # shown to the agent read-only
HARNESS_ALIASES = ("prepare.py", "nanochat/prepare.py")    # the names the agent may use for it
PAGE_LINES = 250       # lines per read_file page: a whole small file, a screenful of a long one
MAX_LINE_CHARS = 400   # longer lines are cut: a minified blob must not flood the context

# Git configuration, in one place. `-c` beats every configuration file, so these hold even if
# something slips past restore_git_dir. Keys that name a program are pinned to nothing or to a
# harmless one; the few that need a driver name (filter.<name>.clean, diff.<name>.textconv,
# merge.<name>.driver) cannot be pinned here and are handled by rewriting .git/config.
# diff.external is absent on purpose: any value, even empty, is run as a program; Workspace.diff
# passes --no-ext-diff instead.
GIT_SETTINGS = {
    # commits must not depend on the user's git config
    "user.name": "autoresearch",
    "user.email": "autoresearch@localhost",
    "init.defaultBranch": "master",
    "init.templateDir": "",             # no template: no sample hooks, nothing from /usr/share
    # programs git would run on its own
    "core.fsmonitor": "false",          # the attack that happened: a hook run by status/commit/reset
    "core.hooksPath": "/dev/null",      # no hook of any kind (pre-commit, reference-transaction, ...)
    "core.pager": "cat",
    "core.editor": ":",                 # ':' is git's own "no editor"
    "sequence.editor": ":",
    "core.askPass": "",
    "credential.helper": "",            # an empty value clears the list
    "core.sshCommand": "false",
    "core.alternateRefsCommand": "false",
    "gpg.program": "false",
    "gpg.openpgp.program": "false",
    "gpg.x509.program": "false",
    "gpg.ssh.program": "false",
    "gpg.ssh.defaultKeyCommand": "false",
    "commit.gpgSign": "false",
    "tag.gpgSign": "false",
    "log.showSignature": "false",       # would run gpg.program from `git show`
    "protocol.allow": "never",          # no transport at all (ext:: runs commands)
    "submodule.recurse": "false",
    "status.submoduleSummary": "false",
    "gc.auto": "0",                     # no background `git gc`/maintenance started by commit
    "maintenance.auto": "false",
    # files outside the repository that git would read as configuration
    "core.attributesFile": "/dev/null",
    "core.excludesFile": "/dev/null",
    # repository content that changes what git reads
    "core.useReplaceRefs": "false",     # refs/replace/* would substitute other objects
    "color.ui": "never",                # diffs are text for the model, never escape codes
}
GIT_CONFIG = [arg for key, value in GIT_SETTINGS.items() for arg in ("-c", f"{key}={value}")]

# The environment git runs with: only what it needs to find itself and read text (so no API key
# reaches a program git might start), no GIT_* variable of the caller (GIT_DIR, GIT_CONFIG_*,
# GIT_EXTERNAL_DIFF, GIT_EXEC_PATH ...), and no global or system configuration.
GIT_ENV_KEEP = ("PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR")  # plus LC_*
GIT_ENV = {
    "HOME": os.devnull,                # no ~/.gitconfig, ~/.config/git/{config,attributes,ignore}
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_SYSTEM": os.devnull,
    "GIT_CONFIG_GLOBAL": os.devnull,   # git >= 2.32
    "GIT_ATTR_NOSYSTEM": "1",
    "GIT_NO_REPLACE_OBJECTS": "1",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_PAGER": "cat",
    "PAGER": "cat",
    "GIT_EDITOR": ":",
    "GIT_OPTIONAL_LOCKS": "0",         # `status` takes no index.lock: a concurrent commit never trips on it
}

# What the campaign keeps in .git besides objects and refs, put back before every git command.
# GIT_REPO_CONFIG is exactly what `git init` (sha1, format 0) writes on Linux: no include.path,
# no filter/diff/merge drivers, no core.worktree, no extensions.worktreeConfig.
GIT_REPO_CONFIG = """\
[core]
\trepositoryformatversion = 0
\tfilemode = true
\tbare = false
\tlogallrefupdates = true
"""
GIT_DIR_FILES = {
    "config": GIT_REPO_CONFIG,
    "info/exclude": "__pycache__/\n",   # the harness may leave bytecode; never part of an experiment
}
GIT_DIR_EMPTY = ("hooks",)               # hooks are off anyway (core.hooksPath); none may wait here
GIT_DIR_ABSENT = (
    "info/attributes",                   # `* filter=evil` would run filter.evil.clean on `git add`
    "config.worktree",                   # a second config file (with extensions.worktreeConfig)
    "commondir",                         # would move config, refs and objects to another directory
    "objects/info/alternates",           # objects from elsewhere: commits could lean on them
    "objects/info/http-alternates",
    "info/grafts",                       # rewrites history as git sees it
    # an operation in progress: `git commit` would take MERGE_HEAD as a parent (the run's commit
    # into the campaign's history) or CHERRY_PICK_HEAD's author; the campaign never merges
    "MERGE_HEAD", "MERGE_MSG", "MERGE_MODE", "AUTO_MERGE", "CHERRY_PICK_HEAD", "REVERT_HEAD",
    "SQUASH_MSG", "sequencer", "rebase-merge", "rebase-apply",
)
WORKTREE_ABSENT = (".gitattributes",)    # in-tree attributes: eol/encoding conversions of train.py


class WorkspaceError(Exception):
    """A user error (bad path, missing file): its message is a sentence the model can act on."""


class TamperError(Exception):
    """Something outside the campaign changed the workspace's git state or results: stop.
    Not a WorkspaceError on purpose: those are caught and shown to the model as a hint to act on;
    this must reach the supervisor and end the campaign."""


def git(root, *args, check=True, input: str | None = None, strip: bool = True) -> str:
    """Run git in the workspace `root` so that nothing in it or in the user's setup can make git
    run a program or behave differently (see GIT_SETTINGS, GIT_ENV, restore_git_dir). Returns its
    output, stripped unless `strip` is False (a file's exact text)."""
    root = Path(root).resolve()
    restore_git_dir(root)
    env = {k: v for k, v in os.environ.items() if k in GIT_ENV_KEEP or k.startswith("LC_")}
    # GIT_DIR/GIT_WORK_TREE: never discover another repository (a parent's, were .git deleted),
    # and core.worktree cannot point the work tree elsewhere
    env.update(GIT_ENV, GIT_DIR=str(root / ".git"), GIT_WORK_TREE=str(root))
    proc = subprocess.run(["git", "--no-pager", *GIT_CONFIG, "-C", str(root), *args], capture_output=True,
                          text=True, env=env, **({"input": input} if input is not None else {"stdin": subprocess.DEVNULL}))
    if check and proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {root}: {proc.stderr.strip()}")
    return proc.stdout.strip() if strip else proc.stdout


def restore_git_dir(root) -> None:
    """Put back what git reads as configuration in the workspace's .git: rewrite GIT_DIR_FILES,
    empty GIT_DIR_EMPTY, delete GIT_DIR_ABSENT (and an in-tree .gitattributes). Objects and refs
    are left alone: verify_unchanged checks those. Nothing to do before `git init`."""
    root = Path(root)
    gitdir = root / ".git"
    if not os.path.lexists(gitdir):
        return
    if gitdir.is_symlink() or not gitdir.is_dir():
        raise TamperError(f"{gitdir} is no longer a directory (a symlink or a gitdir file): "
                          f"git would use another repository")
    for name in ("objects", "refs"):
        if (gitdir / name).is_symlink():
            raise TamperError(f"{gitdir / name} is a symlink: git would use another repository's {name}")
    for rel, text in GIT_DIR_FILES.items():
        _write_atomic(gitdir, rel, text)
    for rel in GIT_DIR_EMPTY:
        _own_dir(gitdir, rel)
        for entry in os.scandir(gitdir / rel):
            _remove(entry.path)
    for rel in GIT_DIR_ABSENT:
        _own_dir(gitdir, str(Path(rel).parent))  # a symlinked info/ would lead git elsewhere
        _remove(gitdir / rel)
    for rel in WORKTREE_ABSENT:
        _remove(root / rel)


def git_dir_changes(root) -> list[str]:
    """What differs in the workspace's .git from what restore_git_dir leaves: one sentence each.
    Reads only; run it before any git() call, which would put things back."""
    gitdir = Path(root) / ".git"
    if gitdir.is_symlink() or not gitdir.is_dir():
        return [".git is no longer a directory (a symlink or a gitdir file)"]
    changes = []
    dirs = {str(p) for rel in (*GIT_DIR_FILES, *GIT_DIR_ABSENT, *GIT_DIR_EMPTY)
            for p in Path(rel).parents if p != Path(".")} | set(GIT_DIR_EMPTY)
    for rel in sorted(dirs):
        if (gitdir / rel).is_symlink():
            changes.append(f".git/{rel} was replaced by a symlink")
    for rel, text in GIT_DIR_FILES.items():
        path = gitdir / rel
        if not path.is_file() or path.is_symlink():
            changes.append(f".git/{rel} was removed or replaced")
        elif _read_head(path, len(text.encode()) + 1) != text.encode():
            changes.append(f".git/{rel} was modified")
    for rel in GIT_DIR_EMPTY:
        path = gitdir / rel
        if path.is_symlink():
            continue  # said above
        if path.exists() and not path.is_dir():
            changes.append(f".git/{rel} was replaced by a file")
        elif path.is_dir():
            changes += [f".git/{rel}/{name} appeared" for name in sorted(os.listdir(path))]
    changes += [f".git/{rel} appeared" for rel in GIT_DIR_ABSENT if os.path.lexists(gitdir / rel)]
    return changes


def _read_head(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _remove(path) -> None:
    """Delete a file, a symlink (not what it points to) or a directory tree; absent is fine."""
    path = Path(path)
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)  # rmtree never follows symlinks inside
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def _own_dir(gitdir: Path, rel: str) -> Path:
    """gitdir/rel as a real directory: a symlink or a file in its place is removed first, so that
    writing or deleting inside it never lands outside the repository."""
    path = gitdir
    for part in Path(rel).parts:
        path = path / part
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            _remove(path)
        path.mkdir(exist_ok=True)
    return path


def _write_atomic(gitdir: Path, rel: str, text: str) -> None:
    """Write gitdir/rel through a temporary file and a rename: a concurrent git never reads half
    a file, and a symlink planted at rel is replaced, not followed."""
    parent = _own_dir(gitdir, str(Path(rel).parent))
    target = gitdir / rel
    if target.is_dir() and not target.is_symlink():
        _remove(target)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise


def file_sha256(path) -> str | None:
    """The sha256 of a file's bytes; None when there is no file."""
    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
            train_py = render_train_py(json.loads(harness_text)["profile"])
        root.mkdir(parents=True, exist_ok=True)
        git(root, "init", "-q", "--object-format=sha1")  # the format GIT_REPO_CONFIG describes
        restore_git_dir(root)  # .git/config and info/exclude exactly as every later git() puts them
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

    def source(self, rev: str) -> str:
        """train.py's exact text at commit or ref `rev`."""
        return git(self.root, "cat-file", "blob", f"{rev}:{TRAIN_FILE}", strip=False)

    def is_dirty(self) -> bool:
        return bool(git(self.root, "status", "--porcelain", "--untracked-files=no"))

    def diff(self, against: str | None = None) -> str:
        """The unified diff of train.py from `against` (default: the best commit) to the working tree."""
        # no external diff or textconv program, whatever a config or attribute says
        return git(self.root, "diff", "--no-ext-diff", "--no-textconv", against or self.best_commit(),
                   "--", TRAIN_FILE)

    def commit(self, message: str) -> str:
        """Commit the current train.py (an experiment, kept or not) without moving `best`.
        Returns the new HEAD; with nothing to commit, the current HEAD."""
        if self.is_dirty():
            git(self.root, "add", TRAIN_FILE)
            git(self.root, "commit", "-q", "-m", message)
        return self.head()

    def snapshot(self, source: str, message: str, ref: str) -> str:
        """Commit `source` as train.py on top of the best commit and point `ref` at it, leaving the
        working tree, the index and HEAD as they are (the agent may go on editing). Returns the sha."""
        base = self.best_commit()
        blob = git(self.root, "hash-object", "-w", "--no-filters", "--stdin", input=source)
        listing = git(self.root, "ls-tree", base).splitlines()
        tree = "".join(f"100644 blob {blob}\t{TRAIN_FILE}\n" if line.endswith(f"\t{TRAIN_FILE}") else line + "\n"
                       for line in listing)
        sha = git(self.root, "commit-tree", git(self.root, "mktree", input=tree), "-p", base, "-m", message)
        git(self.root, "update-ref", ref, sha)
        return sha

    def keep(self, message: str = "keep") -> str:
        """Keep the experiment: commit train.py if it changed and make HEAD the best commit."""
        sha = self.commit(message)
        git(self.root, "update-ref", BEST_REF, sha)
        return sha

    def discard(self) -> str:
        """Throw the experiment away: reset train.py (and HEAD) to the best commit."""
        return self.checkout(self.best_commit())

    def checkout(self, sha: str) -> str:
        """Make the workspace exactly commit `sha` (e.g. an experiment to run again)."""
        git(self.root, "reset", "-q", "--hard", sha)
        git(self.root, "clean", "-q", "-fd")  # files a run left in the workspace
        return sha

    # -------------------------------------------------------------------------
    # Checks around a training run: the run may not move HEAD or the campaign's refs, nor touch
    # results.tsv or .git's configuration

    def fingerprint(self, extra_files=()) -> dict:
        """HEAD (its commit and the branch it names), every ref under refs/autoresearch/ with its
        commit, and the sha256 of each of `extra_files` (None for a missing file; relative paths
        are taken from the workspace root). Plain strings: it can be logged or saved as JSON."""
        listing = git(self.root, "for-each-ref", "--format=%(refname) %(objectname)", REF_PREFIX)
        return {
            "head": git(self.root, "rev-parse", "-q", "--verify", "HEAD^{commit}", check=False) or None,
            "head_ref": git(self.root, "symbolic-ref", "-q", "HEAD", check=False) or None,
            "refs": dict(line.split(" ", 1) for line in listing.splitlines()),
            "files": {str(f): file_sha256(self.root / f) for f in extra_files},
        }

    def verify_unchanged(self, before: dict, extra_files=()) -> None:
        """Raise TamperError naming everything that differs from `before` (a fingerprint), and any
        change to what restore_git_dir keeps in .git. `extra_files` defaults to the files `before`
        fingerprinted; each must have been fingerprinted."""
        changes = git_dir_changes(self.root)  # first: the git() calls below put .git back
        if changes and not (self.root / ".git").is_dir():
            raise TamperError(f"the workspace {self.root} was tampered with: {changes[0]}")
        files = [str(f) for f in extra_files] or list(before["files"])
        unknown = [f for f in files if f not in before["files"]]
        if unknown:
            raise ValueError(f"{', '.join(unknown)} not in the fingerprint: pass it to fingerprint() too")
        try:
            after = self.fingerprint(files)
        except RuntimeError as err:  # e.g. a HEAD git cannot parse: it no longer sees a repository
            raise TamperError(f"the workspace {self.root} was tampered with: "
                              + "; ".join([*changes, f"git cannot read the repository any more ({err})"])) from err
        if after["head"] != before["head"]:
            changes.append(f"HEAD moved from {_short(before['head'])} to {_short(after['head'])}" if after["head"]
                           else f"HEAD no longer names a commit (it was at {_short(before['head'])})")
        if after["head_ref"] != before["head_ref"]:
            changes.append(f"HEAD now points at {after['head_ref'] or 'a commit (detached)'} "
                           f"instead of {before['head_ref'] or 'a commit (detached)'}")
        for ref in sorted(before["refs"].keys() | after["refs"].keys()):
            old, new = before["refs"].get(ref), after["refs"].get(ref)
            if old is None:
                changes.append(f"{ref} was created at {_short(new)}")
            elif new is None:
                changes.append(f"{ref} was deleted (it was at {_short(old)})")
            elif old != new:
                changes.append(f"{ref} moved from {_short(old)} to {_short(new)}")
        for f in files:
            old, new = before["files"][f], after["files"][f]
            if old != new:
                changes.append(f"{f} {'was deleted' if new is None else 'appeared' if old is None else 'changed'}")
        if changes:
            raise TamperError(f"the workspace {self.root} was tampered with: " + "; ".join(changes))

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


def _short(sha: str | None) -> str:
    return sha[:7] if sha else "nothing"


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
