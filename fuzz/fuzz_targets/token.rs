//! Tokens an outsider sends: the site's user tokens (the module's post
//! handler, the dispatcher's joins and tickets), read tickets (subscribe
//! URLs) and server-API tokens (the dispatcher's server API reads claims
//! of any shape). Nothing may panic, and nothing unsigned may pass.
#![no_main]

use chatup_gate::subscribe::{additional_rooms, reader_identity, ReadAccess};
use chatup_gate::token::KeyMaterial;
use chatup_gate::{TokenVerifier, VerifierConfig};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

struct Verifiers {
    user: TokenVerifier,
    hmac: TokenVerifier,
    tickets: TokenVerifier,
}

fn verifiers() -> &'static Verifiers {
    static VERIFIERS: OnceLock<Verifiers> = OnceLock::new();
    VERIFIERS.get_or_init(|| Verifiers {
        user: TokenVerifier::new(VerifierConfig {
            key: KeyMaterial::PublicKeyPem(
                include_bytes!("../../conf/dev-keys/jwt-rs256.pub").to_vec(),
            ),
            algorithms: vec!["RS256".into()],
            issuer: Some("chatup-dev-site".into()),
            audience: Some("chatup".into()),
            leeway_secs: 5,
            max_lifetime_secs: Some(86_400),
            original: Default::default(),
        })
        .unwrap(),
        hmac: TokenVerifier::new(VerifierConfig {
            key: KeyMaterial::HmacSecret(
                include_bytes!("../../conf/dev-keys/jwt-hs256.secret").to_vec(),
            ),
            algorithms: Vec::new(),
            issuer: None,
            audience: None,
            leeway_secs: 5,
            max_lifetime_secs: None,
            original: Default::default(),
        })
        .unwrap(),
        tickets: chatup_gate::ticket::verifier(include_bytes!(
            "../../conf/dev-keys/ticket-hs256.secret"
        ))
        .unwrap(),
    })
}

fuzz_target!(|data: &[u8]| {
    let v = verifiers();
    if let Ok(token) = std::str::from_utf8(data) {
        // Random bytes never carry a valid signature.
        assert!(v.user.verify(token).is_err());
        assert!(v.hmac.verify(token).is_err());
        assert!(v.hmac.verify_claims::<serde_json::Value>(token).is_err());
        // The original ChatUp's server tokens (payload of any shape).
        assert!(v.hmac.verify_signature(token).is_err());
        assert!(v.tickets.verify(token).is_err());
    }
    // The subscribe URL as nginx hands it over: any bytes.
    for access in [ReadAccess::Anyone, ReadAccess::TokenOnly] {
        let reader = reader_identity(&v.tickets, data, "lobby", access);
        assert!(!matches!(reader, Ok(Some(_))), "a forged ticket passed");
        // Additional rooms (`?also=`): valid names only, and none that
        // needs a token gets past a forged ticket.
        if let Ok(rooms) = additional_rooms(&v.tickets, data, "lobby", |_| access) {
            assert!(rooms.len() <= chatup_wire::MAX_ADDITIONAL_ROOMS);
            assert!(rooms.iter().all(|r| chatup_wire::validate_room(r).is_ok()));
            assert!(access == ReadAccess::Anyone || rooms.is_empty(), "{rooms:?}");
        }
    }
});
