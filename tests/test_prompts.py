"""Prompts are files: hot reload, override folder, clear errors."""

import shutil

import pytest

from graph.prompts import (
    AGENT_TASK,
    PACKAGED_DIR,
    PLACEHOLDERS,
    PromptError,
    directive_section,
    prompt_path,
    render_prompt,
    template_fields,
)

TASK_VALUES = dict(
    iteration=7,
    best_val_bpb="1.234567",
    best_runs=3,
    noise="σ = 0.0123 per run (9 repeated runs)",
    baseline_val_bpb="1.300000",
    history="| 1 | keep | MATRIX_LR: 0.04 -> 0.06 |",
    directive_section="",
    others="",
    stall="3 experiments without a new best.",
    max_agent_steps=12,
)


def test_packaged_prompts_use_exactly_their_documented_placeholders():
    for name, expected in PLACEHOLDERS.items():
        text = prompt_path(name).read_text()
        assert set(template_fields(text, name)) == set(expected), name


def test_agent_task_renders_with_all_values():
    text = render_prompt(AGENT_TASK, TASK_VALUES)
    assert "# Experiment 7" in text
    assert "1.234567" in text and "MATRIX_LR: 0.04 -> 0.06" in text
    assert "12 tool calls" in text
    assert "the mean of its 3 run(s)" in text and "σ = 0.0123 per run" in text


def test_unused_values_are_fine():
    text = render_prompt("director_summarize", {"train_py": "DEPTH = 8", "unused": "x"})
    assert text.startswith("<!-- step: summarize -->")
    assert "DEPTH = 8" in text


def test_hot_reload_reads_the_file_on_every_call(tmp_path):
    (tmp_path / "hello.md").write_text("first {who}\n")
    assert render_prompt("hello", {"who": "you"}, tmp_path) == "first you\n"
    (tmp_path / "hello.md").write_text("second {who}\n")
    assert render_prompt("hello.md", {"who": "you"}, tmp_path) == "second you\n"


def test_override_dir_wins_over_packaged_and_falls_back(tmp_path):
    (tmp_path / "agent_task.md").write_text("custom {iteration} {{literal}}")
    assert render_prompt(AGENT_TASK, TASK_VALUES, tmp_path) == "custom 7 {literal}"
    # A prompt the override folder lacks comes from the package.
    assert prompt_path("agent_system", tmp_path) == PACKAGED_DIR / "agent_system.md"


def test_missing_file_names_file_and_searched_dirs(tmp_path):
    with pytest.raises(PromptError) as e:
        render_prompt("no_such_prompt", {}, tmp_path)
    msg = str(e.value)
    assert "no_such_prompt.md" in msg
    assert str(tmp_path) in msg and str(PACKAGED_DIR) in msg


def test_unknown_placeholder_names_file_and_placeholder(tmp_path):
    shutil.copy(PACKAGED_DIR / "agent_task.md", tmp_path / "agent_task.md")
    path = tmp_path / "agent_task.md"
    path.write_text(path.read_text().replace("{best_val_bpb}", "{bestt_bpb}"))
    with pytest.raises(PromptError) as e:
        render_prompt(AGENT_TASK, TASK_VALUES, tmp_path)
    msg = str(e.value)
    assert "agent_task.md" in msg
    assert "{bestt_bpb}" in msg
    assert "best_val_bpb" in msg and "history" in msg  # lists what it could have been


def test_lone_brace_and_attribute_access_are_reported(tmp_path):
    (tmp_path / "bad.md").write_text("a lone { here")
    with pytest.raises(PromptError, match=r"bad\.md"):
        render_prompt("bad", {}, tmp_path)
    (tmp_path / "attr.md").write_text("{history.upper}")
    with pytest.raises(PromptError, match=r"plain names"):
        render_prompt("attr", {"history": "x"}, tmp_path)


def test_directive_section():
    assert directive_section(None) == ""
    assert directive_section("  ") == ""
    text = directive_section("I think you could try X.\nBecause Y.")
    assert "Directive from the director" in text
    assert "> I think you could try X.\n> Because Y." in text
