"""Helpers shared by the filter tests: the key CLI, key/record arithmetic done independently in
Python (format, checksum, peppered hash), log parsing, stat polling and a tiny slow document
server.

Everything here is independent of the Rust code: keys and hashes are recomputed from the
documented formats (``lag_<12 base32 id>_<52 base32 secret><7 base32 CRC-32>``,
``hmac-sha256:<base64url-nopad(HMAC-SHA-256(pepper, key))>``), so a test that compares them with
what the CLI or the filter produce checks the contract, not the implementation against itself.
"""
from __future__ import annotations

import base64
import calendar
import email.utils
import hashlib
import hmac
import json
import os
import re
import secrets
import subprocess
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from harness import CLI_PATH, PEPPER_ENV, TEST_PEPPER

KEY_RE = re.compile(r"^lag_[a-z2-7]{12}_[a-z2-7]{59}$")
KEY_LEN = 76
B32 = "abcdefghijklmnopqrstuvwxyz234567"

#: The filter's audit lines: ``wasm log llm_api_guard[ root_id[ vm_id]]: {json}``.
LOG_JSON_RE = re.compile(r"wasm log llm_api_guard[^:]*: (\{.*\})\s*$")
CONFIG_ERROR_RE = re.compile(r"wasm log llm_api_guard[^:]*: (invalid llm-api-guard config.*)$")

API_KEY_AUTH = {"enabled": True, "methods": {"jwt": {"enabled": False},
                                             "mtls": {"enabled": False},
                                             "api_key": {"enabled": True}}}


# ---------------------------------------------------------------------------------------------
# time
def rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(t)))


def parse_rfc3339(s: str) -> int:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", s), s
    return calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))


def http_date(t: float) -> str:
    return email.utils.formatdate(int(t), usegmt=True)


# ---------------------------------------------------------------------------------------------
# keys, computed in Python from the documented format
def b32(data: bytes) -> str:
    return base64.b32encode(data).decode().lower().rstrip("=")


def checksum(body: str) -> str:
    return b32(zlib.crc32(body.encode()).to_bytes(4, "big"))[:7]


def make_key(key_id: str | None = None) -> str:
    """A well-formed key (valid checksum); a random id unless ``key_id`` is given."""
    kid = key_id or b32(secrets.token_bytes(8))[:12]
    body = f"lag_{kid}_{b32(secrets.token_bytes(32))}"
    assert len(body) == 69
    return body + checksum(body)


def key_id(key: str) -> str:
    return key[4:16]


def secret_part(key: str) -> str:
    return key[17:]


def well_formed(key: str) -> bool:
    return bool(KEY_RE.match(key)) and checksum(key[:-7]) == key[-7:]


def hash_key(key: str, pepper: str = TEST_PEPPER) -> str:
    mac = hmac.new(pepper.encode(), key.encode(), hashlib.sha256).digest()
    return "hmac-sha256:" + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def record(key: str, user: str, created: float, expires: float, *, pepper: str = TEST_PEPPER,
           **extra: Any) -> dict:
    r = {"id": key_id(key), "hash": hash_key(key, pepper), "user": user,
         "created_at": rfc3339(created), "expires_at": rfc3339(expires), "revoked": False}
    r.update(extra)
    return r


def change_char(key: str, pos: int) -> str:
    """``key`` with the character at ``pos`` replaced by another character of the same class."""
    c = key[pos]
    alphabet = B32 if c in B32 else "abcdefghijklmnopqrstuvwxyz_"
    repl = alphabet[(alphabet.index(c) + 7) % len(alphabet)]
    assert repl != c
    return key[:pos] + repl + key[pos + 1:]


# ---------------------------------------------------------------------------------------------
# the CLI
def cli(*args: str, pepper: str | None = TEST_PEPPER, env: dict | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    """Run ``dist/llm-api-guard`` with the pepper in the environment (``pepper=None``: unset)."""
    e = dict(os.environ)
    e.pop(PEPPER_ENV, None)
    if pepper is not None:
        e[PEPPER_ENV] = pepper
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    res = subprocess.run([str(CLI_PATH), *args], capture_output=True, text=True, env=e,
                         timeout=30)
    if check and res.returncode != 0:
        raise AssertionError(f"llm-api-guard {' '.join(args)} failed ({res.returncode}):\n"
                             f"{res.stdout}{res.stderr}")
    return res


def new_key(keyset: Path, user: str, *extra: str, pepper: str = TEST_PEPPER) -> str:
    res = cli("keys", "new", "--user", user, "--keyset", str(keyset), *extra, pepper=pepper)
    key = res.stdout.strip()
    assert res.stdout == key + "\n", f"stdout must be the key only: {res.stdout!r}"
    assert KEY_RE.match(key), key
    return key


def load_keys(keyset: Path) -> list[dict]:
    return json.loads(Path(keyset).read_text())["keys"]


def save_keys(keyset: Path, keys: list[dict]) -> None:
    Path(keyset).write_text(json.dumps({"keys": keys}, indent=1))


def find_record(keys: list[dict], kid: str) -> dict:
    found = [r for r in keys if r["id"] == kid]
    assert len(found) == 1, (kid, keys)
    return found[0]


def request_id() -> str:
    """A unique x-request-id. Not 36 characters long: Envoy rewrites one character of a
    UUID-shaped id (the trace-reason nibble) even when it preserves the client's id."""
    return "rid-" + secrets.token_hex(16) + "-t"


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {stderr!r}"
    return lines[0]


# ---------------------------------------------------------------------------------------------
# gateways
def preserve_request_id(bootstrap: dict) -> None:
    """bootstrap_hook: keep a client-sent x-request-id (Envoy replaces it on edge requests)."""
    for listener in bootstrap["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                if f["name"] == "envoy.filters.network.http_connection_manager":
                    f["typed_config"]["preserve_external_request_id"] = True


def raw_paths(bootstrap: dict) -> None:
    """bootstrap_hook: client request ids kept and no path normalisation."""
    preserve_request_id(bootstrap)
    no_normalisation(bootstrap)


def no_normalisation(bootstrap: dict) -> None:
    """bootstrap_hook: the HCM passes the path through exactly as the client sent it."""
    for listener in bootstrap["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                if f["name"] == "envoy.filters.network.http_connection_manager":
                    tc = f["typed_config"]
                    tc["normalize_path"] = False
                    tc["merge_slashes"] = False
                    tc["path_with_escaped_slashes_action"] = "KEEP_UNCHANGED"


def events(gw, **match: Any) -> list[dict]:
    """The filter's JSON log lines (parsed) whose fields equal ``match``."""
    out = []
    for line in gw.log_text().splitlines():
        m = LOG_JSON_RE.search(line)
        if not m:
            continue
        try:
            ev = json.loads(m.group(1))
        except ValueError:
            continue
        if all(ev.get(k) == v for k, v in match.items()):
            out.append(ev)
    return out


def wait_events(gw, n: int = 1, timeout: float = 3.0, **match: Any) -> list[dict]:
    """Wait until exactly ``n`` matching events are logged (and stay ``n`` briefly)."""
    deadline = time.monotonic() + timeout
    while True:
        got = events(gw, **match)
        if len(got) >= n or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    time.sleep(0.1)
    got = events(gw, **match)
    assert len(got) == n, f"expected {n} log event(s) {match}, got {got}"
    return got


def wait_stat(gw, name: str, want: int, timeout: float = 5.0) -> int:
    """Poll ``gw.stat(name)`` until it equals ``want``; fail if it does not (or overshoots)."""
    deadline = time.monotonic() + timeout
    while True:
        v = gw.stat(name)
        if v == want or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert v == want, f"stat {name} is {v}, expected {want}"
    return v


def wait_stat_above(gw, name: str, floor: int, timeout: float = 6.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        v = gw.stat(name)
        if v > floor:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"stat {name} stayed at {v} (expected > {floor})")
        time.sleep(0.05)


def assert_openai_error(r, status: int, code: str, type_: str | None = None) -> dict:
    """A denial: ``status``, ``content-type: application/json`` and exactly
    ``{"error": {"message", "type", "code", "param": null}}``."""
    assert r.status == status, r
    assert r.headers.get("content-type") == "application/json", r.headers
    doc = r.json()
    assert set(doc) == {"error"}, doc
    err = doc["error"]
    assert set(err) == {"message", "type", "code", "param"}, err
    assert err["param"] is None
    assert isinstance(err["message"], str) and err["message"]
    assert err["code"] == code, err
    if type_ is not None:
        assert err["type"] == type_, err
    return err


# ---------------------------------------------------------------------------------------------
class DocServer:
    """A minimal HTTP server for one keyset document, answering after ``delay`` seconds.
    Records the time each answer was sent (``answered``)."""

    def __init__(self, body: bytes | str, *, delay: float = 0.0, status: int = 200):
        self.body = body.encode() if isinstance(body, str) else body
        self.delay = delay
        self.status = status
        self.answered: list[float] = []
        self.received: list[float] = []
        owner = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                owner.received.append(time.time())
                if owner.delay:
                    time.sleep(owner.delay)
                self.send_response(owner.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)
                self.wfile.flush()
                owner.answered.append(time.time())

        class S(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._srv = S(("127.0.0.1", 0), H)
        self.port = self._srv.server_address[1]
        self._t = threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.1},
                                   daemon=True)
        self._t.start()

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()
