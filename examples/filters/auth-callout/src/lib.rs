//! External authorisation by HTTP callout: each request's `Authorization` is sent to an
//! auth service (`GET /check`, the service named by the configuration, `auth` by default:
//! Strata sends callouts to that service's origins); a `200` lets the request go on (with
//! the user the service names in `x-user` passed to the origin), anything else, or no
//! answer within 500 ms, is a `403`.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::rc::Rc;
use std::time::Duration;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { upstream: Rc::from("auth") }) });
}}

struct Root {
    upstream: Rc<str>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        if let Some(config) = self.get_plugin_configuration() {
            let name = String::from_utf8_lossy(&config).trim().to_string();
            if !name.is_empty() {
                self.upstream = Rc::from(name);
            }
        }
        true
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Check {
            upstream: Rc::clone(&self.upstream),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Check {
    upstream: Rc<str>,
}

impl Context for Check {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        _headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        let status = self.get_http_call_response_header(":status");
        if status.as_deref() == Some("200") {
            let user = self
                .get_http_call_response_header("x-user")
                .unwrap_or_default();
            self.set_http_request_header("x-user", Some(&user));
            self.resume_http_request();
        } else {
            self.send_http_response(
                403,
                vec![("cache-control", "no-store")],
                Some(b"forbidden\n"),
            );
        }
    }
}

impl HttpContext for Check {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let token = self
            .get_http_request_header("authorization")
            .unwrap_or_default();
        // The client's own claim of who it is never reaches the origin.
        self.set_http_request_header("x-user", None);
        let dispatched = self.dispatch_http_call(
            &self.upstream,
            vec![
                (":method", "GET"),
                (":path", "/check"),
                (":authority", "auth.internal"),
                ("authorization", &token),
            ],
            None,
            vec![],
            Duration::from_millis(500),
        );
        match dispatched {
            Ok(_) => Action::Pause,
            Err(status) => {
                log::warn!("auth-callout: {status:?}");
                self.send_http_response(503, vec![], Some(b"auth unavailable\n"));
                Action::Pause
            }
        }
    }
}
