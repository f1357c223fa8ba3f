"""invoke_with_retry over a real HTTP round trip (a scripted local server), and make_models."""

import json
import time
import types

import openai
import pytest
from fake_openai import FakeOpenAI, delayed, drop, error, rate_limited, reply, tool_calls_reply
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool

from graph.configuration import Credentials, Settings
from graph.llm import (
    DEEPSEEK_BASE_URL,
    LLMUnavailable,
    chat_model,
    describe_error,
    invoke_with_retry,
    make_models,
    redact,
    retry_after_seconds,
)
from graph.offline import OFFLINE_LABEL, OfflineDirector, OfflineResearcher

KEY = "sk-test-0123456789abcdef"
FAST = dict(initial_wait=0.01, max_wait=0.05)  # tests don't sleep through real back-off


@pytest.fixture
def server():
    with FakeOpenAI() as s:
        yield s


@pytest.fixture
def model(server):
    return chat_model(model="fake-model", api_key=KEY, base_url=server.base_url, timeout=1.0)


def retries():
    seen = []
    return seen, lambda attempt, wait, summary: seen.append((attempt, wait, summary))


# -----------------------------------------------------------------------------
# retries


def test_plain_reply(server, model):
    server.push(reply("hello"))
    out = invoke_with_retry(model, [SystemMessage("be brief"), HumanMessage("hi")], max_attempts=3)
    assert isinstance(out, AIMessage) and out.content == "hello"
    (req,) = server.requests
    assert req.body["model"] == "fake-model"
    assert [m["role"] for m in req.body["messages"]] == ["system", "user"]


def test_completes_despite_429_500_timeout_and_drop(server, model):
    server.push(
        error(500, "upstream exploded"),
        rate_limited(retry_after=None, retry_after_ms="20"),
        delayed(2.0, reply("late")),  # past the 1 s client timeout
        drop(),
        error(503),
        reply("finally"),
    )
    seen, on_retry = retries()
    out = invoke_with_retry(model, [HumanMessage("hi")], max_attempts=6, on_retry=on_retry, **FAST)
    assert out.content == "finally"
    assert [s for _, _, s in seen] == [
        "500 server error", "429 rate limited", "timeout", "connection error", "503 server error",
    ]
    assert [a for a, _, _ in seen] == [1, 2, 3, 4, 5]
    assert seen[1][1] >= 0.02  # retry-after-ms honoured
    assert len(server.requests) == 6


def test_retry_after_is_honoured(server, model):
    server.push(rate_limited(retry_after="1"), reply("ok"))
    seen, on_retry = retries()
    started = time.monotonic()
    out = invoke_with_retry(model, [HumanMessage("hi")], max_attempts=3, on_retry=on_retry, **FAST)
    elapsed = time.monotonic() - started
    assert out.content == "ok"
    assert elapsed >= 0.95
    assert seen == [(1, pytest.approx(1.0, abs=0.06), "429 rate limited")]


def test_retry_after_is_capped(server, model):
    server.push(rate_limited(retry_after="3600"), reply("ok"))
    seen, on_retry = retries()
    invoke_with_retry(model, [HumanMessage("hi")], max_attempts=2, on_retry=on_retry, max_retry_after=0.1, **FAST)
    assert seen[0][1] <= 0.1


@pytest.mark.parametrize("status, exc", [(401, openai.AuthenticationError), (400, openai.BadRequestError),
                                         (404, openai.NotFoundError)])
def test_client_errors_are_not_retried(server, model, status, exc):
    server.push(error(status), reply("never reached"))
    seen, on_retry = retries()
    with pytest.raises(exc):
        invoke_with_retry(model, [HumanMessage("hi")], max_attempts=5, on_retry=on_retry, **FAST)
    assert len(server.requests) == 1 and seen == []


def test_exhaustion_raises_llm_unavailable_with_a_clear_message(server, model):
    server.push(*[error(500, f"Incorrect API key provided: {KEY}. Overloaded.")] * 3)
    seen, on_retry = retries()
    with pytest.raises(LLMUnavailable) as e:
        invoke_with_retry(model, [HumanMessage("hi")], max_attempts=3, on_retry=on_retry, **FAST)
    msg = str(e.value)
    assert msg.startswith("LLM unavailable after 3 attempts")
    assert "500 server error" in msg and "Overloaded" in msg
    assert KEY not in msg and "sk-test" not in msg
    assert e.value.attempts == 3 and e.value.last_error == "500 server error"
    assert len(server.requests) == 3 and len(seen) == 2


def test_key_travels_only_in_the_authorization_header(server, model):
    server.push(reply("hi"))
    invoke_with_retry(model, [HumanMessage("hello")], max_attempts=1)
    (req,) = server.requests
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in req.raw
    assert all(KEY not in v for k, v in req.headers.items() if k != "authorization")
    assert KEY not in repr(model)


def test_tool_calls_round_trip(server, model):
    @tool
    def read_file(path: str, start_line: int = 1, end_line: int | None = None) -> str:
        """Read a file of the workspace with numbered lines."""
        return ""

    @tool
    def run_training() -> str:
        """Train train.py for the time budget."""
        return ""

    server.push(tool_calls_reply(("read_file", {"path": "train.py"}), ("run_training", {})), reply("done"))
    bound = model.bind_tools([read_file, run_training])
    out = invoke_with_retry(bound, [HumanMessage("go")], max_attempts=2)
    assert [(c["name"], c["args"]) for c in out.tool_calls] == [("read_file", {"path": "train.py"}), ("run_training", {})]
    assert out.tool_calls[0]["id"] == "call_1"
    sent = server.requests[0].body
    assert [t["function"]["name"] for t in sent["tools"]] == ["read_file", "run_training"]

    # The tool results go back in the OpenAI format.
    followup = [HumanMessage("go"), out, ToolMessage("  1| DEPTH = 8", tool_call_id="call_1"),
                ToolMessage("status: ok", tool_call_id="call_2")]
    assert invoke_with_retry(bound, followup, max_attempts=2).content == "done"
    messages = server.requests[1].body["messages"]
    assert messages[1]["tool_calls"][0]["function"] == {"name": "read_file", "arguments": json.dumps({"path": "train.py"})}
    assert messages[2] == {"role": "tool", "tool_call_id": "call_1", "content": "  1| DEPTH = 8"}


def test_offline_models_go_through_the_same_call():
    out = invoke_with_retry(OfflineResearcher().bind_tools([]), [HumanMessage("# Experiment 1")], max_attempts=1)
    assert out.tool_calls[0]["name"] == "read_file"


def test_retry_after_parsing():
    def err(headers):
        return types.SimpleNamespace(response=types.SimpleNamespace(headers=headers))

    assert retry_after_seconds(err({"retry-after": "2"})) == 2.0
    assert retry_after_seconds(err({"retry-after-ms": "250", "retry-after": "9"})) == 0.25
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= retry_after_seconds(err({"retry-after": future})) <= 31
    assert retry_after_seconds(err({"retry-after": "soon"})) is None
    assert retry_after_seconds(err({})) is None
    assert retry_after_seconds(ValueError("no response")) is None


def test_redaction():
    assert redact(f"key {KEY} and Bearer abc.def-123456 ok") == "key *** and *** ok"
    assert redact("token=hunter2-secret", ["hunter2-secret"]) == "token=***"
    assert describe_error(ValueError(f"bad {KEY}")) == "ValueError: bad ***"


# -----------------------------------------------------------------------------
# make_models

KEY_NAMES = ["OPENAI_API_KEY", "OPENAI_BASE_URL", "DEEPSEEK_API_KEY"]


@pytest.fixture
def no_keys(tmp_path, monkeypatch):
    for name in KEY_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env
    return monkeypatch


def test_offline_without_keys(no_keys):
    models = make_models(Settings())
    assert models.offline and models.label == OFFLINE_LABEL
    assert isinstance(models.agent, OfflineResearcher) and isinstance(models.director, OfflineDirector)


def test_offline_flag_wins_over_keys(no_keys):
    no_keys.setenv("DEEPSEEK_API_KEY", "sk-deepseek-secret-1")
    models = make_models(Settings(offline=True))
    assert models.offline and models.provider == "offline" and isinstance(models.agent, OfflineResearcher)


def test_deepseek_defaults(no_keys):
    no_keys.setenv("DEEPSEEK_API_KEY", "sk-deepseek-secret-1")
    settings = Settings(llm_timeout=33, director_temperature=0.7)
    models = make_models(settings)
    assert not models.offline and models.provider == "deepseek"
    assert models.label == "deepseek-chat @ api.deepseek.com"
    assert (models.agent.model_name, models.director.model_name, models.reasoner.model_name) == (
        "deepseek-chat", "deepseek-chat", "deepseek-reasoner")
    assert models.agent.openai_api_base == DEEPSEEK_BASE_URL
    assert models.agent.max_retries == 0 and models.agent.request_timeout == 33
    assert models.director.temperature == 0.7 and models.agent.temperature is None
    assert models.agent.openai_api_key.get_secret_value() == "sk-deepseek-secret-1"
    for text in (repr(settings), str(settings), str(settings.model_dump()), models.label, repr(models.agent)):
        assert "sk-deepseek-secret-1" not in text


def test_deepseek_overrides(no_keys):
    no_keys.setenv("DEEPSEEK_API_KEY", "sk-deepseek-secret-1")
    models = make_models(Settings(agent_model="deepseek-reasoner", reasoner_model="r1"))
    assert (models.agent.model_name, models.director.model_name, models.reasoner.model_name) == (
        "deepseek-reasoner", "deepseek-chat", "r1")


def test_openai_compatible_endpoint(no_keys):
    no_keys.setenv("OPENAI_API_KEY", "sk-openai-secret-2")
    no_keys.setenv("OPENAI_BASE_URL", "http://localhost:8000/v1")
    models = make_models(Settings(agent_model="qwen3-32b"))
    assert models.provider == "openai-compatible"
    assert models.label == "qwen3-32b @ localhost:8000"
    assert models.agent.openai_api_base == "http://localhost:8000/v1"
    # One model served: the director and reasoner follow --agent-model unless given.
    assert models.director.model_name == "qwen3-32b" and models.reasoner.model_name == "qwen3-32b"


def test_base_url_flag_beats_env_and_defaults_apply(no_keys):
    no_keys.setenv("OPENAI_API_KEY", "sk-openai-secret-2")
    no_keys.setenv("OPENAI_BASE_URL", "http://env-host:1/v1")
    models = make_models(Settings(base_url="https://openrouter.ai/api/v1", director_model="big"))
    assert models.agent.openai_api_base == "https://openrouter.ai/api/v1"
    assert (models.agent.model_name, models.director.model_name) == ("gpt-4.1-mini", "big")


def test_openai_key_alone_uses_api_openai_com(no_keys):
    no_keys.setenv("OPENAI_API_KEY", "sk-openai-secret-2")
    models = make_models(Settings())
    assert models.provider == "openai" and models.label == "gpt-4.1-mini @ api.openai.com"


def test_explicit_credentials_and_dotenv(no_keys, tmp_path):
    (tmp_path / ".env").write_text("DEEPSEEK_API_KEY=sk-from-dotenv-3\n")
    assert make_models(Settings()).provider == "deepseek"
    settings = Settings().with_credentials(Credentials(_env_file=None, openai_api_key="sk-x-4", openai_base_url="http://h:9/v1"))
    assert make_models(settings).provider == "openai-compatible"


def test_make_models_talks_to_the_fake_server(no_keys, server):
    no_keys.setenv("OPENAI_API_KEY", KEY)
    server.push(reply("from the director"))
    models = make_models(Settings(base_url=server.base_url, agent_model="fake-model", llm_timeout=2))
    out = invoke_with_retry(models.director, [HumanMessage("<!-- step: directive -->")], max_attempts=2)
    assert out.content == "from the director"
    assert server.requests[0].body["model"] == "fake-model"
    assert server.requests[0].body["temperature"] == 1.0
