"""tools/workspace.py: git bookkeeping, confined paths, paginated reads, all-or-nothing patches."""

import os

import pytest

from helpers_tools import SAMPLE_TRAIN, make_workspace, snapshot
from tools.patching import PatchError
from tools.workspace import PAGE_LINES, Workspace, WorkspaceError

SR = "<<<<<<< SEARCH\n{}=======\n{}>>>>>>> REPLACE\n"


def test_create_open_keep_discard(tmp_path):
    ws = make_workspace(tmp_path)
    base = ws.head()
    assert ws.best_commit() == base and not ws.is_dirty()
    assert sorted(p.name for p in ws.root.iterdir()) == [".git", "harness.json", "train.py"]
    assert ws.harness_config()["profile"] == "cpu"

    ws.apply_patch(SR.format("DEPTH = 4\n", "DEPTH = 6\n"))
    assert ws.is_dirty() and "+DEPTH = 6" in ws.diff()
    kept = ws.keep("deeper")
    assert kept != base and ws.best_commit() == kept and not ws.is_dirty()

    ws.apply_patch(SR.format("LR = 0.02\n", "LR = 0.5\n"))
    tried = ws.commit("higher lr")          # an experiment gets a commit, kept or not
    assert tried != kept and ws.best_commit() == kept
    (ws.root / "stray.bin").write_text("left by a run")
    assert ws.discard() == kept
    assert ws.head() == kept and "DEPTH = 6" in (ws.root / "train.py").read_text()
    assert "LR = 0.02" in (ws.root / "train.py").read_text() and not (ws.root / "stray.bin").exists()

    again = Workspace.open(ws.root)
    assert again.best_commit() == kept and again.head() == kept


def test_create_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "x").write_text("x")
    with pytest.raises(WorkspaceError, match="not empty"):
        Workspace.create(tmp_path / "ws", {"profile": "cpu"}, "print(1)\n")


def test_read_numbered_and_paginated(tmp_path):
    long = "".join(f"x{i} = {i}\n" for i in range(1, 601))
    ws = make_workspace(tmp_path, train_py=long)
    page = ws.read("train.py")
    assert page.splitlines()[0] == "train.py (lines 1-250 of 600)"
    assert "     1\tx1 = 1" in page and f"x{PAGE_LINES} = " in page and f"x{PAGE_LINES + 1} = " not in page
    assert page.splitlines()[-1].startswith("... 350 more lines") and "start_line=251" in page
    tail = ws.read("train.py", start_line=590)
    assert tail.splitlines()[0] == "train.py (lines 590-600 of 600)" and "more lines" not in tail
    assert ws.read("train.py", 10, 12).count("\n") == 3
    assert '"profile": "cpu"' in ws.read("harness.json")
    assert "the frozen harness" in ws.read("prepare.py") and "the frozen harness" in ws.read("nanochat/prepare.py")


@pytest.mark.parametrize("path,error", [
    ("../outside.txt", "points outside the workspace"),
    ("sub/../../outside.txt", "points outside the workspace"),
    ("/etc/passwd", "is an absolute path"),
    ("link", "resolves to a file outside the workspace"),
    ("missing.py", "'missing.py' does not exist"),
    (".git/config", "git's internal data"),
    ("", "the path is empty"),
])
def test_read_refusals_change_nothing(tmp_path, path, error):
    ws = make_workspace(tmp_path)
    (tmp_path / "outside.txt").write_text("secret")
    os.symlink(tmp_path / "outside.txt", ws.root / "link")
    before = snapshot(ws)
    with pytest.raises(WorkspaceError, match=error):
        ws.read(path)
    assert snapshot(ws) == before


def test_read_bad_line_ranges(tmp_path):
    ws = make_workspace(tmp_path)
    with pytest.raises(WorkspaceError, match="past the end"):
        ws.read("train.py", 1000)
    with pytest.raises(WorkspaceError, match="before start_line"):
        ws.read("train.py", 10, 5)
    with pytest.raises(WorkspaceError, match="1 or more"):
        ws.read("train.py", 0)


def test_mounts_are_confined(tmp_path):
    ws = make_workspace(tmp_path)
    logs = tmp_path / "run" / "logs"
    logs.mkdir(parents=True)
    (logs / "a.log").write_text("line one\n")
    mounts = {"logs": logs}
    assert "line one" in ws.read("logs/a.log", mounts=mounts)
    assert "a.log" in ws.read("logs", mounts=mounts)
    os.symlink(tmp_path / "outside.txt", logs / "evil.log")
    with pytest.raises(WorkspaceError, match="outside the workspace"):
        ws.read("logs/evil.log", mounts=mounts)


@pytest.mark.parametrize("patch,error", [
    (SR.format("x = 1\n", "x = 2\n").join(["prepare.py\n", ""]), "frozen harness"),
    (SR.format("LR = 0.03\n", "LR = 0.1\n"), "does not match"),
    (SR.format("    x = x + 1\n", "    x = x + 3\n"), "matches 2 places"),
    (SR.format("LR = 0.02\n", "LR = (0.1\n"), "would not compile"),
    ("", "empty"),
    (SR.format("LR = 0.02\n", "LR = 0.02\n" + "#" * 210_000 + "\n"), "over the 200 KB limit"),
    (SR.format("import math\n", "from nanochat.prepare import load_harness\nimport math\nload_harness.x = 1\n"),
     "assignment to load_harness.x"),
    (SR.format("    print(\"done\", lr)\n", "    print(\"val_bpb: 0.5\")\n"), "val_bpb:"),
])
def test_patch_refusals_change_nothing(tmp_path, patch, error):
    ws = make_workspace(tmp_path)
    before = snapshot(ws)
    with pytest.raises(PatchError, match=error):
        ws.apply_patch(patch)
    assert snapshot(ws) == before


def test_patch_writes_the_file(tmp_path):
    ws = make_workspace(tmp_path)
    summary = ws.apply_patch(SR.format("LR = 0.02\n", "LR = 0.03\n"))
    assert "Applied 1 edit" in summary
    assert (ws.root / "train.py").read_text() == SAMPLE_TRAIN.replace("LR = 0.02", "LR = 0.03")
    assert sorted(p.name for p in ws.root.iterdir()) == [".git", "harness.json", "train.py"]
