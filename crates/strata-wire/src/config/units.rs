//! Human-friendly units in configuration: `"30s"`, `"5m"`, `"512MiB"`.
//! Parsing is delegated to `humantime` and `bytesize`; these wrappers give serde errors that
//! say what was expected.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A duration: `"500ms"`, `"30s"`, `"5m"`, `"1h 30m"`, or an integer number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\", \"5m\", \"500ms\" or a number of seconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                u64::try_from(v)
                    .map(|s| Seconds(Duration::from_secs(s)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds(Duration::from_secs(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                humantime::parse_duration(v.trim())
                    .map(Seconds)
                    .map_err(|e| E::custom(format!("invalid duration '{v}': {e}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// `#[serde(with = "strata_wire::config::duration")]` for a `Duration` field written the way
/// [`Seconds`] is.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        super::Seconds::deserialize(d).map(|s| s.0)
    }
}

/// A size in bytes: `"512MiB"`, `"1GB"`, `"64KiB"`, or an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"512MiB\", \"1GB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_size(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses a size with `bytesize` (`"512MiB"`, `"1 GB"`).
pub fn parse_size(v: &str) -> Result<ByteSize, String> {
    v.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| ByteSize(b.as_u64()))
        .map_err(|e| format!("invalid size '{v}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB").unwrap().0, 512 << 20);
        assert_eq!(parse_size("1GB").unwrap().0, 1_000_000_000);
        assert!(parse_size("lots").is_err());
    }
}
