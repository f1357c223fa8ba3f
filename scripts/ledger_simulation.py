"""
How far does one serial ledger carry a parallel campaign? A discrete-event simulation of research
agents (K per GPU) sharing the campaign's ledger, which serves one call at a time (a Ray actor with
max_concurrency=1, graph/ledger.py). docs/SCALING.md reads its figures.

    python scripts/ledger_simulation.py                          # the grid: 1-512 GPUs, 1-2 agents a GPU, 60/300 s
    python scripts/ledger_simulation.py --gpus 64 --agents-per-gpu 2 --budget 300
    python scripts/ledger_simulation.py --service-ms measured.json --json   # measured per-call times

One agent's experiment, in the order the campaign makes it:
  stop_reason, claim, best, in_flight    ledger calls at the top of the loop
  LLM requests (a few seconds each)      the agent reads train.py, thinks, patches
  propose, then one run on its GPU       budget + overhead; a GPU trains one run at a time, FIFO
  the remaining LLM requests             read_metrics, the final answer: the GPU is free meanwhile
  record                                 the verdict: a results.tsv row, a git commit
  with probability confirm_share:        noise_runs - 1 more runs of the same code, each recorded

A ledger call costs the agent a network round trip, its wait in the ledger's queue and its service
time; only the service time occupies the ledger. The ledger lives on the first node: agents of the
first gpus_per_node GPUs see the local round trip, all others the remote one.

Figures are taken over `hours` after `warmup` hours, so that the synchronised start (every agent
calling claim at t = 0) is not averaged in.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
from collections import deque
from dataclasses import dataclass, field, fields
from pathlib import Path

# Ledger service time per call, ms. Everything is in memory except `record`, which runs several
# git subprocesses for a commit and fsyncs results.tsv (5-20 ms: a list is resampled uniformly).
# --service-ms FILE replaces any of these with measured values (a number, or a list of samples).
SERVICE_MS = {"stop_reason": 0.05, "claim": 0.05, "best": 0.1, "in_flight": 0.1, "propose": 0.3,
              "record": [5.0, 7.5, 10.0, 12.5, 15.0, 17.5, 20.0]}
NIGHT_HOURS = 8
GRID = {"gpus": "1,2,8,64,512", "agents_per_gpu": "1,2", "budget": "60,300"}
SWEPT = tuple(GRID)


def opt(default, help):
    return field(default=default, metadata={"help": help})


@dataclass
class Params:
    """One scenario. Every field but service_ms is a command-line flag (--llm-median 6, ...)."""
    gpus: int = 1
    agents_per_gpu: int = 1
    budget: float = 300.0
    overhead: float = opt(17.5, "s a run holds its GPU beyond the budget (warm H200: docs/PERFORMANCE.md)")
    # Runs of one budget last almost exactly as long: only the spread of their overhead lets GPUs
    # that started together drift apart. With none, a GPU-bound campaign stays in lockstep and its
    # agents record in waves (1 s is a guess; 0 shows the lockstep).
    overhead_spread: float = opt(1.0, "standard deviation of the overhead, s")
    start_spread: float = opt(0.0, "agents start uniformly over this many s (0: at once, as a campaign does)")
    llm_requests: int = opt(6, "agent LLM requests per experiment")
    llm_after_run: int = opt(2, "of them, after the run (read_metrics, the answer): the GPU is free")
    llm_median: float = opt(4.0, "median s per LLM request (lognormal)")
    llm_spread: float = opt(0.5, "sigma of the log of an LLM request's latency")
    # 0.2 of experiments confirmed on 2 more runs: 0.4 extra runs per experiment, near the 0.42 that
    # docs/NOISE.md simulated for a null campaign (a real one confirms fewer).
    confirm_share: float = opt(0.2, "share of experiments that are candidates, confirmed on more runs")
    noise_runs: int = opt(3, "runs per confirmed candidate (3 on a GPU)")
    rtt_local_ms: float = opt(0.2, "round trip of a ledger call from the ledger's node, ms")
    rtt_remote_ms: float = opt(1.0, "round trip from any other node, ms")
    gpus_per_node: int = opt(8, "GPUs a node; the ledger lives on the first")
    tsv_us_per_row: float = opt(0.0, "a record that re-reads results.tsv: us more per row written")
    hours: float = opt(4.0, "simulated hours measured")
    warmup: float = opt(0.5, "simulated hours before measuring (the start is synchronised)")
    seed: int = opt(0, "random seed")
    service_ms: dict = field(default_factory=lambda: dict(SERVICE_MS))


class Agent:
    def __init__(self, gpu: int, rtt: float):
        self.gpu, self.rtt, self.proc = gpu, rtt, None   # rtt in seconds; proc: its experiments()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


class Sim:
    """The event heap, the ledger (one server, FIFO) and the GPUs (one server each, FIFO)."""

    def __init__(self, p: Params):
        self.p, self.rng = p, random.Random(p.seed)
        self.now, self.heap, self.seq = 0.0, [], 0
        self.t0, self.end = p.warmup * 3600, (p.warmup + p.hours) * 3600
        self.queue, self.ledger_busy = deque(), False
        self.gpu_queue = [deque() for _ in range(p.gpus)]
        self.gpu_busy = [False] * p.gpus
        self.waits = {call: [] for call in SERVICE_MS}
        self.rows_total = 0   # every results.tsv row (what a re-reading record pays for)
        self.rows = self.experiments = self.llm_calls = 0
        self.ledger_s = self.train_s = 0.0

    def at(self, t: float, fn, *args) -> None:
        heapq.heappush(self.heap, (t, self.seq, fn, args))
        self.seq += 1

    def counted(self, a: float, b: float) -> float:
        """The part of [a, b] inside the measured window."""
        return max(0.0, min(b, self.end) - max(a, self.t0))

    def run(self) -> dict:
        p = self.p
        for i in range(p.gpus * p.agents_per_gpu):
            gpu = i // p.agents_per_gpu
            agent = Agent(gpu, (p.rtt_local_ms if gpu < p.gpus_per_node else p.rtt_remote_ms) / 1000)
            agent.proc = experiments(self, agent)
            self.at(self.rng.uniform(0.0, p.start_spread), self.step, agent)
        while self.heap:
            t, _, fn, args = heapq.heappop(self.heap)
            if t > self.end:
                break
            self.now = t
            fn(*args)
        return self.figures()

    # -- an agent: a generator of ("sleep", s), ("ledger", call) and ("gpu", None)
    def step(self, agent: Agent) -> None:
        kind, arg = next(agent.proc)
        if kind == "sleep":
            self.at(self.now + arg, self.step, agent)
        elif kind == "ledger":
            self.at(self.now + agent.rtt / 2, self.arrive, agent, arg, self.now)
        elif self.gpu_busy[agent.gpu]:
            self.gpu_queue[agent.gpu].append(agent)
        else:
            self.train(agent)

    def llm(self) -> float:
        if self.now >= self.t0:
            self.llm_calls += 1
        if self.p.llm_median <= 0:
            return 0.0
        return self.rng.lognormvariate(math.log(self.p.llm_median), self.p.llm_spread)

    # -- the ledger
    def arrive(self, agent: Agent, call: str, sent: float) -> None:
        self.queue.append((agent, call, sent))
        if not self.ledger_busy:
            self.serve()

    def serve(self) -> None:
        agent, call, sent = self.queue.popleft()
        ms = self.p.service_ms[call]
        ms = self.rng.choice(ms) if isinstance(ms, list) else ms
        if call == "record":
            ms += self.p.tsv_us_per_row * self.rows_total / 1000
        self.ledger_busy = True
        self.ledger_s += self.counted(self.now, self.now + ms / 1000)
        self.at(self.now + ms / 1000, self.served, agent, call, sent)

    def served(self, agent: Agent, call: str, sent: float) -> None:
        if call == "record":
            self.rows_total += 1
            self.rows += self.now >= self.t0
        self.at(self.now + agent.rtt / 2, self.answered, agent, call, sent)
        if self.queue:
            self.serve()
        else:
            self.ledger_busy = False

    def answered(self, agent: Agent, call: str, sent: float) -> None:
        if sent >= self.t0:
            self.waits[call].append(self.now - sent)
        self.step(agent)

    # -- the GPUs: the budget is the useful part of a run, the overhead holds the GPU too
    def train(self, agent: Agent) -> None:
        overhead = max(0.0, self.rng.gauss(self.p.overhead, self.p.overhead_spread))
        run = self.p.budget + overhead
        self.gpu_busy[agent.gpu] = True
        self.train_s += self.counted(self.now, self.now + run) * self.p.budget / run
        self.at(self.now + run, self.trained, agent)

    def trained(self, agent: Agent) -> None:
        waiting = self.gpu_queue[agent.gpu]
        if waiting:
            self.train(waiting.popleft())
        else:
            self.gpu_busy[agent.gpu] = False
        self.step(agent)

    def figures(self) -> dict:
        p, seconds = self.p, self.p.hours * 3600
        every = [w for ws in self.waits.values() for w in ws]
        return {
            "budget": p.budget, "gpus": p.gpus, "agents_per_gpu": p.agents_per_gpu,
            "experiments_per_hour": self.experiments / p.hours,
            "gpu_duty": self.train_s / (p.gpus * seconds),
            "ledger_utilisation": self.ledger_s / seconds,
            "ledger_calls_per_second": len(every) / seconds,
            "ledger_ms_per_experiment": 1000 * self.ledger_s / self.experiments if self.experiments else None,
            "wait_p50_ms": 1000 * percentile(every, 0.5), "wait_p99_ms": 1000 * percentile(every, 0.99),
            "wait_ms_by_call": {c: {"p50": 1000 * percentile(w, 0.5), "p99": 1000 * percentile(w, 0.99)}
                                for c, w in self.waits.items()},
            "rows_per_night": self.rows / p.hours * NIGHT_HOURS,
            "llm_requests_per_hour": self.llm_calls / p.hours,
        }


def experiments(sim: Sim, agent: Agent):
    """An agent's loop, experiment after experiment (the order is in the module's docstring)."""
    p = sim.p
    while True:
        for call in ("stop_reason", "claim", "best", "in_flight"):
            yield "ledger", call
        for _ in range(p.llm_requests - p.llm_after_run):
            yield "sleep", sim.llm()
        yield "ledger", "propose"
        yield "gpu", None
        for _ in range(p.llm_after_run):
            yield "sleep", sim.llm()
        yield "ledger", "record"
        if sim.rng.random() < p.confirm_share:
            for _ in range(p.noise_runs - 1):
                yield "gpu", None
                yield "ledger", "record"
        sim.experiments += sim.now >= sim.t0


def simulate(**overrides) -> dict:
    return Sim(Params(**overrides)).run()


def table(rows: list[dict]) -> str:
    head = (f"{'budget':>6} {'GPUs':>5} {'ag/GPU':>6} {'exp/h':>8} {'duty':>5} {'ledger':>6} "
            f"{'p50 ms':>6} {'p99 ms':>6} {'rows/night':>10} {'LLM req/h':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['budget']:>6.0f} {r['gpus']:>5} {r['agents_per_gpu']:>6} "
                     f"{r['experiments_per_hour']:>8.0f} {r['gpu_duty']:>5.0%} {r['ledger_utilisation']:>6.1%} "
                     f"{r['wait_p50_ms']:>6.2f} {r['wait_p99_ms']:>6.1f} {r['rows_per_night']:>10.0f} "
                     f"{r['llm_requests_per_hour']:>9.0f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ints = lambda s: [int(x) for x in s.split(",")]        # noqa: E731
    for name in SWEPT:
        ap.add_argument("--" + name.replace("_", "-"), type=ints, default=ints(GRID[name]), help="comma-separated")
    tunable = [f for f in fields(Params) if f.name not in SWEPT and f.name != "service_ms"]
    for f in tunable:
        ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                        help=f"{f.metadata['help']} (default {f.default})")
    ap.add_argument("--service", action="append", default=[], metavar="CALL=MS", help="one call's service time")
    ap.add_argument("--service-ms", metavar="FILE", help='JSON {"record": [12.1, 9.8, ...], "claim": 0.04, ...}')
    ap.add_argument("--json", action="store_true", help="print the parameters and figures as JSON")
    a = ap.parse_args(argv)

    service = dict(SERVICE_MS)
    if a.service_ms:
        service.update(json.loads(Path(a.service_ms).read_text()))
    for item in a.service:
        call, ms = item.split("=", 1)
        service[call] = float(ms)
    if set(service) - set(SERVICE_MS):
        ap.error(f"unknown ledger call(s): {', '.join(sorted(set(service) - set(SERVICE_MS)))}")

    common = {f.name: getattr(a, f.name) for f in tunable}
    rows = [simulate(gpus=g, agents_per_gpu=k, budget=b, service_ms=service, **common)
            for b in a.budget for g in a.gpus for k in a.agents_per_gpu]
    if a.json:
        print(json.dumps({"params": {**common, "service_ms": service}, "scenarios": rows}, indent=1))
    else:
        print(table(rows))


if __name__ == "__main__":
    main()
