"""Smoke tests of the test harness itself: Envoy (mostly without the filter) + mock upstream."""
from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request

import pytest

from harness import (DISABLED_CONFIG, Gateway, GatewayError, MockUpstream, filter_config,
                     urlopen)


@pytest.fixture(scope="module")
def plain_gateway(module_gateway_factory):
    """One filter-less gateway shared by the tests of this module."""
    return module_gateway_factory(wasm=False)


def test_echo_is_proxied_with_headers_and_body(plain_gateway):
    gw = plain_gateway
    gw.upstream.reset()
    body = b"hello through envoy"
    r = gw.request("POST", "/echo/abc?x=1", body=body,
                   headers=[("x-test", "1"), ("x-multi", "a"), ("x-multi", "b")])
    assert r.status == 200, r
    echo = r.json()
    assert echo["method"] == "POST"
    assert echo["path"] == "/echo/abc?x=1"
    assert echo["body_length"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert echo["headers"]["x-test"] == "1"
    assert echo["headers"]["x-multi"] == "a, b"  # the mock joins repeated headers
    assert echo["headers"]["x-request-id"]  # generate_request_id
    seen = gw.upstream.requests("/echo/abc")
    assert len(seen) == 1 and seen[0]["body_sha256"] == echo["body_sha256"]


def test_chunked_request_body_reaches_upstream(plain_gateway):
    body = bytes(range(256)) * 400
    r = plain_gateway.request("PUT", "/echo", body=body, chunked=True)
    assert r.status == 200, r
    assert r.json()["body_length"] == len(body)
    assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_chat_completion_has_usage(plain_gateway):
    r = plain_gateway.request("POST", "/v1/chat/completions", json={
        "model": "gpt-4o-mini", "max_tokens": 5,
        "messages": [{"role": "user", "content": "x" * 40}]})
    assert r.status == 200, r
    doc = r.json()
    assert doc["object"] == "chat.completion"
    assert doc["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def test_chat_completion_stream_is_sse_and_ends_with_done(plain_gateway):
    r = plain_gateway.request("POST", "/v1/chat/completions", json={
        "model": "gpt-4o-mini", "stream": True, "max_tokens": 4,
        "messages": [{"role": "user", "content": "hello"}]})
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("text/event-stream")
    data = r.sse_data()
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["usage"]["completion_tokens"] == 4 and chunks[-1]["choices"] == []
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert len(text.split()) == 4


def test_other_endpoints(plain_gateway):
    gw = plain_gateway
    assert gw.request("GET", "/v1/models").json()["data"][0]["id"] == "gpt-4o-mini"
    for p in ("/healthz", "/health", "/ready"):
        r = gw.request("GET", p)
        assert (r.status, r.body) == (200, b"ok")
    r = gw.request("GET", "/fail")
    assert r.status == 500 and "Traceback" in r.text
    # PASS_THROUGH: the leaky upstream headers reach the client unless the filter removes them.
    assert r.headers["server"] == "gunicorn/19.9.0"
    assert r.headers["x-powered-by"] == "Express" and r.headers["x-debug-info"]
    assert "x-envoy-upstream-service-time" not in r.headers  # suppress_envoy_headers
    r = gw.request("GET", "/nothing-here")
    assert r.status == 404 and r.json()["error"]


def test_path_normalisation(plain_gateway):
    gw = plain_gateway
    assert gw.request("GET", "/echo/a/../b//c").json()["path"] == "/echo/b/c"
    r = gw.request("GET", "/echo/a%2Fb")  # UNESCAPE_AND_REDIRECT
    assert r.status == 307 and r.headers["location"].endswith("/echo/a/b")


def test_underscore_headers_are_dropped_and_client_ip(plain_gateway):
    r = plain_gateway.request("GET", "/echo", headers={"x_auth_user": "admin"},
                              source_ip="127.0.0.7")
    hdrs = r.json()["headers"]
    assert "x_auth_user" not in hdrs
    assert hdrs["x-forwarded-for"] == "127.0.0.7"
    assert hdrs["x-envoy-external-address"] == "127.0.0.7"


def test_stats_are_readable(plain_gateway):
    gw = plain_gateway
    before = gw.stat("http.ingress.downstream_rq_completed")
    gw.request("GET", "/echo")
    stats = gw.stats("^cluster\\.upstream\\.")
    assert stats["cluster.upstream.upstream_rq_total"] >= 1
    assert gw.stat("http.ingress.downstream_rq_completed") >= before + 1
    assert "ingress" in gw.admin("/listeners")


def test_mock_documents_and_control_api(tmp_path):
    with MockUpstream() as up:
        f = tmp_path / "keyset.json"
        f.write_text('{"keys": [1]}')
        up.set_document_file("/keyset.json", f)

        def get(path):
            try:
                with urlopen(up.url + path, timeout=5) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()

        assert get("/keyset.json") == (200, b'{"keys": [1]}')
        f.write_text('{"keys": [2]}')  # re-read on every GET
        assert get("/keyset.json") == (200, b'{"keys": [2]}')
        req = urllib.request.Request(up.url + "/__control/documents?path=/jwks.json&status=503",
                                     data=b'{"keys": []}', method="PUT")
        urlopen(req, timeout=5).close()
        assert get("/jwks.json") == (503, b'{"keys": []}')
        urlopen(urllib.request.Request(
            up.url + "/__control/documents?path=/jwks.json", method="DELETE"), timeout=5).close()
        assert get("/jwks.json")[0] == 404
        with urlopen(up.url + "/__control/requests", timeout=5) as r:
            log = json.loads(r.read())
        assert [e["path"] for e in log] == ["/keyset.json", "/keyset.json", "/jwks.json",
                                            "/jwks.json"]
        assert log == up.requests()
        urlopen(urllib.request.Request(up.url + "/__control/reset",
                                                      method="POST"), timeout=5).close()
        assert up.requests() == []


def test_extra_clusters_and_shared_upstream(gateway_factory, mock_upstream):
    with MockUpstream() as other:
        gw = gateway_factory(wasm=False, upstream=mock_upstream,
                             extra_clusters={"jwks_alt": ("127.0.0.1", other.port),
                                             "keyset": ("localhost", other.port)})
        clusters = gw.admin("/clusters")
        assert f"jwks_alt::127.0.0.1:{other.port}" in clusters
        assert f"idp::127.0.0.1:{mock_upstream.port}" in clusters
        assert gw.request("GET", "/echo").status == 200
        assert len(mock_upstream.requests("/echo")) == 1
        gw.stop()
    assert mock_upstream.requests("/echo")  # a shared upstream is not stopped with the gateway


def test_expect_failure_returns_the_log():
    def break_it(bootstrap):
        bootstrap["static_resources"]["clusters"][0]["type"] = "NO_SUCH_TYPE"

    log = Gateway.start(wasm=False, bootstrap_hook=break_it, expect_failure=True)
    assert "NO_SUCH_TYPE" in log


def test_expect_failure_raises_when_envoy_serves():
    with pytest.raises(GatewayError, match="became ready"):
        Gateway.start(wasm=False, expect_failure=True)


def test_filter_config_helper():
    cfg = filter_config(api_rate_limiting={"enabled": True, "enforcement": {"action": "block"}},
                        gateway_hardening={"cors": None})
    assert cfg["api_rate_limiting"] == {"enabled": True, "enforcement": {"action": "block"}}
    assert "cors" not in cfg["gateway_hardening"]
    assert cfg["authentication"] == {"enabled": False}
    assert DISABLED_CONFIG["gateway_hardening"]["cors"] == {"enabled": False}  # not mutated


def test_filter_with_everything_disabled_passes_requests(gateway_factory):
    """Needs dist/llm_api_guard.wasm: the contract wiring loads and an all-off config passes."""
    gw = gateway_factory(filter_config())
    r = gw.request("GET", "/echo")
    assert r.status == 200, (r, gw.log_tail())
    assert gw.upstream.requests("/echo")
