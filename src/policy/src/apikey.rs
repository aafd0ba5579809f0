//! API keys: format, hashing, records and verification.
//!
//! Key format (76 ASCII characters): `lag_<id>_<secret><check>` where
//! - `id` is 12 characters of lower-case RFC 4648 base32 (60 random bits): public, used for the
//!   O(1) lookup and in logs;
//! - `secret` is 52 base32 characters encoding 32 random bytes (256 bits) from the OS CSPRNG;
//! - `check` is the CRC-32 (IEEE) of everything before it, as 7 base32 characters, so a mistyped
//!   or truncated key is refused before any lookup and secret scanners can match
//!   `lag_[a-z2-7]{12}_[a-z2-7]{59}` with few false positives.
//!
//! Only `HMAC-SHA-256(pepper, key)` is ever stored (`"hmac-sha256:<base64url>"`); the unpeppered
//! form `"sha256:<base64url>"` exists only when the config explicitly allows it. Comparison is
//! constant-time, and an unknown id costs the same HMAC as a wrong secret.

use std::collections::HashMap;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::time::{format_rfc3339, parse_rfc3339, UnixSeconds};

pub const KEY_PREFIX: &str = "lag_";
pub const ID_LEN: usize = 12;
pub const SECRET_BYTES: usize = 32;
const SECRET_LEN: usize = 52;
const CHECK_LEN: usize = 7;
/// Total length of a well-formed key.
pub const KEY_LEN: usize = KEY_PREFIX.len() + ID_LEN + 1 + SECRET_LEN + CHECK_LEN;
const B32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(B32[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(B32[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// CRC-32 (IEEE 802.3, reflected) lookup table, built at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc = CRC_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

fn checksum(body: &str) -> String {
    let mut s = base32(&crc32(body.as_bytes()).to_be_bytes());
    s.truncate(CHECK_LEN);
    s
}

/// Builds a key from raw randomness: `id_random` picks the id, `secret` is the 256-bit secret.
/// The caller supplies CSPRNG output (the CLI reads the OS generator).
pub fn format_key(id_random: &[u8; 8], secret: &[u8; SECRET_BYTES]) -> (String, String) {
    let mut id = base32(id_random);
    id.truncate(ID_LEN);
    let body = format!("{KEY_PREFIX}{id}_{}", base32(secret));
    let key = format!("{body}{}", checksum(&body));
    (id, key)
}

/// Returns the key id when `key` is well formed (prefix, alphabet, lengths, checksum).
pub fn parse_key(key: &str) -> Option<&str> {
    if key.len() != KEY_LEN || !key.starts_with(KEY_PREFIX) {
        return None;
    }
    let rest = key.get(KEY_PREFIX.len()..)?;
    let id = rest.get(..ID_LEN)?;
    if rest.as_bytes().get(ID_LEN) != Some(&b'_') {
        return None;
    }
    let tail = rest.get(ID_LEN + 1..)?;
    if !id.bytes().chain(tail.bytes()).all(|c| B32.contains(&c)) {
        return None;
    }
    let split = key.len() - CHECK_LEN;
    let (body, check) = (key.get(..split)?, key.get(split..)?);
    (checksum(body) == check).then_some(id)
}

/// True for a usable `user`: 1 to 256 bytes, no control characters (it becomes `x-auth-user`).
pub fn is_valid_user(user: &str) -> bool {
    !user.is_empty() && user.len() <= 256 && !user.chars().any(char::is_control)
}

/// True for strings that look like a key id (used to validate records).
pub fn is_valid_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|c| B32.contains(&c))
}

/// How stored hashes are computed. Fixed per filter config.
#[derive(Clone)]
pub enum KeyHasher {
    /// HMAC-SHA-256 keyed with the pepper (the only mode unless explicitly relaxed). The keyed
    /// state is prepared once, so a verification costs two SHA-256 blocks less.
    Peppered(Hmac<Sha256>),
    /// Plain SHA-256; allowed only with `storage.allow_unpeppered_sha256`.
    Unpeppered,
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the pepper.
        f.write_str(match self {
            KeyHasher::Peppered(_) => "KeyHasher::Peppered(..)",
            KeyHasher::Unpeppered => "KeyHasher::Unpeppered",
        })
    }
}

impl KeyHasher {
    /// The peppered hasher.
    pub fn peppered(pepper: &[u8]) -> Self {
        // RFC 2104 key block: keys longer than the block are hashed, shorter ones zero-padded.
        // Building it here keeps the constructor infallible.
        let mut block = [0u8; 64];
        if pepper.len() > block.len() {
            block[..32].copy_from_slice(&Sha256::digest(pepper));
        } else {
            block[..pepper.len()].copy_from_slice(pepper);
        }
        KeyHasher::Peppered(<Hmac<Sha256> as KeyInit>::new(&block.into()))
    }

    fn scheme(&self) -> &'static str {
        match self {
            KeyHasher::Peppered(_) => "hmac-sha256:",
            KeyHasher::Unpeppered => "sha256:",
        }
    }

    fn digest(&self, key: &str) -> [u8; 32] {
        match self {
            KeyHasher::Peppered(prepared) => {
                let mut mac = prepared.clone();
                mac.update(key.as_bytes());
                mac.finalize().into_bytes().into()
            }
            KeyHasher::Unpeppered => Sha256::digest(key.as_bytes()).into(),
        }
    }

    /// The `hash` field value stored for `key`.
    pub fn stored_hash(&self, key: &str) -> String {
        format!(
            "{}{}",
            self.scheme(),
            URL_SAFE_NO_PAD.encode(self.digest(key))
        )
    }

    fn parse_stored(&self, hash: &str) -> Result<[u8; 32], String> {
        let Some(b64) = hash.strip_prefix(self.scheme()) else {
            let want = self.scheme().trim_end_matches(':');
            return Err(format!(
                "must start with \"{want}:\" (the configured hashing scheme)"
            ));
        };
        let raw = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| "is not base64url without padding".to_string())?;
        raw.try_into()
            .map_err(|_| "must encode 32 bytes".to_string())
    }
}

/// Constant-time equality of two digests.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    diff == 0
}

/// Why a key was revoked; the set the guide's `revoke_on` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationReason {
    SecurityEvent,
    UserRequest,
    KeyExpiry,
}

impl RevocationReason {
    pub const ALL: [RevocationReason; 3] = [
        RevocationReason::SecurityEvent,
        RevocationReason::UserRequest,
        RevocationReason::KeyExpiry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::SecurityEvent => "security_event",
            RevocationReason::UserRequest => "user_request",
            RevocationReason::KeyExpiry => "key_expiry",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One key as stored in a keyset file or the `keys` config list. This is exactly what the CLI
/// writes; it never holds the key or anything reversible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub id: String,
    pub hash: String,
    pub user: String,
    pub created_at: String,
    pub expires_at: String,
    #[serde(default)]
    pub revoked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_reason: Option<RevocationReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_to: Option<String>,
}

/// A keyset document: `{"keys": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keyset {
    pub keys: Vec<KeyRecord>,
}

/// A record that cannot be used, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub index: usize,
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "keys[{}].{}: {}", self.index, self.field, self.message)
    }
}

/// What a keyset must satisfy, from the config.
#[derive(Debug, Clone)]
pub struct KeyRules {
    pub max_ttl_seconds: i64,
}

#[derive(Debug, Clone)]
struct StoredKey {
    user: String,
    digest: [u8; 32],
    created_at: UnixSeconds,
    expires_at: UnixSeconds,
    revoked: Option<Option<RevocationReason>>,
}

/// Keys indexed by id. Immutable once built; a refresh builds a new one and swaps it in.
#[derive(Debug, Clone, Default)]
pub struct KeyStore {
    keys: HashMap<String, StoredKey>,
}

/// A successfully verified key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdentity {
    pub key_id: String,
    pub user: String,
    pub created_at: UnixSeconds,
    pub expires_at: UnixSeconds,
}

/// Why a presented key was refused. Clients see only `invalid_api_key` for the first three
/// (an unknown id and a wrong secret look the same); logs and metrics see [`KeyDenial::reason`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyDenial {
    /// Not of the key format, or its checksum does not match.
    Malformed,
    /// Well formed, but no record has this id.
    UnknownId { key_id: String },
    /// A record has this id, but the secret does not match its hash.
    WrongSecret { key_id: String },
    /// The right key, past `expires_at`.
    Expired { key_id: String, user: String },
    /// The right key, revoked.
    Revoked {
        key_id: String,
        user: String,
        reason: Option<RevocationReason>,
    },
}

impl KeyDenial {
    /// Stable reason code for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            KeyDenial::Malformed => "malformed_api_key",
            KeyDenial::UnknownId { .. } => "unknown_api_key",
            KeyDenial::WrongSecret { .. } => "wrong_api_key_secret",
            KeyDenial::Expired { .. } => "expired_api_key",
            KeyDenial::Revoked { .. } => "revoked_api_key",
        }
    }

    /// The key id, where one was presented in a well-formed key (safe to log: ids are public).
    pub fn key_id(&self) -> Option<&str> {
        match self {
            KeyDenial::Malformed => None,
            KeyDenial::UnknownId { key_id }
            | KeyDenial::WrongSecret { key_id }
            | KeyDenial::Expired { key_id, .. }
            | KeyDenial::Revoked { key_id, .. } => Some(key_id),
        }
    }
}

fn record_time(index: usize, field: &'static str, value: &str) -> Result<UnixSeconds, RecordError> {
    parse_rfc3339(value).map_err(|e| RecordError {
        index,
        field,
        message: e.to_string(),
    })
}

impl KeyStore {
    /// Builds a store from records. Structural problems (bad id, hash, timestamps, duplicate
    /// ids) fail the whole set; with `strict`, so do policy violations (a lifetime over
    /// `max_ttl`). Without `strict` (remote keysets) a policy-violating record is left out and
    /// reported in the second value, so one bad record cannot block revocations in the rest.
    pub fn build(
        records: &[KeyRecord],
        hasher: &KeyHasher,
        rules: &KeyRules,
        strict: bool,
    ) -> Result<(KeyStore, Vec<RecordError>), RecordError> {
        let mut keys = HashMap::with_capacity(records.len());
        let mut skipped = Vec::new();
        for (index, r) in records.iter().enumerate() {
            let err = |field, message: String| RecordError {
                index,
                field,
                message,
            };
            if !is_valid_id(&r.id) {
                return Err(err(
                    "id",
                    format!("must be {ID_LEN} characters of a-z and 2-7"),
                ));
            }
            let digest = hasher.parse_stored(&r.hash).map_err(|m| err("hash", m))?;
            if !is_valid_user(&r.user) {
                return Err(err(
                    "user",
                    "must be 1 to 256 characters, no control characters".into(),
                ));
            }
            let created_at = record_time(index, "created_at", &r.created_at)?;
            let expires_at = record_time(index, "expires_at", &r.expires_at)?;
            // Equal is allowed: a key rotated with zero overlap in the second it was made.
            if expires_at < created_at {
                return Err(err("expires_at", "must not be before created_at".into()));
            }
            if let Some(at) = &r.revoked_at {
                record_time(index, "revoked_at", at)?;
            }
            if keys.contains_key(&r.id) {
                return Err(err("id", format!("duplicate id {}", r.id)));
            }
            if expires_at - created_at > rules.max_ttl_seconds {
                let e = err(
                    "expires_at",
                    format!(
                        "lifetime of {} hours exceeds max_ttl_hours ({})",
                        (expires_at - created_at) / 3600,
                        rules.max_ttl_seconds / 3600
                    ),
                );
                if strict {
                    return Err(e);
                }
                skipped.push(e);
                continue;
            }
            let revoked = r.revoked.then_some(r.revocation_reason);
            keys.insert(
                r.id.clone(),
                StoredKey {
                    user: r.user.clone(),
                    digest,
                    created_at,
                    expires_at,
                    revoked,
                },
            );
        }
        Ok((KeyStore { keys }, skipped))
    }

    /// `self` with every record of `over` added, replacing records with the same id.
    pub fn overlay(&self, over: &KeyStore) -> KeyStore {
        let mut keys = self.keys.clone();
        keys.extend(over.keys.iter().map(|(k, v)| (k.clone(), v.clone())));
        KeyStore { keys }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies a presented key: format, lookup, one HMAC, constant-time compare, then
    /// revocation and expiry (`expires_at` itself is already expired).
    pub fn verify(
        &self,
        presented: &str,
        hasher: &KeyHasher,
        now: UnixSeconds,
    ) -> Result<KeyIdentity, KeyDenial> {
        let id = parse_key(presented).ok_or(KeyDenial::Malformed)?;
        let digest = hasher.digest(presented);
        let Some(stored) = self.keys.get(id) else {
            // Same work as a wrong secret, so timing does not tell ids apart.
            let _ = ct_eq(&digest, &[0u8; 32]);
            return Err(KeyDenial::UnknownId {
                key_id: id.to_string(),
            });
        };
        if !ct_eq(&digest, &stored.digest) {
            return Err(KeyDenial::WrongSecret {
                key_id: id.to_string(),
            });
        }
        if let Some(reason) = stored.revoked {
            return Err(KeyDenial::Revoked {
                key_id: id.to_string(),
                user: stored.user.clone(),
                reason,
            });
        }
        if now >= stored.expires_at {
            return Err(KeyDenial::Expired {
                key_id: id.to_string(),
                user: stored.user.clone(),
            });
        }
        Ok(KeyIdentity {
            key_id: id.to_string(),
            user: stored.user.clone(),
            created_at: stored.created_at,
            expires_at: stored.expires_at,
        })
    }
}

/// When the rotation notice starts for a key: `notify_before` ahead of the earlier of its expiry
/// and its rotation due date (`created_at + interval`).
pub fn notice_due(
    id: &KeyIdentity,
    interval_seconds: i64,
    notify_before_seconds: i64,
) -> (UnixSeconds, UnixSeconds) {
    let due = id
        .expires_at
        .min(id.created_at.saturating_add(interval_seconds));
    (due.saturating_sub(notify_before_seconds), due)
}

/// Builds the record for a freshly generated key.
pub fn new_record(
    key: &str,
    id: &str,
    user: &str,
    hasher: &KeyHasher,
    created_at: UnixSeconds,
    expires_at: UnixSeconds,
) -> KeyRecord {
    KeyRecord {
        id: id.to_string(),
        hash: hasher.stored_hash(key),
        user: user.to_string(),
        created_at: format_rfc3339(created_at),
        expires_at: format_rfc3339(expires_at),
        revoked: false,
        revoked_at: None,
        revocation_reason: None,
        rotated_from: None,
        rotated_to: None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const T0: i64 = 1_796_312_115;

    fn key(n: u8) -> (String, String) {
        format_key(&[n; 8], &[n.wrapping_mul(7); SECRET_BYTES])
    }

    fn store(records: &[KeyRecord], hasher: &KeyHasher) -> KeyStore {
        KeyStore::build(
            records,
            hasher,
            &KeyRules {
                max_ttl_seconds: 168 * 3600,
            },
            true,
        )
        .unwrap()
        .0
    }

    #[test]
    fn format_is_stable_and_checked() {
        let (id, k) = key(1);
        assert_eq!(k.len(), KEY_LEN);
        assert_eq!(k.len(), 76);
        assert_eq!(parse_key(&k), Some(id.as_str()));
        // Every single-character substitution is caught by the checksum or the alphabet.
        for i in 0..k.len() {
            for c in ['a', 'q', '7', '_', 'A'] {
                let mut b = k.clone().into_bytes();
                if b[i] == c as u8 {
                    continue;
                }
                b[i] = c as u8;
                let m = String::from_utf8(b).unwrap();
                assert_eq!(parse_key(&m), None, "{m}");
            }
        }
        assert_eq!(parse_key(&k[..75]), None);
        assert_eq!(parse_key(""), None);
        assert_eq!(parse_key("lag_ü"), None);
    }

    #[test]
    fn verifies_and_distinguishes_denials() {
        let hasher = KeyHasher::peppered(b"pepper-for-tests-0123456789abcdef");
        let (id, k) = key(2);
        let (id3, k3) = key(3);
        let mut revoked = new_record(&k3, &id3, "bob", &hasher, T0, T0 + 3600);
        revoked.revoked = true;
        revoked.revocation_reason = Some(RevocationReason::SecurityEvent);
        let s = store(
            &[
                new_record(&k, &id, "alice", &hasher, T0, T0 + 3600),
                revoked,
            ],
            &hasher,
        );
        let ok = s.verify(&k, &hasher, T0 + 10).unwrap();
        assert_eq!(
            (ok.key_id.as_str(), ok.user.as_str()),
            (id.as_str(), "alice")
        );
        assert!(matches!(
            s.verify(&k, &hasher, T0 + 3600),
            Err(KeyDenial::Expired { .. })
        ));
        assert!(matches!(
            s.verify(&k3, &hasher, T0),
            Err(KeyDenial::Revoked { .. })
        ));
        let (_, unknown) = key(4);
        assert!(matches!(
            s.verify(&unknown, &hasher, T0),
            Err(KeyDenial::UnknownId { .. })
        ));
        // Same id, other secret, valid checksum: wrong secret.
        let (_, forged) = format_key(&[2; 8], &[9; SECRET_BYTES]);
        assert!(matches!(
            s.verify(&forged, &hasher, T0),
            Err(KeyDenial::WrongSecret { .. })
        ));
        // Another pepper: the right key no longer matches.
        let other = KeyHasher::peppered(b"another-pepper-0123456789abcdef!");
        let s2 = KeyStore::build(
            &[new_record(&k, &id, "a", &other, T0, T0 + 60)],
            &other,
            &KeyRules {
                max_ttl_seconds: 3600,
            },
            true,
        )
        .unwrap()
        .0;
        assert!(matches!(
            s2.verify(&k, &hasher, T0),
            Err(KeyDenial::WrongSecret { .. })
        ));
    }

    #[test]
    fn records_are_validated() {
        let hasher = KeyHasher::peppered(&b"p".repeat(32));
        let (id, k) = key(5);
        let good = new_record(&k, &id, "u", &hasher, T0, T0 + 3600);
        let rules = KeyRules {
            max_ttl_seconds: 24 * 3600,
        };
        let mut long = good.clone();
        long.expires_at = format_rfc3339(T0 + 25 * 3600);
        let e = KeyStore::build(&[long.clone()], &hasher, &rules, true).unwrap_err();
        assert_eq!(e.field, "expires_at");
        let (s, skipped) = KeyStore::build(&[long, good.clone()], &hasher, &rules, false).unwrap();
        assert_eq!((s.len(), skipped.len()), (1, 1));
        let e = KeyStore::build(&[good.clone(), good.clone()], &hasher, &rules, true).unwrap_err();
        assert!(e.message.contains("duplicate"));
        let mut unpeppered = good.clone();
        unpeppered.hash = KeyHasher::Unpeppered.stored_hash(&k);
        assert_eq!(
            KeyStore::build(&[unpeppered], &hasher, &rules, true)
                .unwrap_err()
                .field,
            "hash"
        );
        let mut bad_time = good;
        bad_time.created_at = "yesterday".into();
        assert_eq!(
            KeyStore::build(&[bad_time], &hasher, &rules, true)
                .unwrap_err()
                .field,
            "created_at"
        );
        assert!(!hasher.stored_hash(&k).contains(&k[4..20]));
    }

    /// Prints the cost of one verification of a valid key (format check, lookup in 10 000
    /// keys, one HMAC, constant-time compare). Run with
    /// `cargo test --release -p llm-api-guard-policy apikey::tests::timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn timing() {
        let hasher = KeyHasher::peppered(b"pepper-for-timing-0123456789abcdef");
        let mut records = Vec::new();
        let mut keys = Vec::new();
        for i in 0..10_000u32 {
            let mut idr = [0u8; 8];
            idr[..4].copy_from_slice(&i.to_be_bytes());
            let (id, k) = format_key(&idr, &[(i % 251) as u8; SECRET_BYTES]);
            records.push(new_record(&k, &id, "u", &hasher, T0, T0 + 3600));
            keys.push(k);
        }
        let s = KeyStore::build(
            &records,
            &hasher,
            &KeyRules {
                max_ttl_seconds: 7200,
            },
            true,
        )
        .unwrap()
        .0;
        let n = 200_000;
        let start = std::time::Instant::now();
        for i in 0..n {
            let k = &keys[i % keys.len()];
            assert!(s.verify(std::hint::black_box(k), &hasher, T0 + 1).is_ok());
        }
        let per = start.elapsed().as_nanos() as f64 / n as f64;
        println!("api key verification: {per:.0} ns per valid key (10000 keys in the store)");
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn prepared_hmac_matches_rfc_2104() {
        for pepper in [&b"short"[..], &[7u8; 64][..], &[9u8; 100][..]] {
            let mut reference = <Hmac<Sha256> as Mac>::new_from_slice(pepper).unwrap();
            reference.update(b"lag_key");
            let want: [u8; 32] = reference.finalize().into_bytes().into();
            assert_eq!(KeyHasher::peppered(pepper).digest("lag_key"), want);
        }
    }

    #[test]
    fn overlay_replaces_by_id() {
        let hasher = KeyHasher::Unpeppered;
        let (id, k) = key(6);
        let base = store(&[new_record(&k, &id, "u", &hasher, T0, T0 + 60)], &hasher);
        let mut rev = new_record(&k, &id, "u", &hasher, T0, T0 + 60);
        rev.revoked = true;
        let merged = base.overlay(&store(&[rev], &hasher));
        assert!(matches!(
            merged.verify(&k, &hasher, T0),
            Err(KeyDenial::Revoked { .. })
        ));
    }
}
