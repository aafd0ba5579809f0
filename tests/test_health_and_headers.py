"""Health-check exemption (``authentication.middleware``) and the identity headers the filter
owns, against a real Envoy.

The health paths (default /healthz, /health, /ready) skip authentication only for an exact
path (query aside), and skip nothing else (request limits still apply). Near misses are sent
verbatim (http.client puts the path on the request line as given) to two Envoys:

- ``health_gw``: the harness's HCM (normalize_path, merge_slashes, escaped slashes redirected),
  so Envoy may rewrite a near miss before the filter sees it;
- ``raw_gw``: no normalisation at all (normalize_path / merge_slashes off, escaped slashes
  kept), so the filter sees the path exactly as sent.

Either way no request may reach the upstream without credentials unless the upstream sees an
exact health path.

Both gateways have jwt and api_key as alternatives and the default request limits (8192 header
bytes). ``strict_gw`` has ``except_health_check: false``; ``custom_gw`` its own path list.
"""
from __future__ import annotations

import pytest

from harness import filter_config
from jwt_tokens import AUDIENCE, ISSUER, KEYS, bearer, claims, jwks, token
from keytool import assert_openai_error, key_id, load_keys, new_key, no_normalisation

HEALTH = ("/healthz", "/health", "/ready")
NEAR_MISSES = [
    "/healthz/../v1/chat/completions",
    "/healthz/../echo",
    "/healthz;x",
    "/healthz;/../echo",
    "//healthz/..",
    "//healthz",
    "/%68ealthz",
    "/%2Fhealthz",
    "/healthz%2F..%2Fecho",
    "/HEALTHZ",
    "/Healthz",
    "/healthz/",
    "/./healthz",
    "/healthz/.",
    "/healthz%3F",
    "/healthz%00",
    "/healthzz",
    "/health/z",
    "/echo/healthz",
    "/ready.json",
    "/echo?/healthz",
    "/echo?path=/healthz",
]
FORGED = [("x-auth-method", "mtls"), ("x-auth-user", "admin"), ("x-auth-key-id", "aaaaaaaaaaaa"),
          ("X-Auth-Other", "1"), ("X-AUTH-USER", "root"), ("x-auth-user", "second-copy"),
          ("x-auth-", "empty-suffix")]


def auth_section(**middleware) -> dict:
    a = {"enabled": True, "methods": {
        "jwt": {"enabled": True, "issuer": ISSUER, "audience": AUDIENCE, "algorithm": "RS256",
                "jwks": jwks(KEYS["rsa"])},
        "api_key": {"enabled": True},
        "mtls": {"enabled": False}}}
    if middleware:
        a["middleware"] = middleware
    return a


@pytest.fixture(scope="module")
def api_key(tmp_path_factory, cli_path):
    keyset = tmp_path_factory.mktemp("health-keys") / "keyset.json"
    key = new_key(keyset, "hana")
    return key, load_keys(keyset)


def make_cfg(records, **middleware) -> dict:
    return filter_config(authentication=auth_section(**middleware),
                         api_key_management={"enabled": True, "keys": records})


@pytest.fixture(scope="module")
def health_gw(module_gateway_factory, api_key):
    return module_gateway_factory(make_cfg(api_key[1]))


@pytest.fixture(scope="module")
def raw_gw(module_gateway_factory, api_key):
    gw = module_gateway_factory(make_cfg(api_key[1]), bootstrap_hook=no_normalisation)
    hcm = gw.config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    assert hcm["typed_config"]["normalize_path"] is False
    return gw


@pytest.fixture(scope="module")
def strict_gw(module_gateway_factory, api_key):
    return module_gateway_factory(make_cfg(api_key[1], except_health_check=False))


@pytest.fixture(scope="module")
def custom_gw(module_gateway_factory, api_key):
    return module_gateway_factory(make_cfg(api_key[1], except_health_check=True,
                                           health_check_paths=["/livez", "/status/ping"]))


def bare(path: str) -> str:
    return path.split("?", 1)[0]


def upstream_paths(gw) -> list[str]:
    return [r["path"] for r in gw.upstream.requests()]


# ------------------------------------------------------------------------------------------------
# exemption
@pytest.mark.parametrize("gw_name", ["health_gw", "raw_gw"])
@pytest.mark.parametrize("path", list(HEALTH) + ["/healthz?x=1", "/ready?probe=liveness&a=/x"])
def test_health_paths_need_no_credential(request, gw_name, path):
    gw = request.getfixturevalue(gw_name)
    before = len(upstream_paths(gw))
    n = gw.stat("llm_api_guard.health_check_exempt")
    r = gw.request("GET", path)
    assert r.status == 200 and r.body == b"ok", r
    assert upstream_paths(gw)[before:] == [path]
    seen = gw.upstream.requests()[-1]["headers"]
    assert not [k for k in seen if k.startswith("x-auth-")], seen
    assert gw.stat("llm_api_guard.health_check_exempt") == n + 1


@pytest.mark.parametrize("path", NEAR_MISSES)
def test_near_miss_with_normalisation_never_reaches_upstream_unauthenticated(health_gw, path):
    """Envoy may rewrite the path first (e.g. /healthz/../x becomes /x, an escaped slash gets a
    redirect). Whatever it does, the upstream sees either nothing or an exact health path."""
    gw = health_gw
    before = len(upstream_paths(gw))
    r = gw.request("GET", path)
    new = upstream_paths(gw)[before:]
    if r.status == 200:
        assert len(new) == 1 and bare(new[0]) in HEALTH, (path, new)
    else:
        assert new == [], (path, r, new)
        assert r.status in (401, 400, 307), (path, r)  # never served upstream
        if r.status == 401:
            assert_openai_error(r, 401, "missing_credentials")


@pytest.mark.parametrize("path", NEAR_MISSES)
def test_near_miss_without_normalisation_needs_credentials(raw_gw, path, api_key):
    """The filter sees the raw path: anything but an exact health path is authenticated."""
    gw = raw_gw
    before = len(upstream_paths(gw))
    r = gw.request("GET", path)
    if r.status == 400 and not r.headers.get("content-type", "").startswith("application/json"):
        # Envoy itself refused the request line (e.g. a NUL escape); the filter never ran.
        assert upstream_paths(gw)[before:] == []
        return
    assert_openai_error(r, 401, "missing_credentials")
    assert upstream_paths(gw)[before:] == [], path
    # With a credential the same path goes upstream verbatim: the filter did not rewrite it.
    r = gw.request("GET", path, headers={"x-api-key": api_key[0]})
    assert r.status != 401, r
    got = upstream_paths(gw)[before:]
    # (Python's http.server, under the mock, collapses a leading "//" itself.)
    want = "/" + path.lstrip("/") if path.startswith("//") else path
    assert got == [want], (path, got)


def test_health_exemption_skips_authentication_only(health_gw, raw_gw):
    for gw in (health_gw, raw_gw):
        before = len(upstream_paths(gw))
        r = gw.request("GET", "/healthz", headers={"x-pad": "p" * 9 * 1024})
        assert_openai_error(r, 431, "request_header_fields_too_large")
        r = gw.request("GET", "/healthz?x=1", headers=[("x-pad", "p" * 5000),
                                                       ("x-pad-2", "p" * 4000)])
        assert_openai_error(r, 431, "request_header_fields_too_large")
        r = gw.request("POST", "/healthz", body=b"x" * (1_048_576 + 1))
        assert_openai_error(r, 413, "request_too_large")
        assert upstream_paths(gw)[before:] == []


def test_health_check_with_a_bad_credential_still_strips_it(health_gw):
    gw = health_gw
    r = gw.request("GET", "/healthz", headers={"x-api-key": "lag_bogus", **bearer("garbage")})
    assert r.status == 200, r
    seen = gw.upstream.requests("/healthz")[-1]["headers"]
    assert "x-api-key" not in seen and "authorization" not in seen, seen
    assert not [k for k in seen if k.startswith("x-auth-")], seen


def test_except_health_check_false_authenticates_health_paths(strict_gw, api_key):
    gw = strict_gw
    for path in HEALTH + ("/healthz?x=1",):
        before = len(upstream_paths(gw))
        r = gw.request("GET", path)
        assert_openai_error(r, 401, "missing_credentials")
        assert upstream_paths(gw)[before:] == []
        r = gw.request("GET", path, headers={"x-api-key": api_key[0]})
        assert r.status == 200, r
        seen = gw.upstream.requests()[-1]["headers"]
        assert seen["x-auth-method"] == "api_key" and seen["x-auth-user"] == "hana"
    assert gw.stat("llm_api_guard.health_check_exempt") == 0


def test_custom_health_paths_replace_the_defaults(custom_gw):
    gw = custom_gw
    before = len(upstream_paths(gw))
    for path in ("/livez", "/status/ping?verbose=1"):
        r = gw.request("GET", path)
        assert r.status == 404 and r.json()["error"]["code"] == "not_found", r  # the mock's 404
    assert [bare(p) for p in upstream_paths(gw)[before:]] == ["/livez", "/status/ping"]
    for path in HEALTH + ("/status", "/livez/"):
        assert_openai_error(gw.request("GET", path), 401, "missing_credentials")
    assert len(upstream_paths(gw)) == before + 2


# ------------------------------------------------------------------------------------------------
# identity headers
def auth_headers(seen: dict) -> dict:
    return {k: v for k, v in seen.items() if k.startswith("x-auth")}


def test_forged_identity_headers_removed_on_unauthenticated_health_check(health_gw):
    r = health_gw.request("GET", "/healthz", headers=FORGED + [("x-keep", "yes")])
    assert r.status == 200, r
    seen = health_gw.upstream.requests("/healthz")[-1]["headers"]
    assert auth_headers(seen) == {}, seen
    assert seen["x-keep"] == "yes"


def test_forged_identity_headers_replaced_after_api_key_auth(health_gw, api_key):
    key = api_key[0]
    r = health_gw.request("POST", "/echo", json={}, headers=FORGED + [("X-API-Key", key)])
    assert r.status == 200, r
    seen = r.json()["headers"]
    assert auth_headers(seen) == {"x-auth-method": "api_key", "x-auth-user": "hana",
                                  "x-auth-key-id": key_id(key)}, seen
    assert "x-api-key" not in seen
    assert key not in r.text


def test_forged_identity_headers_replaced_after_jwt_auth(health_gw):
    tok = token(KEYS["rsa"], "RS256", claims("jay"))
    r = health_gw.request("GET", "/echo", headers=FORGED + list(bearer(tok).items()))
    assert r.status == 200, r
    seen = r.json()["headers"]
    # No x-auth-key-id for a JWT: the client's forged one must not survive either.
    assert auth_headers(seen) == {"x-auth-method": "jwt", "x-auth-user": "jay"}, seen
    assert "authorization" not in seen
    assert tok not in r.text


def test_both_credentials_stripped_when_both_authenticate(health_gw, api_key):
    key = api_key[0]
    tok = token(KEYS["rsa"], "RS256", claims("jay"))
    r = health_gw.request("GET", "/echo", headers={"x-api-key": key, **bearer(tok)})
    assert r.status == 200, r
    seen = r.json()["headers"]
    assert seen["x-auth-method"] == "jwt+api_key"
    assert "x-api-key" not in seen and "authorization" not in seen
    rec = health_gw.upstream.requests("/echo")[-1]["headers"]
    assert key not in str(rec) and tok not in str(rec)


def test_forged_headers_never_reach_upstream_on_denial(health_gw, raw_gw):
    for gw in (health_gw, raw_gw):
        before = len(upstream_paths(gw))
        r = gw.request("GET", "/echo", headers=FORGED)
        assert_openai_error(r, 401, "missing_credentials")
        r = gw.request("GET", "/echo", headers=FORGED + [("x-api-key", "lag_nope")])
        assert_openai_error(r, 401, "invalid_api_key")
        assert upstream_paths(gw)[before:] == []
