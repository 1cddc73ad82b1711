//! Compression of what origins send uncompressed, once per object: the compressed variant
//! is what the fill stores, so later hits cost no compression CPU.
//!
//! The request's `Accept-Encoding` is reduced to one coding at parse
//! (`strata_http_cache::accept_encoding`), so a URL has at most four stored variants under
//! `Vary: Accept-Encoding`. A fill compresses when the origin answered 200 with no
//! `Content-Encoding`, a compressible type, no `no-transform`, and (when it says) at least
//! [`MIN_SIZE`] bytes. The answer then carries `Content-Encoding`, `Vary: Accept-Encoding`,
//! no `Content-Length` (the body streams), and a weak `ETag` (RFC 9110 §8.8.1: the bytes
//! differ from the origin's). Bodies are compressed as they arrive, never buffered whole.

use std::io::Write;

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderValue, ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_TYPE, ETAG, VARY,
};
use http::StatusCode;
use strata_http_cache::accept_encoding::Coding;

/// Bodies declared shorter than this are sent as they are: the coding's framing would eat
/// most of the gain.
pub const MIN_SIZE: u64 = 1024;

/// `body` decoded from `coding` (a `Content-Encoding` token), at most `limit` bytes of it:
/// `None` for an unknown coding, corrupt data, or more than `limit` (a small compressed
/// body can expand to gigabytes). For reading what a stored variant says (a playlist).
pub fn decode_bounded(coding: &str, body: &[u8], limit: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let reader: Box<dyn Read + '_> = match coding.trim() {
        "" | "identity" => return (body.len() <= limit).then(|| body.to_vec()),
        "gzip" | "x-gzip" => Box::new(flate2::read::GzDecoder::new(body)),
        "br" => Box::new(brotli::Decompressor::new(body, 4096)),
        "zstd" => Box::new(zstd::stream::read::Decoder::new(body).ok()?),
        _ => return None,
    };
    let mut out = Vec::new();
    reader.take(limit as u64 + 1).read_to_end(&mut out).ok()?;
    (out.len() <= limit).then_some(out)
}

/// What the fill of one response does to its body.
pub enum Decision {
    /// Compressed with this coding; the fields are rewritten.
    Compress(Coding),
    /// Stored as it came, but under `Vary: Accept-Encoding` so that clients asking for a
    /// coding get their own (compressed) variant.
    VaryOnly,
    /// Not a candidate: the fields stay as they are.
    Untouched,
}

/// Decides for a storable response, and rewrites its fields to match. `wanted`: the
/// request's coding (as reduced at parse).
pub fn decide(status: StatusCode, headers: &mut HeaderMap, wanted: Coding) -> Decision {
    if status != StatusCode::OK
        || headers.contains_key(CONTENT_ENCODING)
        || !headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(compressible)
        || no_transform(headers)
    {
        return Decision::Untouched;
    }
    add_vary(headers);
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if wanted == Coding::Identity || declared.is_some_and(|n| n < MIN_SIZE) {
        return Decision::VaryOnly;
    }
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static(wanted.as_str()));
    headers.remove(CONTENT_LENGTH);
    if let Some(etag) = headers.get(ETAG) {
        let weak = etag.as_bytes().starts_with(b"W/");
        if !weak {
            let mut value = b"W/".to_vec();
            value.extend_from_slice(etag.as_bytes());
            match HeaderValue::from_bytes(&value) {
                Ok(v) => {
                    headers.insert(ETAG, v);
                }
                Err(_) => {
                    headers.remove(ETAG);
                }
            }
        }
    }
    Decision::Compress(wanted)
}

/// Types worth compressing: text, and the structured formats and fonts that are not
/// compressed already (woff/woff2, images, audio and video are).
pub fn compressible(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/javascript"
                | "application/x-javascript"
                | "application/ecmascript"
                | "application/xml"
                | "application/wasm"
                | "application/manifest+json"
                | "application/x-ndjson"
                | "application/vnd.apple.mpegurl"
                | "application/x-mpegurl"
                | "application/dash+xml"
                | "image/svg+xml"
                | "image/x-icon"
                | "image/vnd.microsoft.icon"
                | "font/ttf"
                | "font/otf"
                | "application/vnd.ms-fontobject"
                | "application/x-font-ttf"
        )
}

/// After a 304 refreshed a stored content-encoded object's fields (`merged`, from
/// `stored`): what the 304 cannot know about the stored bytes is kept. A strong `ETag` for
/// the origin's representation stays weak on the compressed one, and `Vary` keeps
/// `Accept-Encoding` (a 304's own `Vary` would drop it, and a downstream cache would then
/// serve these bytes to a client that cannot decode them).
pub fn keep_after_refresh(stored: &HeaderMap, merged: &mut HeaderMap) {
    if !stored.contains_key(CONTENT_ENCODING) {
        return;
    }
    if weakened_from(stored, merged) {
        if let Some(old) = stored.get(ETAG) {
            merged.insert(ETAG, old.clone());
        }
    }
    let varies = |h: &HeaderMap| {
        h.get_all(VARY).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|f| f.trim().eq_ignore_ascii_case(ACCEPT_ENCODING.as_str()))
            })
        })
    };
    if varies(stored) && !varies(merged) {
        merged.append(VARY, HeaderValue::from_static("accept-encoding"));
    }
}

/// Whether a stored content-encoded object's weak `ETag` is the one Strata made from the
/// strong `ETag` in `fields` (`W/"v1"` from `"v1"`): a 304 carrying the origin's strong
/// validator then selects the compressed variant too (RFC 9111 §4.3.4 would otherwise
/// refuse it, and every revalidation would cost a full fetch).
pub fn weakened_from(stored: &HeaderMap, fields: &HeaderMap) -> bool {
    stored.contains_key(CONTENT_ENCODING)
        && match (stored.get(ETAG), fields.get(ETAG)) {
            (Some(old), Some(new)) => old.as_bytes().strip_prefix(b"W/") == Some(new.as_bytes()),
            _ => false,
        }
}

fn no_transform(headers: &HeaderMap) -> bool {
    headers.get_all(CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
        })
    })
}

fn add_vary(headers: &mut HeaderMap) {
    let already = headers.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|f| {
                let f = f.trim();
                f == "*" || f.eq_ignore_ascii_case(ACCEPT_ENCODING.as_str())
            })
        })
    });
    if !already {
        headers.append(VARY, HeaderValue::from_static("accept-encoding"));
    }
}

// === impl Encoder ===

/// A streaming encoder: bytes in as they arrive, compressed bytes out when the coding has
/// some ready. Quality is set for a body compressed once and served many times, at a
/// speed that keeps up with an origin on one core: brotli 5, zstd 3, gzip 6.
pub enum Encoder {
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
}

impl Encoder {
    pub fn new(coding: Coding) -> Option<Self> {
        Some(match coding {
            Coding::Br => Encoder::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                64 << 10,
                5,
                22,
            ))),
            Coding::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), 3).ok()?),
            Coding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(6),
            )),
            Coding::Identity => return None,
        })
    }

    /// Feeds `data`; the coding's output collects in its buffer until [`Encoder::take`].
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Br(w) => w.write_all(data),
            Encoder::Zstd(w) => w.write_all(data),
            Encoder::Gzip(w) => w.write_all(data),
        }
    }

    /// What the coding has produced so far (may be empty), without a copy.
    pub fn take(&mut self) -> Bytes {
        let out = match self {
            Encoder::Br(w) => w.get_mut(),
            Encoder::Zstd(w) => w.get_mut(),
            Encoder::Gzip(w) => w.get_mut(),
        };
        Bytes::from(std::mem::take(out))
    }

    /// Ends the stream; returns what was not taken yet and the last bytes.
    pub fn finish(self) -> std::io::Result<Bytes> {
        let out = match self {
            Encoder::Br(mut w) => {
                w.flush()?;
                w.into_inner()
            }
            Encoder::Zstd(w) => w.finish()?,
            Encoder::Gzip(w) => w.finish()?,
        };
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn fields(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn rfc9110_8_8_1_a_compressed_variant_gets_a_weak_etag_and_no_length() {
        let mut h = fields(&[
            ("content-type", "text/html; charset=utf-8"),
            ("content-length", "5000"),
            ("etag", "\"abc\""),
        ]);
        assert!(matches!(
            decide(StatusCode::OK, &mut h, Coding::Br),
            Decision::Compress(Coding::Br)
        ));
        assert_eq!(h["content-encoding"], "br");
        assert_eq!(h["etag"], "W/\"abc\"");
        assert!(!h.contains_key("content-length"));
        assert_eq!(h["vary"], "accept-encoding");
    }

    #[test]
    fn rfc9111_5_2_2_6_no_transform_is_left_alone() {
        let mut h = fields(&[
            ("content-type", "text/css"),
            ("cache-control", "max-age=60, no-transform"),
        ]);
        assert!(matches!(
            decide(StatusCode::OK, &mut h, Coding::Gzip),
            Decision::Untouched
        ));
        assert!(!h.contains_key("vary"));
    }

    #[test]
    fn encoded_partial_small_or_binary_bodies_are_not_compressed() {
        let mut encoded = fields(&[("content-type", "text/css"), ("content-encoding", "gzip")]);
        assert!(matches!(
            decide(StatusCode::OK, &mut encoded, Coding::Br),
            Decision::Untouched
        ));
        let mut partial = fields(&[("content-type", "text/css")]);
        assert!(matches!(
            decide(StatusCode::PARTIAL_CONTENT, &mut partial, Coding::Br),
            Decision::Untouched
        ));
        let mut image = fields(&[("content-type", "image/png")]);
        assert!(matches!(
            decide(StatusCode::OK, &mut image, Coding::Br),
            Decision::Untouched
        ));
        let mut tiny = fields(&[("content-type", "text/plain"), ("content-length", "100")]);
        assert!(matches!(
            decide(StatusCode::OK, &mut tiny, Coding::Br),
            Decision::VaryOnly
        ));
        assert_eq!(tiny["content-length"], "100");
        let mut identity = fields(&[
            ("content-type", "application/json"),
            ("vary", "Accept-Encoding"),
        ]);
        assert!(matches!(
            decide(StatusCode::OK, &mut identity, Coding::Identity),
            Decision::VaryOnly
        ));
        assert_eq!(identity.get_all("vary").iter().count(), 1);
    }

    #[test]
    fn rfc9111_4_3_4_a_304_keeps_what_it_cannot_know_about_compressed_bytes() {
        let stored = fields(&[
            ("content-encoding", "br"),
            ("etag", "W/\"v1\""),
            ("vary", "accept-encoding"),
        ]);
        let mut merged = fields(&[
            ("content-encoding", "br"),
            ("etag", "\"v1\""),
            ("vary", "origin"),
        ]);
        keep_after_refresh(&stored, &mut merged);
        assert_eq!(merged["etag"], "W/\"v1\"");
        let vary: Vec<_> = merged.get_all("vary").iter().collect();
        assert_eq!(vary, ["origin", "accept-encoding"]);
        // A new validator (the origin changed its tag) is taken as it is.
        let mut changed = fields(&[("content-encoding", "br"), ("etag", "\"v2\"")]);
        keep_after_refresh(&stored, &mut changed);
        assert_eq!(changed["etag"], "\"v2\"");
        // Uncompressed objects are not touched.
        let plain = fields(&[("etag", "W/\"v1\"")]);
        let mut merged = fields(&[("etag", "\"v1\"")]);
        keep_after_refresh(&plain, &mut merged);
        assert_eq!(merged["etag"], "\"v1\"");
    }

    #[test]
    fn types() {
        for t in [
            "text/html",
            "application/json",
            "application/ld+json",
            "image/svg+xml",
            "application/wasm",
            "font/ttf",
        ] {
            assert!(compressible(t), "{t}");
        }
        for t in [
            "image/png",
            "font/woff2",
            "video/mp4",
            "application/octet-stream",
            "application/zip",
        ] {
            assert!(!compressible(t), "{t}");
        }
    }

    #[test]
    fn every_coding_round_trips_when_fed_in_pieces() {
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("line {i} of text\n").into_bytes())
            .collect();
        for coding in [Coding::Br, Coding::Zstd, Coding::Gzip] {
            let mut enc = Encoder::new(coding).unwrap();
            let mut out = Vec::new();
            for piece in text.chunks(7_001) {
                enc.write(piece).unwrap();
                out.extend_from_slice(&enc.take());
            }
            out.extend_from_slice(&enc.finish().unwrap());
            assert!(out.len() < text.len() / 4, "{coding:?}: {}", out.len());
            let mut back = Vec::new();
            match coding {
                Coding::Br => {
                    brotli::Decompressor::new(&out[..], 4096)
                        .read_to_end(&mut back)
                        .unwrap();
                }
                Coding::Zstd => {
                    back = zstd::stream::decode_all(&out[..]).unwrap();
                }
                Coding::Gzip => {
                    flate2::read::GzDecoder::new(&out[..])
                        .read_to_end(&mut back)
                        .unwrap();
                }
                Coding::Identity => unreachable!(),
            }
            assert_eq!(back, text, "{coding:?}");
        }
    }

    #[test]
    fn decoding_is_bounded_and_knows_its_codings() {
        let text = b"#EXTM3U\n".repeat(1000);
        for coding in [Coding::Gzip, Coding::Br, Coding::Zstd] {
            let mut enc = Encoder::new(coding).unwrap();
            enc.write(&text).unwrap();
            let mut packed = enc.take().to_vec();
            packed.extend_from_slice(&enc.finish().unwrap());
            assert_eq!(
                decode_bounded(coding.as_str(), &packed, 1 << 20).unwrap(),
                text
            );
            assert_eq!(decode_bounded(coding.as_str(), &packed, 100), None);
        }
        assert_eq!(decode_bounded("", b"abc", 3).unwrap(), b"abc");
        assert_eq!(decode_bounded("compress", b"abc", 3), None);
        assert_eq!(decode_bounded("gzip", b"not gzip", 100), None);
    }
}
