//! Request authentication: health-check exemption, per-method checks and their combination.
//!
//! Conventions:
//! - methods are alternatives: one success suffices, but a credential that is presented and
//!   invalid fails the request (no falling through to another method);
//! - with MFA every required method must succeed;
//! - a check that needs a remote document not yet at hand answers [`Decision::Wait`]; the
//!   adapter fetches and asks again with that document marked in [`Finality`], after which nothing waits and
//!   a missing document means 503 (fail closed).

use crate::apikey::{notice_due, KeyDenial, KeyStore};
use crate::config::{AuthMethod, AuthPolicy, JwtMethod, KeyPolicy};
use crate::jwt::{self, Jwks, TokenCache};
use crate::mtls::{MtlsDenial, PeerCertificate};
use crate::reply::Denial;
use crate::time::UnixSeconds;

/// Headers the filter owns: any client-sent header with this prefix is removed before the
/// request goes upstream.
pub const AUTH_HEADER_PREFIX: &str = "x-auth-";

/// True when `path` (the raw `:path`, query aside) is exactly one of the exempt paths. Nothing
/// is decoded or normalised: `/healthz/../x`, `/healthz;x` or `/%68ealthz` are not exempt.
pub fn is_health_exempt(path: &str, exempt: &[String]) -> bool {
    let bare = path.split_once('?').map_or(path, |(p, _)| p);
    exempt.iter().any(|e| e == bare)
}

/// What the request presents.
#[derive(Debug, Default, Clone, Copy)]
pub struct Credentials<'a> {
    /// Value of the API key header, when present.
    pub api_key: Option<&'a str>,
    /// Value of the token header (e.g. `Authorization`), when present.
    pub token_header: Option<&'a str>,
    /// The verified client certificate, when the connection has one.
    pub peer: Option<&'a PeerCertificate>,
}

/// Documents the checks rely on; `None` means not loaded yet.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sources<'a> {
    pub keys: Option<&'a KeyStore>,
    pub jwks: Option<&'a Jwks>,
}

/// A remote document a check is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needed {
    Keyset,
    /// `fresh`: a fetch that starts after now is needed (an unknown `kid`); otherwise any
    /// completed fetch will do (nothing loaded yet).
    Jwks {
        fresh: bool,
    },
}

/// Which documents have already been waited for once: a check whose document is still missing
/// then decides (503 or 401) instead of waiting again.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Finality {
    pub keyset: bool,
    pub jwks: bool,
}

/// A successful authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSuccess {
    /// Methods that succeeded, in the order mtls, jwt, api_key (the `x-auth-method` value is
    /// their names joined by `+`).
    pub methods: Vec<AuthMethod>,
    /// `x-auth-user`: the JWT subject, else the key's user, else the certificate identity.
    pub user: String,
    pub key_id: Option<String>,
    /// `(expires_at, due)` when the key is inside its rotation-notice window.
    pub key_notice: Option<(UnixSeconds, UnixSeconds)>,
    /// Extra headers from `claims_to_headers`.
    pub headers: Vec<(String, String)>,
}

impl AuthSuccess {
    pub fn method_header(&self) -> String {
        self.methods
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join("+")
    }
}

/// Context of a denial for the log line (never a credential).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DenialContext {
    pub method: Option<AuthMethod>,
    pub key_id: Option<String>,
    pub user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(AuthSuccess),
    Deny(Denial, DenialContext),
    Wait(Vec<Needed>),
}

enum Outcome {
    Absent,
    Passed {
        user: String,
        key_id: Option<String>,
        notice: Option<(i64, i64)>,
        headers: Vec<(String, String)>,
    },
    Failed(Denial, DenialContext),
    Pending(Needed),
}

fn check_api_key(
    value: Option<&str>,
    keys: &KeyPolicy,
    store: Option<&KeyStore>,
    now: i64,
    final_attempt: bool,
) -> Outcome {
    let Some(value) = value else {
        return Outcome::Absent;
    };
    let Some(store) = store else {
        return if final_attempt {
            Outcome::Failed(
                Denial::Unavailable {
                    reason: "keys_unavailable",
                },
                DenialContext {
                    method: Some(AuthMethod::ApiKey),
                    ..Default::default()
                },
            )
        } else {
            Outcome::Pending(Needed::Keyset)
        };
    };
    match store.verify(value.trim(), &keys.hasher, now) {
        Ok(id) => {
            let notice = keys.rotation_notice.and_then(|(interval, before)| {
                let (start, due) = notice_due(&id, interval, before);
                (now >= start).then_some((id.expires_at, due))
            });
            Outcome::Passed {
                user: id.user,
                key_id: Some(id.key_id),
                notice,
                headers: Vec::new(),
            }
        }
        Err(d) => {
            let ctx = DenialContext {
                method: Some(AuthMethod::ApiKey),
                key_id: d.key_id().map(str::to_string),
                user: match &d {
                    KeyDenial::Expired { user, .. } | KeyDenial::Revoked { user, .. } => {
                        Some(user.clone())
                    }
                    _ => None,
                },
            };
            let denial = match d {
                KeyDenial::Expired { .. } => Denial::ExpiredApiKey,
                KeyDenial::Revoked { .. } => Denial::RevokedApiKey,
                other => Denial::InvalidApiKey {
                    reason: other.reason(),
                },
            };
            Outcome::Failed(denial, ctx)
        }
    }
}

/// Splits `Bearer <token>` (prefix case-insensitive). A header with another scheme is not a
/// credential of this method.
fn bearer<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    if prefix.is_empty() {
        return Some(value.trim());
    }
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| value.get(prefix.len()..).unwrap_or_default().trim())
}

fn claim_header_value(v: &serde_json::Value) -> Option<String> {
    let s = match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => return None,
        other => other.to_string(),
    };
    (!s.chars().any(char::is_control) && s.len() <= 4096).then_some(s)
}

fn check_jwt(
    value: Option<&str>,
    m: &JwtMethod,
    jwks: Option<&Jwks>,
    cache: &mut TokenCache,
    now: i64,
    final_attempt: bool,
) -> Outcome {
    let Some(token) = value.and_then(|v| bearer(v, &m.token_prefix)) else {
        return Outcome::Absent;
    };
    let ctx = || DenialContext {
        method: Some(AuthMethod::Jwt),
        ..Default::default()
    };
    let verified = match cache.get(token, now) {
        Some(v) => v,
        None => {
            if jwks.is_none() && m.remote_jwks.is_some() {
                return if final_attempt {
                    Outcome::Failed(
                        Denial::Unavailable {
                            reason: "jwks_unavailable",
                        },
                        ctx(),
                    )
                } else {
                    Outcome::Pending(Needed::Jwks { fresh: false })
                };
            }
            match jwt::verify(&m.settings, jwks, token, now) {
                Ok(v) => {
                    cache.insert(token, &v, now);
                    v
                }
                Err(e) if e.is_unknown_kid() && m.remote_jwks.is_some() && !final_attempt => {
                    return Outcome::Pending(Needed::Jwks { fresh: true });
                }
                Err(e) => {
                    let denial = if e.code() == "token_expired" {
                        Denial::ExpiredToken
                    } else {
                        Denial::InvalidToken {
                            reason: "invalid_token",
                        }
                    };
                    let mut c = ctx();
                    c.user = Some(format!("jwt:{}", e.code()));
                    return Outcome::Failed(denial, c);
                }
            }
        }
    };
    let headers = m
        .claims_to_headers
        .iter()
        .filter_map(|(claim, header)| {
            verified
                .claims
                .get(claim)
                .and_then(claim_header_value)
                .map(|v| (header.clone(), v))
        })
        .collect();
    Outcome::Passed {
        user: verified.subject,
        key_id: None,
        notice: None,
        headers,
    }
}

fn check_mtls(auth: &AuthPolicy, peer: Option<&PeerCertificate>) -> Outcome {
    let Some(policy) = &auth.mtls else {
        return Outcome::Absent;
    };
    match policy.check(peer) {
        Ok(identity) => Outcome::Passed {
            user: identity,
            key_id: None,
            notice: None,
            headers: Vec::new(),
        },
        Err(MtlsDenial::CertificateRequired) => Outcome::Absent,
        Err(MtlsDenial::NotAllowed { identity }) => Outcome::Failed(
            Denial::ClientNotAllowed,
            DenialContext {
                method: Some(AuthMethod::Mtls),
                user: Some(identity),
                ..Default::default()
            },
        ),
    }
}

fn absent_denial(method: AuthMethod) -> Denial {
    match method {
        AuthMethod::Mtls => Denial::ClientCertificateRequired,
        AuthMethod::Jwt | AuthMethod::ApiKey => Denial::MissingCredentials,
    }
}

/// Decides authentication for one request. `cache` is the VM's verified-token cache.
pub fn authenticate(
    auth: &AuthPolicy,
    keys: Option<&KeyPolicy>,
    creds: Credentials<'_>,
    sources: Sources<'_>,
    cache: &mut TokenCache,
    now: UnixSeconds,
    finality: Finality,
) -> Decision {
    let mut outcomes: Vec<(AuthMethod, Outcome)> = Vec::with_capacity(3);
    for method in auth.enabled_methods() {
        let o = match method {
            AuthMethod::Mtls => check_mtls(auth, creds.peer),
            AuthMethod::Jwt => match &auth.jwt {
                Some(m) => check_jwt(
                    creds.token_header,
                    m,
                    sources.jwks,
                    cache,
                    now,
                    finality.jwks,
                ),
                None => Outcome::Absent,
            },
            AuthMethod::ApiKey => match keys {
                Some(k) => check_api_key(creds.api_key, k, sources.keys, now, finality.keyset),
                None => Outcome::Absent,
            },
        };
        outcomes.push((method, o));
    }

    // A presented but invalid credential fails the request, whatever else succeeded.
    for (_, o) in &outcomes {
        if let Outcome::Failed(d, ctx) = o {
            return Decision::Deny(d.clone(), ctx.clone());
        }
    }
    let waits: Vec<Needed> = outcomes
        .iter()
        .filter_map(|(_, o)| {
            if let Outcome::Pending(n) = o {
                Some(*n)
            } else {
                None
            }
        })
        .collect();
    if !waits.is_empty() {
        return Decision::Wait(waits);
    }
    if let Some(required) = &auth.mfa_require {
        for m in required {
            let passed = outcomes
                .iter()
                .any(|(om, o)| om == m && matches!(o, Outcome::Passed { .. }));
            if !passed {
                return Decision::Deny(
                    absent_denial(*m),
                    DenialContext {
                        method: Some(*m),
                        ..Default::default()
                    },
                );
            }
        }
    }
    let mut success = AuthSuccess {
        methods: Vec::new(),
        user: String::new(),
        key_id: None,
        key_notice: None,
        headers: Vec::new(),
    };
    let mut user_rank = usize::MAX;
    for (method, o) in outcomes {
        if let Outcome::Passed {
            user,
            key_id,
            notice,
            headers,
        } = o
        {
            let rank = match method {
                AuthMethod::Jwt => 0,
                AuthMethod::ApiKey => 1,
                AuthMethod::Mtls => 2,
            };
            if rank < user_rank {
                user_rank = rank;
                success.user = user;
            }
            if key_id.is_some() {
                success.key_id = key_id;
                success.key_notice = notice;
            }
            success.headers.extend(headers);
            success.methods.push(method);
        }
    }
    if success.methods.is_empty() {
        let only_mtls = auth.enabled_methods() == [AuthMethod::Mtls];
        let denial = if only_mtls {
            Denial::ClientCertificateRequired
        } else {
            Denial::MissingCredentials
        };
        return Decision::Deny(denial, DenialContext::default());
    }
    Decision::Allow(success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_exemption_is_exact() {
        let paths: Vec<String> = ["/healthz", "/health", "/ready"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for p in ["/healthz", "/healthz?probe=1", "/ready"] {
            assert!(is_health_exempt(p, &paths), "{p}");
        }
        for p in [
            "/healthz/../v1/chat/completions",
            "/healthz;x",
            "//healthz/..",
            "/%68ealthz",
            "/healthz/",
            "/HEALTHZ",
            "/healthz%3F",
            "/v1/chat/completions",
            "",
            "healthz",
            "/healthz#x",
            "/./healthz",
        ] {
            assert!(!is_health_exempt(p, &paths), "{p}");
        }
        assert!(!is_health_exempt("/healthz", &[]));
    }

    #[test]
    fn bearer_prefix() {
        assert_eq!(bearer("Bearer abc", "Bearer "), Some("abc"));
        assert_eq!(bearer("bearer abc ", "Bearer "), Some("abc"));
        assert_eq!(bearer("Basic abc", "Bearer "), None);
        assert_eq!(bearer("Bear", "Bearer "), None);
        assert_eq!(bearer("Bé", "Bearer "), None);
    }
}
