//! Scheduling of remote documents (keyset, JWKS) and of requests waiting for them.
//!
//! Times are milliseconds from the caller's clock. Invariants:
//! - at most one fetch per document is in flight; a fetch with no answer after its timeout
//!   plus a grace period is considered lost and may be replaced;
//! - periodic fetches run every `refresh_seconds` after a success and back off exponentially
//!   (1 s, 2 s, 4 s … capped at the refresh period) after failures;
//! - an on-demand fetch (a request that needs newer data, e.g. an unknown JWT `kid`) starts no
//!   sooner than `min_refetch_interval_ms` after the previous start, so clients cannot make the
//!   filter hammer the key server;
//! - a waiting request is released by the completion of a fetch that started after it began
//!   waiting (`fresh`), or by any completion (not fresh).

use crate::config::RemoteSource;

const LOST_GRACE_MS: u64 = 2000;

#[derive(Debug, Clone)]
pub struct Schedule {
    refresh_ms: u64,
    timeout_ms: u64,
    min_refetch_ms: u64,
    next_due_ms: u64,
    in_flight_since: Option<u64>,
    last_start_ms: Option<u64>,
    failures: u32,
    demand_since: Option<u64>,
}

impl Schedule {
    /// A schedule whose first fetch is due at once.
    pub fn new(src: &RemoteSource, now_ms: u64) -> Self {
        Schedule {
            refresh_ms: src.refresh_seconds.saturating_mul(1000),
            timeout_ms: src.timeout_ms,
            min_refetch_ms: src.min_refetch_interval_ms,
            next_due_ms: now_ms,
            in_flight_since: None,
            last_start_ms: None,
            failures: 0,
            demand_since: None,
        }
    }

    /// Whether a fetch should start now.
    pub fn should_start(&self, now_ms: u64) -> bool {
        if let Some(since) = self.in_flight_since {
            if now_ms
                < since
                    .saturating_add(self.timeout_ms)
                    .saturating_add(LOST_GRACE_MS)
            {
                return false;
            }
        }
        if now_ms >= self.next_due_ms {
            return true;
        }
        match (self.demand_since, self.last_start_ms) {
            (Some(_), Some(last)) => now_ms >= last.saturating_add(self.min_refetch_ms),
            (Some(_), None) => true,
            _ => false,
        }
    }

    pub fn started(&mut self, now_ms: u64) {
        self.in_flight_since = Some(now_ms);
        self.last_start_ms = Some(now_ms);
    }

    /// Records the end of the in-flight fetch and returns when it started (for releasing
    /// waiters), or `None` when no fetch was in flight.
    pub fn finished(&mut self, ok: bool, now_ms: u64) -> Option<u64> {
        let started = self.in_flight_since.take()?;
        if ok {
            self.failures = 0;
            self.next_due_ms = now_ms.saturating_add(self.refresh_ms);
        } else {
            self.failures = self.failures.saturating_add(1);
            let backoff = 1000u64.saturating_mul(1 << self.failures.saturating_sub(1).min(16));
            self.next_due_ms = now_ms.saturating_add(backoff.min(self.refresh_ms.max(1000)));
        }
        if self.demand_since.is_some_and(|d| d <= started) {
            self.demand_since = None;
        }
        Some(started)
    }

    /// A request needs data newer than what is loaded.
    pub fn demand(&mut self, now_ms: u64) {
        if self.demand_since.is_none() {
            self.demand_since = Some(now_ms);
        }
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight_since.is_some()
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }
}

/// Requests waiting for a document, bounded in number.
#[derive(Debug)]
pub struct Waiters<T> {
    entries: Vec<(u64, bool, T)>,
    capacity: usize,
}

impl<T> Waiters<T> {
    pub fn new(capacity: usize) -> Self {
        Waiters {
            entries: Vec::new(),
            capacity,
        }
    }

    /// Adds a waiter; gives it back when the list is full (the caller decides at once).
    pub fn push(&mut self, now_ms: u64, fresh: bool, item: T) -> Result<(), T> {
        if self.entries.len() >= self.capacity {
            return Err(item);
        }
        self.entries.push((now_ms, fresh, item));
        Ok(())
    }

    /// Removes and returns the waiters that the fetch started at `started_ms` releases.
    pub fn release(&mut self, started_ms: u64) -> Vec<T> {
        let (ready, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|(since, fresh, _)| !*fresh || *since <= started_ms);
        self.entries = keep;
        ready.into_iter().map(|(_, _, t)| t).collect()
    }

    /// Removes every waiter matching `pred` (e.g. a request that went away).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.entries.retain(|(_, _, t)| keep(t));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn src() -> RemoteSource {
        RemoteSource {
            cluster: "c".into(),
            path: "/p".into(),
            authority: "c".into(),
            refresh_seconds: 30,
            timeout_ms: 1000,
            min_refetch_interval_ms: 1000,
            max_stale_seconds: None,
        }
    }

    #[test]
    fn periodic_and_backoff() {
        let mut s = Schedule::new(&src(), 0);
        assert!(s.should_start(0));
        s.started(0);
        assert!(!s.should_start(10));
        assert_eq!(s.finished(true, 50), Some(0));
        assert!(!s.should_start(29_999));
        assert!(s.should_start(30_050));
        s.started(30_050);
        s.finished(false, 30_060);
        assert!(!s.should_start(31_000));
        assert!(s.should_start(31_060));
        s.started(31_060);
        s.finished(false, 31_070);
        assert!(!s.should_start(33_000));
        assert!(s.should_start(33_070));
        // A lost fetch is replaced after timeout + grace.
        s.started(40_000);
        assert!(!s.should_start(42_999));
        assert!(s.should_start(43_000));
    }

    #[test]
    fn demand_is_rate_limited() {
        let mut s = Schedule::new(&src(), 0);
        s.started(0);
        s.finished(true, 10);
        s.demand(100);
        assert!(!s.should_start(500));
        assert!(s.should_start(1000));
        s.started(1000);
        s.finished(true, 1010);
        assert!(
            !s.should_start(5000),
            "demand satisfied by the fetch that started after it"
        );
    }

    #[test]
    fn waiters_release_by_start_time() {
        let mut w = Waiters::new(3);
        w.push(100, true, "fresh-early").unwrap();
        w.push(300, true, "fresh-late").unwrap();
        w.push(300, false, "any").unwrap();
        assert_eq!(w.push(1, false, "over"), Err("over"));
        let mut r = w.release(200);
        r.sort();
        assert_eq!(r, vec!["any", "fresh-early"]);
        assert_eq!(w.release(400), vec!["fresh-late"]);
        assert!(w.is_empty());
    }
}
