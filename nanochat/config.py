"""
What a campaign pins about the frozen harness, with no torch import: the profiles, HarnessConfig,
the names of the files and environment variables the harness and the supervisor share, and the
rendering of the template train.py. tools/ reads this module; the harness itself (prepare.py,
handoff.py, scorer.py) builds on it.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, Field

# -----------------------------------------------------------------------------
# Names shared by the harness (inside the sandbox) and the supervisor (outside it)

HARNESS_FILE = "harness.json"          # the pin a campaign workspace holds beside train.py
TRAIN_FILE = "train.py"                # the one file the agent edits
HARNESS_ENV = "NANOCHAT_HARNESS"       # path to a harness.json (overrides ./harness.json)
DATA_ENV = "NANOCHAT_DATA"             # a prepared-data directory; in a training sandbox it holds the train split only
HANDOFF_ENV = "NANOCHAT_HANDOFF"       # where H.finish leaves the trained model for the scorer (supervised runs)
SUMMARY_ENV = "NANOCHAT_SUMMARY_FILE"  # by-hand runs (bench): where H.finish writes its summary as JSON
CACHE_ENV = "AUTORESEARCH_CACHE"
STARTED_ENV = "NANOCHAT_STARTED_AT"    # set by nanochat/prestart.py: when the run was asked for
SEED_ENV = "NANOCHAT_SEED"             # the run's seed (H.seed), chosen by the campaign: repeats differ only in it
DEFAULT_SEED = 42                      # H.seed of a run by hand without --seed
DEFAULT_CACHE = Path.home() / ".cache" / "autoresearch-graph"
FAIL_EXIT_CODE = 3                     # harness-detected failure (NaN, exploding loss)

# the files of a prepared-data directory, and the ones a training run may see
TRAIN_DATA_FILES = ("meta.json", "tokenizer.json", "token_bytes.npy", "train.bin", "train_starts.npy")
VAL_DATA_FILES = ("val.bin", "eval_starts.npy")

# the handoff: what a training run leaves for the scorer (nanochat/handoff.py writes and reads it)
HANDOFF_GRAPH = "graph.json"
HANDOFF_WEIGHTS = "weights.pt"
HANDOFF_STATS = "stats.json"           # train.py's own figures (steps, MFU, ...): informative, never the metric
HANDOFF_FAILURE = "failure.json"       # H.fail(...): the harness's verdict on a failed run (nan, ...)


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
                                    "SHORT_WINDOW": 64, "TOTAL_BATCH_TOKENS": 2**11,
                                    "DEVICE_BATCH_SIZE": 8, "MATRIX_LR": 0.02,
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
        """torch.compile's caches for runs by hand (a campaign's sandboxed runs each get a private one)."""
        return self.cache / "compile"

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


def torch_has_bytecode() -> bool:
    """Whether the installed torch has compiled bytecode beside its sources (a normal install does;
    a read-only site-packages installed with PYTHONDONTWRITEBYTECODE does not, and then every
    process recompiles torch's sources: 12 s of imports instead of 4.5 s on our H100 machine)."""
    spec = importlib.util.find_spec("torch")
    return bool(spec and spec.origin and (Path(spec.origin).parent / "__pycache__").is_dir())


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


# -----------------------------------------------------------------------------
# The summary block a scored run ends with (printed by the harness run by hand, by the supervisor in a campaign)

SUMMARY_KEYS = ("val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent", "total_tokens_M",
                "train_passes", "num_steps", "num_params_M", "depth", "startup_seconds", "export_seconds",
                "eval_seconds")


def summary_text(summary: dict) -> str:
    lines = ["---"]
    for key in SUMMARY_KEYS:
        if key in summary:
            value = summary[key]
            lines.append(f"{key + ':':<20}{value:.6f}" if key == "val_bpb" else f"{key + ':':<20}{value}")
    return "\n".join(lines)
