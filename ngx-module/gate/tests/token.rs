//! Token verification against real keys (the development keys in conf/).

use base64::Engine;
use chatup_gate::token::KeyMaterial;
use chatup_gate::{GateError, KeyError, TokenVerifier, VerifierConfig};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const HS_SECRET: &[u8] = include_bytes!("../../../conf/dev-keys/jwt-hs256.secret");
const RSA_PRIVATE: &[u8] = include_bytes!("../../../conf/dev-keys/jwt-rs256.key");
const RSA_PUBLIC: &[u8] = include_bytes!("../../../conf/dev-keys/jwt-rs256.pub");

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn config(key: KeyMaterial, algorithms: &[&str]) -> VerifierConfig {
    VerifierConfig {
        key,
        algorithms: algorithms.iter().map(|s| s.to_string()).collect(),
        issuer: None,
        audience: None,
        leeway_secs: 5,
        max_lifetime_secs: Some(chatup_gate::token::DEFAULT_MAX_LIFETIME_SECS),
        original: Default::default(),
    }
}

fn hs_verifier() -> TokenVerifier {
    TokenVerifier::new(config(KeyMaterial::HmacSecret(HS_SECRET.to_vec()), &[])).unwrap()
}

fn rs_verifier() -> TokenVerifier {
    TokenVerifier::new(config(
        KeyMaterial::PublicKeyPem(RSA_PUBLIC.to_vec()),
        &["RS256"],
    ))
    .unwrap()
}

fn hs_token(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(HS_SECRET.trim_ascii_end()),
    )
    .unwrap()
}

fn bad_token_message(result: Result<chatup_gate::Identity, GateError>) -> String {
    match result {
        Err(GateError::BadToken(_, message)) => message,
        other => panic!("expected a token error, got {other:?}"),
    }
}

#[test]
fn valid_token_yields_sub_and_public_data() {
    let token = hs_token(
        json!({"sub": "u1", "exp": now() + 60, "public": {"name": "Ann", "color": "#f00"}}),
    );
    let identity = hs_verifier().verify(&token).unwrap();
    assert_eq!(identity.sub, "u1");
    assert_eq!(identity.public.unwrap()["name"], "Ann");
}

#[test]
fn expired_and_not_yet_valid_tokens_are_refused_beyond_the_leeway() {
    let v = hs_verifier();
    assert_eq!(
        bad_token_message(v.verify(&hs_token(json!({"sub": "u", "exp": now() - 60})))),
        "token expired"
    );
    assert!(
        v.verify(&hs_token(json!({"sub": "u", "exp": now() - 2})))
            .is_ok(),
        "within leeway"
    );
    let early = hs_token(json!({"sub": "u", "exp": now() + 600, "nbf": now() + 300}));
    assert_eq!(bad_token_message(v.verify(&early)), "token not yet valid");
}

#[test]
fn forged_token_is_refused() {
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "u", "exp": now() + 60}),
        &EncodingKey::from_secret(b"someone else's secret of enough length!!"),
    )
    .unwrap();
    assert_eq!(
        bad_token_message(hs_verifier().verify(&forged)),
        "invalid token signature"
    );
    // A valid token with a flipped payload is refused too.
    let token = hs_token(json!({"sub": "u", "exp": now() + 60}));
    let mut parts: Vec<&str> = token.split('.').collect();
    let other = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"sub": "admin", "exp": now() + 60}).to_string());
    parts[1] = &other;
    assert!(hs_verifier().verify(&parts.join(".")).is_err());
}

#[test]
fn alg_none_is_refused() {
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let token = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(json!({"sub": "u", "exp": now() + 60}))
    );
    assert_eq!(
        bad_token_message(hs_verifier().verify(&token)),
        "token algorithm \"none\" is not accepted"
    );
}

#[test]
fn hmac_token_signed_with_the_rsa_public_key_is_refused_when_rs256_is_pinned() {
    let token = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "u", "exp": now() + 60}),
        &EncodingKey::from_secret(RSA_PUBLIC),
    )
    .unwrap();
    assert_eq!(
        bad_token_message(rs_verifier().verify(&token)),
        "token algorithm \"HS256\" is not accepted"
    );
}

#[test]
fn rs256_token_is_accepted_with_the_public_key() {
    let token = encode(
        &Header::new(Algorithm::RS256),
        &json!({"sub": "u9", "exp": now() + 60}),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
    )
    .unwrap();
    assert_eq!(rs_verifier().verify(&token).unwrap().sub, "u9");
}

#[test]
fn token_without_usable_sub_or_exp_is_refused() {
    let v = hs_verifier();
    assert_eq!(
        bad_token_message(v.verify(&hs_token(json!({"exp": now() + 60})))),
        "token has no sub"
    );
    assert_eq!(
        bad_token_message(v.verify(&hs_token(json!({"sub": "", "exp": now() + 60})))),
        "token has no sub"
    );
    assert_eq!(
        bad_token_message(v.verify(&hs_token(json!({"sub": 5, "exp": now() + 60})))),
        "token has no sub"
    );
    assert_eq!(
        bad_token_message(v.verify(&hs_token(json!({"sub": "u"})))),
        "token has no exp"
    );
    let public = hs_token(json!({"sub": "u", "exp": now() + 60, "public": "Ann"}));
    assert_eq!(
        bad_token_message(v.verify(&public)),
        "token public claim must be an object"
    );
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let mut c = config(KeyMaterial::HmacSecret(HS_SECRET.to_vec()), &["HS256"]);
    c.issuer = Some("https://site.example".into());
    c.audience = Some("chatup".into());
    let v = TokenVerifier::new(c).unwrap();
    let good = hs_token(
        json!({"sub": "u", "exp": now() + 60, "iss": "https://site.example", "aud": "chatup"}),
    );
    assert!(v.verify(&good).is_ok());
    let wrong_iss =
        hs_token(json!({"sub": "u", "exp": now() + 60, "iss": "evil", "aud": "chatup"}));
    assert_eq!(
        bad_token_message(v.verify(&wrong_iss)),
        "token issuer is not accepted"
    );
    let wrong_aud =
        hs_token(json!({"sub": "u", "exp": now() + 60, "iss": "https://site.example", "aud": "x"}));
    assert_eq!(
        bad_token_message(v.verify(&wrong_aud)),
        "token audience is not accepted"
    );
    // Leaving a configured claim out does not get around its check.
    let no_iss = hs_token(json!({"sub": "u", "exp": now() + 60, "aud": "chatup"}));
    assert_eq!(bad_token_message(v.verify(&no_iss)), "token has no iss");
    let no_aud = hs_token(json!({"sub": "u", "exp": now() + 60, "iss": "https://site.example"}));
    assert_eq!(bad_token_message(v.verify(&no_aud)), "token has no aud");
    assert!(v.verify_claims::<Value>(&no_aud).is_err());
}

#[test]
fn garbage_is_refused() {
    for token in ["", "abc", "a.b.c", "....", "\u{0}"] {
        assert!(hs_verifier().verify(token).is_err(), "{token:?}");
    }
}

#[test]
fn key_configuration_errors_are_clear() {
    let short = TokenVerifier::new(config(KeyMaterial::HmacSecret(b"short\n".to_vec()), &[]));
    assert_eq!(short.unwrap_err(), KeyError::SecretTooShort(5));
    let not_pem = TokenVerifier::new(config(KeyMaterial::PublicKeyPem(b"hello".to_vec()), &[]));
    assert_eq!(not_pem.unwrap_err(), KeyError::UnreadablePem);
    let mismatch = TokenVerifier::new(config(
        KeyMaterial::PublicKeyPem(RSA_PUBLIC.to_vec()),
        &["HS256"],
    ));
    assert_eq!(
        mismatch.unwrap_err().to_string(),
        "algorithm HS256 cannot be used with an RSA key"
    );
    let unknown = TokenVerifier::new(config(
        KeyMaterial::HmacSecret(HS_SECRET.to_vec()),
        &["XX1"],
    ));
    assert_eq!(
        unknown.unwrap_err(),
        KeyError::UnknownAlgorithm("XX1".into())
    );
}

#[test]
fn ec_and_ed25519_public_keys_are_recognised() {
    let ec = include_bytes!("../testdata/ec.pub").to_vec();
    let ed = include_bytes!("../testdata/ed.pub").to_vec();
    assert!(TokenVerifier::new(config(KeyMaterial::PublicKeyPem(ec.clone()), &["ES256"])).is_ok());
    assert!(TokenVerifier::new(config(KeyMaterial::PublicKeyPem(ed.clone()), &["EdDSA"])).is_ok());
    let token = encode(
        &Header::new(Algorithm::EdDSA),
        &json!({"sub": "ed", "exp": now() + 60}),
        &EncodingKey::from_ed_pem(include_bytes!("../testdata/ed.key")).unwrap(),
    )
    .unwrap();
    let v = TokenVerifier::new(config(KeyMaterial::PublicKeyPem(ed), &[])).unwrap();
    assert_eq!(v.verify(&token).unwrap().sub, "ed");
}

#[test]
fn rooms_and_role_claims_are_read_and_checked() {
    let v = hs_verifier();
    let token = hs_token(
        json!({"sub": "u", "exp": now() + 60, "rooms": ["match-*", "lobby"], "role": "moderator"}),
    );
    let identity = v.verify(&token).unwrap();
    assert!(identity.may_use("match-7"));
    assert!(identity.may_use("lobby"));
    assert!(!identity.may_use("staff"));
    assert_eq!(identity.role.as_deref(), Some("moderator"));

    let anyone = v.verify(&hs_token(
        json!({"sub": "u", "exp": now() + 60, "role": "admin"}),
    ));
    let anyone = anyone.unwrap();
    assert!(anyone.may_use("staff"), "no rooms claim: every room");
    assert_eq!(anyone.role, None, "unknown roles grant nothing");

    for rooms in [json!("lobby"), json!(["a b"]), json!([5])] {
        let token = hs_token(json!({"sub": "u", "exp": now() + 60, "rooms": rooms}));
        assert!(bad_token_message(v.verify(&token)).contains("rooms claim"));
    }
}

#[test]
fn tier_and_since_claims_are_the_users_standing_when_whole_numbers_and_absent_otherwise() {
    let v = hs_verifier();
    let token = hs_token(json!({"sub": "u", "exp": now() + 60, "tier": 2, "since": 1_700_000_000}));
    let standing = v.verify(&token).unwrap().standing;
    assert_eq!(
        (standing.tier, standing.since),
        (Some(2), Some(1_700_000_000))
    );
    let plain = v
        .verify(&hs_token(json!({"sub": "u", "exp": now() + 60})))
        .unwrap();
    assert!(plain.standing.is_empty());
    // A site's own use of these names does not make its tokens invalid.
    for (claim, value) in [
        ("tier", json!("gold")),
        ("tier", json!(-1)),
        ("since", json!("2024-01-01")),
    ] {
        let token = hs_token(json!({"sub": "u", "exp": now() + 60, claim: value}));
        assert!(
            v.verify(&token).unwrap().standing.is_empty(),
            "{claim}: {value}"
        );
    }
    // Seconds with a fraction (JavaScript's Date.now() / 1000) are cut.
    let token = hs_token(json!({"sub": "u", "exp": now() + 60, "since": 1_700_000_000.75}));
    assert_eq!(
        v.verify(&token).unwrap().standing.since,
        Some(1_700_000_000)
    );
}

#[test]
fn server_tokens_need_no_sub_but_a_valid_signature_and_exp() {
    let v = hs_verifier();
    let claims: Value = v
        .verify_claims(&hs_token(json!({"exp": now() + 60, "bans": []})))
        .unwrap();
    assert_eq!(claims["bans"], json!([]));
    let expired = hs_token(json!({"exp": now() - 600}));
    assert!(v.verify_claims::<Value>(&expired).is_err());
    let no_exp = hs_token(json!({"bans": []}));
    assert!(v.verify_claims::<Value>(&no_exp).is_err());
}

#[test]
fn a_bad_or_expired_token_makes_a_public_room_reader_anonymous_and_a_private_one_refused() {
    use chatup_gate::subscribe::{reader, ReadAccess};
    let verifier = hs_verifier();
    let valid = hs_token(json!({"sub": "anna", "exp": now() + 60}));
    let expired = hs_token(json!({"sub": "anna", "exp": now() - 600}));

    let member = reader(&verifier, Some(&valid), "stage", ReadAccess::Anyone).unwrap();
    assert_eq!(member.unwrap().sub, "anna");
    for token in [expired.as_str(), "garbage"] {
        assert!(reader(&verifier, Some(token), "stage", ReadAccess::Anyone)
            .unwrap()
            .is_none());
        assert!(matches!(
            reader(&verifier, Some(token), "stage", ReadAccess::TokenOnly),
            Err(GateError::BadToken(..))
        ));
    }
    assert!(reader(&verifier, None, "stage", ReadAccess::Anyone)
        .unwrap()
        .is_none());
    assert!(matches!(
        reader(&verifier, None, "stage", ReadAccess::TokenOnly),
        Err(GateError::MissingToken)
    ));
}

#[test]
fn the_rooms_claim_applies_to_reading() {
    use chatup_gate::subscribe::{reader, ReadAccess};
    let verifier = hs_verifier();
    let staff_only = hs_token(json!({"sub": "anna", "exp": now() + 60, "rooms": ["staff-*"]}));
    let member = reader(
        &verifier,
        Some(&staff_only),
        "staff-1",
        ReadAccess::TokenOnly,
    )
    .unwrap();
    assert_eq!(member.unwrap().sub, "anna");
    assert_eq!(
        reader(
            &verifier,
            Some(&staff_only),
            "private-x",
            ReadAccess::TokenOnly
        )
        .unwrap_err(),
        GateError::RoomNotAllowed
    );
    assert!(
        reader(&verifier, Some(&staff_only), "lobby", ReadAccess::Anyone)
            .unwrap()
            .is_none(),
        "a public room outside the claim: anonymous, not a member"
    );
    let patterns = vec!["private-*".to_string()];
    assert_eq!(
        ReadAccess::of("private-x", &patterns, ReadAccess::Anyone),
        ReadAccess::TokenOnly
    );
    assert_eq!(
        ReadAccess::of("lobby", &patterns, ReadAccess::Anyone),
        ReadAccess::Anyone
    );
}

#[test]
fn a_user_token_cannot_be_the_system_user() {
    let verifier = hs_verifier();
    let token = hs_token(json!({"sub": "system", "exp": now() + 60}));
    let message = bad_token_message(verifier.verify(&token));
    assert!(message.contains("reserved"), "{message}");
}

#[test]
fn a_token_that_practically_never_expires_is_refused() {
    let verifier = hs_verifier();
    let forever = hs_token(json!({"sub": "anna", "exp": now() + 100 * 365 * 24 * 3600}));
    let message = bad_token_message(verifier.verify(&forever));
    assert!(message.contains("expires more than"), "{message}");
    let a_day = hs_token(json!({"sub": "anna", "exp": now() + 24 * 3600}));
    assert!(verifier.verify(&a_day).is_ok());
    let unbounded = TokenVerifier::new(VerifierConfig {
        max_lifetime_secs: None,
        original: Default::default(),
        ..config(KeyMaterial::HmacSecret(HS_SECRET.to_vec()), &[])
    })
    .unwrap();
    assert!(unbounded.verify(&forever).is_ok());
}

#[test]
fn a_remembered_token_is_still_refused_once_expired_and_in_other_rooms() {
    let mut settings = config(KeyMaterial::HmacSecret(HS_SECRET.to_vec()), &[]);
    settings.leeway_secs = 0;
    let v = TokenVerifier::new(settings).unwrap().with_cache(16);
    let exp = now() + 1;
    let token = hs_token(json!({"sub": "u", "exp": exp, "rooms": ["lobby"]}));
    for _ in 0..2 {
        // The second time from the cache: the same identity, rooms and all.
        let identity = v.verify(&token).unwrap();
        assert_eq!(identity.sub, "u");
        assert!(identity.may_use("lobby"));
        assert!(!identity.may_use("backstage"));
    }
    // A token one byte away from a remembered one is checked in full.
    let mut parts: Vec<&str> = token.split('.').collect();
    let other = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"sub": "admin", "exp": exp}).to_string());
    parts[1] = &other;
    assert_eq!(
        bad_token_message(v.verify(&parts.join("."))),
        "invalid token signature"
    );
    // Once the clock passes `exp`, the remembered token is refused.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while now() <= exp && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(bad_token_message(v.verify(&token)), "token expired");
}

#[test]
fn the_moderator_role_needs_a_rooms_claim() {
    let v = hs_verifier();
    let everywhere = hs_token(json!({"sub": "m", "exp": now() + 60, "role": "moderator"}));
    assert_eq!(
        v.verify(&everywhere).unwrap().role,
        None,
        "no rooms: no moderator"
    );
    let lobby =
        hs_token(json!({"sub": "m", "exp": now() + 60, "role": "moderator", "rooms": ["lobby"]}));
    assert_eq!(v.verify(&lobby).unwrap().role.as_deref(), Some("moderator"));
}

#[test]
fn original_chatup_tokens_are_taken_only_when_configured() {
    use chatup_gate::token::OriginalTokens;
    let original = |claims: bool, without_exp: bool| {
        TokenVerifier::new(VerifierConfig {
            original: OriginalTokens {
                claims,
                without_exp,
            },
            ..config(KeyMaterial::HmacSecret(HS_SECRET.to_vec()), &[])
        })
        .unwrap()
    };
    let token = hs_token(json!({"name": "ann", "_public": {"name": "Ann"}}));
    let identity = original(true, true).verify(&token).unwrap();
    assert_eq!(identity.sub, "ann");
    assert_eq!(identity.public.unwrap()["name"], "Ann");
    // Each setting is needed: no `sub` without original claims, no `exp`
    // without accepting tokens that never expire.
    assert!(original(false, true).verify(&token).is_err());
    assert!(original(true, false).verify(&token).is_err());
    let with_exp = hs_token(json!({"name": "ann", "exp": now() + 60}));
    assert_eq!(original(true, false).verify(&with_exp).unwrap().sub, "ann");
    // `sub` and `public` win when given; `name` cannot be the system user.
    let both =
        hs_token(json!({"sub": "a1", "name": "ann", "public": {"n": 1}, "_public": {"n": 2}}));
    let identity = original(true, true).verify(&both).unwrap();
    assert_eq!(
        (identity.sub.as_str(), &identity.public.unwrap()["n"]),
        ("a1", &json!(1))
    );
    let system = hs_token(json!({"name": "system"}));
    assert!(bad_token_message(original(true, true).verify(&system)).contains("reserved"));
    // An array payload is no user token.
    let array = hs_token(json!(["ann", 1]));
    assert!(original(true, true).verify(&array).is_err());
}

#[test]
fn verify_signature_takes_payloads_of_any_shape_but_checks_signature_algorithm_and_exp() {
    let v = hs_verifier();
    let array = hs_token(json!([{"name": "ann", "channel": "lobby"}]));
    let (payload, exp) = v.verify_signature(&array).unwrap();
    assert_eq!((payload[0]["name"].clone(), exp), (json!("ann"), None));
    let (_, exp) = v
        .verify_signature(&hs_token(json!({"exp": now() + 60})))
        .unwrap();
    assert!(exp.is_some());
    assert!(v
        .verify_signature(&hs_token(json!({"exp": now() - 600})))
        .is_err());
    let (head, _) = array.rsplit_once('.').unwrap();
    assert!(
        v.verify_signature(&format!("{head}.AAAA")).is_err(),
        "forged"
    );
    // Another algorithm, or another key, is refused.
    let rs = encode(
        &Header::new(Algorithm::RS256),
        &json!([1]),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
    )
    .unwrap();
    assert!(v.verify_signature(&rs).is_err());
    assert!(rs_verifier().verify_signature(&array).is_err());
    assert!(rs_verifier().verify_signature(&rs).is_ok());
}
