//! One HTTP request through the filter.
//!
//! Order: header size → `content-length` → strip `x-auth-*` and credentials → health-check
//! exemption → authentication (possibly waiting for a remote document) → body size (the body is
//! held until complete when limits are on) → upstream. The request continues only when both
//! authentication and the body are done.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use llm_api_guard_policy::auth::{
    authenticate, is_health_exempt, AuthSuccess, Credentials, Decision, DenialContext, Finality,
    Needed, Sources, AUTH_HEADER_PREFIX,
};
use llm_api_guard_policy::config::Policy;
use llm_api_guard_policy::limits::header_bytes;
use llm_api_guard_policy::mtls::PeerCertificate;
use llm_api_guard_policy::reply::Denial;
use llm_api_guard_policy::time::{format_http_date, format_rfc3339};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};
use serde_json::json;

use crate::host;
use crate::{log_json, DocKind, Shared};

/// The context object Envoy talks to; the state lives in [`Request`] so that the root context
/// can resume a waiting request.
pub struct HttpCtx {
    req: Rc<RefCell<Request>>,
}

impl HttpCtx {
    pub fn new(context_id: u32, shared: Option<Rc<RefCell<Shared>>>) -> Self {
        HttpCtx {
            req: Rc::new(RefCell::new(Request::new(context_id, shared))),
        }
    }

    fn with(&mut self, f: impl FnOnce(&mut Request, Weak<RefCell<Request>>) -> Action) -> Action {
        let weak = Rc::downgrade(&self.req);
        match self.req.try_borrow_mut() {
            Ok(mut r) => f(&mut r, weak),
            Err(_) => {
                // Cannot happen with single-threaded callbacks; fail closed if it ever does.
                let _ = host::send_reply(503, &[], "");
                Action::Pause
            }
        }
    }
}

impl Context for HttpCtx {}

impl HttpContext for HttpCtx {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.with(|r, weak| r.on_request_headers(end_of_stream, weak))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.with(|r, _| r.on_request_body(body_size as u64, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.with(|r, _| r.on_request_trailers())
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.with(|r, _| r.on_response_headers())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// No body, or body not inspected: nothing to wait for.
    Done,
    /// Held in Envoy until end of stream.
    Buffering,
}

pub struct Request {
    context_id: u32,
    shared: Option<Rc<RefCell<Shared>>>,
    policy: Option<Rc<Policy>>,
    request_id: String,
    method: String,
    path: String,
    api_key: Option<String>,
    token_header: Option<String>,
    peer: Option<PeerCertificate>,
    finality: Finality,
    auth_pending: bool,
    success: Option<AuthSuccess>,
    body: Body,
    /// We returned `Pause` and must resume once everything is decided.
    paused: bool,
    /// A local reply was sent; nothing else happens to this request.
    replied: bool,
    /// Counted in `requests_allowed`.
    counted: bool,
}

impl Request {
    fn new(context_id: u32, shared: Option<Rc<RefCell<Shared>>>) -> Self {
        let policy = shared
            .as_ref()
            .and_then(|s| s.try_borrow().ok().map(|s| s.policy.clone()));
        Request {
            context_id,
            shared,
            policy,
            request_id: String::new(),
            method: String::new(),
            path: String::new(),
            api_key: None,
            token_header: None,
            peer: None,
            finality: Finality::default(),
            auth_pending: false,
            success: None,
            body: Body::Done,
            paused: false,
            replied: false,
            counted: false,
        }
    }

    fn deny(&mut self, denial: Denial, ctx: DenialContext) -> Action {
        self.replied = true;
        self.auth_pending = false;
        let reply = match &self.shared {
            Some(shared) => match shared.try_borrow() {
                Ok(sh) => {
                    sh.metrics.denied(denial.reason());
                    denial.reply(&sh.challenges)
                }
                Err(_) => denial.reply(&Default::default()),
            },
            None => denial.reply(&Default::default()),
        };
        log_json(LogLevel::Warn, || {
            json!({
                "event": "request_denied",
                "reason": denial.reason(),
                "status": reply.status,
                "request_id": self.request_id,
                "method": self.method,
                "path": self.path,
                "auth_method": ctx.method.map(|m| m.as_str()),
                "key_id": ctx.key_id,
                "subject": ctx.user,
                "context": self.context_id,
            })
        });
        if host::send_reply(reply.status, &reply.headers, &reply.body).is_err() {
            host::log(LogLevel::Error, "cannot send the local reply");
        }
        Action::Pause
    }

    fn internal_error(&mut self) -> Action {
        self.deny(
            Denial::Unavailable {
                reason: "internal_error",
            },
            DenialContext::default(),
        )
    }

    fn on_request_headers(&mut self, end_of_stream: bool, weak: Weak<RefCell<Request>>) -> Action {
        let Some(policy) = self.policy.clone() else {
            // The filter has no valid config: serve nothing.
            return self.internal_error();
        };
        let headers = match host::request_headers() {
            Ok(h) => h,
            Err(_) => return self.internal_error(),
        };
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
        };
        // A credential header sent more than once is combined as HTTP combines repeated
        // fields (", "); the combination never verifies, so two keys cannot be tried at once.
        let credential = |name: &str| {
            let values: Vec<String> = headers
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .collect();
            (!values.is_empty()).then(|| values.join(", "))
        };
        self.request_id = get("x-request-id").unwrap_or_default();
        self.method = get(":method").unwrap_or_default();
        let raw_path = get(":path").unwrap_or_default();
        self.path = raw_path
            .split_once('?')
            .map_or(raw_path.as_str(), |(p, _)| p)
            .to_string();

        if let Some(limits) = &policy.limits {
            let total = header_bytes(headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
            if let Err(d) = limits.check_headers(total) {
                return self.deny(d, DenialContext::default());
            }
            if let Err(d) = limits.check_content_length(get("content-length").as_deref()) {
                return self.deny(d, DenialContext::default());
            }
        }

        // Identity headers are the filter's alone.
        for (name, _) in headers
            .iter()
            .filter(|(k, _)| k.starts_with(AUTH_HEADER_PREFIX))
        {
            if host::set_request_header(name, None).is_err() {
                return self.internal_error();
            }
        }

        if let Some(auth) = &policy.auth {
            if let Some(h) = &auth.api_key_header {
                self.api_key = credential(h);
                if self.api_key.is_some() && host::set_request_header(h, None).is_err() {
                    return self.internal_error();
                }
            }
            if let Some(j) = &auth.jwt {
                self.token_header = credential(&j.token_header);
                if self.token_header.is_some()
                    && !j.forward_token
                    && host::set_request_header(&j.token_header, None).is_err()
                {
                    return self.internal_error();
                }
                // Claim headers are the filter's too: a client copy must not survive when the
                // token lacks the claim.
                for (_, header) in &j.claims_to_headers {
                    if headers.iter().any(|(k, _)| k == header)
                        && host::set_request_header(header, None).is_err()
                    {
                        return self.internal_error();
                    }
                }
            }
            if auth.mtls.is_some() && host::property_bool(&["connection", "mtls"]) {
                let s = |field: &str| host::property_string(&["connection", field]);
                self.peer = Some(PeerCertificate {
                    uri_sans: s("uri_san_peer_certificate").into_iter().collect(),
                    dns_sans: s("dns_san_peer_certificate").into_iter().collect(),
                    subject: s("subject_peer_certificate"),
                });
            }
            if is_health_exempt(&raw_path, &auth.health_check_paths) {
                if let Some(sh) = self.shared.as_ref().and_then(|s| s.try_borrow().ok()) {
                    sh.metrics.health_exempt();
                }
            } else {
                self.auth_pending = true;
                if let Some(action) = self.evaluate(weak) {
                    return action;
                }
            }
        }

        if !end_of_stream && policy.limits.is_some() {
            self.body = Body::Buffering;
        }
        self.proceed_or_pause()
    }

    /// Runs authentication. `Some(action)` when the request was denied (the caller returns it).
    fn evaluate(&mut self, weak: Weak<RefCell<Request>>) -> Option<Action> {
        let policy = self.policy.clone()?;
        let auth = policy.auth.as_ref()?;
        let Some(shared) = self.shared.clone() else {
            return Some(self.internal_error());
        };
        let decision = {
            let Ok(mut sh) = shared.try_borrow_mut() else {
                return Some(self.internal_error());
            };
            let (keys, jwks) = sh.usable_sources(host::now_ms());
            let creds = Credentials {
                api_key: self.api_key.as_deref(),
                token_header: self.token_header.as_deref(),
                peer: self.peer.as_ref(),
            };
            let sources = Sources {
                keys: keys.as_deref(),
                jwks: jwks.as_deref(),
            };
            // At most three rounds: a document that cannot be waited for (no room in the
            // waiting list) is marked final and the decision is taken again without waiting.
            let mut rounds = 0;
            loop {
                rounds += 1;
                let d = authenticate(
                    auth,
                    policy.keys.as_ref(),
                    creds,
                    sources,
                    &mut sh.cache,
                    host::now_seconds(),
                    self.finality,
                );
                let Decision::Wait(needs) = &d else { break d };
                let mut retry = false;
                for n in needs {
                    let (kind, fresh) = match n {
                        Needed::Keyset => (DocKind::Keyset, false),
                        Needed::Jwks { fresh } => (DocKind::Jwks, *fresh),
                    };
                    if sh
                        .wait_for(kind, fresh, (self.context_id, weak.clone()))
                        .is_err()
                    {
                        mark_final(&mut self.finality, kind);
                        retry = true;
                    }
                }
                if !retry || rounds >= 3 {
                    break d;
                }
            }
        };
        match decision {
            Decision::Allow(success) => {
                self.auth_pending = false;
                if self.apply_identity(&success).is_err() {
                    return Some(self.internal_error());
                }
                log_json(LogLevel::Info, || {
                    json!({
                        "event": "request_authenticated",
                        "request_id": self.request_id,
                        "auth_method": success.method_header(),
                        "user": success.user,
                        "key_id": success.key_id,
                        "path": self.path,
                    })
                });
                self.success = Some(success);
                None
            }
            Decision::Deny(d, ctx) => Some(self.deny(d, ctx)),
            Decision::Wait(_) if self.finality.keyset && self.finality.jwks => {
                // Both documents already waited for (or no room to wait): cannot decide.
                Some(self.deny(
                    Denial::Unavailable {
                        reason: "internal_error",
                    },
                    DenialContext::default(),
                ))
            }
            Decision::Wait(_) => None,
        }
    }

    fn apply_identity(&self, s: &AuthSuccess) -> Result<(), proxy_wasm::types::Status> {
        host::set_request_header("x-auth-method", Some(&s.method_header()))?;
        host::set_request_header("x-auth-user", Some(&s.user))?;
        if let Some(id) = &s.key_id {
            host::set_request_header("x-auth-key-id", Some(id))?;
        }
        for (k, v) in &s.headers {
            host::set_request_header(k, Some(v))?;
        }
        Ok(())
    }

    fn proceed_or_pause(&mut self) -> Action {
        if self.replied {
            return Action::Pause;
        }
        if self.auth_pending || self.body == Body::Buffering {
            self.paused = true;
            return Action::Pause;
        }
        self.count_allowed();
        Action::Continue
    }

    /// Counts the request once, when it is released upstream.
    fn count_allowed(&mut self) {
        if self.counted {
            return;
        }
        self.counted = true;
        if let Some(sh) = self.shared.as_ref().and_then(|s| s.try_borrow().ok()) {
            sh.metrics.allowed();
        }
    }

    fn on_request_body(&mut self, received: u64, end_of_stream: bool) -> Action {
        if self.replied {
            return Action::Pause;
        }
        if self.body == Body::Buffering {
            if let Some(limits) = self.policy.as_ref().and_then(|p| p.limits) {
                if let Err(d) = limits.check_body(received) {
                    return self.deny(d, DenialContext::default());
                }
            }
            if !end_of_stream {
                return Action::Pause;
            }
            self.body = Body::Done;
        }
        // Continue here would release the held headers too: never before authentication is
        // decided, whether or not the body is inspected.
        self.proceed_or_pause()
    }

    fn on_request_trailers(&mut self) -> Action {
        if self.replied {
            return Action::Pause;
        }
        // Trailers end the body.
        self.body = Body::Done;
        self.proceed_or_pause()
    }

    /// Called by the root context (with this request's context in effect) when a document it
    /// waited for was fetched, successfully or not.
    pub fn document_ready(&mut self, kind: DocKind, weak: Weak<RefCell<Request>>) {
        if self.replied || !self.auth_pending {
            return;
        }
        mark_final(&mut self.finality, kind);
        if self.evaluate(weak).is_some() || self.auth_pending {
            return;
        }
        if self.body == Body::Done && self.paused {
            self.count_allowed();
            if host::resume_request().is_err() {
                self.internal_error();
            }
        }
    }

    fn on_response_headers(&mut self) -> Action {
        if self.replied {
            return Action::Continue;
        }
        if let Some((expires_at, due)) = self.success.as_ref().and_then(|s| s.key_notice) {
            let _ = host::add_response_header("x-api-key-expires-at", &format_rfc3339(expires_at));
            let _ = host::add_response_header("x-api-key-rotate-by", &format_rfc3339(due));
            let _ = host::add_response_header("sunset", &format_http_date(expires_at));
        }
        Action::Continue
    }
}

/// From now on a missing `kind` document decides the request instead of making it wait.
fn mark_final(finality: &mut Finality, kind: DocKind) {
    match kind {
        DocKind::Keyset => finality.keyset = true,
        DocKind::Jwks => finality.jwks = true,
    }
}
