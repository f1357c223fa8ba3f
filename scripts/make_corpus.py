"""
An offline corpus big enough for the h100 profile's validation split (10,240 rows of 2,048 tokens):
the .py sources under SRC, concatenated into ~1 MB .txt files, named so that the harness's stable
file split puts TRAIN_MB of them in train and VAL_MB in validation. For speed measurements on a
machine without internet (the text is code, so val_bpb means little).

    python scripts/make_corpus.py SRC DST [--train-mb 40] [--val-mb 110]
"""

import argparse
from pathlib import Path

from nanochat.prepare import VAL_PERCENT, _stable_bucket

ap = argparse.ArgumentParser()
ap.add_argument("src")
ap.add_argument("dst")
ap.add_argument("--train-mb", type=float, default=40)
ap.add_argument("--val-mb", type=float, default=110)
ap.add_argument("--chunk-mb", type=float, default=1.0)
args = ap.parse_args()

dst = Path(args.dst)
dst.mkdir(parents=True, exist_ok=True)
want = {"train": args.train_mb * 2**20, "val": args.val_mb * 2**20}
chunk = int(args.chunk_mb * 2**20)


def name_for(split: str, i: int) -> str:
    """A file name whose stable bucket lands in the wanted split."""
    salt = 0
    while True:
        name = f"{split}_{i:04d}_{salt}.txt"
        if (_stable_bucket(name) < VAL_PERCENT) == (split == "val"):
            return name
        salt += 1


def sources():
    for p in sorted(Path(args.src).rglob("*.py")):
        if "__pycache__" in p.parts or any(part.startswith(".") for part in p.relative_to(args.src).parts):
            continue
        try:
            yield p.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue


split, index, buf, size, written = "train", 0, [], 0, {"train": 0, "val": 0}
for text in sources():
    buf.append(text)
    size += len(text)
    if size >= chunk:
        (dst / name_for(split, index)).write_text("".join(buf))
        written[split] += size
        index, buf, size = index + 1, [], 0
        if written[split] >= want[split]:
            if split == "val":
                break
            split = "val"
print(f"[make_corpus] {dst}: {written['train'] / 2**20:.0f} MB train, {written['val'] / 2**20:.0f} MB val, {index} files")
