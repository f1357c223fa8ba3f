"""The ledger (graph/ledger.py) on its own: numbering and claims that survive a restart, verdicts
against the best at judge time when two agents improve at once, duplicate refusal, a lost agent's
experiment recorded as a crash. No training: runs are RunResult dicts with the val_bpb given."""

from dataclasses import asdict

import pytest

from graph import results
from graph.configuration import Settings
from graph.ledger import LEDGER_FILE, WORKSPACE_DIR, Ledger, fingerprint
from nanochat.config import HarnessConfig, render_train_py
from tools import RunResult, Workspace
from tools.workspace import BEST_REF, git

BASELINE = [1.000, 1.010, 0.990]          # σ ≈ 0.01 from the baseline's three runs


def run(val_bpb: float, seed: int = 1) -> dict:
    return asdict(RunResult(status="ok", message="", metrics={"val_bpb": val_bpb, "training_seconds": 5.0,
                                                               "total_seconds": 9.0}, seed=seed))


@pytest.fixture
def ledger(tmp_path):
    config = HarnessConfig(profile="cpu", data="builtin", time_budget=5)
    Workspace.create(tmp_path / WORKSPACE_DIR, config)
    settings = Settings(campaign="t", runs_dir=tmp_path, offline=True, max_iterations=10)
    book = Ledger(tmp_path, settings, noise_runs=3)
    for k, value in enumerate(BASELINE, start=1):
        book.record_baseline("a1", "0", k, run(value, seed=k))
    return book


def template(change: str = "") -> str:
    return render_train_py("cpu") + change


def test_claims_are_distinct_kept_across_a_restart_and_bounded_by_max_iterations(ledger, tmp_path):
    assert ledger.claim("a1", "0") == {"iteration": 1}
    assert ledger.claim("a2", "1") == {"iteration": 2}
    assert ledger.claim("a1", "0") == {"iteration": 1}           # its open claim, not a new number
    reopened = Ledger(tmp_path, ledger.settings, noise_runs=3)   # the driver killed and resumed
    assert reopened.claim("a2", "1") == {"iteration": 2}
    assert reopened.claim("a3", "0") == {"iteration": 3}
    assert [c["agent"] for c in reopened.in_flight("a1")] == ["a2", "a3"]
    limited = Ledger(tmp_path, ledger.settings.model_copy(update={"max_iterations": 3}), noise_runs=3)
    assert limited.claim("a4", "1") == {"stop": "reached --max-iterations 3"}
    (tmp_path / "STOP").touch()
    assert limited.claim("a1", "0") == {"stop": "STOP file found in the run dir"}


def test_a_keep_is_judged_against_the_best_at_judge_time(ledger):
    """Two agents start from the baseline (mean 1.000); a1 confirms 0.900 and becomes the best; a2's
    0.950, which beats the baseline by 5σ, is compared with 0.900 and discarded."""
    for agent in ("a1", "a2"):
        ledger.claim(agent, "0")
    a1, a2 = template("\nA1 = 1\n"), template("\nA2 = 2\n")
    assert ledger.propose("a1", 1, a1) == "" and ledger.propose("a2", 2, a2) == ""
    assert ledger.record("a2", "1", 2, 1, {"run": run(0.950), "description": "a2"}, a2).status == results.MEASURE
    for k, value in enumerate([0.900, 0.905, 0.895], start=1):
        row = ledger.record("a1", "0", 1, k, {"run": run(value, seed=k), "description": "a1"}, a1)
    assert row.status == results.KEEP and row.mean == pytest.approx(0.900)
    assert ledger.best()["source"] == a1 and ledger.best()["mean"] == pytest.approx(0.900)
    row = ledger.record("a2", "1", 2, 2, {"run": run(0.955, seed=2), "description": "a2"}, a2)
    assert row.status == results.DISCARD
    assert "0.900" in row.reason                      # compared with a1's new best, not the baseline
    assert ledger.best()["source"] == a1
    assert git(ledger.workspace.root, "rev-parse", BEST_REF).startswith(
        git(ledger.workspace.root, "rev-parse", "refs/autoresearch/experiments/00001"))
    rows = ledger.rows()
    assert [(r.iteration, r.runs, r.agent, r.gpu) for r in rows[3:]] == [
        (2, 1, "a2", "1"), (1, 1, "a1", "0"), (1, 2, "a1", "0"), (1, 3, "a1", "0"), (2, 2, "a2", "1")]
    assert ledger.in_flight("") == []                 # both verdicts closed their claims


def test_record_is_idempotent(ledger):
    ledger.claim("a1", "0")
    first = ledger.record("a1", "0", 1, 1, {"run": run(1.2), "description": "worse"}, template("\nX = 1\n"))
    again = ledger.record("a1", "0", 1, 1, {"run": run(1.2), "description": "worse"}, template("\nX = 1\n"))
    assert first == again and len(ledger.rows(1)) == 1


def test_duplicates_of_done_or_in_flight_code_are_refused(ledger):
    ledger.claim("a1", "0")
    ledger.claim("a2", "1")
    assert "the baseline" in ledger.propose("a1", 1, template())          # the unchanged code
    code = template("\nLR = 0.5\n")
    assert ledger.propose("a1", 1, code) == ""
    assert ledger.propose("a1", 1, code) == ""                            # its own run, again: allowed
    refused = ledger.propose("a2", 2, template("\n# another comment\nLR  =  0.5   \n\n"))
    assert "agent a1 is training this same code" in refused and "+LR = 0.5" in refused
    ledger.record("a1", "0", 1, 1, {"run": run(1.2), "description": "lr 0.5"}, code)
    assert "experiment 1 (discard" in ledger.propose("a2", 2, code)
    assert ledger.propose("a2", 2, template("\nLR = 0.6\n")) == ""
    reopened = Ledger(ledger.run_dir, ledger.settings, noise_runs=3)       # rebuilt from the repository
    assert "experiment 1" in reopened.propose("a3", 3, code)
    assert fingerprint("x = 1\n  y = 2\n") != fingerprint("x = 1\ny = 2\n")   # indentation is code


def test_a_lost_agent_s_experiment_is_a_crash_and_its_number_is_not_reused(ledger):
    ledger.claim("a1", "0")
    assert ledger.claim("a2", "1") == {"iteration": 2}
    row = ledger.abandon("a2", "its process died (node lost)")
    assert row.iteration == 2 and row.status == results.CRASH and "node lost" in row.reason
    assert row.agent == "a2" and row.gpu == "1"
    assert ledger.abandon("a2", "again") is None
    # a2 resumed from its checkpoint carries on with experiment 2 (2026-11-30: it looped on it): its
    # run is refused nothing, but judging it finds the crash row and releases the number
    assert ledger.propose("a2", 2, template("\nX = 2\n")) == ""
    assert ledger.record("a2", "1", 2, 1, {"run": run(0.5), "description": "late"}, template("\nX = 2\n")) == row
    assert ledger.claim("a2", "1") == {"iteration": 3}
    assert [r.iteration for r in ledger.rows() if r.iteration == 2] == [2]
    assert '"a2"' in (ledger.run_dir / LEDGER_FILE).read_text()


def test_the_campaign_plateau_fires_the_director_once_for_all_agents(ledger):
    for number in (1, 2, 3):
        agent = f"a{number}"
        ledger.claim(agent, "0")
        ledger.record(agent, "0", number, 1, {"run": run(1.3), "description": "worse"}, template(f"\nX = {number}\n"))
    assert ledger.plateau() == 3
    assert ledger.director_due("a1", 3) is True
    assert ledger.director_due("a2", 3) is False          # a1 fired it: the count starts again
    assert ledger.plateau() == 0


def test_the_baseline_runs_are_spread_over_the_agents(tmp_path):
    """Each agent claims a different baseline run; runs recorded out of order give measure rows,
    then one keep with the mean of all; a lost agent's run goes back to the others."""
    from graph.noise import run_seed
    Workspace.create(tmp_path / WORKSPACE_DIR, HarnessConfig(profile="cpu", data="builtin", time_budget=5))
    book = Ledger(tmp_path, Settings(campaign="b", runs_dir=tmp_path, offline=True), noise_runs=3)
    assert [book.claim_baseline_run(a) for a in ("a1", "a2", "a3", "a1")] == [1, 2, 3, 1]
    assert book.claim_baseline_run("a4") == 0                    # every run is taken
    book.abandon("a3", "its process died")
    assert book.claim_baseline_run("a4") == 3
    seed = {k: run_seed("b", 0, k) for k in (1, 2, 3)}
    assert book.record_baseline("a2", "1", 2, run(1.02, seed[2])).status == results.MEASURE
    assert book.record_baseline("a2", "1", 2, run(1.02, seed[2])).runs == 1          # idempotent
    assert book.record_baseline("a4", "0", 3, run(0.98, seed[3])).status == results.MEASURE
    keep = book.record_baseline("a1", "0", 1, run(1.00, seed[1]))
    assert keep.status == results.KEEP and keep.runs == 3 and keep.mean == pytest.approx(1.0)
    assert book.claim_baseline_run("a2") == 0
    assert book.compile_seeder() == "a1"                          # it trained run 1 (seed_compile_cache)


def test_baseline_runs_whose_seeds_name_no_run_still_count(ledger, tmp_path):
    """A stand-in's runs all carry one seed (the fixture's ledger recorded seeds 1, 2, 3): they are
    runs 1..3 in order, so nothing is left to claim and nothing is recorded twice."""
    assert sorted(ledger.baseline_done()) == [1, 2, 3]
    assert ledger.claim_baseline_run("a1") == 0
    assert ledger.record_baseline("a1", "0", 2, run(5.0, seed=1)).val_bpb == pytest.approx(1.010)
    assert len(ledger.rows(0)) == 3
    Workspace.create(tmp_path / "other" / WORKSPACE_DIR, HarnessConfig(profile="cpu", data="builtin", time_budget=5))
    book = Ledger(tmp_path / "other", Settings(campaign="s", runs_dir=tmp_path, offline=True), noise_runs=2)
    assert book.claim_baseline_run("a1") == 1
    book.record_baseline("a1", "0", 1, run(1.0, seed=None))
    assert book.claim_baseline_run("a1") == 2
    assert book.record_baseline("a1", "0", 2, run(1.1, seed=None)).status == results.KEEP
    assert book.claim_baseline_run("a1") == 0
