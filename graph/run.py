"""
`python -m graph.run`: start or resume a research campaign.

With no API key and no GPU it runs a short offline demo on the CPU (built-in corpus, rule-based
researcher); with a key and a GPU it runs the real thing until stopped (--max-iterations,
--max-hours, a STOP file in the run dir, or Ctrl-C, which finishes recording first).
"""

from __future__ import annotations

import signal
import sqlite3
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from graph import results, usage
from graph.campaign import CHECKPOINT_DB, Campaign, CampaignError, open_campaign, resume_input
from graph.configuration import Settings, parse_settings
from graph.graph import build_graph
from graph.llm import Models, make_models
from graph.prompts import PromptError
from graph.status import StatusFile, parse_step
from nanochat.config import HarnessError
from tools.redact import make_undumpable
from tools.harness_pin import HarnessTampered
from tools.sandbox import SandboxError
from tools.supervisor import discard_spare
from tools.workspace import TamperError, WorkspaceError

DEMO_ITERATIONS = 4          # offline with no stop condition given: a demo of a few minutes
RECURSION_LIMIT = 10**7      # the loop is bounded by its stop conditions, not by LangGraph
PLAIN_EVERY_PCT = 10         # without a terminal: a progress line per this much of a run's budget ...
PLAIN_EVERY_S = 30.0         # ... or per this many seconds, whichever comes first

console = Console()
STATUS_COLOURS = {"keep": "green", "discard": "yellow", "crash": "red", "measure": "cyan"}


class LiveUI:
    """Rich progress: one line per event, a bar while training, a summary table at the end.
    When the console is not a terminal (nohup, a pipe), no bar: a plain line at most every
    PLAIN_EVERY_PCT percent of a run's budget or PLAIN_EVERY_S seconds."""

    def __init__(self, campaign: Campaign, out: Console | None = None, report: bool = True):
        self.c = campaign
        self.report = report          # refresh report.md on each row (a parallel campaign's driver does it)
        self.console = out or console
        self.plain = not self.console.is_terminal
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                 TimeElapsedColumn(), console=self.console, transient=True,
                                 disable=self.plain)
        self.task = None
        self.best = None
        self.stall = 0
        self.iteration = 0
        self.shown = (-1, 0.0)     # plain mode: the last progress line's (tenth of the budget, time)
        self.warned_usage = False

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def status(self, phase: str) -> str:
        best = f"{self.best:.6f}" if self.best else "-"
        return f"iter {self.iteration} | {phase} | best {best} | stall {self.stall}"

    def event(self, kind: str, data: dict) -> None:
        p = self.progress
        if kind == "phase":
            self.iteration = data.get("iteration", self.iteration)
            if self.task is not None:
                p.remove_task(self.task)
            total = 100 if data["phase"].startswith(("training", "baseline training", "confirming")) else None
            self.task = p.add_task(self.status(data["phase"]), total=total)
            self.shown = (-1, 0.0)
            if self.plain:
                p.console.print(self.status(data["phase"]), highlight=False)
        elif kind == "recorded":
            if self.report:
                refresh_report(self.c.run_dir, self.c.settings.llm_prices)
            colour = STATUS_COLOURS.get(data["status"], "white")
            bpb = f"{data['val_bpb']:.6f}" if data.get("val_bpb") else "-"
            p.console.print(f"[{colour}]#{data['iteration']:<3} {data['status']:<8}[/] val_bpb {bpb}  {data['description']}")
            if data.get("reason"):
                p.console.print(f"     [dim]{data['reason']}[/]")
        elif kind == "verdict":
            self.best = data.get("best")
            if data.get("total_tokens") is not None:
                cost = f", ${data['cost']:.4f}" if data.get("cost") is not None else ""
                p.console.print(f"     [dim]LLM tokens: {usage.short(data.get('tokens') or 0)} this experiment, "
                                f"{usage.short(data['total_tokens'])} in all{cost}[/]")
        elif kind == "usage_missing":
            if not self.warned_usage:
                self.warned_usage = True
                p.console.print(f"[yellow]the {data['who']} model's provider reports no token usage: its calls count 0 "
                                "tokens (and --max-llm-tokens / --max-llm-cost cannot see them)[/]")
        elif kind == "stall":
            self.stall = data["stall"]
        elif kind == "tool":
            args = ", ".join(f"{k}={str(v)[:40]!r}" for k, v in data["args"].items())
            p.console.print(f"    [dim]{data['name']}({args})[/]")
        elif kind == "trained":
            bpb = f"{data['val_bpb']:.6f}" if data.get("val_bpb") else "-"
            p.console.print(f"    [dim]trained: {data['status']}, val_bpb {bpb}[/]")
            if data.get("sandboxed") is False:
                p.console.print("    [bold red]this run was not sandboxed (--unsafe-no-sandbox): its score is not trustworthy[/]")
        elif kind == "retry":
            p.console.print(f"    [yellow]LLM call failed ({data['error']}); retry {data['attempt']} in {data['wait']:.0f}s")
        elif kind == "llm_wait":
            p.console.print(f"[bold yellow]LLM endpoint unreachable for {minutes(data['down_for'])} "
                            f"({escape(data['error'])}): waiting {data['wait']:.0f}s before trying again, "
                            f"no iteration spent (stops after {minutes(data['limit'])}, --max-llm-outage)[/]")
        elif kind == "llm_back":
            p.console.print(f"[green]LLM endpoint reachable again after {minutes(data['down_for'])}: "
                            f"experiments resume[/]")
        elif kind == "refused":
            p.console.print(f"    [yellow]{escape(data['message'][:160])}[/]")
        elif kind == "director":
            p.console.print(f"[magenta]director:[/] {data['text']}")
        elif kind == "error":
            p.console.print(f"[red]{data['message']}")

    def training_line(self, line: str) -> None:
        step = parse_step(line)
        if step is None or self.task is None:
            return
        n, pct, loss = step
        if not self.plain:
            self.progress.update(self.task, completed=pct)
            return
        tenth, now = int(pct // PLAIN_EVERY_PCT), time.monotonic()
        if tenth > self.shown[0] or now - self.shown[1] >= PLAIN_EVERY_S:
            self.shown = (tenth, now)
            loss_text = f", loss {loss:.2f}" if loss is not None else ""
            self.console.print(f"  training {pct:.0f}% (step {n}{loss_text})", highlight=False)


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f}s"


def refresh_report(run_dir: Path, prices: tuple = (None, None)) -> dict | None:
    from graph.report import write_report
    try:
        return write_report(run_dir, prices=prices)
    except Exception as e:    # a report problem must not stop the campaign
        console.print(f"[yellow]could not refresh the report: {e}")
        return None


def summary_table(run_dir: Path) -> Table:
    t = Table(title=f"campaign {run_dir.name}")
    for col in ("#", "status", "val_bpb", "seed", "description"):
        t.add_column(col)
    for r in results.rows(run_dir / "results.tsv"):
        colour = STATUS_COLOURS.get(r.status, "white")
        t.add_row(str(r.iteration), f"[{colour}]{r.status}", f"{r.val_bpb:.6f}" if r.val_bpb else "-",
                  "" if r.seed is None else str(r.seed), r.description)
    return t


# the cpu profile's seed noise at 15 s, as measured in docs/PERFORMANCE.md ("The CPU profile")
CPU_DEMO_NOISE = ("[yellow]CPU demo: runs of a tiny model this short are noisy (seed σ ≈ 0.024 bpb at 15 s, "
                  "docs/PERFORMANCE.md), so its verdicts show the loop working, not research results.[/]")


def describe_harness(config) -> list[str]:
    """The console lines saying what the campaign's pinned harness is."""
    cpu = config.profile == "cpu"
    lines = [f"harness: profile {config.profile}, data {config.data}, {config.budget:.0f}s per run"
             f"{' on the CPU (no GPU)' if cpu else ''}"]
    return lines + [CPU_DEMO_NOISE] if cpu else lines


def run_campaign(settings: Settings, models: Models, *, handle_sigint: bool = False) -> dict:
    """Open (or resume) the campaign and run its graph to a stop condition. Returns the final state."""
    from graph.checkpoints import redacting_saver
    from nanochat.prepare import HarnessConfig, prepare_data

    if settings.unsafe_no_sandbox:
        console.print("[bold red]--unsafe-no-sandbox: train.py runs with your rights, outside any sandbox. "
                      "It can read your files and secrets and change the harness; no score can be trusted.[/]")
    campaign, resumed = open_campaign(settings, models, log=dim)
    config = HarnessConfig.read(campaign.workspace.root / "harness.json")
    console.print(f"campaign [bold]{settings.campaign}[/] in {campaign.run_dir}{' (resumed)' if resumed else ''}")
    console.print(f"models: {campaign.models.label}")
    for line in describe_harness(config):
        console.print(line)
    runs = campaign.noise_runs
    console.print(f"judge: {runs} runs per measured code (baseline and candidates, one seed each), kept at "
                  f"{settings.confidence:.1%} one-sided confidence over seed noise" if runs > 1 else
                  "[yellow]judge: one run per experiment (--noise-runs 1): noise-blind, a lucky seed can be kept[/]")
    recorded = results.rows(campaign.results_path)
    if recorded and not results.has_tokens(recorded[0].fmt) and (settings.max_llm_tokens or settings.max_llm_cost):
        console.print(f"[bold yellow]this campaign's results.tsv ({recorded[0].fmt} format) predates the token columns: "
                      "it records no tokens, so --max-llm-tokens / --max-llm-cost cannot stop it[/]")
    if settings.train and not resumed:
        console.print(f"train.py: from {settings.train}")
    prepare_data(config, log=dim)   # before the baseline's clock

    ui = LiveUI(campaign)
    redactor = campaign.redactor
    status = StatusFile(campaign.run_dir, settings.campaign, settings.max_iterations, settings.max_hours,
                        settings.plateau_patience)     # for python -m graph.status

    def on_event(kind: str, data: dict) -> None:      # the console and status.json: no secret either
        data = redactor(data)
        status.event(kind, data)
        ui.event(kind, data)
    campaign.on_event.handler = on_event
    campaign.on_progress = ui.training_line
    if handle_sigint:
        install_sigint(campaign)
    conn = sqlite3.connect(campaign.run_dir / CHECKPOINT_DB, check_same_thread=False)
    graph = build_graph(campaign, checkpointer=redacting_saver(conn, campaign.redactor))
    from graph.tracing import start_tracing
    tracing = start_tracing(campaign)       # traces.jsonl in the run dir, and LangSmith when enabled
    console.print(f"[dim]traces: {tracing.describe()}[/]")
    cfg = {"configurable": {"thread_id": "campaign"}, "recursion_limit": RECURSION_LIMIT, **tracing.config()}
    final = None
    try:
        with ui:
            final = graph.invoke(resume_input(campaign, graph, cfg, log=dim), cfg)
    finally:
        status.end((final.get("stop_reason") or "done") if final is not None else "aborted (an error or Ctrl-C twice)")
        discard_spare()                     # the pre-started process waiting for a next run
        conn.close()
        tracing.close()
    console.print(summary_table(campaign.run_dir))
    figures = refresh_report(campaign.run_dir, settings.llm_prices) or {}
    if campaign.noise_runs > 1 and figures.get("confirm_share_pct") is not None:
        console.print(f"judge: {figures['confirmed_keeps']} confirmed keep(s), {figures['rejected_candidates']} "
                      f"candidate(s) rejected as within noise; confirming took {figures['confirm_share_pct']:.0f}% "
                      f"of the run time, measuring the baseline's noise {figures['noise_share_pct'] or 0:.0f}%")
    if figures.get("llm_tokens") is not None:
        cost = f", ${figures['llm_cost']:.4f}" if figures.get("llm_cost") is not None else ""
        console.print(f"LLM tokens: {figures['llm_tokens']:,} (agent {figures['agent_tokens']:,}, director "
                      f"{figures['director_tokens']:,}){cost}")
    console.print(f"report: {campaign.run_dir / 'report.md'}, plot: {campaign.run_dir / 'progress.png'}")
    console.print(f"stopped: {final.get('stop_reason') or 'done'}")
    return final


def dim(text: str) -> None:
    console.print(f"[dim]{escape(text)}[/]")


def install_sigint(campaign: Campaign) -> None:
    """First Ctrl-C: finish and record the current experiment, then stop. Second: abort now."""
    interrupts = []

    def on_sigint(signum, frame):
        interrupts.append(time.time())
        if len(interrupts) > 1:
            raise KeyboardInterrupt
        campaign.stop_requested.set()
        console.print("[yellow]Ctrl-C: finishing and recording the current experiment, then stopping "
                      "(press again to abort now; --resume continues).[/]")
    signal.signal(signal.SIGINT, on_sigint)


def main(argv: list[str] | None = None) -> int:
    make_undumpable()     # before any key is read: no core dump, no ptrace, no /proc/<pid>/mem
    settings = parse_settings(argv)
    models = make_models(settings)
    if models.offline:
        if not settings.offline:
            console.print("[bold yellow]No API key found (OPENAI_API_KEY or DEEPSEEK_API_KEY): running the "
                          "offline researcher (no LLM).[/]")
        if settings.max_iterations is None and settings.max_hours is None:
            settings.max_iterations = DEMO_ITERATIONS
            console.print(f"[yellow]Offline demo: {DEMO_ITERATIONS} experiments after the baseline "
                          f"(--max-iterations to change).[/]")
    resume_hint = f"python -m graph.run --campaign {settings.campaign} --runs-dir {settings.runs_dir} --resume"
    try:
        if settings.parallel:
            from graph.parallel import run_parallel
            final = run_parallel(settings, log=console.print)
            console.print(summary_table(settings.runs_dir / settings.campaign))
            console.print(f"stopped: {final['stop_reason']}")
        else:
            final = run_campaign(settings, models, handle_sigint=True)
    except (CampaignError, HarnessError, WorkspaceError, SandboxError) as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    except (TamperError, HarnessTampered) as e:   # a run changed what no run may change: stop, loudly
        console.print(f"[bold red]campaign stopped for safety:[/] {e}\nRecorded experiments are in results.tsv. "
                      f"Inspect the run dir before continuing with: {resume_hint}")
        return 3
    except PromptError as e:
        console.print(f"[red]prompt error:[/] {e}\nFix the prompt, then continue with: {resume_hint}")
        return 2
    except KeyboardInterrupt:
        console.print(f"[red]aborted.[/] Recorded experiments are in results.tsv; continue with: {resume_hint}")
        return 130
    if models.offline:
        console.print("\nThis was the offline researcher (no LLM). For the real thing: set OPENAI_API_KEY "
                      "(+ OPENAI_BASE_URL for any OpenAI-compatible endpoint) or DEEPSEEK_API_KEY, run on a "
                      "CUDA GPU, e.g.  python -m graph.run --campaign night1 --data climbmix")
    return 1 if (final.get("stop_reason") or "").startswith("baseline failed") else 0


if __name__ == "__main__":
    sys.exit(main())
