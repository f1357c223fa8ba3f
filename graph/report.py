"""
Campaign report: read a results.tsv, compute the campaign's figures, write report.md and progress.png.

    python -m graph.report RUN_DIR_OR_TSV [--out DIR]     # writes report.md and progress.png
    python -m graph.report RUN_DIR_OR_TSV --json          # prints the figures, writes nothing
    (both take [--llm-price-in-per-mtok USD] [--llm-price-out-per-mtok USD] for the LLM cost)

Every format graph.results.FORMATS reads is understood, told apart by its header line: ours (v5,
one row per training run, several runs per experiment, LLM tokens per experiment, the agent and
the GPU of each run; its columns are defined once, in docs/INTERFACES.md), its older versions
ours-v4 to ours-v1, autoresearch's and autoautoresearch's. The prices default to $AUTORESEARCH_LLM_PRICE_IN_PER_MTOK
and $AUTORESEARCH_LLM_PRICE_OUT_PER_MTOK; a campaign passes its own settings.

Definitions (report.md quotes this list as it stands here):

An experiment is one iteration's code; its verdict row is its last row (keep, discard, crash or
no-run), the rows before it are `measure` runs of the same code with other seeds. An experiment's
mean is its verdict row's `mean`. In the older formats every row is a verdict row and an
experiment of one run whose mean is its val_bpb.

- experiments: verdict rows, the baseline included (autoresearch counts this way).
- runs: rows that trained (all but no-run), measure rows included.
- keeps: keep verdicts, the baseline included (it is a keep).
- keep rate %: keeps / experiments * 100.
- baseline val_bpb: the baseline's mean (if the first verdict row has no mean, the first that does).
- best val_bpb: the lowest mean among keep verdicts. A measure row never counts, however low its
  val_bpb, and neither does a crashed run (val_bpb 0.000000).
- total improvement: baseline - best in bpb; as % of the baseline (positive means better, lower
  bpb); in σ (the bpb / sigma).
- improvement per experiment %: total improvement % / the number of experiments after the
  baseline, i.e. the average gain each post-baseline experiment bought, kept or not.
- longest stall: the longest run of consecutive non-keep verdicts (discard, crash, no-run). The
  baseline is a keep, so it never belongs to a stall; a stall still running at the end counts.
- crashes: crash verdicts.
- sigma (σ): the last recorded `sigma`, the campaign's pooled seed noise (the standard deviation
  of one run's val_bpb across seeds); noise runs: the baseline's runs, on which σ is first measured.
- confirmed keeps: keep verdicts after the baseline resting on 2 or more runs. Rejected
  candidates: discard verdicts after the baseline resting on 2 or more runs (a first run beat the
  best, its confirmation did not). Single-run keeps: keep verdicts after the baseline resting on
  one run, kept without a noise check (a campaign with --noise-runs 1, or an older format).
- confirm share %: the time of confirmation runs (the 2nd and later runs of an experiment after
  the baseline) / the time of all rows * 100; noise share %: the same for the baseline's 2nd and
  later runs. A row's time is its total_seconds, else its training_seconds.
- ours only: directive keeps = keeps with a non-empty directive whose agent_choice is followed
  or adapted; agent keeps = the other keeps, the baseline excluded (nobody led it), so
  directive_keeps + agent_keeps = keeps - 1.
- ours only: wall = from the earliest run's start to the last timestamp; a row is stamped when it
  is recorded, after its run, so its run started total_seconds before its timestamp (with one
  agent the earliest start is the first row's). Experiments per hour = experiments / wall hours.
- ours only: device duty % (JSON key gpu_duty_pct; called GPU or CPU duty when the run dir's
  workspace/harness.json names the profile) = sum(training_seconds) over all rows / (wall * the
  number of GPUs) * 100, i.e. the GPUs' mean duty; the number of GPUs is 1 unless rows name more.
- ours v5 only: agents, GPUs = the distinct names in the agent and gpu columns. Per agent and per
  GPU (rows that name none grouped under -): experiments, keeps, crashes and runs as above, over
  that agent's or GPU's rows; experiments per hour = its experiments / the hours from its first
  run's start to its last timestamp; a GPU's duty = its rows' training_seconds / wall * 100.
- ours v4 and later: agent tokens, director tokens = the sums of the verdict rows' agent_* and
  director_* token columns, input + output (measure rows carry none; an experiment's tokens are
  the agent's calls of its iteration, retries' successful calls included, and the director's
  calls that preceded it); LLM tokens = agent + director tokens; input / output tokens: the same
  split the other way. Tokens per experiment = LLM tokens / the number of experiments after the
  baseline (the baseline calls no LLM). A call whose provider reports no usage counts 0.
- ours v4 and later, with a price set: LLM cost $ = (input tokens * input price + output tokens *
  output price) / 1,000,000, prices in dollars per million tokens (a price not set counts 0);
  cost per experiment = LLM cost / the experiments after the baseline.
"""

import argparse
import json
import logging
import os
import sys

from graph import breakdown, usage
from graph.plot import plot_progress
from graph.results import (CRASH, DISCARD, NO_RUN, RESULTS_FILE, ResultsError, has_tokens, multi_run, read_results,
                           resolve_tsv)

# -----------------------------------------------------------------------------
# Constants

REPORT_FILE = "report.md"
PLOT_FILE = "progress.png"

EXIT_USAGE = 2  # missing file, unknown header: the caller's mistake, not ours
DEVICE_WORDS = {"cuda": "GPU", "cpu": "CPU"}   # a profile's device, as the report names it
UNKNOWN_DEVICE = "device"                       # a bare results.tsv: no pin says what trained


# -----------------------------------------------------------------------------
# Figures

def _longest_stall(verdicts):
    longest = current = 0
    for r in verdicts:
        current = 0 if r.kept else current + 1
        longest = max(longest, current)
    return longest


def _seconds(r):
    # a writer that timed only the training still tells us most of a run's cost
    return r.total_seconds if r.total_seconds is not None else (r.training_seconds or 0.0)


def _time_share_pct(rows, part):
    total = sum(_seconds(r) for r in rows)
    return sum(_seconds(r) for r in rows if part(r)) / total * 100 if total > 0 else None


def compute_figures(rows, prices=(None, None)):
    """The campaign's figures as a plain dict (JSON-ready). See the module docstring for definitions.
    `prices`: dollars per million (input, output) tokens, None where not set."""
    verdicts = [r for r in rows if r.is_verdict]
    n = len(verdicts)
    keeps = [r for r in verdicts if r.kept]
    base = next((r for r in verdicts if r.mean is not None), None)
    best = min((r.mean for r in keeps if r.mean is not None), default=None)
    sigma = next((r.sigma for r in reversed(rows) if r.sigma is not None), None)

    total_bpb = total_pct = total_sigma = per_exp = None
    if base is not None and best is not None:
        total_bpb = base.mean - best
        total_pct = total_bpb / base.mean * 100
        total_sigma = total_bpb / sigma if sigma else None
        after = n - 1 - verdicts.index(base)  # experiments that came after the baseline
        per_exp = total_pct / after if after > 0 else None

    fmt = rows[0].fmt if rows else None
    ours = (fmt or "").startswith("ours")
    # the baseline is nobody's idea and nobody's candidate: neither led nor confirmed
    later = [r for r in verdicts if not r.is_baseline]
    later_keeps = [r for r in later if r.kept]
    return {
        "format": fmt,
        "experiments": n,
        "runs": sum(r.status != NO_RUN for r in rows),
        "keeps": len(keeps),
        "keep_rate_pct": len(keeps) / n * 100 if n else None,
        "total_improvement_pct": total_pct,
        "total_improvement_bpb": total_bpb,
        "total_improvement_sigma": total_sigma,
        "improvement_per_experiment_pct": per_exp,
        "longest_stall": _longest_stall(verdicts),
        "best_val_bpb": best,
        "baseline_val_bpb": base.mean if base else None,
        "crashes": sum(r.status == CRASH for r in verdicts),
        "sigma": sigma,
        "noise_runs": base.runs if base else None,
        "confirmed_keeps": sum(r.runs >= 2 for r in later_keeps),
        "rejected_candidates": sum(r.status == DISCARD and r.runs >= 2 for r in later),
        "single_run_keeps": sum(r.runs == 1 for r in later_keeps),
        "confirm_share_pct": _time_share_pct(rows, lambda r: not r.is_baseline and r.runs >= 2),
        "noise_share_pct": _time_share_pct(rows, lambda r: r.is_baseline and r.runs >= 2),
        "directive_keeps": sum(r.directive_led for r in later_keeps) if ours else None,
        "agent_keeps": sum(not r.directive_led for r in later_keeps) if ours else None,
        # wall time, and per agent and per GPU (a parallel campaign)
        **(breakdown.figures(rows) if ours else dict.fromkeys(breakdown.KEYS)),
        **(usage.figures(rows, len(later), prices) if has_tokens(fmt) else
           dict.fromkeys(("agent_tokens", "director_tokens", "llm_tokens", "input_tokens", "output_tokens",
                          "tokens_per_experiment", "llm_cost", "cost_per_experiment"))),
    }


# -----------------------------------------------------------------------------
# report.md

FIGURE_LABELS = [  # (key, label, format); figures that are None are left out of the table
    ("experiments", "experiments (baseline included)", "{}"),
    ("runs", "training runs (every seed)", "{}"),
    ("keeps", "keeps (baseline included)", "{}"),
    ("keep_rate_pct", "keep rate", "{:.1f}%"),
    ("baseline_val_bpb", "baseline val_bpb", "{:.6f}"),
    ("best_val_bpb", "best val_bpb", "{:.6f}"),
    ("total_improvement_pct", "total improvement", "{:.3f}%"),
    ("total_improvement_bpb", "total improvement (bpb)", "{:.6f}"),
    ("total_improvement_sigma", "total improvement (σ)", "{:.2f}σ"),
    ("improvement_per_experiment_pct", "improvement per experiment", "{:.4f}%"),
    ("longest_stall", "longest stall (consecutive non-keeps)", "{}"),
    ("crashes", "crashes", "{}"),
    ("sigma", "seed noise σ (one run)", "{:.6f}"),
    ("noise_runs", "baseline runs (noise measured on)", "{}"),
    ("confirmed_keeps", "confirmed keeps (2+ runs)", "{}"),
    ("rejected_candidates", "rejected candidates (failed confirmation)", "{}"),
    ("single_run_keeps", "single-run keeps (no noise check)", "{}"),
    ("confirm_share_pct", "confirmation runs' share of run time", "{:.1f}%"),
    ("noise_share_pct", "noise runs' share of run time", "{:.1f}%"),
    ("directive_keeps", "directive-led keeps", "{}"),
    ("agent_keeps", "agent-led keeps", "{}"),
    ("experiments_per_hour", "experiments per hour (wall time)", "{:.2f}"),
    ("gpu_duty_pct", "{device} duty (training / wall time)", "{:.1f}%"),
    ("agents", "agents", "{}"),
    ("gpus", "{device}s", "{}"),
    ("llm_tokens", "LLM tokens (agent + director)", "{:,}"),
    ("agent_tokens", "agent tokens", "{:,}"),
    ("director_tokens", "director tokens", "{:,}"),
    ("input_tokens", "input tokens (all calls)", "{:,}"),
    ("output_tokens", "output tokens (all calls)", "{:,}"),
    ("tokens_per_experiment", "LLM tokens per experiment", "{:,.0f}"),
    ("llm_cost", "LLM cost", "${:.4f}"),
    ("cost_per_experiment", "LLM cost per experiment", "${:.4f}"),
]


def device_word(tsv):
    """What trained the runs of this results.tsv, from its run dir's harness pin: "GPU" or "CPU";
    UNKNOWN_DEVICE when there is no readable pin (another tool's results, a copied tsv)."""
    from nanochat.config import HARNESS_FILE, PROFILES   # no torch: config.py imports none
    pin = os.path.join(os.path.dirname(os.path.abspath(tsv)), "workspace", HARNESS_FILE)
    try:
        with open(pin, encoding="utf-8") as f:
            profile = PROFILES.get(json.load(f).get("profile"))
    except (OSError, ValueError, AttributeError):
        return UNKNOWN_DEVICE
    return DEVICE_WORDS.get(profile.device, UNKNOWN_DEVICE) if profile else UNKNOWN_DEVICE


def figure_labels(device=UNKNOWN_DEVICE):
    """FIGURE_LABELS with the device named: (key, label, format)."""
    return [(key, label.format(device=device), form) for key, label, form in FIGURE_LABELS]

# the definitions live once, in this module's docstring; report.md quotes them
DEFINITIONS = __doc__[__doc__.index("Definitions (report.md"):].split("\n", 1)[1].strip() + "\n"


def _md(text):
    # a description is free text; keep it from breaking the table it sits in
    return text.replace("|", "\\|").replace("\n", " ") or "—"


def _fmt_bpb(value):
    return f"{value:.6f}" if value is not None else "—"


def _fmt_mean(r):
    # an experiment's mean, and the seed noise of one run as the campaign knew it at the verdict
    return _fmt_bpb(r.mean) + (f" ± {r.sigma:.4f}" if r.mean is not None and r.sigma else "")


def _table(header, lines):
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
           ["| " + " | ".join(cells) + " |" for cells in lines]


def campaign_name(tsv):
    return os.path.basename(os.path.dirname(os.path.abspath(tsv))) or "campaign"


def render_markdown(name, rows, figures, tsv_name=RESULTS_FILE, device=UNKNOWN_DEVICE):
    fmt = figures["format"]
    ours, runs = (fmt or "").startswith("ours"), multi_run(fmt)
    verdicts = [r for r in rows if r.is_verdict]
    out = [f"# Campaign report: {name}", ""]
    out.append(f"Source: `{tsv_name}` ({fmt or 'no rows yet, so no'} format, {len(rows)} rows).")
    out += ["", f"![progress]({PLOT_FILE})", "", f"[{PLOT_FILE}]({PLOT_FILE})", ""]

    out += ["## Figures", "", "| figure | value |", "|---|---|"]
    for key, label, form in figure_labels(device):
        if figures.get(key) is not None:
            out.append(f"| {label} | {form.format(figures[key])} |")
    for title, header, lines in breakdown.tables(figures, device):
        out += ["", f"## {title}", ""] + _table(header, lines)

    out += ["", "## Kept experiments", ""]
    kept = [r for r in verdicts if r.kept]
    if kept:
        header = ["#", "commit"] + (["mean ± σ", "runs"] if runs else ["val_bpb"]) + \
                 ["vs previous best", "description"] + (["led by"] if ours else [])
        lines, best = [], None
        for r in kept:
            delta = ""
            if r.mean is not None and best is not None:
                delta = f"{(r.mean - best) / best * 100:+.3f}%"
            if r.mean is not None:
                best = r.mean if best is None else min(best, r.mean)
            cells = [str(r.number), f"`{r.commit or '-'}`"]
            cells += [_fmt_mean(r), str(r.runs)] if runs else [_fmt_bpb(r.mean)]
            cells += [delta, _md(r.description)]
            if ours:
                cells.append("baseline" if r.is_baseline else
                             f"directive ({r.agent_choice})" if r.directive_led else "agent")
            lines.append(cells)
        out += _table(header, lines)
    else:
        out.append("None.")

    out += ["", "## Noise", ""]
    if figures["sigma"] is not None:
        out.append(f"Seed noise σ = {figures['sigma']:.6f}: the campaign's pooled estimate of the standard "
                   f"deviation of one run's val_bpb, first measured on the baseline's {figures['noise_runs']} runs.")
        if figures["total_improvement_sigma"] is not None:
            out.append(f"The total improvement, {figures['total_improvement_bpb']:.6f} bpb, "
                       f"is {figures['total_improvement_sigma']:.2f}σ.")
    else:
        out.append("No seed noise measured: a gain smaller than the run-to-run noise cannot be told from luck.")
    out += ["", f"- confirmed keeps: {figures['confirmed_keeps']}",
            f"- rejected candidates: {figures['rejected_candidates']}"]
    if figures["single_run_keeps"]:
        out.append(f"- **single-run keeps: {figures['single_run_keeps']}**, kept on one run without a noise check")
    for key, what in (("confirm_share_pct", "confirmation runs"), ("noise_share_pct", "noise runs")):
        if figures[key] is not None:
            out.append(f"- {what}' share of run time: {figures[key]:.1f}%")
    rejected = [r for r in verdicts if r.status == DISCARD and not r.is_baseline and r.runs >= 2]
    if rejected:
        out += ["", "Rejected candidates (a first run beat the best, the confirmation did not):", ""]
        out += _table(["#", "commit", "mean ± σ", "runs", "description", "reason"],
                      [[str(r.number), f"`{r.commit or '-'}`", _fmt_mean(r), str(r.runs),
                        _md(r.description), _md(r.reason)] for r in rejected])

    if figures.get("llm_tokens") is not None:
        out += ["", "## LLM usage", ""]
        cost = f", ${figures['llm_cost']:.4f}" if figures["llm_cost"] is not None else " (no price set, so no cost)"
        out.append(f"{figures['llm_tokens']:,} tokens{cost}: agent {figures['agent_tokens']:,}, director "
                   f"{figures['director_tokens']:,}; input {figures['input_tokens']:,}, output {figures['output_tokens']:,}.")
        spent = sorted((r for r in verdicts if not r.is_baseline), key=lambda r: -usage.totals([r]).total)[:5]
        if spent and usage.totals(spent).total:
            out += ["", "The experiments that used the most tokens:", ""]
            out += _table(["#", "agent tokens", "director tokens", "status", "description"],
                          [[str(r.number), f"{usage.totals([r]).agent:,}", f"{usage.totals([r]).director:,}",
                            r.status, _md(r.description)] for r in spent])

    out += ["", "## Crashes", ""]
    crashed = [r for r in verdicts if r.status == CRASH]
    if crashed:
        out += _table(["#", "commit", "description"] + (["reason"] if runs else []),
                      [[str(r.number), f"`{r.commit or '-'}`", _md(r.description)] +
                       ([_md(r.reason)] if runs else []) for r in crashed])
    else:
        out.append("None.")

    out += ["", "## Definitions", "", DEFINITIONS]
    return "\n".join(out)


# -----------------------------------------------------------------------------
# The entry points

def write_report(run_dir_or_tsv, out_dir=None, prices=(None, None)):
    """Read the results, write report.md and progress.png into out_dir (default: next to the tsv),
    return the figures. Cheap enough to call after every iteration. `prices`: dollars per million
    (input, output) tokens, for the cost figures."""
    tsv = resolve_tsv(run_dir_or_tsv)
    rows = read_results(tsv)
    figures = compute_figures(rows, prices)
    out_dir = out_dir or os.path.dirname(os.path.abspath(tsv))
    os.makedirs(out_dir, exist_ok=True)
    name = campaign_name(tsv)
    # write-then-rename so a reader (or a crash mid-write) never sees half a report
    md_path = os.path.join(out_dir, REPORT_FILE)
    with open(md_path + ".tmp", "w", encoding="utf-8") as f:
        f.write(render_markdown(name, rows, figures, os.path.basename(tsv), device_word(tsv)))
    os.replace(md_path + ".tmp", md_path)
    png_path = os.path.join(out_dir, PLOT_FILE)
    plot_progress(name, rows, figures, png_path + ".tmp.png")
    os.replace(png_path + ".tmp.png", png_path)
    return figures


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m graph.report", description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("path", help="a run dir holding results.tsv, or a results.tsv file")
    parser.add_argument("--out", help="where to write report.md and progress.png (default: next to the tsv)")
    parser.add_argument("--json", action="store_true",
                        help="print the figures as one JSON object and write nothing (no report.md, no progress.png)")
    for flag, what, env in zip(("--llm-price-in-per-mtok", "--llm-price-out-per-mtok"), ("input", "output"), usage.PRICE_ENV):
        parser.add_argument(flag, type=float, default=usage.price_from_env(env), metavar="USD",
                            help=f"dollars per million {what} tokens, for the cost (default: ${env})")
    args = parser.parse_args(argv)
    if args.json and args.out:
        parser.error("--json writes nothing, so --out has nothing to place")
    logging.basicConfig(format="report: warning: %(message)s", level=logging.WARNING)
    try:
        prices = (args.llm_price_in_per_mtok, args.llm_price_out_per_mtok)
        figures = compute_figures(read_results(resolve_tsv(args.path)), prices) if args.json else \
            write_report(args.path, args.out, prices)
    except ResultsError as e:
        print(f"report: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # e.g. an --out we may not write to
        print(f"report: error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(figures))
    else:
        out_dir = args.out or os.path.dirname(os.path.abspath(resolve_tsv(args.path)))
        for key, label, fmt in figure_labels(device_word(resolve_tsv(args.path))):
            if figures.get(key) is not None:
                print(f"{label:>40}: {fmt.format(figures[key])}")
        print(f"wrote {os.path.join(out_dir, REPORT_FILE)} and {os.path.join(out_dir, PLOT_FILE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
