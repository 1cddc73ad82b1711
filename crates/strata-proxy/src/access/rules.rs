//! Who may ask: client networks, methods, and the page a request comes from (hotlink
//! protection). Pure checks on facts of the request.

use std::net::IpAddr;

use http::{HeaderValue, Method, Uri};
use ipnet::IpNet;

use super::Refusal;
use crate::config::{CountryCode, UNKNOWN_COUNTRY};

/// A service's or rule's access rules. Empty lists allow everything.
#[derive(Debug, Default)]
pub struct Rules {
    /// When not empty, only clients in these networks.
    pub allow: Vec<IpNet>,
    /// Never these (checked before `allow`: a denied address inside an allowed network
    /// stays denied).
    pub deny: Vec<IpNet>,
    /// When not empty, only clients from these countries (`XX`: unknown).
    pub countries: Vec<CountryCode>,
    /// Never these countries (checked before `countries`).
    pub deny_countries: Vec<CountryCode>,
    /// When not empty, only these methods (others are answered 405).
    pub methods: Vec<Method>,
    /// When not empty, `Referer` must name one of these hosts (`example.com`, or
    /// `*.example.com` for its subdomains).
    pub referrers: Vec<String>,
    /// A request without `Referer` (typed in, privacy settings) passes the referrer check.
    pub allow_no_referrer: bool,
}

impl Rules {
    /// `country`: the client's, looked up by the caller when countries are checked (an
    /// unknown one is `XX`; `None` counts as unknown).
    pub fn check(
        &self,
        client: IpAddr,
        country: Option<CountryCode>,
        method: &Method,
        referer: Option<&HeaderValue>,
    ) -> Result<(), Refusal> {
        if self.deny.iter().any(|n| n.contains(&client))
            || (!self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&client)))
        {
            return Err(Refusal::Network);
        }
        let country = country.unwrap_or(UNKNOWN_COUNTRY);
        if self.deny_countries.contains(&country)
            || (!self.countries.is_empty() && !self.countries.contains(&country))
        {
            return Err(Refusal::Country);
        }
        if !self.methods.is_empty() && !self.methods.contains(method) {
            let names: Vec<&str> = self.methods.iter().map(|m| m.as_str()).collect();
            // Method names are tokens: a valid header value.
            let allow = HeaderValue::from_str(&names.join(", "))
                .unwrap_or(HeaderValue::from_static("GET, HEAD"));
            return Err(Refusal::Method(allow));
        }
        if !self.referrers.is_empty() {
            match referer {
                None if self.allow_no_referrer => {}
                None => return Err(Refusal::Referrer),
                Some(value) => {
                    let host = referrer_host(value).ok_or(Refusal::Referrer)?;
                    if !self.referrers.iter().any(|p| host_matches(p, &host)) {
                        return Err(Refusal::Referrer);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The host of a `Referer` (an absolute URI), lower case, without a trailing dot.
fn referrer_host(value: &HeaderValue) -> Option<String> {
    let uri: Uri = value.to_str().ok()?.parse().ok()?;
    let host = uri.host()?;
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(domain) => {
            host.len() > domain.len() + 1
                && host.ends_with(domain)
                && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
        }
        None => pattern == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn denied_countries_beat_allowed_ones_and_unknown_is_xx() {
        let rules = Rules {
            countries: vec![*b"DE", *b"FR", *b"XX"],
            deny_countries: vec![*b"FR"],
            ..Rules::default()
        };
        let check =
            |c: Option<&[u8; 2]>| rules.check(ip("192.0.2.1"), c.copied(), &Method::GET, None);
        assert!(check(Some(b"DE")).is_ok());
        assert_eq!(check(Some(b"FR")), Err(Refusal::Country));
        assert_eq!(check(Some(b"US")), Err(Refusal::Country));
        assert!(check(None).is_ok(), "unknown is XX, listed here");
        let strict = Rules {
            countries: vec![*b"DE"],
            ..Rules::default()
        };
        assert_eq!(
            strict.check(ip("192.0.2.1"), None, &Method::GET, None),
            Err(Refusal::Country)
        );
    }

    #[test]
    fn deny_beats_allow_and_allow_limits_to_its_networks() {
        let rules = Rules {
            allow: vec!["10.0.0.0/8".parse().unwrap()],
            deny: vec!["10.9.0.0/16".parse().unwrap()],
            ..Rules::default()
        };
        assert!(rules
            .check(ip("10.1.2.3"), None, &Method::GET, None)
            .is_ok());
        assert_eq!(
            rules.check(ip("10.9.2.3"), None, &Method::GET, None),
            Err(Refusal::Network)
        );
        assert_eq!(
            rules.check(ip("192.0.2.1"), None, &Method::GET, None),
            Err(Refusal::Network)
        );
    }

    #[test]
    fn methods_limit_what_may_be_asked() {
        let rules = Rules {
            methods: vec![Method::GET, Method::HEAD],
            ..Rules::default()
        };
        assert!(rules
            .check(ip("192.0.2.1"), None, &Method::HEAD, None)
            .is_ok());
        assert_eq!(
            rules.check(ip("192.0.2.1"), None, &Method::POST, None),
            Err(Refusal::Method(HeaderValue::from_static("GET, HEAD")))
        );
    }

    #[test]
    fn hotlinks_from_other_sites_are_refused() {
        let rules = Rules {
            referrers: vec!["example.com".into(), "*.example.com".into()],
            allow_no_referrer: true,
            ..Rules::default()
        };
        let check = |r: Option<&str>| {
            let v = r.map(|r| HeaderValue::from_str(r).unwrap());
            rules.check(ip("192.0.2.1"), None, &Method::GET, v.as_ref())
        };
        assert!(check(Some("https://example.com/page")).is_ok());
        assert!(check(Some("https://www.Example.com./page")).is_ok());
        assert!(check(None).is_ok());
        assert_eq!(check(Some("https://evil.com/")), Err(Refusal::Referrer));
        assert_eq!(
            check(Some("https://notexample.com/")),
            Err(Refusal::Referrer)
        );
        assert_eq!(
            check(Some("https://example.com.evil.com/")),
            Err(Refusal::Referrer)
        );
        assert_eq!(check(Some("not a url")), Err(Refusal::Referrer));
        let strict = Rules {
            allow_no_referrer: false,
            ..rules
        };
        assert_eq!(
            strict.check(ip("192.0.2.1"), None, &Method::GET, None),
            Err(Refusal::Referrer)
        );
    }
}
