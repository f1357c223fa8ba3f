"""Which chat models a campaign talks to, and how one call survives a flaky API.

`make_models(settings)` picks the provider from the keys found (see `Credentials`):

1. `--offline`, or no key at all          -> the built-in offline researcher/director (no LLM)
2. OPENAI_API_KEY + a base URL             -> any OpenAI-compatible endpoint (`--base-url` or
                                              $OPENAI_BASE_URL): vLLM, Ollama, OpenRouter, ...
3. DEEPSEEK_API_KEY                        -> https://api.deepseek.com (or `--base-url`)
4. OPENAI_API_KEY alone                    -> api.openai.com

Default models per provider are in `OPENAI_DEFAULTS` / `DEEPSEEK_DEFAULTS`; `--agent-model`,
`--director-model`, `--reasoner-model` override them. On a custom endpoint (case 2) a given
`--agent-model` is also the director's and reasoner's default: such servers usually serve one model.

The clients never retry on their own (`max_retries=0`): `invoke_with_retry` owns the policy, so
the UI can show every wait and the graph gets one clear `LLMUnavailable` when the API is down.
"""

from __future__ import annotations

import email.utils
import functools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import httpx
import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_base, wait_exponential_jitter

from graph.configuration import Settings
from graph.offline import OFFLINE_LABEL, OfflineDirector, OfflineResearcher
from tools.redact import Redactor

# -----------------------------------------------------------------------------
# constants

DEEPSEEK_BASE_URL = "https://api.deepseek.com"
OPENAI_PUBLIC_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class ModelDefaults:
    agent: str
    director: str
    reasoner: str


# deepseek-chat does tool calls well and cheaply; deepseek-reasoner has no tool calls but thinks.
DEEPSEEK_DEFAULTS = ModelDefaults(agent="deepseek-chat", director="deepseek-chat", reasoner="deepseek-reasoner")
# A cheap, reliable tool caller for the many agent steps; a stronger model for the rare director
# step; a reasoning model for the slow steps.
OPENAI_DEFAULTS = ModelDefaults(agent="gpt-4.1-mini", director="gpt-4.1", reasoner="o4-mini")

# Retry policy. 408/409/429 and 5xx are the statuses the OpenAI SDK itself treats as transient.
RETRY_STATUSES = frozenset({408, 409, 429})
INITIAL_WAIT = 1.0  # seconds, doubled each attempt, with as much jitter
MAX_WAIT = 60.0  # the back-off never waits longer than this...
MAX_RETRY_AFTER = 300.0  # ...but a server's Retry-After is honoured up to this

# Transport errors that mean "try again" (openai wraps most of them, but not always).
_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    openai.APITimeoutError,
    openai.APIConnectionError,
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    TimeoutError,
    ConnectionError,
)
try:  # recent openai clients are built on httpx2, whose exceptions are separate classes
    import httpx2

    _TRANSIENT_ERRORS += (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError)
except ImportError:  # pragma: no cover - depends on the openai version
    pass

_TIMEOUT_ERRORS = tuple(e for e in _TRANSIENT_ERRORS if "Timeout" in e.__name__)


# -----------------------------------------------------------------------------
# models


@dataclass(frozen=True)
class Models:
    """The chat models of a campaign. `label` is for display; it never contains a key."""

    agent: BaseChatModel
    director: BaseChatModel
    reasoner: BaseChatModel
    offline: bool
    label: str
    provider: str = "offline"  # offline | openai | openai-compatible | deepseek


def offline_models() -> Models:
    return Models(
        agent=OfflineResearcher(),
        director=OfflineDirector(),
        reasoner=OfflineDirector(),
        offline=True,
        label=OFFLINE_LABEL,
        provider="offline",
    )


def make_models(settings: Settings) -> Models:
    """The agent, director and reasoner chat models the settings and keys call for."""
    if settings.offline:
        return offline_models()
    creds = settings.credentials
    openai_key, deepseek_key = creds.openai_api_key, creds.deepseek_api_key
    openai_url = settings.base_url or creds.openai_base_url
    if openai_key and openai_key.get_secret_value() and openai_url:
        provider, key, url, defaults = "openai-compatible", openai_key, openai_url, OPENAI_DEFAULTS
    elif deepseek_key and deepseek_key.get_secret_value():
        provider, key, url, defaults = "deepseek", deepseek_key, settings.base_url or DEEPSEEK_BASE_URL, DEEPSEEK_DEFAULTS
    elif openai_key and openai_key.get_secret_value():
        provider, key, url, defaults = "openai", openai_key, OPENAI_PUBLIC_URL, OPENAI_DEFAULTS
    else:
        return offline_models()   # no OPENAI_API_KEY or DEEPSEEK_API_KEY

    follow_agent = provider == "openai-compatible" and settings.agent_model
    names = {
        "agent": settings.agent_model or defaults.agent,
        "director": settings.director_model or (settings.agent_model if follow_agent else defaults.director),
        "reasoner": settings.reasoner_model or (settings.agent_model if follow_agent else defaults.reasoner),
    }

    def chat(name: str, temperature: float | None = None) -> BaseChatModel:
        return chat_model(
            model=name, api_key=key.get_secret_value(), base_url=url,
            timeout=settings.llm_timeout, temperature=temperature,
        )

    return Models(
        agent=chat(names["agent"]),
        director=chat(names["director"], settings.director_temperature),
        reasoner=chat(names["reasoner"]),
        offline=False,
        label=f"{names['agent']} @ {display_host(url)}",
        provider=provider,
    )


def chat_model(*, model: str, api_key: str, base_url: str | None, timeout: float,
               temperature: float | None = None) -> BaseChatModel:
    """One OpenAI-compatible chat client, built the same way for the graph and the tests."""
    from langchain_openai import ChatOpenAI  # lazy: offline campaigns never need it

    return ChatOpenAI(
        model=model,
        api_key=api_key,
        base_url=base_url,
        timeout=timeout,
        max_retries=0,  # retries are ours (invoke_with_retry)
        temperature=temperature,  # None: the server's default (reasoning models refuse others)
        use_responses_api=False,  # chat completions: what every OpenAI-compatible server speaks
    )


def display_host(url: str | None) -> str:
    """`https://user:pw@api.deepseek.com/v1` -> `api.deepseek.com` (never credentials)."""
    if not url:
        return "api.openai.com"
    parsed = urlparse(url if "://" in url else f"http://{url}")
    host = parsed.hostname or "custom endpoint"
    return f"{host}:{parsed.port}" if parsed.port else host


# -----------------------------------------------------------------------------
# retries


class LLMUnavailable(RuntimeError):
    """The LLM could not be reached after every attempt. The graph records it and goes on."""

    def __init__(self, message: str, *, attempts: int, last_error: str, elapsed: float,
                 last_exception: BaseException | None = None):
        super().__init__(message)
        self.attempts = attempts
        self.last_error = last_error  # the short summary, e.g. "429 rate limited"
        self.elapsed = elapsed
        self.last_exception = last_exception  # unredacted: for code, not for printing


OnRetry = Callable[[int, float, str], Any]  # (failed attempt number, seconds to wait, summary)


def invoke_with_retry(
    model: BaseChatModel | Runnable,
    messages: Sequence[BaseMessage] | Any,
    *,
    max_attempts: int,
    on_retry: OnRetry | None = None,
    initial_wait: float = INITIAL_WAIT,
    max_wait: float = MAX_WAIT,
    max_retry_after: float = MAX_RETRY_AFTER,
    secrets: Iterable[str] = (),
    config: RunnableConfig | None = None,
    redactor: Redactor | None = None,
) -> BaseMessage:
    """`model.invoke(messages)`, retried on 429, 5xx, timeouts and connection errors.

    Works as well with `models.agent.bind_tools(tools)`. Waits grow exponentially with jitter,
    and never less than a server's `Retry-After` / `retry-after-ms` (capped at `max_retry_after`).
    Other errors (400, 401, 404, ...) propagate at once. After `max_attempts` failures raises
    `LLMUnavailable`; its message names the last error with any key masked (`secrets` adds
    exact strings to mask on top of the key-shaped patterns). `config` is passed to
    `model.invoke`: inside a graph node, the node's config, so every attempt is traced under it.

    With a `redactor` (the campaign's), the model gets a redacted copy of the messages
    (`redact_messages`): no secret, nor an encoding of one, reaches the provider.
    """
    secrets = [s for s in secrets if s]
    scrub = redactor or Redactor()
    scrub = scrub.extended(secrets) if secrets else scrub
    if redactor is not None:
        messages = redact_messages(messages, scrub)
    started = time.monotonic()

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None:
            error = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            on_retry(state.attempt_number, wait, describe_error(error, scrub))

    retrying = Retrying(
        stop=stop_after_attempt(max_attempts),
        wait=WaitRetryAfter(
            wait_exponential_jitter(multiplier=initial_wait, max=max_wait, jitter=initial_wait),
            cap=max_retry_after,
        ),
        retry=retry_if_exception(is_retryable),
        before_sleep=before_sleep,
    )
    try:
        return retrying(model.invoke, messages, config)
    except RetryError as e:
        error = e.last_attempt.exception()
        summary = describe_error(error, scrub)
        detail = error_detail(error, scrub)
        elapsed = time.monotonic() - started
        message = f"LLM unavailable after {max_attempts} attempts in {elapsed:.0f} s; last error: {summary}"
        if detail:
            message += f" ({detail})"
        # `from None`: a chained traceback would print the server's raw text, which may echo a key.
        raise LLMUnavailable(message, attempts=max_attempts, last_error=summary, elapsed=elapsed,
                             last_exception=error) from None


class WaitRetryAfter(wait_base):
    """The back-off, but at least what the server asked for in Retry-After (capped)."""

    def __init__(self, backoff: wait_base, cap: float = MAX_RETRY_AFTER):
        self.backoff = backoff
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = self.backoff(retry_state)
        error = retry_state.outcome.exception() if retry_state.outcome else None
        asked = retry_after_seconds(error)
        if asked is not None:
            wait = max(wait, min(asked, self.cap))
        return wait


def is_retryable(error: BaseException) -> bool:
    if isinstance(error, openai.APIStatusError):
        return error.status_code in RETRY_STATUSES or error.status_code >= 500
    return isinstance(error, _TRANSIENT_ERRORS)


def retry_after_seconds(error: BaseException | None) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms`, then `retry-after`), if any."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:  # Retry-After may be an HTTP date
            parsed = email.utils.parsedate_tz(value)
            if parsed is None:
                continue
            seconds = email.utils.mktime_tz(parsed) - time.time()
        if seconds == seconds and seconds >= 0:  # not NaN, not in the past
            return seconds
    return None


def describe_error(error: BaseException | None, secrets: Iterable[str] | Redactor = ()) -> str:
    """A short, key-free summary for the UI: '429 rate limited', '503 server error', 'timeout'."""
    if error is None:
        return "unknown error"
    if isinstance(error, openai.APIStatusError):
        code = error.status_code
        if code == 429:
            return "429 rate limited"
        if code >= 500:
            return f"{code} server error"
        reason = getattr(error.response, "reason_phrase", "") or type(error).__name__
        return f"{code} {reason}".strip()
    if isinstance(error, _TIMEOUT_ERRORS):
        return "timeout"
    if isinstance(error, _TRANSIENT_ERRORS):
        return "connection error"
    return redact(f"{type(error).__name__}: {error}", secrets)[:200]


def error_detail(error: BaseException | None, secrets: Iterable[str] | Redactor = ()) -> str:
    """The server's own words for a status error (redacted, one line, short), else ''."""
    if not isinstance(error, openai.APIStatusError):
        return ""
    body = error.body
    message = body.get("message") if isinstance(body, dict) else None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message", message)
    text = " ".join(str(message or error.message or "").split())
    return redact(text, secrets)[:200]


def redact(text: str, secrets: Iterable[str] | Redactor = ()) -> str:
    """Mask known secrets (a list of values, or a whole `Redactor`), their encodings, and anything
    shaped like an API key or bearer token (tools/redact.py)."""
    if isinstance(secrets, Redactor):
        return secrets.text(text)
    return _redactor(tuple(s for s in secrets if s)).text(text)


@functools.lru_cache(maxsize=32)
def _redactor(secrets: tuple[str, ...]) -> Redactor:
    return Redactor(secrets)


def redact_messages(messages: Any, redactor: Redactor) -> Any:
    """A copy of what is about to be sent to a chat model, every text in it redacted as the model
    sees text (`assignments=False`: code such as `flops_per_token = ...` stays as it is).

    Messages keep their type and ids; string content and the text of content parts, an AI
    message's tool-call arguments (parsed and raw) and additional kwargs are redacted. Also takes
    a string, a prompt value, or (role, text) tuples, as `invoke` does."""
    if isinstance(messages, str):
        return redactor.text(messages, assignments=False)
    if isinstance(messages, PromptValue):
        messages = messages.to_messages()
    if isinstance(messages, BaseMessage):
        return _redact_message(messages, redactor)
    if not isinstance(messages, (list, tuple)):
        return messages
    out = []
    for m in messages:
        if isinstance(m, BaseMessage):
            m = _redact_message(m, redactor)
        elif isinstance(m, (str, dict, list)):
            m = redactor(m, assignments=False)
        elif isinstance(m, tuple):      # ("human", "text")
            m = tuple(redactor(list(m), assignments=False))
        out.append(m)
    return out


def _redact_message(message: BaseMessage, redactor: Redactor) -> BaseMessage:
    def clean(value):
        return redactor(value, assignments=False)

    update: dict[str, Any] = {"content": clean(message.content),
                              "additional_kwargs": clean(message.additional_kwargs)}
    if isinstance(message, AIMessage):
        update["tool_calls"] = [{**call, "args": clean(call.get("args") or {})} for call in message.tool_calls]
        update["invalid_tool_calls"] = [{**call, "args": clean(call.get("args"))} for call in message.invalid_tool_calls]
    return message.model_copy(update=update)
