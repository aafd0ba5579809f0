//! Verification tests: tokens signed by jwt-simple with generated keys, and
//! hand-built hostile tokens.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use jwt_simple::prelude::*;
use serde_json::{json, Value};

use super::test_keys::*;
use super::*;

use JwtAlgorithm::*;

fn check(settings: &JwtSettings, token: &str) -> Result<VerifiedToken, JwtError> {
    verify(settings, Some(&jwks()), token, NOW)
}

fn err(settings: &JwtSettings, token: &str) -> JwtError {
    check(settings, token).expect_err("token must be refused")
}

// ---------------------------------------------------------------- happy paths

#[test]
fn every_asymmetric_algorithm_verifies() {
    let s = settings();
    let jwks = jwks();
    for alg in JwtAlgorithm::ALL
        .into_iter()
        .filter(JwtAlgorithm::is_asymmetric)
    {
        let token = valid(alg);
        let v = verify(&s, Some(&jwks), &token, NOW).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(v.algorithm, alg);
        assert_eq!(v.subject, "alice");
        assert_eq!(v.key_id.as_deref(), Some(kid_for(alg)));
        assert_eq!(v.expires_at, Some(NOW + 600));
        assert_eq!(v.claims["email"], json!("alice@example.com"));
        assert_eq!(v.claims["iss"], json!(ISSUER));
    }
}

#[test]
fn hs256_verifies_with_the_configured_secret_only() {
    let s = settings_with_hs256();
    let v = check(&s, &valid(HS256)).unwrap();
    assert_eq!(v.algorithm, HS256);
    assert_eq!(v.key_id, None);
    // Works without any JWKS too.
    assert!(verify(&s, None, &valid(HS256), NOW).is_ok());
}

#[test]
fn hs256_ignores_kid_and_never_flags_unknown_kid() {
    let s = settings_with_hs256();
    let token = sign(HS256, Some("not-in-jwks"), claims());
    assert!(check(&s, &token).is_ok());
    let mut wrong = settings_with_hs256();
    wrong.hs256_secret = Some(b"another secret, 32 bytes long!!!".to_vec());
    assert_eq!(err(&wrong, &token), JwtError::InvalidSignature);
}

#[test]
fn audience_array_needs_one_configured_audience() {
    let s = settings();
    let mut c = claims();
    c.audiences = Some(Audiences::AsSet(
        ["other".to_string(), AUDIENCE.to_string()].into(),
    ));
    assert!(check(&s, &sign(ES256, Some("es256"), c)).is_ok());
    let mut c = claims();
    c.audiences = Some(Audiences::AsSet(
        ["other".to_string(), "more".to_string()].into(),
    ));
    assert_eq!(
        err(&s, &sign(ES256, Some("es256"), c)),
        JwtError::InvalidAudience
    );
    let mut many = settings();
    many.audiences = vec!["x".into(), "other".into()];
    let mut c = claims();
    c.audiences = Some(Audiences::AsSet(["other".to_string()].into()));
    assert!(check(&many, &sign(ES256, Some("es256"), c)).is_ok());
}

#[test]
fn subject_claim_is_configurable() {
    let mut s = settings();
    s.subject_claim = "email".into();
    assert_eq!(
        check(&s, &valid(ES256)).unwrap().subject,
        "alice@example.com"
    );
    s.subject_claim = "missing".into();
    assert_eq!(err(&s, &valid(ES256)), JwtError::MissingSubject);
}

#[test]
fn fractional_and_huge_numeric_dates() {
    let s = settings_with_hs256();
    let payload = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "a", "exp": NOW as f64 + 100.9,
                         "iat": NOW as f64 - 0.5})
    .to_string();
    let v = check(&s, &hs256_raw(HS_SECRET, r#"{"alg":"HS256"}"#, &payload)).unwrap();
    assert_eq!(v.expires_at, Some(NOW + 100));
    // Far-future exp (beyond jwt-simple's 32-bit seconds) is valid, not a crash.
    for exp in [
        json!(1e20),
        json!(u64::MAX),
        json!(i64::MAX),
        json!(1u64 << 40),
    ] {
        let payload = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "a", "exp": exp}).to_string();
        let v = check(&s, &hs256_raw(HS_SECRET, r#"{"alg":"HS256"}"#, &payload)).unwrap();
        assert!(v.expires_at.unwrap() > NOW);
    }
    // ... and a far-future nbf is "not yet valid".
    let payload = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "a", "exp": NOW + 5, "nbf": 1e20})
        .to_string();
    assert!(matches!(
        err(&s, &hs256_raw(HS_SECRET, r#"{"alg":"HS256"}"#, &payload)),
        JwtError::TokenNotYetValid { .. }
    ));
}

#[test]
fn typ_jwt_variants_are_accepted_others_refused() {
    let s = settings_with_hs256();
    for typ in ["JWT", "jwt", "at+jwt", "application/at+JWT"] {
        let header = json!({"alg": "HS256", "typ": typ}).to_string();
        assert!(
            check(&s, &hs256_raw(HS_SECRET, &header, &payload_json())).is_ok(),
            "{typ}"
        );
    }
    for typ in ["JOSE", "JWE", ""] {
        let header = json!({"alg": "HS256", "typ": typ}).to_string();
        let e = err(&s, &hs256_raw(HS_SECRET, &header, &payload_json()));
        assert_eq!(e.code(), "malformed_token", "{typ}");
    }
}

// ----------------------------------------------------------------- time claims

fn with_times(exp: Option<i64>, nbf: Option<i64>, iat: Option<i64>) -> String {
    let mut c = claims();
    let ts = |t: i64| UnixTimeStamp::from_secs(t as u64);
    c.expires_at = exp.map(ts);
    c.invalid_before = nbf.map(ts);
    c.issued_at = iat.map(ts);
    sign(ES256, Some("es256"), c)
}

#[test]
fn expired_token_is_refused_with_skew() {
    let s = settings(); // skew 60
    assert!(check(&s, &with_times(Some(NOW - 59), None, None)).is_ok());
    assert_eq!(
        err(&s, &with_times(Some(NOW - 60), None, None)),
        JwtError::TokenExpired {
            expires_at: NOW - 60,
            now: NOW
        }
    );
    assert_eq!(
        err(&s, &with_times(Some(NOW - 3600), None, None)).code(),
        "token_expired"
    );
    let mut strict = settings();
    strict.clock_skew_seconds = 0;
    assert!(check(&strict, &with_times(Some(NOW + 1), None, None)).is_ok());
    assert_eq!(
        err(&strict, &with_times(Some(NOW), None, None)).code(),
        "token_expired"
    );
}

#[test]
fn not_yet_valid_token_is_refused_with_skew() {
    let s = settings();
    assert!(check(&s, &with_times(Some(NOW + 600), Some(NOW + 60), None)).is_ok());
    assert_eq!(
        err(&s, &with_times(Some(NOW + 600), Some(NOW + 61), None)),
        JwtError::TokenNotYetValid {
            not_before: NOW + 61,
            now: NOW
        }
    );
}

#[test]
fn issued_in_future_is_refused_with_skew() {
    let s = settings();
    assert!(check(&s, &with_times(Some(NOW + 600), None, Some(NOW + 60))).is_ok());
    assert_eq!(
        err(&s, &with_times(Some(NOW + 600), None, Some(NOW + 61))),
        JwtError::TokenIssuedInFuture {
            issued_at: NOW + 61,
            now: NOW
        }
    );
}

#[test]
fn large_skew_is_honoured_on_both_sides() {
    let mut s = settings();
    s.clock_skew_seconds = 3600;
    assert!(check(&s, &with_times(Some(NOW - 3599), None, None)).is_ok());
    assert!(check(
        &s,
        &with_times(Some(NOW + 7200), Some(NOW + 3600), Some(NOW + 3600))
    )
    .is_ok());
    assert_eq!(
        err(&s, &with_times(Some(NOW - 3600), None, None)).code(),
        "token_expired"
    );
    assert_eq!(
        err(&s, &with_times(Some(NOW + 9000), Some(NOW + 3601), None)).code(),
        "token_not_yet_valid"
    );
    // An absurd skew neither overflows nor panics (jwt-simple's own check
    // then uses a clamped skew, so the result may be a refusal).
    s.clock_skew_seconds = u64::MAX;
    let _ = check(&s, &with_times(Some(1), Some(NOW * 2), Some(NOW * 2)));
    assert!(check(&s, &valid(ES256)).is_ok());
}

#[test]
fn missing_exp_is_refused_only_when_required() {
    let s = settings();
    let token = with_times(None, Some(NOW), Some(NOW));
    assert_eq!(err(&s, &token), JwtError::MissingExpiry);
    let mut lax = settings();
    lax.require_exp = false;
    let v = check(&lax, &token).unwrap();
    assert_eq!(v.expires_at, None);
}

#[test]
fn time_is_injected_not_read() {
    // The same token is valid or not depending only on `now`.
    let s = settings();
    let token = valid(EdDSA);
    let jwks = jwks();
    assert!(verify(&s, Some(&jwks), &token, NOW).is_ok());
    assert_eq!(
        verify(&s, Some(&jwks), &token, NOW + 660)
            .unwrap_err()
            .code(),
        "token_expired"
    );
    // iat == nbf == NOW; iat is checked first.
    assert_eq!(
        verify(&s, Some(&jwks), &token, NOW - 61)
            .unwrap_err()
            .code(),
        "token_issued_in_future"
    );
    // A nonsensical clock fails closed.
    assert!(verify(&s, Some(&jwks), &token, -1).is_err());
    assert!(verify(&s, Some(&jwks), &token, i64::MIN).is_err());
    assert!(verify(&s, Some(&jwks), &token, i64::MAX).is_err());
}

// --------------------------------------------------------- issuer / audience

#[test]
fn issuer_must_match_exactly() {
    let s = settings();
    for iss in [
        "https://issuer.example/",
        "https://ISSUER.example",
        "",
        "https://evil.example",
    ] {
        let c = claims().with_issuer(iss);
        assert_eq!(
            err(&s, &sign(RS256, Some("rsa"), c)),
            JwtError::InvalidIssuer,
            "{iss}"
        );
    }
    let mut c = claims();
    c.issuer = None;
    assert_eq!(
        err(&s, &sign(RS256, Some("rsa"), c)),
        JwtError::InvalidIssuer
    );
}

#[test]
fn audience_must_match() {
    let s = settings();
    let c = claims().with_audience("other-api");
    assert_eq!(
        err(&s, &sign(ES384, Some("es384"), c)),
        JwtError::InvalidAudience
    );
    let mut c = claims();
    c.audiences = None;
    assert_eq!(
        err(&s, &sign(ES384, Some("es384"), c)),
        JwtError::InvalidAudience
    );
    // No configured audience: nothing matches.
    let mut none = settings();
    none.audiences.clear();
    assert_eq!(err(&none, &valid(ES384)), JwtError::InvalidAudience);
}

#[test]
fn required_claims_and_subject() {
    let mut s = settings();
    s.required_claims = vec!["email".into()];
    assert!(check(&s, &valid(ES256)).is_ok());
    s.required_claims = vec!["email".into(), "tenant".into()];
    assert_eq!(
        err(&s, &valid(ES256)),
        JwtError::MissingClaim {
            claim: "tenant".into()
        }
    );

    let hs = settings_with_hs256();
    let mut with_req = hs.clone();
    with_req.required_claims = vec!["tenant".into()];
    let null_tenant =
        json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "a", "exp": NOW + 60, "tenant": null});
    let token = hs256_raw(HS_SECRET, r#"{"alg":"HS256"}"#, &null_tenant.to_string());
    assert_eq!(err(&with_req, &token).code(), "missing_claim");

    let mut c = claims();
    c.subject = None;
    assert_eq!(
        err(&settings(), &sign(ES256, Some("es256"), c)),
        JwtError::MissingSubject
    );
    let c = claims().with_subject("");
    assert_eq!(
        err(&settings(), &sign(ES256, Some("es256"), c)),
        JwtError::MissingSubject
    );
    let mut custom = hs.clone();
    custom.subject_claim = "uid".into();
    let numeric = json!({"iss": ISSUER, "aud": AUDIENCE, "uid": 42, "exp": NOW + 60});
    let token = hs256_raw(HS_SECRET, r#"{"alg":"HS256"}"#, &numeric.to_string());
    assert_eq!(err(&custom, &token), JwtError::MissingSubject);
}

#[test]
fn registered_claims_of_the_wrong_type_are_refused() {
    let s = settings_with_hs256();
    let cases = [
        ("exp", json!("1700000600")),
        ("exp", json!(-1)),
        ("exp", json!(-0.5)),
        ("exp", json!(null)),
        ("nbf", json!(true)),
        ("iat", json!({})),
        ("iss", json!(1)),
        ("sub", json!(["alice"])),
        ("aud", json!(7)),
        ("aud", json!(["llm-api", 7])),
        ("aud", json!(null)),
        ("jti", json!(1)),
        ("nonce", json!(false)),
    ];
    for (claim, value) in cases {
        let mut payload: serde_json::Map<String, Value> =
            serde_json::from_str(&payload_json()).unwrap();
        payload.insert(claim.into(), value.clone());
        let token = hs256_raw(
            HS_SECRET,
            r#"{"alg":"HS256"}"#,
            &Value::Object(payload).to_string(),
        );
        assert_eq!(
            err(&s, &token),
            JwtError::InvalidClaim { claim },
            "{claim}={value}"
        );
    }
}

// ------------------------------------------------------------ signature / keys

#[test]
fn flipped_signature_byte_is_refused() {
    let s = settings();
    for alg in [RS256, PS256, ES256, ES384, EdDSA] {
        let token = valid(alg);
        let (input, sig) = token.rsplit_once('.').unwrap();
        let mut sig = unb64(sig);
        sig[3] ^= 0x01;
        let forged = format!("{input}.{}", b64(&sig));
        assert_eq!(err(&s, &forged), JwtError::InvalidSignature, "{alg}");
    }
    let hs = settings_with_hs256();
    let token = valid(HS256);
    let (input, sig) = token.rsplit_once('.').unwrap();
    let mut sig = unb64(sig);
    sig[0] ^= 0x80;
    assert_eq!(
        err(&hs, &format!("{input}.{}", b64(&sig))),
        JwtError::InvalidSignature
    );
}

fn unb64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

#[test]
fn tampered_payload_is_refused() {
    let s = settings();
    let token = valid(RS256);
    let mut parts: Vec<&str> = token.split('.').collect();
    let evil = b64(
        json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "admin", "exp": NOW + 600})
            .to_string()
            .as_bytes(),
    );
    parts[1] = &evil;
    assert_eq!(err(&s, &parts.join(".")), JwtError::InvalidSignature);
}

#[test]
fn signature_of_wrong_length_is_refused() {
    let s = settings();
    for alg in [RS256, PS512, ES256, ES384, EdDSA] {
        let token = valid(alg);
        let (input, _) = token.rsplit_once('.').unwrap();
        for len in [1usize, 31, 32, 63, 64, 65, 96, 255, 256, 257, 1024] {
            let forged = format!("{input}.{}", b64(&vec![0x5a; len]));
            assert_eq!(
                err(&s, &forged),
                JwtError::InvalidSignature,
                "{alg} len {len}"
            );
        }
    }
}

#[test]
fn alg_none_is_refused() {
    let s = settings_with_hs256();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": alg, "typ": "JWT"}).to_string();
        let unsigned = signing_input(&header, &payload_json());
        for token in [format!("{unsigned}."), format!("{unsigned}.c2ln")] {
            assert_eq!(
                err(&s, &token),
                JwtError::AlgorithmNotAllowed { algorithm: None },
                "{alg}"
            );
        }
    }
}

#[test]
fn unsupported_or_unlisted_algorithms_are_refused() {
    let s = settings();
    for alg in [
        "HS384", "HS512", "ES512", "ES256K", "rs256", "Ed25519", "RSA-OAEP", "",
    ] {
        let header = json!({"alg": alg}).to_string();
        let token = format!("{}.c2ln", signing_input(&header, &payload_json()));
        assert_eq!(
            err(&s, &token),
            JwtError::AlgorithmNotAllowed { algorithm: None },
            "{alg:?}"
        );
    }
    let mut only_rs = settings();
    only_rs.algorithms = vec![RS256];
    for alg in [RS384, PS256, ES256, ES384, EdDSA] {
        assert_eq!(
            err(&only_rs, &valid(alg)),
            JwtError::AlgorithmNotAllowed {
                algorithm: Some(alg)
            }
        );
    }
    // HS256 is off unless listed, even with a secret configured.
    let mut secret_only = settings();
    secret_only.hs256_secret = Some(HS_SECRET.to_vec());
    assert_eq!(
        err(&secret_only, &valid(HS256)),
        JwtError::AlgorithmNotAllowed {
            algorithm: Some(HS256)
        }
    );
    let mut empty = settings();
    empty.algorithms.clear();
    assert_eq!(err(&empty, &valid(ES256)).code(), "algorithm_not_allowed");
}

/// The classic key-confusion attack: an HS256 token whose HMAC key is the
/// server's RSA public key in some encoding.
#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let pk = keys().rs256.public_key();
    let pem = pk.to_pem().unwrap();
    let der = pk.to_der().unwrap();
    let c = pk.to_components();
    let jwk_text = rsa_jwk("rsa").to_string();
    let secrets: Vec<Vec<u8>> = vec![
        pem.as_bytes().to_vec(),
        format!("{pem}\n").into_bytes(),
        der,
        c.n.clone(),
        b64(&c.n).into_bytes(),
        jwk_text.into_bytes(),
    ];
    // HS256 off (the default): refused before any key is touched.
    let s = settings();
    // HS256 on with a real secret: the forged tag does not match it.
    let hs = settings_with_hs256();
    // HS256 on without a secret: no key at all.
    let mut no_secret = settings();
    no_secret.algorithms.push(HS256);
    for secret in &secrets {
        for kid in [None, Some("rsa")] {
            let header = match kid {
                Some(kid) => json!({"alg": "HS256", "typ": "JWT", "kid": kid}),
                None => json!({"alg": "HS256", "typ": "JWT"}),
            }
            .to_string();
            let token = hs256_raw(secret, &header, &payload_json());
            assert_eq!(
                err(&s, &token),
                JwtError::AlgorithmNotAllowed {
                    algorithm: Some(HS256)
                }
            );
            assert_eq!(err(&hs, &token), JwtError::InvalidSignature);
            assert_eq!(err(&no_secret, &token), JwtError::NoMatchingKey);
        }
    }
}

#[test]
fn oct_keys_in_the_jwks_never_verify_hs256() {
    let k = b"jwks-published-symmetric-secret!";
    let mut value = jwks_value();
    value["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "oct", "kid": "oct", "alg": "HS256", "k": b64(k)}));
    let jwks = Jwks::from_value(&value).unwrap();
    assert!(!jwks.contains_kid("oct"), "oct keys are skipped");
    let token = hs256_raw(k, r#"{"alg":"HS256","kid":"oct"}"#, &payload_json());
    let mut s = settings();
    s.algorithms.push(HS256);
    assert_eq!(
        verify(&s, Some(&jwks), &token, NOW).unwrap_err(),
        JwtError::NoMatchingKey
    );
    let hs = settings_with_hs256();
    assert_eq!(
        verify(&hs, Some(&jwks), &token, NOW).unwrap_err(),
        JwtError::InvalidSignature
    );
}

#[test]
fn short_hs256_secret_is_no_key() {
    let mut s = settings_with_hs256();
    s.hs256_secret = Some(b"short".to_vec());
    let token = hs256_raw(b"short", r#"{"alg":"HS256"}"#, &payload_json());
    assert_eq!(err(&s, &token), JwtError::NoMatchingKey);
}

#[test]
fn kid_of_an_incompatible_key_is_no_matching_key() {
    let s = settings();
    // An RS256 token naming the EC key, an ES256 token naming the RSA key, ...
    for (alg, kid) in [
        (RS256, "es256"),
        (ES256, "rsa"),
        (ES256, "es384"),
        (ES384, "es256"),
        (EdDSA, "rsa"),
        (PS256, "ed"),
    ] {
        let token = sign(alg, Some(kid), claims());
        let e = err(&s, &token);
        assert_eq!(e, JwtError::NoMatchingKey, "{alg} with kid {kid}");
        assert!(!e.is_unknown_kid());
    }
}

#[test]
fn jwk_alg_restricts_the_key_to_that_algorithm() {
    let s = settings();
    let mut rsa = rsa_jwk("rsa");
    rsa["alg"] = json!("RS256");
    let jwks = Jwks::from_value(&json!({"keys": [rsa]})).unwrap();
    assert!(verify(&s, Some(&jwks), &sign(RS256, Some("rsa"), claims()), NOW).is_ok());
    for alg in [RS384, RS512, PS256] {
        assert_eq!(
            verify(&s, Some(&jwks), &sign(alg, Some("rsa"), claims()), NOW).unwrap_err(),
            JwtError::NoMatchingKey
        );
        assert_eq!(
            verify(&s, Some(&jwks), &sign(alg, None, claims()), NOW).unwrap_err(),
            JwtError::NoMatchingKey
        );
    }
    // Without alg the RSA key serves RS* and PS* alike.
    for alg in [RS256, RS384, RS512, PS256, PS384, PS512] {
        assert!(
            check(&s, &sign(alg, Some("rsa"), claims())).is_ok(),
            "{alg}"
        );
    }
}

#[test]
fn unknown_kid_is_flagged_for_refetch() {
    let s = settings();
    let e = err(&s, &sign(ES256, Some("rotated-key"), claims()));
    assert_eq!(e, JwtError::UnknownKeyId);
    assert!(e.is_unknown_kid());
    assert_eq!(e.code(), "unknown_key_id");
    // No JWKS loaded yet: a kid is "unknown" too, so the adapter fetches.
    let e = verify(&s, None, &valid(ES256), NOW).unwrap_err();
    assert!(e.is_unknown_kid());
    // ... while a token without kid has no key to try.
    let e = verify(&s, None, &sign(ES256, None, claims()), NOW).unwrap_err();
    assert_eq!(e, JwtError::NoMatchingKey);
    assert!(!e.is_unknown_kid());
}

#[test]
fn enc_keys_are_not_candidates() {
    let s = settings();
    let mut ec = es256_jwk("es256", &keys().es256);
    ec["use"] = json!("enc");
    let value = json!({"keys": [ec, rsa_jwk("rsa")]});
    let jwks = Jwks::from_value(&value).unwrap();
    assert_eq!(
        verify(&s, Some(&jwks), &valid(ES256), NOW).unwrap_err(),
        JwtError::UnknownKeyId
    );
    assert_eq!(
        verify(&s, Some(&jwks), &sign(ES256, None, claims()), NOW).unwrap_err(),
        JwtError::NoMatchingKey
    );
}

#[test]
fn token_without_kid_is_matched_by_trying_compatible_keys() {
    let s = settings();
    let others: Vec<ES256KeyPair> = (0..3).map(|_| ES256KeyPair::generate()).collect();
    let mut list: Vec<Value> = others
        .iter()
        .enumerate()
        .map(|(i, kp)| es256_jwk(&format!("other-{i}"), kp))
        .collect();
    list.insert(1, rsa_jwk("rsa"));
    list.push(es256_jwk("right", &keys().es256));
    let jwks = Jwks::from_value(&json!({"keys": list})).unwrap();
    let v = verify(&s, Some(&jwks), &sign(ES256, None, claims()), NOW).unwrap();
    assert_eq!(v.key_id.as_deref(), Some("right"));
    // A JWK without kid can verify a token without kid.
    let mut anon = es256_jwk("x", &keys().es256);
    anon.as_object_mut().unwrap().remove("kid");
    let jwks = Jwks::from_value(&json!({"keys": [rsa_jwk("rsa"), anon]})).unwrap();
    let v = verify(&s, Some(&jwks), &sign(ES256, None, claims()), NOW).unwrap();
    assert_eq!(v.key_id, None);
    // ... but a token with a kid never matches a key without one.
    assert_eq!(
        verify(&s, Some(&jwks), &sign(ES256, Some("x"), claims()), NOW).unwrap_err(),
        JwtError::UnknownKeyId
    );
    // No compatible key is right: invalid signature.
    let jwks = Jwks::from_value(&json!({"keys": [es256_jwk("o", &keys().es256_other)]})).unwrap();
    assert_eq!(
        verify(&s, Some(&jwks), &sign(ES256, None, claims()), NOW).unwrap_err(),
        JwtError::InvalidSignature
    );
}

#[test]
fn at_most_max_keys_tried_for_a_token_without_kid() {
    let s = settings();
    let wrong: Vec<ES256KeyPair> = (0..MAX_KEYS_TRIED)
        .map(|_| ES256KeyPair::generate())
        .collect();
    let mut list: Vec<Value> = wrong
        .iter()
        .enumerate()
        .map(|(i, kp)| es256_jwk(&format!("w{i}"), kp))
        .collect();
    list.push(es256_jwk("right", &keys().es256));
    let jwks = Jwks::from_value(&json!({"keys": list.clone()})).unwrap();
    assert_eq!(
        verify(&s, Some(&jwks), &sign(ES256, None, claims()), NOW).unwrap_err(),
        JwtError::InvalidSignature
    );
    // One fewer wrong key and the right one is within reach.
    list.remove(0);
    let jwks = Jwks::from_value(&json!({"keys": list})).unwrap();
    assert!(verify(&s, Some(&jwks), &sign(ES256, None, claims()), NOW).is_ok());
}

#[test]
fn claim_errors_are_not_masked_by_trying_other_keys() {
    // The second key verifies the signature; its claim error is reported.
    let s = settings();
    let list = vec![
        es256_jwk("o", &keys().es256_other),
        es256_jwk("right", &keys().es256),
    ];
    let jwks = Jwks::from_value(&json!({"keys": list})).unwrap();
    let token = sign(ES256, None, claims().with_issuer("https://evil.example"));
    assert_eq!(
        verify(&s, Some(&jwks), &token, NOW).unwrap_err(),
        JwtError::InvalidIssuer
    );
    let mut c = claims();
    c.expires_at = Some(UnixTimeStamp::from_secs(NOW as u64 - 1000));
    let token = sign(ES256, None, c);
    assert_eq!(
        verify(&s, Some(&jwks), &token, NOW).unwrap_err().code(),
        "token_expired"
    );
}

// ------------------------------------------------------------ malformed input

#[test]
fn garbage_is_refused_without_panicking() {
    let s = settings_with_hs256();
    let long_header = format!("{}.e30.c2ln", "A".repeat(MAX_HEADER_B64_BYTES + 4));
    let valid_token = valid(ES256);
    let (h, rest) = valid_token.split_once('.').unwrap();
    let p = rest.split_once('.').unwrap().0;
    let inputs: Vec<String> = vec![
        "".into(),
        ".".into(),
        "..".into(),
        "...".into(),
        "a".into(),
        "a.b".into(),
        "a.b.c".into(),
        "a.b.c.d".into(),
        format!("{valid_token}."),
        format!(".{valid_token}"),
        format!("Bearer {valid_token}"),
        format!(" {valid_token}"),
        format!("{valid_token}\n"),
        valid_token.replace('.', ".."),
        format!("{h}.{p}"),
        format!("{h}..{p}"),
        format!("{h}.{p}.***"),
        format!("{h}.{p}.c2ln="),
        format!("{h}=.{p}.c2ln"),
        format!("{h}.{p}=.c2ln"),
        format!("{h}.%%%.c2ln"),
        format!("{}.{p}.c2ln", b64(b"[]")),
        format!("{}.{p}.c2ln", b64(b"\"ES256\"")),
        format!("{}.{p}.c2ln", b64(br#"{"alg":256}"#)),
        format!("{}.{p}.c2ln", b64(br#"{"typ":"JWT"}"#)),
        format!("{}.{p}.c2ln", b64(br#"{"alg":"ES256","alg":"ES256"}"#)),
        format!("{}.{p}.c2ln", b64(br#"{"alg":"ES256","kid":7}"#)),
        format!("{}.{p}.c2ln", b64(br#"{"alg":"ES256","crit":["exp"]}"#)),
        format!("{}.{p}.c2ln", b64(br#"{"alg":"ES256","crit":[]}"#)),
        format!("{}.{p}.c2ln", b64(br#"{"alg":"ES256","jwk":{"kty":"EC"}}"#)),
        format!("{}.{p}.c2ln", b64(b"\xff\xfe{}")),
        format!("{h}.{}.c2ln", b64(b"[]")),
        format!("{h}.{}.c2ln", b64(b"null")),
        format!("{h}.{}.c2ln", b64(b"not json")),
        format!("{h}.{}.c2ln", b64(br#"{"sub":"a","sub":"b"}"#)),
        format!("{h}.{}.c2ln", b64("[".repeat(5000).as_bytes())),
        "\u{0}\u{1}.\u{2}.\u{3}".into(),
        "é.ü.ß".into(),
        "🙂.🙂.🙂".into(),
        long_header,
    ];
    for input in &inputs {
        let e = check(&s, input).expect_err(input);
        assert!(
            matches!(
                e.code(),
                "malformed_token" | "invalid_signature" | "token_too_large"
            ),
            "{input:?}: {e}"
        );
    }
}

#[test]
fn every_truncation_of_a_valid_token_is_refused() {
    let s = settings_with_hs256();
    for alg in [RS256, ES256, EdDSA, HS256] {
        let token = valid(alg);
        for end in 0..token.len() {
            let cut = &token[..end];
            assert!(check(&s, cut).is_err(), "{alg} truncated at {end}");
        }
        for start in 1..token.len() {
            assert!(check(&s, &token[start..]).is_err(), "{alg} from {start}");
        }
    }
}

#[test]
fn single_byte_mutations_never_verify_or_panic() {
    let s = settings_with_hs256();
    let token = valid(HS256);
    let bytes = token.as_bytes();
    for i in 0..bytes.len() {
        for replacement in [b'A', b'_', b'-', b'.', b'=', b'+', 0x00] {
            if bytes[i] == replacement {
                continue;
            }
            let mut m = bytes.to_vec();
            m[i] = replacement;
            let Ok(mutated) = String::from_utf8(m) else {
                continue;
            };
            if let Ok(v) = check(&s, &mutated) {
                // Base64 trailing-bit slack in the last char of a part can
                // leave the decoded bytes unchanged; the claims must be too.
                assert_eq!(v.subject, "alice", "mutation at {i} verified: {mutated}");
            }
        }
    }
}

#[test]
fn oversized_token_is_refused_before_decoding() {
    let s = settings();
    let huge = "x".repeat(s.max_token_bytes + 1);
    assert_eq!(
        err(&s, &huge),
        JwtError::TokenTooLarge {
            len: s.max_token_bytes + 1,
            max: s.max_token_bytes
        }
    );
    let mut tiny = settings();
    tiny.max_token_bytes = 64;
    assert_eq!(err(&tiny, &valid(EdDSA)).code(), "token_too_large");
    // A large but allowed token is fine.
    let mut big = claims();
    big.custom.insert("pad".into(), json!("p".repeat(8000)));
    assert!(check(&s, &sign(EdDSA, Some("ed"), big)).is_ok());
}

#[test]
fn duplicate_payload_keys_are_refused_even_when_signed() {
    let s = settings_with_hs256();
    let payload = format!(
        r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"alice","sub":"admin","exp":{}}}"#,
        NOW + 60
    );
    let e = err(&s, &hs256_raw(HS_SECRET, r#"{"alg":"HS256"}"#, &payload));
    assert_eq!(e.code(), "malformed_token");
}

#[test]
fn crit_header_is_refused_even_when_signed() {
    let s = settings_with_hs256();
    let header = r#"{"alg":"HS256","crit":["b64"],"b64":false}"#;
    let e = err(&s, &hs256_raw(HS_SECRET, header, &payload_json()));
    assert_eq!(
        e,
        JwtError::Malformed {
            reason: "crit header is not supported"
        }
    );
}

// ------------------------------------------------------------------ errors API

#[test]
fn error_codes_are_distinct_snake_case_and_display_never_quotes_the_token() {
    let errors = [
        JwtError::TokenTooLarge { len: 2, max: 1 },
        JwtError::Malformed { reason: "x" },
        JwtError::AlgorithmNotAllowed {
            algorithm: Some(HS256),
        },
        JwtError::UnknownKeyId,
        JwtError::NoMatchingKey,
        JwtError::InvalidSignature,
        JwtError::InvalidClaim { claim: "exp" },
        JwtError::TokenExpired {
            expires_at: 1,
            now: 2,
        },
        JwtError::TokenNotYetValid {
            not_before: 3,
            now: 2,
        },
        JwtError::TokenIssuedInFuture {
            issued_at: 3,
            now: 2,
        },
        JwtError::MissingExpiry,
        JwtError::InvalidIssuer,
        JwtError::InvalidAudience,
        JwtError::MissingClaim {
            claim: "tenant".into(),
        },
        JwtError::MissingSubject,
    ];
    let mut codes: Vec<&str> = errors.iter().map(JwtError::code).collect();
    for code in &codes {
        assert!(
            code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{code}"
        );
    }
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), errors.len());
    assert_eq!(errors.iter().filter(|e| e.is_unknown_kid()).count(), 1);

    // Errors from hostile tokens carry nothing of the token.
    let s = settings();
    let marker = "INJECTED\r\nlog-line";
    let header = json!({"alg": marker, "kid": marker}).to_string();
    let token = format!("{}.c2ln", signing_input(&header, &payload_json()));
    let text = format!("{} {:?}", err(&s, &token), err(&s, &token));
    assert!(!text.contains("INJECTED"), "{text}");
    let token = sign(ES256, Some(marker), claims());
    let text = format!("{} {:?}", err(&s, &token), err(&s, &token));
    assert!(!text.contains("INJECTED"), "{text}");
}

#[test]
fn algorithm_names_round_trip() {
    for alg in JwtAlgorithm::ALL {
        assert_eq!(JwtAlgorithm::parse(alg.as_str()), Some(alg));
        assert_eq!(alg.to_string(), alg.as_str());
    }
    for bad in ["none", "hs256", "HS384", "ES512", "Ed25519", "", " RS256"] {
        assert_eq!(JwtAlgorithm::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn settings_debug_redacts_the_secret() {
    let s = settings_with_hs256();
    let text = format!("{s:?}");
    assert!(!text.contains("0123456789abcdef"));
    assert!(text.contains("<redacted>"));
}

// ---------------------------------------------------------------- performance

/// `cargo test --release -p llm-api-guard-policy jwt::tests::timing -- --ignored --nocapture`
#[test]
#[ignore = "timing report, run with --release --ignored --nocapture"]
fn timing() {
    use std::time::Instant;
    let s = settings();
    let jwks = jwks();
    for alg in [RS256, PS256, ES256, ES384, EdDSA] {
        let token = valid(alg);
        verify(&s, Some(&jwks), &token, NOW).unwrap();
        let rounds = 200u32;
        let start = Instant::now();
        for _ in 0..rounds {
            verify(&s, Some(&jwks), &token, NOW).unwrap();
        }
        println!("{alg}: {:?} per verify", start.elapsed() / rounds);
    }
    let start = Instant::now();
    for _ in 0..200 {
        let _ = jwks.clone();
        RS256PublicKey::from_components(
            &keys().rs256.public_key().to_components().n,
            &keys().rs256.public_key().to_components().e,
        )
        .unwrap();
    }
    println!("RSA key build from n/e: {:?}", start.elapsed() / 200);
    let start = Instant::now();
    for _ in 0..20 {
        Jwks::from_value(&jwks_value()).unwrap();
    }
    println!("JWKS parse (4 keys): {:?}", start.elapsed() / 20);
    let mut cache = TokenCache::new(1024, 300);
    let v = verify(&s, Some(&jwks), &valid(RS256), NOW).unwrap();
    let start = Instant::now();
    for i in 0..10_000 {
        cache.insert(&format!("t{i}"), &v, NOW);
    }
    println!("cache insert at capacity: {:?}", start.elapsed() / 10_000);
    let start = Instant::now();
    for i in 0..10_000 {
        let _ = cache.get(&format!("t{i}"), NOW);
    }
    println!("cache get: {:?}", start.elapsed() / 10_000);
}
