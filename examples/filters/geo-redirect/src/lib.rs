//! Redirects clients by country. The configuration maps ISO 3166 country codes to a
//! base URL, one per line (`DE https://de.example.com`); a client from a listed country
//! gets a `302` to that base plus its path, everyone else goes on. The country is the
//! node's property `strata.country` (from its GeoIP database, `[geo]`), a client without
//! one goes on too. Answers say `Vary`-free `Cache-Control: private`: a redirect for one
//! country must not be cached for the next.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::collections::HashMap;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { targets: Rc::default() }) });
}}

struct Root {
    targets: Rc<HashMap<String, String>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let mut targets = HashMap::new();
        for line in String::from_utf8_lossy(&config).lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(char::is_whitespace) {
                Some((cc, url)) if cc.len() == 2 && url.trim().starts_with("http") => {
                    targets.insert(
                        cc.to_ascii_uppercase(),
                        url.trim().trim_end_matches('/').to_string(),
                    );
                }
                _ => {
                    log::error!("geo-redirect: cannot read {line:?}");
                    return false;
                }
            }
        }
        self.targets = Rc::new(targets);
        true
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Redirect {
            targets: Rc::clone(&self.targets),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Redirect {
    targets: Rc<HashMap<String, String>>,
}

impl Context for Redirect {}

impl HttpContext for Redirect {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let country = self
            .get_property(vec!["strata", "country"])
            .map(|c| String::from_utf8_lossy(&c).to_ascii_uppercase());
        let Some(target) = country.and_then(|c| self.targets.get(&c)) else {
            return Action::Continue;
        };
        let path = self
            .get_http_request_header(":path")
            .unwrap_or_else(|| "/".into());
        let location = format!("{target}{path}");
        self.send_http_response(
            302,
            vec![
                ("location", &location),
                ("cache-control", "private, no-store"),
            ],
            None,
        );
        Action::Pause
    }
}
