"""A scripted, local OpenAI-compatible server for tests (stdlib only, loopback only).

    with FakeOpenAI() as server:
        server.push(rate_limited(retry_after="1"), reply("hello"))
        model = ChatOpenAI(model="fake", api_key="sk-test", base_url=server.base_url, max_retries=0)
        ...
        server.requests[0].body["messages"]

It serves `POST /v1/chat/completions` (non-streaming) from a queue of scripted responses:
`reply`, `tool_calls_reply`, `error` / `rate_limited`, `delayed` and `drop`. When the queue is
empty it answers 400 "script exhausted", which is not retryable, so a test fails fast.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT_PATH = "/v1/chat/completions"


# -----------------------------------------------------------------------------
# scripted responses


@dataclass(frozen=True)
class Scripted:
    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to sleep before answering (past the client's timeout: a timeout)
    drop: bool = False  # close the connection without any response


def reply(content: str, *, model: str = "fake-model") -> Scripted:
    """A plain assistant message."""
    return Scripted(body=_completion({"role": "assistant", "content": content}, "stop", model))


def tool_calls_reply(*calls: tuple[str, dict[str, Any]], content: str | None = None,
                     model: str = "fake-model") -> Scripted:
    """An assistant message with tool calls, in the OpenAI wire format (arguments as JSON text)."""
    tool_calls = [
        {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
        for i, (name, args) in enumerate(calls, 1)
    ]
    message = {"role": "assistant", "content": content, "tool_calls": tool_calls}
    return Scripted(body=_completion(message, "tool_calls", model))


def error(status: int, message: str = "scripted error", headers: dict[str, str] | None = None) -> Scripted:
    kind = {400: "invalid_request_error", 401: "invalid_api_key", 404: "not_found_error",
            429: "rate_limit_exceeded"}.get(status, "server_error")
    return Scripted(status=status, body={"error": {"message": message, "type": kind, "code": kind}},
                    headers=headers or {})


def rate_limited(retry_after: str | None = "1", retry_after_ms: str | None = None) -> Scripted:
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    if retry_after_ms is not None:
        headers["retry-after-ms"] = retry_after_ms
    return error(429, "Rate limit reached, please slow down.", headers)


def delayed(seconds: float, then: Scripted | None = None) -> Scripted:
    then = then or reply("too late")
    return Scripted(status=then.status, body=then.body, headers=then.headers, delay=seconds)


def drop() -> Scripted:
    return Scripted(drop=True)


def _completion(message: dict[str, Any], finish_reason: str, model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


# -----------------------------------------------------------------------------
# the server


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: dict[str, Any]
    raw: str


class FakeOpenAI:
    def __init__(self) -> None:
        self.script: deque[Scripted] = deque()
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def push(self, *responses: Scripted) -> FakeOpenAI:
        with self._lock:
            self.script.extend(responses)
        return self

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _next(self, recorded: Recorded) -> Scripted:
        with self._lock:
            self.requests.append(recorded)
            return self.script.popleft() if self.script else error(400, "fake server: script exhausted")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8")
                try:
                    body = json.loads(raw) if raw else {}
                except json.JSONDecodeError:
                    body = {}
                recorded = Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body, raw)
                if self.path != CHAT_PATH:
                    with fake._lock:
                        fake.requests.append(recorded)
                    return self._send(error(404, f"fake server: no route {self.path}"))
                scripted = fake._next(recorded)
                if scripted.delay:
                    time.sleep(scripted.delay)
                if scripted.drop:
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                self._send(scripted)

            def _send(self, scripted: Scripted) -> None:
                payload = json.dumps(scripted.body or {}).encode("utf-8")
                try:
                    self.send_response(scripted.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in scripted.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

        return Handler


# -----------------------------------------------------------------------------
# a researcher over HTTP: the offline researcher and director answering any number of agents


class ResearcherServer(FakeOpenAI):
    """Answers every request from the offline models (graph/offline/) after `latency` seconds: a
    request with tools is the agent's (the offline researcher), one without is the director's. It
    keeps no script, so concurrent agents can share it: the parallel tests and GPU measurements.

        python -m tests.fake_openai --latency 5 --port 8123     # then OPENAI_BASE_URL=http://127.0.0.1:8123/v1
    """

    def __init__(self, latency: float = 0.0, port: int = 0) -> None:
        super().__init__()
        if port:
            self._server.server_close()
            self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
            self._server.daemon_threads = True
            self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self.latency = latency

    def _next(self, recorded: Recorded) -> Scripted:
        from langchain_openai.chat_models.base import _convert_dict_to_message, _convert_message_to_dict

        from graph.offline.director import OfflineDirector
        from graph.offline.models import OfflineResearcher, rough_usage

        with self._lock:
            self.requests.append(recorded)
        messages = [_convert_dict_to_message(m) for m in recorded.body.get("messages", [])]
        tools = tuple(t["function"]["name"] for t in recorded.body.get("tools") or [])
        model = OfflineResearcher(tool_names=tools) if tools else OfflineDirector()
        answer = model.respond(messages)
        answer = answer if not isinstance(answer, str) else _convert_dict_to_message({"role": "assistant",
                                                                                      "content": answer})
        message = _convert_message_to_dict(answer)
        body = _completion(message, "tool_calls" if message.get("tool_calls") else "stop", "scripted-researcher")
        used = rough_usage(messages, answer)
        body["usage"] = {"prompt_tokens": used["input_tokens"], "completion_tokens": used["output_tokens"],
                         "total_tokens": used["total_tokens"]}
        return Scripted(body=body, delay=self.latency)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="serve the offline researcher as an OpenAI-compatible endpoint")
    parser.add_argument("--latency", type=float, default=5.0, help="seconds before each answer")
    parser.add_argument("--port", type=int, default=8123)
    args = parser.parse_args()
    server = ResearcherServer(args.latency, args.port)
    print(f"serving the offline researcher on {server.base_url} ({args.latency:g} s a request)", flush=True)
    server._server.serve_forever(0.05)
