"""climbmix shard downloads: resume after a broken transfer, retries on 5xx, clear failure on 404."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nanochat import download

PAYLOAD = bytes(range(256)) * 4096          # 1 MiB


class Server:
    """Serves PAYLOAD with Range support; the script says what each request gets."""

    def __init__(self, script):
        self.script, self.seen = list(script), []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.seen.append((self.path, rng))
                action = server.script.pop(0) if server.script else "ok"
                if action in (404, 500, 503):
                    self.send_response(action)
                    self.end_headers()
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                body = PAYLOAD[start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if action == "cut":          # half the body, then the connection dies
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.close()
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(download._fetch.retry, "wait", lambda *_: 0)


def test_resumes_a_broken_transfer_with_range(tmp_path):
    srv = Server(["cut", 503, "ok"])
    try:
        [path] = download.download_shards([7], tmp_path, srv.url, log=lambda s: None)
    finally:
        srv.close()
    assert path.name == "shard_00007.parquet" and path.read_bytes() == PAYLOAD
    assert srv.seen[0] == ("/shard_00007.parquet", None)
    assert srv.seen[-1][1] == f"bytes={len(PAYLOAD) // 2}-", srv.seen   # picked up where it broke
    assert not list(tmp_path.glob("*.part"))


def test_complete_shards_are_not_fetched_again(tmp_path):
    (tmp_path / "shard_00001.parquet").write_bytes(b"x")
    srv = Server([])
    try:
        download.download_shards([1], tmp_path, srv.url, log=lambda s: None)
    finally:
        srv.close()
    assert srv.seen == []


def test_missing_shard_is_a_clear_error(tmp_path):
    srv = Server([404])
    try:
        with pytest.raises(RuntimeError, match="HTTP 404"):
            download.download_shards([3], tmp_path, srv.url, log=lambda s: None)
    finally:
        srv.close()
    assert not (tmp_path / "shard_00003.parquet").exists()
