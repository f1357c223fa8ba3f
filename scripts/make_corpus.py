"""
An offline corpus big enough for the h100 profile's validation split (10,240 rows of 2,048 tokens):
the source files under SRC (several SRC joined by ':'), concatenated into ~1 MB .txt files, named so
that the harness's stable file split puts TRAIN_MB of them in train and VAL_MB in validation (train
first, unless --val-first: then train takes what is left, up to TRAIN_MB). For measurements on a
machine without internet. The text is code, so val_bpb means little, and a train split smaller
than a run's tokens is repeated: at 2^19 tokens a step, 40 MB (11 M tokens) lasts about 20 steps,
and past a few passes val_bpb measures memorisation.

    python scripts/make_corpus.py SRC[:SRC...] DST [--train-mb 40] [--val-mb 110] [--ext py,h] [--val-first]
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
ap.add_argument("--ext", default="py", help="file extensions to take, comma-separated")
ap.add_argument("--val-first", action="store_true", help="fill validation first, then train with what is left")
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
    exts = {"." + e.strip().lstrip(".") for e in args.ext.split(",")}
    for src in map(Path, args.src.split(":")):
        for p in sorted(src.rglob("*")):
            if p.suffix not in exts or "__pycache__" in p.parts or any(part.startswith(".") for part in p.relative_to(src).parts):
                continue
            try:
                yield p.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue


order = ["val", "train"] if args.val_first else ["train", "val"]
split, index, buf, size, written = order[0], 0, [], 0, {"train": 0, "val": 0}
for text in sources():
    buf.append(text)
    size += len(text)
    if size >= chunk:
        (dst / name_for(split, index)).write_text("".join(buf))
        written[split] += size
        index, buf, size = index + 1, [], 0
        if written[split] >= want[split]:
            if split == order[1]:
                break
            split = order[1]
print(f"[make_corpus] {dst}: {written['train'] / 2**20:.0f} MB train, {written['val'] / 2**20:.0f} MB val, {index} files")
