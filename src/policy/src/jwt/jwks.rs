//! JWKS parsing (RFC 7517): only public signature keys of supported types are kept.

use std::fmt;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use jwt_simple::algorithms::{ES256PublicKey, ES384PublicKey, Ed25519PublicKey, RS256PublicKey};
use serde_json::{Map, Value};

use super::error::JwksError;
use super::json::parse_unique;
use super::JwtAlgorithm;

/// Largest JWKS document [`Jwks::parse`] accepts, in bytes.
pub const MAX_JWKS_BYTES: usize = 512 * 1024;
/// Largest number of entries in `keys` (usable or not).
pub const MAX_JWKS_KEYS: usize = 100;

/// RSA moduli below this many bits are refused.
const MIN_RSA_BITS: usize = 2048;
/// jwt-simple refuses RSA moduli above this many bits.
const MAX_RSA_BITS: usize = 4096;
/// `kid` values quoted in errors are cut to this many characters.
const MAX_KID_IN_ERROR: usize = 64;

/// JWK members that only private keys have. `k` (symmetric keys) is not
/// listed: `oct` keys are skipped before this check.
const RSA_PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];
const EC_OKP_PRIVATE_MEMBERS: [&str; 1] = ["d"];

/// base64url with or without `=` padding. Trailing bits are tolerated: the
/// JWKS comes from configuration or the identity provider, not the client.
const B64URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// A parsed JWKS holding at least one usable signature key.
///
/// Invariants: every kept key is a public key of a supported type that the
/// crypto backend accepted; no two kept keys share a `kid`; a kept key's
/// `alg`, when present, fits its type. Immutable once built.
#[derive(Clone)]
pub struct Jwks {
    keys: Vec<JwkKey>,
}

/// One usable verification key.
#[derive(Clone)]
pub(crate) struct JwkKey {
    pub(crate) kid: Option<String>,
    /// The JWK's `alg`, when it had one; the key is then used for that algorithm only.
    pub(crate) alg: Option<JwtAlgorithm>,
    pub(crate) material: KeyMaterial,
}

/// Public key material in the form jwt-simple consumes.
#[derive(Clone)]
pub(crate) enum KeyMaterial {
    /// Big-endian modulus and exponent without leading zeros; checked with
    /// jwt-simple at parse time and turned into the algorithm-specific key
    /// type at verification time (a JWK without `alg` may serve RS* and PS*).
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    P256(ES256PublicKey),
    P384(ES384PublicKey),
    Ed25519(Ed25519PublicKey),
}

impl KeyMaterial {
    /// True when this key type can verify `alg`: RS*/PS* ↔ RSA, ES256 ↔ P-256,
    /// ES384 ↔ P-384, EdDSA ↔ Ed25519. HS256 fits no JWKS key.
    pub(crate) fn fits(&self, alg: JwtAlgorithm) -> bool {
        use JwtAlgorithm::*;
        match self {
            KeyMaterial::Rsa { .. } => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyMaterial::P256(_) => alg == ES256,
            KeyMaterial::P384(_) => alg == ES384,
            KeyMaterial::Ed25519(_) => alg == EdDSA,
        }
    }

    fn kty(&self) -> &'static str {
        match self {
            KeyMaterial::Rsa { .. } => "RSA",
            KeyMaterial::P256(_) => "EC P-256",
            KeyMaterial::P384(_) => "EC P-384",
            KeyMaterial::Ed25519(_) => "OKP Ed25519",
        }
    }
}

impl JwkKey {
    /// True when this key may verify a token signed with `alg`: the key type
    /// fits and the JWK's own `alg`, if any, is the same algorithm.
    pub(crate) fn is_compatible(&self, alg: JwtAlgorithm) -> bool {
        self.material.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

impl Jwks {
    /// Parses a JWKS document (`{"keys":[...]}`), at most [`MAX_JWKS_BYTES`]
    /// bytes. Duplicate JSON object keys are refused.
    pub fn parse(json: &[u8]) -> Result<Jwks, JwksError> {
        if json.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge {
                len: json.len(),
                max: MAX_JWKS_BYTES,
            });
        }
        let value = parse_unique(json).map_err(|e| JwksError::InvalidJson {
            detail: e.to_string(),
        })?;
        Self::from_value(&value)
    }

    /// Same as [`Jwks::parse`], from an already parsed value (e.g. an inline
    /// JWKS in the filter configuration). Duplicate JSON keys cannot be
    /// detected here: the value keeps whichever its parser kept.
    pub fn from_value(v: &Value) -> Result<Jwks, JwksError> {
        let entries = v
            .as_object()
            .and_then(|o| o.get("keys"))
            .and_then(Value::as_array)
            .ok_or(JwksError::MissingKeys)?;
        if entries.len() > MAX_JWKS_KEYS {
            return Err(JwksError::TooManyKeys {
                count: entries.len(),
                max: MAX_JWKS_KEYS,
            });
        }
        let mut keys: Vec<JwkKey> = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let Some(key) = parse_key(index, entry)? else {
                continue;
            };
            if let Some(kid) = &key.kid {
                if keys.iter().any(|k| k.kid.as_deref() == Some(kid.as_str())) {
                    return Err(JwksError::DuplicateKid {
                        kid: kid.chars().take(MAX_KID_IN_ERROR).collect(),
                    });
                }
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKeys {
                total: entries.len(),
            });
        }
        Ok(Jwks { keys })
    }

    /// `self` plus the keys of `other` whose `kid` `self` does not have: the keys of `self`
    /// (pinned in the config) win over fetched ones with the same `kid`.
    pub fn with_keys_of(&self, other: &Jwks) -> Jwks {
        let mut keys = self.keys.clone();
        for k in &other.keys {
            let taken = k.kid.as_deref().is_some_and(|kid| self.contains_kid(kid));
            if !taken {
                keys.push(k.clone());
            }
        }
        Jwks { keys }
    }

    /// Number of usable keys (at least 1).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false for a successfully parsed JWKS; provided for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// True when a usable key has exactly this `kid`.
    pub fn contains_kid(&self, kid: &str) -> bool {
        self.key_by_kid(kid).is_some()
    }

    /// The `kid`s of the usable keys, in document order (keys without `kid` omitted).
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref())
    }

    pub(crate) fn key_by_kid(&self, kid: &str) -> Option<&JwkKey> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }

    pub(crate) fn keys(&self) -> &[JwkKey] {
        &self.keys
    }
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| {
                (
                    k.kid.as_deref(),
                    k.material.kty(),
                    k.alg.map(|a| a.as_str()),
                )
            }))
            .finish()
    }
}

/// Parses entry `index`: `Ok(None)` when the key is to be skipped.
fn parse_key(index: usize, entry: &Value) -> Result<Option<JwkKey>, JwksError> {
    let obj = entry.as_object().ok_or(JwksError::KeyNotObject { index })?;

    let kty = str_member(obj, index, "kty")?.ok_or(JwksError::MissingMember {
        index,
        member: "kty",
    })?;
    if !matches!(kty, "RSA" | "EC" | "OKP") {
        return Ok(None);
    }
    if str_member(obj, index, "use")?.is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    if let Some(ops) = obj.get("key_ops") {
        let ops = ops.as_array().ok_or(JwksError::InvalidMember {
            index,
            member: "key_ops",
        })?;
        let mut has_verify = false;
        for op in ops {
            let op = op.as_str().ok_or(JwksError::InvalidMember {
                index,
                member: "key_ops",
            })?;
            has_verify |= op == "verify";
        }
        if !has_verify {
            return Ok(None);
        }
    }
    let alg = match str_member(obj, index, "alg")? {
        None => None,
        // RFC 9864 name of EdDSA restricted to Ed25519.
        Some("Ed25519") => Some(JwtAlgorithm::EdDSA),
        Some(name) => match JwtAlgorithm::parse(name) {
            Some(alg) => Some(alg),
            None => return Ok(None),
        },
    };

    let material = match kty {
        "RSA" => {
            refuse_private(obj, index, &RSA_PRIVATE_MEMBERS)?;
            parse_rsa(obj, index)?
        }
        "EC" => {
            let crv = str_member(obj, index, "crv")?.ok_or(JwksError::MissingMember {
                index,
                member: "crv",
            })?;
            let size = match crv {
                "P-256" => 32,
                "P-384" => 48,
                _ => return Ok(None),
            };
            refuse_private(obj, index, &EC_OKP_PRIVATE_MEMBERS)?;
            parse_ec(obj, index, size)?
        }
        _ => {
            let crv = str_member(obj, index, "crv")?.ok_or(JwksError::MissingMember {
                index,
                member: "crv",
            })?;
            if crv != "Ed25519" {
                return Ok(None);
            }
            refuse_private(obj, index, &EC_OKP_PRIVATE_MEMBERS)?;
            let x = fixed_member(obj, index, "x", 32)?;
            let pk = Ed25519PublicKey::from_bytes(&x).map_err(|_| JwksError::InvalidKey {
                index,
                reason: "not a valid Ed25519 public key",
            })?;
            KeyMaterial::Ed25519(pk)
        }
    };

    if let Some(alg) = alg {
        if !material.fits(alg) {
            return Err(JwksError::AlgorithmMismatch { index, alg });
        }
    }
    let kid = str_member(obj, index, "kid")?.map(str::to_string);
    Ok(Some(JwkKey { kid, alg, material }))
}

fn parse_rsa(obj: &Map<String, Value>, index: usize) -> Result<KeyMaterial, JwksError> {
    let n = b64_member(obj, index, "n")?;
    let e = b64_member(obj, index, "e")?;
    let n = trim_leading_zeros(&n).to_vec();
    let e = trim_leading_zeros(&e).to_vec();
    let bits = bit_length(&n);
    if bits < MIN_RSA_BITS {
        return Err(JwksError::WeakRsaKey { index, bits });
    }
    if bits > MAX_RSA_BITS {
        return Err(JwksError::UnsupportedRsaKey {
            index,
            reason: "modulus over 4096 bits",
        });
    }
    if n.last().is_none_or(|b| b & 1 == 0) {
        return Err(JwksError::UnsupportedRsaKey {
            index,
            reason: "even modulus",
        });
    }
    if e != [1, 0, 1] {
        return Err(JwksError::UnsupportedRsaKey {
            index,
            reason: "public exponent is not 65537",
        });
    }
    // Same checks the verifier applies; done once here so verification cannot
    // fail on the key itself.
    RS256PublicKey::from_components(&n, &e).map_err(|_| JwksError::InvalidKey {
        index,
        reason: "rejected by the RSA backend",
    })?;
    Ok(KeyMaterial::Rsa { n, e })
}

fn parse_ec(obj: &Map<String, Value>, index: usize, size: usize) -> Result<KeyMaterial, JwksError> {
    let x = fixed_member(obj, index, "x", size)?;
    let y = fixed_member(obj, index, "y", size)?;
    // Uncompressed SEC1 point: 0x04 || x || y.
    let mut point = Vec::with_capacity(1 + 2 * size);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let invalid = || JwksError::InvalidKey {
        index,
        reason: "point is not on the curve",
    };
    if size == 32 {
        ES256PublicKey::from_bytes(&point)
            .map(KeyMaterial::P256)
            .map_err(|_| invalid())
    } else {
        ES384PublicKey::from_bytes(&point)
            .map(KeyMaterial::P384)
            .map_err(|_| invalid())
    }
}

fn refuse_private(
    obj: &Map<String, Value>,
    index: usize,
    members: &[&'static str],
) -> Result<(), JwksError> {
    match members.iter().find(|m| obj.contains_key(**m)) {
        Some(member) => Err(JwksError::PrivateKeyMaterial { index, member }),
        None => Ok(()),
    }
}

/// An optional string member; present with another type is an error.
fn str_member<'a>(
    obj: &'a Map<String, Value>,
    index: usize,
    member: &'static str,
) -> Result<Option<&'a str>, JwksError> {
    match obj.get(member) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(JwksError::InvalidMember { index, member }),
    }
}

/// A required base64url member, decoded.
fn b64_member(
    obj: &Map<String, Value>,
    index: usize,
    member: &'static str,
) -> Result<Vec<u8>, JwksError> {
    let s = str_member(obj, index, member)?.ok_or(JwksError::MissingMember { index, member })?;
    B64URL_LENIENT
        .decode(s.as_bytes())
        .map_err(|_| JwksError::InvalidBase64 { index, member })
}

/// A required base64url member that must decode to exactly `size` bytes.
fn fixed_member(
    obj: &Map<String, Value>,
    index: usize,
    member: &'static str,
    size: usize,
) -> Result<Vec<u8>, JwksError> {
    let bytes = b64_member(obj, index, member)?;
    if bytes.len() != size {
        return Err(JwksError::InvalidLength {
            index,
            member,
            expected: size,
            actual: bytes.len(),
        });
    }
    Ok(bytes)
}

fn trim_leading_zeros(x: &[u8]) -> &[u8] {
    let first = x.iter().position(|&b| b != 0).unwrap_or(x.len());
    x.get(first..).unwrap_or_default()
}

/// Bit length of a big-endian integer without leading zero bytes.
fn bit_length(x: &[u8]) -> usize {
    match x.first() {
        None => 0,
        Some(&top) => (x.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::jwt::test_keys::*;

    fn one(key: Value) -> Result<Jwks, JwksError> {
        Jwks::from_value(&json!({"keys": [key]}))
    }

    fn with(mut key: Value, member: &str, value: Value) -> Value {
        key[member] = value;
        key
    }

    fn without(mut key: Value, member: &str) -> Value {
        key.as_object_mut().unwrap().remove(member);
        key
    }

    /// A 1024-bit odd modulus (not a real key: size is checked first).
    fn n_1024() -> String {
        let mut n = vec![0xc5u8; 128];
        n[127] |= 1;
        b64(&n)
    }

    #[test]
    fn parses_every_supported_key_type() {
        let text = jwks_value().to_string();
        let jwks = Jwks::parse(text.as_bytes()).unwrap();
        assert_eq!(jwks.len(), 4);
        assert!(!jwks.is_empty());
        for kid in ["rsa", "es256", "es384", "ed"] {
            assert!(jwks.contains_kid(kid), "{kid}");
        }
        assert!(!jwks.contains_kid("nope"));
        assert_eq!(
            jwks.key_ids().collect::<Vec<_>>(),
            ["rsa", "es256", "es384", "ed"]
        );
        let debug = format!("{jwks:?}");
        assert!(debug.contains("EC P-384"), "{debug}");
        // parse and from_value agree.
        assert_eq!(Jwks::from_value(&jwks_value()).unwrap().len(), 4);
    }

    #[test]
    fn tolerates_padding_leading_zeros_and_extra_members() {
        let c = keys().rs256.public_key().to_components();
        let mut padded_n = vec![0u8];
        padded_n.extend_from_slice(&c.n);
        use base64::engine::general_purpose::URL_SAFE;
        let key = json!({
            "kty": "RSA", "kid": "rsa", "alg": "RS256", "use": "sig", "key_ops": ["verify"],
            "n": URL_SAFE.encode(&padded_n), "e": URL_SAFE.encode(&c.e),
            "x5c": ["MIIB..."], "x5t": "abc", "ext": true,
        });
        let jwks = one(key).unwrap();
        let token = sign(JwtAlgorithm::RS256, Some("rsa"), claims());
        assert!(crate::jwt::verify(&settings(), Some(&jwks), &token, NOW).is_ok());
        // Padded EC / OKP coordinates too.
        let ec = es256_jwk("es", &keys().es256);
        let padded = |v: &Value| {
            let raw = B64URL_LENIENT.decode(v.as_str().unwrap()).unwrap();
            json!(URL_SAFE.encode(raw))
        };
        let ec = with(
            with(ec.clone(), "x", padded(&ec["x"])),
            "y",
            padded(&ec["y"]),
        );
        assert!(one(ec).is_ok());
        let ed = ed25519_jwk("ed");
        assert!(one(with(ed.clone(), "x", padded(&ed["x"]))).is_ok());
        // "alg":"Ed25519" (RFC 9864) is accepted as EdDSA.
        assert!(one(with(ed25519_jwk("ed"), "alg", json!("Ed25519"))).is_ok());
    }

    #[test]
    fn document_level_errors() {
        assert!(matches!(
            Jwks::parse(b"not json"),
            Err(JwksError::InvalidJson { .. })
        ));
        assert!(matches!(
            Jwks::parse(b""),
            Err(JwksError::InvalidJson { .. })
        ));
        assert!(matches!(
            Jwks::parse(br#"{"keys":[],"keys":[]}"#),
            Err(JwksError::InvalidJson { .. })
        ));
        for doc in [
            r#"[]"#,
            r#"{}"#,
            r#"{"keys":{}}"#,
            r#"{"keys":null}"#,
            r#""keys""#,
        ] {
            assert_eq!(
                Jwks::parse(doc.as_bytes()).unwrap_err(),
                JwksError::MissingKeys,
                "{doc}"
            );
        }
        assert_eq!(
            Jwks::parse(br#"{"keys":[]}"#).unwrap_err(),
            JwksError::NoUsableKeys { total: 0 }
        );
        let big = vec![b' '; MAX_JWKS_BYTES + 1];
        assert_eq!(
            Jwks::parse(&big).unwrap_err(),
            JwksError::TooLarge {
                len: MAX_JWKS_BYTES + 1,
                max: MAX_JWKS_BYTES
            }
        );
        let many: Vec<Value> = (0..=MAX_JWKS_KEYS).map(|_| json!({"kty": "oct"})).collect();
        assert_eq!(
            Jwks::from_value(&json!({"keys": many})).unwrap_err(),
            JwksError::TooManyKeys {
                count: MAX_JWKS_KEYS + 1,
                max: MAX_JWKS_KEYS
            }
        );
        let e = Jwks::parse(b"{").unwrap_err();
        assert!(e.to_string().starts_with("JWKS is not valid JSON"), "{e}");
    }

    #[test]
    fn unsupported_keys_are_skipped_and_zero_usable_is_an_error() {
        let skipped = [
            json!({"kty": "oct", "kid": "s", "k": "c2VjcmV0", "alg": "HS256"}),
            json!({"kty": "AKP", "kid": "pq", "alg": "ML-DSA-44", "pub": "AAAA"}),
            json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}),
            json!({"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"}),
            json!({"kty": "OKP", "crv": "X25519", "x": "AA"}),
            json!({"kty": "OKP", "crv": "Ed448", "x": "AA"}),
            with(rsa_jwk("enc"), "use", json!("enc")),
            with(rsa_jwk("oaep"), "alg", json!("RSA-OAEP-256")),
            with(rsa_jwk("ops"), "key_ops", json!(["encrypt", "wrapKey"])),
            with(es256_jwk("es512", &keys().es256), "alg", json!("ES512")),
        ];
        let jwks = Jwks::from_value(&json!({"keys": skipped})).unwrap_err();
        assert_eq!(
            jwks,
            JwksError::NoUsableKeys {
                total: skipped.len()
            }
        );
        assert_eq!(jwks.to_string(), "no usable signature key among 10 keys");
        let mut mixed = skipped.to_vec();
        mixed.push(ed25519_jwk("ed"));
        let jwks = Jwks::from_value(&json!({"keys": mixed})).unwrap();
        assert_eq!(jwks.len(), 1);
        assert!(jwks.contains_kid("ed"));
        assert!(!jwks.contains_kid("s"));
        assert!(!jwks.contains_kid("enc"));
    }

    #[test]
    fn per_key_errors_name_the_key_and_member() {
        let rsa = rsa_jwk("rsa");
        let cases: Vec<(Value, JwksError, &str)> = vec![
            (
                json!("rsa"),
                JwksError::KeyNotObject { index: 0 },
                "key 0: not a JSON object",
            ),
            (
                without(rsa.clone(), "kty"),
                JwksError::MissingMember {
                    index: 0,
                    member: "kty",
                },
                "key 0: missing \"kty\"",
            ),
            (
                with(rsa.clone(), "kty", json!(1)),
                JwksError::InvalidMember {
                    index: 0,
                    member: "kty",
                },
                "key 0: \"kty\" has the wrong type",
            ),
            (
                with(rsa.clone(), "n", json!("not*base64")),
                JwksError::InvalidBase64 {
                    index: 0,
                    member: "n",
                },
                "key 0: bad base64url in \"n\"",
            ),
            (
                with(rsa.clone(), "n", json!("+/+/")),
                JwksError::InvalidBase64 {
                    index: 0,
                    member: "n",
                },
                "key 0: bad base64url in \"n\"",
            ),
            (
                without(rsa.clone(), "e"),
                JwksError::MissingMember {
                    index: 0,
                    member: "e",
                },
                "key 0: missing \"e\"",
            ),
            (
                with(rsa.clone(), "kid", json!(7)),
                JwksError::InvalidMember {
                    index: 0,
                    member: "kid",
                },
                "key 0: \"kid\" has the wrong type",
            ),
            (
                with(rsa.clone(), "use", json!(["sig"])),
                JwksError::InvalidMember {
                    index: 0,
                    member: "use",
                },
                "key 0: \"use\" has the wrong type",
            ),
            (
                with(rsa.clone(), "key_ops", json!("verify")),
                JwksError::InvalidMember {
                    index: 0,
                    member: "key_ops",
                },
                "key 0: \"key_ops\" has the wrong type",
            ),
            (
                with(rsa.clone(), "n", json!(n_1024())),
                JwksError::WeakRsaKey {
                    index: 0,
                    bits: 1024,
                },
                "key 0: RSA modulus is 1024 bits, minimum is 2048",
            ),
            (
                with(rsa.clone(), "n", json!(b64(&[0xffu8; 513]))),
                JwksError::UnsupportedRsaKey {
                    index: 0,
                    reason: "modulus over 4096 bits",
                },
                "key 0: unsupported RSA key: modulus over 4096 bits",
            ),
            (
                with(rsa.clone(), "n", json!(b64(&[0xf0u8; 256]))),
                JwksError::UnsupportedRsaKey {
                    index: 0,
                    reason: "even modulus",
                },
                "key 0: unsupported RSA key: even modulus",
            ),
            (
                with(rsa.clone(), "e", json!(b64(&[3]))),
                JwksError::UnsupportedRsaKey {
                    index: 0,
                    reason: "public exponent is not 65537",
                },
                "key 0: unsupported RSA key: public exponent is not 65537",
            ),
            (
                with(rsa.clone(), "n", json!("")),
                JwksError::WeakRsaKey { index: 0, bits: 0 },
                "key 0: RSA modulus is 0 bits, minimum is 2048",
            ),
            (
                with(rsa.clone(), "d", json!("AAAA")),
                JwksError::PrivateKeyMaterial {
                    index: 0,
                    member: "d",
                },
                "key 0: contains private key material \"d\"",
            ),
            (
                with(rsa.clone(), "alg", json!("ES256")),
                JwksError::AlgorithmMismatch {
                    index: 0,
                    alg: JwtAlgorithm::ES256,
                },
                "key 0: alg ES256 does not fit the key type",
            ),
            (
                with(rsa.clone(), "alg", json!("HS256")),
                JwksError::AlgorithmMismatch {
                    index: 0,
                    alg: JwtAlgorithm::HS256,
                },
                "key 0: alg HS256 does not fit the key type",
            ),
        ];
        for (key, expected, text) in cases {
            let e = one(key).unwrap_err();
            assert_eq!(e, expected);
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn ec_and_okp_errors() {
        let ec = es256_jwk("es", &keys().es256);
        assert_eq!(
            one(without(ec.clone(), "crv")).unwrap_err(),
            JwksError::MissingMember {
                index: 0,
                member: "crv"
            }
        );
        assert_eq!(
            one(with(ec.clone(), "x", json!(b64(&[1u8; 31])))).unwrap_err(),
            JwksError::InvalidLength {
                index: 0,
                member: "x",
                expected: 32,
                actual: 31
            }
        );
        // A P-256 key labelled P-384: wrong coordinate size.
        assert_eq!(
            one(with(ec.clone(), "crv", json!("P-384"))).unwrap_err(),
            JwksError::InvalidLength {
                index: 0,
                member: "x",
                expected: 48,
                actual: 32
            }
        );
        let off_curve = with(ec.clone(), "y", json!(b64(&[7u8; 32])));
        assert_eq!(
            one(off_curve).unwrap_err(),
            JwksError::InvalidKey {
                index: 0,
                reason: "point is not on the curve"
            }
        );
        assert_eq!(
            one(with(ec.clone(), "d", json!("AAAA"))).unwrap_err(),
            JwksError::PrivateKeyMaterial {
                index: 0,
                member: "d"
            }
        );
        assert_eq!(
            one(with(ec.clone(), "alg", json!("ES384"))).unwrap_err(),
            JwksError::AlgorithmMismatch {
                index: 0,
                alg: JwtAlgorithm::ES384
            }
        );
        assert_eq!(
            one(with(es384_jwk("p384"), "alg", json!("ES256"))).unwrap_err(),
            JwksError::AlgorithmMismatch {
                index: 0,
                alg: JwtAlgorithm::ES256
            }
        );
        let ed = ed25519_jwk("ed");
        assert_eq!(
            one(with(ed.clone(), "x", json!(b64(&[0u8; 32])))).unwrap_err(),
            JwksError::InvalidKey {
                index: 0,
                reason: "not a valid Ed25519 public key"
            }
        );
        assert_eq!(
            one(with(ed.clone(), "x", json!(b64(&[9u8; 33])))).unwrap_err(),
            JwksError::InvalidLength {
                index: 0,
                member: "x",
                expected: 32,
                actual: 33
            }
        );
        assert_eq!(
            one(without(ed.clone(), "x")).unwrap_err(),
            JwksError::MissingMember {
                index: 0,
                member: "x"
            }
        );
        assert_eq!(
            one(with(ed, "alg", json!("RS256"))).unwrap_err(),
            JwksError::AlgorithmMismatch {
                index: 0,
                alg: JwtAlgorithm::RS256
            }
        );
    }

    #[test]
    fn index_points_at_the_broken_key() {
        let value = json!({"keys": [
            {"kty": "oct", "k": "AA"},
            ed25519_jwk("ed"),
            with(rsa_jwk("rsa"), "e", json!("%%")),
        ]});
        assert_eq!(
            Jwks::from_value(&value).unwrap_err(),
            JwksError::InvalidBase64 {
                index: 2,
                member: "e"
            }
        );
    }

    #[test]
    fn duplicate_kid_is_an_error_among_usable_keys_only() {
        let value = json!({"keys": [rsa_jwk("k1"), es256_jwk("k1", &keys().es256)]});
        let e = Jwks::from_value(&value).unwrap_err();
        assert_eq!(e, JwksError::DuplicateKid { kid: "k1".into() });
        assert_eq!(e.to_string(), "duplicate kid \"k1\"");
        // The same kid on a skipped (encryption) key is not a conflict.
        let value = json!({"keys": [with(rsa_jwk("k1"), "use", json!("enc")), es256_jwk("k1", &keys().es256)]});
        assert_eq!(Jwks::from_value(&value).unwrap().len(), 1);
        // Keys without kid never conflict.
        let anon = |kp| without(es256_jwk("x", kp), "kid");
        let value = json!({"keys": [anon(&keys().es256), anon(&keys().es256_other)]});
        assert_eq!(Jwks::from_value(&value).unwrap().len(), 2);
        // Long kids are cut in the error.
        let long = "k".repeat(500);
        let value = json!({"keys": [rsa_jwk(&long), ed25519_jwk(&long)]});
        match Jwks::from_value(&value).unwrap_err() {
            JwksError::DuplicateKid { kid } => assert_eq!(kid.len(), MAX_KID_IN_ERROR),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn hostile_documents_do_not_panic() {
        let docs: Vec<Vec<u8>> = vec![
            b"\xff\xfe".to_vec(),
            b"{\"keys\":[".repeat(1000),
            b"{\"keys\":[{\"kty\":\"RSA\",\"n\":\"".to_vec(),
            br#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB","kty":"EC"}]}"#.to_vec(),
            br#"{"keys":[{"kty":"EC","crv":"P-256","x":"","y":""}]}"#.to_vec(),
            br#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"===="}]}"#.to_vec(),
            br#"{"keys":[{"kty":"RSA","n":"=","e":"="}]}"#.to_vec(),
            br#"{"keys":[null,1,"x",[],{}]}"#.to_vec(),
        ];
        for doc in docs {
            assert!(
                Jwks::parse(&doc).is_err(),
                "{}",
                String::from_utf8_lossy(&doc)
            );
        }
    }
}
