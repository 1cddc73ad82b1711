//! `[geo]`: where a client's country comes from, for `access.countries` and
//! `access.deny_countries`: a table of networks (checked first, longest prefix wins) and a
//! MaxMind DB file (GeoIP2 or GeoLite2, Country or City). Read at start: a new database
//! file takes a restart.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GeoSection {
    /// A MaxMind DB file (`GeoLite2-Country.mmdb`), loaded into memory at start.
    pub database: Option<PathBuf>,
    /// Network → ISO 3166-1 alpha-2 code (`"203.0.113.0/24" = "DE"`): networks the database
    /// does not know or gets wrong (private ranges, your own PoPs' customers).
    pub networks: BTreeMap<String, String>,
}

/// An ISO 3166-1 alpha-2 code, upper case: two ASCII letters.
pub type CountryCode = [u8; 2];

/// The code of a country no source knows.
pub const UNKNOWN_COUNTRY: CountryCode = *b"XX";

/// `text` as a country code: two ASCII letters, any case.
pub fn country_code(text: &str) -> Option<CountryCode> {
    match text.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
        }
        _ => None,
    }
}

impl GeoSection {
    /// Whether any source of countries is configured.
    pub fn is_configured(&self) -> bool {
        self.database.is_some() || !self.networks.is_empty()
    }

    /// The networks and codes parse, and the database opens as a MaxMind DB.
    pub fn check(&self) -> Result<(), ConfigError> {
        crate::access::country::Countries::from_config(self).map(drop)
    }
}
