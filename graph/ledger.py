"""
The campaign's ledger: the one place that does what must happen one at a time, whether one agent
runs the campaign or many.

    ledger = Ledger(run_dir, settings, noise_runs)     # in-process; a Ray actor in a parallel campaign

It owns:
- results.tsv. Every row is built and appended here (fsync'ed), so rows are never interleaved,
  lost or doubled however many agents record at once.
- The numbering. `claim` hands an agent the next experiment number. Open claims are kept in
  ledger.json, so an agent killed mid-experiment gets its number back when it resumes.
- The verdicts. `record` judges a run against the campaign's best *at that moment*: when two agents
  improve on the same best at once, the second is compared with the first's new best.
- The best code: the campaign's own repository (run_dir/workspace), with refs/autoresearch/best and
  every experiment's code under refs/autoresearch/experiments/NNNNN. Code comes and goes as
  train.py text, so agents need no shared file system and their sandboxes never see this repository.
- Duplicates: `propose` refuses code identical (after normalisation) to an experiment done or in flight.
- What is in flight, for the agents' prompts; the campaign-wide stop conditions; the director's plateau.

Its methods take and return plain data (dicts, rows), so a Ray actor can serve them unchanged.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import signal
import time
from pathlib import Path

from graph import noise, results, usage
from graph.configuration import Settings
from tools import RunResult
from tools.workspace import BEST_REF, REF_PREFIX, Workspace, git

LEDGER_FILE = "ledger.json"                 # open claims and the director's marker, rewritten atomically
WORKSPACE_DIR = "workspace"                 # the campaign's repository, in the run dir
EXPERIMENT_REF = "refs/autoresearch/experiments/{:05d}"   # every experiment's code stays reachable
DESCRIPTION_CHARS = 200
SUMMARY_LINES = 6                           # changed lines shown per in-flight experiment
SUMMARY_LINE_CHARS = 100
FAULT_ENV = "AUTORESEARCH_FAULT"   # tests only: SIGKILL this process at a named point (resume tests)


def fingerprint(source: str) -> str:
    """What makes two train.py the same experiment: the code with blank lines, whole-line comments,
    trailing and repeated inner whitespace dropped (indentation is kept: it is Python's syntax)."""
    kept = []
    for line in source.splitlines():
        body = line.strip()
        if not body or body.startswith("#"):
            continue
        kept.append(line[: len(line) - len(line.lstrip())] + " ".join(body.split()))
    return hashlib.sha256("\n".join(kept).encode()).hexdigest()


def change_summary(before: str, after: str) -> str:
    """The changed lines of `after` against `before`, a few at most: what another agent is trying."""
    changed = [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    shown = [results.clip(" ".join(line.split()), SUMMARY_LINE_CHARS) for line in changed[:SUMMARY_LINES]]
    more = f" (+{len(changed) - SUMMARY_LINES} more changed lines)" if len(changed) > SUMMARY_LINES else ""
    return " | ".join(shown) + more if shown else "(no change from the best code)"


class Ledger:
    """See the module's docstring. `settings` gives the judge's rule (noise runs, confidence, the
    minimum improvement) and the campaign's stop conditions."""

    def __init__(self, run_dir: Path, settings: Settings, noise_runs: int, workspace: Workspace | None = None):
        self.run_dir = Path(run_dir)
        self.settings = settings
        self.noise_runs = noise_runs
        self.results_path = self.run_dir / results.RESULTS_FILE
        # the campaign's repository: run_dir/workspace (or one an embedding gives)
        self.workspace = workspace or Workspace.open(self.run_dir / WORKSPACE_DIR)
        saved = self._load()
        self.claims: dict[str, dict] = saved.get("claims", {})          # agent -> its open claim
        self.director_at: int = saved.get("director_at", 0)             # verdicts when the director last fired
        self.started_at: float = saved.get("started_at") or time.time()
        self.halted = ""                    # a reason every agent stops for (Ctrl-C, a failed baseline); not saved
        self.baseline_runs: dict[int, str] = {}   # baseline run -> the agent training it (not saved: redone)
        self._rows: list = []
        self._size = -1
        self.done = self._done_fingerprints()   # fingerprint -> experiment number, from the repository
        self._save()

    # -- files ----------------------------------------------------------------

    def _load(self) -> dict:
        try:
            return json.loads((self.run_dir / LEDGER_FILE).read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise RuntimeError(f"{self.run_dir / LEDGER_FILE} is unreadable ({e}); it holds the campaign's open "
                               f"claims: fix or remove it (removing it renumbers unfinished experiments)") from None

    def _save(self) -> None:
        path = self.run_dir / LEDGER_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"claims": self.claims, "director_at": self.director_at,
                                   "started_at": self.started_at}, indent=1))
        with open(tmp) as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _done_fingerprints(self) -> dict[str, int]:
        refs = git(self.workspace.root, "for-each-ref", "--format=%(refname)", REF_PREFIX + "experiments/").split()
        first = git(self.workspace.root, "rev-list", "--max-parents=0", BEST_REF).split()[0]
        sources = {0: self.workspace.source(first)}                # the baseline: the first commit's code
        for ref in refs:
            sources[int(ref.rsplit("/", 1)[1])] = self.workspace.source(ref)
        # the earliest experiment with a given code is the one a duplicate is referred to
        return {fingerprint(text): number for number, text in sorted(sources.items(), reverse=True)}

    # -- reading ----------------------------------------------------------------

    def rows(self, iteration: int | None = None) -> list:
        """results.tsv's rows (re-read only when the file changed), or one experiment's."""
        size = self.results_path.stat().st_size if self.results_path.exists() else 0
        if size != self._size:
            self._rows, self._size = results.rows(self.results_path), size
        return self._rows if iteration is None else [r for r in self._rows if r.iteration == iteration]

    def best(self) -> dict:
        """The best code: its commit in the campaign's repository, its source and its mean val_bpb."""
        return {"commit": self.workspace.best_commit(), "source": self.workspace.source(BEST_REF),
                "mean": self.standing().best_mean}

    def standing(self) -> noise.Standing:
        """The best's runs and the campaign's seed noise, computed here: an agent of a parallel
        campaign gets these figures, not every row through Ray."""
        return noise.standing(self.rows())

    def spent(self) -> usage.Totals:
        """The LLM tokens the campaign's rows record (every session's)."""
        return usage.totals(self.rows())

    def history(self) -> str:
        return results.history_table(self.results_path)

    def in_flight(self, agent: str) -> list[dict]:
        """The other agents' open claims: number, agent, device, what they are trying, since when."""
        return [dict(claim, agent=name) for name, claim in sorted(self.claims.items()) if name != agent]

    def next_number(self) -> int:
        recorded = max((r.iteration for r in self.rows() if r.iteration is not None), default=0)
        return max([recorded, *(c["iteration"] for c in self.claims.values())]) + 1

    def verdicts(self) -> int:
        return sum(1 for r in self.rows() if r.is_verdict and r.iteration)

    def plateau(self) -> int:
        """Experiments with a verdict since the last keep or the director's last firing."""
        rows = [r for r in self.rows() if r.is_verdict and r.iteration]
        last_keep = max((i + 1 for i, r in enumerate(rows) if r.kept), default=0)
        return len(rows) - max(last_keep, self.director_at)

    # -- stopping and claiming -------------------------------------------------

    def halt(self, reason: str) -> None:
        """Every agent stops at its next stop check (Ctrl-C of a parallel campaign, a failed baseline)."""
        self.halted = self.halted or reason

    def stop_reason(self, started_at: float | None = None) -> str:
        """The campaign-wide stop conditions but --max-iterations (which `claim` applies)."""
        s = self.settings
        if self.halted:
            return self.halted
        if (self.run_dir / "STOP").exists():
            return "STOP file found in the run dir"
        started = min(started_at or self.started_at, self.started_at)
        if s.max_hours is not None and time.time() - started >= s.max_hours * 3600:
            return f"reached --max-hours {s.max_hours}"
        if s.max_llm_tokens is not None or s.max_llm_cost is not None:
            return self.llm_budget_spent()
        return ""

    def claim(self, agent: str, device: str, started_at: float | None = None) -> dict:
        """{"iteration": N}, the experiment `agent` works on next (its open claim, if it has one), or
        {"stop": reason} when the campaign must not start another."""
        reason = self.stop_reason(started_at)
        if reason:
            return {"stop": reason}
        if agent in self.claims:
            return {"iteration": self.claims[agent]["iteration"]}
        number = self.next_number()
        limit = self.settings.max_iterations
        if limit is not None and number > limit:
            return {"stop": f"reached --max-iterations {limit}"}
        self.claims[agent] = {"iteration": number, "device": device, "since": time.time(), "trying": ""}
        self._save()
        return {"iteration": number}

    def propose(self, agent: str, iteration: int, source: str) -> str:
        """Before a training run: "" if it may train `source`, else why not (the same code as an
        experiment done or in flight). The agent's claim then shows what it is trying."""
        mark = fingerprint(source)
        if mark in self.done and self.done[mark] != iteration:
            number = self.done[mark]
            verdict = next((r for r in reversed(self.rows(number)) if r.is_verdict), None)
            what = (f"experiment {number}" + (f" ({verdict.status}, val_bpb {verdict.mean or verdict.val_bpb or 0:.6f}: "
                                              f"{verdict.description})" if verdict else " (being judged)"))
            if number == 0:
                what = "the baseline"
            return (f"Refused: this train.py is the same code as {what}, after normalising whitespace and "
                    "comments. Its result is in the history; running it again measures nothing new. Make a "
                    "different change, then call run_training again.")
        for name, other in self.claims.items():
            if name != agent and other.get("fingerprint") == mark:
                return (f"Refused: agent {name} is training this same code right now (experiment "
                        f"{other['iteration']}: {other.get('trying') or 'no summary'}). Its result will be in the "
                        "history; try a different change, then call run_training again.")
        claim = self.claims.setdefault(agent, {"iteration": iteration, "device": "", "since": time.time()})
        claim.update(fingerprint=mark, trying=change_summary(self.workspace.source(BEST_REF), source))
        self._save()
        return ""

    def abandon(self, agent: str, why: str, device: str = "") -> results.Row | None:
        """An agent is gone (its process or node died, or a resumed campaign runs without it): its open
        claim becomes a crash row, so the experiment is on record and its number is not reused."""
        self.baseline_runs = {k: holder for k, holder in self.baseline_runs.items() if holder != agent}
        claim = self.claims.get(agent)
        if claim is None:
            return None
        rows = self.rows(claim["iteration"])
        if rows and rows[-1].is_verdict:
            row = rows[-1]
        else:
            row = self.record(agent, device or claim.get("device", ""), claim["iteration"], len(rows) + 1,
                              {"note": why, "description": f"agent {agent} lost: {why}"}, None, crashed=why)
        self.claims.pop(agent, None)
        self._save()
        return row

    def director_due(self, agent: str, patience: int) -> bool:
        """In a parallel campaign: the campaign's plateau has reached `patience` and `agent` is the one
        that runs the director now (the firing resets the count for every agent)."""
        if self.plateau() < patience:
            return False
        self.director_at = self.verdicts()
        self._save()
        return True

    def llm_budget_spent(self) -> str:
        """The --max-llm-tokens / --max-llm-cost stop, on results.tsv's totals (a resumed campaign
        counts what its earlier sessions spent)."""
        s = self.settings
        spent = self.spent()
        if s.max_llm_tokens is not None and spent.total >= s.max_llm_tokens:
            return (f"reached --max-llm-tokens {s.max_llm_tokens}: the campaign's LLM calls used {spent.total} tokens "
                    f"(agent {spent.agent}, director {spent.director})")
        cost = spent.cost(*s.llm_prices)
        if s.max_llm_cost is not None and cost is not None and cost >= s.max_llm_cost:
            return (f"reached --max-llm-cost {s.max_llm_cost}: the campaign's LLM calls cost ${cost:.4f} "
                    f"({spent.total} tokens at ${s.llm_price_in_per_mtok or 0}/${s.llm_price_out_per_mtok or 0} "
                    f"per million input/output tokens)")
        return ""

    # -- recording -------------------------------------------------------------

    def baseline_done(self) -> dict[int, results.Row]:
        """The baseline's recorded runs by run number: a row whose seed is run k's is run k; a row
        whose seed names no run (a stand-in's, an older campaign's) takes the lowest number left."""
        seeds = {noise.run_seed(self.settings.campaign, 0, k): k for k in range(1, self.noise_runs + 1)}
        done, unnamed = {}, []
        for r in self.rows(0):
            k = seeds.get(r.seed)
            if k is not None and k not in done:
                done[k] = r
            else:
                unnamed.append(r)
        free = [k for k in range(1, self.noise_runs + 1) if k not in done]
        done.update(zip(free, unnamed))
        return done

    def claim_baseline_run(self, agent: str) -> int:
        """The baseline run `agent` trains next (1..noise_runs, each on its own seed), or 0 when every
        run is recorded or being trained by another agent: in a parallel campaign the baseline's runs
        are spread over the agents."""
        done = self.baseline_done()
        for k in range(1, self.noise_runs + 1):
            if k not in done and self.baseline_runs.get(k, agent) == agent:
                self.baseline_runs[k] = agent
                return k
        rows = self.rows(0)
        if len(done) == self.noise_runs and rows[-1].status == results.MEASURE:
            return len(rows) + 1     # resumed with fewer --noise-runs: one more run closes the baseline
        return 0

    def record_baseline(self, agent: str, device: str, k: int, run: dict) -> results.Row:
        """Run `k` of the baseline (the campaign's first code), measured --noise-runs times: a
        `measure` row for each run but the last recorded, which is the baseline's keep with the mean
        of all. Idempotent: a run already recorded is returned."""
        run = RunResult(**run)
        recorded = self.baseline_done()
        if k in recorded:
            return recorded[k]
        done = self.rows(0)
        count = len(done) + 1
        values = [r.val_bpb for r in done if r.val_bpb is not None] + [run.val_bpb]
        measured = noise.Noise.pooled([values])
        if count < self.noise_runs:
            status, reason = results.MEASURE, f"baseline run {count} of {self.noise_runs} (measuring seed noise)"
        else:
            status = results.KEEP
            reason = f"baseline: mean of {count} run(s); " + (measured.describe() if count > 1 else
                                                              "--noise-runs 1: seed noise not measured")
        self.done.setdefault(fingerprint(self.workspace.source(BEST_REF)), 0)
        self._append({**_row(self.workspace.best_commit(), run, status, "baseline", 0,
                             noise.mean(values) if status == results.KEEP else None),
                      **_measured(run, count, values, measured, reason), "agent": agent, "gpu": device,
                      **(_tokens(None, None) if status == results.KEEP else {})})      # the baseline calls no LLM
        self.baseline_runs.pop(k, None)
        return self.rows(0)[-1]

    def compile_seeder(self) -> str:
        """The agent that trained the baseline's first run, whose compile caches seed the others'."""
        first = self.baseline_done().get(1)
        return first.agent if first is not None else ""

    def record(self, agent: str, device: str, iteration: int, attempt: int, outcome: dict, source: str | None,
               directive_short: str = "", director_usage: dict | None = None, crashed: str = "") -> results.Row:
        """Judge run `attempt` of experiment `iteration` (its `source`, as trained) against the best
        now, append its row, and on a keep make that code the campaign's best. Idempotent: a run
        already recorded (a judge killed after recording) is returned, not recorded twice."""
        rows = self.rows(iteration)
        if len(rows) >= attempt:
            self._release(agent, iteration, rows[attempt - 1])
            return rows[attempt - 1]
        run = RunResult(**outcome["run"]) if outcome.get("run") else None
        description = outcome.get("description") or "(no description)"
        recorded = self.rows()
        before = noise.standing(recorded)
        earlier = [r.val_bpb for r in rows if r.val_bpb is not None and r.status != results.CRASH]
        ref = EXPERIMENT_REF.format(iteration)
        sha = "-"
        if run is not None:
            sha = git(self.workspace.root, "rev-parse", "-q", "--verify", ref, check=False)
            if not sha and source is not None:
                sha = self.workspace.snapshot(source, f"experiment {iteration} ({agent})", ref)
            sha = sha or "-"
            if source is not None:
                self.done.setdefault(fingerprint(source), iteration)
        values, measured = earlier, before.noise
        if crashed:
            status, reason = results.CRASH, crashed
        elif run is None:
            status = results.NO_RUN
            reason = outcome.get("note") or "the agent did not train"
            if description != reason[:DESCRIPTION_CHARS]:   # no answer: the description is the note already
                description = f"{description} ({reason})"
        elif run.status != "ok":
            status = results.CRASH
            reason = (f"crashed ({run.status})" if attempt == 1 else
                      f"confirmation run {attempt} crashed ({run.status}): a change must train reliably to be kept")
        else:
            values = earlier + [run.val_bpb]
            measured = noise.standing(recorded, extra=(iteration, run.val_bpb)).noise
            decision = noise.decide(values, before.best, measured, self.noise_runs, self.settings.min_improvement,
                                    self.settings.confidence)
            status, reason = decision.status, decision.reason
        new_best = noise.mean(values) if status == results.KEEP else before.best_mean
        directive = outcome.get("directive")
        fault_point("judge-before-row")
        self._append({
            **_row(sha, run, status, description, iteration, new_best),
            **_measured(run, attempt, values, measured, reason),
            "directive": (directive_short or directive) if directive else "",
            "agent_choice": outcome.get("agent_choice", ""), "agent": agent, "gpu": device,
            **(_tokens(outcome.get("usage"), director_usage) if status != results.MEASURE else {}),
        })
        if status == results.KEEP:
            git(self.workspace.root, "update-ref", BEST_REF, sha)
        row = self.rows(iteration)[-1]
        self._release(agent, iteration, row)
        fault_point("judge-after-row")
        return row

    def _release(self, agent: str, iteration: int, row: results.Row) -> None:
        """A verdict closes the agent's claim on its experiment (also when it was on record already:
        an agent resumed into an experiment abandoned while it was gone must not claim it again)."""
        if row.is_verdict and self.claims.get(agent, {}).get("iteration") == iteration:
            del self.claims[agent]
            self._save()

    def _append(self, row: dict) -> None:
        results.append_row(self.results_path, row)


# -----------------------------------------------------------------------------
# The columns of a row

def _measured(run: RunResult | None, attempt: int, values: list, measured: noise.Noise, reason: str) -> dict:
    """The noise columns of a row: its seed, the experiment's runs so far, their mean, the campaign's σ."""
    m = noise.mean(values)
    return {"seed": run.seed if run and run.seed is not None else "", "runs": attempt if run else 0,
            "mean": f"{m:.6f}" if m is not None else "", "reason": reason,
            "sigma": f"{measured.sigma:.6f}" if measured.sigma is not None else ""}


def _tokens(agent: dict | None, director: dict | None) -> dict:
    """The token columns of an experiment's verdict row (a measure row leaves them empty)."""
    agent, director = usage.add(agent), usage.add(director)
    return {"agent_input_tokens": agent[usage.IN], "agent_output_tokens": agent[usage.OUT],
            "director_input_tokens": director[usage.IN], "director_output_tokens": director[usage.OUT]}


def _row(sha: str, run: RunResult | None, status: str, description: str, iteration: int, best) -> dict:
    m = run.metrics if run and run.status == "ok" else {}
    return {
        "commit": sha[:7] if sha and sha != "-" else "-",
        "val_bpb": f"{m.get('val_bpb', 0.0):.6f}",
        "memory_gb": f"{m.get('peak_vram_mb', 0.0) / 1024:.1f}",
        "status": status,
        "description": description,
        "iteration": iteration,
        "best_val_bpb": f"{best:.6f}" if best else "",
        "training_seconds": m.get("training_seconds", ""),
        "total_seconds": m.get("total_seconds", run.wall_seconds if run else ""),
        "sandbox": ("bwrap" if run.sandboxed else "none") if run else "",
    }


def fault_point(name: str) -> None:
    """Crash-test hook: with AUTORESEARCH_FAULT=<name>, die here as a kill -9 would."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
