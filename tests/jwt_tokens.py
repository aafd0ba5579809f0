"""Test-side JWT / JWKS material, made independently of the filter's Rust code.

Keys come from ``cryptography`` (RSA 2048, EC P-256 / P-384, Ed25519), tokens are signed by
PyJWT, and the JWKS JSON is built here by hand from the public numbers (RFC 7517 / 7518 /
8037), so a token that passes proves interoperability with a standard library, not agreement of
the filter with itself. Tokens that no sane library would produce (``alg: none``, HS256 keyed
with an RSA public key, truncated or tampered ones) are assembled by hand with ``hmac``.

Typical use::

    from jwt_tokens import KEYS, jwks, token, claims
    cfg = jwt_config(jwks(KEYS["rsa"]), algorithms=["RS256"])
    tok = token(KEYS["rsa"], "RS256", claims(sub="alice"))
    gw.request("GET", "/echo", headers=bearer(tok))
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ISSUER = "https://issuer.test.example"
AUDIENCE = "llm-api"
#: What the filter's 401 for a bad token carries (RFC 6750 section 3).
INVALID_TOKEN_CHALLENGE = 'Bearer realm="llm-api-guard", error="invalid_token"'
BEARER_CHALLENGE = 'Bearer realm="llm-api-guard"'


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def _uint(n: int, size: int | None = None) -> bytes:
    size = size or max(1, (n.bit_length() + 7) // 8)
    return n.to_bytes(size, "big")


@dataclass
class SigningKey:
    """A private key, the ``kid`` it is published under and its JWK ``kty`` family."""

    private: Any
    kid: str

    @property
    def public(self):
        return self.private.public_key()

    def public_pem(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)

    def jwk(self, *, kid: str | None = None, alg: str | None = None, use: str | None = "sig",
            **extra: Any) -> dict:
        """The public JWK, built by hand from the key's public numbers."""
        pub = self.public
        if isinstance(pub, rsa.RSAPublicKey):
            nums = pub.public_numbers()
            d: dict = {"kty": "RSA", "n": b64url(_uint(nums.n)), "e": b64url(_uint(nums.e))}
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            nums = pub.public_numbers()
            crv, size = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48)}[pub.curve.name]
            d = {"kty": "EC", "crv": crv, "x": b64url(_uint(nums.x, size)),
                 "y": b64url(_uint(nums.y, size))}
        elif isinstance(pub, ed25519.Ed25519PublicKey):
            raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            d = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
        else:  # pragma: no cover
            raise TypeError(pub)
        d["kid"] = kid if kid is not None else self.kid
        if use:
            d["use"] = use
        if alg:
            d["alg"] = alg
        d.update(extra)
        return d


def rsa_key(kid: str) -> SigningKey:
    return SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=2048), kid)


def ec_key(kid: str, curve=ec.SECP256R1) -> SigningKey:
    return SigningKey(ec.generate_private_key(curve()), kid)


def ed_key(kid: str) -> SigningKey:
    return SigningKey(ed25519.Ed25519PrivateKey.generate(), kid)


#: Keys made once per test session. ``attacker`` is never published in any JWKS.
KEYS: dict[str, SigningKey] = {
    "rsa": rsa_key("rsa-1"),
    "rsa2": rsa_key("rsa-2"),
    "ec256": ec_key("ec-256"),
    "ec384": ec_key("ec-384", ec.SECP384R1),
    "ed": ed_key("ed-1"),
    "ec256b": ec_key("ec-256-b"),
    "ed2": ed_key("ed-2"),
    "attacker": rsa_key("rsa-1"),  # same kid as the real one: a forged signature
}

#: The key family each algorithm signs with.
ALG_KEY = {"RS256": "rsa", "RS384": "rsa", "RS512": "rsa", "PS256": "rsa", "PS384": "rsa",
           "PS512": "rsa", "ES256": "ec256", "ES384": "ec384", "EdDSA": "ed"}


def jwks(*keys: SigningKey | dict) -> dict:
    """``{"keys": [...]}`` from SigningKeys (public JWKs) or ready-made JWK dicts."""
    return {"keys": [k.jwk() if isinstance(k, SigningKey) else k for k in keys]}


def claims(sub: str = "alice", *, iss: str | None = ISSUER, aud: Any = AUDIENCE,
           exp_in: float | None = 300, nbf_in: float | None = None, iat_in: float | None = 0,
           now: float | None = None, **extra: Any) -> dict:
    """A payload relative to now; a None value leaves the claim out."""
    t = int(now if now is not None else time.time())
    c: dict = {}
    if iss is not None:
        c["iss"] = iss
    if sub is not None:
        c["sub"] = sub
    if aud is not None:
        c["aud"] = aud
    if exp_in is not None:
        c["exp"] = t + int(exp_in)
    if nbf_in is not None:
        c["nbf"] = t + int(nbf_in)
    if iat_in is not None:
        c["iat"] = t + int(iat_in)
    c.update(extra)
    return c


def token(key: SigningKey, alg: str, payload: dict, *, kid: str | None = None,
          headers: dict | None = None) -> str:
    """A compact JWS signed by PyJWT (``kid`` defaults to the key's; ``kid=""`` omits it)."""
    h = {"kid": key.kid if kid is None else kid}
    if kid == "":
        h = {}
    h.update(headers or {})
    return pyjwt.encode(payload, key.private, algorithm=alg, headers=h)


def hs256(secret: bytes, payload: dict, header: dict | None = None) -> str:
    """An HS256 token built by hand (PyJWT refuses a PEM public key as an HMAC secret, which is
    exactly the key-confusion attack this is for)."""
    h = {"alg": "HS256", "typ": "JWT"}
    h.update(header or {})
    signing_input = f"{b64url_json(h)}.{b64url_json(payload)}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(sig)}"


def unsigned(payload: dict, alg: str = "none", signature: str = "", **header: Any) -> str:
    """An ``alg: none`` token (empty signature unless given)."""
    h = {"alg": alg, "typ": "JWT"}
    h.update(header)
    return f"{b64url_json(h)}.{b64url_json(payload)}.{signature}"


def with_payload(tok: str, payload: dict) -> str:
    """``tok`` with its payload replaced and its signature kept (a tampered token)."""
    head, _, sig = tok.split(".")
    return f"{head}.{b64url_json(payload)}.{sig}"


def bearer(tok: str) -> dict:
    return {"authorization": "Bearer " + tok}


def jwt_method(**over: Any) -> dict:
    """The ``authentication`` section with only the jwt method on."""
    m = {"enabled": True, "issuer": ISSUER, "audience": AUDIENCE}
    m.update(over)
    return {"enabled": True, "methods": {"jwt": m, "api_key": {"enabled": False},
                                         "mtls": {"enabled": False}}}
