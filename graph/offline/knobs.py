"""The constants of train.py the offline researcher knows how to move, and what it says of them."""

from __future__ import annotations

from dataclasses import dataclass

# -----------------------------------------------------------------------------
# constants


@dataclass(frozen=True)
class Rule:
    """How a constant may move: multiply/divide by `step`, add/subtract `step`, or pick a choice."""

    kind: str  # "mul" | "add" | "choice"
    step: float = 0.0
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    seed: float | None = None  # a "mul" constant at 0 moves to this value instead
    fraction_hi: float | None = None  # a float value in (0, hi] is a fraction: stays <= hi


RULES: dict[str, Rule] = {
    "MATRIX_LR": Rule("mul", 1.5),
    "EMBEDDING_LR": Rule("mul", 1.5),
    "UNEMBEDDING_LR": Rule("mul", 1.5),
    "SCALAR_LR": Rule("mul", 1.5),
    "WEIGHT_DECAY": Rule("mul", 2.0, seed=0.1),
    "WARMUP_RATIO": Rule("add", 0.05, lo=0.0, hi=0.5),
    "WARMDOWN_RATIO": Rule("add", 0.2, lo=0.0, hi=1.0),
    "FINAL_LR_FRAC": Rule("add", 0.05, lo=0.0, hi=1.0),
    "DEPTH": Rule("add", 1, lo=1),
    "ASPECT_RATIO": Rule("add", 16, lo=16),
    "HEAD_DIM": Rule("mul", 2, lo=16, hi=256),
    "SHORT_WINDOW": Rule("mul", 2, lo=1e-6, fraction_hi=1.0),
    "TOTAL_BATCH_TOKENS": Rule("mul", 2, lo=1),
    "WINDOW_PATTERN": Rule("choice", choices=("L", "SL", "SSL", "SSSL")),
}
LR_RULE = Rule("mul", 1.5)  # any other *_LR constant

# Among equally explored constants, cheap and usually fruitful knobs come first (learning rates
# and schedule), then regularization and batch, then the architecture; seeded order within a tier.
PRIORITY = {   # expected impact in a short fixed-time run, most first (a prior, not a rule)
    "MATRIX_LR": 0,                       # Muon moves almost all the weights
    "TOTAL_BATCH_TOKENS": 0,              # sets how many optimizer steps fit in the budget
    "EMBEDDING_LR": 1, "WARMDOWN_RATIO": 1,
    "UNEMBEDDING_LR": 2, "SCALAR_LR": 2, "WARMUP_RATIO": 2, "FINAL_LR_FRAC": 2, "WEIGHT_DECAY": 2,
    "DEPTH": 3, "ASPECT_RATIO": 3, "HEAD_DIM": 3, "WINDOW_PATTERN": 3, "SHORT_WINDOW": 3,
}

# Why a change might help, for the director's directives (one clause each).
RATIONALE = {
    "MATRIX_LR": "the matrix learning rate sets how fast most of the weights move in a short run",
    "EMBEDDING_LR": "the embeddings see few updates per token, so their learning rate matters",
    "UNEMBEDDING_LR": "the output layer's learning rate shapes the early loss curve",
    "SCALAR_LR": "the scalar parameters are cheap to tune and often mis-set",
    "WEIGHT_DECAY": "regularization interacts with the learning rates in a short run",
    "WARMUP_RATIO": "the first steps decide whether the fast learning rates are stable",
    "WARMDOWN_RATIO": "how long the learning rate cools down is often worth more than its peak",
    "FINAL_LR_FRAC": "where the schedule ends changes the last, most valuable steps",
    "DEPTH": "under a fixed time budget the balance between depth and step speed is worth checking",
    "ASPECT_RATIO": "width trades capacity against speed under a fixed time budget",
    "HEAD_DIM": "fewer, larger heads or more, smaller ones change both speed and quality",
    "SHORT_WINDOW": "the short attention window trades context for speed",
    "TOTAL_BATCH_TOKENS": "the batch size trades the number of steps against their quality",
    "WINDOW_PATTERN": "the mix of short and long attention layers trades context for speed",
}
# Words in a paper's title/abstract that point at a constant (the director takes only the idea).
PAPER_KEYWORDS = {
    "MATRIX_LR": ("learning rate", "muon", "optimizer", "orthogonal"),
    "EMBEDDING_LR": ("embedding",),
    "UNEMBEDDING_LR": ("unembedding", "output layer", "logit"),
    "SCALAR_LR": ("scalar", "gain", "gate"),
    "WEIGHT_DECAY": ("weight decay", "regulariz"),
    "WARMUP_RATIO": ("warmup", "warm-up", "stabil"),
    "WARMDOWN_RATIO": ("schedule", "cooldown", "cool-down", "decay phase", "annealing", "warmdown"),
    "FINAL_LR_FRAC": ("schedule", "annealing", "final learning rate"),
    "DEPTH": ("depth", "deeper", "layers"),
    "ASPECT_RATIO": ("width", "wider", "scaling law", "compute-optimal"),
    "HEAD_DIM": ("head dimension", "attention heads", "multi-head"),
    "SHORT_WINDOW": ("sliding window", "local attention", "window"),
    "TOTAL_BATCH_TOKENS": ("batch size", "critical batch", "gradient noise"),
    "WINDOW_PATTERN": ("sliding window", "local attention", "long context", "hybrid attention"),
}
GROUPS = [
    ("model", ("DEPTH", "ASPECT_RATIO", "HEAD_DIM", "WINDOW_PATTERN", "SHORT_WINDOW")),
    ("batch", ("TOTAL_BATCH_TOKENS", "DEVICE_BATCH_SIZE")),
    ("optimizer", ("MATRIX_LR", "EMBEDDING_LR", "UNEMBEDDING_LR", "SCALAR_LR", "WEIGHT_DECAY")),
    ("schedule", ("WARMUP_RATIO", "WARMDOWN_RATIO", "FINAL_LR_FRAC")),
]



def rule_for(name: str) -> Rule | None:
    return RULES.get(name) or (LR_RULE if name.endswith("_LR") else None)
