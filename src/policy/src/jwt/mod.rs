//! JWT bearer-token authentication (AS-2): signature verification against a
//! JWKS or an HS256 secret, claim validation, and a cache of verified tokens.
//!
//! Conventions shared by everything in this module:
//!
//! * **Time is injected.** Every time-dependent function takes `now`, Unix
//!   seconds from the caller's clock. Nothing here reads the system clock, so
//!   the same inputs always give the same result.
//! * **No panics on any input.** Tokens and JWKS documents are untrusted;
//!   every failure is a typed error ([`JwtError`], [`JwksError`]).
//! * **Cheap checks before expensive ones.** A token is size-checked, split,
//!   decoded, and its `alg` checked against the allowlist and the key before
//!   any signature work. Claims (`exp`, `iss`, `aud`, ...) are judged only after
//!   the signature verified.
//! * **Error texts never quote the token.** [`JwtError`] carries only static
//!   reasons, numbers and configured names, so it is safe to log.
//!
//! Verification is done by `jwt-simple`; this module decides which key may be
//! used for which token and enforces the policy in [`JwtSettings`].

mod cache;
mod error;
mod json;
mod jwks;
mod verify;

#[cfg(test)]
mod test_keys;
#[cfg(test)]
mod tests;

use std::fmt;

pub use cache::TokenCache;
pub use error::{JwksError, JwtError};
pub use jwks::{Jwks, MAX_JWKS_BYTES, MAX_JWKS_KEYS};
pub use verify::{verify, MAX_HEADER_B64_BYTES, MAX_KEYS_TRIED};

/// Default for [`JwtSettings::clock_skew_seconds`].
pub const DEFAULT_CLOCK_SKEW_SECONDS: u64 = 60;
/// Default for [`JwtSettings::max_token_bytes`].
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Default for [`JwtSettings::subject_claim`].
pub const DEFAULT_SUBJECT_CLAIM: &str = "sub";

/// A JWS signature algorithm this module can verify.
///
/// Names are the JOSE `alg` values and are case-sensitive (RFC 7515 §4.1.1);
/// `none` and every other name have no variant and are never accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256 (salt length 32).
    PS256,
    /// RSASSA-PSS with SHA-384 (salt length 48).
    PS384,
    /// RSASSA-PSS with SHA-512 (salt length 64).
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519 (the only EdDSA curve supported).
    EdDSA,
    /// HMAC with SHA-256, verified only with [`JwtSettings::hs256_secret`].
    HS256,
}

impl JwtAlgorithm {
    /// Every supported algorithm, in declaration order.
    pub const ALL: [JwtAlgorithm; 10] = [
        JwtAlgorithm::RS256,
        JwtAlgorithm::RS384,
        JwtAlgorithm::RS512,
        JwtAlgorithm::PS256,
        JwtAlgorithm::PS384,
        JwtAlgorithm::PS512,
        JwtAlgorithm::ES256,
        JwtAlgorithm::ES384,
        JwtAlgorithm::EdDSA,
        JwtAlgorithm::HS256,
    ];

    /// Parses a JOSE `alg` name, exactly as spelled in RFC 7518 (case-sensitive).
    /// Returns `None` for `none` and for every unsupported name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The JOSE `alg` name.
    pub fn as_str(&self) -> &'static str {
        match self {
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::RS384 => "RS384",
            JwtAlgorithm::RS512 => "RS512",
            JwtAlgorithm::PS256 => "PS256",
            JwtAlgorithm::PS384 => "PS384",
            JwtAlgorithm::PS512 => "PS512",
            JwtAlgorithm::ES256 => "ES256",
            JwtAlgorithm::ES384 => "ES384",
            JwtAlgorithm::EdDSA => "EdDSA",
            JwtAlgorithm::HS256 => "HS256",
        }
    }

    /// True for the algorithms verified with a public key from a JWKS
    /// (everything but HS256).
    pub fn is_asymmetric(&self) -> bool {
        !matches!(self, JwtAlgorithm::HS256)
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compiled, immutable verification settings.
///
/// Invariants the caller is expected to uphold when building it from config
/// (violations fail closed, they never widen acceptance):
/// * `audiences` empty ⇒ every token is refused with `invalid_audience`;
/// * `algorithms` empty ⇒ every token is refused with `algorithm_not_allowed`;
/// * `hs256_secret` is used only when `algorithms` contains HS256; HS256 on the
///   allowlist without a secret (or with one shorter than 12 bytes, which
///   jwt-simple refuses) ⇒ HS256 tokens fail with `no_matching_key`.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// The token's `iss` must equal this exactly (byte-wise, no normalisation).
    pub issuer: String,
    /// The token's `aud` (a string or an array of strings) must contain at
    /// least one of these, compared exactly.
    pub audiences: Vec<String>,
    /// Allowlist of `alg` values, enforced before any key lookup or signature work.
    pub algorithms: Vec<JwtAlgorithm>,
    /// Tolerance in seconds applied to `exp`, `nbf` and `iat`.
    pub clock_skew_seconds: u64,
    /// When true, a token without `exp` is refused with `missing_expiry`.
    pub require_exp: bool,
    /// Claims that must be present with a non-null value (any type).
    pub required_claims: Vec<String>,
    /// Claim holding the user identity; it must be a non-empty string.
    pub subject_claim: String,
    /// HMAC secret for HS256. HS256 tokens are checked only against this
    /// secret, never against JWKS keys.
    pub hs256_secret: Option<Vec<u8>>,
    /// Tokens longer than this (bytes) are refused before any decoding.
    pub max_token_bytes: usize,
}

impl JwtSettings {
    /// Settings with the documented defaults: skew 60 s, `exp` required, no
    /// required claims, subject from `sub`, no HS256 secret, 16 KiB token limit.
    pub fn new(
        issuer: impl Into<String>,
        audiences: Vec<String>,
        algorithms: Vec<JwtAlgorithm>,
    ) -> Self {
        JwtSettings {
            issuer: issuer.into(),
            audiences,
            algorithms,
            clock_skew_seconds: DEFAULT_CLOCK_SKEW_SECONDS,
            require_exp: true,
            required_claims: Vec::new(),
            subject_claim: DEFAULT_SUBJECT_CLAIM.to_string(),
            hs256_secret: None,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
        }
    }

    /// True when `alg` is on the allowlist.
    pub fn allows(&self, alg: JwtAlgorithm) -> bool {
        self.algorithms.contains(&alg)
    }
}

/// The secret is never printed.
impl fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSettings")
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("algorithms", &self.algorithms)
            .field("clock_skew_seconds", &self.clock_skew_seconds)
            .field("require_exp", &self.require_exp)
            .field("required_claims", &self.required_claims)
            .field("subject_claim", &self.subject_claim)
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("max_token_bytes", &self.max_token_bytes)
            .finish()
    }
}

/// A token whose signature and claims passed [`verify`].
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// Value of [`JwtSettings::subject_claim`]; never empty.
    pub subject: String,
    /// The whole payload, registered claims included.
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// `exp` in Unix seconds (fractional values rounded down), if present.
    pub expires_at: Option<i64>,
    /// `kid` of the JWKS key that verified the signature (`None` for HS256 and
    /// for JWKS keys without a `kid`).
    pub key_id: Option<String>,
    /// The token's (allowlisted) `alg`.
    pub algorithm: JwtAlgorithm,
}
