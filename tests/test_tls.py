"""TLS 1.3 and mTLS at Envoy's listener (as in envoy/envoy-tls.yaml), without the filter.

Refusals are checked at the connection level: with TLS 1.3 the server verifies the client
certificate after the client's side of the handshake is done, so a refused client sees an alert
or EOF either in the handshake or at its first read, and never an HTTP response.
"""
from __future__ import annotations

import socket
import ssl

import pytest

from harness import Gateway


@pytest.fixture(scope="module")
def mtls_gateway(module_gateway_factory):
    return module_gateway_factory(wasm=False, tls=True, require_client_cert=True)


@pytest.fixture(scope="module")
def tls_gateway(module_gateway_factory):
    """TLS with optional (but verified when presented) client certificates."""
    return module_gateway_factory(wasm=False, tls=True, require_client_cert=False)


def exchange(gw: Gateway, ctx: ssl.SSLContext) -> bytes:
    """Handshake, send one GET /echo, return what the server sent (raises on TLS errors)."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"GET /echo HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return out
                out += chunk


def assert_refused(gw: Gateway, ctx: ssl.SSLContext) -> None:
    try:
        got = exchange(gw, ctx)
    except (ssl.SSLError, ConnectionError):
        return
    assert not got.startswith(b"HTTP/"), f"expected a TLS refusal, got {got[:200]!r}"


def test_tls13_with_client_cert_reaches_upstream(mtls_gateway):
    gw = mtls_gateway
    gw.upstream.reset()
    ctx = gw.ssl_context("client", minimum_version=ssl.TLSVersion.TLSv1_3)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            assert s.version() == "TLSv1.3"
    r = gw.request("GET", "/echo")  # default cert: "client"
    assert r.status == 200, r
    assert r.json()["headers"]["x-forwarded-proto"] == "https"
    assert len(gw.upstream.requests("/echo")) == 1


def test_other_client_cert_of_the_dev_ca_is_accepted_by_envoy(mtls_gateway):
    # SAN allow-lists are the filter's job (authentication.methods.mtls.allowed_sans).
    assert mtls_gateway.request("GET", "/echo", cert="other-client").status == 200


def test_tls12_client_is_refused(mtls_gateway):
    ctx = mtls_gateway.ssl_context("client", maximum_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError):
        exchange(mtls_gateway, ctx)


def test_client_without_cert_is_refused_when_required(mtls_gateway):
    mtls_gateway.upstream.reset()
    assert_refused(mtls_gateway, mtls_gateway.ssl_context(None))
    assert mtls_gateway.upstream.requests() == []


def test_cert_from_untrusted_ca_is_refused(mtls_gateway, tls_gateway):
    for gw in (mtls_gateway, tls_gateway):
        gw.upstream.reset()
        assert_refused(gw, gw.ssl_context("untrusted"))
        assert gw.upstream.requests() == []


def test_optional_client_cert(tls_gateway):
    assert tls_gateway.request("GET", "/echo", cert=None).status == 200
    assert tls_gateway.request("GET", "/echo", cert="client").status == 200
    with pytest.raises(ssl.SSLError):
        exchange(tls_gateway, tls_gateway.ssl_context(None,
                                                      maximum_version=ssl.TLSVersion.TLSv1_2))
