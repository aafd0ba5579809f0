#!/usr/bin/env python3
"""Mock OpenAI-compatible upstream for llm-api-guard tests and the demo (stdlib only).

Library use::

    from mock_upstream import MockUpstream          # scripts/ on sys.path
    with MockUpstream() as up:                       # port 0: the OS picks one, see up.port
        up.set_document("/keyset.json", {"keys": []})
        ...
        up.requests()                                # every non-control request seen so far

CLI use::

    python scripts/mock_upstream.py --port 18000 --document /keyset.json=run/keyset.json

A document given as a file is re-read on every GET, so edits to the file take effect at once.

Endpoints (HTTP/1.1 with keep-alive; request bodies read by content-length or chunked):

- ``POST /v1/chat/completions``: a chat completion with ``usage``. ``prompt_tokens`` is
  ``ceil(chars / 4)`` (at least 1) over the text of all messages, ``completion_tokens`` is
  ``min(max_completion_tokens or max_tokens or 16, 16)`` (at least 1), total = sum. The answer's
  content is that many words. ``"stream": true`` answers SSE (``text/event-stream``, chunked):
  a role chunk, one chunk per word, a finish chunk, a chunk with ``usage`` and empty ``choices``
  (always sent, as OpenAI does with ``stream_options.include_usage``), then ``data: [DONE]``.
  A body that is not a JSON object answers 400 with an OpenAI-style error.
- ``GET /v1/models``: a model list (gpt-4o-mini, gpt-4o).
- ``ANY /echo`` and ``/echo/<anything>``: 200 JSON ``{method, path, headers, body_length,
  body_sha256}``; ``headers`` is a dict with lower-cased names, repeated headers joined with
  ``", "``; ``path`` includes the query string. Query ``status=N`` changes the status and
  ``delay_ms=N`` (at most 10000) delays the answer.
- ``ANY /fail``: 500, a Python stack trace as text/plain, and the leaky headers
  ``server: gunicorn/19.9.0``, ``x-powered-by: Express``, ``x-debug-info: db=10.0.0.5``.
- ``GET /healthz``, ``/health``, ``/ready``: 200 ``ok``.
- Documents: a GET (or HEAD) of a registered document path returns it (default
  ``content-type: application/json``) with its configured status. Documents win over the built-in
  endpoints.
- Anything else: 404 JSON.

Control API (tests call the mock directly; these requests are not recorded):

- ``PUT /__control/documents?path=/keyset.json&status=200[&content_type=...]``: body = content
- ``DELETE /__control/documents?path=/keyset.json``
- ``GET /__control/requests``: JSON list of recorded requests
- ``POST /__control/reset``: clear the recorded requests

Every recorded request is a dict ``{method, path, headers, body_length, body_sha256, time}``
(``time`` is ``time.time()`` when the request was fully read).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import signal
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODELS = ["gpt-4o-mini", "gpt-4o"]
_WORDS = ("This is a deterministic answer from the mock upstream used by the "
          "llm api guard tests and demo").split()
MAX_COMPLETION_TOKENS = 16

FAKE_TRACEBACK = """Traceback (most recent call last):
  File "/srv/app/venv/lib/python3.9/site-packages/gunicorn/workers/sync.py", line 136, in handle
    self.handle_request(listener, req, client, addr)
  File "/srv/app/api/views.py", line 42, in chat_completions
    row = db.execute("SELECT * FROM api_keys WHERE key = %s", (key,))
  File "/srv/app/api/db.py", line 17, in execute
    raise OperationalError("could not connect to server at 10.0.0.5:5432")
psycopg2.OperationalError: could not connect to server at 10.0.0.5:5432
"""


class _Document:
    __slots__ = ("content", "file", "status", "content_type")

    def __init__(self, content: bytes | None, file: str | None, status: int, content_type: str):
        self.content = content
        self.file = file
        self.status = status
        self.content_type = content_type

    def body(self) -> bytes | None:
        if self.file is None:
            return self.content
        try:
            with open(self.file, "rb") as f:
                return f.read()
        except OSError:
            return None


def _to_bytes(content: Any) -> bytes:
    if isinstance(content, bytes):
        return content
    if isinstance(content, str):
        return content.encode()
    return json.dumps(content).encode()


def _message_chars(messages: Any) -> int:
    n = 0
    if not isinstance(messages, list):
        return 0
    for m in messages:
        if not isinstance(m, dict):
            continue
        c = m.get("content")
        if isinstance(c, str):
            n += len(c)
        elif isinstance(c, list):
            for part in c:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    n += len(part["text"])
    return n


def usage_for(request: dict) -> dict:
    """The deterministic ``usage`` the mock reports for a chat completion request body."""
    prompt = max(1, math.ceil(_message_chars(request.get("messages")) / 4))
    limit = request.get("max_completion_tokens", request.get("max_tokens"))
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        limit = MAX_COMPLETION_TOKENS
    completion = max(1, min(limit, MAX_COMPLETION_TOKENS))
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, mock: "MockUpstream"):
        self.mock = mock
        self.open_sockets: set[socket.socket] = set()
        self.sock_lock = threading.Lock()
        super().__init__(addr, handler)

    def process_request(self, request, client_address):
        with self.sock_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.sock_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def close_all_connections(self):
        with self.sock_lock:
            socks = list(self.open_sockets)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-upstream/1.0"
    sys_version = ""
    server: _Server

    # ---- plumbing -------------------------------------------------------------------------
    def log_message(self, format, *args):  # noqa: A002 - signature from the base class
        if self.server.mock.verbose:
            sys.stderr.write("mock_upstream: " + (format % args) + "\n")

    def version_string(self):
        return getattr(self, "_server_header", None) or self.server_version

    def _read_body(self) -> bytes:
        te = (self.headers.get("transfer-encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("eof in chunked body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)  # CRLF after the chunk
            return b"".join(chunks)
        length = self.headers.get("content-length")
        if length:
            return self.rfile.read(int(length))
        return b""

    def _headers_dict(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in self.headers.items():
            k = k.lower()
            out[k] = f"{out[k]}, {v}" if k in out else v
        return out

    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, extra: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", extra)

    def _error(self, status: int, message: str, type_: str = "invalid_request_error",
               code: str | None = None) -> None:
        self._json(status, {"error": {"message": message, "type": type_, "code": code,
                                      "param": None}})

    # ---- dispatch -------------------------------------------------------------------------
    def _handle(self) -> None:
        self._server_header = None
        try:
            body = self._read_body()
        except (ValueError, ConnectionError):
            self.close_connection = True
            self._error(400, "bad request body")
            return
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        query = urllib.parse.parse_qs(url.query)
        mock = self.server.mock
        if path.startswith("/__control/"):
            self._control(path, query, body)
            return
        headers = self._headers_dict()
        mock._record({"method": self.command, "path": self.path, "headers": headers,
                      "body_length": len(body), "body_sha256": hashlib.sha256(body).hexdigest(),
                      "time": time.time()})

        if self.command in ("GET", "HEAD"):
            doc = mock._document(path)
            if doc is not None:
                content = doc.body()
                if content is None:
                    self._error(404, f"document file {doc.file} is missing", "not_found")
                else:
                    self._send(doc.status, content, doc.content_type)
                return

        if path == "/v1/chat/completions":
            if self.command != "POST":
                self._error(405, "use POST")
                return
            self._chat(body)
        elif path == "/v1/models" and self.command in ("GET", "HEAD"):
            self._json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 1700000000, "owned_by": "mock"}
                for m in MODELS]})
        elif path == "/echo" or path.startswith("/echo/"):
            delay = min(int((query.get("delay_ms") or ["0"])[0]), 10000)
            if delay > 0:
                time.sleep(delay / 1000)
            status = int((query.get("status") or ["200"])[0])
            self._json(status, {"method": self.command, "path": self.path, "headers": headers,
                                "body_length": len(body),
                                "body_sha256": hashlib.sha256(body).hexdigest()})
        elif path == "/fail":
            self._server_header = "gunicorn/19.9.0"
            self._send(500, FAKE_TRACEBACK.encode(), "text/plain; charset=utf-8",
                       {"x-powered-by": "Express", "x-debug-info": "db=10.0.0.5"})
        elif path in ("/healthz", "/health", "/ready") and self.command in ("GET", "HEAD"):
            self._send(200, b"ok", "text/plain")
        else:
            self._error(404, f"no route for {self.command} {path}", "not_found", "not_found")

    def _control(self, path: str, query: dict, body: bytes) -> None:
        mock = self.server.mock
        if path == "/__control/documents":
            doc_path = (query.get("path") or [""])[0]
            if not doc_path.startswith("/"):
                self._error(400, "query parameter path=/... is required")
                return
            if self.command == "PUT":
                status = int((query.get("status") or ["200"])[0])
                ctype = (query.get("content_type") or ["application/json"])[0]
                mock.set_document(doc_path, body, status=status, content_type=ctype)
                self._json(200, {"ok": True})
                return
            if self.command == "DELETE":
                mock.delete_document(doc_path)
                self._json(200, {"ok": True})
                return
        elif path == "/__control/requests" and self.command == "GET":
            self._json(200, mock.requests())
            return
        elif path == "/__control/reset" and self.command == "POST":
            mock.reset()
            self._json(200, {"ok": True})
            return
        self._error(404, f"no control route {self.command} {path}")

    def _chat(self, body: bytes) -> None:
        try:
            req = json.loads(body or b"null")
        except ValueError:
            req = None
        if not isinstance(req, dict):
            self._error(400, "request body must be a JSON object")
            return
        usage = usage_for(req)
        model = req.get("model") if isinstance(req.get("model"), str) else MODELS[0]
        words = [_WORDS[i % len(_WORDS)] for i in range(usage["completion_tokens"])]
        cid = "chatcmpl-mock%08d" % (self.server.mock._next_id())
        created = int(time.time())
        if req.get("stream") is True:
            self._stream(cid, created, model, words, usage)
            return
        self._json(200, {
            "id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": " ".join(words)}}],
            "usage": usage})

    def _stream(self, cid: str, created: int, model: str, words: list[str], usage: dict) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

        def chunk(choices: list, extra: dict | None = None) -> None:
            obj = {"id": cid, "object": "chat.completion.chunk", "created": created,
                   "model": model, "choices": choices}
            if extra:
                obj.update(extra)
            self._write_chunk(b"data: " + json.dumps(obj).encode() + b"\n\n")

        delay = self.server.mock.stream_delay
        chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for i, w in enumerate(words):
            if delay:
                time.sleep(delay)
            text = w if i == 0 else " " + w
            chunk([{"index": 0, "delta": {"content": text}, "finish_reason": None}])
        chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        chunk([], {"usage": usage})
        self._write_chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle


class MockUpstream:
    """The mock upstream as a library object. Thread-safe; ``port=0`` lets the OS choose.

    ``stream_delay`` (seconds) is slept before each SSE content chunk (default 0).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, verbose: bool = False,
                 stream_delay: float = 0.0):
        self.host = host
        self._want_port = port
        self.verbose = verbose
        self.stream_delay = stream_delay
        self._lock = threading.Lock()
        self._docs: dict[str, _Document] = {}
        self._log: list[dict] = []
        self._ids = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> "MockUpstream":
        if self._server is not None:
            return self
        self._server = _Server((self.host, self._want_port), _Handler, self)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name=f"mock-upstream:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        srv, self._server = self._server, None
        if srv is None:
            return
        srv.shutdown()
        srv.close_all_connections()
        srv.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "MockUpstream":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("MockUpstream is not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ---- documents ------------------------------------------------------------------------
    def set_document(self, path: str, content: bytes | str | dict | list, *, status: int = 200,
                     content_type: str = "application/json") -> None:
        """Serve ``content`` (bytes, str, or a JSON-able object) at GET ``path``."""
        with self._lock:
            self._docs[path] = _Document(_to_bytes(content), None, status, content_type)

    def set_document_file(self, path: str, file: str | os.PathLike, *, status: int = 200,
                          content_type: str = "application/json") -> None:
        """Serve the file's current content at GET ``path`` (re-read on every request)."""
        with self._lock:
            self._docs[path] = _Document(None, os.fspath(file), status, content_type)

    def delete_document(self, path: str) -> None:
        with self._lock:
            self._docs.pop(path, None)

    def _document(self, path: str) -> _Document | None:
        with self._lock:
            return self._docs.get(path)

    # ---- request log ----------------------------------------------------------------------
    def _record(self, entry: dict) -> None:
        with self._lock:
            self._log.append(entry)

    def _next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    def requests(self, path: str | None = None) -> list[dict]:
        """Copy of the recorded requests, optionally only those whose path (without the query)
        equals ``path``."""
        with self._lock:
            log = list(self._log)
        if path is not None:
            log = [r for r in log if r["path"].split("?", 1)[0] == path]
        return log

    def reset(self) -> None:
        with self._lock:
            self._log.clear()

    def wait_for_requests(self, n: int, path: str | None = None,
                          timeout: float = 5.0) -> list[dict]:
        """Wait until at least ``n`` requests (to ``path`` if given) were recorded; return them.
        Raises TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.requests(path)
            if len(got) >= n:
                return got
            if time.monotonic() > deadline:
                where = path or "any path"
                raise TimeoutError(f"mock upstream saw {len(got)} request(s) to {where}, "
                                   f"expected {n}")
            time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18000)
    ap.add_argument("--document", action="append", default=[], metavar="PATH=FILE",
                    help="serve FILE (re-read on every GET) at PATH; repeatable")
    ap.add_argument("--stream-delay", type=float, default=0.0,
                    help="seconds slept before each SSE content chunk")
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = ap.parse_args(argv)

    up = MockUpstream(args.host, args.port, verbose=args.verbose, stream_delay=args.stream_delay)
    for spec in args.document:
        path, sep, file = spec.partition("=")
        if not sep or not path.startswith("/") or not file:
            ap.error(f"--document wants /PATH=FILE, got {spec!r}")
        up.set_document_file(path, file)
    up.start()
    print(f"mock_upstream: listening on {up.url}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    up.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
