"""
The frozen harness: data, tokenizer, dataloader and the val_bpb metric.

The agent reads this file but never edits it. Everything that makes val_bpb comparable between
experiments lives here and is pinned for a whole campaign by a HarnessConfig (profile, data,
time budget): the corpus and its train/val split, the tokenizer, the fixed validation rows, and
evaluate_bpb itself. train.py calls load_harness() first and H.finish(model, ...) last.

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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

# -----------------------------------------------------------------------------
# Constants

HARNESS_FILE = "harness.json"          # the pin a campaign workspace holds beside train.py
RESULT_ENV = "NANOCHAT_RESULT_FILE"    # where the supervisor wants the result JSON
HARNESS_ENV = "NANOCHAT_HARNESS"       # path to a harness.json (overrides ./harness.json)
CACHE_ENV = "AUTORESEARCH_CACHE"
STARTED_ENV = "NANOCHAT_STARTED_AT"    # set by nanochat/prestart.py: when the run was asked for
DEFAULT_CACHE = Path.home() / ".cache" / "autoresearch-graph"
BOS = "<|bos|>"                        # the only special token: starts every row and document
FAIL_EXIT_CODE = 3                     # harness-detected failure (NaN, exploding loss, cheating)
DATA_FORMAT_VERSION = 1                # bump when the cached token format changes

# autoresearch's dataset: shards of karpathy/climbmix-400b-shuffle, the last one pinned for val
CLIMBMIX_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
CLIMBMIX_VAL_SHARD = 6542
CLIMBMIX_DEFAULT_SHARDS = 8
LOCAL_SUFFIXES = {".txt", ".md", ".py", ".jsonl", ".parquet"}
VAL_PERCENT = 2                        # ~2% of files (builtin/local) go to validation
MEMORISE_PASSES = 2.0                  # a run that reads its train split more often gets a note: val_bpb
                                       # then rewards memorising it (a 300 s h100 run reads ~400M tokens)

# Peak dense bf16 matmul throughput, for MFU. H100/H200 SXM: 989.5 TFLOP/s (no sparsity).
PEAK_FLOPS = {"H100": 989.5e12, "H200": 989.5e12, "A100": 312e12, "L4": 121e12, "4090": 165.2e12}


@dataclass(frozen=True)
class Profile:
    """Harness constants pinned for a campaign. Changing any of them changes what val_bpb means."""
    name: str
    seq_len: int
    vocab_size: int
    time_budget: float             # seconds of timed training
    eval_tokens: int               # validation targets scored by evaluate_bpb
    eval_batch_size: int           # rows per eval forward (a memory knob, not a metric knob)
    tokenizer_train_chars: int     # characters of training text the BPE is learnt from
    max_train_tokens: int          # cap on the tokenized training split
    device: str                    # "cuda" or "cpu"
    train_overrides: dict = field(default_factory=dict)  # template constants for this profile


PROFILES: dict[str, Profile] = {
    # autoresearch's constants on an H100: sequence 2048, 5-minute budget, 40 x 2^19 eval tokens
    "h100": Profile("h100", seq_len=2048, vocab_size=8192, time_budget=300,
                    eval_tokens=40 * 524288, eval_batch_size=64,
                    tokenizer_train_chars=200_000_000, max_train_tokens=4_000_000_000,
                    device="cuda"),
    # a 16-24 GB card (RTX 4090, L4, A10): shorter context, smaller model
    "gpu-small": Profile("gpu-small", seq_len=1024, vocab_size=8192, time_budget=300,
                         eval_tokens=8 * 524288, eval_batch_size=32,
                         tokenizer_train_chars=100_000_000, max_train_tokens=1_000_000_000,
                         device="cuda",
                         train_overrides={"DEPTH": 6, "SHORT_WINDOW": 512,
                                          "TOTAL_BATCH_TOKENS": 2**18, "DEVICE_BATCH_SIZE": 32}),
    # a tiny model that still learns something in 15 s on 2 CPU cores
    "cpu": Profile("cpu", seq_len=256, vocab_size=2048, time_budget=15,
                   eval_tokens=128 * 256, eval_batch_size=32,
                   tokenizer_train_chars=3_000_000, max_train_tokens=3_000_000,
                   device="cpu",
                   train_overrides={"DEPTH": 2, "ASPECT_RATIO": 64, "HEAD_DIM": 32,
                                    "SHORT_WINDOW": 64, "TOTAL_BATCH_TOKENS": 2**12,
                                    "DEVICE_BATCH_SIZE": 16, "MATRIX_LR": 0.02,
                                    "EMBEDDING_LR": 0.3, "UNEMBEDDING_LR": 0.004,
                                    "WARMDOWN_RATIO": 0.4}),
}


class HarnessError(RuntimeError):
    """A clear, user-facing problem with the harness configuration or data."""


class HarnessConfig(BaseModel):
    """What a campaign pins: profile, data source and time budget (and where caches live)."""
    profile: str = "cpu"
    data: str = "builtin"
    time_budget: float | None = Field(default=None, gt=0)
    cache_dir: str | None = None

    def resolved_profile(self) -> Profile:
        if self.profile not in PROFILES:
            raise HarnessError(f"unknown profile {self.profile!r}; choose one of {sorted(PROFILES)}")
        return PROFILES[self.profile]

    @property
    def budget(self) -> float:
        return self.time_budget if self.time_budget is not None else self.resolved_profile().time_budget

    @property
    def cache(self) -> Path:
        return Path(self.cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()

    @property
    def compile_cache(self) -> Path:
        """torch.compile's caches (inductor graphs, autotuning, Triton kernels), shared by every
        experiment of the campaign: only the first one pays for a cold compile."""
        return self.cache / "compile"

    @property
    def bytecode_cache(self) -> Path:
        """Python's compiled bytecode for training processes (PYTHONPYCACHEPREFIX). Where
        site-packages has no __pycache__ and gets none (read-only, or PYTHONDONTWRITEBYTECODE set, as
        on our H100 machine), every run recompiles torch's sources: 12 s of imports instead of 4.5 s."""
        return self.cache / "pycache"

    def python_env(self, env: dict, site_has_bytecode: bool | None = None) -> dict:
        """`env` for a training process. Where the installed torch has no compiled bytecode beside
        its sources, bytecode goes to (and is read from) the campaign cache, never beside the sources
        (so nothing lands in a workspace). A normal install has it, and `env` is left as it is: a
        prefix would make Python ignore that bytecode and compile everything once more."""
        if site_has_bytecode is None:
            site_has_bytecode = (Path(torch.__file__).parent / "__pycache__").is_dir()
        if site_has_bytecode:
            return env
        env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(self.bytecode_cache)
        return env

    def write(self, path: Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> "HarnessConfig":
        try:
            return cls.model_validate_json(Path(path).read_text())
        except FileNotFoundError:
            raise HarnessError(f"no harness pin at {path}") from None
        except ValueError as e:
            raise HarnessError(f"{path} is not a valid harness pin: {e}") from None


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
    val: np.ndarray             # uint16 memmap
    eval_starts: np.ndarray     # int64, the fixed validation rows
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
    meta = json.loads((out / "meta.json").read_text())
    return PreparedData(
        dir=out, meta=meta, tokenizer=Tokenizer(out / "tokenizer.json"),
        train=np.memmap(out / "train.bin", dtype=np.uint16, mode="r"),
        train_starts=np.load(out / "train_starts.npy"),
        val=np.memmap(out / "val.bin", dtype=np.uint16, mode="r"),
        eval_starts=np.load(out / "eval_starts.npy"),
        token_bytes=np.load(out / "token_bytes.npy"),
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
# The metric

@torch.no_grad()
def evaluate_bpb(model, data: PreparedData, seq_len: int, batch_size: int, device: str) -> float:
    """
    Bits per byte on the fixed validation rows: sum of per-token cross-entropy (nats) over all
    target tokens, divided by ln(2) x the UTF-8 byte count of those targets. Special-token targets
    count in neither sum. `model(x)` must return logits of shape (B, T, vocab).
    """
    token_bytes = torch.from_numpy(data.token_bytes).to(device)
    starts = data.eval_starts
    total_nats = torch.zeros((), dtype=torch.float64, device=device)
    total_bytes = torch.zeros((), dtype=torch.int64, device=device)
    # keep one shape (no recompiles): pad the last batch with repeats, masked out below
    padded = np.concatenate([starts, np.repeat(starts[:1], -len(starts) % batch_size)])
    # all rows reach the device in one copy up front, so the GPU never waits on the host between batches
    all_rows = torch.from_numpy(data.val[padded[:, None] + np.arange(seq_len + 1)].astype(np.int32)).to(device)
    for i in range(0, len(starts), batch_size):
        rows = all_rows[i:i + batch_size].long()
        x, y = rows[:, :-1].contiguous(), rows[:, 1:]   # contiguous like check_causal's: one compiled graph for both
        with _autocast(device):
            logits = model(x)
        nats = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none")
        nbytes = token_bytes[y.reshape(-1)]
        valid = nbytes > 0             # special tokens have 0 bytes: excluded from both sums
        real = min(batch_size, len(starts) - i)
        valid = valid.view(batch_size, -1)
        valid[real:] = False
        valid = valid.reshape(-1)
        total_nats += (nats * valid).sum(dtype=torch.float64)
        total_bytes += (nbytes * valid).sum()
    return float(total_nats / (math.log(2) * total_bytes.clamp(min=1)))


def _autocast(device: str):
    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def check_causal(model, data: PreparedData, seq_len: int, batch_size: int, device: str) -> float:
    """
    Predictions at position t may depend only on tokens <= t. Perturb the second half of real
    validation rows and measure how much the first half's logits move; a causal model gives ~0.
    Returns the largest change relative to the logits' scale.
    """
    chunk = np.resize(data.eval_starts, batch_size)
    rows = torch.from_numpy(data.val[chunk[:, None] + np.arange(seq_len)].astype(np.int64)).to(device)
    half = seq_len // 2
    other = rows.clone()
    g = torch.Generator().manual_seed(0)
    other[:, half:] = torch.randint(1, int(data.meta["vocab_size"]), (batch_size, seq_len - half), generator=g).to(device)
    with _autocast(device):
        a = model(rows)[:, :half].float()
        b = model(other)[:, :half].float()
    return float((a - b).abs().max() / a.abs().max().clamp(min=1e-6))


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

    def __init__(self, config: HarnessConfig, data: PreparedData):
        self.config = config
        self.profile = config.resolved_profile()
        self.data = data
        self.seq_len = self.profile.seq_len
        self.vocab_size = int(data.meta["vocab_size"])
        self.bos_id = int(data.meta["bos_id"])
        self.time_budget = float(config.budget)
        self.device = self.profile.device
        self.peak_flops = _peak_flops(self.device)
        self.started_at = _run_start_time()
        self.loaders: list[TrainLoader] = []

    def train_loader(self, batch_size: int, seed: int = 0) -> TrainLoader:
        loader = TrainLoader(self.data, self.seq_len, batch_size, self.device, seed)
        self.loaders.append(loader)   # finish() reports the tokens they served
        return loader

    def evaluate_bpb(self, model) -> float:
        return evaluate_bpb(model, self.data, self.seq_len, self.profile.eval_batch_size, self.device)

    def fail(self, status: str, message: str) -> None:
        """Report a failed run (e.g. status 'nan') to the supervisor and exit non-zero."""
        print(f"FAIL: {status}: {message}", flush=True)
        _write_result({"status": status, "error": message})
        sys.stdout.flush()
        os._exit(FAIL_EXIT_CODE)

    def finish(self, model, *, training_seconds: float, num_steps: int,
               num_params: int, depth: int, mfu_percent: float, startup_seconds: float) -> dict:
        """Score the model with the harness's own metric, print the summary block, report it."""
        t0 = time.time()
        model.eval()
        leak = check_causal(model, self.data, self.seq_len, self.profile.eval_batch_size, self.device)
        if leak > 1e-2:
            self.fail("invalid", f"the model's predictions depend on future tokens "
                                 f"(logits moved by {leak:.3g} of their scale): it must be causal")
        val_bpb = self.evaluate_bpb(model)
        eval_seconds = time.time() - t0
        if not math.isfinite(val_bpb):
            self.fail("nan", "val_bpb is not finite")
        peak_vram_mb = torch.cuda.max_memory_allocated() / 1024**2 if self.device == "cuda" else 0.0
        served = sum(l.tokens_served for l in self.loaders)
        passes = served / max(len(self.data.train), 1)
        summary = {
            "val_bpb": round(val_bpb, 6),
            "training_seconds": round(training_seconds, 1),
            "total_seconds": round(time.time() - self.started_at, 1),
            "peak_vram_mb": round(peak_vram_mb, 1),
            "mfu_percent": round(mfu_percent, 2),
            "total_tokens_M": round(served / 1e6, 1),   # counted here
            "train_passes": round(passes, 2),   # how often the run read its train split (> 1: it repeated data)
            "num_steps": int(num_steps),
            "num_params_M": round(num_params / 1e6, 1),
            "depth": int(depth),
            "startup_seconds": round(startup_seconds, 1),
            "eval_seconds": round(eval_seconds, 1),
        }
        if passes > MEMORISE_PASSES:
            print(f"[harness] note: this run read its {len(self.data.train) / 1e6:.1f}M-token train split "
                  f"{passes:.1f} times; past a few passes val_bpb rewards memorising it. "
                  "For budgets this long, give the campaign more data (--data).", flush=True)
        print("---")
        for k, v in summary.items():
            print(f"{k + ':':<20}{v:.6f}" if k == "val_bpb" else f"{k + ':':<20}{v}")
        sys.stdout.flush()
        _write_result({"status": "ok", **summary, "profile": self.profile.name, "data": self.config.data,
                       "tokens_served": served})
        return summary


def _write_result(result: dict) -> None:
    path = os.environ.get(RESULT_ENV)
    if path:
        tmp = f"{path}.tmp"
        Path(tmp).write_text(json.dumps(result))
        os.replace(tmp, path)


def _parse_cli(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--profile")
    ap.add_argument("--data")
    ap.add_argument("--time-budget", type=float)
    ap.add_argument("--cache-dir")
    return ap.parse_known_args(argv)


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
    """train.py's first call: the pinned configuration, prepared data and the metric."""
    try:
        config = resolve_config(argv)
        profile = config.resolved_profile()
        _maybe_rerun_rendered_template(profile)
        if profile.device == "cuda" and not torch.cuda.is_available():
            raise HarnessError(f"profile {profile.name!r} needs a CUDA GPU and none is visible; use --profile cpu")
        data = prepare_data(config)
    except HarnessError as e:
        print(f"harness error: {e}", file=sys.stderr)
        sys.exit(2)
    if profile.device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    use_compile_cache(config.compile_cache)
    return Harness(config, data)


def use_compile_cache(path: Path) -> None:
    """Point inductor and Triton at a persistent cache dir before train.py compiles anything
    (their defaults live under /tmp, per user). A caller's own settings win."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(path / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(path / "triton"))


# -----------------------------------------------------------------------------
# The train.py template

TEMPLATE_PATH = Path(__file__).with_name("train.py")


def render_train_py(profile_name: str) -> str:
    """The template train.py with the profile's constants: what a new campaign starts from."""
    profile = PROFILES[profile_name]
    text = TEMPLATE_PATH.read_text()
    for name, value in profile.train_overrides.items():
        pattern = re.compile(rf"^{name} = [^#\n]*?(\s*#.*)?$", re.M)
        if not pattern.search(text):
            raise HarnessError(f"template train.py has no constant {name}")
        text = pattern.sub(lambda m: f"{name} = {value!r}{m.group(1) or ''}", text, count=1)
    return text


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
