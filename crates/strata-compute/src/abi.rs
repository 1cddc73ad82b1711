//! The proxy-wasm ABI 0.2.1 as numbers and bytes: status codes, enum values, and the
//! serialisation of header maps and property paths. No wasmtime here: what the guest and
//! the host exchange, testable (and fuzzable) on its own.
//!
//! Reference: <https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1>, and the
//! Rust SDK (`proxy-wasm` 0.2.x, `hostcalls.rs`), whose callers panic on statuses they do
//! not expect: each host function here answers only the statuses the SDK handles for it.

/// `proxy_status_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
    Unimplemented = 12,
}

impl Status {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// `proxy_action_t`: what a filter's callback asks of the stream.
pub const ACTION_CONTINUE: i32 = 0;
pub const ACTION_PAUSE: i32 = 1;

/// `proxy_map_type_t`.
pub mod map {
    pub const REQUEST_HEADERS: i32 = 0;
    pub const REQUEST_TRAILERS: i32 = 1;
    pub const RESPONSE_HEADERS: i32 = 2;
    pub const RESPONSE_TRAILERS: i32 = 3;
    pub const HTTP_CALL_RESPONSE_HEADERS: i32 = 6;
    pub const HTTP_CALL_RESPONSE_TRAILERS: i32 = 7;
}

/// `proxy_buffer_type_t`.
pub mod buffer {
    pub const REQUEST_BODY: i32 = 0;
    pub const RESPONSE_BODY: i32 = 1;
    pub const HTTP_CALL_RESPONSE_BODY: i32 = 4;
    pub const VM_CONFIGURATION: i32 = 6;
    pub const PLUGIN_CONFIGURATION: i32 = 7;
}

/// `proxy_stream_type_t`.
pub mod stream {
    pub const HTTP_REQUEST: i32 = 0;
    pub const HTTP_RESPONSE: i32 = 1;
}

/// `proxy_log_level_t`.
pub mod log {
    pub const TRACE: i32 = 0;
    pub const DEBUG: i32 = 1;
    pub const INFO: i32 = 2;
    pub const WARN: i32 = 3;
    pub const ERROR: i32 = 4;
    pub const CRITICAL: i32 = 5;
}

/// `proxy_metric_type_t`.
pub mod metric {
    pub const COUNTER: i32 = 0;
    pub const GAUGE: i32 = 1;
    pub const HISTOGRAM: i32 = 2;
}

/// A header map as the ABI carries it: names and values as bytes, in order.
pub type Pairs = Vec<(String, Vec<u8>)>;

/// Serialises pairs: a count, then each name's and value's length (all u32 little
/// endian), then each name and value followed by a NUL.
pub fn encode_pairs(pairs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(n, v)| 10 + n.len() + v.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (name, value) in pairs {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

/// Reads pairs serialised by a guest. `None` for anything malformed: lengths that run past
/// the end, missing NULs, names that are not UTF-8, trailing bytes.
pub fn decode_pairs(bytes: &[u8]) -> Option<Pairs> {
    let count = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    // Each pair takes at least 10 bytes: a guest cannot make us reserve more than it sent.
    if count > bytes.len() / 10 + 1 {
        return None;
    }
    let mut sizes = Vec::with_capacity(count);
    let mut at = 4;
    for _ in 0..count {
        let n = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
        let v = u32::from_le_bytes(bytes.get(at + 4..at + 8)?.try_into().ok()?) as usize;
        sizes.push((n, v));
        at += 8;
    }
    let mut pairs = Vec::with_capacity(count);
    for (n, v) in sizes {
        let name = bytes.get(at..at.checked_add(n)?)?;
        at += n;
        if *bytes.get(at)? != 0 {
            return None;
        }
        at += 1;
        let value = bytes.get(at..at.checked_add(v)?)?;
        at += v;
        if *bytes.get(at)? != 0 {
            return None;
        }
        at += 1;
        pairs.push((std::str::from_utf8(name).ok()?.to_owned(), value.to_vec()));
    }
    (at == bytes.len()).then_some(pairs)
}

/// A property path: its segments joined by NULs (`request\0path`).
pub fn decode_path(bytes: &[u8]) -> Option<Vec<&str>> {
    bytes
        .split(|b| *b == 0)
        .map(|s| std::str::from_utf8(s).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Pairs {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn pairs_round_trip() {
        let p = pairs(&[(":path", "/a?b"), ("x-empty", ""), ("accept", "*/*")]);
        assert_eq!(decode_pairs(&encode_pairs(&p)), Some(p));
        assert_eq!(decode_pairs(&encode_pairs(&[])), Some(vec![]));
    }

    #[test]
    fn pairs_match_the_sdk_layout() {
        // What `proxy_wasm::hostcalls::utils::serialize_map(&[("a", "bc")])` produces.
        let sdk = [1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, b'a', 0, b'b', b'c', 0];
        assert_eq!(decode_pairs(&sdk), Some(pairs(&[("a", "bc")])));
        assert_eq!(encode_pairs(&pairs(&[("a", "bc")])), sdk);
    }

    #[test]
    fn malformed_pairs_are_refused() {
        let good = encode_pairs(&pairs(&[("a", "b")]));
        for cut in 0..good.len() {
            assert_eq!(decode_pairs(&good[..cut]), None, "cut at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(1);
        assert_eq!(decode_pairs(&trailing), None);
        let mut no_nul = good.clone();
        no_nul[13] = b'x';
        assert_eq!(decode_pairs(&no_nul), None);
        // A count of four billion pairs in twelve bytes reserves nothing.
        assert_eq!(decode_pairs(&[255, 255, 255, 255, 0, 0, 0, 0]), None);
        // Lengths that overflow.
        let mut huge = vec![1, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255];
        huge.extend_from_slice(&[0; 4]);
        assert_eq!(decode_pairs(&huge), None);
    }

    #[test]
    fn property_paths_split_on_nul() {
        assert_eq!(decode_path(b"request\0path"), Some(vec!["request", "path"]));
        assert_eq!(decode_path(b"node"), Some(vec!["node"]));
        assert_eq!(decode_path(&[0xff]), None);
    }
}
