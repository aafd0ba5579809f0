//! Token verification: structure and allowlist first, then key selection,
//! then the signature (jwt-simple), then the claims.

use jwt_simple::algorithms::{
    ECDSAP256PublicKeyLike, ECDSAP384PublicKeyLike, EdDSAPublicKeyLike, HS256Key, MACLike,
    PS256PublicKey, PS384PublicKey, PS512PublicKey, RS256PublicKey, RS384PublicKey, RS512PublicKey,
    RSAPublicKeyLike,
};
use jwt_simple::claims::NoCustomClaims;
use jwt_simple::common::VerificationOptions;
use jwt_simple::reexports::coarsetime::{Duration, UnixTimeStamp};
use jwt_simple::reexports::ct_codecs::{Base64UrlSafeNoPadding, Decoder};
use jwt_simple::token::Token;
use jwt_simple::JWTError;
use serde_json::{Map, Value};

use super::error::JwtError;
use super::json::parse_unique;
use super::jwks::{JwkKey, Jwks, KeyMaterial};
use super::{JwtAlgorithm, JwtSettings, VerifiedToken};

/// Largest encoded header accepted, in bytes (jwt-simple's own limit).
pub const MAX_HEADER_B64_BYTES: usize = jwt_simple::token::MAX_HEADER_LENGTH;
/// A token without `kid` is tried against at most this many compatible JWKS keys.
pub const MAX_KEYS_TRIED: usize = 8;
/// jwt-simple refuses HMAC keys shorter than this.
const MIN_HS256_SECRET_BYTES: usize = 12;

/// jwt-simple keeps time as 32.32 fixed point seconds and adds `now` and the
/// tolerance without overflow checks; these bounds keep that sum below 2^32 s.
/// This module's own time checks (the authoritative ones) use the unclamped values.
const LIB_MAX_SKEW: u64 = 1 << 30;
const LIB_MAX_NOW: u64 = (1 << 32) - 1 - LIB_MAX_SKEW;

/// Verifies `token` (the compact JWS, without any `Bearer ` prefix) against
/// `settings`, using `jwks` for asymmetric algorithms and
/// `settings.hs256_secret` for HS256.
///
/// Pure: `now` is Unix seconds from the caller's clock; the system clock is
/// never read. Steps, each failing with the first error met:
/// 1. length ≤ `max_token_bytes`, three non-empty base64url parts, header
///    and payload JSON objects without duplicate keys, `alg` on the allowlist
///    (`none` never is), no `crit`, `typ` absent or JWT, signature of the
///    algorithm's size (ES*, EdDSA, HS256), registered claims of the right
///    JSON type;
/// 2. key selection: HS256 uses only `hs256_secret`; otherwise a `kid` picks
///    the JWKS key with that `kid` (`UnknownKeyId` if absent, `NoMatchingKey`
///    if it does not fit the algorithm), and a token without `kid` is tried
///    against the first [`MAX_KEYS_TRIED`] compatible keys;
/// 3. signature;
/// 4. claims: `iat ≤ now + skew`, `nbf ≤ now + skew`, `exp` present if
///    required and `now < exp + skew`, `iss`, `aud`, required claims, subject.
///
/// Keys named by the token itself (`jwk`, `jku`, `x5u`, `x5c` headers) are
/// never used. A token without `kid` can cost up to [`MAX_KEYS_TRIED`]
/// signature checks.
pub fn verify(
    settings: &JwtSettings,
    jwks: Option<&Jwks>,
    token: &str,
    now: i64,
) -> Result<VerifiedToken, JwtError> {
    let parsed = parse(settings, token)?;
    let key_id = check_signature(settings, jwks, token, &parsed, now)?;
    let subject = check_claims(settings, &parsed, now)?;
    Ok(VerifiedToken {
        subject,
        claims: parsed.claims,
        expires_at: parsed.times.exp,
        key_id,
        algorithm: parsed.alg,
    })
}

/// What step 1 learned about the token.
struct Parsed {
    alg: JwtAlgorithm,
    kid: Option<String>,
    claims: Map<String, Value>,
    times: Times,
}

/// Registered NumericDate claims, in Unix seconds (fractions rounded down).
#[derive(Clone, Copy)]
struct Times {
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
}

fn malformed(reason: &'static str) -> JwtError {
    JwtError::Malformed { reason }
}

fn parse(settings: &JwtSettings, token: &str) -> Result<Parsed, JwtError> {
    if token.len() > settings.max_token_bytes {
        return Err(JwtError::TokenTooLarge {
            len: token.len(),
            max: settings.max_token_bytes,
        });
    }
    if token.is_empty() {
        return Err(malformed("empty token"));
    }
    let mut parts = token.split('.');
    let (header_b64, payload_b64, signature_b64) =
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(h), Some(p), Some(s), None) => (h, p, s),
            _ => return Err(malformed("not three dot-separated parts")),
        };
    if header_b64.is_empty() || payload_b64.is_empty() {
        return Err(malformed("empty header or payload"));
    }
    if header_b64.len() > MAX_HEADER_B64_BYTES {
        return Err(malformed("header too large"));
    }
    // The same header parser jwt-simple's verification uses, so both agree.
    let metadata = Token::decode_metadata(token)
        .map_err(|_| malformed("header is not base64url-encoded JSON with a string alg"))?;

    let alg = match JwtAlgorithm::parse(metadata.algorithm()) {
        Some(alg) if settings.allows(alg) => alg,
        Some(alg) => {
            return Err(JwtError::AlgorithmNotAllowed {
                algorithm: Some(alg),
            })
        }
        None => return Err(JwtError::AlgorithmNotAllowed { algorithm: None }),
    };
    if metadata.critical().is_some() {
        return Err(malformed("crit header is not supported"));
    }
    if let Some(typ) = metadata.signature_type() {
        let typ = typ.to_ascii_uppercase();
        if typ != "JWT" && !typ.ends_with("+JWT") {
            return Err(malformed("typ is not JWT"));
        }
    }

    let payload = Base64UrlSafeNoPadding::decode_to_vec(payload_b64, None)
        .map_err(|_| malformed("payload is not base64url"))?;
    let claims = match parse_unique(&payload) {
        Ok(Value::Object(claims)) => claims,
        Ok(_) => return Err(malformed("payload is not a JSON object")),
        Err(_) => return Err(malformed("payload is not JSON or has duplicate keys")),
    };
    if signature_b64.is_empty() {
        return Err(malformed("missing signature"));
    }
    let signature = Base64UrlSafeNoPadding::decode_to_vec(signature_b64, None)
        .map_err(|_| malformed("signature is not base64url"))?;
    if fixed_signature_len(alg).is_some_and(|len| len != signature.len()) {
        return Err(JwtError::InvalidSignature);
    }

    let times = check_claim_types(&claims)?;
    Ok(Parsed {
        alg,
        kid: metadata.key_id().map(str::to_string),
        claims,
        times,
    })
}

/// Signature size of the fixed-size algorithms (RSA signatures are as long as
/// the modulus and are checked by the verifier).
fn fixed_signature_len(alg: JwtAlgorithm) -> Option<usize> {
    match alg {
        JwtAlgorithm::ES256 | JwtAlgorithm::EdDSA => Some(64),
        JwtAlgorithm::ES384 => Some(96),
        JwtAlgorithm::HS256 => Some(32),
        _ => None,
    }
}

/// Registered claims must have the types RFC 7519 gives them (and that
/// jwt-simple's claim decoder requires): NumericDates are non-negative
/// numbers, `iss`/`sub`/`jti`/`nonce` strings (or null), `aud` a string or an
/// array of strings.
fn check_claim_types(claims: &Map<String, Value>) -> Result<Times, JwtError> {
    for claim in ["iss", "sub", "jti", "nonce"] {
        if !matches!(
            claims.get(claim),
            None | Some(Value::Null) | Some(Value::String(_))
        ) {
            return Err(JwtError::InvalidClaim { claim });
        }
    }
    match claims.get("aud") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
        Some(_) => return Err(JwtError::InvalidClaim { claim: "aud" }),
    }
    Ok(Times {
        exp: numeric_date(claims, "exp")?,
        nbf: numeric_date(claims, "nbf")?,
        iat: numeric_date(claims, "iat")?,
    })
}

fn numeric_date(claims: &Map<String, Value>, claim: &'static str) -> Result<Option<i64>, JwtError> {
    let invalid = JwtError::InvalidClaim { claim };
    let Some(value) = claims.get(claim) else {
        return Ok(None);
    };
    let Value::Number(n) = value else {
        return Err(invalid);
    };
    if let Some(i) = n.as_i64() {
        return if i < 0 { Err(invalid) } else { Ok(Some(i)) };
    }
    if let Some(u) = n.as_u64() {
        return Ok(Some(i64::try_from(u).unwrap_or(i64::MAX)));
    }
    match n.as_f64() {
        // `as` saturates; NaN cannot come out of JSON.
        Some(f) if f >= 0.0 => Ok(Some(f.floor() as i64)),
        _ => Err(invalid),
    }
}

/// The key(s) allowed to verify the token, decided before any signature work.
enum Candidates<'a> {
    Secret(&'a [u8]),
    Keys(Vec<&'a JwkKey>),
}

fn select_keys<'a>(
    settings: &'a JwtSettings,
    jwks: Option<&'a Jwks>,
    alg: JwtAlgorithm,
    kid: Option<&str>,
) -> Result<Candidates<'a>, JwtError> {
    if alg == JwtAlgorithm::HS256 {
        // The token's kid is irrelevant: there is exactly one HS256 secret,
        // and JWKS keys (of any kty) never verify HS256.
        return settings
            .hs256_secret
            .as_deref()
            .filter(|s| s.len() >= MIN_HS256_SECRET_BYTES)
            .map(Candidates::Secret)
            .ok_or(JwtError::NoMatchingKey);
    }
    match kid {
        Some(kid) => {
            let key = jwks
                .and_then(|j| j.key_by_kid(kid))
                .ok_or(JwtError::UnknownKeyId)?;
            if key.is_compatible(alg) {
                Ok(Candidates::Keys(vec![key]))
            } else {
                Err(JwtError::NoMatchingKey)
            }
        }
        None => {
            let keys: Vec<&JwkKey> = jwks
                .map(|j| j.keys())
                .unwrap_or_default()
                .iter()
                .filter(|k| k.is_compatible(alg))
                .take(MAX_KEYS_TRIED)
                .collect();
            if keys.is_empty() {
                Err(JwtError::NoMatchingKey)
            } else {
                Ok(Candidates::Keys(keys))
            }
        }
    }
}

/// Verifies the signature; returns the `kid` of the key that verified it.
fn check_signature(
    settings: &JwtSettings,
    jwks: Option<&Jwks>,
    token: &str,
    parsed: &Parsed,
    now: i64,
) -> Result<Option<String>, JwtError> {
    let candidates = select_keys(settings, jwks, parsed.alg, parsed.kid.as_deref())?;
    let options = library_options(settings, now);
    match candidates {
        Candidates::Secret(secret) => {
            let result = HS256Key::from_bytes(secret)
                .verify_token::<NoCustomClaims>(token, Some(options))
                .map(drop);
            match result {
                Ok(()) => Ok(None),
                Err(e) => Err(
                    classify(&e, token.len(), settings.max_token_bytes, parsed, now)
                        .unwrap_or(JwtError::InvalidSignature),
                ),
            }
        }
        Candidates::Keys(keys) => {
            for key in keys {
                match verify_with(&key.material, parsed.alg, token, options.clone()) {
                    Ok(()) => return Ok(key.kid.clone()),
                    Err(e) => {
                        if let Some(err) =
                            classify(&e, token.len(), settings.max_token_bytes, parsed, now)
                        {
                            return Err(err);
                        }
                    }
                }
            }
            Err(JwtError::InvalidSignature)
        }
    }
}

/// jwt-simple's options: its claim checks beyond time are off (this module
/// checks `iss`/`aud` itself); its time checks use the same `now` and skew,
/// clamped to what its fixed-point clock can add without overflow.
fn library_options(settings: &JwtSettings, now: i64) -> VerificationOptions {
    let skew = settings.clock_skew_seconds.min(LIB_MAX_SKEW);
    let lib_now = u64::try_from(now).unwrap_or(0).min(LIB_MAX_NOW);
    VerificationOptions {
        artificial_time: Some(UnixTimeStamp::from_secs(lib_now)),
        time_tolerance: Some(Duration::from_secs(skew)),
        max_token_length: Some(settings.max_token_bytes),
        max_header_length: Some(MAX_HEADER_B64_BYTES),
        ..VerificationOptions::default()
    }
}

/// One signature check with one key. The caller guarantees `material.fits(alg)`.
fn verify_with(
    material: &KeyMaterial,
    alg: JwtAlgorithm,
    token: &str,
    options: VerificationOptions,
) -> Result<(), jwt_simple::Error> {
    use JwtAlgorithm::*;
    let options = Some(options);
    match (material, alg) {
        (KeyMaterial::Rsa { n, e }, RS256) => {
            RS256PublicKey::from_components(n, e)
                .map_err(|_| JWTError::InvalidPublicKey)?
                .verify_token::<NoCustomClaims>(token, options)?;
        }
        (KeyMaterial::Rsa { n, e }, RS384) => {
            RS384PublicKey::from_components(n, e)
                .map_err(|_| JWTError::InvalidPublicKey)?
                .verify_token::<NoCustomClaims>(token, options)?;
        }
        (KeyMaterial::Rsa { n, e }, RS512) => {
            RS512PublicKey::from_components(n, e)
                .map_err(|_| JWTError::InvalidPublicKey)?
                .verify_token::<NoCustomClaims>(token, options)?;
        }
        (KeyMaterial::Rsa { n, e }, PS256) => {
            PS256PublicKey::from_components(n, e)
                .map_err(|_| JWTError::InvalidPublicKey)?
                .verify_token::<NoCustomClaims>(token, options)?;
        }
        (KeyMaterial::Rsa { n, e }, PS384) => {
            PS384PublicKey::from_components(n, e)
                .map_err(|_| JWTError::InvalidPublicKey)?
                .verify_token::<NoCustomClaims>(token, options)?;
        }
        (KeyMaterial::Rsa { n, e }, PS512) => {
            PS512PublicKey::from_components(n, e)
                .map_err(|_| JWTError::InvalidPublicKey)?
                .verify_token::<NoCustomClaims>(token, options)?;
        }
        (KeyMaterial::P256(key), ES256) => {
            key.verify_token::<NoCustomClaims>(token, options)?;
        }
        (KeyMaterial::P384(key), ES384) => {
            key.verify_token::<NoCustomClaims>(token, options)?;
        }
        (KeyMaterial::Ed25519(key), EdDSA) => {
            key.verify_token::<NoCustomClaims>(token, options)?;
        }
        _ => return Err(JWTError::AlgorithmMismatch.into()),
    }
    Ok(())
}

/// Maps a jwt-simple failure. `None` means "this key did not verify the
/// signature" (try the next candidate); anything else ends verification.
fn classify(
    err: &jwt_simple::Error,
    len: usize,
    max: usize,
    parsed: &Parsed,
    now: i64,
) -> Option<JwtError> {
    let Some(err) = err.downcast_ref::<JWTError>() else {
        // Step 1 already refused what jwt-simple reports with foreign error
        // types (base64, header JSON, Ed25519 signature size, claim types),
        // so this is an input jwt-simple reads differently than step 1. It
        // is key-independent: stop rather than try other keys.
        return Some(malformed("refused by the JWT library"));
    };
    Some(match err {
        JWTError::InvalidSignature
        | JWTError::InvalidAuthenticationTag
        | JWTError::AlgorithmMismatch
        | JWTError::InvalidPublicKey
        | JWTError::WeakKey
        | JWTError::UnsupportedRSAModulus => return None,
        JWTError::TokenHasExpired => JwtError::TokenExpired {
            expires_at: parsed.times.exp.unwrap_or_default(),
            now,
        },
        JWTError::TokenNotValidYet => JwtError::TokenNotYetValid {
            not_before: parsed.times.nbf.unwrap_or_default(),
            now,
        },
        JWTError::ClockDrift => JwtError::TokenIssuedInFuture {
            issued_at: parsed.times.iat.unwrap_or_default(),
            now,
        },
        JWTError::TokenTooLong => JwtError::TokenTooLarge { len, max },
        JWTError::HeaderTooLarge => malformed("header too large"),
        JWTError::NotJWT => malformed("typ is not JWT"),
        JWTError::UnknownCriticalExtension => malformed("crit header is not supported"),
        JWTError::MissingSalt => malformed("salt header is not supported"),
        _ => malformed("refused by the JWT library"),
    })
}

/// Step 4; returns the subject.
fn check_claims(settings: &JwtSettings, parsed: &Parsed, now: i64) -> Result<String, JwtError> {
    let claims = &parsed.claims;
    let Times { exp, nbf, iat } = parsed.times;
    let skew = i64::try_from(settings.clock_skew_seconds).unwrap_or(i64::MAX);
    let latest_accepted = now.saturating_add(skew);

    if let Some(issued_at) = iat {
        if issued_at > latest_accepted {
            return Err(JwtError::TokenIssuedInFuture { issued_at, now });
        }
    }
    if let Some(not_before) = nbf {
        if not_before > latest_accepted {
            return Err(JwtError::TokenNotYetValid { not_before, now });
        }
    }
    match exp {
        None if settings.require_exp => return Err(JwtError::MissingExpiry),
        Some(expires_at) if now >= expires_at.saturating_add(skew) => {
            return Err(JwtError::TokenExpired { expires_at, now });
        }
        _ => {}
    }

    if claims.get("iss").and_then(Value::as_str) != Some(settings.issuer.as_str()) {
        return Err(JwtError::InvalidIssuer);
    }
    let audience_ok = |aud: &str| settings.audiences.iter().any(|a| a == aud);
    let aud_matches = match claims.get("aud") {
        Some(Value::String(aud)) => audience_ok(aud),
        Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(audience_ok),
        _ => false,
    };
    if !aud_matches {
        return Err(JwtError::InvalidAudience);
    }
    for claim in &settings.required_claims {
        if matches!(claims.get(claim), None | Some(Value::Null)) {
            return Err(JwtError::MissingClaim {
                claim: claim.clone(),
            });
        }
    }
    match claims.get(&settings.subject_claim) {
        Some(Value::String(subject)) if !subject.is_empty() => Ok(subject.clone()),
        _ => Err(JwtError::MissingSubject),
    }
}
