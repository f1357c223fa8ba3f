"""
A campaign: its run dir, workspace, models and settings, created or reopened in one place.

    campaign, resumed = open_campaign(settings, models, log=print)    # the CLI and Studio alike

The run dir (`runs/<campaign>/`) holds the workspace (a git repository with train.py and
harness.json), the pinned harness copy, results.tsv, the logs, the LangGraph checkpoints
(CHECKPOINT_DB, when the CLI runs it) and the reports. `Campaign` is what the graph's nodes need that
is not state; `resume_input` says where a reopened campaign's graph carries on.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

from graph import noise, outage
from graph.configuration import Settings, resolve_profile
from graph.director import Director
from graph.ledger import WORKSPACE_DIR, Ledger
from graph.llm import Models
from nanochat.config import HARNESS_FILE, HarnessConfig
from tools import RunResult, Workspace, make_tools, run_training
from tools.supervisor import start_spare
from tools.workspace import git
from tools.redact import Redactor

CHECKPOINT_DB = "checkpoints.sqlite"
MAX_TRAIN_BYTES = 1_000_000  # --train: bigger is not a training script
HARNESS_CALLS = {"load_harness()": r"\bload_harness\s*\(", "H.finish(...)": r"\.finish\s*\("}


class CampaignError(RuntimeError):
    """A campaign cannot be started or resumed as asked: the message says why and what to do."""


class Events:
    """Where a campaign's progress goes (the CLI's display, Studio, tests). The campaign and its
    director share one, so whoever watches can set `handler` after set-up."""

    def __init__(self, handler: Callable[[str, dict], None] | None = None):
        self.handler = handler or (lambda kind, data: None)

    def __call__(self, kind: str, data: dict) -> None:
        self.handler(kind, data)


@dataclass
class Campaign:
    """Everything the nodes need that is not state: settings, paths, models, tools, events, and the
    campaign's ledger (graph/ledger.py), through which every row, claim and keep goes.

    One agent runs a campaign in its run dir, on the ledger's own workspace. In a parallel campaign
    (graph/parallel.py) each agent is a Campaign whose `run_dir` is its own folder under the
    campaign's (its workspace, logs, checkpoints) and whose `ledger` is the shared one.

    `redactor` is the campaign's one redactor (tools/redact.py): the provider keys and every
    secret-looking environment value. What goes to the LLM, the tools' answers, the checkpoints
    and the traces passes it."""
    settings: Settings
    run_dir: Path
    models: Models
    workspace: Workspace
    ledger: Ledger | None = None        # None: a ledger of its own on `workspace` (one agent)
    agent: str = "a1"                   # results.tsv's `agent`
    device: str = ""                    # results.tsv's `gpu`: the CUDA device or "cpu" ("": from the settings)
    parallel: bool = False              # one of several agents sharing the ledger
    on_event: Callable[[str, dict], None] | Events = field(default_factory=Events)
    on_progress: Callable[[str], None] | None = None                  # training stdout lines
    stop_requested: threading.Event = field(default_factory=threading.Event)
    redactor: Redactor | None = None    # None: Redactor.from_env(settings.credentials), built here
    director: Director | None = field(default=None, init=False)      # add_director()

    def __post_init__(self):
        if self.redactor is None:
            self.redactor = Redactor.from_env(self.settings.credentials)
        if not isinstance(self.on_event, Events):
            self.on_event = Events(self.on_event)
        if not self.device:
            self.device = default_device(self.settings, self.workspace)
        if self.ledger is None:
            self.ledger = Ledger(self.run_dir, self.settings, self.noise_runs, self.workspace)

    def add_director(self, **kwargs) -> Director:
        """Give the campaign its director (the offline one with offline models: same nodes).
        kwargs go to Director (an injected paper source or random generator, in tests)."""
        self.director = Director(self.settings, self.models, self.workspace, self.ledger.results_path,
                                 self.on_event, self.redactor, **kwargs)
        return self.director

    @cached_property
    def identity(self) -> str:
        """The campaign a graph state belongs to (the state's `campaign`): its name and its workspace's
        first commit, so a campaign deleted and created again under the same name is another one."""
        root = git(self.workspace.root, "rev-list", "--max-parents=0", "HEAD").split()[0]
        return f"{self.settings.campaign}@{root[:12]}"

    @property
    def results_path(self) -> Path:
        return self.ledger.results_path

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def noise_runs(self) -> int:
        return noise_runs(self.settings, self.workspace)

    def seed(self, iteration: int, run: int) -> int:
        return noise.run_seed(self.settings.campaign, iteration, run)

    def tools(self, seed: int, iteration: int | None = None):
        """The agent's four tools; with `iteration`, its runs' logs are logs/iter-NNNNN-agent-K.log."""
        # a parallel agent's runs cannot see results.tsv, and other agents append to it meanwhile
        return make_tools(self.workspace, results_path=None if self.parallel else self.results_path,
                          logs_dir=self.logs_dir,
                          gpu=self.settings.gpu, on_progress=self.on_progress, prestart=self.settings.prestart,
                          redactor=self.redactor, unsafe=self.settings.unsafe_no_sandbox, seed=seed,
                          history=self.ledger.history,
                          run_name=None if iteration is None else run_name(iteration, "agent"))

    def train(self, iteration: int, run: int, baseline: bool = False) -> RunResult:
        """Run `run` of experiment `iteration` outside the agent's loop, on its seed: the baseline's
        (the first one's compile caches seed every later run) and the confirmations'."""
        name = f"{run_name(iteration, 'baseline' if baseline else 'run')}-{run}"
        return run_training(self.workspace, logs_dir=self.logs_dir, gpu=self.settings.gpu,
                            on_progress=self.on_progress, run_name=name, prestart=self.settings.prestart,
                            results_path=None if self.parallel else self.results_path, redact=self.redactor.text,
                            unsafe=self.settings.unsafe_no_sandbox, seed_compile_cache=baseline and run == 1,
                            seed=self.seed(iteration, run))

    def warm_spare(self) -> None:
        """With prestart, start the next run's training process now that a run will follow, so its
        imports (on a GPU, CUDA and the compiler) overlap the director's and the agent's thinking.
        Only a time saver: if it cannot start, the run starts its own process and says why."""
        if not self.settings.prestart:
            return
        try:
            start_spare(self.workspace, logs_dir=self.logs_dir, gpu=self.settings.gpu,
                        unsafe=self.settings.unsafe_no_sandbox)
        except OSError as e:
            self.on_event("error", {"message": f"could not pre-start the next run: {e}"})

    def rows(self, iteration: int) -> list:
        return self.ledger.rows(iteration)


def noise_runs(settings: Settings, workspace: Workspace) -> int:
    """Runs of each measured code: the baseline's, and a candidate's before it can be kept."""
    if settings.noise_runs:
        return settings.noise_runs
    device = HarnessConfig.read(workspace.root / HARNESS_FILE).resolved_profile().device
    return noise.default_runs(device)


def default_device(settings: Settings, workspace: Workspace) -> str:
    """What results.tsv's `gpu` says for a one-agent campaign: --gpu, else the first visible CUDA
    device, or "cpu" for a CPU profile."""
    if settings.gpu is not None:
        return str(settings.gpu)
    if HarnessConfig.read(workspace.root / HARNESS_FILE).resolved_profile().device == "cpu":
        return "cpu"
    return (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]


def run_name(iteration: int, kind: str) -> str:
    """The stem of an experiment's run logs, `<stem>-K` for its K-th run: iter-00000-baseline,
    iter-NNNNN-agent (the agent's runs) and iter-NNNNN-run (confirmations). Logs sort by iteration."""
    return f"iter-{iteration:05d}-{kind}"


def open_campaign(settings: Settings, models: Models,
                  log: Callable[[str], None] = lambda text: None) -> tuple[Campaign, bool]:
    """Create the run dir and workspace, or reopen them with settings.resume, for one agent.
    Returns (campaign, resumed). Nothing is created when the settings, the data or --train are wrong."""
    run_dir, workspace = open_run_dir(settings, log)
    campaign = Campaign(settings=settings, run_dir=run_dir, models=models, workspace=workspace)
    campaign.add_director()
    return campaign, settings.resume


def open_run_dir(settings: Settings, log: Callable[[str], None] = lambda text: None) -> tuple[Path, Workspace]:
    """The campaign's run dir and its workspace (the ledger's repository), created or, with
    settings.resume, reopened (training left running by a killed campaign is stopped)."""
    from nanochat.prepare import prepare_data
    from tools import kill_stale_runs, sandbox
    from tools.harness_pin import HarnessPin

    run_dir = (settings.runs_dir / settings.campaign).resolve()
    ws_dir = run_dir / WORKSPACE_DIR
    if not settings.unsafe_no_sandbox:
        sandbox.require()                    # no sandbox here: refuse before anything is created
    if settings.resume:
        if settings.train:
            raise CampaignError("--train starts a new campaign from a train.py; a resumed campaign goes on "
                                "from its own best code (drop --train, or start a new --campaign)")
        if not ws_dir.exists():
            raise CampaignError(f"nothing to resume: {run_dir} holds no campaign (no {WORKSPACE_DIR}/)")
        refuse_harness_changes(settings, HarnessConfig.read(ws_dir / HARNESS_FILE))
        killed = kill_stale_runs(run_dir)
        if killed:
            log(f"stopped {len(killed)} training process(es) left over from before: {killed}")
        workspace = Workspace.open(ws_dir)
    else:
        if run_dir.exists() and any(run_dir.iterdir()):
            raise CampaignError(f"campaign {settings.campaign!r} already exists in {run_dir}: "
                                f"add --resume to continue it, or pick another --campaign")
        train_py = read_train_py(settings.train) if settings.train else None
        config = HarnessConfig(profile=resolve_profile(settings), data=settings.data,
                               time_budget=settings.time_budget)
        # bad data or profile fails here, before a run dir exists (the data is cached for later)
        data = prepare_data(config, log=log)
        run_dir.mkdir(parents=True, exist_ok=True)
        workspace = Workspace.create(ws_dir, config, train_py)
        HarnessPin.create(run_dir, data.dir)   # the harness copy and the hashes every run is checked against
    return run_dir, workspace


HARNESS_FLAGS = ("profile", "time_budget", "data")   # the settings a campaign pins in harness.json


def harness_changes(settings: Settings, pinned: HarnessConfig) -> list[str]:
    """The harness flags given explicitly (command line, environment, .env) that differ from the
    campaign's pin, as `--flag VALUE`. A flag left at its default changes nothing: the pin rules."""
    def same(flag: str) -> bool:
        given = getattr(settings, flag)
        if flag == "time_budget":
            return given == pinned.budget
        if flag == "data":
            return given == pinned.data or Path(given).expanduser().resolve() == Path(pinned.data).expanduser().resolve()
        return given == getattr(pinned, flag)
    return [f"--{flag.replace('_', '-')} {getattr(settings, flag):g}" if flag == "time_budget"
            else f"--{flag.replace('_', '-')} {getattr(settings, flag)}"
            for flag in HARNESS_FLAGS
            if flag in settings.model_fields_set and getattr(settings, flag) is not None and not same(flag)]


def refuse_harness_changes(settings: Settings, pinned: HarnessConfig) -> None:
    """A resumed campaign runs the harness it was started with (a val_bpb means nothing across
    harnesses): a harness flag asking for another one is refused, not silently ignored."""
    changes = harness_changes(settings, pinned)
    if changes:
        raise CampaignError(
            f"campaign {settings.campaign!r} is pinned to profile {pinned.profile}, data {pinned.data}, "
            f"{pinned.budget:g}s per run ({WORKSPACE_DIR}/{HARNESS_FILE}), and a campaign's harness never changes; "
            f"{', '.join(changes)} asks for another. Resume without {'it' if len(changes) == 1 else 'them'}, or "
            f"start a new campaign with it: python -m graph.run --campaign NEW_NAME {' '.join(changes)}")


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


def resume_input(campaign: Campaign, graph, cfg, log: Callable[[str], None] = lambda text: None) -> dict | None:
    """What to invoke the graph with: {} starts from setup, None continues from the checkpoint.
    A campaign that had ended (a stop condition, a STOP file) continues from the stop check, so
    `--resume --max-iterations 20` extends a finished campaign."""
    snapshot = graph.get_state(cfg)
    if not snapshot.values or not snapshot.values.get("best_commit"):
        return {}                          # never started, or the baseline failed: (re)run setup
    if snapshot.next:
        return None                        # stopped mid-way (kill -9, Ctrl-C twice): carry on
    stop_file = campaign.run_dir / "STOP"
    if stop_file.exists():
        stop_file.unlink()
        log("removed the STOP file left by the last stop")
    update = {"stop_reason": "", **outage.on_resume(snapshot.values)}
    graph.update_state(cfg, update, as_node="judge")   # next: the stop check
    return None
