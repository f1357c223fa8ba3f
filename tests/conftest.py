"""Shared fixtures: a private cache dir and a small real corpus (a slice of the stdlib)."""

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# One torch thread per training or scoring run: the suite's workers run several at once on few cores,
# and OpenMP threads that outnumber the cores spin against each other (runs 2x slower, evals 3x).
# No test depends on how many steps a run makes.
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cache")
    os.environ["AUTORESEARCH_CACHE"] = str(d)   # child processes (train.py) inherit it
    return d


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """~1.5 MB of real text: every 20th stdlib module plus a Unicode file, as a local data dir."""
    from nanochat.prepare import _builtin_files
    root, files = _builtin_files()
    out = tmp_path_factory.mktemp("corpus")
    for i, p in enumerate(files[::20][:90]):
        shutil.copy(p, out / f"{i:03d}_{p.name}")
    (out / "unicode.md").write_text("Grüße, naïve café — 日本語のテキスト, emoji 🚀🔥, Ελληνικά.\n" * 200)
    return out


@pytest.fixture(scope="session")
def cpu_data(cache_dir, tiny_corpus):
    from nanochat.prepare import HarnessConfig, prepare_data
    config = HarnessConfig(profile="cpu", data=str(tiny_corpus), cache_dir=str(cache_dir))
    return config, prepare_data(config, log=lambda s: None)


def pytest_collection_modifyitems(items):
    """The slow tests first, the longest of them first (`slow(seconds)`), so that with xdist handing
    tests out one at a time no worker is left alone at the end with a long campaign."""
    def expected(item) -> float:
        slow = item.get_closest_marker("slow")
        return 0.0 if slow is None else float(slow.args[0]) if slow.args else 10.0
    items.sort(key=expected, reverse=True)
