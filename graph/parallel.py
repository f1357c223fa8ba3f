"""
Several research agents on one campaign, scheduled by Ray.

    python -m graph.run --gpus 0,1                      # one agent per GPU
    python -m graph.run --gpus all --agents-per-gpu 2   # two per GPU: one trains while the other thinks
    python -m graph.run --workers 2                     # the CPU profile, no GPU (trying it, tests)
    python -m graph.run --gpus all --ray-address HEAD:6379   # join a cluster (`ray start --head`)

Each agent is a Ray actor holding its GPU (a 1/K share with K agents per GPU) and running the same
graph, tools, director and judge as a one-agent campaign. It has its own folder, agents/<name>/ in
the run dir: a git workspace of its own, its logs, its LangGraph checkpoints (one thread each),
status.json and traces. The ledger (graph/ledger.py) is one more actor, on the driver's node, whose
calls are served one at a time: results.tsv, the numbering, the best code, claims and duplicates.

Without Ray installed, a parallel flag says how to install it. A killed driver is resumed with
--resume and the same flags: every agent picks up its own thread and its open claim. When an agent's
process dies (its GPU fails, its node drops), its experiment is recorded as a crash and the campaign
carries on with the others.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from graph import results
from graph.campaign import CHECKPOINT_DB, Campaign, CampaignError, noise_runs, open_run_dir
from graph.configuration import Settings
from graph.ledger import WORKSPACE_DIR, Ledger
from nanochat.config import HARNESS_FILE, HarnessConfig

AGENTS_DIR = "agents"              # the agents' own folders, in the run dir
INSTALL_HINT = "pip install -e '.[ray]'  (or: make setup, which installs it)"
POLL_SECONDS = 2.0                 # how often the driver looks at its agents
REPORT_EVERY_S = 60.0              # the driver refreshes report.md this often while agents run
# set in the environment of the Ray processes a campaign starts, so that its leftovers (Ray's node
# agents outlive a killed driver for a minute or two) can be found and stopped on resume
RAY_MARK_ENV = "AUTORESEARCH_RAY_RUN_DIR"
LEDGER_TIMES_FILE = "ledger_calls.json"   # the agents' time in ledger calls, written at the end


@dataclass(frozen=True)
class Slot:
    """One agent's place: its name (results.tsv's `agent`) and its share of a GPU (0: the CPU)."""
    name: str
    gpu_share: float


def plan_slots(settings: Settings, gpu_count: int) -> list[Slot]:
    """The agents to run: `--workers N` on the CPU, or `--agents-per-gpu` per GPU of `--gpus`."""
    if settings.gpus is None:
        return [Slot(f"a{i + 1}", 0.0) for i in range(settings.workers)]
    if gpu_count < 1:
        raise CampaignError(f"--gpus {settings.gpus}: Ray sees no GPU here (use --workers N on the CPU)")
    k = settings.agents_per_gpu
    return [Slot(f"a{i + 1}", 1.0 / k) for i in range(gpu_count * k)]


def requested_gpus(settings: Settings) -> list[str] | None:
    """--gpus as CUDA indices (None: all the GPUs this machine or cluster has)."""
    return None if settings.gpus in (None, "all") else settings.gpus.split(",")


def import_ray():
    # each agent's lines as they come: Ray's de-duplication would merge lines of different agents
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    try:
        import ray
    except ImportError:
        raise CampaignError(f"several agents (--gpus, --workers, --ray-address) run on Ray, which is not "
                            f"installed: {INSTALL_HINT}") from None
    return ray


class LedgerClient:
    """The shared ledger as an agent sees it: the Ledger's methods, each one call to its actor,
    timed (`calls`: method -> seconds of each call, round trip included) for the ledger's overhead."""

    def __init__(self, handle, results_path: Path):
        self.handle = handle
        self.results_path = results_path
        self.calls: dict[str, list[float]] = {}

    def __getattr__(self, name):
        ray = import_ray()
        method = getattr(self.handle, name)

        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return ray.get(method.remote(*args, **kwargs))
            finally:
                self.calls.setdefault(name, []).append(time.perf_counter() - start)
        return call


class AgentActor:
    """One research agent of a parallel campaign (a Ray actor): its own workspace and graph."""

    def __init__(self, settings: Settings, run_dir: str, slot: Slot, ledger):
        from tools.redact import make_undumpable
        import ray
        make_undumpable()             # the agent holds the LLM keys: no core dump, no ptrace
        gpu_ids = ray.get_gpu_ids()
        self.device = str(gpu_ids[0]) if gpu_ids else "cpu"
        # the sandboxed runs get CUDA_VISIBLE_DEVICES from --gpu: the GPU Ray gave this actor
        self.settings = settings.model_copy(update={"gpu": None if self.device == "cpu" else self.device})
        self.run_dir = Path(run_dir)
        self.slot = slot
        self.ledger = LedgerClient(ledger, self.run_dir / results.RESULTS_FILE)

    def __repr__(self):               # Ray prefixes the actor's output lines with this
        return f"{self.slot.name}@{self.device}"

    def run(self) -> dict:
        """Run this agent's graph to a stop condition (its own, or the campaign's); its final state."""
        import sqlite3

        from rich.console import Console

        from graph.checkpoints import redacting_saver
        from graph.campaign import resume_input
        from graph.graph import build_graph
        from graph.llm import make_models
        from graph.run import RECURSION_LIMIT, LiveUI
        from graph.status import StatusFile
        from graph.tracing import start_tracing

        campaign = open_agent(self.settings, make_models(self.settings), self.run_dir, self.slot, self.device,
                              self.ledger)
        ui = LiveUI(campaign, Console(file=sys.stdout, force_terminal=False, width=160), report=False)
        status = StatusFile(campaign.run_dir, self.settings.campaign, self.settings.max_iterations,
                            self.settings.max_hours, self.settings.plateau_patience)

        def on_event(kind: str, data: dict) -> None:
            data = campaign.redactor(data)
            status.event(kind, data)
            ui.event(kind, data)
        campaign.on_event.handler = on_event
        campaign.on_progress = ui.training_line
        conn = sqlite3.connect(campaign.run_dir / CHECKPOINT_DB, check_same_thread=False)
        graph = build_graph(campaign, checkpointer=redacting_saver(conn, campaign.redactor))
        tracing = start_tracing(campaign)
        cfg = {"configurable": {"thread_id": "campaign"}, "recursion_limit": RECURSION_LIMIT, **tracing.config()}
        final = None
        try:
            final = graph.invoke(resume_input(campaign, graph, cfg), cfg)
        finally:
            status.end((final.get("stop_reason") or "done") if final is not None else "aborted")
            from tools.supervisor import discard_spare
            discard_spare()
            conn.close()
            tracing.close()
        return {"agent": self.slot.name, "device": self.device, "stop_reason": final.get("stop_reason", ""),
                "iteration": final.get("iteration", 0), "ledger_calls": self.ledger.calls}


def open_agent(settings: Settings, models, run_dir: Path, slot: Slot, device: str, ledger) -> Campaign:
    """An agent's Campaign: its folder agents/<name>/ (created at its first start with the campaign's
    best code and a copy of the campaign's harness pin), the shared ledger, its director."""
    from tools import Workspace, kill_stale_runs
    from tools.harness_pin import PIN_DIR, HarnessPin

    home = run_dir / AGENTS_DIR / slot.name
    ws_dir = home / WORKSPACE_DIR
    if ws_dir.exists():
        kill_stale_runs(home)
        workspace = Workspace.open(ws_dir)
    else:
        home.mkdir(parents=True, exist_ok=True)
        config = HarnessConfig.read(run_dir / WORKSPACE_DIR / HARNESS_FILE)
        workspace = Workspace.create(ws_dir, config, ledger.best()["source"])
        pin = HarnessPin.open(run_dir)
        HarnessPin.create(home, pin.data_dir, source=run_dir / PIN_DIR / "nanochat")
    campaign = Campaign(settings=settings, run_dir=home, models=models, workspace=workspace, ledger=ledger,
                        agent=slot.name, device=device, parallel=True)
    campaign.add_director()
    return campaign


def run_parallel(settings: Settings, log=print) -> dict:
    """Open (or resume) the campaign and run its agents on Ray to their stop. Returns a summary."""
    from tools import kill_stale_runs
    from tools.redact import make_undumpable

    ray = import_ray()
    make_undumpable()
    run_dir, workspace = open_run_dir(settings, log)
    wanted = requested_gpus(settings)
    if wanted is not None:     # Ray hands out only the GPUs it is shown
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(wanted)
    if not settings.ray_address:
        stopped = kill_marked(run_dir)
        if stopped:
            log(f"stopped {len(stopped)} Ray process(es) left over by this campaign's last driver: {stopped}")
        os.environ[RAY_MARK_ENV] = ray_mark(run_dir).split("=", 1)[1]
    ray.init(address=settings.ray_address, include_dashboard=False, log_to_driver=True,
             logging_level="WARNING", **({} if settings.ray_address else {"num_gpus": len(wanted)} if wanted else {}))
    try:
        gpu_count = int(ray.cluster_resources().get("GPU", 0)) if settings.gpus is not None else 0
        slots = plan_slots(settings, gpu_count)
        if settings.resume:
            for folder in sorted((run_dir / AGENTS_DIR).glob("*")):
                kill_stale_runs(folder)
        node = ray.get_runtime_context().get_node_id()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        ledger = ray.remote(Ledger).options(
            num_cpus=0, max_concurrency=1,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),   # the run dir's node
        ).remote(run_dir, settings, noise_runs(settings, workspace))
        names = {slot.name for slot in slots}
        for gone in [c["agent"] for c in ray.get(ledger.in_flight.remote("")) if c["agent"] not in names]:
            ray.get(ledger.abandon.remote(gone, "the resumed campaign runs without this agent"))
        log(f"campaign {settings.campaign} in {run_dir}: {len(slots)} agents "
            + (f"on {gpu_count} GPU(s), {settings.agents_per_gpu} per GPU" if settings.gpus is not None else "on the CPU"))
        actor_class = ray.remote(AgentActor)
        env = {"env_vars": {"OMP_NUM_THREADS": cpu_threads_per_agent(len(slots))}} if settings.gpus is None else {}
        actors = {slot.name: actor_class.options(num_gpus=slot.gpu_share, num_cpus=0, max_restarts=0,
                                                 runtime_env=env).remote(
            settings, str(run_dir), slot, ledger) for slot in slots}
        return supervise(ray, ledger, actors, run_dir, settings, log)
    finally:
        ray.shutdown()
        if not settings.ray_address:
            kill_marked(run_dir)


def cpu_threads_per_agent(agents: int) -> str:
    """OMP_NUM_THREADS for each CPU agent's runs: the user's, else a fair share of the cores. CPU
    agents train at once, and torch threads that outnumber the cores spin against each other (two
    2-thread runs on 2 cores took 13-18 s for 2-6 steps where two 1-thread runs took 9 s for 11).
    Ray's own default for an actor without CPUs would be 1."""
    return os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // agents))


def ray_mark(run_dir: Path) -> str:
    """The environment entry of this campaign's Ray processes (the slash: /runs/a never matches /runs/ab)."""
    return f"{RAY_MARK_ENV}={run_dir}/"


def kill_marked(run_dir: Path) -> list[int]:
    """SIGKILL the processes whose environment carries RAY_MARK_ENV=run_dir (this campaign's own
    Ray processes), but this one. Returns their pids."""
    from tools.supervisor import marked_processes
    killed = []
    for pid in marked_processes(ray_mark(run_dir).encode()):
        try:
            if pid != os.getpid():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        except OSError:       # gone already
            continue
    return killed


def supervise(ray, ledger, actors: dict, run_dir: Path, settings: Settings, log) -> dict:
    """Wait for the agents; an agent whose process died has its experiment recorded as a crash.
    The first Ctrl-C lets every agent finish and record its experiment; the second stops now."""
    from graph.run import refresh_report
    started = time.time()
    pending = {actor.run.remote(): name for name, actor in actors.items()}
    finished, lost = {}, {}
    interrupts = []

    def on_sigint(signum, frame):
        interrupts.append(time.time())
        if len(interrupts) > 1:
            raise KeyboardInterrupt
        ledger.halt.remote("interrupted (Ctrl-C)")
        log("Ctrl-C: every agent finishes and records its experiment, then stops (again to abort; --resume continues)")
    previous = signal.signal(signal.SIGINT, on_sigint)
    last_report = time.monotonic()
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            for ref in ready:
                name = pending.pop(ref)
                try:
                    finished[name] = ray.get(ref)
                    log(f"agent {name} stopped: {finished[name]['stop_reason'] or 'done'}")
                except ray.exceptions.RayActorError as e:
                    lost[name] = short_error(e)
                    row = ray.get(ledger.abandon.remote(name, f"its process died ({lost[name]})"))
                    log(f"agent {name} lost ({lost[name]})" + (f": experiment {row.iteration} recorded as a crash"
                                                               if row is not None else ""))
                except ray.exceptions.RayTaskError as e:
                    lost[name] = short_error(e)
                    ray.get(ledger.abandon.remote(name, f"it failed: {lost[name]}"))
                    log(f"agent {name} failed: {lost[name]}")
            if time.monotonic() - last_report >= REPORT_EVERY_S:
                refresh_report(run_dir, settings.llm_prices)
                last_report = time.monotonic()
    finally:
        signal.signal(signal.SIGINT, previous)
    reasons = sorted({f["stop_reason"] for f in finished.values() if f["stop_reason"]})
    refresh_report(run_dir, settings.llm_prices)
    overhead = ledger_overhead(finished.values(), results.rows(run_dir / results.RESULTS_FILE), started)
    (run_dir / LEDGER_TIMES_FILE).write_text(json.dumps(overhead, indent=1))
    if overhead["per_experiment_ms"] is not None:
        log(f"ledger: {overhead['per_experiment_ms']:.1f} ms of calls per experiment, p99 of a call "
            f"{overhead['p99_ms']:.1f} ms ({LEDGER_TIMES_FILE})")
    return {"stop_reason": "; ".join(reasons) or "done", "agents": finished, "lost": lost}


def ledger_overhead(finished, rows, since: float) -> dict:
    """What the agents spent waiting on the ledger (round trips included): per call and method, and
    per experiment recorded since `since` (this session; calls of agents that were lost are not counted)."""
    calls: dict[str, list[float]] = {}
    for summary in finished:
        for name, times in summary.get("ledger_calls", {}).items():
            calls.setdefault(name, []).extend(times)
    every = sorted(t for times in calls.values() for t in times)
    experiments = len({r.iteration for r in rows if r.iteration and r.is_verdict
                       and r.timestamp is not None and r.timestamp.timestamp() >= since})

    def p99(values):
        return 1000 * values[min(len(values) - 1, int(0.99 * len(values)))] if values else None
    return {"calls": len(every), "experiments": experiments,
            "per_experiment_ms": 1000 * sum(every) / experiments if experiments else None,
            "p99_ms": p99(every), "max_ms": 1000 * every[-1] if every else None,
            "by_method": {name: {"n": len(times), "mean_ms": 1000 * sum(times) / len(times),
                                 "p99_ms": p99(sorted(times))} for name, times in sorted(calls.items())}}


def short_error(error: Exception) -> str:
    text = " ".join(str(error).split())
    return results.clip(text, 300)
