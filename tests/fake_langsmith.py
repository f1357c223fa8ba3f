"""A local stand-in for the LangSmith API, for tests (stdlib only, loopback only).

    with FakeLangSmith() as server:
        monkeypatch.setenv("LANGSMITH_ENDPOINT", server.url)
        ...                                   # trace something, flush the client
        server.runs                           # {run id: merged run fields}
        server.raw                            # every request body received, as text

It answers what langsmith's `Client` calls while tracing:

- `GET /info`                 server info; `multipart=False` makes the client fall back to /runs/batch,
                              `compression=False` turns off zstd
- `POST /runs/multipart`      multipart/form-data (zstd-compressed or not): parts `post.<id>`,
                              `patch.<id>`, `post.<id>.inputs`, ...
- `POST /runs/batch`          `{"post": [...], "patch": [...]}`
- `POST /runs`, `PATCH /runs/<id>`   one run at a time (auto_batch_tracing=False)

A run's fields are merged in arrival order (a patch overrides its post's fields), so `runs` holds
each run as the server would store it. Anything else is answered `{}` and recorded.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class FakeLangSmith:
    def __init__(self, *, multipart: bool = True, compression: bool = True) -> None:
        self.multipart = multipart
        self.compression = compression    # zstd-compressed multipart, as LangSmith itself accepts
        self.requests: list[Received] = []
        self.runs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def raw(self) -> str:
        """Everything the server received (method, path and body of each request), as text."""
        with self._lock:
            return "\n".join(f"{r.method} {r.path}\n{r.text}" for r in self.requests)

    def start(self) -> FakeLangSmith:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeLangSmith:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- the tree

    def children(self, parent_id: str | None) -> list[dict[str, Any]]:
        """The runs under `parent_id` (None: the roots), in dotted order (start order)."""
        with self._lock:
            kids = [r for r in self.runs.values() if _str(r.get("parent_run_id")) == _str(parent_id)]
        return sorted(kids, key=lambda r: r.get("dotted_order") or "")

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            found = [r for r in self.runs.values() if r.get("name") == name]
        return sorted(found, key=lambda r: r.get("dotted_order") or "")

    # -- ingestion

    def _merge(self, op: str, run: dict[str, Any]) -> None:
        run_id = _str(run.get("id"))
        with self._lock:
            stored = self.runs.setdefault(run_id, {"id": run_id})
            for key, value in run.items():
                if key == "extra" and isinstance(value, dict) and isinstance(stored.get("extra"), dict):
                    stored["extra"] = {**stored["extra"], **value}
                elif value is not None or key not in stored:
                    stored[key] = value
            stored.setdefault("_ops", []).append(op)

    def _ingest_multipart(self, content_type: str, body: bytes) -> None:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        parts: dict[str, dict[str, Any]] = {}
        order: list[tuple[str, str]] = []
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            op, run_id, *field = name.split(".", 2)
            if op not in ("post", "patch"):
                continue    # attachments, feedback
            key = (op, run_id)
            if key not in parts:
                parts[key] = {"id": run_id}
                order.append(key)
            value = json.loads(payload) if payload else None
            if field:
                parts[key][field[0]] = value
            else:
                parts[key].update(value or {})
        for op, run_id in order:
            self._merge(op, parts[(op, run_id)])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _read(self) -> Received:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = b""
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        body += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "zstd":
                    import zstandard
                    body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
                headers = {k.lower(): v for k, v in self.headers.items()}
                received = Received(self.command, self.path, headers, body)
                with fake._lock:
                    fake.requests.append(received)
                return received

            def do_GET(self) -> None:
                self._read()
                if self.path.split("?")[0].rstrip("/").endswith("/info"):
                    config = {"use_multipart_endpoint": fake.multipart, "size_limit": 100,
                              "size_limit_bytes": 20_000_000, "scale_up_nthreads_limit": 16,
                              "scale_up_qsize_trigger": 1000, "scale_down_nempty_trigger": 4}
                    flags = {"zstd_compression_enabled": fake.compression}
                    return self._send(200, {"version": "0.10.0", "instance_flags": flags,
                                            "batch_ingest_config": config})
                self._send(200, {})

            def do_POST(self) -> None:
                r = self._read()
                path = r.path.split("?")[0].rstrip("/")
                if path.endswith("/runs/multipart"):
                    if not fake.multipart:
                        return self._send(404, {"detail": "not found"})
                    fake._ingest_multipart(r.headers.get("content-type", ""), r.body)
                elif path.endswith("/runs/batch"):
                    data = json.loads(r.body or b"{}")
                    for op in ("post", "patch"):
                        for run in data.get(op) or []:
                            fake._merge(op, run)
                elif path.endswith("/runs"):
                    fake._merge("post", json.loads(r.body or b"{}"))
                self._send(200, {})

            def do_PATCH(self) -> None:
                r = self._read()
                path = r.path.split("?")[0].rstrip("/")
                if "/runs/" in path:
                    fake._merge("patch", {**json.loads(r.body or b"{}"), "id": path.rsplit("/", 1)[1]})
                self._send(200, {})

            def _send(self, status: int, body: dict[str, Any]) -> None:
                payload = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
