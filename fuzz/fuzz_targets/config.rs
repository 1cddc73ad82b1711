//! Configuration parsing: any text gives a config or an error naming a key, never a panic.
//! Node, DNS router (and the zone built from it) and anycast announcer configurations.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_proxy::config::NodeConfig;
use strata_router::anycast::AnycastConfig;
use strata_router::zone::Zone;
use strata_router::RouterConfig;

fuzz_target!(|text: &str| {
    if let Err(e) = NodeConfig::from_toml(text) {
        assert!(!e.path.is_empty());
    }
    match RouterConfig::from_toml(text) {
        Ok(c) => {
            let _ = Zone::new(&c);
        }
        Err(e) => assert!(!e.path.is_empty()),
    }
    if let Err(e) = AnycastConfig::from_toml(text) {
        assert!(!e.path.is_empty());
    }
});
