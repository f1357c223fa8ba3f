"""progress.png: a campaign's val_bpb over its experiments, the best-so-far line, the kept changes
labelled and, when runs were repeated, the best's ±1σ band (graph/report.py writes it)."""

from graph.results import CRASH, clip, multi_run

FIGSIZE = (11, 5.5)
DPI = 110
MAX_LABELS = 8       # annotate only the biggest wins, or the plot turns into text
LABEL_CHARS = 32     # truncate annotated descriptions to this many characters
OFFSCALE_SPAN = 3.0  # y axis reaches baseline + this many (baseline - best) spans; above is off scale



def plot_progress(name, rows, figures, path):
    """Draw progress.png; returns the Figure (tests read its artists)."""
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

    # v3: an experiment sits at its iteration, its runs around its mean; older formats: one row, one x
    multi = multi_run(figures["format"])
    x = (lambda r: r.number) if multi else (lambda r: r.index)
    mean_label = " (mean of its runs)" if multi else ""
    verdicts = [r for r in rows if r.is_verdict]
    # a crash's mean (its runs before the crash) is no result: it is drawn as a crash
    measured = [r for r in verdicts if r.mean is not None and r.status != CRASH]
    base, best, sigma = figures["baseline_val_bpb"], figures["best_val_bpb"], figures["sigma"]

    # y range: from the best to a bit above the baseline; wild discards would flatten the story
    y_top = None
    if base is not None and best is not None:
        span = max(base - best, base * 0.05)    # early on, discards a few % worse stay visible
        y_top = base + OFFSCALE_SPAN * span
    on_scale = [r for r in measured if y_top is None or r.mean <= y_top]
    off_scale = [r for r in measured if y_top is not None and r.mean > y_top]
    run_dots = [r for r in rows if multi and r.val_bpb is not None and (y_top is None or r.val_bpb <= y_top)]

    if run_dots:
        ax.scatter([x(r) for r in run_dots], [r.val_bpb for r in run_dots], s=10, color="#5f6368",
                   alpha=0.6, linewidth=0, label="one run (a seed)", zorder=2)
    others = [r for r in on_scale if not r.kept]
    kept = [r for r in on_scale if r.kept]
    ax.scatter([x(r) for r in others], [r.mean for r in others], s=18, color="#9aa0a6",
               alpha=0.8, label="discarded" + mean_label, zorder=2)
    ax.scatter([x(r) for r in kept], [r.mean for r in kept], s=46, color="#2e9d4f",
               edgecolor="#14522a", linewidth=0.8, label="kept" + mean_label, zorder=4)

    # running best over kept experiments, held until the end of the campaign; note each win's size
    xs, ys, cur, wins = [], [], None, {}
    for r in verdicts:
        if r.kept and r.mean is not None:
            if cur is not None and r.mean < cur:
                wins[r.index] = cur - r.mean
            cur = r.mean if cur is None else min(cur, r.mean)
        if cur is not None:
            xs.append(x(r))
            ys.append(cur)
    if xs:
        ax.step(xs, ys, where="post", color="#2e9d4f", linewidth=1.6, alpha=0.9, label="running best", zorder=3)
        if sigma:
            # a later experiment must clear this band to be told from a lucky seed
            ax.fill_between(xs, [y - sigma for y in ys], [y + sigma for y in ys], step="post",
                            color="#2e9d4f", alpha=0.13, linewidth=0, zorder=1,
                            label=f"±1σ seed noise (σ = {sigma:.4f})")

    # no metric (crash, no-run) or off the chart: markers pinned to the top edge
    nometric = [r for r in verdicts if r.mean is None or r.status == CRASH]
    if nometric:
        ax.scatter([x(r) for r in nometric], [0.97] * len(nometric), marker="x", s=30,
                   color="#d93025", transform=top_edge, label="crash / no metric", zorder=5, clip_on=False)
    if off_scale:
        ax.scatter([x(r) for r in off_scale], [0.97] * len(off_scale), marker="^", s=26,
                   color="#9aa0a6", transform=top_edge, label="off scale (worse)", zorder=5, clip_on=False)

    # directive iterations: a ring around the dot, and a tick on the bottom edge so crashed ones show too
    directed = [r for r in verdicts if r.directive]
    if directed:
        ax.scatter([x(r) for r in directed], [0.015] * len(directed), marker="|", s=120,
                   color="#7b1fa2", transform=top_edge, label="directive given", zorder=5, clip_on=False)
        ringed = [r for r in directed if r in on_scale]
        ax.scatter([x(r) for r in ringed], [r.mean for r in ringed], s=110, facecolor="none",
                   edgecolor="#7b1fa2", linewidth=1.2, zorder=5)

    # name the kept experiments that moved the running best the most
    labelled = [r for r in kept if r.index in wins]
    for r in sorted(labelled, key=lambda r: -wins[r.index])[:MAX_LABELS]:
        text = clip(r.description, LABEL_CHARS)
        ax.annotate(text, (x(r), r.mean), xytext=(4, 6), textcoords="offset points",
                    fontsize=7, rotation=25, color="#14522a", zorder=6)

    plotted = [r.mean for r in on_scale] + [r.val_bpb for r in run_dots]
    if plotted:
        # headroom above the worst plotted point keeps the pinned markers clear of the dots
        lo, hi = min(plotted), max(plotted)
        if sigma and best is not None:
            lo = min(lo, best - sigma)      # the whole band under the best
        pad = (hi - lo) * 0.06 or lo * 0.001
        ax.set_ylim(lo - 2 * pad, hi + 3 * pad)  # and the directive ticks clear of the best dots
    # a little room on the right for the last labels; experiments are whole numbers
    last = max((x(r) for r in rows), default=0)
    ax.set_xlim(-0.5, max(last, 1) + max(0.5, (last + 1) * 0.05))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("experiment # (0 = baseline)")
    ax.set_ylabel("val_bpb (lower is better)")
    title = f"{name}: {figures['experiments']} experiments"
    title += f" ({figures['runs']} runs), " if multi else ", "
    title += f"{figures['keeps']} kept"
    if figures["total_improvement_pct"] is not None:
        title += f", {figures['total_improvement_pct']:.2f}% better than baseline"
        if figures["total_improvement_sigma"] is not None:
            title += f" ({figures['total_improvement_bpb']:.4f} bpb = {figures['total_improvement_sigma']:.1f}σ)"
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if rows:
        ax.legend(loc="lower left", fontsize=8, framealpha=0.9, ncol=2 if multi else 1)
    fig.tight_layout()
    fig.savefig(path)
    return fig
