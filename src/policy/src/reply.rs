//! The one mapping from a denial to what the client sees: status, headers and an OpenAI-style
//! JSON error body. Every denial of the filter goes through [`Denial::reply`]; bodies never name
//! internal detail (no key ids, no hashes, no stack traces).

use serde_json::json;

/// Every reason the filter refuses a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No credential for any enabled method (or a missing factor under MFA).
    MissingCredentials,
    /// An API key that is malformed, unknown or has the wrong secret (indistinguishable to the
    /// client by design); `reason` is the precise code for logs and metrics.
    InvalidApiKey {
        reason: &'static str,
    },
    ExpiredApiKey,
    RevokedApiKey,
    /// A JWT that failed verification; `reason` is the precise code for logs and metrics.
    InvalidToken {
        reason: &'static str,
    },
    ExpiredToken,
    /// mTLS required but the connection has no verified client certificate.
    ClientCertificateRequired,
    /// A verified client certificate whose identity is not allowed.
    ClientNotAllowed,
    /// Request headers larger than `max_header_size_bytes`.
    HeadersTooLarge {
        limit: u64,
    },
    /// Body larger than `max_request_size_bytes`.
    BodyTooLarge {
        limit: u64,
    },
    /// The filter cannot decide (keys not loaded, internal fault): fail closed.
    Unavailable {
        reason: &'static str,
    },
}

/// A complete local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// The `www-authenticate` challenges for the enabled methods, built once per policy.
#[derive(Debug, Clone, Default)]
pub struct Challenges {
    pub api_key_header: Option<String>,
    pub bearer: bool,
}

impl Denial {
    /// Stable snake_case code for logs and metrics (finer than the client-visible `code`).
    pub fn reason(&self) -> &'static str {
        match self {
            Denial::MissingCredentials => "missing_credentials",
            Denial::InvalidApiKey { reason }
            | Denial::InvalidToken { reason }
            | Denial::Unavailable { reason } => reason,
            Denial::ExpiredApiKey => "expired_api_key",
            Denial::RevokedApiKey => "revoked_api_key",
            Denial::ExpiredToken => "token_expired",
            Denial::ClientCertificateRequired => "client_certificate_required",
            Denial::ClientNotAllowed => "client_not_allowed",
            Denial::HeadersTooLarge { .. } => "headers_too_large",
            Denial::BodyTooLarge { .. } => "body_too_large",
        }
    }

    /// Every reason code [`Denial::reason`] can return (metrics are defined from this list).
    pub const REASONS: &'static [&'static str] = &[
        "missing_credentials",
        "malformed_api_key",
        "unknown_api_key",
        "wrong_api_key_secret",
        "expired_api_key",
        "revoked_api_key",
        "invalid_token",
        "token_expired",
        "client_certificate_required",
        "client_not_allowed",
        "headers_too_large",
        "body_too_large",
        "keys_unavailable",
        "jwks_unavailable",
        "internal_error",
    ];

    /// The metric/log reason for JWT failures is folded to a few stable names.
    pub fn status(&self) -> u32 {
        match self {
            Denial::MissingCredentials
            | Denial::InvalidApiKey { .. }
            | Denial::ExpiredApiKey
            | Denial::RevokedApiKey
            | Denial::InvalidToken { .. }
            | Denial::ExpiredToken => 401,
            Denial::ClientCertificateRequired | Denial::ClientNotAllowed => 403,
            Denial::HeadersTooLarge { .. } => 431,
            Denial::BodyTooLarge { .. } => 413,
            Denial::Unavailable { .. } => 503,
        }
    }

    fn parts(&self) -> (&'static str, &'static str, String) {
        match self {
            Denial::MissingCredentials => (
                "authentication_error",
                "missing_credentials",
                "Authentication required.".into(),
            ),
            Denial::InvalidApiKey { .. } => (
                "authentication_error",
                "invalid_api_key",
                "Invalid API key.".into(),
            ),
            Denial::ExpiredApiKey => (
                "authentication_error",
                "expired_api_key",
                "The API key has expired.".into(),
            ),
            Denial::RevokedApiKey => (
                "authentication_error",
                "revoked_api_key",
                "The API key has been revoked.".into(),
            ),
            Denial::InvalidToken { .. } => (
                "authentication_error",
                "invalid_token",
                "Invalid bearer token.".into(),
            ),
            Denial::ExpiredToken => (
                "authentication_error",
                "expired_token",
                "The bearer token has expired.".into(),
            ),
            Denial::ClientCertificateRequired => (
                "permission_error",
                "client_certificate_required",
                "A valid client certificate is required.".into(),
            ),
            Denial::ClientNotAllowed => (
                "permission_error",
                "client_not_allowed",
                "The client certificate is not allowed.".into(),
            ),
            Denial::HeadersTooLarge { limit } => (
                "invalid_request_error",
                "request_header_fields_too_large",
                format!("Request headers exceed the limit of {limit} bytes."),
            ),
            Denial::BodyTooLarge { limit } => (
                "invalid_request_error",
                "request_too_large",
                format!("Request body exceeds the limit of {limit} bytes."),
            ),
            Denial::Unavailable { .. } => (
                "server_error",
                "service_unavailable",
                "The gateway cannot verify this request right now. Please retry.".into(),
            ),
        }
    }

    /// The reply the client receives.
    pub fn reply(&self, challenges: &Challenges) -> Reply {
        let (kind, code, message) = self.parts();
        let body =
            json!({ "error": { "message": message, "type": kind, "code": code, "param": null } })
                .to_string();
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        let status = self.status();
        if status == 401 {
            if challenges.bearer {
                let err = match self {
                    Denial::InvalidToken { .. } | Denial::ExpiredToken => {
                        ", error=\"invalid_token\""
                    }
                    _ => "",
                };
                headers.push((
                    "www-authenticate".into(),
                    format!("Bearer realm=\"llm-api-guard\"{err}"),
                ));
            }
            if let Some(h) = &challenges.api_key_header {
                headers.push((
                    "www-authenticate".into(),
                    format!("ApiKey realm=\"llm-api-guard\", header=\"{h}\""),
                ));
            }
            if !challenges.bearer && challenges.api_key_header.is_none() {
                headers.push((
                    "www-authenticate".into(),
                    "Bearer realm=\"llm-api-guard\"".into(),
                ));
            }
        }
        if status == 503 {
            headers.push(("retry-after".into(), "1".into()));
        }
        headers.push(("cache-control".into(), "no-store".into()));
        Reply {
            status,
            headers,
            body,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_denial_is_an_openai_error() {
        let all = [
            Denial::MissingCredentials,
            Denial::InvalidApiKey {
                reason: "unknown_api_key",
            },
            Denial::ExpiredApiKey,
            Denial::RevokedApiKey,
            Denial::InvalidToken {
                reason: "invalid_token",
            },
            Denial::ExpiredToken,
            Denial::ClientCertificateRequired,
            Denial::ClientNotAllowed,
            Denial::HeadersTooLarge { limit: 8192 },
            Denial::BodyTooLarge { limit: 1 },
            Denial::Unavailable {
                reason: "keys_unavailable",
            },
        ];
        let ch = Challenges {
            api_key_header: Some("X-API-Key".into()),
            bearer: true,
        };
        for d in all {
            assert!(Denial::REASONS.contains(&d.reason()), "{:?}", d);
            let r = d.reply(&ch);
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            let e = &v["error"];
            assert!(
                e["message"].is_string()
                    && e["type"].is_string()
                    && e["code"].is_string()
                    && e["param"].is_null()
            );
            assert_eq!(
                r.headers[0],
                ("content-type".into(), "application/json".into())
            );
            let challenges = r
                .headers
                .iter()
                .filter(|(k, _)| k == "www-authenticate")
                .count();
            assert_eq!(challenges > 0, r.status == 401);
        }
        // Unknown id and wrong secret look the same to the client.
        let a = Denial::InvalidApiKey {
            reason: "unknown_api_key",
        }
        .reply(&ch);
        let b = Denial::InvalidApiKey {
            reason: "wrong_api_key_secret",
        }
        .reply(&ch);
        assert_eq!(a, b);
    }
}
