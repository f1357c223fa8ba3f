"""
Campaign report: read a results.tsv, compute the campaign's figures, write report.md and progress.png.

    python -m graph.report RUN_DIR_OR_TSV [--out DIR] [--json]

Every format graph.results.FORMATS reads is understood, told apart by its header line: ours (v3,
one row per training run, several runs per experiment; its columns are defined once, in
docs/INTERFACES.md), its older versions ours-v2 and ours-v1, autoresearch's and autoautoresearch's.

Definitions (the same words appear in report.md):

- experiments: every row, the baseline included (autoresearch counts this way).
- keeps: rows with status keep, the baseline included (it is a `keep` row).
- keep rate %: keeps / experiments * 100.
- baseline val_bpb: the first row's val_bpb (if the first row has no metric, the first row that does).
- best val_bpb: the lowest val_bpb among kept rows; crashed rows (val_bpb 0.000000) never count.
- total improvement %: (baseline - best) / baseline * 100; positive means better (lower bpb).
- improvement per experiment %: total improvement / number of experiments after the baseline row,
  i.e. the average gain each post-baseline experiment bought, kept or not.
- longest stall: the longest run of consecutive non-keep rows (discard, crash, no-run). The
  baseline is a keep, so it never belongs to a stall; a stall still running at the end counts.
- crashes: rows with status crash.
- ours only: directive keeps = kept rows with a non-empty directive whose agent_choice is
  followed or adapted; agent keeps = the other kept rows, the baseline excluded (nobody led it),
  so directive_keeps + agent_keeps = keeps - 1.
- ours only: GPU duty % = sum(training_seconds) / wall * 100 with wall = last timestamp - first
  timestamp + first row's total_seconds: a row is stamped when it is recorded, after its run,
  so the baseline's run lies just before the first timestamp.
"""

import argparse
import json
import logging
import os
import sys

from graph.results import CRASH, RESULTS_FILE, ResultsError, read_results, resolve_tsv

# -----------------------------------------------------------------------------
# Constants

REPORT_FILE = "report.md"
PLOT_FILE = "progress.png"

EXIT_USAGE = 2  # missing file, unknown header: the caller's mistake, not ours

# plot look
FIGSIZE = (11, 5.5)
DPI = 110
MAX_LABELS = 8       # annotate only the biggest wins, or the plot turns into text
LABEL_CHARS = 32     # truncate annotated descriptions to this many characters
OFFSCALE_SPAN = 3.0  # y axis reaches baseline + this many (baseline - best) spans; above is off scale


# -----------------------------------------------------------------------------
# Figures

def _baseline(rows):
    return next((r for r in rows if r.val_bpb is not None), None)


def _longest_stall(rows):
    longest = current = 0
    for r in rows:
        current = 0 if r.kept else current + 1
        longest = max(longest, current)
    return longest


def _gpu_duty_pct(rows):
    stamped = [r for r in rows if r.timestamp is not None]
    if not stamped:
        return None
    try:
        wall = (stamped[-1].timestamp - stamped[0].timestamp).total_seconds()
    except TypeError:  # one timestamp with a zone, one without: no honest answer
        return None
    wall += stamped[0].total_seconds or 0.0     # the baseline ran before its row was stamped
    training = sum(r.training_seconds or 0.0 for r in rows)
    return training / wall * 100 if wall > 0 else None


def compute_figures(rows):
    """The campaign's figures as a plain dict (JSON-ready). See the module docstring for definitions."""
    n = len(rows)
    keeps = sum(r.kept for r in rows)
    base = _baseline(rows)
    kept_metrics = [r.val_bpb for r in rows if r.kept and r.val_bpb is not None]
    best = min(kept_metrics) if kept_metrics else None

    total = per_exp = None
    if base is not None and best is not None:
        total = (base.val_bpb - best) / base.val_bpb * 100
        after = n - 1 - base.index  # experiments that came after the baseline row
        per_exp = total / after if after > 0 else None

    fmt = rows[0].fmt if rows else None
    ours = (fmt or "").startswith("ours")
    # the baseline (first row) is nobody's idea, so neither directive- nor agent-led
    led = [r for r in rows[1:] if r.kept]
    return {
        "format": fmt,
        "experiments": n,
        "keeps": keeps,
        "keep_rate_pct": keeps / n * 100 if n else None,
        "total_improvement_pct": total,
        "improvement_per_experiment_pct": per_exp,
        "longest_stall": _longest_stall(rows),
        "best_val_bpb": best,
        "baseline_val_bpb": base.val_bpb if base else None,
        "crashes": sum(r.status == CRASH for r in rows),
        "directive_keeps": sum(r.directive_led for r in led) if ours else None,
        "agent_keeps": sum(not r.directive_led for r in led) if ours else None,
        "gpu_duty_pct": _gpu_duty_pct(rows) if ours else None,
    }


# -----------------------------------------------------------------------------
# report.md

FIGURE_LABELS = [  # (key, label, format); figures that are None are left out of the table
    ("experiments", "experiments (baseline included)", "{}"),
    ("keeps", "keeps (baseline included)", "{}"),
    ("keep_rate_pct", "keep rate", "{:.1f}%"),
    ("baseline_val_bpb", "baseline val_bpb", "{:.6f}"),
    ("best_val_bpb", "best val_bpb", "{:.6f}"),
    ("total_improvement_pct", "total improvement", "{:.3f}%"),
    ("improvement_per_experiment_pct", "improvement per experiment", "{:.4f}%"),
    ("longest_stall", "longest stall (consecutive non-keeps)", "{}"),
    ("crashes", "crashes", "{}"),
    ("directive_keeps", "directive-led keeps", "{}"),
    ("agent_keeps", "agent-led keeps", "{}"),
    ("gpu_duty_pct", "GPU duty (training / wall time)", "{:.1f}%"),
]

DEFINITIONS = """\
- *experiments* counts every row, the baseline included; *keeps* counts `keep` rows, the baseline included.
- *total improvement* = (baseline val_bpb − best kept val_bpb) / baseline val_bpb; positive is better.
- *improvement per experiment* = total improvement / number of experiments after the baseline.
- *longest stall* = longest run of consecutive non-keep rows (discard, crash, no-run).
- crashed runs (val_bpb 0.000000) never count as best.
- *directive-led keep*: a keep whose row has a directive the agent followed or adapted; the baseline is neither kind.
- *GPU duty* = Σ training_seconds / (last timestamp − first timestamp + the baseline's total_seconds).
"""


def _md(text):
    # a description is free text; keep it from breaking the table it sits in
    return text.replace("|", "\\|").replace("\n", " ") or "—"


def _fmt_bpb(value):
    return f"{value:.6f}" if value is not None else "—"


def campaign_name(tsv):
    return os.path.basename(os.path.dirname(os.path.abspath(tsv))) or "campaign"


def render_markdown(name, rows, figures, tsv_name=RESULTS_FILE):
    out = [f"# Campaign report: {name}", ""]
    out.append(f"Source: `{tsv_name}` ({figures['format'] or 'no rows yet, so no'} format, {len(rows)} rows).")
    out += ["", f"![progress]({PLOT_FILE})", "", f"[{PLOT_FILE}]({PLOT_FILE})", ""]

    out += ["## Figures", "", "| figure | value |", "|---|---|"]
    for key, label, fmt in FIGURE_LABELS:
        if figures.get(key) is not None:
            out.append(f"| {label} | {fmt.format(figures[key])} |")

    ours = (figures["format"] or "").startswith("ours")
    out += ["", "## Kept experiments", ""]
    kept = [r for r in rows if r.kept]
    if kept:
        out.append("| # | commit | val_bpb | vs previous best | description |" + (" led by |" if ours else ""))
        out.append("|---|---|---|---|---|" + ("---|" if ours else ""))
        best = None
        for r in kept:
            delta = ""
            if r.val_bpb is not None and best is not None:
                delta = f"{(r.val_bpb - best) / best * 100:+.3f}%"
            if r.val_bpb is not None:
                best = r.val_bpb if best is None else min(best, r.val_bpb)
            line = f"| {r.index} | `{r.commit or '-'}` | {_fmt_bpb(r.val_bpb)} | {delta} | {_md(r.description)} |"
            if ours:
                by = "baseline" if r.index == 0 else (f"directive ({r.agent_choice})" if r.directive_led else "agent")
                line += f" {by} |"
            out.append(line)
    else:
        out.append("None.")

    out += ["", "## Crashes", ""]
    crashed = [r for r in rows if r.status == CRASH]
    if crashed:
        out += ["| # | commit | description |", "|---|---|---|"]
        out += [f"| {r.index} | `{r.commit or '-'}` | {_md(r.description)} |" for r in crashed]
    else:
        out.append("None.")

    out += ["", "## Definitions", "", DEFINITIONS]
    return "\n".join(out)


# -----------------------------------------------------------------------------
# progress.png

def plot_progress(name, rows, figures, path):
    # Figure + Agg canvas directly, not pyplot: no global figure registry, so nothing can leak
    # across the hundreds of calls a campaign makes, and the caller's backend is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    from matplotlib.transforms import blended_transform_factory

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    top_edge = blended_transform_factory(ax.transData, ax.transAxes)  # x in data, y in axes

    measured = [r for r in rows if r.val_bpb is not None]
    base, best = figures["baseline_val_bpb"], figures["best_val_bpb"]

    # y range: from the best to a bit above the baseline; wild discards would flatten the story
    y_top = None
    if base is not None and best is not None:
        span = max(base - best, base * 0.05)    # early on, discards a few % worse stay visible
        y_top = base + OFFSCALE_SPAN * span
    on_scale = [r for r in measured if y_top is None or r.val_bpb <= y_top]
    off_scale = [r for r in measured if y_top is not None and r.val_bpb > y_top]

    others = [r for r in on_scale if not r.kept]
    kept = [r for r in on_scale if r.kept]
    ax.scatter([r.index for r in others], [r.val_bpb for r in others], s=18, color="#9aa0a6",
               alpha=0.8, label="discarded", zorder=2)
    ax.scatter([r.index for r in kept], [r.val_bpb for r in kept], s=46, color="#2e9d4f",
               edgecolor="#14522a", linewidth=0.8, label="kept", zorder=4)

    # running best over kept experiments, held until the end of the campaign; note each win's size
    xs, ys, cur, wins = [], [], None, {}
    for r in rows:
        if r.kept and r.val_bpb is not None:
            if cur is not None and r.val_bpb < cur:
                wins[r.index] = cur - r.val_bpb
            cur = r.val_bpb if cur is None else min(cur, r.val_bpb)
        if cur is not None:
            xs.append(r.index)
            ys.append(cur)
    if xs:
        ax.step(xs, ys, where="post", color="#2e9d4f", linewidth=1.6, alpha=0.9, label="running best", zorder=3)

    # no metric (crash, no-run) or off the chart: markers pinned to the top edge
    nometric = [r for r in rows if r.val_bpb is None]
    if nometric:
        ax.scatter([r.index for r in nometric], [0.97] * len(nometric), marker="x", s=30,
                   color="#d93025", transform=top_edge, label="crash / no metric", zorder=5, clip_on=False)
    if off_scale:
        ax.scatter([r.index for r in off_scale], [0.97] * len(off_scale), marker="^", s=26,
                   color="#9aa0a6", transform=top_edge, label="off scale (worse)", zorder=5, clip_on=False)

    # directive iterations: a ring around the dot, and a tick on the bottom edge so crashed ones show too
    directed = [r for r in rows if r.directive]
    if directed:
        ax.scatter([r.index for r in directed], [0.015] * len(directed), marker="|", s=120,
                   color="#7b1fa2", transform=top_edge, label="directive given", zorder=5, clip_on=False)
        ringed = [r for r in directed if r.val_bpb is not None and (y_top is None or r.val_bpb <= y_top)]
        ax.scatter([r.index for r in ringed], [r.val_bpb for r in ringed], s=110, facecolor="none",
                   edgecolor="#7b1fa2", linewidth=1.2, zorder=5)

    # name the kept experiments that moved the running best the most
    labelled = [r for r in kept if r.index in wins]
    for r in sorted(labelled, key=lambda r: -wins[r.index])[:MAX_LABELS]:
        text = r.description if len(r.description) <= LABEL_CHARS else r.description[:LABEL_CHARS - 1] + "…"
        ax.annotate(text, (r.index, r.val_bpb), xytext=(4, 6), textcoords="offset points",
                    fontsize=7, rotation=25, color="#14522a", zorder=6)

    if on_scale:
        # headroom above the worst plotted point keeps the pinned markers clear of the dots
        lo, hi = min(r.val_bpb for r in on_scale), max(r.val_bpb for r in on_scale)
        pad = (hi - lo) * 0.06 or lo * 0.001
        ax.set_ylim(lo - 2 * pad, hi + 3 * pad)  # and the directive ticks clear of the best dots
    # a little room on the right for the last labels; experiments are whole numbers
    ax.set_xlim(-0.5, max(len(rows) - 1, 1) + max(0.5, len(rows) * 0.05))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("experiment # (0 = baseline)")
    ax.set_ylabel("val_bpb (lower is better)")
    title = f"{name}: {figures['experiments']} experiments, {figures['keeps']} kept"
    if figures["total_improvement_pct"] is not None:
        title += f", {figures['total_improvement_pct']:.2f}% better than baseline"
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if rows:
        ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path)


# -----------------------------------------------------------------------------
# The entry points

def write_report(run_dir_or_tsv, out_dir=None):
    """Read the results, write report.md and progress.png into out_dir (default: next to the tsv),
    return the figures. Cheap enough to call after every iteration."""
    tsv = resolve_tsv(run_dir_or_tsv)
    rows = read_results(tsv)
    figures = compute_figures(rows)
    out_dir = out_dir or os.path.dirname(os.path.abspath(tsv))
    os.makedirs(out_dir, exist_ok=True)
    name = campaign_name(tsv)
    # write-then-rename so a reader (or a crash mid-write) never sees half a report
    md_path = os.path.join(out_dir, REPORT_FILE)
    with open(md_path + ".tmp", "w", encoding="utf-8") as f:
        f.write(render_markdown(name, rows, figures, os.path.basename(tsv)))
    os.replace(md_path + ".tmp", md_path)
    png_path = os.path.join(out_dir, PLOT_FILE)
    plot_progress(name, rows, figures, png_path + ".tmp.png")
    os.replace(png_path + ".tmp.png", png_path)
    return figures


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m graph.report", description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("path", help="a run dir holding results.tsv, or a results.tsv file")
    parser.add_argument("--out", help="where to write report.md and progress.png (default: next to the tsv)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)
    logging.basicConfig(format="report: warning: %(message)s", level=logging.WARNING)
    try:
        figures = write_report(args.path, args.out)
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
        for key, label, fmt in FIGURE_LABELS:
            if figures.get(key) is not None:
                print(f"{label:>40}: {fmt.format(figures[key])}")
        print(f"wrote {os.path.join(out_dir, REPORT_FILE)} and {os.path.join(out_dir, PLOT_FILE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
