"""
The frozen harness: data, tokenizer, dataloader and the val_bpb metric.

The agent reads this file but never edits it. Everything that makes val_bpb comparable between
experiments lives here and is pinned for a whole campaign by a HarnessConfig (nanochat/config.py:
profile, data, time budget): the corpus and its train/val split, the tokenizer, the fixed validation
rows, and evaluate_bpb itself. train.py calls load_harness() first and H.finish(model, ...) last.

In a campaign, train.py runs in a sandbox that holds the train split only. H.finish hands the
model over as a graph of tensor operators (nanochat/handoff.py), and a separate scorer process
(nanochat/scorer.py), which train.py never touches, runs evaluate_bpb and check_causal on it.

    python -m nanochat.prepare --profile cpu --data builtin     # prepare (cached, idempotent)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import queue
import re
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from nanochat.config import (CACHE_ENV, DATA_ENV, DEFAULT_CACHE, DEFAULT_SEED, FAIL_EXIT_CODE, HANDOFF_ENV, HANDOFF_FAILURE,
                             HANDOFF_STATS, HARNESS_ENV, HARNESS_FILE, PROFILES, SEED_ENV, STARTED_ENV, SUMMARY_ENV,
                             TEMPLATE_PATH, HarnessConfig, HarnessError, Profile, render_train_py)

# -----------------------------------------------------------------------------
# Constants

BOS = "<|bos|>"                        # the only special token: starts every row and document
DATA_FORMAT_VERSION = 1                # bump when the cached token format changes

# autoresearch's dataset: shards of karpathy/climbmix-400b-shuffle, the last one pinned for val
CLIMBMIX_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
CLIMBMIX_VAL_SHARD = 6542
CLIMBMIX_DEFAULT_SHARDS = 8
LOCAL_SUFFIXES = {".txt", ".md", ".py", ".jsonl", ".parquet"}
VAL_PERCENT = 2                        # ~2% of files (builtin/local) go to validation
MEMORISE_PASSES = 2.0                  # a run that reads its train split more often gets a note: val_bpb
                                       # then rewards memorising it (a 300 s h100 run reads ~400M tokens)
CAUSAL_TOLERANCE = 1e-2                # logits may move this much (of their scale) when only later tokens change

# Peak dense bf16 matmul throughput, for MFU. H100/H200 SXM: 989.5 TFLOP/s (no sparsity).
PEAK_FLOPS = {"H100": 989.5e12, "H200": 989.5e12, "A100": 312e12, "L4": 121e12, "4090": 165.2e12}

# -----------------------------------------------------------------------------
# Corpus: a data spec becomes (train documents, val documents), each an iterator of strings

def _stable_bucket(key: str) -> int:
    """0..99 from a stable hash, so the train/val split never depends on Python's hash seed."""
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:4], "big") % 100


def _builtin_files() -> tuple[Path, list[Path]]:
    # The running interpreter's standard library sources: offline, ~30 MB, always present.
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py")
                   if "site-packages" not in p.parts and "__pycache__" not in p.parts)
    return root, files


def _local_files(path: Path) -> tuple[Path, list[Path]]:
    if not path.exists():
        raise HarnessError(f"data path {path} does not exist")
    if path.is_file():
        return path.parent, [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in LOCAL_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise HarnessError(f"no {'/'.join(sorted(LOCAL_SUFFIXES))} files under {path}")
    return path, files


def _read_docs(path: Path) -> Iterator[str]:
    """Documents in one file: the file itself, a jsonl line's "text", or a parquet row's "text"."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        pf = pq.ParquetFile(path)
        if "text" not in pf.schema_arrow.names:
            raise HarnessError(f"{path} has no 'text' column")
        for batch in pf.iter_batches(columns=["text"], batch_size=4096):
            yield from (t for t in batch.column(0).to_pylist() if t)
    elif path.suffix == ".jsonl":
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if line:
                    text = json.loads(line).get("text")
                    if text:
                        yield text
    else:
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            yield text


@dataclass
class Corpus:
    name: str                       # short, filesystem-safe
    fingerprint: str                # changes when the underlying files change
    train_files: list[Path]
    val_files: list[Path]

    def docs(self, split: str) -> Iterator[str]:
        for path in self.train_files if split == "train" else self.val_files:
            yield from _read_docs(path)


def _split_files(root: Path, files: list[Path]) -> tuple[list[Path], list[Path]]:
    train, val = [], []
    for p in files:
        rel = p.relative_to(root).as_posix() if p.is_relative_to(root) else p.name
        (val if _stable_bucket(rel) < VAL_PERCENT else train).append(p)
    if not val:                    # a tiny corpus still needs a validation file
        val, train = train[-1:], train[:-1]
    if not train:
        raise HarnessError("the corpus needs at least two files (one for training, one for validation)")
    return train, val


def _fingerprint(files: list[Path], extra: str = "") -> str:
    h = hashlib.sha1(extra.encode())
    for p in files:
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:12]


def resolve_corpus(data: str, cache: Path, log: Callable[[str], None] = print) -> Corpus:
    if data == "builtin":
        root, files = _builtin_files()
        train, val = _split_files(root, files)
        ver = f"py{sys.version_info.major}.{sys.version_info.minor}"
        return Corpus(f"builtin-{ver}", _fingerprint(files, ver), train, val)
    if data == "climbmix" or data.startswith("climbmix:"):
        n = int(data.split(":", 1)[1]) if ":" in data else CLIMBMIX_DEFAULT_SHARDS
        from nanochat.download import download_shards
        shard_dir = cache / "climbmix"
        url = os.environ.get("AUTORESEARCH_CLIMBMIX_URL", CLIMBMIX_URL)   # a mirror, if you have one
        try:
            train = download_shards(list(range(n)), shard_dir, url, log=log)
            val = download_shards([CLIMBMIX_VAL_SHARD], shard_dir, url, log=log)
        except RuntimeError as e:
            raise HarnessError(str(e)) from None
        return Corpus(f"climbmix{n}", _fingerprint(train + val), train, val)
    path = Path(data).expanduser().resolve()
    root, files = _local_files(path)
    if len(files) == 1 and files[0].suffix in {".jsonl", ".parquet"}:
        raise HarnessError(f"{path}: give a directory of several files so train and val can be split by file")
    train, val = _split_files(root, files)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.name)[:40] or "local"
    return Corpus(f"local-{slug}", _fingerprint(files, str(path)), train, val)


# -----------------------------------------------------------------------------
# Tokenizer: byte-level BPE learnt on the training split

def _byte_to_unicode() -> dict[int, str]:
    """Byte-level BPE's reversible byte -> printable character table (GPT-2 convention)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class Tokenizer:
    """A thin wrapper over a HuggingFace `tokenizers` byte-level BPE with one special token."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer as HFTokenizer
        self._tok = HFTokenizer.from_file(str(path))
        self.bos_id = self._tok.token_to_id(BOS)
        self.vocab_size = self._tok.get_vocab_size()

    @staticmethod
    def train(texts: Iterator[str], vocab_size: int, path: Path) -> None:
        from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts, trainer=trainer)
        tok.save(str(path))

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def token_bytes(self) -> np.ndarray:
        """UTF-8 byte length of every token id (0 for the special token): the bpb denominator."""
        inverse = {c: b for b, c in _byte_to_unicode().items()}
        out = np.zeros(self.vocab_size, dtype=np.int32)
        for i in range(self.vocab_size):
            piece = self._tok.id_to_token(i)
            if i != self.bos_id and piece is not None:
                out[i] = sum(1 for ch in piece if ch in inverse)
        return out


def _capped_chars(texts: Iterator[str], max_chars: int) -> Iterator[str]:
    total = 0
    for t in texts:
        if total >= max_chars:
            return
        t = t[: max_chars - total]
        total += len(t)
        yield t


# -----------------------------------------------------------------------------
# Token cache: each split is one uint16 stream of BOS-prefixed segments, plus segment starts

def _tokenize_split(tok: Tokenizer, docs: Iterator[str], seq_len: int, max_tokens: int,
                    shuffle_seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """
    Documents become segments of at most seq_len tokens (a long document is cut into several,
    each BOS-prefixed), so a row that starts at a segment start never wastes a long document.
    Segments are shuffled (train) so rows mix documents from all over the corpus.
    """
    segments: list[np.ndarray] = []
    n_tokens = 0
    batch: list[str] = []

    def flush():
        nonlocal n_tokens
        for ids in tok.encode_batch(batch):
            arr = np.asarray(ids, dtype=np.uint16)
            for i in range(0, len(arr), seq_len):
                seg = np.empty(min(seq_len, len(arr) - i) + 1, dtype=np.uint16)
                seg[0] = tok.bos_id
                seg[1:] = arr[i:i + seq_len]
                segments.append(seg)
                n_tokens += len(seg)
        batch.clear()

    for doc in docs:
        batch.append(doc)
        if len(batch) >= 256:
            flush()
            if n_tokens >= max_tokens:
                break
    if batch:
        flush()
    if not segments:
        raise HarnessError("the corpus produced no tokens")
    order = np.arange(len(segments))
    if shuffle_seed is not None:
        np.random.default_rng(shuffle_seed).shuffle(order)
    lengths = np.array([len(segments[i]) for i in order], dtype=np.int64)
    starts = np.zeros(len(order), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    stream = np.concatenate([segments[i] for i in order])
    cut = np.searchsorted(starts, max_tokens, side="right")     # whole segments within the cap
    if cut < len(starts):
        stream, starts = stream[: starts[cut]], starts[:cut]
    return stream, starts


def _eval_rows(starts: np.ndarray, n_tokens: int, seq_len: int, n_rows: int) -> np.ndarray:
    """Non-overlapping validation rows, each beginning at a segment start (so with BOS)."""
    rows, pos = [], 0
    usable = starts[starts + seq_len + 1 <= n_tokens]
    while len(rows) < n_rows:
        i = np.searchsorted(usable, pos)
        if i >= len(usable):
            break
        rows.append(usable[i])
        pos = usable[i] + seq_len + 1
    return np.asarray(rows, dtype=np.int64)


@dataclass
class PreparedData:
    """Paths and arrays of a prepared (profile, data) pair."""
    dir: Path
    meta: dict
    tokenizer: Tokenizer
    train: np.ndarray           # uint16 memmap
    train_starts: np.ndarray    # int64, segment starts in train
    val: np.ndarray | None      # uint16 memmap (None where only the train split is visible)
    eval_starts: np.ndarray | None  # int64, the fixed validation rows
    token_bytes: np.ndarray     # int32 [vocab]


def _data_dir(config: HarnessConfig, corpus: Corpus) -> Path:
    p = config.resolved_profile()
    key = f"v{DATA_FORMAT_VERSION}|{corpus.fingerprint}|{p.vocab_size}|{p.seq_len}|{p.eval_tokens}|" \
          f"{p.tokenizer_train_chars}|{p.max_train_tokens}"
    return config.cache / "data" / f"{corpus.name}-{p.name}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def prepare_data(config: HarnessConfig, log: Callable[[str], None] = print) -> PreparedData:
    """Build (or find in the cache) the tokenizer, token streams and eval rows for a campaign."""
    profile = config.resolved_profile()
    corpus = resolve_corpus(config.data, config.cache, log=log)
    out = _data_dir(config, corpus)
    if not (out / "meta.json").exists():
        t0 = time.time()
        log(f"[prepare] building {corpus.name} for profile {profile.name} in {out} "
            f"({len(corpus.train_files)} train / {len(corpus.val_files)} val files)")
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        Tokenizer.train(_capped_chars(corpus.docs("train"), profile.tokenizer_train_chars),
                        profile.vocab_size, tmp / "tokenizer.json")
        tok = Tokenizer(tmp / "tokenizer.json")
        log(f"[prepare] tokenizer: {tok.vocab_size} tokens learnt in {time.time() - t0:.1f}s")
        train, train_starts = _tokenize_split(tok, corpus.docs("train"), profile.seq_len,
                                              profile.max_train_tokens, shuffle_seed=1337)
        val, val_starts = _tokenize_split(tok, corpus.docs("val"), profile.seq_len,
                                          max_tokens=profile.eval_tokens * 4, shuffle_seed=None)
        n_rows = profile.eval_tokens // profile.seq_len
        eval_starts = _eval_rows(val_starts, len(val), profile.seq_len, n_rows)
        if len(eval_starts) == 0:
            raise HarnessError(f"the validation split is too small for one row of {profile.seq_len} tokens")
        if len(eval_starts) < n_rows:
            log(f"[prepare] warning: validation split holds {len(eval_starts)} rows, not {n_rows}; "
                f"val_bpb is scored on {len(eval_starts) * profile.seq_len} tokens")
        train.tofile(tmp / "train.bin")
        val.tofile(tmp / "val.bin")
        np.save(tmp / "train_starts.npy", train_starts)
        np.save(tmp / "eval_starts.npy", eval_starts)
        np.save(tmp / "token_bytes.npy", tok.token_bytes())
        meta = {"corpus": corpus.name, "data": config.data, "profile": profile.name,
                "vocab_size": tok.vocab_size, "seq_len": profile.seq_len,
                "train_tokens": int(len(train)), "val_tokens": int(len(val)),
                "eval_rows": int(len(eval_starts)), "bos_id": tok.bos_id,
                "train_files": len(corpus.train_files), "val_files": len(corpus.val_files),
                "build_seconds": round(time.time() - t0, 1)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            tmp.rename(out)                 # atomic: a concurrent builder's result is as good
        except OSError:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
        log(f"[prepare] {meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens, "
            f"{meta['eval_rows']} eval rows, built in {time.time() - t0:.1f}s")
    return load_data(out)


def load_data(directory: Path, train_only: bool = False) -> PreparedData:
    """A prepared-data directory's arrays. `train_only`: the train split alone, as a training
    sandbox sees it (val.bin and eval_starts.npy are not even there)."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise HarnessError(f"no prepared data in {directory}: {e}") from None
    return PreparedData(
        dir=directory, meta=meta, tokenizer=Tokenizer(directory / "tokenizer.json"),
        train=np.memmap(directory / "train.bin", dtype=np.uint16, mode="r"),
        train_starts=np.load(directory / "train_starts.npy"),
        val=None if train_only else np.memmap(directory / "val.bin", dtype=np.uint16, mode="r"),
        eval_starts=None if train_only else np.load(directory / "eval_starts.npy"),
        token_bytes=np.load(directory / "token_bytes.npy"),
    )


# -----------------------------------------------------------------------------
# Dataloader: rows start at a random segment start (BOS) and run on through the packed stream

def pack_rows(stream: np.ndarray, starts: np.ndarray, seq_len: int, batch_size: int,
              rng: np.random.Generator) -> np.ndarray:
    """One batch of rows of seq_len + 1 tokens: vectorised, no per-document Python loop."""
    usable = starts[: np.searchsorted(starts, len(stream) - seq_len - 1, side="right")]
    pick = usable[rng.integers(0, len(usable), size=batch_size)]
    return stream[pick[:, None] + np.arange(seq_len + 1)].astype(np.int64)


class TrainLoader:
    """Infinite (x, y) batches; deterministic for a seed; packed on a background thread."""

    def __init__(self, data: PreparedData, seq_len: int, batch_size: int, device: str, seed: int,
                 prefetch: int = 4):
        self.data, self.seq_len, self.batch_size, self.device = data, seq_len, batch_size, device
        self.rng = np.random.default_rng(seed)
        self.pin = device == "cuda"
        self.q: queue.Queue = queue.Queue(maxsize=prefetch)
        self.tokens_served = 0       # input tokens handed to train.py: the harness's own count
        self.thread = threading.Thread(target=self._work, daemon=True)
        self.thread.start()

    def _work(self):
        while True:
            rows = torch.from_numpy(pack_rows(self.data.train, self.data.train_starts,
                                              self.seq_len, self.batch_size, self.rng))
            self.q.put(rows.pin_memory() if self.pin else rows)

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.q.get().to(self.device, non_blocking=True)
        self.tokens_served += rows.shape[0] * (rows.shape[1] - 1)
        return rows[:, :-1], rows[:, 1:]



# -----------------------------------------------------------------------------
# The metric. `forward` maps a (B, T) batch of token ids to (B, T, vocab) logits: the scorer's
# handed-over model (nanochat/handoff.py), or an nn.Module when run by hand.

@torch.no_grad()
def evaluate_bpb(forward, data: PreparedData, seq_len: int, batch_size: int, device: str) -> float:
    """
    Bits per byte on the fixed validation rows: sum of per-token cross-entropy (nats) over all
    target tokens, divided by ln(2) x the UTF-8 byte count of those targets. Special-token targets
    count in neither sum. The loss is computed here, never by the model's code.
    """
    token_bytes = torch.from_numpy(data.token_bytes).to(device)
    vocab = len(data.token_bytes)
    starts = data.eval_starts
    total_nats = torch.zeros((), dtype=torch.float64, device=device)
    total_bytes = torch.zeros((), dtype=torch.int64, device=device)
    # keep one shape (no recompiles): pad the last batch with repeats, masked out below
    padded = np.concatenate([starts, np.repeat(starts[:1], -len(starts) % batch_size)])
    # all rows reach the device in one copy up front, so the GPU never waits on the host between batches
    all_rows = torch.from_numpy(data.val[padded[:, None] + np.arange(seq_len + 1)].astype(np.int32)).to(device)
    for i in range(0, len(starts), batch_size):
        x = all_rows[i:i + batch_size, :-1].long()
        with _autocast(device):
            logits = forward(x)
        _check_logits(logits, (batch_size, seq_len, vocab))
        y = all_rows[i:i + batch_size, 1:].long()
        nats = F.cross_entropy(logits.float().reshape(-1, vocab), y.reshape(-1), reduction="none")
        nbytes = token_bytes[y.reshape(-1)]
        valid = nbytes > 0             # special tokens have 0 bytes: excluded from both sums
        real = min(batch_size, len(starts) - i)
        valid = valid.view(batch_size, -1)
        valid[real:] = False
        valid = valid.reshape(-1)
        total_nats += (nats * valid).sum(dtype=torch.float64)
        total_bytes += (nbytes * valid).sum()
    return float(total_nats / (math.log(2) * total_bytes.clamp(min=1)))


def _check_logits(logits, shape) -> None:
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != shape or not logits.is_floating_point():
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise HarnessError(f"forward(tokens) must return floating-point logits of shape {shape}, not {got}")


def _autocast(device: str):
    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def check_causal(forward, data: PreparedData, seq_len: int, batch_size: int, device: str,
                 rng: np.random.Generator | None = None) -> float:
    """
    Predictions at position t may depend only on tokens <= t. Take a batch of real validation rows
    and build a second batch in which every row is one of them (moved to another place in the
    batch) with its tokens from a random position on replaced by another real row's: both batches
    look like ordinary validation text. The logits before each row's cut must not move. Returns the
    largest change relative to the logits' scale (~0 for a causal model whose rows don't look at
    each other). The cuts come from fresh entropy, so a model cannot know where they will be.
    """
    rng = rng or np.random.default_rng()
    starts = data.eval_starts
    pick = rng.choice(len(starts), size=2 * batch_size, replace=len(starts) < 2 * batch_size)
    rows = data.val[starts[pick][:, None] + np.arange(seq_len)].astype(np.int64)
    original, donors = rows[:batch_size], rows[batch_size:]
    cuts = rng.integers(1, seq_len, size=batch_size)           # first changed position of each row
    moved = np.roll(original, -1, axis=0)                      # row i holds original row i + 1
    changed = np.arange(seq_len)[None, :] >= cuts[:, None]
    probe = np.where(changed, donors, moved)
    with _autocast(device):
        a = forward(torch.from_numpy(original).to(device)).float()
        b = forward(torch.from_numpy(probe).to(device)).float()
    shape = (batch_size, seq_len, len(data.token_bytes))
    _check_logits(a, shape)
    _check_logits(b, shape)
    worst, scale = 0.0, 1e-6
    for i, cut in enumerate(cuts.tolist()):
        before = a[(i + 1) % batch_size, :cut]
        worst = max(worst, float((before - b[i, :cut]).abs().max()))
        scale = max(scale, float(before.abs().max()))
    return worst / scale


# -----------------------------------------------------------------------------
# The harness object train.py talks to

def _process_start_time() -> float:
    """Wall-clock time this process was created (so total_seconds counts the imports too)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime"))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration, IndexError):
        return time.time()


def _run_start_time() -> float:
    """When this run was asked for: the process start, or for a pre-started process
    (nanochat/prestart.py) the moment it was told to go, so total_seconds is what the run added."""
    try:
        return float(os.environ[STARTED_ENV])
    except (KeyError, ValueError):
        return _process_start_time()


def _peak_flops(device: str) -> float:
    if device != "cuda":
        return 0.0
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_FLOPS.items() if k in name), 0.0)


class Harness:
    """The campaign's frozen context, as train.py sees it."""

    def __init__(self, config: HarnessConfig, data: PreparedData, seed: int = DEFAULT_SEED):
        self.config = config
        # The campaign's seed for this run: init and data order should follow it, so that repeated
        # runs of one train.py differ only by it and their spread measures the seed noise
        self.seed = int(seed)
        self.profile = config.resolved_profile()
        self.data = data
        self.seq_len = self.profile.seq_len
        self.vocab_size = int(data.meta["vocab_size"])
        self.bos_id = int(data.meta["bos_id"])
        self.time_budget = float(config.budget)
        self.device = self.profile.device
        self.peak_flops = _peak_flops(self.device)
        self.started_at = _run_start_time()
        self.handoff = os.environ.get(HANDOFF_ENV)   # set in a campaign: a scorer measures the model
        self.loaders: list[TrainLoader] = []

    def train_loader(self, batch_size: int, seed: int | None = None) -> TrainLoader:
        """Batches in an order drawn from `seed` (default: H.seed)."""
        loader = TrainLoader(self.data, self.seq_len, batch_size, self.device, self.seed if seed is None else seed)
        self.loaders.append(loader)   # finish() reports the tokens they served
        return loader

    def fail(self, status: str, message: str) -> None:
        """Report a failed run (e.g. status 'nan') and exit non-zero."""
        print(f"FAIL: {status}: {message}", flush=True)
        if self.handoff:
            Path(self.handoff, HANDOFF_FAILURE).write_text(json.dumps({"status": status, "error": message}))
        sys.stdout.flush()
        os._exit(FAIL_EXIT_CODE)

    def finish(self, model, *, training_seconds: float, num_steps: int,
               num_params: int, depth: int, mfu_percent: float, startup_seconds: float) -> dict:
        """Hand the trained model to the scorer. In a campaign that is all: a separate process
        scores it. Run by hand, the model is scored here and the summary block printed."""
        from nanochat.handoff import HandoffError, export_model
        t0 = time.time()
        model.eval()
        served = sum(l.tokens_served for l in self.loaders)
        passes = served / max(len(self.data.train), 1)
        stats = {
            "training_seconds": round(training_seconds, 1),
            "peak_vram_mb": round(torch.cuda.max_memory_allocated() / 1024**2, 1) if self.device == "cuda" else 0.0,
            "mfu_percent": round(mfu_percent, 2),
            "total_tokens_M": round(served / 1e6, 1),   # counted by the harness's loader
            "tokens_served": served,
            "train_passes": round(passes, 2),   # how often the run read its train split (> 1: it repeated data)
            "num_steps": int(num_steps),
            "num_params_M": round(num_params / 1e6, 1),
            "depth": int(depth),
            "startup_seconds": round(startup_seconds, 1),
        }
        if passes > MEMORISE_PASSES:
            print(f"[harness] note: this run read its {len(self.data.train) / 1e6:.1f}M-token train split "
                  f"{passes:.1f} times; past a few passes val_bpb rewards memorising it. "
                  "For budgets this long, give the campaign more data (--data).", flush=True)
        handoff = self.handoff or tempfile.mkdtemp(prefix="nanochat-handoff-")
        example = torch.zeros((self.profile.eval_batch_size, self.seq_len), dtype=torch.long, device=self.device)
        try:
            export_model(model, example, Path(handoff))
        except HandoffError as e:
            self.fail("invalid", str(e))
        stats["export_seconds"] = round(time.time() - t0, 1)
        if self.handoff:
            Path(handoff, HANDOFF_STATS).write_text(json.dumps(stats))
            print(f"[harness] model handed to the scorer (export took {stats['export_seconds']}s)", flush=True)
            return stats
        from nanochat.config import summary_text
        from nanochat.scorer import score
        result = score(Path(handoff), self.data, self.config)
        if result["status"] != "ok":
            self.fail(result["status"], result["error"])
        summary = {"val_bpb": result["val_bpb"], **stats, "eval_seconds": result["eval_seconds"],
                   "total_seconds": round(time.time() - self.started_at, 1)}
        print(summary_text(summary), flush=True)
        if os.environ.get(SUMMARY_ENV):
            Path(os.environ[SUMMARY_ENV]).write_text(json.dumps({"status": "ok", **summary}))
        return summary


def _parse_cli(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--profile")
    ap.add_argument("--data")
    ap.add_argument("--time-budget", type=float)
    ap.add_argument("--cache-dir")
    ap.add_argument("--seed", type=int)
    return ap.parse_known_args(argv)


def resolve_seed(argv: list[str] | None = None) -> int:
    """The run's seed: the campaign's ($NANOCHAT_SEED), else --seed, else DEFAULT_SEED."""
    if os.environ.get(SEED_ENV):
        try:
            return int(os.environ[SEED_ENV])
        except ValueError:
            raise HarnessError(f"${SEED_ENV} must be an integer, got {os.environ[SEED_ENV]!r}") from None
    args, _ = _parse_cli(sys.argv[1:] if argv is None else argv)
    return DEFAULT_SEED if args.seed is None else args.seed


def resolve_config(argv: list[str] | None = None) -> HarnessConfig:
    """Command line, then $NANOCHAT_HARNESS, then ./harness.json (a campaign workspace)."""
    args, _ = _parse_cli(sys.argv[1:] if argv is None else argv)
    if args.profile or args.data:
        return HarnessConfig(profile=args.profile or "cpu", data=args.data or "builtin",
                             time_budget=args.time_budget, cache_dir=args.cache_dir)
    pin = os.environ.get(HARNESS_ENV) or (HARNESS_FILE if Path(HARNESS_FILE).exists() else None)
    if pin is None:
        raise HarnessError("no harness configuration: run train.py inside a campaign workspace "
                           "(with harness.json) or pass --profile PROFILE [--data DATA]")
    config = HarnessConfig.read(Path(pin))
    if args.time_budget:
        config.time_budget = args.time_budget
    return config


def load_harness(argv: list[str] | None = None) -> Harness:
    """train.py's first call: the pinned configuration, the prepared data and the loader.
    In a campaign's sandbox the data is the train split only ($NANOCHAT_DATA)."""
    try:
        config = resolve_config(argv)
        seed = resolve_seed(argv)
        profile = config.resolved_profile()
        _maybe_rerun_rendered_template(profile)
        if profile.device == "cuda" and not torch.cuda.is_available():
            raise HarnessError(f"profile {profile.name!r} needs a CUDA GPU and none is visible; use --profile cpu")
        data = load_data(Path(os.environ[DATA_ENV]), train_only=True) if os.environ.get(DATA_ENV) \
            else prepare_data(config)
    except HarnessError as e:
        print(f"harness error: {e}", file=sys.stderr)
        sys.exit(2)
    if profile.device == "cpu":
        torch.set_num_threads(cpu_threads())
    use_compile_cache(config.compile_cache)
    return Harness(config, data, seed)


def cpu_threads() -> int:
    """Every core, unless OMP_NUM_THREADS caps it: runs that share the CPU (a test suite's workers, a
    shared machine) lose more to oversubscribed, spinning OpenMP threads than they gain."""
    capped = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(capped) if capped.isdigit() and int(capped) > 0 else os.cpu_count() or 1


def use_compile_cache(path: Path) -> None:
    """Point inductor and Triton at a persistent cache dir for runs by hand (their defaults live
    under /tmp, per user). A caller's own settings win: a campaign's sandbox sets a private one."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(path / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(path / "triton"))


def _maybe_rerun_rendered_template(profile: Profile) -> None:
    """
    `python -m nanochat.train --profile cpu` runs the packaged template by hand. The template's
    constants are the h100 ones, so for another profile we re-exec the rendered copy instead.
    """
    main = sys.modules.get("__main__")
    if not profile.train_overrides or getattr(main, "__file__", None) is None:
        return
    if Path(main.__file__).resolve() != TEMPLATE_PATH.resolve():
        return
    out = Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser() / "handrun" / profile.name / "train.py"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_train_py(profile.name))
    env = dict(os.environ)   # keep `import nanochat` working from the copy's directory
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TEMPLATE_PATH.parent.parent), env.get("PYTHONPATH")]))
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, str(out), *sys.argv[1:]], env)


# -----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nanochat.prepare",
                                 description="Prepare (download, tokenize, cache) a campaign's frozen data.")
    ap.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    ap.add_argument("--data", default="builtin",
                    help="builtin (Python stdlib sources, offline), climbmix[:N] (N train shards), or a path")
    ap.add_argument("--cache-dir", default=None, help=f"cache root (default ${CACHE_ENV} or {DEFAULT_CACHE})")
    args = ap.parse_args(argv)
    config = HarnessConfig(profile=args.profile, data=args.data, cache_dir=args.cache_dir)
    t0 = time.time()
    try:
        data = prepare_data(config)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    m = data.meta
    print(f"[prepare] ready in {time.time() - t0:.1f}s: {m['corpus']} / profile {m['profile']} at {data.dir}")
    print(f"[prepare] vocab {m['vocab_size']}, {m['train_tokens']:,} train tokens, "
          f"{m['eval_rows']} eval rows x {m['seq_len']} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
