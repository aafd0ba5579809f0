//! Test fixtures: key pairs generated once per test binary, JWK builders and
//! token builders (jwt-simple signed, or hand-built for hostile inputs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};
use sha2::Sha256;

use super::{Jwks, JwtAlgorithm, JwtSettings};

/// A fixed, realistic "now" (2023-11-14T22:13:20Z).
pub(crate) const NOW: i64 = 1_700_000_000;
pub(crate) const ISSUER: &str = "https://issuer.example";
pub(crate) const AUDIENCE: &str = "llm-api";
pub(crate) const HS_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

pub(crate) struct Keys {
    /// One 2048-bit RSA key, loaded into every RSA algorithm's key type.
    pub rs256: RS256KeyPair,
    pub rs384: RS384KeyPair,
    pub rs512: RS512KeyPair,
    pub ps256: PS256KeyPair,
    pub ps384: PS384KeyPair,
    pub ps512: PS512KeyPair,
    pub es256: ES256KeyPair,
    /// A second P-256 key, for "right kty, wrong key" cases.
    pub es256_other: ES256KeyPair,
    pub es384: ES384KeyPair,
    pub ed25519: Ed25519KeyPair,
}

/// RSA key generation is slow in debug builds: it happens once per test binary.
pub(crate) fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rs256 = RS256KeyPair::generate(2048).unwrap();
        let der = rs256.to_der().unwrap();
        Keys {
            rs384: RS384KeyPair::from_der(&der).unwrap(),
            rs512: RS512KeyPair::from_der(&der).unwrap(),
            ps256: PS256KeyPair::from_der(&der).unwrap(),
            ps384: PS384KeyPair::from_der(&der).unwrap(),
            ps512: PS512KeyPair::from_der(&der).unwrap(),
            rs256,
            es256: ES256KeyPair::generate(),
            es256_other: ES256KeyPair::generate(),
            es384: ES384KeyPair::generate(),
            ed25519: Ed25519KeyPair::generate(),
        }
    })
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn rsa_jwk(kid: &str) -> Value {
    let c = keys().rs256.public_key().to_components();
    json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&c.n), "e": b64(&c.e)})
}

pub(crate) fn ec_jwk(kid: &str, crv: &str, uncompressed: &[u8]) -> Value {
    let size = (uncompressed.len() - 1) / 2;
    json!({
        "kty": "EC", "kid": kid, "crv": crv,
        "x": b64(&uncompressed[1..1 + size]),
        "y": b64(&uncompressed[1 + size..]),
    })
}

pub(crate) fn es256_jwk(kid: &str, kp: &ES256KeyPair) -> Value {
    ec_jwk(
        kid,
        "P-256",
        &kp.public_key().public_key().to_bytes_uncompressed(),
    )
}

pub(crate) fn es384_jwk(kid: &str) -> Value {
    ec_jwk(
        kid,
        "P-384",
        &keys()
            .es384
            .public_key()
            .public_key()
            .to_bytes_uncompressed(),
    )
}

pub(crate) fn ed25519_jwk(kid: &str) -> Value {
    let x = keys().ed25519.public_key().to_bytes();
    json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(&x)})
}

/// A JWKS with one key per family: kids "rsa", "es256", "es384", "ed".
pub(crate) fn jwks_value() -> Value {
    json!({"keys": [
        rsa_jwk("rsa"),
        es256_jwk("es256", &keys().es256),
        es384_jwk("es384"),
        ed25519_jwk("ed"),
    ]})
}

pub(crate) fn jwks() -> Jwks {
    Jwks::from_value(&jwks_value()).unwrap()
}

/// Settings allowing every asymmetric algorithm (HS256 off), default knobs.
pub(crate) fn settings() -> JwtSettings {
    let asymmetric = JwtAlgorithm::ALL
        .into_iter()
        .filter(|a| a.is_asymmetric())
        .collect();
    JwtSettings::new(ISSUER, vec![AUDIENCE.to_string()], asymmetric)
}

pub(crate) fn settings_with_hs256() -> JwtSettings {
    let mut s = settings();
    s.algorithms.push(JwtAlgorithm::HS256);
    s.hs256_secret = Some(HS_SECRET.to_vec());
    s
}

/// Claims valid at [`NOW`]: iat/nbf = NOW, exp = NOW + 600, iss, aud, sub,
/// plus a custom `email` claim.
pub(crate) fn claims() -> JWTClaims<Map<String, Value>> {
    let mut custom = Map::new();
    custom.insert("email".into(), json!("alice@example.com"));
    let mut c = Claims::with_custom_claims(custom, Duration::from_secs(600))
        .with_issuer(ISSUER)
        .with_audience(AUDIENCE)
        .with_subject("alice");
    c.issued_at = Some(UnixTimeStamp::from_secs(NOW as u64));
    c.invalid_before = Some(UnixTimeStamp::from_secs(NOW as u64));
    c.expires_at = Some(UnixTimeStamp::from_secs(NOW as u64 + 600));
    c
}

/// Signs `claims` with the fixture key for `alg`, header `kid` if given.
pub(crate) fn sign(
    alg: JwtAlgorithm,
    kid: Option<&str>,
    claims: JWTClaims<Map<String, Value>>,
) -> String {
    let k = keys();
    macro_rules! with_kid {
        ($kp:expr) => {{
            let kp = $kp;
            match kid {
                Some(kid) => kp.with_key_id(kid).sign(claims).unwrap(),
                None => kp.sign(claims).unwrap(),
            }
        }};
    }
    match alg {
        JwtAlgorithm::RS256 => with_kid!(k.rs256.clone()),
        JwtAlgorithm::RS384 => with_kid!(k.rs384.clone()),
        JwtAlgorithm::RS512 => with_kid!(k.rs512.clone()),
        JwtAlgorithm::PS256 => with_kid!(k.ps256.clone()),
        JwtAlgorithm::PS384 => with_kid!(k.ps384.clone()),
        JwtAlgorithm::PS512 => with_kid!(k.ps512.clone()),
        // ES key pairs are not Clone: rebuild them from their bytes.
        JwtAlgorithm::ES256 => with_kid!(ES256KeyPair::from_bytes(&k.es256.to_bytes()).unwrap()),
        JwtAlgorithm::ES384 => with_kid!(ES384KeyPair::from_bytes(&k.es384.to_bytes()).unwrap()),
        JwtAlgorithm::EdDSA => with_kid!(k.ed25519.clone()),
        JwtAlgorithm::HS256 => {
            let key = HS256Key::from_bytes(HS_SECRET);
            match kid {
                Some(kid) => key.with_key_id(kid).authenticate(claims).unwrap(),
                None => key.authenticate(claims).unwrap(),
            }
        }
    }
}

/// The fixture kid of the JWKS key that verifies `alg`.
pub(crate) fn kid_for(alg: JwtAlgorithm) -> &'static str {
    match alg {
        JwtAlgorithm::ES256 => "es256",
        JwtAlgorithm::ES384 => "es384",
        JwtAlgorithm::EdDSA => "ed",
        JwtAlgorithm::HS256 => "hs",
        _ => "rsa",
    }
}

/// A valid token for `alg` with the fixture kid.
pub(crate) fn valid(alg: JwtAlgorithm) -> String {
    sign(alg, Some(kid_for(alg)), claims())
}

/// `b64(header).b64(payload)` from raw JSON text, no signature.
pub(crate) fn signing_input(header: &str, payload: &str) -> String {
    format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()))
}

pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// A hand-built HS256 token over raw header/payload JSON text.
pub(crate) fn hs256_raw(key: &[u8], header: &str, payload: &str) -> String {
    let input = signing_input(header, payload);
    let tag = hmac_sha256(key, input.as_bytes());
    format!("{input}.{}", b64(&tag))
}

/// Valid claims as raw JSON text, for hand-built tokens.
pub(crate) fn payload_json() -> String {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "alice",
        "iat": NOW, "nbf": NOW, "exp": NOW + 600,
    })
    .to_string()
}
