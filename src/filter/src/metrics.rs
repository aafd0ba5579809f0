//! Envoy stats counters, all under `llm_api_guard.`. Defined once per VM in `on_configure`;
//! Envoy merges same-named counters across worker VMs.

use std::collections::HashMap;

use llm_api_guard_policy::reply::Denial;

use crate::host;
use crate::DocKind;

pub struct Metrics {
    allowed: Option<u32>,
    denied: Option<u32>,
    health_exempt: Option<u32>,
    by_reason: HashMap<&'static str, Option<u32>>,
    keyset_ok: Option<u32>,
    keyset_failed: Option<u32>,
    keyset_rejected_records: Option<u32>,
    jwks_ok: Option<u32>,
    jwks_failed: Option<u32>,
}

fn counter(name: &str) -> Option<u32> {
    host::define_counter(&format!("llm_api_guard.{name}"))
}

fn bump(id: Option<u32>) {
    if let Some(id) = id {
        host::increment(id);
    }
}

impl Metrics {
    pub fn define() -> Self {
        Metrics {
            allowed: counter("requests_allowed"),
            denied: counter("requests_denied"),
            health_exempt: counter("health_check_exempt"),
            by_reason: Denial::REASONS
                .iter()
                .map(|r| (*r, counter(&format!("denied.{r}"))))
                .collect(),
            keyset_ok: counter("keyset_refresh_success"),
            keyset_failed: counter("keyset_refresh_failure"),
            keyset_rejected_records: counter("keyset_records_rejected"),
            jwks_ok: counter("jwks_fetch_success"),
            jwks_failed: counter("jwks_fetch_failure"),
        }
    }

    pub fn allowed(&self) {
        bump(self.allowed);
    }

    pub fn health_exempt(&self) {
        bump(self.health_exempt);
    }

    pub fn denied(&self, reason: &'static str) {
        bump(self.denied);
        bump(self.by_reason.get(reason).copied().flatten());
    }

    pub fn fetch(&self, kind: DocKind, ok: bool) {
        bump(match (kind, ok) {
            (DocKind::Keyset, true) => self.keyset_ok,
            (DocKind::Keyset, false) => self.keyset_failed,
            (DocKind::Jwks, true) => self.jwks_ok,
            (DocKind::Jwks, false) => self.jwks_failed,
        });
    }

    pub fn keyset_record_rejected(&self) {
        bump(self.keyset_rejected_records);
    }
}
