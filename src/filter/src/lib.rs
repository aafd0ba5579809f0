//! proxy-wasm adapter of llm-api-guard. It only moves bytes between Envoy and the policy crate:
//! the config is parsed once per VM in `on_configure` into an immutable [`Policy`]; remote
//! documents (keyset, JWKS) are fetched by the root context and swapped in whole; each request
//! is decided by `llm_api_guard_policy` functions.
//!
//! Invariants:
//! - no panic path: host calls return `Result`s and every failure becomes a 503 (fail closed);
//! - when size limits are on, a request body is held in Envoy until it is complete and within
//!   the limit, so the upstream never sees a byte of a refused body;
//! - a request waiting for a remote document holds no upstream connection and is released by
//!   the root context (through `set_effective_context`) when the fetch completes.
#![forbid(unsafe_code)]

mod host;
mod metrics;
mod request;

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use llm_api_guard_policy::apikey::{KeyStore, Keyset};
use llm_api_guard_policy::config::{self, Policy, ProcessEnvironment, RemoteSource};
use llm_api_guard_policy::jwt::{Jwks, TokenCache};
use llm_api_guard_policy::remote::{Schedule, Waiters};
use llm_api_guard_policy::reply::Challenges;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};
use serde_json::json;

use crate::metrics::Metrics;
use crate::request::{HttpCtx, Request};

/// Tick period while remote documents are configured: on-demand fetches start within it.
const TICK_MS: u64 = 100;
/// Requests that may wait for one document at a time, per VM.
const MAX_WAITERS: usize = 4096;
/// Largest remote document accepted.
const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Root { context_id, shared: None })
    });
}}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DocKind {
    Keyset,
    Jwks,
}

impl DocKind {
    fn name(self) -> &'static str {
        match self {
            DocKind::Keyset => "keyset",
            DocKind::Jwks => "jwks",
        }
    }
}

pub(crate) struct RemoteDoc {
    source: RemoteSource,
    schedule: Schedule,
    token: Option<u32>,
}

pub(crate) type Waiter = (u32, Weak<RefCell<Request>>);

/// Per-VM state shared by the root context and every request of this worker.
pub(crate) struct Shared {
    pub policy: Rc<Policy>,
    pub challenges: Challenges,
    pub metrics: Metrics,
    /// Effective keys (inline overlaid by the remote keyset); `None` until a configured remote
    /// keyset has loaded once.
    pub keys: Option<Rc<KeyStore>>,
    pub jwks: Option<Rc<Jwks>>,
    /// The inline JWKS of the config (pinned keys), shared rather than copied per use.
    pinned_jwks: Option<Rc<Jwks>>,
    pub cache: TokenCache,
    keyset_doc: Option<RemoteDoc>,
    jwks_doc: Option<RemoteDoc>,
    keyset_waiters: Waiters<Waiter>,
    jwks_waiters: Waiters<Waiter>,
    /// When the remote keyset / JWKS last loaded (milliseconds), for `max_stale_seconds`.
    keyset_loaded_ms: Option<u64>,
    jwks_loaded_ms: Option<u64>,
}

impl Shared {
    /// The keys and JWKS requests may use now: a remote document older than its
    /// `max_stale_seconds` is dropped (keys: nothing, so API keys get 503 after one more fetch
    /// attempt; JWKS: only the pinned inline keys remain).
    pub fn usable_sources(&self, now_ms: u64) -> (Option<Rc<KeyStore>>, Option<Rc<Jwks>>) {
        let fresh = |doc: &Option<RemoteDoc>, loaded: Option<u64>| match doc
            .as_ref()
            .and_then(|d| d.source.max_stale_seconds)
        {
            Some(max) => {
                loaded.is_some_and(|t| now_ms.saturating_sub(t) <= max.saturating_mul(1000))
            }
            None => true,
        };
        let keys = if fresh(&self.keyset_doc, self.keyset_loaded_ms) {
            self.keys.clone()
        } else {
            None
        };
        let jwks = if fresh(&self.jwks_doc, self.jwks_loaded_ms) {
            self.jwks.clone()
        } else {
            self.pinned_jwks.clone()
        };
        (keys, jwks)
    }

    fn doc_mut(&mut self, kind: DocKind) -> Option<&mut RemoteDoc> {
        match kind {
            DocKind::Keyset => self.keyset_doc.as_mut(),
            DocKind::Jwks => self.jwks_doc.as_mut(),
        }
    }

    /// Registers a request that needs `kind`; `Err` when the waiting list is full or the
    /// document is not remote (the caller then decides at once).
    pub fn wait_for(&mut self, kind: DocKind, fresh: bool, waiter: Waiter) -> Result<(), ()> {
        let now = host::now_ms();
        let doc = self.doc_mut(kind).ok_or(())?;
        doc.schedule.demand(now);
        let list = match kind {
            DocKind::Keyset => &mut self.keyset_waiters,
            DocKind::Jwks => &mut self.jwks_waiters,
        };
        list.push(now, fresh, waiter).map_err(|_| ())
    }
}

struct Root {
    context_id: u32,
    shared: Option<Rc<RefCell<Shared>>>,
}

/// Logs one structured line. The value is built lazily so that lines Envoy would drop cost
/// nothing on the request path.
fn log_json(level: LogLevel, value: impl FnOnce() -> serde_json::Value) {
    if host::log_enabled(level) {
        host::log(level, &value().to_string());
    }
}

impl Root {
    fn configure(&mut self) -> Result<Policy, String> {
        let raw = host::plugin_configuration()
            .map_err(|e| format!("cannot read the plugin configuration: {e:?}"))?;
        config::parse(&raw, &ProcessEnvironment).map_err(|e| e.to_string())
    }

    fn start_due_fetches(&mut self) {
        let Some(shared) = &self.shared else { return };
        let Ok(mut sh) = shared.try_borrow_mut() else {
            return;
        };
        let now = host::now_ms();
        let mut failed = Vec::new();
        for kind in [DocKind::Keyset, DocKind::Jwks] {
            let Some(doc) = sh.doc_mut(kind) else {
                continue;
            };
            if !doc.schedule.should_start(now) {
                continue;
            }
            doc.schedule.started(now);
            let s = &doc.source;
            match host::dispatch_get(&s.cluster, &s.authority, &s.path, s.timeout_ms) {
                Ok(token) => doc.token = Some(token),
                Err(e) => {
                    doc.token = None;
                    doc.schedule.finished(false, now);
                    failed.push((
                        kind,
                        format!("dispatch to cluster {} failed: {e:?}", s.cluster),
                        now,
                    ));
                }
            }
        }
        let mut to_wake = Vec::new();
        for (kind, why, started) in failed {
            sh.metrics.fetch(kind, false);
            log_json(
                LogLevel::Error,
                || json!({"event": "remote_fetch_failed", "document": kind.name(), "error": why}),
            );
            to_wake.push((kind, release(&mut sh, kind, started)));
        }
        // Waiters run their own logic, which borrows the shared state again.
        drop(sh);
        for (kind, released) in to_wake {
            wake(released, kind);
        }
    }

    fn on_document(&mut self, token: u32, body_size: usize) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let Ok(mut sh) = shared.try_borrow_mut() else {
            return;
        };
        let kind = if sh
            .keyset_doc
            .as_ref()
            .is_some_and(|d| d.token == Some(token))
        {
            DocKind::Keyset
        } else if sh.jwks_doc.as_ref().is_some_and(|d| d.token == Some(token)) {
            DocKind::Jwks
        } else {
            return;
        };
        let status = host::call_response_status();
        let body = if body_size > MAX_DOCUMENT_BYTES {
            Vec::new()
        } else {
            host::call_response_body(body_size)
        };
        let result = match status {
            Some(200) if body_size <= MAX_DOCUMENT_BYTES => install(&mut sh, kind, &body),
            Some(200) => Err(format!(
                "document of {body_size} bytes exceeds {MAX_DOCUMENT_BYTES}"
            )),
            Some(code) => Err(format!("HTTP status {code}")),
            None => Err("no response (timeout or connection failure)".to_string()),
        };
        let now = host::now_ms();
        let ok = result.is_ok();
        sh.metrics.fetch(kind, ok);
        let started = sh.doc_mut(kind).and_then(|d| {
            d.token = None;
            d.schedule.finished(ok, now)
        });
        match result {
            Ok(detail) => log_json(
                LogLevel::Info,
                || json!({"event": "remote_document_loaded", "document": kind.name(), "detail": detail}),
            ),
            Err(e) => log_json(LogLevel::Warn, || {
                json!({"event": "remote_fetch_failed", "document": kind.name(), "error": e, "kept_last_good": match kind {
                    DocKind::Keyset => sh.keys.is_some(), DocKind::Jwks => sh.jwks.is_some() }})
            }),
        }
        let released = started
            .map(|s| release(&mut sh, kind, s))
            .unwrap_or_default();
        drop(sh);
        wake(released, kind);
    }
}

/// Validates and swaps in a fetched document; the old one stays on any error.
fn install(sh: &mut Shared, kind: DocKind, body: &[u8]) -> Result<String, String> {
    match kind {
        DocKind::Keyset => {
            let kp = sh.policy.keys.as_ref().ok_or("no key policy")?;
            let keyset: Keyset =
                serde_json::from_slice(body).map_err(|e| format!("invalid keyset JSON: {e}"))?;
            let (remote, skipped) = KeyStore::build(&keyset.keys, &kp.hasher, &kp.rules, false)
                .map_err(|e| format!("invalid keyset: {e}"))?;
            for s in &skipped {
                sh.metrics.keyset_record_rejected();
                log_json(
                    LogLevel::Warn,
                    || json!({"event": "keyset_record_rejected", "error": s.to_string()}),
                );
            }
            let merged = kp.inline.overlay(&remote);
            let n = merged.len();
            sh.keys = Some(Rc::new(merged));
            sh.keyset_loaded_ms = Some(host::now_ms());
            Ok(format!("{n} keys"))
        }
        DocKind::Jwks => {
            let fetched = Jwks::parse(body).map_err(|e| format!("invalid JWKS: {e}"))?;
            let jwks = match sh.pinned_jwks.as_deref() {
                Some(inline) => inline.with_keys_of(&fetched),
                None => fetched,
            };
            let n = jwks.len();
            sh.jwks = Some(Rc::new(jwks));
            sh.jwks_loaded_ms = Some(host::now_ms());
            // Tokens verified with the previous key set must be checked again.
            sh.cache.clear();
            Ok(format!("{n} keys"))
        }
    }
}

fn release(sh: &mut Shared, kind: DocKind, started: u64) -> Vec<Waiter> {
    match kind {
        DocKind::Keyset => sh.keyset_waiters.release(started),
        DocKind::Jwks => sh.jwks_waiters.release(started),
    }
}

/// Resumes released requests in their own contexts.
fn wake(released: Vec<Waiter>, kind: DocKind) {
    for (context_id, weak) in released {
        let Some(req) = weak.upgrade() else { continue };
        if host::set_effective_context(context_id).is_err() {
            continue;
        }
        let this = Rc::downgrade(&req);
        let borrowed = req.try_borrow_mut();
        if let Ok(mut r) = borrowed {
            r.document_ready(kind, this);
        }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        self.on_document(token_id, body_size);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let policy = match self.configure() {
            Ok(p) => p,
            Err(message) => {
                // Envoy prints this and, with a static config, refuses to start.
                host::log(LogLevel::Critical, &message);
                self.shared = None;
                return false;
            }
        };
        for w in &policy.warnings {
            log_json(
                LogLevel::Warn,
                || json!({"event": "config_warning", "message": w}),
            );
        }
        let now = host::now_ms();
        let keyset_doc = policy.keys.as_ref().and_then(|k| k.remote.clone());
        let jwt = policy.auth.as_ref().and_then(|a| a.jwt.as_ref());
        let jwks_doc = jwt.and_then(|j| j.remote_jwks.clone());
        let (cache_entries, cache_ttl) =
            jwt.map_or((0, 0), |j| (j.cache_max_entries, j.cache_max_ttl_seconds));
        let challenges = policy.challenges();
        let keys = match (&policy.keys, &keyset_doc) {
            (Some(_), Some(_)) => None,
            (Some(k), None) => Some(Rc::new(k.inline.clone())),
            (None, _) => Some(Rc::new(KeyStore::default())),
        };
        let jwks = jwt.and_then(|j| j.inline_jwks.clone()).map(Rc::new);
        let remote = keyset_doc.is_some() || jwks_doc.is_some();
        let mk = |source: RemoteSource| RemoteDoc {
            schedule: Schedule::new(&source, now),
            source,
            token: None,
        };
        let shared = Shared {
            challenges,
            metrics: Metrics::define(),
            keys,
            pinned_jwks: jwks.clone(),
            jwks,
            cache: TokenCache::new(cache_entries.max(1), cache_ttl),
            keyset_doc: keyset_doc.map(mk),
            jwks_doc: jwks_doc.map(mk),
            keyset_waiters: Waiters::new(MAX_WAITERS),
            jwks_waiters: Waiters::new(MAX_WAITERS),
            keyset_loaded_ms: None,
            jwks_loaded_ms: None,
            policy: Rc::new(policy),
        };
        self.shared = Some(Rc::new(RefCell::new(shared)));
        if remote {
            if let Err(e) = host::set_tick_period(TICK_MS) {
                host::log(
                    LogLevel::Critical,
                    &format!("cannot set the tick period: {e:?}"),
                );
                return false;
            }
        }
        log_json(
            LogLevel::Info,
            || json!({"event": "config_loaded", "context": self.context_id}),
        );
        true
    }

    fn on_tick(&mut self) {
        self.start_due_fetches();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HttpCtx::new(context_id, self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
