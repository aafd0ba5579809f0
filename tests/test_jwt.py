"""JWT bearer authentication (AS-2) against a real Envoy.

Tokens are signed by PyJWT with keys from ``cryptography``; JWKS documents are built by hand
(tests/jwt_tokens.py). Hostile tokens (``alg: none``, HS256 keyed with the RSA public key PEM,
tampered / truncated ones) are assembled by hand.

Gateways (one Envoy each, shared per module):

- ``inline_gw``: inline JWKS (RSA, EC P-256, EC P-384, Ed25519), ``algorithms`` RS256 RS384
  RS512 PS256 ES256 ES384 EdDSA HS256 (secret from an env var), two audiences, a required
  claim ``tenant``, ``claims_to_headers``, default skew (60 s), default ``forward_token``;
- ``rs256_gw``: the guide's single ``algorithm: RS256``, one audience, ``forward_token: true``,
  ``clock_skew_seconds: 0`` (cache expiry), a JWKS that also holds an EC key;
- remote JWKS gateways, each with its own mock IdP (cluster ``idp``): ``slow_idp_gw`` (the
  first JWKS answer takes 3 s), ``rotation_gw`` (2 workers), ``ondemand_gw`` (1 worker, exact
  fetch counts), ``refresh_gw`` (``refresh_seconds: 1``), ``down_gw`` (IdP failing from the
  start).
"""
from __future__ import annotations

import json
import threading
import time

import pytest

from harness import MockUpstream, filter_config
from jwt_tokens import (ALG_KEY, AUDIENCE, BEARER_CHALLENGE, INVALID_TOKEN_CHALLENGE, ISSUER,
                        KEYS, b64url_json, bearer, claims, hs256, jwks, jwt_method, token,
                        unsigned, with_payload)
from keytool import DocServer, assert_openai_error, wait_stat, wait_stat_above

JWKS_PATH = "/.well-known/jwks.json"
HS_ENV = "LLM_API_GUARD_TEST_JWT_HS256"
HS_SECRET = "hs256-test-secret-0123456789abcdef-not-a-real-one"
INLINE_ALGS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA", "HS256"]
SECOND_AUD = "llm-api-batch"
CLAIM_HEADERS = {"tenant": "x-tenant", "email": "x-user-email", "level": "x-level"}


# ------------------------------------------------------------------------------------------------
# gateways
@pytest.fixture(scope="module")
def inline_gw(module_gateway_factory):
    auth = jwt_method(algorithms=INLINE_ALGS, audience=[AUDIENCE, SECOND_AUD],
                      jwks=jwks(KEYS["rsa"], KEYS["ec256"], KEYS["ec384"], KEYS["ed"]),
                      hs256_secret_env=HS_ENV, required_claims=["tenant"],
                      claims_to_headers=CLAIM_HEADERS)
    return module_gateway_factory(filter_config(authentication=auth),
                                  env={HS_ENV: HS_SECRET}, host_env_keys=[HS_ENV])


@pytest.fixture(scope="module")
def rs256_gw(module_gateway_factory):
    auth = jwt_method(algorithm="RS256", jwks=jwks(KEYS["rsa"], KEYS["ec256"]),
                      forward_token=True, clock_skew_seconds=0)
    return module_gateway_factory(filter_config(authentication=auth))


REMOTE_ALGS = ["RS256", "ES256", "EdDSA"]
REFETCH_MS = 500  # ondemand_gw's min_refetch_interval_ms (rotation_gw keeps the 1000 default)


def remote_auth(**remote) -> dict:
    src = {"cluster": "idp", "path": JWKS_PATH, "refresh_seconds": 300}
    src.update(remote)
    return jwt_method(algorithms=REMOTE_ALGS, remote_jwks=src)


@pytest.fixture(scope="module")
def idps():
    """Mock IdPs started before their gateway (so the first fetch already finds the JWKS)."""
    made: list[MockUpstream] = []

    def make(doc, status=200) -> MockUpstream:
        up = MockUpstream().start()
        up.set_document(JWKS_PATH, doc, status=status)
        made.append(up)
        return up

    yield make
    for up in made:
        up.stop()


@pytest.fixture(scope="module")
def rotation_gw(module_gateway_factory, idps):
    up = idps(jwks(KEYS["rsa"]))
    return module_gateway_factory(filter_config(authentication=remote_auth()), upstream=up,
                                  concurrency=2)


@pytest.fixture(scope="module")
def ondemand_gw(module_gateway_factory, idps):
    up = idps(jwks(KEYS["rsa"]))
    return module_gateway_factory(
        filter_config(authentication=remote_auth(min_refetch_interval_ms=REFETCH_MS)), upstream=up,
        concurrency=1)


@pytest.fixture(scope="module")
def refresh_gw(module_gateway_factory, idps):
    up = idps(jwks(KEYS["rsa"]))
    return module_gateway_factory(filter_config(authentication=remote_auth(refresh_seconds=1)),
                                  upstream=up, concurrency=2)


@pytest.fixture(scope="module")
def down_gw(module_gateway_factory, idps):
    up = idps("upstream connect error", status=500)
    return module_gateway_factory(filter_config(authentication=remote_auth()), upstream=up)


# ------------------------------------------------------------------------------------------------
# helpers
def tenant_claims(sub="alice", **kw) -> dict:
    kw.setdefault("tenant", "acme")
    return claims(sub, **kw)


def echo_count(gw) -> int:
    return len(gw.upstream.requests("/echo"))


def jwks_fetches(gw) -> int:
    return len(gw.upstream.requests(JWKS_PATH))


def passes(gw, tok: str, sub: str = "alice", **kw) -> dict:
    """The token is accepted: 200 from /echo with the filter's identity headers and without the
    token; returns the headers the upstream saw."""
    before = echo_count(gw)
    r = gw.request("GET", "/echo", headers=bearer(tok), **kw)
    assert r.status == 200, r
    seen = r.json()["headers"]
    assert seen["x-auth-method"] == "jwt", seen
    assert seen["x-auth-user"] == sub, seen
    assert "x-auth-key-id" not in seen, seen
    assert echo_count(gw) == before + 1
    return seen


def refused(gw, tok: str | None, code: str = "invalid_token",
            challenge: str = INVALID_TOKEN_CHALLENGE, headers: dict | None = None):
    """401 with the OpenAI-style error and the bearer challenge; nothing reached the upstream."""
    before = echo_count(gw)
    hdrs = dict(headers or {})
    if tok is not None:
        hdrs.update(bearer(tok))
    r = gw.request("GET", "/echo", headers=hdrs)
    err = assert_openai_error(r, 401, code, "authentication_error")
    assert r.headers.get("www-authenticate") == challenge, r.headers
    if tok:
        assert tok not in r.text
    time.sleep(0.05)
    assert echo_count(gw) == before, "a refused request reached the upstream"
    return err


# ------------------------------------------------------------------------------------------------
# accepted tokens
@pytest.mark.parametrize("alg", INLINE_ALGS)
def test_valid_token_of_each_listed_algorithm_passes(inline_gw, alg):
    payload = tenant_claims("user-" + alg.lower(), email="u@example.org", level=3)
    if alg == "HS256":
        tok = hs256(HS_SECRET.encode(), payload)
    else:
        tok = token(KEYS[ALG_KEY[alg]], alg, payload)
    seen = passes(inline_gw, tok, "user-" + alg.lower())
    assert "authorization" not in seen, "forward_token defaults to false"
    assert seen["x-tenant"] == "acme"
    assert seen["x-user-email"] == "u@example.org"
    assert seen["x-level"] == "3"  # non-string claims are sent as their JSON text
    # The upstream's own record agrees with what /echo reported.
    rec = inline_gw.upstream.requests("/echo")[-1]["headers"]
    assert "authorization" not in rec and rec["x-auth-user"] == "user-" + alg.lower()


def test_any_configured_audience_passes(inline_gw):
    rsa = KEYS["rsa"]
    passes(inline_gw, token(rsa, "RS256", tenant_claims(aud=SECOND_AUD)))
    passes(inline_gw, token(rsa, "RS256", tenant_claims(aud=["someone-else", AUDIENCE])))
    refused(inline_gw, token(rsa, "RS256", tenant_claims(aud=["someone-else", "llm"])))


def test_claim_headers_absent_when_claim_absent(inline_gw):
    seen = passes(inline_gw, token(KEYS["ec256"], "ES256", tenant_claims("bob")), "bob")
    assert seen["x-tenant"] == "acme"
    assert "x-user-email" not in seen and "x-level" not in seen


def test_claim_header_sent_by_client_is_overwritten_by_the_claim(inline_gw):
    tok = token(KEYS["rsa"], "RS256", tenant_claims("bob", email="bob@example.org"))
    r = inline_gw.request("GET", "/echo", headers={**bearer(tok),
                                                   "x-user-email": "admin@example.org",
                                                   "x-tenant": "other-tenant"})
    assert r.status == 200, r
    seen = r.json()["headers"]
    assert seen["x-user-email"] == "bob@example.org"
    assert seen["x-tenant"] == "acme"


def test_claim_header_sent_by_client_is_removed_when_claim_absent(inline_gw):
    tok = token(KEYS["rsa"], "RS256", tenant_claims("bob"))  # no email claim
    r = inline_gw.request("GET", "/echo", headers={**bearer(tok),
                                                   "x-user-email": "admin@example.org"})
    assert r.status == 200, r
    assert "x-user-email" not in r.json()["headers"], r.json()["headers"]


def test_bearer_scheme_is_case_insensitive(inline_gw):
    tok = token(KEYS["ed"], "EdDSA", tenant_claims("carol"))
    r = inline_gw.request("GET", "/echo", headers={"authorization": "bearer " + tok})
    assert r.status == 200, r
    assert r.json()["headers"]["x-auth-user"] == "carol"


def test_verified_token_is_accepted_again_from_cache(inline_gw):
    tok = token(KEYS["rsa"], "PS256", tenant_claims("dave", email="d@example.org"))
    first = passes(inline_gw, tok, "dave")
    for _ in range(3):  # fresh connections: both workers, cached or not
        again = passes(inline_gw, tok, "dave")
        assert again["x-user-email"] == first["x-user-email"] == "d@example.org"
        assert again["x-tenant"] == "acme"
    # A cached token does not make a tampered copy acceptable.
    refused(inline_gw, with_payload(tok, tenant_claims("admin", email="d@example.org")))


def test_forward_token_true_forwards_the_authorization_header(rs256_gw):
    tok = token(KEYS["rsa"], "RS256", claims("erin"))
    seen = passes(rs256_gw, tok, "erin")
    assert seen["authorization"] == "Bearer " + tok


# ------------------------------------------------------------------------------------------------
# refused tokens
def test_no_credential_is_missing_credentials(inline_gw):
    err = refused(inline_gw, None, code="missing_credentials", challenge=BEARER_CHALLENGE)
    assert err["type"] == "authentication_error"
    # Another scheme is not a bearer token; an empty bearer token is no token either.
    refused(inline_gw, None, code="missing_credentials", challenge=BEARER_CHALLENGE,
            headers={"authorization": "Basic YWxpY2U6c2VjcmV0"})


def test_empty_bearer_token_is_refused(inline_gw):
    before = echo_count(inline_gw)
    r = inline_gw.request("GET", "/echo", headers={"authorization": "Bearer "})
    assert r.status == 401, r
    assert r.json()["error"]["code"] in ("missing_credentials", "invalid_token")
    assert echo_count(inline_gw) == before


def test_expired_token(inline_gw):
    tok = token(KEYS["rsa"], "RS256", tenant_claims(exp_in=-120, iat_in=-600))
    err = refused(inline_gw, tok, code="expired_token")
    assert "expired" in err["message"].lower()


def test_not_yet_valid_token(inline_gw):
    refused(inline_gw, token(KEYS["rsa"], "RS256", tenant_claims(nbf_in=300)))


@pytest.mark.parametrize("iss", [ISSUER + "/", "https://evil.example", ISSUER.upper(), None])
def test_wrong_or_missing_issuer(inline_gw, iss):
    refused(inline_gw, token(KEYS["rsa"], "RS256", tenant_claims(iss=iss)))


@pytest.mark.parametrize("aud", ["other-api", AUDIENCE.upper(), [], ["x", "y"], None])
def test_wrong_or_missing_audience(inline_gw, aud):
    refused(inline_gw, token(KEYS["rsa"], "RS256", tenant_claims(aud=aud)))


def test_bad_signatures(inline_gw):
    good = token(KEYS["rsa"], "RS256", tenant_claims("mallory"))
    passes(inline_gw, good, "mallory")
    # Signed by a key that is not published, under the published kid.
    refused(inline_gw, token(KEYS["attacker"], "RS256", tenant_claims("mallory")))
    # A valid token whose payload was changed.
    refused(inline_gw, with_payload(good, tenant_claims("admin")))
    # EC signature of another P-256 key under the published kid.
    refused(inline_gw, token(KEYS["ec256b"], "ES256", tenant_claims(), kid=KEYS["ec256"].kid))
    # The signature of one valid token on the header+payload of another.
    other = token(KEYS["rsa"], "RS256", tenant_claims("someone"))
    refused(inline_gw, ".".join(good.split(".")[:2] + other.split(".")[2:]))
    # HS256 with a wrong secret.
    refused(inline_gw, hs256(b"not-the-configured-secret-0123456789", tenant_claims()))


def test_embedded_jwk_header_is_not_trusted(inline_gw):
    attacker = KEYS["attacker"]
    for kid in (KEYS["rsa"].kid, "attacker-kid"):
        tok = token(attacker, "RS256", tenant_claims("admin"), kid=kid,
                    headers={"jwk": attacker.jwk(kid=kid)})
        refused(inline_gw, tok)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(inline_gw, alg):
    payload = tenant_claims("admin")
    refused(inline_gw, unsigned(payload, alg))
    refused(inline_gw, unsigned(payload, alg, kid=KEYS["rsa"].kid))
    # With a (meaningless) signature part taken from a valid token.
    sig = token(KEYS["rsa"], "RS256", payload).split(".")[2]
    refused(inline_gw, unsigned(payload, alg, signature=sig))


@pytest.mark.parametrize("gw_name", ["inline_gw", "rs256_gw"])
def test_hs256_keyed_with_the_rsa_public_key_is_refused(request, gw_name):
    """Key confusion: the verifier must never use the RSA public key as an HMAC secret, whether
    HS256 is off the list (rs256_gw) or allowed with its own secret (inline_gw)."""
    gw = request.getfixturevalue(gw_name)
    pem = KEYS["rsa"].public_pem()
    payload = tenant_claims("admin")
    jwk_text = json.dumps(KEYS["rsa"].jwk()).encode()
    for secret in (pem, pem.rstrip(b"\n"), jwk_text):
        refused(gw, hs256(secret, payload, {"kid": KEYS["rsa"].kid}))
        refused(gw, hs256(secret, payload))


def test_algorithm_not_on_the_list_is_refused(inline_gw, rs256_gw):
    # The RSA key could verify PS512 / RS384, but the allowlist decides first.
    refused(inline_gw, token(KEYS["rsa"], "PS512", tenant_claims()))
    refused(inline_gw, token(KEYS["rsa"], "PS384", tenant_claims()))
    # The guide's single algorithm: RS256 only, even though the JWKS also holds the EC key.
    passes(rs256_gw, token(KEYS["rsa"], "RS256", claims()))
    refused(rs256_gw, token(KEYS["rsa"], "RS384", claims()))
    refused(rs256_gw, token(KEYS["rsa"], "RS512", claims()))
    refused(rs256_gw, token(KEYS["ec256"], "ES256", claims()))
    refused(rs256_gw, token(KEYS["rsa"], "PS256", claims()))
    refused(rs256_gw, hs256(HS_SECRET.encode(), claims()))


def test_key_of_another_type_under_the_tokens_kid_is_refused(inline_gw):
    # RS256 header naming the EC key's kid (signed with the RSA key).
    refused(inline_gw, token(KEYS["rsa"], "RS256", tenant_claims(), kid=KEYS["ec256"].kid))
    # A kid the inline JWKS does not have (nothing to refetch).
    refused(inline_gw, token(KEYS["rsa"], "RS256", tenant_claims(), kid="rsa-404"))


def test_truncated_and_garbage_tokens(inline_gw):
    good = token(KEYS["rsa"], "RS256", tenant_claims())
    head, payload, sig = good.split(".")
    bad = [
        good[:-6],  # signature cut short
        good[: len(good) // 2],
        f"{head}.{payload}",
        f"{head}.{payload}.",
        f"{head}..{sig}",
        f".{payload}.{sig}",
        f"{good}.{sig}",  # four parts
        good + "=",
        good.replace(".", "..", 1),
        "garbage",
        "a.b.c",
        "...",
        "e30.e30.e30",
        b64url_json({"alg": "RS256"}) + "." + "!!!!" + "." + sig,
        "not base64 at all.%%%.&&&",
        # Header typ other than JWT.
        token(KEYS["rsa"], "RS256", tenant_claims(), headers={"typ": "at+jwe"}),
    ]
    for tok in bad:
        refused(inline_gw, tok)
    passes(inline_gw, good)  # the intact token still works


def test_missing_exp_is_refused_by_default(inline_gw):
    refused(inline_gw, token(KEYS["rsa"], "RS256", tenant_claims(exp_in=None)))
    refused(inline_gw, hs256(HS_SECRET.encode(), tenant_claims(exp_in=None)))


def test_missing_required_claim_or_subject(inline_gw):
    payload = claims("alice")  # no tenant
    refused(inline_gw, token(KEYS["rsa"], "RS256", payload))
    refused(inline_gw, token(KEYS["rsa"], "RS256", tenant_claims(tenant=None)))
    refused(inline_gw, token(KEYS["rsa"], "RS256", tenant_claims(sub=None)))
    refused(inline_gw, token(KEYS["rsa"], "RS256", tenant_claims(sub="")))
    # Registered claims with the wrong JSON type.
    refused(inline_gw, token(KEYS["rsa"], "RS256", {**tenant_claims(), "exp": "soon"}))
    refused(inline_gw, token(KEYS["rsa"], "RS256", {**tenant_claims(), "iss": [ISSUER]}))


def test_clock_skew_default_60s(inline_gw):
    rsa = KEYS["rsa"]
    passes(inline_gw, token(rsa, "RS256", tenant_claims("skew-ok", exp_in=-30, iat_in=-300)),
           "skew-ok")
    refused(inline_gw, token(rsa, "RS256", tenant_claims(exp_in=-90, iat_in=-300)),
            code="expired_token")
    passes(inline_gw, token(rsa, "RS256", tenant_claims("nbf-ok", nbf_in=30)), "nbf-ok")
    refused(inline_gw, token(rsa, "RS256", tenant_claims(nbf_in=90)))


def test_cached_token_is_refused_once_past_exp(rs256_gw):
    """rs256_gw has clock_skew_seconds 0: a token accepted (and cached) a moment ago is
    refused as soon as its exp passes."""
    now = int(time.time())
    exp = now + 2
    tok = token(KEYS["rsa"], "RS256", claims("short-lived", exp_in=2, now=now))
    passes(rs256_gw, tok, "short-lived")
    passes(rs256_gw, tok, "short-lived")
    while time.time() < exp + 1.1:
        time.sleep(0.1)
    for _ in range(2):  # both workers
        refused(rs256_gw, tok, code="expired_token")


def test_denials_are_counted_and_logged_without_the_token(inline_gw):
    gw = inline_gw
    n_invalid = gw.stat("llm_api_guard.denied.invalid_token")
    n_expired = gw.stat("llm_api_guard.denied.token_expired")
    n_missing = gw.stat("llm_api_guard.denied.missing_credentials")
    forged = token(KEYS["attacker"], "RS256", tenant_claims("log-probe"))
    expired = token(KEYS["rsa"], "RS256", tenant_claims("log-probe", exp_in=-500, iat_in=-900))
    refused(gw, forged)
    refused(gw, unsigned(tenant_claims()))
    refused(gw, expired, code="expired_token")
    refused(gw, None, code="missing_credentials", challenge=BEARER_CHALLENGE)
    wait_stat(gw, "llm_api_guard.denied.invalid_token", n_invalid + 2)
    wait_stat(gw, "llm_api_guard.denied.token_expired", n_expired + 1)
    wait_stat(gw, "llm_api_guard.denied.missing_credentials", n_missing + 1)
    log = gw.log_text()
    for tok in (forged, expired):
        assert tok not in log and tok.split(".")[2][:24] not in log


# ------------------------------------------------------------------------------------------------
# remote JWKS
@pytest.fixture(scope="module")
def slow_idp():
    srv = DocServer(json.dumps(jwks(KEYS["rsa"], KEYS["ec256"])), delay=1.5)
    yield srv
    srv.stop()


def test_first_request_waits_for_the_first_jwks_fetch(module_gateway_factory, slow_idp):
    gw = module_gateway_factory(filter_config(authentication=remote_auth()),
                                extra_clusters={"idp": ("127.0.0.1", slow_idp.port)})
    t0 = time.time()
    seen = passes(gw, token(KEYS["ec256"], "ES256", claims("early-bird")), "early-bird")
    assert slow_idp.answered and min(slow_idp.answered) > t0, \
        "the JWKS was already loaded: the test did not exercise the wait"
    assert "authorization" not in seen
    assert gw.stat("llm_api_guard.jwks_fetch_failure") == 0
    assert gw.stat("llm_api_guard.requests_denied") == 0


def timed_pass(gw, tok, sub) -> float:
    t = time.monotonic()
    passes(gw, tok, sub)
    return time.monotonic() - t


def test_jwks_rotation_new_kids_pass_at_first_use(rotation_gw):
    gw = rotation_gw
    up = gw.upstream
    passes(gw, token(KEYS["rsa"], "RS256", claims("before-rotation")), "before-rotation")
    # Rotation 1: a new EC key the gateway has never seen.
    up.set_document(JWKS_PATH, jwks(KEYS["rsa"], KEYS["ec256"]))
    assert timed_pass(gw, token(KEYS["ec256"], "ES256", claims("rot-1")), "rot-1") < 5
    # Rotation 2, back to back: the on-demand refetch is rate-limited, the request is held.
    up.set_document(JWKS_PATH, jwks(KEYS["ec256"], KEYS["ed"]))
    assert timed_pass(gw, token(KEYS["ed"], "EdDSA", claims("rot-2")), "rot-2") < 5
    # Rotation 3, again at once, to a new RSA key.
    up.set_document(JWKS_PATH, jwks(KEYS["ed"], KEYS["rsa2"]))
    assert timed_pass(gw, token(KEYS["rsa2"], "RS256", claims("rot-3")), "rot-3") < 5
    # Every worker gets there: new tokens with the new kids on fresh connections.
    for i in range(4):
        passes(gw, token(KEYS["rsa2"], "RS256", claims(f"rot-3-{i}")), f"rot-3-{i}")
        passes(gw, token(KEYS["ed"], "EdDSA", claims(f"rot-2-{i}")), f"rot-2-{i}")
    assert gw.stat("llm_api_guard.requests_denied") == 0


def test_unknown_kid_is_refused_after_one_refetch(ondemand_gw):
    gw = ondemand_gw
    gw.upstream.set_document(JWKS_PATH, jwks(KEYS["rsa"]))
    passes(gw, token(KEYS["rsa"], "RS256", claims()))
    time.sleep(REFETCH_MS / 1000 + 0.1)  # past min_refetch_interval_ms of any earlier fetch
    n = jwks_fetches(gw)
    refused(gw, token(KEYS["rsa"], "RS256", claims(), kid="kid-nobody-published"))
    assert jwks_fetches(gw) == n + 1, "the unknown kid must trigger exactly one refetch"
    # A known kid needs no fetch.
    passes(gw, token(KEYS["rsa"], "RS256", claims("known")), "known")
    assert jwks_fetches(gw) == n + 1


def test_on_demand_refetches_are_rate_limited(ondemand_gw):
    """10 clients, 3 unknown-kid tokens each, back to back: every request is held for a fresh
    fetch and refused, but the IdP sees at most one fetch per min_refetch_interval_ms."""
    gw = ondemand_gw
    gw.upstream.set_document(JWKS_PATH, jwks(KEYS["rsa"]))
    time.sleep(REFETCH_MS / 1000 + 0.1)
    n = jwks_fetches(gw)
    e0 = echo_count(gw)
    results: list = []
    lock = threading.Lock()

    def client(i):
        for j in range(3):
            tok = token(KEYS["rsa"], "RS256", claims(), kid=f"random-kid-{i}-{j}")
            r = gw.request("GET", "/echo", headers=bearer(tok), timeout=15)
            with lock:
                results.append(r)

    t = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(10)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    elapsed = time.monotonic() - t
    assert len(results) == 30
    assert all(r.status == 401 and r.json()["error"]["code"] == "invalid_token"
               for r in results), [r for r in results if r.status != 401][:3]
    assert echo_count(gw) == e0
    fetch_times = [r["time"] for r in gw.upstream.requests(JWKS_PATH)[n:]]
    assert 1 <= len(fetch_times) <= 2 + int(elapsed * 1000 / REFETCH_MS), (fetch_times, elapsed)
    gaps = [b - a for a, b in zip(fetch_times, fetch_times[1:])]
    assert all(g >= REFETCH_MS / 1000 - 0.1 for g in gaps), gaps
    # Sequential waits show that each round waited for its own (rate-limited) fetch.
    assert len(fetch_times) >= 3 and elapsed >= 2 * (REFETCH_MS / 1000) - 0.2, \
        (fetch_times, elapsed)


def test_removed_key_is_refused_after_rotation(ondemand_gw):
    gw = ondemand_gw
    gw.upstream.set_document(JWKS_PATH, jwks(KEYS["rsa"]))
    passes(gw, token(KEYS["rsa"], "RS256", claims("old")), "old")
    gw.upstream.set_document(JWKS_PATH, jwks(KEYS["rsa2"]))
    passes(gw, token(KEYS["rsa2"], "RS256", claims("new")), "new")  # refetch
    # The old key is gone from this worker's JWKS: a new token signed with it is refused.
    refused(gw, token(KEYS["rsa"], "RS256", claims("old-again")))
    gw.upstream.set_document(JWKS_PATH, jwks(KEYS["rsa"]))
    passes(gw, token(KEYS["rsa"], "RS256", claims("old-back")), "old-back")


BAD_JWKS = [
    ("http_500", "internal error", 500),
    ("http_404", '{"error": "not found"}', 404),
    ("garbage", "<html>garbage</html>", 200),
    ("not_a_jwks", '{"kees": []}', 200),
    ("no_usable_key", '{"keys": []}', 200),
    ("private_material", json.dumps(jwks(KEYS["rsa"].jwk(
        kid="leak", d="AAAA", p="AAAA", q="AAAA"))), 200),
]


@pytest.mark.parametrize("name,body,status", BAD_JWKS, ids=[b[0] for b in BAD_JWKS])
def test_failed_on_demand_fetch_keeps_the_last_good_jwks(ondemand_gw, name, body, status):
    gw = ondemand_gw
    gw.upstream.set_document(JWKS_PATH, jwks(KEYS["rsa"], KEYS["ec256"]))
    passes(gw, token(KEYS["ec256"], "ES256", claims("pre")), "pre")  # loaded (maybe refetched)
    failures = gw.stat("llm_api_guard.jwks_fetch_failure")
    gw.upstream.set_document(JWKS_PATH, body, status=status)
    # An unknown kid forces a fetch (the request is held until it ends), which fails: the
    # token is refused (401, not 503) ...
    refused(gw, token(KEYS["rsa"], "RS256", claims(), kid="kid-during-outage"))
    wait_stat(gw, "llm_api_guard.jwks_fetch_failure", failures + 1)
    # ... and the keys loaded before still verify new tokens.
    passes(gw, token(KEYS["rsa"], "RS256", claims("during-outage")), "during-outage")
    passes(gw, token(KEYS["ec256"], "ES256", claims("during-outage-ec")), "during-outage-ec")
    refused(gw, token(KEYS["attacker"], "RS256", claims()))
    gw.upstream.set_document(JWKS_PATH, jwks(KEYS["rsa"], KEYS["ec256"]))


def test_failed_periodic_refresh_keeps_the_last_good_jwks(refresh_gw):
    gw = refresh_gw
    up = gw.upstream
    passes(gw, token(KEYS["rsa"], "RS256", claims("loaded")), "loaded")
    for body, status in (("boom", 500), ("{not json", 200)):
        failures = gw.stat("llm_api_guard.jwks_fetch_failure")
        up.set_document(JWKS_PATH, body, status=status)
        wait_stat_above(gw, "llm_api_guard.jwks_fetch_failure", failures + 1, timeout=8)
        for i in range(3):
            passes(gw, token(KEYS["rsa"], "RS256", claims(f"kept-{status}-{i}")),
                   f"kept-{status}-{i}")
    # The IdP answers again with a rotated set: the periodic refresh picks it up.
    ok = gw.stat("llm_api_guard.jwks_fetch_success")
    up.set_document(JWKS_PATH, jwks(KEYS["ed"]))
    wait_stat_above(gw, "llm_api_guard.jwks_fetch_success", ok + 1, timeout=8)
    time.sleep(2.2)  # every worker refreshes at least once (1 s period, 1 s backoff)
    passes(gw, token(KEYS["ed"], "EdDSA", claims("after")), "after")
    for _ in range(3):
        refused(gw, token(KEYS["rsa"], "RS256", claims("removed")))


def test_jwks_unavailable_from_the_start_fails_closed(down_gw):
    gw = down_gw
    tok = token(KEYS["rsa"], "RS256", claims("nobody"))
    for _ in range(3):
        r = gw.request("GET", "/echo", headers=bearer(tok))
        assert_openai_error(r, 503, "service_unavailable", "server_error")
        assert tok not in r.text
    assert echo_count(gw) == 0
    assert gw.stat("llm_api_guard.jwks_fetch_failure") >= 1
    assert gw.stat("llm_api_guard.denied.jwks_unavailable") >= 3
    # No credential at all needs no JWKS: still a plain 401.
    refused(gw, None, code="missing_credentials", challenge=BEARER_CHALLENGE)
    # Once the IdP answers, the same token passes (within a few on-demand retries).
    gw.upstream.set_document(JWKS_PATH, jwks(KEYS["rsa"]))
    deadline = time.monotonic() + 10
    while True:
        r = gw.request("GET", "/echo", headers=bearer(tok))
        if r.status == 200 or time.monotonic() > deadline:
            break
        assert r.status == 503, r  # never a pass-through, never another answer
        time.sleep(0.2)
    assert r.status == 200, r
    assert r.json()["headers"]["x-auth-user"] == "nobody"


def test_pinned_inline_keys_with_a_remote_jwks(module_gateway_factory, idps):
    """Both `jwks` and `remote_jwks`: inline keys work even while the IdP is down, fetched keys
    are added, and a fetched key cannot replace a pinned one with the same kid."""
    up = idps("upstream connect error", status=500)
    auth = jwt_method(algorithms=REMOTE_ALGS, jwks=jwks(KEYS["ed"]),
                      remote_jwks={"cluster": "idp", "path": JWKS_PATH, "refresh_seconds": 1})
    gw = module_gateway_factory(filter_config(authentication=auth), upstream=up)
    pinned = token(KEYS["ed"], "EdDSA", claims("pinned"))
    r = gw.request("GET", "/echo", headers=bearer(pinned))
    assert r.status == 200, r
    assert r.json()["headers"]["x-auth-user"] == "pinned"
    # The IdP comes back with an RSA key.
    up.set_document(JWKS_PATH, jwks(KEYS["rsa"]))
    fetched = token(KEYS["rsa"], "RS256", claims("fetched"))
    deadline = time.time() + 10
    while True:
        r = gw.request("GET", "/echo", headers=bearer(fetched))
        if r.status == 200 or time.time() > deadline:
            break
        time.sleep(0.3)
    assert r.status == 200, r
    assert r.json()["headers"]["x-auth-user"] == "fetched"
    # Then it serves an attacker's RSA key under the pinned kid: the pinned key still decides.
    attacker = token(KEYS["attacker"], "RS256", claims("mallory"), kid=KEYS["ed"].kid)
    up.set_document(JWKS_PATH, {"keys": [{**jwks(KEYS["attacker"])["keys"][0], "kid": KEYS["ed"].kid}]})
    time.sleep(2.5)
    r = gw.request("GET", "/echo", headers=bearer(attacker))
    assert r.status == 401, r
    assert gw.request("GET", "/echo", headers=bearer(pinned)).status == 200
