//! Large objects in slices (`slice = "4MiB"` on a service or rule), like nginx's `slice`
//! module and ATS's slice plugin.
//!
//! An object under a sliced path is never fetched whole: each fixed-size slice is asked
//! upstream with `Range: bytes=<start>-<end>` and stored as an object of its own under
//! `<key>#slice=<start>-<end>` (see [`CacheKey::slice`]), through the same lookup,
//! coalescing and fill as any object. So a seek fetches only the slices it covers, two
//! players on one slice share one upstream request, and slices are evicted one by one.
//!
//! A client's request is answered from the slice holding its first byte, which also
//! tells the object's length (its `Content-Range`) and validators: the answer's head is
//! built from it (200, 206 or 416, `304`/`412` for conditionals). The body is assembled
//! on its own task, slice after slice, each checked against those validators (`ETag`,
//! `Last-Modified`, length): a stored slice of another version is dropped and asked
//! again; when upstream itself now has another version, every slice of the object is
//! dropped and the response ends unfinished, so a client never gets a body spliced from
//! two versions (it retries and gets the new one whole).
//!
//! Not sliced: playlists (they change under one URL), requests that cannot share a
//! fill (credentials, `no-store`: they go through the same path, each slice alone).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderValue, ACCEPT_ENCODING, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, ETAG,
    LAST_MODIFIED, RANGE,
};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use strata_http_cache::cache_status::Fwd;
use strata_http_cache::range::{parse_content_range, parse_range, RangeOutcome};
use strata_storage::{Purge, Scope};
use tokio::sync::mpsc;

use crate::body::{BoxError, ProxyBody};
use crate::error::ProxyError;
use crate::forward::CLIENT_CONDITIONALS;
use crate::proxy::Proxy;
use crate::request::{respond, Cacheable, Ctx};
use crate::server::interim::Opener;

/// Pieces the assembling task may be ahead of the client (each at most a stored chunk).
const AHEAD: usize = 4;

/// Makes an upstream answer to a slice's request the slice's object: a `206` for exactly
/// the bytes asked (the last slice ends at the object's end) becomes a `200` of them,
/// keeping its `Content-Range` (which tells the whole length). Other 2xx are refused (an
/// origin that ignores `Range` sends the whole object: not this slice); errors stay
/// themselves (a `416` past the end, a `404`).
pub(super) fn as_slice(
    parts: &mut http::response::Parts,
    (start, end): (u64, u64),
) -> Result<(), &'static str> {
    if !parts.status.is_success() {
        return Ok(());
    }
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if parts.status == StatusCode::OK {
        // The whole object, when it fits in the first slice (an origin may answer a range
        // covering everything with a 200): that slice, with the range it covers.
        return match declared {
            Some(len) if start == 0 && len > 0 && len <= end + 1 => {
                let range = format!("bytes 0-{}/{len}", len - 1);
                if let Ok(v) = HeaderValue::from_str(&range) {
                    parts.headers.insert(CONTENT_RANGE, v);
                }
                Ok(())
            }
            _ => Err("slice: upstream ignored the range"),
        };
    }
    if parts.status != StatusCode::PARTIAL_CONTENT {
        return Err("slice: not a range");
    }
    let range = parts
        .headers
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_content_range);
    let Some((got, Some(total))) = range else {
        return Err("slice: no content-range");
    };
    if total > MAX_TOTAL {
        return Err("slice: implausible length");
    }
    if got.start != start || got.end != end.min(total - 1) {
        return Err("slice: another range");
    }
    // Its length is checked here, before anything is stored: a body shorter than its range
    // would be a broken slice until it expired.
    if declared != Some(got.length()) {
        return Err("slice: length not the range's");
    }
    parts.status = StatusCode::OK;
    Ok(())
}

/// Object lengths past this are an origin's lie (and would overflow the slice arithmetic).
const MAX_TOTAL: u64 = 1 << 62;

/// What one slice's answer says of the whole object: its length, and the validators every
/// other slice must carry too.
#[derive(Debug, PartialEq)]
struct Whole {
    total: u64,
    etag: Option<HeaderValue>,
    last_modified: Option<HeaderValue>,
}

impl Whole {
    /// From an answer to the request for the slice starting at `start`; `None` when it is
    /// not one (an error, or a whole object from an origin that ignores ranges).
    fn of(resp: &Response<ProxyBody>, start: u64) -> Option<Self> {
        if resp.status() != StatusCode::OK {
            return None;
        }
        let headers = resp.headers();
        let (range, total) = headers
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_content_range)?;
        let total = total.filter(|t| range.start == start && *t <= MAX_TOTAL)?;
        Some(Self {
            total,
            // A weak tag says nothing of the bytes (RFC 9110 §8.8.1): not a validator here.
            etag: headers
                .get(ETAG)
                .filter(|v| !v.as_bytes().starts_with(b"W/"))
                .cloned(),
            last_modified: headers.get(LAST_MODIFIED).cloned(),
        })
    }
}

/// Whether a `416` says the object is empty (`Content-Range: bytes */0`).
fn empty(resp: &Response<ProxyBody>) -> bool {
    resp.headers()
        .get(CONTENT_RANGE)
        .is_some_and(|v| v.as_bytes() == b"bytes */0")
}

/// The first byte a client's `Range` asks for, when it names one (not a suffix).
fn first_byte_asked(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(RANGE)?.to_str().ok()?;
    match parse_range(value, u64::MAX) {
        // A suffix range (`-500`) counts back from an end not known yet.
        RangeOutcome::Partial(r) if r.start < u64::MAX / 2 => Some(r.start),
        _ => None,
    }
}

/// A request's context for a slice after the first: its cache status is not the
/// client's (that one was sent with the head).
fn scratch(node: &str) -> Ctx {
    Ctx::new(node, Opener::new(None))
}

// === impl Proxy ===

impl Proxy {
    /// Answers a request for an object stored in slices of `size` bytes.
    pub(super) async fn sliced(
        self: Arc<Self>,
        req: Cacheable,
        size: u64,
        ctx: &mut Ctx,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let asked = (req.head.method == Method::GET)
            .then(|| first_byte_asked(&req.head.headers))
            .flatten();
        let index = asked.map_or(0, |b| b / size);
        let first = Arc::clone(&self).slice(&req, index, size, ctx).await?;
        let Some(whole) = Whole::of(&first, index * size) else {
            return Ok(match first.status() {
                // An empty object: nothing to slice (RFC 9110 §14.1.1: no range of it exists).
                StatusCode::RANGE_NOT_SATISFIABLE if index == 0 && empty(&first) => {
                    let mut h = HeaderMap::new();
                    h.insert(CONTENT_LENGTH, HeaderValue::from(0));
                    respond::build(StatusCode::OK, h, ProxyBody::Empty)
                }
                // A range upstream answered for other bytes than asked: never the client's
                // answer. Its own request goes upstream as it is.
                StatusCode::PARTIAL_CONTENT => {
                    drop(first);
                    ctx.status.detail = Some("slice: pass".into());
                    return self
                        .pass(&req.service, &req.head, crate::body::empty_request(), ctx)
                        .await;
                }
                // An error (a 404, a 416 past the end), or a whole object from an origin
                // that ignores ranges: the client gets it as it is.
                _ => first,
            });
        };
        let (head, method) = (&req.head.headers, &req.head.method);
        let (parts, first_body) = first.into_parts();
        let mut headers = parts.headers;
        headers.remove(CONTENT_RANGE);
        if let Some(answer) = respond::conditional(method, head, &headers, &headers) {
            return Ok(answer);
        }
        headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        let total = whole.total;
        let (status, from, to) = match respond::range_asked(method, head, &headers, total) {
            RangeOutcome::Full => (StatusCode::OK, 0, total),
            RangeOutcome::Partial(r) => {
                let content_range = r.content_range(total);
                if let Ok(v) = HeaderValue::from_str(&content_range) {
                    headers.insert(CONTENT_RANGE, v);
                }
                (StatusCode::PARTIAL_CONTENT, r.start, r.end + 1)
            }
            RangeOutcome::Unsatisfiable => return Ok(respond::unsatisfiable(total)),
        };
        headers.insert(CONTENT_LENGTH, HeaderValue::from(to - from));
        if *method == Method::HEAD || from == to {
            return Ok(respond::build(status, headers, ProxyBody::Empty));
        }
        let (tx, rx) = mpsc::channel(AHEAD);
        let assembly = Assembly {
            req,
            size,
            whole,
            first: Some((index, first_body)),
            from,
            to,
        };
        tokio::spawn(self.assemble(assembly, tx));
        let body = ProxyBody::Channel {
            rx,
            remaining: to - from,
        };
        Ok(respond::build(status, headers, body))
    }

    /// The answer to the request for slice `index`, through lookup, coalescing and fill
    /// like any object (under the slice's key, asked upstream with its range).
    async fn slice(
        self: Arc<Self>,
        whole: &Cacheable,
        index: u64,
        size: u64,
        ctx: &mut Ctx,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let start = index * size;
        let end = start + size - 1;
        let mut req = whole.clone();
        req.key = whole.key.slice(start, end);
        req.slice = Some((start, end));
        req.interim = None;
        // Judged fresh or not now, not when the client arrived (a long download).
        req.arrived = self.clock.now();
        // The slice whole, as the origin has it: the client's range and conditionals
        // apply to the object (above), and a coding would make its bytes another's.
        let headers = &mut req.head.headers;
        for name in CLIENT_CONDITIONALS.iter().chain([&ACCEPT_ENCODING]) {
            headers.remove(name);
        }
        req.head.method = Method::GET;
        let now = self.clock.wall();
        req.stored = req.usable(&*self.storage, now);
        if let Some(stored) = &req.stored {
            return Ok(self.hit(stored, &req.head, now, ctx));
        }
        if req.req_cc.only_if_cached {
            return Err(ProxyError::OnlyIfCached);
        }
        // A stale copy is kept for revalidation (and for stale-if-error).
        req.stored = self
            .storage
            .lookup(&req.key, now)
            .and_then(|set| set.select(&req.head.headers).cloned());
        ctx.status.fwd = Some(match req.stored {
            Some(_) => Fwd::Stale,
            None => Fwd::UriMiss,
        });
        self.through_cache(req, ctx).await
    }

    /// Sends bytes `from..to` of the object, slice after slice, to the client's body.
    async fn assemble(
        self: Arc<Self>,
        mut job: Assembly,
        tx: mpsc::Sender<Result<Bytes, BoxError>>,
    ) {
        let mut at = job.from;
        while at < job.to {
            let index = at / job.size;
            let start = index * job.size;
            let body = match job.first.take().filter(|(i, _)| *i == index) {
                Some((_, body)) => body,
                None => {
                    let verified = Arc::clone(&self).verified_slice(&job, index);
                    // A client that leaves while the slice is fetched is not waited for:
                    // the fill sees one waiter fewer.
                    let got = tokio::select! {
                        got = verified => got,
                        _ = tx.closed() => return,
                    };
                    match got {
                        Ok(body) => body,
                        Err(why) => {
                            let _ = tx.send(Err(why.into())).await;
                            return;
                        }
                    }
                }
            };
            let until = (start + job.size).min(job.to);
            if !copy(body, at - start, until - at, &tx).await {
                return;
            }
            at = until;
        }
    }

    /// Slice `index`'s body, from a copy of the same version as the first slice's. A
    /// stored one of another version is dropped and asked again; when upstream has
    /// another version, every slice of the object is dropped.
    async fn verified_slice(
        self: Arc<Self>,
        job: &Assembly,
        index: u64,
    ) -> Result<ProxyBody, String> {
        let start = index * job.size;
        for _ in 0..2 {
            let mut ctx = scratch(&self.node);
            let resp = Arc::clone(&self)
                .slice(&job.req, index, job.size, &mut ctx)
                .await
                .map_err(|e| format!("slice at {start}: {}", e.detail()))?;
            match Whole::of(&resp, start) {
                Some(whole) if whole == job.whole => return Ok(resp.into_body()),
                // Not a slice (upstream failing, throttling, gone): this answer fails, and
                // what is stored stays.
                None => return Err(format!("slice at {start}: upstream {}", resp.status())),
                // A stored copy of another version: ask upstream.
                Some(_) if ctx.status.hit => {
                    let now = self.clock.wall();
                    self.storage
                        .remove(&job.req.key.slice(start, start + job.size - 1), now);
                }
                Some(_) => break,
            }
        }
        // Upstream has another version than the first slice: start over.
        crate::warn_throttled!(
            std::time::Duration::from_secs(10),
            key = %job.req.key,
            "object changed while its slices were read; its slices dropped"
        );
        self.storage.purge(
            &Purge {
                scope: Scope::Keys(vec![job.req.key.clone()]),
                soft: false,
                issued_at: self.clock.wall(),
            },
            self.clock.wall(),
        );
        Err(format!("slice at {start}: the object changed"))
    }
}

/// One client's answer being assembled from slices.
struct Assembly {
    /// The client's request (its key is the object's).
    req: Cacheable,
    size: u64,
    /// What the first slice said: every other must say the same.
    whole: Whole,
    /// The first slice's body, and its index.
    first: Option<(u64, ProxyBody)>,
    /// The bytes to send: `from..to`.
    from: u64,
    to: u64,
}

/// Copies `len` bytes of `body` after its first `skip` to `tx`. `false`: the client left,
/// or the body failed (said to the client).
async fn copy(
    mut body: ProxyBody,
    mut skip: u64,
    mut len: u64,
    tx: &mpsc::Sender<Result<Bytes, BoxError>>,
) -> bool {
    while len > 0 {
        let mut data = match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Some(Err(e)) => {
                let _ = tx.send(Err(e)).await;
                return false;
            }
            None => {
                let _ = tx.send(Err("a slice ended early".into())).await;
                return false;
            }
        };
        let n = data.len() as u64;
        if skip >= n {
            skip -= n;
            continue;
        }
        data = data.slice(skip as usize..);
        skip = 0;
        if data.len() as u64 > len {
            data.truncate(len as usize);
        }
        len -= data.len() as u64;
        if tx.send(Ok(data)).await.is_err() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer with a `Content-Length` of the range it says it carries.
    fn parts(status: u16, content_range: Option<&str>) -> http::response::Parts {
        let mut b = Response::builder().status(status);
        if let Some(cr) = content_range {
            b = b.header(CONTENT_RANGE, cr);
            if let Some((r, _)) = parse_content_range(cr) {
                b = b.header(CONTENT_LENGTH, r.length());
            }
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_206_for_exactly_the_slice_becomes_its_object() {
        let mut p = parts(206, Some("bytes 100-199/1000"));
        assert_eq!(as_slice(&mut p, (100, 199)), Ok(()));
        assert_eq!(p.status, StatusCode::OK);
        assert_eq!(p.headers[CONTENT_LENGTH], "100");
        assert_eq!(p.headers[CONTENT_RANGE], "bytes 100-199/1000");
        // The last slice ends where the object does.
        let mut p = parts(206, Some("bytes 900-999/1000"));
        assert_eq!(as_slice(&mut p, (900, 1099)), Ok(()));
    }

    #[test]
    fn anything_but_the_slice_asked_is_never_stored_as_it() {
        for (status, cr) in [
            (200, None),
            (206, None),
            (206, Some("bytes 100-199/*")),
            (206, Some("bytes 0-999/1000")),
            (206, Some("bytes 100-150/1000")),
            (206, Some("bytes 100-199/9223372036854775807")),
        ] {
            assert!(
                as_slice(&mut parts(status, cr), (100, 199)).is_err(),
                "{status} {cr:?}"
            );
        }
        // Errors stay errors (a 416 past the end is the client's answer).
        let mut p = parts(416, Some("bytes */50"));
        assert_eq!(as_slice(&mut p, (100, 199)), Ok(()));
        assert_eq!(p.status, StatusCode::RANGE_NOT_SATISFIABLE);
    }

    #[test]
    fn a_short_206_is_refused_and_a_small_whole_object_is_the_first_slice() {
        let mut short = parts(206, Some("bytes 100-199/1000"));
        short.headers.insert(CONTENT_LENGTH, HeaderValue::from(10));
        assert!(as_slice(&mut short, (100, 199)).is_err());
        let mut whole = parts(200, None);
        whole.headers.insert(CONTENT_LENGTH, HeaderValue::from(50));
        assert_eq!(as_slice(&mut whole, (0, 199)), Ok(()));
        assert_eq!(whole.headers[CONTENT_RANGE], "bytes 0-49/50");
        let mut big = parts(200, None);
        big.headers.insert(CONTENT_LENGTH, HeaderValue::from(500));
        assert!(as_slice(&mut big, (0, 199)).is_err());
    }

    #[test]
    fn the_first_byte_asked_is_known_only_for_ranges_from_a_start() {
        let h = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(RANGE, HeaderValue::from_str(v).unwrap());
            h
        };
        assert_eq!(first_byte_asked(&h("bytes=5000-")), Some(5000));
        assert_eq!(first_byte_asked(&h("bytes=10-20")), Some(10));
        assert_eq!(first_byte_asked(&h("bytes=-500")), None);
        assert_eq!(first_byte_asked(&h("bytes=0-1,5-6")), None);
        assert_eq!(first_byte_asked(&HeaderMap::new()), None);
    }
}
