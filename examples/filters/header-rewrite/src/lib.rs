//! Rewrites headers, and optionally the path, by rules given as the filter's
//! configuration, one per line:
//!
//! ```text
//! request.set x-from-edge yes        # set (or replace) a request header
//! request.remove cookie              # drop a request header
//! request.path /old/ /new/           # rewrite a path prefix (the cache key follows)
//! response.set x-frame-options DENY  # set a response header
//! response.remove server             # drop a response header
//! ```
//!
//! With an empty configuration it does nothing (the benchmark's no-op filter).

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::rc::Rc;

#[derive(Default, Clone)]
struct Rules {
    request_set: Vec<(String, String)>,
    request_remove: Vec<String>,
    path: Option<(String, String)>,
    response_set: Vec<(String, String)>,
    response_remove: Vec<String>,
}

fn parse(config: &str) -> Result<Rules, String> {
    let mut rules = Rules::default();
    for (n, line) in config.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.splitn(3, char::is_whitespace);
        let (verb, a, b) = (words.next(), words.next(), words.next().map(str::trim));
        match (verb, a, b) {
            (Some("request.set"), Some(k), Some(v)) => rules.request_set.push((k.into(), v.into())),
            (Some("request.remove"), Some(k), None) => rules.request_remove.push(k.into()),
            (Some("request.path"), Some(from), Some(to)) => {
                rules.path = Some((from.into(), to.into()))
            }
            (Some("response.set"), Some(k), Some(v)) => {
                rules.response_set.push((k.into(), v.into()))
            }
            (Some("response.remove"), Some(k), None) => rules.response_remove.push(k.into()),
            _ => return Err(format!("line {}: cannot read {line:?}", n + 1)),
        }
    }
    Ok(rules)
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { rules: Rc::default() }) });
}}

struct Root {
    rules: Rc<Rules>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        match parse(&String::from_utf8_lossy(&config)) {
            Ok(rules) => {
                self.rules = Rc::new(rules);
                true
            }
            Err(why) => {
                log::error!("header-rewrite: {why}");
                false
            }
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Rewrite {
            rules: Rc::clone(&self.rules),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Rewrite {
    rules: Rc<Rules>,
}

impl Context for Rewrite {}

impl HttpContext for Rewrite {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        for (k, v) in &self.rules.request_set {
            self.set_http_request_header(k, Some(v));
        }
        for k in &self.rules.request_remove {
            self.set_http_request_header(k, None);
        }
        if let Some((from, to)) = &self.rules.path {
            if let Some(path) = self.get_http_request_header(":path") {
                if let Some(rest) = path.strip_prefix(from.as_str()) {
                    self.set_http_request_header(":path", Some(&format!("{to}{rest}")));
                }
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        for (k, v) in &self.rules.response_set {
            self.set_http_response_header(k, Some(v));
        }
        for k in &self.rules.response_remove {
            self.set_http_response_header(k, None);
        }
        Action::Continue
    }
}
