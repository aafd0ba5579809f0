"""Foundation of the filter against a real Envoy: request size limits
(gateway_hardening.request_limits), removal of client-sent x-auth-* headers, the denial format,
the stats counters and the structured denial log.

Gateways (shared per module):
- ``default_gw``: everything off except the request limits with their defaults
  (1048576 body bytes, 8192 header bytes), as the harness ships Envoy;
- ``small_gw``: limits of 100 body bytes and 512 header bytes, and Envoy keeping a client-sent
  ``x-request-id`` (``preserve_external_request_id``) so log lines can be matched to requests;
- ``off_gw``: ``gateway_hardening.enabled: false`` (no limits at all).
"""
from __future__ import annotations

import re
import socket
import time
import uuid

import pytest

from harness import filter_config
from keytool import (assert_openai_error, events, make_key, preserve_request_id, request_id,
                     wait_events, wait_stat)

DEFAULT_BODY = 1_048_576
DEFAULT_HEADERS = 8192
SMALL_BODY = 100
SMALL_HEADERS = 512
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def default_gw(module_gateway_factory):
    return module_gateway_factory(filter_config())


@pytest.fixture(scope="module")
def small_gw(module_gateway_factory):
    cfg = filter_config(gateway_hardening={"request_limits": {
        "max_request_size_bytes": SMALL_BODY, "max_header_size_bytes": SMALL_HEADERS}})
    return module_gateway_factory(cfg, bootstrap_hook=preserve_request_id)


@pytest.fixture(scope="module")
def off_gw(module_gateway_factory):
    return module_gateway_factory(filter_config(gateway_hardening={"enabled": False}))


def body_413(r, limit):
    err = assert_openai_error(r, 413, "request_too_large", "invalid_request_error")
    assert str(limit) in err["message"]


def header_431(r):
    assert_openai_error(r, 431, "request_header_fields_too_large", "invalid_request_error")


def upstream_count(gw):
    return len(gw.upstream.requests())


# ------------------------------------------------------------------------------------------------
# body size
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_default_body_limit_is_inclusive(default_gw, chunked):
    gw = default_gw
    body = bytes(range(256)) * (DEFAULT_BODY // 256)
    assert len(body) == DEFAULT_BODY
    r = gw.request("POST", "/echo", body=body, chunked=chunked)
    assert r.status == 200, r
    assert r.json()["body_length"] == DEFAULT_BODY
    before = upstream_count(gw)
    r = gw.request("POST", "/echo", body=body + b"!", chunked=chunked)
    body_413(r, DEFAULT_BODY)
    time.sleep(0.2)
    assert upstream_count(gw) == before, "the upstream saw a request whose body was refused"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_small_body_limit_boundary(small_gw, chunked):
    gw = small_gw
    r = gw.request("POST", "/echo", body=b"b" * SMALL_BODY, chunked=chunked)
    assert r.status == 200, r
    assert r.json()["body_length"] == SMALL_BODY
    before = upstream_count(gw)
    body_413(gw.request("POST", "/echo", body=b"b" * (SMALL_BODY + 1), chunked=chunked),
             SMALL_BODY)
    body_413(gw.request("PUT", "/echo", body=b"b" * 5000, chunked=chunked), SMALL_BODY)
    time.sleep(0.2)
    assert upstream_count(gw) == before


def test_requests_without_body_pass(small_gw):
    gw = small_gw
    r = gw.request("GET", "/echo")
    assert r.status == 200 and r.json()["body_length"] == 0, r
    r = gw.request("POST", "/echo", body=b"")
    assert r.status == 200 and r.json()["body_length"] == 0, r
    r = gw.request("POST", "/echo", body=b"", chunked=True)
    assert r.status == 200 and r.json()["body_length"] == 0, r


def _read_response(conn):
    r = conn.getresponse()
    return r.status, r.read()


def test_content_length_over_limit_is_refused_before_the_body(default_gw):
    """413 as soon as the headers arrive: the client has not sent a byte of the body."""
    gw = default_gw
    before = upstream_count(gw)
    conn = gw.connection(timeout=5)
    try:
        conn.putrequest("POST", "/echo")
        conn.putheader("content-length", str(DEFAULT_BODY + 1))
        conn.endheaders()
        status, body = _read_response(conn)  # socket.timeout if the filter waited for the body
    finally:
        conn.close()
    assert status == 413 and b"request_too_large" in body
    assert upstream_count(gw) == before


@pytest.mark.parametrize("limit_gw,limit", [("small_gw", SMALL_BODY),
                                             ("default_gw", DEFAULT_BODY)])
def test_chunked_body_is_refused_as_soon_as_it_passes_the_limit(request, limit_gw, limit):
    """The body never ends (no terminating chunk): the 413 must come from the running count."""
    gw = request.getfixturevalue(limit_gw)
    before = upstream_count(gw)
    conn = gw.connection(timeout=5)
    try:
        conn.putrequest("POST", "/echo")
        conn.putheader("transfer-encoding", "chunked")
        conn.endheaders()
        sent, step = 0, 16384
        try:
            while sent <= limit:
                part = b"c" * min(step, limit + 1 - sent)
                conn.send(b"%x\r\n%s\r\n" % (len(part), part))
                sent += len(part)
        except (BrokenPipeError, ConnectionResetError):
            pass  # Envoy answered and closed while we were still sending: fine
        assert sent == limit + 1
        try:
            status, body = _read_response(conn)
        except socket.timeout:
            pytest.fail("no answer before the end of the body: the filter waited for it")
    finally:
        conn.close()
    assert status == 413 and b"request_too_large" in body
    time.sleep(0.2)
    assert upstream_count(gw) == before


# ------------------------------------------------------------------------------------------------
# header size
def filter_header_bytes(method, path, upstream_headers):
    """What the filter counts, rebuilt from what the upstream saw: every header (Envoy's
    x-request-id, x-forwarded-* included) plus the pseudo-headers; ``host`` is ``:authority``
    on the filter's side."""
    total = 0
    for k, v in upstream_headers.items():
        total += len(":authority" if k == "host" else k) + len(v)
    total += len(":path") + len(path) + len(":method") + len(method) + len(":scheme") + len("http")
    return total


@pytest.mark.parametrize("limit_gw,limit", [("small_gw", SMALL_HEADERS),
                                             ("default_gw", DEFAULT_HEADERS)])
def test_header_limit_counts_every_header_and_pseudo_header(request, limit_gw, limit):
    gw = request.getfixturevalue(limit_gw)
    probe = gw.request("GET", "/echo", headers={"x-pad": "p" * 10})
    assert probe.status == 200, probe
    seen = probe.json()["headers"]
    assert "x-request-id" in seen and "x-forwarded-proto" in seen  # Envoy-added, counted too
    base = filter_header_bytes("GET", "/echo", seen)
    exact = 10 + (limit - base)
    assert exact > 0
    r = gw.request("GET", "/echo", headers={"x-pad": "p" * exact})
    assert r.status == 200, (r, "a request of exactly the limit must pass")
    assert filter_header_bytes("GET", "/echo", r.json()["headers"]) == limit
    before = upstream_count(gw)
    r = gw.request("GET", "/echo", headers={"x-pad": "p" * (exact + 1)})
    header_431(r)
    # The :path counts like any header: two more path bytes need two fewer header bytes.
    header_431(gw.request("GET", "/echo?q", headers={"x-pad": "p" * (exact - 1)}))
    r = gw.request("GET", "/echo?q", headers={"x-pad": "p" * (exact - 2)})
    assert r.status == 200, r
    assert upstream_count(gw) == before + 1  # only the last one went upstream


def test_long_path_alone_is_refused(small_gw):
    before = upstream_count(small_gw)
    header_431(small_gw.request("GET", "/echo/" + "a" * SMALL_HEADERS))
    assert upstream_count(small_gw) == before


def test_limits_off_when_hardening_disabled(off_gw):
    gw = off_gw
    r = gw.request("POST", "/echo", body=b"z" * (DEFAULT_BODY * 2))
    assert r.status == 200 and r.json()["body_length"] == DEFAULT_BODY * 2, r
    r = gw.request("GET", "/echo", headers={"x-pad": "p" * (DEFAULT_HEADERS * 2)})
    assert r.status == 200, r


# ------------------------------------------------------------------------------------------------
# x-auth-* headers
FORGED = [("x-auth-user", "admin"), ("x-auth-method", "mtls"), ("x-auth-key-id", "aaaaaaaaaaaa"),
          ("X-Auth-Anything", "1"), ("X-AUTH-USER", "root"), ("x-keep-me", "yes")]


@pytest.mark.parametrize("gw_name", ["default_gw", "off_gw"])
def test_client_x_auth_headers_never_reach_upstream(request, gw_name):
    gw = request.getfixturevalue(gw_name)
    r = gw.request("POST", "/echo", body=b"{}", headers=FORGED)
    assert r.status == 200, r
    seen = r.json()["headers"]
    assert not [k for k in seen if k.startswith("x-auth-")], seen
    assert seen["x-keep-me"] == "yes"  # other headers are untouched
    rec = gw.upstream.requests("/echo")[-1]["headers"]
    assert not [k for k in rec if k.startswith("x-auth")], rec


# ------------------------------------------------------------------------------------------------
# denial format, logs and stats
def test_every_denial_is_an_openai_error(small_gw):
    gw = small_gw
    for r, status in [(gw.request("POST", "/v1/chat/completions", body=b"x" * 101), 413),
                      (gw.request("POST", "/x", body=b"x" * 101, chunked=True), 413),
                      (gw.request("GET", "/x", headers={"x-pad": "p" * 600}), 431)]:
        assert r.status == status
        err = assert_openai_error(r, status, "request_too_large" if status == 413
                                  else "request_header_fields_too_large")
        assert "llm_api_guard" not in err["message"] and "panic" not in r.text


def test_denial_log_line_carries_the_request_id(small_gw):
    gw = small_gw
    rid = request_id()
    r = gw.request("POST", "/echo/logged?a=1", body=b"x" * 500, headers={"x-request-id": rid})
    assert r.status == 413
    ev = wait_events(gw, 1, request_id=rid)[0]
    assert ev["event"] == "request_denied"
    assert ev["reason"] == "body_too_large" and ev["status"] == 413
    assert ev["method"] == "POST" and ev["path"] == "/echo/logged"
    rid2 = request_id()
    assert gw.request("GET", "/echo", headers=[("x-request-id", rid2),
                                               ("x-pad", "p" * 600)]).status == 431
    ev = wait_events(gw, 1, request_id=rid2)[0]
    assert (ev["event"], ev["reason"], ev["status"]) == ("request_denied", "headers_too_large",
                                                         431)
    # An allowed request logs no denial.
    rid3 = request_id()
    r = gw.request("GET", "/echo", headers={"x-request-id": rid3})
    assert r.status == 200 and r.json()["headers"]["x-request-id"] == rid3
    time.sleep(0.2)
    assert events(gw, request_id=rid3, event="request_denied") == []


def test_envoy_replaces_a_client_request_id_by_default(default_gw):
    """The harness's Envoy (use_remote_address, no preserve_external_request_id) treats the
    client as external and generates its own x-request-id: that is the id the upstream and the
    filter's log see, never the client's."""
    gw = default_gw
    sent = "client-" + uuid.uuid4().hex
    r = gw.request("GET", "/echo", headers={"x-request-id": sent})
    got = r.json()["headers"]["x-request-id"]
    assert got != sent and UUID_RE.match(got)
    n = len(events(gw, event="request_denied"))
    assert gw.request("POST", "/echo", body=b"x" * (DEFAULT_BODY + 1),
                      headers={"x-request-id": sent}).status == 413
    evs = wait_events(gw, n + 1, event="request_denied")
    assert evs[-1]["reason"] == "body_too_large"
    assert evs[-1]["request_id"] != sent and UUID_RE.match(evs[-1]["request_id"])


def test_no_credential_in_the_log(small_gw):
    gw = small_gw
    key = make_key()
    bearer = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzZWNyZXQtdXNlciJ9.c2lnbmF0dXJlLXNlY3JldA"
    rid = request_id()
    r = gw.request("POST", "/echo", body=b"x" * 101,
                   headers={"x-api-key": key, "authorization": "Bearer " + bearer,
                            "x-request-id": rid})
    assert r.status == 413
    wait_events(gw, 1, request_id=rid)
    log = gw.log_text()
    assert key not in log and key[17:40] not in log
    assert bearer not in log and bearer[-20:] not in log


def test_counters(small_gw):
    gw = small_gw
    names = ["llm_api_guard.requests_allowed", "llm_api_guard.requests_denied",
             "llm_api_guard.denied.body_too_large", "llm_api_guard.denied.headers_too_large"]
    stats = gw.stats("llm_api_guard")
    for n in names:  # Envoy lists the filter's metrics under wasmcustom.
        assert "wasmcustom." + n in stats, sorted(stats)
    before = {n: gw.stat(n) for n in names}
    for _ in range(3):
        assert gw.request("GET", "/echo").status == 200
    for _ in range(2):
        assert gw.request("POST", "/echo", body=b"x" * 101).status == 413
    assert gw.request("POST", "/echo", body=b"x" * 101, chunked=True).status == 413
    assert gw.request("GET", "/echo", headers={"x-pad": "p" * 600}).status == 431
    wait_stat(gw, names[0], before[names[0]] + 3)
    wait_stat(gw, names[1], before[names[1]] + 4)
    wait_stat(gw, names[2], before[names[2]] + 3)
    wait_stat(gw, names[3], before[names[3]] + 1)
    assert gw.stat("llm_api_guard.denied.missing_credentials") == 0


def test_counters_in_prometheus_format(small_gw):
    gw = small_gw
    assert gw.request("POST", "/echo", body=b"x" * 101).status == 413
    want = gw.stat("llm_api_guard.denied.body_too_large")
    assert want >= 1
    prom = gw.admin("/stats/prometheus")
    values = dict(re.findall(r"^(llm_api_guard_[a-z_]+)\{\} (\d+)$", prom, re.M))
    assert int(values["llm_api_guard_denied_body_too_large"]) == want, values
    assert "llm_api_guard_requests_allowed" in values
    assert "llm_api_guard_requests_denied" in values
    assert "envoy_llm_api_guard_" not in prom


def test_http2_clients_get_the_same_limits_and_authentication(gateway_factory, tmp_path, cli_path):
    """h2c (prior knowledge) goes through the same filter paths as HTTP/1.1."""
    import shutil
    import subprocess

    from keytool import load_keys, new_key
    if shutil.which("curl") is None:
        pytest.skip("curl is needed to speak HTTP/2")
    keyset = tmp_path / "keyset.json"
    key = new_key(keyset, "h2-user")
    gw = gateway_factory(filter_config(
        api_key_management={"enabled": True, "keys": load_keys(keyset)},
        authentication={"enabled": True, "methods": {"jwt": {"enabled": False}, "mtls": {"enabled": False},
                                                      "api_key": {"enabled": True}}},
        gateway_hardening={"enabled": True, "request_limits": {"max_request_size_bytes": 1000}}))

    def h2(*args: str) -> tuple[str, str, str]:
        out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-w", "\n%{http_version} %{http_code}",
                              *args, gw.url + "/echo"], capture_output=True, text=True, timeout=20).stdout
        body, status_line = out.rsplit("\n", 1)
        version, code = status_line.split()
        return version, code, body

    version, code, body = h2("-H", f"X-API-Key: {key}", "--data-binary", "x" * 1000)
    assert (version, code) == ("2", "200"), body
    assert '"x-auth-user": "h2-user"' in body and '"body_length": 1000' in body
    assert h2("-H", f"X-API-Key: {key}", "--data-binary", "x" * 1001)[1] == "413"
    assert h2("--data-binary", "x")[1] == "401"
    assert len(gw.upstream.requests("/echo")) == 1
