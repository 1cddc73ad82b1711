//! EdgeAuth tokens and signed-URL queries from the network: never a panic, and nothing
//! but a refusal for input that was not signed with the key (the fuzzer cannot forge an
//! HMAC; if it ever "finds" one, the check is broken). A token the generator made for the
//! same input always passes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_proxy::access::edgeauth::{Algorithm, Presented, Verifier};
use strata_proxy::access::signed_url;

const KEY: &str = "00112233445566778899aabbccddeeff";

fuzz_target!(|input: (&str, &str, u32)| {
    let (token, path, now) = input;
    let now = u64::from(now);
    let verifier = Verifier::new(&[KEY.into()], Algorithm::Sha256, None, 5, Some(86_400), false)
        .expect("a valid key");
    let presented = Presented {
        token,
        path,
        client: "192.0.2.1".parse().expect("an address"),
        now,
    };
    assert!(verifier.check(&presented).is_err(), "accepted {token:?}");
    if let Ok(made) = verifier.generate(Some("/*"), path, now + 60, None, None) {
        let presented = Presented {
            token: &made,
            ..presented
        };
        assert!(verifier.check(&presented).is_ok(), "refused its own {made:?}");
    }

    let signed = signed_url::Verifier::new(&["fuzz-key-0123456789".into()], "expires", "signature", 5, None)
        .expect("a key");
    assert!(signed.check(path, Some(token), now).is_err(), "accepted {token:?}");
});
