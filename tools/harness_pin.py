"""
The campaign's pin of its harness: a private copy of the harness package and the hashes of it and
of the prepared data, checked before every run.

Sandboxed runs import the harness from the copy in the run dir (read-only for them), never from
the project checkout, so an edit or a planted .pyc in the checkout changes nothing mid-campaign. The
hashes catch what the sandbox cannot: anything else on the machine changing the copy or the data
cache. A mismatch stops the campaign (HarnessTampered) with the files named.

Hashing a multi-GB train split before every run would cost seconds, so a file whose size, inode,
mtime and ctime are what they were at the last full hash is taken as unchanged: no unprivileged
process can write a file without moving its ctime, nor set a ctime back.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from nanochat.config import TRAIN_DATA_FILES, VAL_DATA_FILES

PIN_DIR = "harness"                  # in the run dir
PIN_FILE = "pin.json"
PACKAGE = "nanochat"
SOURCE_PACKAGE = Path(__file__).resolve().parents[1] / PACKAGE


class HarnessTampered(RuntimeError):
    """The harness or its data changed since the campaign pinned them."""


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class HarnessPin:
    def __init__(self, root: Path, data_dir: Path, files: dict[str, dict]):
        self.root = root                # run_dir/harness: holds nanochat/ and pin.json
        self.data_dir = data_dir        # the prepared data of the campaign (train and val splits)
        self.files = files              # path -> {"sha256", "stat"}

    @property
    def package_parent(self) -> Path:
        """The directory to put on PYTHONPATH: it holds the pinned `nanochat` package."""
        return self.root

    @classmethod
    def create(cls, run_dir: Path, data_dir: Path, source: Path = SOURCE_PACKAGE) -> "HarnessPin":
        """Copy the harness package (its .py files only: no bytecode) and hash it and the data."""
        root = Path(run_dir).resolve() / PIN_DIR
        package = root / PACKAGE
        if package.exists():
            shutil.rmtree(package)
        package.mkdir(parents=True)
        for py in sorted(Path(source).glob("*.py")):
            shutil.copyfile(py, package / py.name)
            os.chmod(package / py.name, 0o444)
        pin = cls(root, Path(data_dir).resolve(), {})
        for path in pin.pinned_paths():
            pin.files[str(path)] = {"sha256": _sha256(path), "stat": _stat_key(path)}
        pin.save()
        return pin

    @classmethod
    def open(cls, run_dir: Path) -> "HarnessPin | None":
        file = Path(run_dir).resolve() / PIN_DIR / PIN_FILE
        if not file.exists():
            return None
        data = json.loads(file.read_text())
        return cls(file.parent, Path(data["data_dir"]), data["files"])

    def save(self) -> None:
        tmp = self.root / (PIN_FILE + ".tmp")
        tmp.write_text(json.dumps({"data_dir": str(self.data_dir), "files": self.files}, indent=1))
        os.replace(tmp, self.root / PIN_FILE)

    def pinned_paths(self) -> list[Path]:
        package = sorted((self.root / PACKAGE).glob("*.py"))
        data = [self.data_dir / name for name in (*TRAIN_DATA_FILES, *VAL_DATA_FILES)]
        return [*package, *data]

    def verify(self) -> None:
        """Raise HarnessTampered naming every pinned file that is missing or changed, and any file
        added to the pinned package (a planted module or __pycache__)."""
        problems, restat = [], False
        for name, entry in self.files.items():
            path = Path(name)
            try:
                if _stat_key(path) == entry["stat"]:
                    continue
                if _sha256(path) != entry["sha256"]:
                    problems.append(f"{path} changed")
                else:                        # touched, same bytes: remember the new stat
                    entry["stat"], restat = _stat_key(path), True
            except OSError:
                problems.append(f"{path} is missing")
        extra = sorted(str(p) for p in (self.root / PACKAGE).rglob("*")
                       if str(p) not in self.files)
        problems += [f"{p} was added" for p in extra]
        if problems:
            raise HarnessTampered("the campaign's pinned harness or data changed since it was pinned: "
                                  + "; ".join(problems) + ". The campaign stops: its scores would no longer "
                                  "be comparable. Start a new campaign to use the changed harness.")
        if restat:
            self.save()
