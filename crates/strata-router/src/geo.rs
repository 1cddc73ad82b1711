//! Where a client is: the longest configured prefix that contains its address (from EDNS
//! Client Subnet, else the resolver's address), and how far the answer may be cached.
//!
//! The ECS scope (RFC 7871 §7.2.1) tells resolvers which clients an answer fits. It is the
//! matched prefix's length, unless the table holds a longer prefix inside it (clients
//! there are elsewhere): then it is the question's own source length. No match: the answer
//! fits the whole space only if the table has no prefix of that family at all.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// One matched location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    /// Index into the configured locations; `None` when no prefix matched.
    pub location: Option<usize>,
    /// The scope prefix length to answer with (before capping at the source length).
    pub scope: u8,
}

/// Networks of one prefix length → (location, has a longer prefix inside).
type ByNetwork = HashMap<IpNet, (usize, bool)>;

#[derive(Debug, Default)]
pub struct PrefixTable {
    /// Per family (0 = v4, 1 = v6) and prefix length: network → (location, has a longer
    /// prefix inside).
    by_len: [HashMap<u8, ByNetwork>; 2],
    /// Prefix lengths present, longest first, per family.
    lengths: [Vec<u8>; 2],
}

fn family(ip: &IpAddr) -> usize {
    usize::from(ip.is_ipv6())
}

impl PrefixTable {
    /// `entries`: (network, location index). A network listed twice keeps the first.
    pub fn new(entries: impl IntoIterator<Item = (IpNet, usize)>) -> Self {
        let entries: Vec<(IpNet, usize)> =
            entries.into_iter().map(|(n, l)| (n.trunc(), l)).collect();
        let mut t = PrefixTable::default();
        for (net, loc) in &entries {
            let nested = entries
                .iter()
                .any(|(other, _)| other.prefix_len() > net.prefix_len() && net.contains(other));
            let f = family(&net.addr());
            t.by_len[f]
                .entry(net.prefix_len())
                .or_default()
                .entry(*net)
                .or_insert((*loc, nested));
        }
        for f in 0..2 {
            let mut lens: Vec<u8> = t.by_len[f].keys().copied().collect();
            lens.sort_unstable_by(|a, b| b.cmp(a));
            t.lengths[f] = lens;
        }
        t
    }

    /// The location of `addr` (already cut to the question's source prefix `source`).
    pub fn locate(&self, addr: IpAddr, source: u8) -> Located {
        let f = family(&addr);
        for &len in &self.lengths[f] {
            // A prefix longer than what the client disclosed cannot be matched.
            if len > source {
                continue;
            }
            let Ok(net) = IpNet::new(addr, len) else {
                continue;
            };
            if let Some(&(location, nested)) =
                self.by_len[f].get(&len).and_then(|m| m.get(&net.trunc()))
            {
                return Located {
                    location: Some(location),
                    scope: if nested { source } else { len },
                };
            }
        }
        Located {
            location: None,
            scope: if self.lengths[f].is_empty() {
                0
            } else {
                source
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> PrefixTable {
        PrefixTable::new([
            ("10.0.0.0/8".parse().unwrap(), 0),
            ("10.1.0.0/16".parse().unwrap(), 1),
            ("2001:db8::/32".parse().unwrap(), 2),
        ])
    }

    fn at(t: &PrefixTable, ip: &str, source: u8) -> Located {
        t.locate(ip.parse().unwrap(), source)
    }

    #[test]
    fn the_longest_matching_prefix_wins() {
        let t = table();
        assert_eq!(
            at(&t, "10.1.2.0", 24),
            Located {
                location: Some(1),
                scope: 16
            }
        );
        assert_eq!(
            at(&t, "2001:db8:1::", 56),
            Located {
                location: Some(2),
                scope: 32
            }
        );
    }

    #[test]
    fn a_match_with_longer_prefixes_inside_fits_only_the_clients_subnet() {
        assert_eq!(
            at(&table(), "10.2.3.0", 24),
            Located {
                location: Some(0),
                scope: 24
            }
        );
    }

    #[test]
    fn prefixes_longer_than_the_disclosed_source_are_not_matched() {
        // A /8 question cannot be placed in 10.1.0.0/16.
        assert_eq!(
            at(&table(), "10.0.0.0", 8),
            Located {
                location: Some(0),
                scope: 8
            }
        );
    }

    #[test]
    fn no_match_scopes_to_the_source_unless_the_family_has_no_prefixes() {
        assert_eq!(
            at(&table(), "192.0.2.0", 24),
            Located {
                location: None,
                scope: 24
            }
        );
        let v4_only = PrefixTable::new([("10.0.0.0/8".parse().unwrap(), 0)]);
        assert_eq!(
            at(&v4_only, "2001:db8::", 56),
            Located {
                location: None,
                scope: 0
            }
        );
    }
}
