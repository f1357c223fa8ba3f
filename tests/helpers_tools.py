"""Shared helpers for the tools/ tests: a workspace from given text, and a snapshot of it."""

import json
import subprocess

HARNESS = {"profile": "cpu", "data": "builtin", "time_budget": 5}

SAMPLE_TRAIN = '''\
"""A tiny stand-in for train.py."""
import math

DEPTH = 4
LR = 0.02


def schedule(step, total):
    warmup = 10
    if step < warmup:
        return step / warmup
    return 0.5 * (1 + math.cos(math.pi * step / total))


def block(x):
    x = x + 1
    return x


def other_block(x):
    x = x + 1
    return x


def main():
    total = 100
    for step in range(total):
        lr = LR * schedule(step, total)
    print("done", lr)


if __name__ == "__main__":
    main()
'''


def make_workspace(tmp_path, train_py=SAMPLE_TRAIN, harness=HARNESS, harness_source=None):
    from tools.workspace import Workspace  # here, so the patching tests need no workspace
    if harness_source is None:
        harness_source = tmp_path / "harness_src" / "prepare.py"
        harness_source.parent.mkdir(parents=True, exist_ok=True)
        harness_source.write_text("# the frozen harness\ndef load_harness():\n    pass\n")
    return Workspace.create(tmp_path / "ws", json.dumps(harness), train_py, harness_source=harness_source)


def snapshot(ws) -> dict:
    """Every file under the workspace (outside .git) with its bytes, plus HEAD, best and git status."""
    files = {}
    for p in sorted(ws.root.rglob("*")):
        rel = p.relative_to(ws.root)
        if rel.parts[0] == ".git":
            continue
        files[str(rel)] = ("link", str(p.readlink())) if p.is_symlink() else \
            ("dir", None) if p.is_dir() else ("file", p.read_bytes())
    status = subprocess.run(["git", "-C", str(ws.root), "status", "--porcelain"], capture_output=True, text=True).stdout
    return {"files": files, "head": ws.head(), "best": ws.best_commit(), "status": status}
