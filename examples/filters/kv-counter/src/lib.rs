//! Counts requests per path in shared data (Strata's Edge KV), with compare-and-set so no
//! increment is lost when many requests, on many nodes, count at once; the count after
//! this request's increment goes back in `x-hits`. The configuration, if any, is the
//! key prefix (`hits:` by default). A write that keeps losing (more than 64 tries) gives
//! up and says so in `x-hits-lost`. Metrics: `increments` (writes that won) and `retries`
//! (compare-and-set losses).

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType, Status};
use std::rc::Rc;

const TRIES: usize = 64;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { prefix: Rc::from("hits:"), metrics: (0, 0) })
    });
}}

struct Root {
    prefix: Rc<str>,
    /// Metric ids: increments, retries.
    metrics: (u32, u32),
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let (Ok(increments), Ok(retries)) = (
            hostcalls::define_metric(MetricType::Counter, "increments"),
            hostcalls::define_metric(MetricType::Counter, "retries"),
        ) else {
            return false;
        };
        self.metrics = (increments, retries);
        if let Some(config) = self.get_plugin_configuration() {
            let prefix = String::from_utf8_lossy(&config).trim().to_string();
            if !prefix.is_empty() {
                self.prefix = Rc::from(prefix);
            }
        }
        true
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Counter {
            prefix: Rc::clone(&self.prefix),
            count: None,
            metrics: self.metrics,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Counter {
    prefix: Rc<str>,
    count: Option<u64>,
    metrics: (u32, u32),
}

impl Context for Counter {}

impl HttpContext for Counter {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let path = path.split('?').next().unwrap_or_default();
        let key = format!("{}{path}", self.prefix);
        for _ in 0..TRIES {
            let (value, cas) = self.get_shared_data(&key);
            let n = value
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            match self.set_shared_data(&key, Some(n.to_string().as_bytes()), cas) {
                Ok(()) => {
                    self.count = Some(n);
                    let _ = hostcalls::increment_metric(self.metrics.0, 1);
                    return Action::Continue;
                }
                Err(Status::CasMismatch) => {
                    let _ = hostcalls::increment_metric(self.metrics.1, 1);
                    continue;
                }
                Err(status) => {
                    log::warn!("kv-counter: {key}: {status:?}");
                    break;
                }
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        match self.count {
            Some(n) => self.set_http_response_header("x-hits", Some(&n.to_string())),
            None => self.set_http_response_header("x-hits-lost", Some("1")),
        }
        Action::Continue
    }
}
