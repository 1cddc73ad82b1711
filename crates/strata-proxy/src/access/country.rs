//! A client's country, for the access rules: the `[geo]` networks first (longest prefix
//! wins), then the MaxMind DB when one is configured, else [`UNKNOWN_COUNTRY`] (`XX`).

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{country_code, ConfigError, CountryCode, GeoSection, UNKNOWN_COUNTRY};

pub struct Countries {
    /// Longest prefixes first.
    networks: Vec<(IpNet, CountryCode)>,
    database: Option<maxminddb::Reader<Vec<u8>>>,
}

impl std::fmt::Debug for Countries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Countries")
            .field("networks", &self.networks.len())
            .field("database", &self.database.is_some())
            .finish()
    }
}

// === impl Countries ===

impl Countries {
    /// `None` without any source; errors name the key (`geo.networks."10.0.0.0/8"`,
    /// `geo.database`).
    pub fn from_config(geo: &GeoSection) -> Result<Option<Self>, ConfigError> {
        if !geo.is_configured() {
            return Ok(None);
        }
        let mut networks = Vec::with_capacity(geo.networks.len());
        for (net, code) in &geo.networks {
            let at = format!("geo.networks.\"{net}\"");
            let net =
                crate::config::parse_network(net).map_err(|why| ConfigError::new(&at, why))?;
            let code = country_code(code)
                .ok_or_else(|| ConfigError::new(&at, "a two-letter country code (ISO 3166-1)"))?;
            networks.push((net, code));
        }
        networks.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        let database = match &geo.database {
            None => None,
            Some(path) => Some(maxminddb::Reader::open_readfile(path).map_err(|e| {
                ConfigError::new("geo.database", format!("{}: {e}", path.display()))
            })?),
        };
        Ok(Some(Self { networks, database }))
    }

    /// The country of `client`; `XX` when no source knows it.
    pub fn of(&self, client: IpAddr) -> CountryCode {
        // An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let client = client.to_canonical();
        if let Some((_, code)) = self.networks.iter().find(|(net, _)| net.contains(&client)) {
            return *code;
        }
        let Some(db) = &self.database else {
            return UNKNOWN_COUNTRY;
        };
        db.lookup(client)
            .ok()
            .and_then(|found| found.decode::<maxminddb::geoip2::Country>().ok().flatten())
            .and_then(|record| record.country.iso_code.and_then(country_code))
            .unwrap_or(UNKNOWN_COUNTRY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(networks: &[(&str, &str)]) -> GeoSection {
        GeoSection {
            database: None,
            networks: networks
                .iter()
                .map(|(n, c)| (n.to_string(), c.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_longest_network_wins_and_unknown_clients_are_xx() {
        let c = Countries::from_config(&geo(&[("10.0.0.0/8", "de"), ("10.1.0.0/16", "FR")]))
            .unwrap()
            .unwrap();
        assert_eq!(&c.of("10.2.3.4".parse().unwrap()), b"DE");
        assert_eq!(&c.of("10.1.3.4".parse().unwrap()), b"FR");
        assert_eq!(&c.of("::ffff:10.1.3.4".parse().unwrap()), b"FR");
        assert_eq!(c.of("192.0.2.1".parse().unwrap()), UNKNOWN_COUNTRY);
    }

    #[test]
    fn bad_entries_name_their_key() {
        let e = Countries::from_config(&geo(&[("10.0.0.0/8", "Germany")])).unwrap_err();
        assert_eq!(e.path, "geo.networks.\"10.0.0.0/8\"");
        let e = Countries::from_config(&geo(&[("ten", "DE")])).unwrap_err();
        assert_eq!(e.path, "geo.networks.\"ten\"");
        let missing = GeoSection {
            database: Some("/nonexistent/GeoLite2-Country.mmdb".into()),
            ..GeoSection::default()
        };
        let e = Countries::from_config(&missing).unwrap_err();
        assert_eq!(e.path, "geo.database");
        assert!(Countries::from_config(&GeoSection::default())
            .unwrap()
            .is_none());
    }
}
