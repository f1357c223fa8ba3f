"""
How often does a judge keep noise, and how often does it catch a real gain? A Monte Carlo of whole
campaigns through graph/noise.py's `decide`, the rule the campaign's judge applies, next to the
old single-run judge (keep whatever scores below the best single run).

    python scripts/judge_simulation.py                       # normal seed noise, σ = 0.06 (the GPU template's)
    python scripts/judge_simulation.py --values runs.txt     # resample measured val_bpb values instead

A simulated campaign: a baseline of --noise-runs runs, then experiments whose true effect is a
shift of the mean by `effect` σ (0: a null experiment, the code changed nothing that matters).
Each run draws the experiment's true mean plus seed noise. The figures:

- false keeps per 100 null experiments (a campaign of 100 experiments that change nothing);
- detection: the chance that one experiment with a true gain of 2σ, 3σ or 4σ is kept, right after
  the baseline (σ known from the baseline alone) and after 30 null experiments (σ pooled further);
- the share of all runs spent confirming candidates, in the null campaign.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from graph.noise import CONFIDENCE, KEEP, MEASURE, Noise, decide  # noqa: E402

EXPERIMENTS = 100
CAMPAIGNS = 1000
EFFECTS = (2, 3, 4)
WARM = 30   # null experiments before the late detection figure


class Draw:
    """Seed noise: normal with sigma, or resampled from measured values (centred)."""

    def __init__(self, rng: np.random.Generator, sigma: float, values: np.ndarray | None = None):
        self.rng, self.sigma = rng, sigma
        self.residuals = None if values is None else values - values.mean()

    def __call__(self, mu: float) -> float:
        if self.residuals is None:
            return float(mu + self.rng.normal(0.0, self.sigma))
        return float(mu + self.rng.choice(self.residuals))


def campaign(effects, draw: Draw, noise_runs: int, confidence: float = CONFIDENCE) -> dict:
    """One campaign under the noise-aware judge. Returns its keeps (with their true effects), the
    verdict of each experiment, and the runs spent in total and on confirmations."""
    base = [draw(0.0) for _ in range(noise_runs)]
    groups, best, best_mu = [base], base, 0.0
    kept, verdicts, runs, confirming = [], [], noise_runs, 0
    for effect in effects:
        mu = best_mu - effect * draw.sigma
        values = [draw(mu)]
        groups.append(values)
        runs += 1
        while True:
            d = decide(values, best, Noise.pooled(groups), noise_runs, confidence=confidence)
            if d.status != MEASURE:
                break
            values.append(draw(mu))
            runs += 1
            confirming += 1
        verdicts.append(d.status == KEEP)
        if d.status == KEEP:
            kept.append(effect)
            best, best_mu = values, mu
    return {"kept": kept, "verdicts": verdicts, "runs": runs, "confirming": confirming}


def old_campaign(effects, draw: Draw) -> dict:
    """The single-run judge: one baseline run, keep any run below the best single run."""
    best, best_mu, kept, verdicts = draw(0.0), 0.0, [], []
    for effect in effects:
        mu = best_mu - effect * draw.sigma
        x = draw(mu)
        verdicts.append(x < best)
        if x < best:
            kept.append(effect)
            best, best_mu = x, mu
    return {"kept": kept, "verdicts": verdicts}


def figures(draw: Draw, noise_runs: int, campaigns: int, experiments: int = EXPERIMENTS,
            confidence: float = CONFIDENCE) -> dict:
    null = [0] * experiments
    new = [campaign(null, draw, noise_runs, confidence) for _ in range(campaigns)]
    old = [old_campaign(null, draw) for _ in range(campaigns)]
    out = {
        "false_keeps_per_100_new": 100 / experiments * float(np.mean([len(c["kept"]) for c in new])),
        "false_keeps_per_100_old": 100 / experiments * float(np.mean([len(c["kept"]) for c in old])),
        "confirm_share_pct": 100 * sum(c["confirming"] for c in new) / sum(c["runs"] for c in new),
        "extra_runs_per_experiment": sum(c["confirming"] for c in new) / (campaigns * experiments),
    }
    for effect in EFFECTS:
        out[f"detect_{effect}sigma_first_new"] = float(np.mean(
            [campaign([effect], draw, noise_runs, confidence)["verdicts"][0] for _ in range(campaigns)]))
        out[f"detect_{effect}sigma_late_new"] = float(np.mean(
            [campaign([0] * WARM + [effect], draw, noise_runs, confidence)["verdicts"][-1] for _ in range(campaigns // 4)]))
        out[f"detect_{effect}sigma_old"] = float(np.mean(
            [old_campaign([effect], draw)["verdicts"][0] for _ in range(campaigns)]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    ap.add_argument("--sigma", type=float, default=0.06, help="seed noise σ in bpb (default: the GPU template's, 50 s)")
    ap.add_argument("--values", help="a file of measured val_bpb values of one train.py (one per line) to resample")
    ap.add_argument("--noise-runs", type=int, default=3)
    ap.add_argument("--confidence", type=float, default=CONFIDENCE)
    ap.add_argument("--campaigns", type=int, default=CAMPAIGNS)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    values = None
    if args.values:
        values = np.array([float(x) for x in Path(args.values).read_text().split()])
        args.sigma = float(values.std(ddof=1))
    f = figures(Draw(rng, args.sigma, values), args.noise_runs, args.campaigns, confidence=args.confidence)
    source = f"{len(values)} measured runs resampled" if values is not None else "normal"
    print(f"seed noise: {source}, σ = {args.sigma:.4f}; --noise-runs {args.noise_runs}, "
          f"confidence {args.confidence}; {args.campaigns} simulated campaigns")
    print("| figure | single-run judge | noise-aware judge |\n|---|---|---|")
    print(f"| false keeps per 100 null experiments | {f['false_keeps_per_100_old']:.2f} | {f['false_keeps_per_100_new']:.2f} |")
    for e in EFFECTS:
        print(f"| {e}σ gain kept (first experiment / after {WARM} null) | {f[f'detect_{e}sigma_old']:.2f} | "
              f"{f[f'detect_{e}sigma_first_new']:.2f} / {f[f'detect_{e}sigma_late_new']:.2f} |")
    print(f"| runs spent confirming (null campaign) | 0% | {f['confirm_share_pct']:.1f}% "
          f"({f['extra_runs_per_experiment']:.2f} extra runs per experiment) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
