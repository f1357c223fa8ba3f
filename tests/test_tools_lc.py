"""tools/lc_tools.py: the LangChain tools as the model sees them (strings back, never exceptions)."""

import os

import pytest
from langchain_core.messages import ToolMessage

from helpers_tools import SAMPLE_TRAIN, make_workspace, snapshot
from graph.results import history_table
from tools import RunResult, make_tools

RESULTS_TSV = ("commit\tval_bpb\tmemory_gb\tstatus\tdescription\titeration\tbest_val_bpb\ttraining_seconds\t"
               "total_seconds\tdirective\tagent_choice\ttimestamp\n"
               "a1b2c3d\t0.997900\t44.0\tkeep\tbaseline\t0\t0.997900\t300.1\t325.9\t\t\t2025-01-01T00:00:00Z\n"
               "b2c3d4e\t0.993200\t44.2\tkeep\tincrease LR to 0.04\t1\t0.993200\t300.1\t325.5\t\t\t2025-01-01T00:06:00Z\n"
               "c3d4e5f\t1.005000\t44.0\tdiscard\tswitch to GeLU activation with a much longer description "
               "than fits\t2\t0.993200\t300.1\t325.0\t\t\t2025-01-01T00:12:00Z\n"
               "d4e5f6a\t0.000000\t0.0\tcrash\tdouble the width (OOM)\t3\t0.993200\t0\t20\t\t\t2025-01-01T00:14:00Z\n")


@pytest.fixture
def bound(tmp_path):
    ws = make_workspace(tmp_path)
    results = tmp_path / "run" / "results.tsv"
    results.parent.mkdir()
    results.write_text(RESULTS_TSV)
    tools = {t.name: t for t in make_tools(ws, results_path=results, logs_dir=tmp_path / "run" / "logs",
                                           history=lambda: history_table(results))}
    return ws, tools, tmp_path


def test_the_four_tools_and_their_schemas(bound):
    _, tools, _ = bound
    assert list(tools) == ["read_file", "apply_patch", "run_training", "read_metrics"]
    schema = tools["read_file"].tool_call_schema.model_json_schema()
    assert schema["required"] == ["path"] and set(schema["properties"]) == {"path", "start_line", "end_line"}
    assert tools["apply_patch"].tool_call_schema.model_json_schema()["required"] == ["patch"]
    assert tools["run_training"].tool_call_schema.model_json_schema().get("properties", {}) == {}
    for t in tools.values():
        assert len(t.description) > 100
    assert "<<<<<<< SEARCH" in tools["apply_patch"].description and "@@" in tools["apply_patch"].description
    assert "5 s" in tools["run_training"].description  # the campaign's budget, from harness.json


def test_read_file_tool(bound):
    ws, tools, tmp_path = bound
    out = tools["read_file"].invoke({"path": "train.py", "start_line": 4, "end_line": 5})
    assert out == "train.py (lines 4-5 of 33)\n     4\tDEPTH = 4\n     5\tLR = 0.02"
    assert "the frozen harness" in tools["read_file"].invoke({"path": "prepare.py"})


@pytest.mark.parametrize("args,error", [
    ({"path": "../outside.txt"}, "points outside the workspace"),
    ({"path": "/etc/passwd"}, "absolute path"),
    ({"path": "escape"}, "outside the workspace (a symlink?)"),
    ({"path": "nope.py"}, "does not exist"),
    ({"path": "train.py", "start_line": "abc"}, "invalid arguments (start_line: Input should be a valid integer"),
    ({"start_line": 3}, "invalid arguments (path: Field required"),
])
def test_read_file_tool_errors_are_strings_and_change_nothing(bound, args, error):
    ws, tools, tmp_path = bound
    (tmp_path / "outside.txt").write_text("secret")
    os.symlink(tmp_path / "outside.txt", ws.root / "escape")
    before = snapshot(ws)
    out = tools["read_file"].invoke(args)
    assert isinstance(out, str) and error in out and "secret" not in out
    assert snapshot(ws) == before


def test_apply_patch_tool(bound):
    ws, tools, _ = bound
    before = snapshot(ws)
    out = tools["apply_patch"].invoke({"patch": "prepare.py\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n"})
    assert out.startswith("Error: ") and "read-only" in out
    out = tools["apply_patch"].invoke({"patch": "@@ -5 +5 @@\n-LR = 0.9\n+LR = 0.1\n"})
    assert out.startswith("Error: hunk 1 does not match train.py")
    assert snapshot(ws) == before
    out = tools["apply_patch"].invoke({"patch": "--- train.py\n+++ train.py\n@@ -5 +5 @@\n-LR = 0.02\n+LR = 0.1\n"})
    assert out.startswith("Applied 1 edit to train.py") and "LR = 0.1" in (ws.root / "train.py").read_text()


@pytest.mark.slow
def test_run_training_tool_returns_the_result_as_artifact_and_read_metrics_reports_it(bound):
    ws, tools, tmp_path = bound
    assert tools["read_metrics"].invoke({}).startswith("No training run yet")
    msg = tools["run_training"].invoke({"type": "tool_call", "name": "run_training", "args": {}, "id": "call-1"})
    assert isinstance(msg, ToolMessage) and isinstance(msg.artifact, RunResult)
    # SAMPLE_TRAIN never calls H.finish: a crash with the clear sentence
    assert msg.artifact.status == "crash" and "must end by calling H.finish" in msg.content
    log_name = msg.artifact.log_path.rsplit("/", 1)[1]
    assert f"logs/{log_name}" in msg.content
    assert "done" in tools["read_file"].invoke({"path": f"logs/{log_name}"})
    assert log_name in tools["read_file"].invoke({"path": "logs"})

    report = tools["read_metrics"].invoke({})
    assert report.startswith("Last run:\nstatus: crash")
    assert report.endswith(history_table(tmp_path / "run" / "results.tsv"))   # the campaign's history, as given
    assert "   1 | 0.993200" in report and "increase LR to 0.04" in report


def test_read_metrics_without_results(tmp_path):
    ws = make_workspace(tmp_path, train_py=SAMPLE_TRAIN)
    [*_, read_metrics] = make_tools(ws, logs_dir=tmp_path / "logs")
    assert read_metrics.invoke({}) == "No training run yet: call run_training.\n\nNo experiments recorded yet."


def test_the_agents_runs_are_named_by_iteration(tmp_path, monkeypatch):
    """Campaign.tools(seed, iteration) names the k-th run_training call's log iter-NNNNN-agent-k."""
    from types import SimpleNamespace
    from graph.campaign import Campaign
    from tools import lc_tools
    names = []
    monkeypatch.setattr(lc_tools, "run_training",
                        lambda ws, **kw: names.append(kw["run_name"]) or RunResult("crash", "no"))
    ws = make_workspace(tmp_path)
    campaign = SimpleNamespace(workspace=ws, results_path=tmp_path / "results.tsv", logs_dir=tmp_path / "logs",
                               settings=SimpleNamespace(gpu=None, prestart=False, unsafe_no_sandbox=False),
                               on_progress=None, redactor=None, parallel=False,
                               ledger=SimpleNamespace(history=lambda: "(no experiments yet)"))
    tools = {t.name: t for t in Campaign.tools(campaign, seed=1, iteration=3)}
    for k in (1, 2):
        tools["run_training"].invoke({"type": "tool_call", "name": "run_training", "args": {}, "id": f"c{k}"})
    assert names == ["iter-00003-agent-1", "iter-00003-agent-2"]
    [*_, untitled, _] = make_tools(ws, logs_dir=tmp_path / "logs")     # no iteration: the supervisor's default
    untitled.invoke({"type": "tool_call", "name": "run_training", "args": {}, "id": "c3"})
    assert names[-1] is None
