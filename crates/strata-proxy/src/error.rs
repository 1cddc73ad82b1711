//! Errors on the request path, and the one place they become responses.

use http::{Response, StatusCode};

use crate::body::ProxyBody;
use crate::upstream::UpstreamError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("request-target too long")]
    UriTooLong,
    #[error("no service for this host")]
    UnknownHost,
    #[error("request loop detected")]
    Loop,
    #[error("not in cache and only-if-cached was requested")]
    OnlyIfCached,
    #[error("upstream: {0}")]
    Upstream(UpstreamError),
    #[error("the PURGE method is not enabled on this listener")]
    PurgeDisabled,
    #[error("this client may not purge")]
    PurgeForbidden,
    #[error("invalid purge: {0}")]
    BadPurge(String),
    #[error("this method is not served here")]
    MethodNotAllowed,
    /// The client's request body broke the exchange (invalid chunked coding, cut short).
    #[error("invalid request body")]
    BadRequestBody,
    /// The client sent its request body too slowly for the upstream to answer in time.
    #[error("request body too slow")]
    RequestBodyTimeout,
    /// The service's or rule's access settings refused the request.
    #[error("refused: {}", .0.detail())]
    Refused(crate::access::Refusal),
    /// A blocking playlist reload (LL-HLS) whose playlist did not come in time: the player
    /// retries, rather than taking an unchanged playlist for the one it asked for.
    #[error("the playlist asked for is not ready")]
    PlaylistNotReady,
    /// An edge compute filter faulted (and is not configured to fail open).
    #[error("filter {name}: {fault}")]
    Filter {
        name: String,
        fault: strata_compute::Fault,
    },
}

/// Methods a 405 names in `Allow` (RFC 9110 §15.5.6). Other methods unknown to Strata are
/// passed to the origin too; these are the ones every service takes.
pub const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::UnknownHost => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::Loop => StatusCode::LOOP_DETECTED,
            ProxyError::OnlyIfCached => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(e) if e.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(UpstreamError::Overloaded) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::PurgeDisabled => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::PurgeForbidden => StatusCode::FORBIDDEN,
            ProxyError::BadPurge(_) => StatusCode::BAD_REQUEST,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BadRequestBody => StatusCode::BAD_REQUEST,
            ProxyError::RequestBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Refused(r) => r.status(),
            ProxyError::PlaylistNotReady => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Filter {
                fault: strata_compute::Fault::Exhausted,
                ..
            } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Filter { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `Cache-Status` `detail` for this error.
    pub fn detail(&self) -> String {
        match self {
            ProxyError::BadRequest(why) => format!("bad-request: {why}"),
            ProxyError::UriTooLong => "uri-too-long".into(),
            ProxyError::UnknownHost => "unknown-host".into(),
            ProxyError::Loop => "loop-detected".into(),
            ProxyError::OnlyIfCached => "only-if-cached".into(),
            ProxyError::Upstream(e) => e.to_string(),
            ProxyError::PurgeDisabled => "purge-disabled".into(),
            ProxyError::PurgeForbidden => "purge-forbidden".into(),
            ProxyError::BadPurge(_) => "bad-purge".into(),
            ProxyError::MethodNotAllowed => "method-not-allowed".into(),
            ProxyError::BadRequestBody => "bad-request-body".into(),
            ProxyError::RequestBodyTimeout => "request-body-timeout".into(),
            ProxyError::Refused(r) => r.detail().into(),
            ProxyError::PlaylistNotReady => "playlist-not-ready".into(),
            ProxyError::Filter { name, fault } => format!("filter {name}: {}", fault.kind()),
        }
    }

    /// The field this error's answer carries beyond the text: `Allow` for a 405,
    /// `Retry-After` for a shed or rate-limited request, `Connection: close` when the rest
    /// of the request body is still in flight (this connection is done).
    fn field(&self) -> Option<(http::HeaderName, http::HeaderValue)> {
        use http::{header, HeaderValue};
        match self {
            ProxyError::MethodNotAllowed | ProxyError::PurgeDisabled => {
                Some((header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS)))
            }
            // Shed: come back in a moment (the queue drains in about a second).
            ProxyError::Upstream(UpstreamError::Overloaded)
            | ProxyError::PlaylistNotReady
            | ProxyError::Filter {
                fault: strata_compute::Fault::Exhausted,
                ..
            } => Some((header::RETRY_AFTER, HeaderValue::from_static("1"))),
            ProxyError::Refused(refusal) => refusal.header(),
            ProxyError::RequestBodyTimeout | ProxyError::BadRequestBody => {
                Some((header::CONNECTION, HeaderValue::from_static("close")))
            }
            _ => None,
        }
    }

    /// A short plain-text response. Headers common to every response (`Cache-Status`,
    /// `Via`) are added by the caller.
    pub fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        let text = format!(
            "{} {}: {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self
        );
        let mut resp = crate::request::respond::text(status, text);
        if let Some((name, value)) = self.field() {
            resp.headers_mut().insert(name, value);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_504_and_failures_502() {
        assert_eq!(
            ProxyError::Upstream(UpstreamError::FirstByteTimeout).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            ProxyError::Upstream(UpstreamError::ConnectFailed).status(),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(ProxyError::Loop.status().as_u16(), 508);
    }
}
