//! Configuration parsing: any text gives a config or an error naming a key, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_proxy::config::NodeConfig;

fuzz_target!(|text: &str| {
    if let Err(e) = NodeConfig::from_toml(text) {
        assert!(!e.path.is_empty());
    }
});
