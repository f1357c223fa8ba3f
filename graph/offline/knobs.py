"""The constants of train.py the offline researcher knows: one table, one entry per knob.

Each knob says how its value may move (its Rule), how early to try it, which group the director's
summary lists it under, why a change might help (one clause, for the director's directives) and
which words in a paper point at it. Any other `*_LR` constant moves like a learning rate.

Every name here is a top-level constant of the template nanochat/train.py
(tests/test_offline_knobs.py checks it, with the profiles' train_overrides in nanochat/config.py).
"""

from __future__ import annotations

from dataclasses import dataclass

# -----------------------------------------------------------------------------
# constants

# Among equally explored constants, cheap and usually fruitful knobs come first (learning rates
# and schedule), then regularization and batch, then the architecture; seeded order within a tier.
# The tier is the expected impact in a short fixed-time run, 0 first (a prior, not a rule).
DEFAULT_PRIORITY = 1


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


@dataclass(frozen=True)
class Knob:
    """One constant of train.py the researcher knows."""

    group: str  # the director's summary lists the knobs by group, in this table's order
    rule: Rule | None = None  # None: it only moves with another knob (DEVICE_BATCH_SIZE)
    priority: int = DEFAULT_PRIORITY
    rationale: str = ""  # why a change might help, one clause
    keywords: tuple[str, ...] = ()  # words in a paper's title/abstract that point at it


KNOBS: dict[str, Knob] = {
    # the model
    "DEPTH": Knob("model", Rule("add", 1, lo=1), 3,
                  "under a fixed time budget the balance between depth and step speed is worth checking",
                  ("depth", "deeper", "layers")),
    "ASPECT_RATIO": Knob("model", Rule("add", 16, lo=16), 3,
                         "width trades capacity against speed under a fixed time budget",
                         ("width", "wider", "scaling law", "compute-optimal")),
    "HEAD_DIM": Knob("model", Rule("mul", 2, lo=16, hi=256), 3,
                     "fewer, larger heads or more, smaller ones change both speed and quality",
                     ("head dimension", "attention heads", "multi-head")),
    "WINDOW_PATTERN": Knob("model", Rule("choice", choices=("L", "SL", "SSL", "SSSL")), 3,
                           "the mix of short and long attention layers trades context for speed",
                           ("sliding window", "local attention", "long context", "hybrid attention")),
    "SHORT_WINDOW": Knob("model", Rule("mul", 2, lo=1e-6, fraction_hi=1.0), 3,
                         "the short attention window trades context for speed",
                         ("sliding window", "local attention", "window")),
    # the batch: it sets how many optimizer steps fit in the budget
    "TOTAL_BATCH_TOKENS": Knob("batch", Rule("mul", 2, lo=1), 0,
                               "the batch size trades the number of steps against their quality",
                               ("batch size", "critical batch", "gradient noise")),
    "DEVICE_BATCH_SIZE": Knob("batch"),  # halved with TOTAL_BATCH_TOKENS when it must (search.couple)
    # the optimizer: Muon (MATRIX_LR) moves almost all the weights
    "MATRIX_LR": Knob("optimizer", Rule("mul", 1.5), 0,
                      "the matrix learning rate sets how fast most of the weights move in a short run",
                      ("learning rate", "muon", "optimizer", "orthogonal")),
    "EMBEDDING_LR": Knob("optimizer", Rule("mul", 1.5), 1,
                         "the embeddings see few updates per token, so their learning rate matters",
                         ("embedding",)),
    "UNEMBEDDING_LR": Knob("optimizer", Rule("mul", 1.5), 2,
                           "the output layer's learning rate shapes the early loss curve",
                           ("unembedding", "output layer", "logit")),
    "SCALAR_LR": Knob("optimizer", Rule("mul", 1.5), 2,
                      "the scalar parameters are cheap to tune and often mis-set",
                      ("scalar", "gain", "gate")),
    "WEIGHT_DECAY": Knob("optimizer", Rule("mul", 2.0, seed=0.1), 2,
                         "regularization interacts with the learning rates in a short run",
                         ("weight decay", "regulariz")),
    # the schedule
    "WARMUP_RATIO": Knob("schedule", Rule("add", 0.05, lo=0.0, hi=0.5), 2,
                         "the first steps decide whether the fast learning rates are stable",
                         ("warmup", "warm-up", "stabil")),
    "WARMDOWN_RATIO": Knob("schedule", Rule("add", 0.2, lo=0.0, hi=1.0), 1,
                           "how long the learning rate cools down is often worth more than its peak",
                           ("schedule", "cooldown", "cool-down", "decay phase", "annealing", "warmdown")),
    "FINAL_LR_FRAC": Knob("schedule", Rule("add", 0.05, lo=0.0, hi=1.0), 2,
                          "where the schedule ends changes the last, most valuable steps",
                          ("schedule", "annealing", "final learning rate")),
}
LR_RULE = Rule("mul", 1.5)  # any other *_LR constant

# The summary's groups: (title, names) in the table's order.
GROUPS: list[tuple[str, tuple[str, ...]]] = [
    (group, tuple(name for name, k in KNOBS.items() if k.group == group))
    for group in dict.fromkeys(k.group for k in KNOBS.values())
]


# -----------------------------------------------------------------------------
# lookups (a name outside the table gets the defaults)


def rule_for(name: str) -> Rule | None:
    knob = KNOBS.get(name)
    return (knob.rule if knob else None) or (LR_RULE if name.endswith("_LR") else None)


def priority(name: str) -> int:
    return KNOBS[name].priority if name in KNOBS else DEFAULT_PRIORITY


def rationale(name: str, default: str) -> str:
    return KNOBS[name].rationale if name in KNOBS and KNOBS[name].rationale else default


def keywords(name: str) -> tuple[str, ...]:
    return KNOBS[name].keywords if name in KNOBS else ()
