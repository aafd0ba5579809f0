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
    /// JWKS in the filter configuration).
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
