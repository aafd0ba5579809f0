//! No input may panic the policy code (a panic kills the Envoy VM). Deterministic mutation of
//! valid inputs (byte flips, truncation, splicing) drives the parsers that face untrusted data:
//! the config parser, the key parser and verifier, the JWKS parser and the JWT verifier.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use llm_api_guard_policy::apikey::{
    format_key, new_record, parse_key, KeyHasher, KeyRules, KeyStore,
};
use llm_api_guard_policy::config;
use llm_api_guard_policy::jwt::{verify, Jwks, JwtAlgorithm, JwtSettings};

/// xorshift64*: a fixed sequence, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            1 => v.truncate(rng.below(v.len() + 1)),
            2 => {
                let i = rng.below(v.len() + 1);
                let b = [
                    b'"', b'{', b'}', b'[', b']', b',', b':', b'.', b'\\', 0xff, b'0', b'-',
                ][rng.below(12)];
                v.insert(i, b);
            }
            3 if v.len() > 2 => {
                let a = rng.below(v.len());
                let b = rng.below(v.len());
                let (lo, hi) = (a.min(b), a.max(b));
                let chunk = v[lo..hi].to_vec();
                let at = rng.below(v.len());
                v.splice(at..at, chunk);
            }
            _ => {}
        }
    }
    v
}

#[test]
fn config_parser_never_panics() {
    let env: HashMap<String, String> = HashMap::from([(
        "LLM_API_GUARD_PEPPER".to_string(),
        "robustness-pepper-0123456789".to_string(),
    )]);
    let seed = br#"{"api_key_management":{"enabled":true,"expiration":{"default_ttl_hours":24,"max_ttl_hours":168},
      "keys":[{"id":"aaaaaaaaaaaa","hash":"hmac-sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","user":"u",
      "created_at":"2026-01-01T00:00:00Z","expires_at":"2026-01-02T00:00:00Z"}],"revocation":{"revoke_on":"security_event"}},
      "authentication":{"methods":{"jwt":{"issuer":"i","audience":["a"],"algorithms":["RS256","ES256"],
      "jwks":{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}},"mtls":{"allowed_sans":["*.a.b"]}},
      "mfa":{"enabled":true,"require":["jwt","mtls"]}},"gateway_hardening":{"waf":{"enabled":false},
      "request_limits":{"max_request_size_bytes":10}},"api_rate_limiting":{"enabled":false}}"#;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let input = mutate(&mut rng, seed);
        let _ = config::parse(&input, &env);
    }
}

#[test]
fn key_parsing_and_verification_never_panic() {
    let hasher = KeyHasher::peppered(b"robustness-pepper-0123456789");
    let (id, key) = format_key(&[1; 8], &[2; 32]);
    let store = KeyStore::build(
        &[new_record(&key, &id, "u", &hasher, 0, 3600)],
        &hasher,
        &KeyRules {
            max_ttl_seconds: 7200,
        },
        true,
    )
    .unwrap()
    .0;
    let mut rng = Rng(42);
    for _ in 0..50_000 {
        let bytes = mutate(&mut rng, key.as_bytes());
        let s = String::from_utf8_lossy(&bytes);
        let _ = parse_key(&s);
        let _ = store.verify(&s, &hasher, 10);
    }
}

#[test]
fn jwks_and_jwt_never_panic() {
    let jwks_seed = br#"{"keys":[{"kty":"RSA","kid":"k","alg":"RS256","use":"sig","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"},
      {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
    let settings = JwtSettings::new(
        "https://issuer",
        vec!["aud".into()],
        vec![JwtAlgorithm::RS256, JwtAlgorithm::EdDSA],
    );
    let jwks = Jwks::parse(jwks_seed).ok();
    let token_seed = b"eyJhbGciOiJSUzI1NiIsImtpZCI6ImsiLCJ0eXAiOiJKV1QifQ.eyJpc3MiOiJodHRwczovL2lzc3VlciIsImF1ZCI6ImF1ZCIsInN1YiI6InUiLCJleHAiOjQxMDI0NDQ4MDB9.c2lnbmF0dXJl";
    let mut rng = Rng(7);
    for _ in 0..5_000 {
        let _ = Jwks::parse(&mutate(&mut rng, jwks_seed));
        let t = mutate(&mut rng, token_seed);
        let _ = verify(
            &settings,
            jwks.as_ref(),
            &String::from_utf8_lossy(&t),
            1_800_000_000,
        );
    }
}
