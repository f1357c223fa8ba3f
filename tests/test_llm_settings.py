"""Settings: CLI > AUTORESEARCH_* env > .env > defaults; keys never printed."""

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from graph.configuration import Settings, date_tag, parse_settings

ENV_NAMES = [
    "OPENAI_API_KEY", "OPENAI_BASE_URL", "DEEPSEEK_API_KEY",
    "AUTORESEARCH_PLATEAU_PATIENCE", "AUTORESEARCH_DATA", "AUTORESEARCH_MAX_ITERATIONS",
    "AUTORESEARCH_OFFLINE", "AUTORESEARCH_AGENT_MODEL",
]


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No keys or settings from the developer's shell, and a cwd without a .env."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults(clean_env):
    s = parse_settings([])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}-\d{4}", s.campaign)
    assert s.runs_dir == Path("runs")
    assert s.max_iterations is None and s.time_budget is None and s.profile is None
    assert s.plateau_patience == 3 and s.max_agent_steps == 12
    assert s.offline is False and s.resume is False
    assert "cs.LG" in s.arxiv_categories and "scaling laws" in s.arxiv_terms
    assert s.llm_timeout == 120 and s.llm_max_attempts == 6


def test_cli_flags(clean_env):
    s = parse_settings([
        "--campaign", "night1", "--runs-dir", "out", "--resume", "--max-iterations", "5",
        "--max-hours", "8", "--time-budget", "60", "--profile", "cpu", "--data", "climbmix",
        "--plateau-patience", "4", "--base-url", "http://localhost:8000/v1",
        "--agent-model", "a", "--director-model", "d", "--reasoner-model", "r", "--offline",
        "--max-agent-steps", "9", "--min-improvement", "0.001", "--prompts-dir", "p", "--gpu", "1",
    ])
    assert (s.campaign, s.runs_dir, s.resume, s.max_iterations) == ("night1", Path("out"), True, 5)
    assert (s.max_hours, s.time_budget, s.profile, s.data) == (8.0, 60.0, "cpu", "climbmix")
    assert (s.plateau_patience, s.base_url) == (4, "http://localhost:8000/v1")
    assert (s.agent_model, s.director_model, s.reasoner_model) == ("a", "d", "r")
    assert (s.offline, s.max_agent_steps, s.min_improvement) == (True, 9, 0.001)
    assert (s.prompts_dir, s.gpu) == (Path("p"), "1")


def test_precedence_cli_env_dotenv_default(clean_env, monkeypatch):
    (clean_env / ".env").write_text(
        "AUTORESEARCH_PLATEAU_PATIENCE=5\nAUTORESEARCH_DATA=from-dotenv\nAUTORESEARCH_MAX_ITERATIONS=7\n"
        "SOMETHING_ELSE=ignored\n"
    )
    monkeypatch.setenv("AUTORESEARCH_PLATEAU_PATIENCE", "6")
    monkeypatch.setenv("AUTORESEARCH_DATA", "from-env")
    s = parse_settings(["--plateau-patience", "8"])
    assert s.plateau_patience == 8  # CLI beats env
    assert s.data == "from-env"  # env beats .env
    assert s.max_iterations == 7  # .env beats default
    assert s.max_agent_steps == 12  # default


def test_bool_env_and_no_flag(clean_env, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_OFFLINE", "true")
    assert parse_settings([]).offline is True
    assert parse_settings(["--no-offline"]).offline is False


def test_help_lists_options_with_descriptions(clean_env, capsys):
    with pytest.raises(SystemExit) as e:
        parse_settings(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m graph.run")
    for flag in ["--campaign", "--time-budget", "--plateau-patience", "--offline", "--prompts-dir", "--gpu"]:
        assert flag in out
    assert "api-key" not in out.lower() and "api_key" not in out.lower()


def test_bad_argument_exits(clean_env, capsys):
    with pytest.raises(SystemExit) as e:
        parse_settings(["--plateau-patience", "zero"])
    assert e.value.code == 2


def test_keys_read_without_prefix_and_never_shown(clean_env, monkeypatch):
    (clean_env / ".env").write_text("DEEPSEEK_API_KEY=sk-dotenv-deepseek-123\n")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-openai-456")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:9/v1")
    s = parse_settings(["--campaign", "x"])
    creds = s.credentials
    assert creds.openai_api_key.get_secret_value() == "sk-env-openai-456"
    assert creds.deepseek_api_key.get_secret_value() == "sk-dotenv-deepseek-123"
    assert creds.openai_base_url == "http://localhost:9/v1"
    for text in (repr(s), str(s), str(s.model_dump()), s.model_dump_json(), repr(creds), str(creds)):
        assert "sk-env-openai-456" not in text
        assert "sk-dotenv-deepseek-123" not in text
    # The keys are not settings, so not in the dump at all; copies keep them.
    assert not any("key" in k for k in s.model_dump())
    assert s.model_copy(update={"campaign": "y"}).credentials.secrets() == creds.secrets()


def test_keys_are_not_accepted_on_the_command_line(clean_env):
    with pytest.raises(SystemExit):
        parse_settings(["--openai-api-key", "sk-cli"])


def test_date_tag_format():
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}-\d{4}", date_tag())


def test_direct_construction_does_not_parse_sys_argv(clean_env, monkeypatch):
    monkeypatch.setattr("sys.argv", ["prog", "--campaign", "from-argv"])
    assert Settings(campaign="direct").campaign == "direct"


def test_resolve_profile(clean_env):
    from graph.configuration import resolve_profile

    assert resolve_profile(Settings(profile="gpu-small")) == "gpu-small"
    assert resolve_profile(Settings()) in {"cpu", "h100"}


@pytest.mark.parametrize("name", ["../escape", "a/../../escape2", "/tmp/abs", "..", ".hidden", "-x", "a b",
                                  "x" * 101, ""])
def test_a_campaign_name_is_one_plain_folder(clean_env, monkeypatch, capsys, name):
    """A name with a path in it would put the run dir outside --runs-dir."""
    with pytest.raises(SystemExit) as e:
        parse_settings([f"--campaign={name}"])
    assert e.value.code == 2
    assert "plain folder name" in capsys.readouterr().err
    monkeypatch.setenv("AUTORESEARCH_CAMPAIGN", name)   # the environment too: LangGraph Studio reads only that
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize("name", ["night1", "2026-11-30-0605", "a.b_c-d", "_x", "x" * 100])
def test_plain_campaign_names_are_accepted(clean_env, name):
    assert parse_settings(["--campaign", name]).campaign == name


def test_help_shows_the_campaign_default_in_words(clean_env, capsys):
    with pytest.raises(SystemExit):
        parse_settings(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "default factory" not in out
    assert "(default: the date and time, e.g. 2026-11-30-0605)" in out
