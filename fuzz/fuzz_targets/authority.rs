//! The request authority (`Host`, `:authority`): never panics; what it accepts is
//! canonical (parsing the canonical form gives it back), lower-case, and free of the
//! characters that would let a `Host` smuggle a path, userinfo or another field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_http_cache::Authority;

fuzz_target!(|input: (&[u8], bool)| {
    let (bytes, https) = input;
    let default_port = if https { 443 } else { 80 };
    let Ok(a) = Authority::parse(bytes, default_port) else {
        return;
    };
    let text = a.as_str();
    assert!(!text.is_empty());
    assert!(
        !text.bytes().any(|b| matches!(b, b'/' | b'?' | b'#' | b'@' | b'\\')
            || b.is_ascii_whitespace()
            || b.is_ascii_control()
            || b >= 0x80),
        "{text:?}"
    );
    assert!(!text.bytes().any(|b| b.is_ascii_uppercase()) || text.contains('%'), "{text:?}");
    let again = Authority::parse(text.as_bytes(), default_port).expect("canonical form parses");
    assert_eq!(again, a, "{bytes:?}");
    assert_ne!(a.port(), Some(default_port));
    assert!(a.host().len() <= strata_http_cache::authority::MAX_HOST_LEN + 2);
});
