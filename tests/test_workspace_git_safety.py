"""tools/workspace.py against a hostile train.py: whatever it plants in .git or in the environment,
the campaign's git commands run no program of its choosing; and fingerprint/verify_unchanged name
every change a run makes to HEAD, the campaign's refs, results.tsv and .git's configuration."""

import json
import os
import shutil
import stat
import subprocess

import pytest

from helpers_tools import make_workspace
from tools.workspace import (GIT_REPO_CONFIG, TRAIN_FILE, TamperError, Workspace, WorkspaceError, git,
                             git_dir_changes)

HOOKS = ("pre-commit", "prepare-commit-msg", "commit-msg", "post-commit", "post-checkout",
         "reference-transaction", "post-index-change", "pre-auto-gc", "post-rewrite")


# -----------------------------------------------------------------------------
# Helpers: marker scripts, plain git (what the campaign used to run), plants


def script(tmp_path, name: str) -> str:
    """An executable that leaves a marker file named after itself, then behaves like `cat`
    (so a filter or a pager that did run would still let git go on)."""
    markers = tmp_path / "markers"
    markers.mkdir(exist_ok=True)
    path = tmp_path / "evil" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"#!/bin/sh\ntouch '{markers}/{name}'\ncat 2>/dev/null\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def markers(tmp_path) -> list[str]:
    d = tmp_path / "markers"
    return sorted(os.listdir(d)) if d.is_dir() else []


def plain_git(root, *args, env=None):
    """git as the campaign ran it before: repo-local config honoured (global config left out, so
    the control does not depend on the machine's)."""
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"} if env is None else env
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(root), *args],
                          capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)


def raw(ws, *args):
    """git as train.py would run it: straight at the repository."""
    proc = plain_git(ws.root, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def append_config(root, text: str):
    with open(root / ".git" / "config", "a") as f:
        f.write(text)


def hook_dir(tmp_path, d):
    d.mkdir(parents=True, exist_ok=True)
    for name in HOOKS:
        target = d / name
        if target.exists():
            target.unlink()
        os.symlink(script(tmp_path, f"hook-{d.name}-{name}"), target)


def plant_fsmonitor(root, tmp):
    append_config(root, f"[core]\n\tfsmonitor = {script(tmp, 'fsmonitor')}\n")


def plant_hooks_path(root, tmp):
    hook_dir(tmp, tmp / "evil_hooks")
    append_config(root, f"[core]\n\thooksPath = {tmp / 'evil_hooks'}\n")


def plant_git_hooks(root, tmp):
    hook_dir(tmp, root / ".git" / "hooks")


def plant_filter(root, tmp):
    append_config(root, f'[filter "evil"]\n\tclean = {script(tmp, "clean")}\n\tsmudge = {script(tmp, "smudge")}\n')
    (root / ".git" / "info").mkdir(exist_ok=True)
    (root / ".git" / "info" / "attributes").write_text("* filter=evil\n")


def plant_worktree_attributes(root, tmp):
    """The filter defined in config, switched on by an in-tree .gitattributes (a file a run can
    leave in the workspace)."""
    append_config(root, f'[filter "evil"]\n\tclean = {script(tmp, "clean")}\n\tsmudge = {script(tmp, "smudge")}\n')
    (root / ".gitattributes").write_text("* filter=evil diff=evil\n")


def plant_textconv(root, tmp):
    append_config(root, f'[diff "evil"]\n\ttextconv = {script(tmp, "textconv")}\n'
                        f'\tcommand = {script(tmp, "diffcommand")}\n')
    (root / ".git" / "info").mkdir(exist_ok=True)
    (root / ".git" / "info" / "attributes").write_text("* diff=evil\n")


def plant_diff_external(root, tmp):
    append_config(root, f"[diff]\n\texternal = {script(tmp, 'diff-external')}\n")


def plant_pager(root, tmp):
    append_config(root, f"[core]\n\tpager = {script(tmp, 'pager')}\n[pager]\n\tdiff = {script(tmp, 'pager-diff')}\n"
                        f"\tstatus = {script(tmp, 'pager-status')}\n\tshow = {script(tmp, 'pager-show')}\n")


def plant_include(root, tmp):
    included = tmp / "evil" / "included.cfg"
    script(tmp, "include-fsmonitor")
    included.write_text(f"[core]\n\tfsmonitor = {tmp / 'evil' / 'include-fsmonitor'}\n")
    append_config(root, f"[include]\n\tpath = {included}\n"
                        f"[includeIf \"gitdir:/\"]\n\tpath = {included}\n")


def plant_signing(root, tmp):
    append_config(root, f"[gpg]\n\tprogram = {script(tmp, 'gpg')}\n[commit]\n\tgpgSign = true\n"
                        f"[log]\n\tshowSignature = true\n")


def plant_worktree(root, tmp):
    """core.worktree: git would check out (reset --hard) into another directory."""
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    append_config(root, f"[core]\n\tworktree = {elsewhere}\n")


def plant_commondir(root, tmp):
    """.git/commondir moves config (with an fsmonitor) to a directory the run controls."""
    common = tmp / "evil_common"
    if not common.exists():
        subprocess.run(["git", "init", "-q", "--bare", str(common)], check=True, capture_output=True)
        with open(common / "config", "a") as f:
            f.write(f"[core]\n\tfsmonitor = {script(tmp, 'commondir-fsmonitor')}\n")
    (root / ".git" / "commondir").write_text(f"{common}\n")


def plant_everything(root, tmp):
    for plant in PLANTS.values():
        if plant[0] is not plant_everything:
            plant[0](root, tmp)


# name: (plant, a plain git command that runs the plant: proof that it is a real attack)
PLANTS = {
    "fsmonitor": (plant_fsmonitor, ("status",)),
    "hooksPath": (plant_hooks_path, ("commit", "-qam", "x")),
    ".git/hooks": (plant_git_hooks, ("commit", "-qam", "x")),
    "filter": (plant_filter, ("add", TRAIN_FILE)),
    "in-tree .gitattributes": (plant_worktree_attributes, ("add", TRAIN_FILE)),
    "textconv": (plant_textconv, ("diff", "HEAD")),
    "diff.external": (plant_diff_external, ("diff",)),
    "pager": (plant_pager, ("tty", "diff")),  # git pages only to a terminal: `script` gives it one
    "include.path": (plant_include, ("status",)),
    "signing": (plant_signing, ("commit", "-qam", "x")),
    "core.worktree": (plant_worktree, None),  # plain git would fail the reset, not run anything
    "commondir": (plant_commondir, None),     # the plain repository breaks (its refs move too)
    "everything": (plant_everything, None),
}


def edit(ws, text: str):
    (ws.root / TRAIN_FILE).write_text((ws.root / TRAIN_FILE).read_text() + text)


def campaign_operations(ws, replant):
    """Every workspace operation the campaign runs, with the plant put back before each (train.py
    runs again between the campaign's steps). Returns what the operations saw."""
    base = ws.head()
    replant()
    ws = Workspace.open(ws.root, harness_source=ws.harness_source)
    edit(ws, "LR2 = 0.5\n")
    replant()
    assert ws.is_dirty()
    replant()
    assert "+LR2 = 0.5" in ws.diff()
    replant()
    tried = ws.commit("experiment 1")
    replant()
    git(ws.root, "update-ref", "refs/autoresearch/experiments/00001", tried)   # graph.record
    replant()
    assert "LR2 = 0.5" in git(ws.root, "show", f"{tried}:{TRAIN_FILE}")          # graph.director
    edit(ws, "LR3 = 0.7\n")
    replant()
    kept = ws.keep("keep 2")
    replant()
    assert ws.best_commit() == kept and ws.head() == kept
    edit(ws, "LR4 = 0.9\n")
    (ws.root / "stray.bin").write_text("left by a run")
    replant()
    assert ws.discard() == kept
    replant()
    assert not ws.is_dirty()
    replant()
    return base, tried, kept, ws.head(), ws.best_commit()


# -----------------------------------------------------------------------------
# Planted configuration


@pytest.mark.parametrize("name", PLANTS)
def test_planted_config_runs_nothing(tmp_path, name):
    plant, control = PLANTS[name]
    if control:  # the plant is a real attack: the campaign's old plain git ran it
        ctl = make_workspace(tmp_path / "control")
        plant(ctl.root, tmp_path / "control")
        edit(ctl, "LR2 = 0.5\n")
        if control[0] == "tty":
            if not shutil.which("script"):
                pytest.skip("no `script` to give plain git a terminal")
            subprocess.run(["script", "-qec", "git " + " ".join(control[1:]), os.devnull], cwd=ctl.root,
                           env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull}, capture_output=True,
                           stdin=subprocess.DEVNULL)
        else:
            plain_git(ctl.root, *control)
        assert markers(tmp_path / "control"), f"the {name} plant did not fire under plain git"

    ws = make_workspace(tmp_path)
    base, tried, kept, head, best = campaign_operations(ws, lambda: plant(ws.root, tmp_path))
    assert markers(tmp_path) == []
    # the operations did their work: both commits landed, the discard went back to the kept one
    assert len({base, tried, kept}) == 3 and head == best == kept
    assert git(ws.root, "rev-parse", "refs/autoresearch/experiments/00001") == tried
    assert (ws.root / TRAIN_FILE).read_text().endswith("LR2 = 0.5\nLR3 = 0.7\n")
    assert not (ws.root / "stray.bin").exists()
    assert git(ws.root, "show", f"{kept}:{TRAIN_FILE}") == (ws.root / TRAIN_FILE).read_text().rstrip("\n")
    assert not (tmp_path / "elsewhere").exists() or not os.listdir(tmp_path / "elsewhere")


def test_git_dir_is_put_back(tmp_path):
    ws = make_workspace(tmp_path)
    plant_everything(ws.root, tmp_path)
    (ws.root / ".git" / "objects" / "info" / "alternates").write_text(str(tmp_path / "evil_common" / "objects"))
    assert len(git_dir_changes(ws.root)) >= 4
    ws.head()
    assert (ws.root / ".git" / "config").read_text() == GIT_REPO_CONFIG
    assert os.listdir(ws.root / ".git" / "hooks") == []
    for rel in ("info/attributes", "commondir", "objects/info/alternates"):
        assert not (ws.root / ".git" / rel).exists()
    assert not (ws.root / ".gitattributes").exists()
    assert git_dir_changes(ws.root) == []


def test_symlinked_info_dir_is_replaced_not_followed(tmp_path):
    ws = make_workspace(tmp_path)
    outside = tmp_path / "outside_info"
    outside.mkdir()
    (outside / "attributes").write_text("keep me\n")
    info = ws.root / ".git" / "info"
    for p in info.iterdir():
        p.unlink()
    info.rmdir()
    os.symlink(outside, info)
    ws.head()
    assert not info.is_symlink() and (info / "exclude").is_file()
    assert (outside / "attributes").read_text() == "keep me\n"   # nothing outside .git was touched


@pytest.mark.parametrize("how", ["symlink", "gitfile"])
def test_a_replaced_git_dir_stops_everything(tmp_path, how):
    ws = make_workspace(tmp_path)
    other = tmp_path / "other.git"
    (ws.root / ".git").rename(other)
    if how == "symlink":
        os.symlink(other, ws.root / ".git")
    else:
        (ws.root / ".git").write_text(f"gitdir: {other}\n")
    with pytest.raises(TamperError, match="no longer a directory"):
        ws.is_dirty()
    with pytest.raises(TamperError, match="no longer a directory"):
        ws.discard()


def test_a_missing_git_dir_never_reaches_a_parent_repository(tmp_path):
    """Were .git deleted, plain git would walk up to an enclosing repository and reset it."""
    parent = make_workspace(tmp_path / "outer")   # a repository around the workspace
    inner = parent.root / "campaign"
    inner.mkdir()
    (inner / TRAIN_FILE).write_text("x = 1\n")
    assert plain_git(inner, "rev-parse", "HEAD").stdout.strip() == parent.head()  # plain git walks up
    with pytest.raises(RuntimeError, match="not a git repository"):
        git(inner, "reset", "-q", "--hard")
    with pytest.raises(WorkspaceError, match="not a campaign workspace"):
        Workspace.open(inner)


def test_global_system_and_environment_config_is_ignored(tmp_path, monkeypatch):
    fsmonitor, clean, ext = script(tmp_path, "global-fsmonitor"), script(tmp_path, "global-clean"), \
        script(tmp_path, "env-external-diff")
    hook_dir(tmp_path, tmp_path / "global_hooks")
    evil = f"[core]\n\tfsmonitor = {fsmonitor}\n\thooksPath = {tmp_path / 'global_hooks'}\n" \
           f"[filter \"evil\"]\n\tclean = {clean}\n\tsmudge = {clean}\n"
    home, xdg = tmp_path / "home", tmp_path / "xdg"
    (xdg / "git").mkdir(parents=True)
    home.mkdir()
    (home / ".gitconfig").write_text(evil)
    (xdg / "git" / "config").write_text(evil)
    (xdg / "git" / "attributes").write_text("* filter=evil\n")
    (tmp_path / "global.cfg").write_text(evil)
    (tmp_path / "system.cfg").write_text(evil)
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(xdg), "GIT_CONFIG_GLOBAL": str(tmp_path / "global.cfg"),
           "GIT_CONFIG_SYSTEM": str(tmp_path / "system.cfg"), "GIT_EXTERNAL_DIFF": ext,
           "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.fsmonitor", "GIT_CONFIG_VALUE_0": fsmonitor,
           "GIT_PAGER": script(tmp_path, "env-pager"), "GIT_EDITOR": script(tmp_path, "env-editor")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("GIT_CONFIG_NOSYSTEM", raising=False)

    # control: plain git with this environment runs them
    ctl = make_workspace(tmp_path / "control")     # (created safely: the workspace's git ignores env)
    edit(ctl, "LR2 = 0.5\n")
    plain_git(ctl.root, "diff", env=dict(os.environ))
    plain_git(ctl.root, "commit", "-qam", "x", env=dict(os.environ))
    fired = markers(tmp_path)
    assert {"global-fsmonitor", "global-clean", "env-external-diff"} <= set(fired), fired
    for name in fired:
        (tmp_path / "markers" / name).unlink()

    ws = make_workspace(tmp_path / "campaign")
    base, tried, kept, head, best = campaign_operations(ws, lambda: None)
    assert markers(tmp_path) == []
    assert len({base, tried, kept}) == 3 and head == best == kept


def test_canonical_config_is_what_git_init_writes(tmp_path):
    env = {"PATH": os.environ["PATH"], "HOME": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    subprocess.run(["git", "init", "-q", str(tmp_path / "r")], check=True, env=env)
    assert (tmp_path / "r" / ".git" / "config").read_text() == GIT_REPO_CONFIG
    ws = make_workspace(tmp_path)
    assert (ws.root / ".git" / "config").read_text() == GIT_REPO_CONFIG
    assert git_dir_changes(ws.root) == []


# -----------------------------------------------------------------------------
# fingerprint / verify_unchanged


@pytest.fixture
def campaign(tmp_path):
    ws = make_workspace(tmp_path)
    git(ws.root, "update-ref", "refs/autoresearch/experiments/00001", ws.head())
    results = tmp_path / "results.tsv"
    results.write_text("commit\tval_bpb\tstatus\n")
    return ws, results


def test_an_honest_run_passes(campaign):
    ws, results = campaign
    before = ws.fingerprint([results])
    json.dumps(before)   # plain data: the supervisor may log it
    assert before["head"] == ws.head() and before["refs"]["refs/autoresearch/best"] == ws.best_commit()
    assert set(before["refs"]) == {"refs/autoresearch/best", "refs/autoresearch/experiments/00001"}
    edit(ws, "x = 2\n")                                     # what a run may do: write in the workspace
    (ws.root / "checkpoint.pt").write_bytes(b"\0" * 10)
    ws.verify_unchanged(before)
    ws.verify_unchanged(before, [results])


def short(sha):
    return sha[:7]


def other_commit(ws):
    """A commit that is not HEAD, made the way a run could."""
    return raw(ws, "commit-tree", "-p", "HEAD", "-m", "evil", "HEAD^{tree}")


@pytest.mark.parametrize("change", ["move best", "add ref", "delete ref", "move HEAD", "switch branch",
                                    "append results", "delete results"])
def test_each_change_is_named(campaign, change):
    ws, results = campaign
    before = ws.fingerprint([results])
    head = ws.head()
    if change == "move best":
        sha = other_commit(ws)
        (ws.root / ".git" / "refs" / "autoresearch" / "best").write_text(sha + "\n")
        expected = f"refs/autoresearch/best moved from {short(head)} to {short(sha)}"
    elif change == "add ref":
        raw(ws, "update-ref", "refs/autoresearch/experiments/00099", head)
        expected = f"refs/autoresearch/experiments/00099 was created at {short(head)}"
    elif change == "delete ref":
        raw(ws, "update-ref", "-d", "refs/autoresearch/experiments/00001")
        expected = f"refs/autoresearch/experiments/00001 was deleted (it was at {short(head)})"
    elif change == "move HEAD":
        edit(ws, "x = 3\n")
        raw(ws, "commit", "-qam", "sneaky")
        expected = f"HEAD moved from {short(head)} to {short(raw(ws, 'rev-parse', 'HEAD'))}"
    elif change == "switch branch":
        raw(ws, "update-ref", "refs/heads/other", head)
        raw(ws, "symbolic-ref", "HEAD", "refs/heads/other")
        expected = "HEAD now points at refs/heads/other instead of refs/heads/master"
    elif change == "append results":
        with open(results, "a") as f:
            f.write("deadbee\t0.1\tkeep\n")
        expected = "results.tsv changed"
    else:
        results.unlink()
        expected = "results.tsv was deleted"
    with pytest.raises(TamperError) as err:
        ws.verify_unchanged(before)
    assert expected in str(err.value)
    if change != "switch branch":
        assert "HEAD now points" not in str(err.value)


@pytest.mark.parametrize("plant,expected", [
    (plant_fsmonitor, ".git/config was modified"),
    (plant_git_hooks, ".git/hooks/pre-commit appeared"),
    (plant_filter, ".git/info/attributes appeared"),
    (plant_commondir, ".git/commondir appeared"),
])
def test_tampering_with_git_config_is_named(campaign, tmp_path, plant, expected):
    ws, results = campaign
    before = ws.fingerprint([results])
    plant(ws.root, tmp_path)
    with pytest.raises(TamperError, match=expected.replace(".", r"\.")):
        ws.verify_unchanged(before)
    assert markers(tmp_path) == []   # verifying ran none of it
    ws.verify_unchanged(before)      # and put .git back


def test_several_changes_are_all_named(campaign):
    ws, results = campaign
    before = ws.fingerprint([results])
    sha = other_commit(ws)
    raw(ws, "update-ref", "refs/autoresearch/best", sha)
    raw(ws, "update-ref", "HEAD", sha)
    results.write_text("")
    with pytest.raises(TamperError) as err:
        ws.verify_unchanged(before)
    message = str(err.value)
    for part in ("HEAD moved", "refs/autoresearch/best moved", "results.tsv changed"):
        assert part in message
    assert "experiments" not in message


def test_a_file_missing_at_both_ends_is_unchanged_and_one_appearing_is_named(campaign, tmp_path):
    ws, _ = campaign
    later = tmp_path / "later.tsv"
    before = ws.fingerprint([later])
    assert before["files"] == {str(later): None}
    ws.verify_unchanged(before)
    later.write_text("x\n")
    with pytest.raises(TamperError, match="later.tsv appeared"):
        ws.verify_unchanged(before)


def test_verifying_a_file_never_fingerprinted_is_a_caller_error(campaign):
    ws, results = campaign
    before = ws.fingerprint()
    with pytest.raises(ValueError, match="not in the fingerprint"):
        ws.verify_unchanged(before, [results])


def test_a_replaced_git_dir_is_named_by_verify(campaign, tmp_path):
    ws, results = campaign
    before = ws.fingerprint([results])
    (ws.root / ".git").rename(tmp_path / "moved.git")
    os.symlink(tmp_path / "moved.git", ws.root / ".git")
    with pytest.raises(TamperError, match=r"\.git is no longer a directory"):
        ws.verify_unchanged(before)


# -----------------------------------------------------------------------------
# Repository state that changes what git does without running anything


def test_a_planted_merge_head_does_not_enter_the_history(tmp_path):
    ws = make_workspace(tmp_path)
    base = ws.head()
    evil = raw(ws, "commit-tree", "-p", base, "-m", "the run's commit", "HEAD^{tree}")
    (ws.root / ".git" / "MERGE_HEAD").write_text(evil + "\n")
    edit(ws, "x = 2\n")
    sha = ws.commit("experiment")
    assert raw(ws, "log", "--format=%P", "-1", sha) == base   # plain git would make `evil` the parent
    assert not (ws.root / ".git" / "MERGE_HEAD").exists()


def test_replace_refs_do_not_change_what_git_shows(tmp_path):
    ws = make_workspace(tmp_path)
    best = ws.best_commit()
    blob = subprocess.run(["git", "-C", str(ws.root), "hash-object", "-w", "--stdin"], input="evil = 1\n",
                          capture_output=True, text=True, check=True).stdout.strip()
    real = raw(ws, "rev-parse", f"{best}:{TRAIN_FILE}")
    raw(ws, "replace", real, blob)
    assert raw(ws, "show", f"{best}:{TRAIN_FILE}") == "evil = 1"           # plain git is fooled
    assert "DEPTH = 4" in git(ws.root, "show", f"{best}:{TRAIN_FILE}")       # the campaign is not
    edit(ws, "x = 2\n")
    assert "+x = 2" in ws.diff() and "evil" not in ws.diff()


def test_programs_git_starts_get_no_secrets(tmp_path, monkeypatch):
    """Were a program to slip through, it would not see the campaign's API keys."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    ws = make_workspace(tmp_path)
    env = git(ws.root, "-c", "alias.envdump=!env", "envdump")   # a trusted caller's own program
    assert "sk-secret" not in env and "PATH=" in env and "GIT_CONFIG_GLOBAL=/dev/null" in env


def test_an_older_workspace_is_opened_and_cleaned(tmp_path):
    """A workspace made by plain git (the user's template hooks, any branch name) opens as before."""
    root = tmp_path / "old"
    root.mkdir()
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, env=env)
    (root / TRAIN_FILE).write_text("x = 1\n")
    plain_git(root, "add", TRAIN_FILE)
    plain_git(root, "commit", "-qm", "baseline")
    plant_fsmonitor(root, tmp_path)
    ws = Workspace.open(root, harness_source=None)
    assert ws.best_commit() == ws.head() and not ws.is_dirty()
    assert os.listdir(root / ".git" / "hooks") == [] and git_dir_changes(root) == []
    assert git(root, "symbolic-ref", "HEAD") == "refs/heads/main" and markers(tmp_path) == []


def test_a_broken_head_is_named(campaign):
    ws, results = campaign
    before = ws.fingerprint([results])
    (ws.root / ".git" / "HEAD").write_text("ref: refs/heads/nowhere\n")
    with pytest.raises(TamperError, match="HEAD no longer names a commit .it was at "):
        ws.verify_unchanged(before)
    (ws.root / ".git" / "HEAD").write_text("garbage\n")   # git no longer takes it for a repository
    with pytest.raises(TamperError, match="git cannot read the repository any more"):
        ws.verify_unchanged(before)
