//! Error types of JWT verification and JWKS parsing.

use std::fmt;

use super::JwtAlgorithm;

/// Why [`verify`](super::verify) refused a token.
///
/// Every variant maps to a stable snake_case [`code`](JwtError::code) meant for
/// logs and metric labels. No variant carries bytes of the token: reasons are
/// static strings, numbers, or names from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// The token is longer than `JwtSettings::max_token_bytes`; nothing was decoded.
    TokenTooLarge { len: usize, max: usize },
    /// The token is not a well-formed compact JWS: empty, not three non-empty
    /// dot-separated parts, bad base64url, header or payload not a JSON object,
    /// duplicate JSON keys, unsupported `crit`, `typ` other than JWT, oversized
    /// header. `reason` is a static description.
    Malformed { reason: &'static str },
    /// The header `alg` is not on the allowlist. `algorithm` is `None` when it
    /// is not an algorithm this module supports at all (this includes `none`).
    AlgorithmNotAllowed { algorithm: Option<JwtAlgorithm> },
    /// The token names a `kid` that the JWKS does not contain (or no JWKS is
    /// loaded yet). The adapter may refetch a remote JWKS and retry.
    UnknownKeyId,
    /// No key may verify this token: the key named by `kid` does not fit the
    /// algorithm (kty/crv/alg/use), no JWKS key fits a token without `kid`,
    /// or HS256 is allowed but no usable HS256 secret is configured.
    NoMatchingKey,
    /// The signature did not verify with any candidate key.
    InvalidSignature,
    /// A registered claim has the wrong JSON type (e.g. `exp` not a
    /// non-negative number, `iss` not a string, `aud` not a string or array
    /// of strings).
    InvalidClaim { claim: &'static str },
    /// `now >= exp + skew`.
    TokenExpired { expires_at: i64, now: i64 },
    /// `now + skew < nbf`.
    TokenNotYetValid { not_before: i64, now: i64 },
    /// `iat > now + skew`.
    TokenIssuedInFuture { issued_at: i64, now: i64 },
    /// The token has no `exp` and `JwtSettings::require_exp` is set.
    MissingExpiry,
    /// `iss` is absent or differs from `JwtSettings::issuer`.
    InvalidIssuer,
    /// `aud` is absent or contains none of `JwtSettings::audiences`.
    InvalidAudience,
    /// A claim from `JwtSettings::required_claims` is absent or null.
    MissingClaim { claim: String },
    /// The subject claim is absent, not a string, or empty.
    MissingSubject,
}

impl JwtError {
    /// Stable snake_case reason for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            JwtError::TokenTooLarge { .. } => "token_too_large",
            JwtError::Malformed { .. } => "malformed_token",
            JwtError::AlgorithmNotAllowed { .. } => "algorithm_not_allowed",
            JwtError::UnknownKeyId => "unknown_key_id",
            JwtError::NoMatchingKey => "no_matching_key",
            JwtError::InvalidSignature => "invalid_signature",
            JwtError::InvalidClaim { .. } => "invalid_claim",
            JwtError::TokenExpired { .. } => "token_expired",
            JwtError::TokenNotYetValid { .. } => "token_not_yet_valid",
            JwtError::TokenIssuedInFuture { .. } => "token_issued_in_future",
            JwtError::MissingExpiry => "missing_expiry",
            JwtError::InvalidIssuer => "invalid_issuer",
            JwtError::InvalidAudience => "invalid_audience",
            JwtError::MissingClaim { .. } => "missing_claim",
            JwtError::MissingSubject => "missing_subject",
        }
    }

    /// True only for [`JwtError::UnknownKeyId`]: the adapter should refetch a
    /// remote JWKS (rate-limited) and verify again.
    pub fn is_unknown_kid(&self) -> bool {
        matches!(self, JwtError::UnknownKeyId)
    }
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::TokenTooLarge { len, max } => {
                write!(f, "token is {len} bytes, limit is {max}")
            }
            JwtError::Malformed { reason } => write!(f, "malformed token: {reason}"),
            JwtError::AlgorithmNotAllowed {
                algorithm: Some(alg),
            } => {
                write!(f, "algorithm {alg} is not allowed")
            }
            JwtError::AlgorithmNotAllowed { algorithm: None } => {
                f.write_str("token algorithm is not supported")
            }
            JwtError::UnknownKeyId => f.write_str("token kid is not in the JWKS"),
            JwtError::NoMatchingKey => f.write_str("no key fits the token algorithm"),
            JwtError::InvalidSignature => f.write_str("signature does not verify"),
            JwtError::InvalidClaim { claim } => write!(f, "claim {claim:?} has an invalid type"),
            JwtError::TokenExpired { expires_at, now } => {
                write!(f, "token expired (exp {expires_at}, now {now})")
            }
            JwtError::TokenNotYetValid { not_before, now } => {
                write!(f, "token not yet valid (nbf {not_before}, now {now})")
            }
            JwtError::TokenIssuedInFuture { issued_at, now } => {
                write!(f, "token issued in the future (iat {issued_at}, now {now})")
            }
            JwtError::MissingExpiry => f.write_str("token has no exp"),
            JwtError::InvalidIssuer => f.write_str("issuer does not match"),
            JwtError::InvalidAudience => f.write_str("audience does not match"),
            JwtError::MissingClaim { claim } => write!(f, "required claim {claim:?} is missing"),
            JwtError::MissingSubject => f.write_str("subject claim is missing or empty"),
        }
    }
}

impl std::error::Error for JwtError {}

/// Why a JWKS document was refused.
///
/// Keys of unsupported type (`kty` other than RSA/EC/OKP, EC curves other
/// than P-256/P-384, OKP curves other than Ed25519), keys with `use` other
/// than `sig`, keys whose `key_ops` lack `verify`, and keys whose `alg` is not
/// a supported algorithm are skipped, not errors. A key of a supported type
/// that is malformed or unacceptable is an error for the whole document, so a
/// broken key is noticed rather than silently ignored. `index` is the key's
/// zero-based position in `keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksError {
    /// The document is larger than [`MAX_JWKS_BYTES`](super::MAX_JWKS_BYTES).
    TooLarge { len: usize, max: usize },
    /// The document is not valid JSON (or has duplicate object keys).
    InvalidJson { detail: String },
    /// The top level is not an object with a `keys` array.
    MissingKeys,
    /// `keys` has more than [`MAX_JWKS_KEYS`](super::MAX_JWKS_KEYS) entries.
    TooManyKeys { count: usize, max: usize },
    /// An entry of `keys` is not a JSON object.
    KeyNotObject { index: usize },
    /// A member required for the key type is absent.
    MissingMember { index: usize, member: &'static str },
    /// A member has the wrong JSON type (e.g. `kid` not a string).
    InvalidMember { index: usize, member: &'static str },
    /// A member is not base64url (padded or unpadded).
    InvalidBase64 { index: usize, member: &'static str },
    /// A fixed-size member (EC/OKP coordinate) decodes to the wrong length.
    InvalidLength {
        index: usize,
        member: &'static str,
        expected: usize,
        actual: usize,
    },
    /// The RSA modulus is shorter than 2048 bits.
    WeakRsaKey { index: usize, bits: usize },
    /// The RSA key is outside what the verifier supports (modulus over 4096
    /// bits, even modulus, or public exponent other than 65537).
    UnsupportedRsaKey { index: usize, reason: &'static str },
    /// The key material is rejected by the crypto backend (e.g. an EC point
    /// not on the curve, a small-order Ed25519 point).
    InvalidKey { index: usize, reason: &'static str },
    /// The key's `alg` names a supported algorithm of another family than its
    /// `kty`/`crv` (e.g. `"alg":"ES256"` on an RSA key, or `HS256` anywhere).
    AlgorithmMismatch { index: usize, alg: JwtAlgorithm },
    /// The key carries private key material (e.g. `d`); a JWKS must publish
    /// public keys only.
    PrivateKeyMaterial { index: usize, member: &'static str },
    /// Two usable keys share this `kid`.
    DuplicateKid { kid: String },
    /// No key in the document is usable for signature verification.
    NoUsableKeys { total: usize },
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwksError::TooLarge { len, max } => {
                write!(f, "JWKS is {len} bytes, limit is {max}")
            }
            JwksError::InvalidJson { detail } => write!(f, "JWKS is not valid JSON: {detail}"),
            JwksError::MissingKeys => f.write_str("JWKS has no \"keys\" array"),
            JwksError::TooManyKeys { count, max } => {
                write!(f, "JWKS has {count} keys, limit is {max}")
            }
            JwksError::KeyNotObject { index } => write!(f, "key {index}: not a JSON object"),
            JwksError::MissingMember { index, member } => {
                write!(f, "key {index}: missing {member:?}")
            }
            JwksError::InvalidMember { index, member } => {
                write!(f, "key {index}: {member:?} has the wrong type")
            }
            JwksError::InvalidBase64 { index, member } => {
                write!(f, "key {index}: bad base64url in {member:?}")
            }
            JwksError::InvalidLength {
                index,
                member,
                expected,
                actual,
            } => write!(
                f,
                "key {index}: {member:?} is {actual} bytes, expected {expected}"
            ),
            JwksError::WeakRsaKey { index, bits } => write!(
                f,
                "key {index}: RSA modulus is {bits} bits, minimum is 2048"
            ),
            JwksError::UnsupportedRsaKey { index, reason } => {
                write!(f, "key {index}: unsupported RSA key: {reason}")
            }
            JwksError::InvalidKey { index, reason } => {
                write!(f, "key {index}: invalid key: {reason}")
            }
            JwksError::AlgorithmMismatch { index, alg } => {
                write!(f, "key {index}: alg {alg} does not fit the key type")
            }
            JwksError::PrivateKeyMaterial { index, member } => {
                write!(f, "key {index}: contains private key material {member:?}")
            }
            JwksError::DuplicateKid { kid } => write!(f, "duplicate kid {kid:?}"),
            JwksError::NoUsableKeys { total } => {
                write!(f, "no usable signature key among {total} keys")
            }
        }
    }
}

impl std::error::Error for JwksError {}
