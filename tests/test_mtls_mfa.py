"""mTLS identities, multi-factor authentication and method alternatives against a real Envoy.

TLS gateways use the harness's listener with ``tls=True, require_client_cert=False``: TLS 1.3,
client certificates requested and verified against the dev CA when presented (Envoy's
``validation_context``) but not mandatory at the handshake, so "no certificate" reaches the
filter. Certificates (scripts/gen_certs.sh):

- ``client``: URI SAN spiffe://example.org/ns/apps/sa/client, DNS SAN client.example.org,
  subject ``CN=client,O=llm-api-guard dev``;
- ``other-client``: URI SAN spiffe://example.org/ns/apps/sa/other, no DNS SAN,
  subject ``CN=other-client,O=llm-api-guard dev``.

API keys are made by ``dist/llm-api-guard keys new`` (pepper: the harness's TEST_PEPPER) and
put inline in ``api_key_management.keys``; JWTs are signed by PyJWT (tests/jwt_tokens.py).
TLS 1.2 refusal is covered by tests/test_tls.py.
"""
from __future__ import annotations

import pytest

from harness import filter_config
from jwt_tokens import (AUDIENCE, INVALID_TOKEN_CHALLENGE, ISSUER, KEYS, bearer, claims,
                        jwks, token)
from keytool import assert_openai_error, change_char, key_id, load_keys, new_key

CLIENT_URI = "spiffe://example.org/ns/apps/sa/client"
OTHER_URI = "spiffe://example.org/ns/apps/sa/other"
CLIENT_DNS = "client.example.org"
CLIENT_SUBJECT = "CN=client,O=llm-api-guard dev"
OTHER_SUBJECT = "CN=other-client,O=llm-api-guard dev"

JWT = {"enabled": True, "issuer": ISSUER, "audience": AUDIENCE, "algorithm": "ES256",
       "jwks": jwks(KEYS["ec256"])}
OFF = {"enabled": False}


def mtls_auth(**mtls) -> dict:
    return {"enabled": True, "methods": {"jwt": OFF, "api_key": OFF,
                                         "mtls": {"enabled": True, **mtls}}}


@pytest.fixture(scope="module")
def api_keys(tmp_path_factory, cli_path):
    """Two keys from the CLI: ``{"kim": key, "lou": key}`` and their records."""
    keyset = tmp_path_factory.mktemp("mfa-keys") / "keyset.json"
    keys = {u: new_key(keyset, u) for u in ("kim", "lou")}
    return keys, load_keys(keyset)


def key_mgmt(records) -> dict:
    return {"enabled": True, "keys": records}


# ------------------------------------------------------------------------------------------------
# gateways
def tls_gateway(factory, auth: dict, **sections):
    return factory(filter_config(authentication=auth, **sections), tls=True,
                   require_client_cert=False)


@pytest.fixture(scope="module")
def uri_gw(module_gateway_factory):
    return tls_gateway(module_gateway_factory, mtls_auth(allowed_sans=[CLIENT_URI]))


@pytest.fixture(scope="module")
def dns_gw(module_gateway_factory):
    return tls_gateway(module_gateway_factory, mtls_auth(allowed_sans=[CLIENT_DNS.upper()]))


@pytest.fixture(scope="module")
def wildcard_gw(module_gateway_factory):
    return tls_gateway(module_gateway_factory, mtls_auth(allowed_sans=["*.example.org"]))


@pytest.fixture(scope="module")
def subject_gw(module_gateway_factory):
    """``*.org`` must not match client.example.org (one label only), so the client can pass
    only through its exact subject."""
    return tls_gateway(module_gateway_factory, mtls_auth(
        allowed_sans=["*.org", "spiffe://example.org/ns/apps/sa/clien"],
        allowed_subjects=[CLIENT_SUBJECT]))


@pytest.fixture(scope="module")
def regex_gw(module_gateway_factory):
    return tls_gateway(module_gateway_factory, mtls_auth(
        allowed_subjects=["regex:CN=other-[a-z]+,O=llm-api-guard dev", "regex:CN=clien"]))


@pytest.fixture(scope="module")
def any_cert_gw(module_gateway_factory):
    return tls_gateway(module_gateway_factory, mtls_auth(allowed_sans=[], allowed_subjects=[]))


@pytest.fixture(scope="module")
def mfa_key_gw(module_gateway_factory, api_keys):
    auth = {"enabled": True, "methods": {"jwt": JWT, "api_key": {"enabled": True},
                                         "mtls": OFF},
            "mfa": {"enabled": True, "require": ["jwt", "api_key"]}}
    return module_gateway_factory(filter_config(authentication=auth,
                                                api_key_management=key_mgmt(api_keys[1])))


@pytest.fixture(scope="module")
def mfa_mtls_gw(module_gateway_factory):
    auth = {"enabled": True, "methods": {"jwt": JWT, "api_key": OFF,
                                         "mtls": {"enabled": True, "allowed_sans": [CLIENT_URI]}},
            "mfa": {"enabled": True, "require": ["mtls", "jwt"]}}
    return tls_gateway(module_gateway_factory, auth)


@pytest.fixture(scope="module")
def mfa_all_gw(module_gateway_factory, api_keys):
    """MFA without ``require``: every enabled method (mtls, jwt, api_key) is needed."""
    auth = {"enabled": True, "methods": {"jwt": JWT, "api_key": {"enabled": True},
                                         "mtls": {"enabled": True, "allowed_sans": [CLIENT_URI]}},
            "mfa": {"enabled": True}}
    return tls_gateway(module_gateway_factory, auth, api_key_management=key_mgmt(api_keys[1]))


@pytest.fixture(scope="module")
def alt_gw(module_gateway_factory, api_keys):
    """All three methods as alternatives (no MFA)."""
    auth = {"enabled": True, "methods": {"jwt": JWT, "api_key": {"enabled": True},
                                         "mtls": {"enabled": True, "allowed_sans": [CLIENT_URI]}}}
    return tls_gateway(module_gateway_factory, auth, api_key_management=key_mgmt(api_keys[1]))


# ------------------------------------------------------------------------------------------------
# helpers
def echo_count(gw) -> int:
    return len(gw.upstream.requests("/echo"))


def ok(gw, *, cert=None, headers=None) -> dict:
    before = echo_count(gw)
    r = gw.request("GET", "/echo", cert=cert, headers=headers)
    assert r.status == 200, r
    assert echo_count(gw) == before + 1
    return r.json()["headers"]


def denied(gw, status: int, code: str, *, cert=None, headers=None):
    before = echo_count(gw)
    r = gw.request("GET", "/echo", cert=cert, headers=headers)
    err = assert_openai_error(r, status, code)
    assert err["type"] == ("permission_error" if status == 403 else "authentication_error")
    assert echo_count(gw) == before, "a refused request reached the upstream"
    return r


def jwt_for(sub: str) -> str:
    return token(KEYS["ec256"], "ES256", claims(sub))


def apikey(key: str) -> dict:
    return {"x-api-key": key}


# ------------------------------------------------------------------------------------------------
# mTLS identities
def test_allowed_uri_san_passes(uri_gw):
    seen = ok(uri_gw, cert="client", headers={"x-auth-user": "admin", "x-auth-method": "api_key"})
    assert seen["x-auth-method"] == "mtls"
    assert seen["x-auth-user"] == CLIENT_URI
    assert "x-auth-key-id" not in seen
    assert seen["x-forwarded-proto"] == "https"


def test_no_client_certificate_is_403(uri_gw):
    r = denied(uri_gw, 403, "client_certificate_required", cert=None)
    assert "www-authenticate" not in r.headers
    # Credentials of methods that are not enabled do not help.
    denied(uri_gw, 403, "client_certificate_required", cert=None,
           headers={**bearer(jwt_for("alice")), "x-api-key": "lag_whatever"})


def test_other_client_is_not_allowed(uri_gw):
    r = denied(uri_gw, 403, "client_not_allowed", cert="other-client")
    assert OTHER_URI not in r.text and CLIENT_URI not in r.text


def test_denials_are_counted(uri_gw):
    gw = uri_gw
    a = gw.stat("llm_api_guard.denied.client_certificate_required")
    b = gw.stat("llm_api_guard.denied.client_not_allowed")
    denied(gw, 403, "client_certificate_required", cert=None)
    denied(gw, 403, "client_not_allowed", cert="other-client")
    denied(gw, 403, "client_not_allowed", cert="other-client")
    assert gw.stat("llm_api_guard.denied.client_certificate_required") == a + 1
    assert gw.stat("llm_api_guard.denied.client_not_allowed") == b + 2


def test_dns_san_exact_match_is_case_insensitive(dns_gw):
    seen = ok(dns_gw, cert="client")
    assert (seen["x-auth-method"], seen["x-auth-user"]) == ("mtls", CLIENT_DNS)
    denied(dns_gw, 403, "client_not_allowed", cert="other-client")
    denied(dns_gw, 403, "client_certificate_required", cert=None)


def test_dns_wildcard_matches_one_label(wildcard_gw):
    seen = ok(wildcard_gw, cert="client")
    assert (seen["x-auth-method"], seen["x-auth-user"]) == ("mtls", CLIENT_DNS)
    # other-client has only a URI SAN: a DNS wildcard never matches a URI.
    denied(wildcard_gw, 403, "client_not_allowed", cert="other-client")


def test_exact_subject(subject_gw):
    seen = ok(subject_gw, cert="client")
    # Neither "*.org" (two labels short) nor the URI prefix matched: the subject did.
    assert (seen["x-auth-method"], seen["x-auth-user"]) == ("mtls", CLIENT_SUBJECT)
    denied(subject_gw, 403, "client_not_allowed", cert="other-client")


def test_regex_subject_matches_the_whole_subject(regex_gw):
    seen = ok(regex_gw, cert="other-client")
    assert (seen["x-auth-method"], seen["x-auth-user"]) == ("mtls", OTHER_SUBJECT)
    # "regex:CN=clien" would match a prefix of the client's subject: anchored, it does not.
    denied(regex_gw, 403, "client_not_allowed", cert="client")


def test_empty_allowlists_accept_any_verified_certificate(any_cert_gw):
    seen = ok(any_cert_gw, cert="client")
    assert (seen["x-auth-method"], seen["x-auth-user"]) == ("mtls", CLIENT_URI)
    seen = ok(any_cert_gw, cert="other-client")
    assert (seen["x-auth-method"], seen["x-auth-user"]) == ("mtls", OTHER_URI)
    denied(any_cert_gw, 403, "client_certificate_required", cert=None)


# ------------------------------------------------------------------------------------------------
# MFA: jwt + api_key
def test_mfa_needs_both_jwt_and_api_key(mfa_key_gw, api_keys):
    gw = mfa_key_gw
    keys, _ = api_keys
    tok = jwt_for("jo")
    r = denied(gw, 401, "missing_credentials", headers=bearer(tok))
    challenges = [v for k, v in r.header_list if k == "www-authenticate"]
    assert any(c.startswith("Bearer ") for c in challenges), challenges
    assert any(c.startswith("ApiKey ") for c in challenges), challenges
    denied(gw, 401, "missing_credentials", headers=apikey(keys["kim"]))
    denied(gw, 401, "missing_credentials")
    seen = ok(gw, headers={**bearer(tok), **apikey(keys["kim"]),
                           "x-auth-method": "mtls", "x-auth-key-id": "forged"})
    assert seen["x-auth-method"] == "jwt+api_key"
    assert seen["x-auth-user"] == "jo"  # the JWT subject names the user
    assert seen["x-auth-key-id"] == key_id(keys["kim"])
    assert "authorization" not in seen and "x-api-key" not in seen


def test_mfa_one_invalid_factor_fails(mfa_key_gw, api_keys):
    gw = mfa_key_gw
    keys, _ = api_keys
    tok = jwt_for("jo")
    bad_tok = token(KEYS["ec256b"], "ES256", claims("jo"), kid=KEYS["ec256"].kid)
    r = denied(gw, 401, "invalid_token", headers={**bearer(bad_tok), **apikey(keys["kim"])})
    assert INVALID_TOKEN_CHALLENGE in [v for k, v in r.header_list if k == "www-authenticate"]
    denied(gw, 401, "invalid_api_key",
           headers={**bearer(tok), **apikey(change_char(keys["kim"], 30))})
    expired = token(KEYS["ec256"], "ES256", claims("jo", exp_in=-3600, iat_in=-7200))
    denied(gw, 401, "expired_token", headers={**bearer(expired), **apikey(keys["lou"])})


# MFA: mtls + jwt over TLS
def test_mfa_mtls_and_jwt(mfa_mtls_gw):
    gw = mfa_mtls_gw
    tok = jwt_for("pat")
    seen = ok(gw, cert="client", headers={**bearer(tok), "x-auth-user": "root"})
    assert seen["x-auth-method"] == "mtls+jwt"
    assert seen["x-auth-user"] == "pat"
    assert "authorization" not in seen
    denied(gw, 401, "missing_credentials", cert="client")  # no JWT
    denied(gw, 403, "client_certificate_required", cert=None, headers=bearer(tok))
    denied(gw, 403, "client_not_allowed", cert="other-client", headers=bearer(tok))
    denied(gw, 401, "invalid_token", cert="client",
           headers=bearer(token(KEYS["ec256b"], "ES256", claims("pat"), kid="ec-256")))


def test_mfa_default_requires_every_enabled_method(mfa_all_gw, api_keys):
    gw = mfa_all_gw
    keys, _ = api_keys
    tok = jwt_for("quinn")
    all_three = {**bearer(tok), **apikey(keys["lou"])}
    seen = ok(gw, cert="client", headers=all_three)
    assert seen["x-auth-method"] == "mtls+jwt+api_key"
    assert seen["x-auth-user"] == "quinn"
    assert seen["x-auth-key-id"] == key_id(keys["lou"])
    assert "authorization" not in seen and "x-api-key" not in seen
    denied(gw, 403, "client_certificate_required", cert=None, headers=all_three)
    denied(gw, 401, "missing_credentials", cert="client", headers=bearer(tok))
    denied(gw, 401, "missing_credentials", cert="client", headers=apikey(keys["lou"]))


# ------------------------------------------------------------------------------------------------
# alternatives (no MFA)
def test_any_one_method_suffices(alt_gw, api_keys):
    gw = alt_gw
    keys, records = api_keys
    seen = ok(gw, cert=None, headers=bearer(jwt_for("rae")))
    assert (seen["x-auth-method"], seen["x-auth-user"]) == ("jwt", "rae")
    assert "x-auth-key-id" not in seen and "authorization" not in seen
    seen = ok(gw, cert=None, headers=apikey(keys["kim"]))
    assert (seen["x-auth-method"], seen["x-auth-user"]) == ("api_key", "kim")
    assert seen["x-auth-key-id"] == key_id(keys["kim"])
    assert "x-api-key" not in seen
    assert {r["id"]: r["user"] for r in records}[key_id(keys["kim"])] == "kim"
    seen = ok(gw, cert="client")
    assert (seen["x-auth-method"], seen["x-auth-user"]) == ("mtls", CLIENT_URI)
    # Several valid credentials: all are reported, in the order mtls, jwt, api_key.
    seen = ok(gw, cert="client", headers={**apikey(keys["lou"]), **bearer(jwt_for("rae"))})
    assert seen["x-auth-method"] == "mtls+jwt+api_key"
    assert seen["x-auth-user"] == "rae"
    assert seen["x-auth-key-id"] == key_id(keys["lou"])
    seen = ok(gw, cert=None, headers={**apikey(keys["lou"]), **bearer(jwt_for("rae"))})
    assert seen["x-auth-method"] == "jwt+api_key"


def test_nothing_presented(alt_gw):
    r = denied(alt_gw, 401, "missing_credentials", cert=None)
    challenges = [v for k, v in r.header_list if k == "www-authenticate"]
    assert any(c.startswith("Bearer ") for c in challenges)
    assert any(c.startswith("ApiKey ") for c in challenges)


def test_presented_but_invalid_credential_fails_without_falling_through(alt_gw, api_keys):
    gw = alt_gw
    keys, _ = api_keys
    good_key = apikey(keys["kim"])
    bad_jwt = bearer(token(KEYS["attacker"], "RS256", claims("kim")))
    denied(gw, 401, "invalid_token", cert=None, headers={**good_key, **bad_jwt})
    denied(gw, 401, "invalid_token", cert="client", headers={**good_key, **bad_jwt})
    denied(gw, 401, "invalid_api_key", cert=None,
           headers={**bearer(jwt_for("rae")), **apikey(change_char(keys["kim"], 40))})
    denied(gw, 401, "invalid_api_key", cert="client", headers=apikey("lag_not_a_key"))
    # A verified certificate that is not allowed is a presented, invalid credential too.
    denied(gw, 403, "client_not_allowed", cert="other-client", headers=bearer(jwt_for("rae")))
    denied(gw, 403, "client_not_allowed", cert="other-client", headers=good_key)
