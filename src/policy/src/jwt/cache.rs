//! Bounded cache of verified tokens, so a token seen again skips signature work.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::VerifiedToken;

type Key = [u8; 32];

/// Cache of [`VerifiedToken`]s keyed by the SHA-256 of the token string (the
/// token itself is never stored).
///
/// Bounds and invariants:
/// * at most `capacity` entries; `capacity == 0` disables the cache;
/// * an entry is returned only while `now < valid_until`, where
///   `valid_until = min(exp, insert_time + max_ttl_seconds)` — never past the
///   token's `exp` (the clock skew tolerated by `verify` is not extended to
///   cached entries);
/// * inserting into a full cache first drops expired entries, then the entry
///   with the smallest `valid_until` (the oldest insertion among equals);
///   eviction costs O(log capacity);
/// * time is injected: `now` is Unix seconds from the caller's clock.
///
/// A hit is only as good as the settings and keys the entry was verified
/// with: call [`clear`](TokenCache::clear) whenever the JWKS or the
/// `JwtSettings` change. Memory is bounded by roughly `capacity` times the
/// decoded size of the largest accepted token.
#[derive(Debug, Clone)]
pub struct TokenCache {
    capacity: usize,
    max_ttl_seconds: i64,
    /// Ordered, so no random hash seed is needed from the Wasm host.
    entries: BTreeMap<Key, Entry>,
    /// `(valid_until, insertion sequence, key)` of every entry; the first
    /// element is the next to expire and the first to evict.
    by_expiry: BTreeSet<(i64, u64, Key)>,
    next_seq: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    token: VerifiedToken,
    valid_until: i64,
    seq: u64,
}

impl TokenCache {
    /// An empty cache holding at most `capacity` tokens, each for at most
    /// `max_ttl_seconds` after insertion.
    pub fn new(capacity: usize, max_ttl_seconds: u64) -> Self {
        TokenCache {
            capacity,
            max_ttl_seconds: i64::try_from(max_ttl_seconds).unwrap_or(i64::MAX),
            entries: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
            next_seq: 0,
        }
    }

    /// A clone of the cached verification of `token`, if present and still
    /// valid at `now`. An entry found expired is dropped.
    pub fn get(&mut self, token: &str, now: i64) -> Option<VerifiedToken> {
        let key = hash(token);
        let entry = self.entries.get(&key)?;
        if now < entry.valid_until {
            return Some(entry.token.clone());
        }
        self.remove(&key);
        None
    }

    /// Caches `verified` as the verification of `token` at `now`. Does
    /// nothing when the cache is disabled or the entry would already be
    /// expired. Replaces an existing entry for the same token.
    pub fn insert(&mut self, token: &str, verified: &VerifiedToken, now: i64) {
        if self.capacity == 0 {
            return;
        }
        let mut valid_until = now.saturating_add(self.max_ttl_seconds);
        if let Some(exp) = verified.expires_at {
            valid_until = valid_until.min(exp);
        }
        if valid_until <= now {
            return;
        }
        let key = hash(token);
        self.remove(&key);
        if self.entries.len() >= self.capacity {
            self.purge_expired(now);
        }
        while self.entries.len() >= self.capacity {
            let Some((_, _, victim)) = self.by_expiry.pop_first() else {
                break;
            };
            self.entries.remove(&victim);
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.by_expiry.insert((valid_until, seq, key));
        self.entries.insert(
            key,
            Entry {
                token: verified.clone(),
                valid_until,
                seq,
            },
        );
    }

    /// Drops every entry no longer valid at `now`; returns how many.
    pub fn purge_expired(&mut self, now: i64) -> usize {
        let mut purged = 0;
        while let Some(&(valid_until, _, key)) = self.by_expiry.first() {
            if valid_until > now {
                break;
            }
            self.by_expiry.pop_first();
            self.entries.remove(&key);
            purged += 1;
        }
        purged
    }

    /// Drops every entry (call it whenever the JWKS or settings change).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.by_expiry.clear();
    }

    /// Number of entries, including expired ones not yet dropped.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The maximum number of entries.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.entries.remove(key) {
            self.by_expiry.remove(&(old.valid_until, old.seq, *key));
        }
    }
}

fn hash(token: &str) -> Key {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::jwt::JwtAlgorithm;

    const NOW: i64 = 1_700_000_000;

    fn verified(subject: &str, expires_at: Option<i64>) -> VerifiedToken {
        VerifiedToken {
            subject: subject.to_string(),
            claims: serde_json::Map::new(),
            expires_at,
            key_id: None,
            algorithm: JwtAlgorithm::ES256,
        }
    }

    #[test]
    fn hit_returns_a_clone_until_exp() {
        let mut cache = TokenCache::new(4, 3600);
        let v = verified("alice", Some(NOW + 10));
        cache.insert("tok-a", &v, NOW);
        assert_eq!(cache.get("tok-a", NOW), Some(v.clone()));
        assert_eq!(cache.get("tok-a", NOW + 9), Some(v));
        // exp is exclusive and no skew is added.
        assert_eq!(cache.get("tok-a", NOW + 10), None);
        assert!(cache.is_empty(), "expired entry is dropped on lookup");
        assert_eq!(cache.get("tok-b", NOW), None);
    }

    #[test]
    fn max_ttl_caps_lifetime_and_covers_tokens_without_exp() {
        let mut cache = TokenCache::new(4, 30);
        cache.insert("long", &verified("a", Some(NOW + 3600)), NOW);
        cache.insert("no-exp", &verified("b", None), NOW);
        assert!(cache.get("long", NOW + 29).is_some());
        assert!(cache.get("long", NOW + 30).is_none());
        assert!(cache.get("no-exp", NOW + 29).is_some());
        assert!(cache.get("no-exp", NOW + 30).is_none());
    }

    #[test]
    fn already_expired_or_zero_ttl_is_not_inserted() {
        let mut cache = TokenCache::new(4, 3600);
        cache.insert("old", &verified("a", Some(NOW)), NOW);
        cache.insert("older", &verified("a", Some(NOW - 5)), NOW);
        assert!(cache.is_empty());
        let mut no_ttl = TokenCache::new(4, 0);
        no_ttl.insert("t", &verified("a", Some(NOW + 100)), NOW);
        assert!(no_ttl.is_empty());
    }

    #[test]
    fn capacity_zero_disables() {
        let mut cache = TokenCache::new(0, 3600);
        cache.insert("t", &verified("a", Some(NOW + 100)), NOW);
        assert_eq!(cache.len(), 0);
        assert!(cache.get("t", NOW).is_none());
    }

    #[test]
    fn full_cache_evicts_expired_first_then_soonest_expiring() {
        let mut cache = TokenCache::new(3, 3600);
        cache.insert("soon", &verified("a", Some(NOW + 5)), NOW);
        cache.insert("late", &verified("b", Some(NOW + 500)), NOW);
        cache.insert("mid", &verified("c", Some(NOW + 50)), NOW);
        // At NOW+10 "soon" is expired: it goes, nothing else.
        cache.insert("new1", &verified("d", Some(NOW + 400)), NOW + 10);
        assert_eq!(cache.len(), 3);
        assert!(cache.get("late", NOW + 10).is_some());
        assert!(cache.get("mid", NOW + 10).is_some());
        assert!(cache.get("new1", NOW + 10).is_some());
        // Nothing expired: the soonest-expiring entry ("mid") goes.
        cache.insert("new2", &verified("e", Some(NOW + 450)), NOW + 10);
        assert_eq!(cache.len(), 3);
        assert!(cache.get("mid", NOW + 10).is_none());
        assert!(cache.get("late", NOW + 10).is_some());
        assert!(cache.get("new1", NOW + 10).is_some());
        assert!(cache.get("new2", NOW + 10).is_some());
    }

    #[test]
    fn equal_expiry_evicts_oldest_insertion() {
        let mut cache = TokenCache::new(2, 60);
        cache.insert("first", &verified("a", None), NOW);
        cache.insert("second", &verified("b", None), NOW);
        cache.insert("third", &verified("c", None), NOW);
        assert!(cache.get("first", NOW).is_none());
        assert!(cache.get("second", NOW).is_some());
        assert!(cache.get("third", NOW).is_some());
    }

    #[test]
    fn reinsert_replaces_without_growing() {
        let mut cache = TokenCache::new(2, 3600);
        cache.insert("t", &verified("a", Some(NOW + 10)), NOW);
        cache.insert("t", &verified("b", Some(NOW + 100)), NOW);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.by_expiry.len(), 1);
        assert_eq!(
            cache.get("t", NOW + 50).map(|v| v.subject),
            Some("b".to_string())
        );
    }

    #[test]
    fn bound_holds_under_many_inserts() {
        let mut cache = TokenCache::new(16, 3600);
        for i in 0..1000i64 {
            cache.insert(
                &format!("tok-{i}"),
                &verified("x", Some(NOW + 1 + (i * 7919) % 500)),
                NOW,
            );
            assert!(cache.len() <= 16);
            assert_eq!(cache.len(), cache.by_expiry.len());
        }
        // The newest insertion always survives its own insert.
        assert!(cache.get("tok-999", NOW).is_some());
    }

    #[test]
    fn purge_and_clear() {
        let mut cache = TokenCache::new(8, 3600);
        cache.insert("a", &verified("a", Some(NOW + 5)), NOW);
        cache.insert("b", &verified("b", Some(NOW + 50)), NOW);
        assert_eq!(cache.purge_expired(NOW + 5), 1);
        assert_eq!(cache.len(), 1);
        cache.clear();
        assert!(cache.is_empty());
        assert!(cache.get("b", NOW).is_none());
        assert_eq!(cache.capacity(), 8);
    }

    #[test]
    fn key_is_a_hash_not_the_token() {
        let mut cache = TokenCache::new(2, 3600);
        let token = "header.payload.signature";
        cache.insert(token, &verified("a", Some(NOW + 5)), NOW);
        let debug = format!("{cache:?}");
        assert!(!debug.contains(token));
        assert!(cache.entries.contains_key(&hash(token)));
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let mut cache = TokenCache::new(2, u64::MAX);
        cache.insert("t", &verified("a", None), i64::MAX - 1);
        assert!(cache.get("t", i64::MAX - 1).is_some());
        cache.insert("u", &verified("a", Some(i64::MIN)), i64::MIN);
        assert!(cache.get("u", i64::MIN).is_none());
    }
}
