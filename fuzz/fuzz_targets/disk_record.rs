//! What the disk tier reads back from its files (object metadata, purge journal lines):
//! never panics, and whatever decodes encodes to something that decodes to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_storage::disk::journal;
use strata_storage::disk::Meta;

fuzz_target!(|data: &[u8]| {
    if let Ok(meta) = Meta::decode(data) {
        let again = Meta::decode(&meta.encode()).expect("re-encoded metadata decodes");
        assert_eq!(again.key.as_str(), meta.key.as_str());
        assert_eq!(again.headers, meta.headers);
        assert_eq!(again.body_len, meta.body_len);
    }
    if let Some(purge) = journal::decode(data) {
        assert_eq!(journal::decode(&journal::encode(&purge)), Some(purge));
    }
});
