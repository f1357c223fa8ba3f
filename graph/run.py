"""
`python -m graph.run`: start or resume a research campaign.

With no API key and no GPU it runs a short offline demo on the CPU (built-in corpus, rule-based
researcher); with a key and a GPU it runs the real thing until stopped (--max-iterations,
--max-hours, a STOP file in the run dir, or Ctrl-C, which finishes recording first).
"""

from __future__ import annotations

import re
import signal
import sqlite3
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from graph import results
from graph.configuration import Settings, parse_settings, resolve_profile
from graph.director import Director
from graph.graph import Campaign, build_graph
from graph.llm import Models, make_models
from graph.prompts import PromptError
from nanochat.prepare import HarnessError
from tools.redact import make_undumpable
from tools.harness_pin import HarnessTampered
from tools.sandbox import SandboxError
from tools.supervisor import discard_spare
from tools.workspace import TamperError, WorkspaceError

DEMO_ITERATIONS = 4          # offline with no stop condition given: a demo of a few minutes
CHECKPOINT_DB = "checkpoints.sqlite"
RECURSION_LIMIT = 10**7      # the loop is bounded by its stop conditions, not by LangGraph
STEP_RE = re.compile(r"^step \d+ \|\s*([\d.]+)%")
MAX_TRAIN_BYTES = 1_000_000  # --train: bigger is not a training script
HARNESS_CALLS = {"load_harness()": r"\bload_harness\s*\(", "H.finish(...)": r"\.finish\s*\("}

console = Console()
STATUS_COLOURS = {"keep": "green", "discard": "yellow", "crash": "red", "measure": "cyan"}


class CampaignError(RuntimeError):
    pass


def open_campaign(settings: Settings, models) -> tuple[Campaign, bool]:
    """Create the run dir and workspace (or reopen them with --resume). Returns (campaign, resumed)."""
    from nanochat.prepare import HarnessConfig, prepare_data
    from tools import Workspace, kill_stale_runs, sandbox
    from tools.harness_pin import HarnessPin

    run_dir = (settings.runs_dir / settings.campaign).resolve()
    ws_dir = run_dir / "workspace"
    if settings.unsafe_no_sandbox:
        console.print("[bold red]--unsafe-no-sandbox: train.py runs with your rights, outside any sandbox. "
                      "It can read your files and secrets and change the harness; no score can be trusted.[/]")
    else:
        sandbox.require()                    # no sandbox here: refuse before anything is created
    if settings.resume:
        if settings.train:
            raise CampaignError("--train starts a new campaign from a train.py; a resumed campaign goes on "
                                "from its own best code (drop --train, or start a new --campaign)")
        if not (run_dir / CHECKPOINT_DB).exists():
            raise CampaignError(f"nothing to resume: {run_dir} holds no campaign (no {CHECKPOINT_DB})")
        killed = kill_stale_runs(run_dir)
        if killed:
            console.print(f"[yellow]stopped {len(killed)} training process(es) left over from before: {killed}")
        workspace = Workspace.open(ws_dir)
    else:
        if run_dir.exists() and any(run_dir.iterdir()):
            raise CampaignError(f"campaign {settings.campaign!r} already exists in {run_dir}: "
                                f"add --resume to continue it, or pick another --campaign")
        train_py = read_train_py(settings.train) if settings.train else None
        profile = resolve_profile(settings)
        config = HarnessConfig(profile=profile, data=settings.data, time_budget=settings.time_budget)
        # bad data or profile fails here, before a run dir exists (the data is cached for later)
        data = prepare_data(config, log=lambda s: console.print(f"[dim]{s}[/]"))
        run_dir.mkdir(parents=True, exist_ok=True)
        workspace = Workspace.create(ws_dir, config, train_py)
        HarnessPin.create(run_dir, data.dir)   # the harness copy and the hashes every run is checked against
    campaign = Campaign(settings=settings, run_dir=run_dir, models=models, workspace=workspace)
    campaign.director = Director(campaign)    # offline models get the offline director, same nodes
    return campaign, settings.resume


def read_train_py(path: Path) -> str:
    """A user's train.py for --train, checked before anything is created or trained: readable
    text that compiles, passes the integrity check, and uses the harness."""
    from tools.supervisor import precheck
    path = Path(path).expanduser()
    if not path.is_file():
        raise CampaignError(f"--train {path}: no such file")
    if path.stat().st_size > MAX_TRAIN_BYTES:
        raise CampaignError(f"--train {path}: {path.stat().st_size:,} bytes; a train.py over "
                            f"{MAX_TRAIN_BYTES:,} bytes is not a training script")
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CampaignError(f"--train {path}: cannot read it as UTF-8 text ({e})") from None
    refused = precheck(source)
    if refused is not None:
        raise CampaignError(f"--train {path}: {refused.message}")
    missing = [call for call, pattern in HARNESS_CALLS.items() if not re.search(pattern, source)]
    if missing:
        raise CampaignError(f"--train {path}: it never calls {' or '.join(missing)}. A campaign's train.py gets "
                            "its data, seed and budget from `H = load_harness()` and ends with `H.finish(model, ...)`, "
                            "which hands the model to the scorer; see nanochat/train.py and the README")
    return source


class LiveUI:
    """Rich progress: one line per event, a bar while training, a summary table at the end."""

    def __init__(self, campaign: Campaign):
        self.c = campaign
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                 TimeElapsedColumn(), console=console, transient=True)
        self.task = None
        self.best = None
        self.stall = 0
        self.iteration = 0

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
        elif kind == "recorded":
            refresh_report(self.c.run_dir)
            colour = STATUS_COLOURS.get(data["status"], "white")
            bpb = f"{data['val_bpb']:.6f}" if data.get("val_bpb") else "-"
            p.console.print(f"[{colour}]#{data['iteration']:<3} {data['status']:<8}[/] val_bpb {bpb}  {data['description']}")
            if data.get("reason"):
                p.console.print(f"     [dim]{data['reason']}[/]")
        elif kind == "verdict":
            self.best = data.get("best")
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
        elif kind == "director":
            p.console.print(f"[magenta]director:[/] {data['text']}")
        elif kind == "error":
            p.console.print(f"[red]{data['message']}")

    def training_line(self, line: str) -> None:
        m = STEP_RE.match(line)
        if m and self.task is not None:
            self.progress.update(self.task, completed=float(m.group(1)))


def refresh_report(run_dir: Path) -> dict | None:
    from graph.report import write_report
    try:
        return write_report(run_dir)
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


def run_campaign(settings: Settings, models: Models, *, handle_sigint: bool = False) -> dict:
    """Open (or resume) the campaign and run its graph to a stop condition. Returns the final state."""
    from graph.checkpoints import redacting_saver
    from nanochat.prepare import HarnessConfig, prepare_data

    campaign, resumed = open_campaign(settings, models)
    config = HarnessConfig.read(campaign.workspace.root / "harness.json")
    console.print(f"campaign [bold]{settings.campaign}[/] in {campaign.run_dir}{' (resumed)' if resumed else ''}")
    console.print(f"models: {campaign.models.label}")
    console.print(f"harness: profile {config.profile}, data {config.data}, {config.budget:.0f}s per run"
                  f"{' on the CPU (no GPU)' if config.profile == 'cpu' else ''}")
    runs = campaign.noise_runs
    console.print(f"judge: {runs} runs per measured code (baseline and candidates, one seed each), kept at "
                  f"{settings.confidence:.1%} one-sided confidence over seed noise" if runs > 1 else
                  "[yellow]judge: one run per experiment (--noise-runs 1): noise-blind, a lucky seed can be kept[/]")
    if settings.train and not resumed:
        console.print(f"train.py: from {settings.train}")
    prepare_data(config, log=lambda s: console.print(f"[dim]{s}[/]"))   # before the baseline's clock

    ui = LiveUI(campaign)
    redactor = campaign.redactor
    campaign.on_event = lambda kind, data: ui.event(kind, redactor(data))   # the console: no secret either
    campaign.on_progress = ui.training_line
    if handle_sigint:
        install_sigint(campaign)
    conn = sqlite3.connect(campaign.run_dir / CHECKPOINT_DB, check_same_thread=False)
    graph = build_graph(campaign, checkpointer=redacting_saver(conn, campaign.redactor))
    from graph.tracing import start_tracing
    tracing = start_tracing(campaign)       # traces.jsonl in the run dir, and LangSmith when enabled
    console.print(f"[dim]traces: {tracing.describe()}[/]")
    cfg = {"configurable": {"thread_id": "campaign"}, "recursion_limit": RECURSION_LIMIT, **tracing.config()}
    try:
        with ui:
            final = graph.invoke(resume_input(campaign, graph, cfg), cfg)
    finally:
        discard_spare()                     # the pre-started process waiting for a next run
        conn.close()
        tracing.close()
    console.print(summary_table(campaign.run_dir))
    figures = refresh_report(campaign.run_dir) or {}
    if campaign.noise_runs > 1 and figures.get("confirm_share_pct") is not None:
        console.print(f"judge: {figures['confirmed_keeps']} confirmed keep(s), {figures['rejected_candidates']} "
                      f"candidate(s) rejected as within noise; confirming took {figures['confirm_share_pct']:.0f}% "
                      f"of the run time, measuring the baseline's noise {figures['noise_share_pct'] or 0:.0f}%")
    console.print(f"report: {campaign.run_dir / 'report.md'}, plot: {campaign.run_dir / 'progress.png'}")
    console.print(f"stopped: {final.get('stop_reason') or 'done'}")
    return final


def resume_input(campaign: Campaign, graph, cfg) -> dict | None:
    """What to invoke the graph with: {} starts from setup, None continues from the checkpoint.
    A campaign that had ended (a stop condition, a STOP file) continues from the plateau counter,
    so `--resume --max-iterations 20` extends a finished campaign."""
    snapshot = graph.get_state(cfg)
    if not snapshot.values or not snapshot.values.get("best_commit"):
        return {}                          # never started, or the baseline failed: (re)run setup
    if snapshot.next:
        return None                        # stopped mid-way (kill -9, Ctrl-C twice): carry on
    stop_file = campaign.run_dir / "STOP"
    if stop_file.exists():
        stop_file.unlink()
        console.print("[yellow]removed the STOP file left by the last stop[/]")
    graph.update_state(cfg, {"stop_reason": ""}, as_node="judge")   # next: the plateau counter
    return None


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
