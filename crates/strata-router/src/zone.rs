//! Authoritative answers for the CDN zone, from a decoded question. No IO: the server
//! decodes and encodes, health is passed in; the fuzz target drives this with arbitrary
//! decoded messages.
//!
//! - A host name (`hosts`): A/AAAA of the PoP chosen for the client ([`crate::steer`]),
//!   TTL `ttl`; other types NODATA (NOERROR, SOA in authority).
//! - The apex also answers SOA and NS (glue in additional for in-zone nameservers).
//! - In-zone nameserver names answer their glue.
//! - Other names in the zone: NXDOMAIN with the SOA (RFC 2308), except names with hosts
//!   below them (empty non-terminals: NODATA).
//! - Names outside the zone, or classes other than IN: REFUSED.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_server::proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use strata_health::NodeState;

use crate::config::{fqdn, RouterConfig};
use crate::geo::PrefixTable;
use crate::steer::{Pop, Steering};

/// One question, decoded.
#[derive(Debug, Clone)]
pub struct Question {
    pub name: LowerName,
    pub qtype: RecordType,
    pub qclass: DNSClass,
    /// Where the client is: ECS address (cut to its source prefix), else the resolver's.
    pub client: IpAddr,
    /// Bits of `client` that are meaningful (ECS source length, or the full address).
    pub source: u8,
}

/// The answer, ready to encode.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    /// NS records in the authority section (positive answers).
    pub authority: Vec<Record>,
    /// SOA in the authority section (negative answers).
    pub soa: Vec<Record>,
    pub additionals: Vec<Record>,
    /// ECS scope prefix length for the answer.
    pub scope: u8,
    /// The PoP answered, for logs and tests.
    pub pop: Option<String>,
}

pub struct Zone {
    origin: LowerName,
    ttl: u32,
    apex_host: bool,
    any_host: bool,
    hosts: HashSet<LowerName>,
    soa: Record,
    ns: Vec<Record>,
    glue: HashMap<LowerName, Vec<IpAddr>>,
    table: PrefixTable,
    steering: Steering,
}

impl Zone {
    pub fn new(config: &RouterConfig) -> Result<Self, String> {
        let name = |s: &str| Name::from_ascii(fqdn(s)).map_err(|e| format!("{s}: {e}"));
        let origin = name(&config.zone)?;
        let ttl = u32::try_from(config.ttl.0.as_secs()).unwrap_or(30);
        let mut hosts = HashSet::new();
        for h in &config.hosts {
            if h != "@" && h != "*" {
                hosts.insert(LowerName::new(&name(&format!(
                    "{h}.{}",
                    config.zone_fqdn()
                ))?));
            }
        }
        let nameservers: Vec<Name> = if config.nameservers.is_empty() {
            vec![name(&format!("ns1.{}", config.zone_fqdn()))?]
        } else {
            config
                .nameservers
                .iter()
                .map(|n| name(&n.name))
                .collect::<Result<_, _>>()?
        };
        let hostmaster = match &config.hostmaster {
            Some(h) => name(h)?,
            None => name(&format!("hostmaster.{}", config.zone_fqdn()))?,
        };
        // The serial follows the router's start: secondaries see a change after a restart.
        let serial = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_secs() as u32);
        let soa = Record::from_rdata(
            origin.clone(),
            ttl,
            RData::SOA(SOA::new(
                nameservers[0].clone(),
                hostmaster,
                serial,
                3600,
                600,
                86_400,
                // Negative answers are cached no longer than positive ones (RFC 2308 §5).
                ttl,
            )),
        );
        let ns = nameservers
            .iter()
            .map(|n| Record::from_rdata(origin.clone(), ttl, RData::NS(NS(n.clone()))))
            .collect();
        let mut glue = HashMap::new();
        for n in &config.nameservers {
            if !n.addresses.is_empty() {
                glue.insert(LowerName::new(&name(&n.name)?), n.addresses.clone());
            }
        }
        let latency = config
            .locations
            .iter()
            .map(|l| {
                config
                    .pops
                    .iter()
                    .map(|p| {
                        l.latency
                            .get(&p.name)
                            .copied()
                            .unwrap_or(config.unlisted_latency)
                    })
                    .collect()
            })
            .collect();
        let default_location = match &config.default_location {
            Some(d) => config.locations.iter().position(|l| &l.name == d),
            None => (!config.locations.is_empty()).then_some(0),
        };
        let table = PrefixTable::new(
            config
                .locations
                .iter()
                .enumerate()
                .flat_map(|(i, l)| l.prefixes.iter().map(move |p| (*p, i))),
        );
        Ok(Self {
            origin: LowerName::new(&origin),
            ttl,
            apex_host: config.hosts.iter().any(|h| h == "@"),
            any_host: config.hosts.iter().any(|h| h == "*"),
            hosts,
            soa,
            ns,
            glue,
            table,
            steering: Steering {
                pops: config
                    .pops
                    .iter()
                    .map(|p| Pop {
                        name: p.name.clone(),
                        addresses: p.addresses.clone(),
                        weight: p.weight,
                    })
                    .collect(),
                latency,
                default_location,
                degraded_penalty: config.degraded_penalty,
            },
        })
    }

    /// PoP names, in the order `health` is indexed by.
    pub fn pop_names(&self) -> Vec<String> {
        self.steering.pops.iter().map(|p| p.name.clone()).collect()
    }

    /// Whether a name is in this zone.
    pub fn contains(&self, name: &LowerName) -> bool {
        self.origin.zone_of(name)
    }

    /// The answer to `q`; `health(pop index)`.
    pub fn answer(&self, q: &Question, health: impl Fn(usize) -> NodeState) -> Answer {
        if q.qclass != DNSClass::IN || !self.contains(&q.name) {
            return Answer {
                rcode: ResponseCode::Refused,
                ..Answer::default()
            };
        }
        let mut a = Answer::default();
        let apex = q.name == self.origin;
        let is_host =
            (apex && self.apex_host) || (!apex && self.any_host) || self.hosts.contains(&q.name);
        if apex {
            match q.qtype {
                RecordType::SOA => a.answers.push(self.soa.clone()),
                RecordType::NS => {
                    a.answers = self.ns.clone();
                    a.additionals = self.glue_records();
                }
                _ => {}
            }
        }
        if let Some(addrs) = self.glue.get(&q.name) {
            let name = Name::from(&q.name);
            a.answers.extend(
                addrs
                    .iter()
                    .filter_map(|ip| self.address(&name, *ip, q.qtype)),
            );
        } else if is_host && matches!(q.qtype, RecordType::A | RecordType::AAAA | RecordType::ANY) {
            self.steer(q, &health, &mut a);
        }
        if a.answers.is_empty() {
            let exists = apex
                || is_host
                || self.glue.contains_key(&q.name)
                || self.hosts.iter().any(|h| q.name.zone_of(h));
            if !exists {
                a.rcode = ResponseCode::NXDomain;
            }
            a.soa.push(self.soa.clone());
        } else if !matches!(q.qtype, RecordType::NS) {
            a.authority = self.ns.clone();
        }
        a
    }

    fn steer(&self, q: &Question, health: &impl Fn(usize) -> NodeState, a: &mut Answer) {
        let located = self.table.locate(q.client, q.source);
        // Weights draw per client subnet: a /24 (IPv4) or /56 (IPv6) at most.
        let key_len = q.source.min(if q.client.is_ipv4() { 24 } else { 56 });
        let key = ipnet::IpNet::new(q.client, key_len)
            .map(|n| n.trunc().to_string())
            .unwrap_or_default();
        let Some(choice) = self
            .steering
            .choose(located.location, key.as_bytes(), health)
        else {
            return;
        };
        let pop = &self.steering.pops[choice.pop];
        let name = Name::from(&q.name);
        a.answers.extend(
            pop.addresses
                .iter()
                .filter_map(|ip| self.address(&name, *ip, q.qtype)),
        );
        a.scope = if choice.weighted {
            q.source
        } else {
            located.scope.min(q.source)
        };
        a.pop = Some(pop.name.clone());
    }

    fn address(&self, name: &Name, ip: IpAddr, qtype: RecordType) -> Option<Record> {
        let rdata = match (ip, qtype) {
            (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(v4)),
            (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(v6)),
            _ => return None,
        };
        Some(Record::from_rdata(name.clone(), self.ttl, rdata))
    }

    fn glue_records(&self) -> Vec<Record> {
        self.glue
            .iter()
            .flat_map(|(n, ips)| {
                let name = Name::from(n);
                ips.iter()
                    .filter_map(move |ip| self.address(&name, *ip, RecordType::ANY))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use NodeState::*;

    const CONFIG: &str = r#"
listen = "127.0.0.1:0"
zone = "cdn.test"
hosts = ["@", "www", "video.eu"]
[[nameserver]]
name = "ns1.cdn.test"
addresses = ["192.0.2.53"]
[[pop]]
name = "fra"
addresses = ["192.0.2.1", "2001:db8::1"]
[[pop]]
name = "nyc"
addresses = ["198.51.100.1"]
[[location]]
name = "eu"
prefixes = ["10.0.0.0/8"]
latency = { fra = 10, nyc = 90 }
[[location]]
name = "us"
prefixes = ["172.16.0.0/12"]
latency = { fra = 90, nyc = 10 }
"#;

    fn zone() -> Zone {
        Zone::new(&RouterConfig::from_toml(CONFIG).unwrap()).unwrap()
    }

    fn q(name: &str, qtype: RecordType, client: &str, source: u8) -> Question {
        Question {
            name: LowerName::new(&Name::from_ascii(name).unwrap()),
            qtype,
            qclass: DNSClass::IN,
            client: client.parse().unwrap(),
            source,
        }
    }

    fn ips(a: &Answer) -> Vec<String> {
        a.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(v) => Some(v.0.to_string()),
                RData::AAAA(v) => Some(v.0.to_string()),
                _ => None,
            })
            .collect()
    }

    const UP: fn(usize) -> NodeState = |_| Healthy;

    #[test]
    fn a_host_answers_the_pop_of_the_clients_location_with_the_configured_ttl() {
        let z = zone();
        let eu = z.answer(&q("www.cdn.test.", RecordType::A, "10.1.2.0", 24), UP);
        assert_eq!(
            (ips(&eu), eu.pop.as_deref()),
            (vec!["192.0.2.1".into()], Some("fra"))
        );
        assert_eq!(eu.answers[0].ttl, 30);
        assert_eq!(eu.scope, 8);
        assert_eq!(eu.rcode, ResponseCode::NoError);
        let us = z.answer(&q("www.cdn.test.", RecordType::A, "172.16.5.0", 24), UP);
        assert_eq!(ips(&us), vec!["198.51.100.1"]);
        let v6 = z.answer(&q("cdn.test.", RecordType::AAAA, "10.9.9.9", 32), UP);
        assert_eq!(ips(&v6), vec!["2001:db8::1"]);
    }

    #[test]
    fn an_unhealthy_pop_leaves_the_answers_for_the_next_nearest() {
        let z = zone();
        let a = z.answer(&q("www.cdn.test.", RecordType::A, "10.1.2.0", 24), |p| {
            if p == 0 {
                Unhealthy
            } else {
                Healthy
            }
        });
        assert_eq!(a.pop.as_deref(), Some("nyc"));
    }

    #[test]
    fn a_type_the_host_lacks_is_nodata_with_the_soa() {
        // nyc has no IPv6 address.
        let a = zone().answer(&q("www.cdn.test.", RecordType::AAAA, "172.16.0.0", 16), UP);
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert!(a.answers.is_empty());
        assert_eq!(a.soa[0].record_type(), RecordType::SOA);
        let mx = zone().answer(&q("www.cdn.test.", RecordType::MX, "10.0.0.0", 8), UP);
        assert_eq!(
            (mx.rcode, mx.answers.len(), mx.soa.len()),
            (ResponseCode::NoError, 0, 1)
        );
    }

    #[test]
    fn an_unknown_name_in_the_zone_is_nxdomain_with_the_soa_rfc2308() {
        let a = zone().answer(&q("nope.cdn.test.", RecordType::A, "10.0.0.0", 8), UP);
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        assert_eq!(a.soa.len(), 1);
        // The SOA minimum (negative TTL) is the answers' TTL.
        let RData::SOA(soa) = &a.soa[0].data else {
            panic!()
        };
        assert_eq!(soa.minimum, 30);
    }

    #[test]
    fn an_empty_non_terminal_is_nodata_not_nxdomain() {
        let a = zone().answer(&q("eu.cdn.test.", RecordType::A, "10.0.0.0", 8), UP);
        assert_eq!((a.rcode, a.answers.len()), (ResponseCode::NoError, 0));
    }

    #[test]
    fn the_apex_answers_soa_and_ns_with_glue() {
        let z = zone();
        let soa = z.answer(&q("cdn.test.", RecordType::SOA, "10.0.0.0", 8), UP);
        assert_eq!(soa.answers[0].record_type(), RecordType::SOA);
        let ns = z.answer(&q("cdn.test.", RecordType::NS, "10.0.0.0", 8), UP);
        assert_eq!(ns.answers[0].record_type(), RecordType::NS);
        assert_eq!(
            ips(&Answer {
                answers: ns.additionals,
                ..Answer::default()
            }),
            vec!["192.0.2.53"]
        );
        let glue = z.answer(&q("ns1.cdn.test.", RecordType::A, "10.0.0.0", 8), UP);
        assert_eq!(ips(&glue), vec!["192.0.2.53"]);
    }

    #[test]
    fn names_outside_the_zone_and_other_classes_are_refused() {
        let z = zone();
        let out = z.answer(&q("example.com.", RecordType::A, "10.0.0.0", 8), UP);
        assert_eq!(out.rcode, ResponseCode::Refused);
        let mut chaos = q("cdn.test.", RecordType::TXT, "10.0.0.0", 8);
        chaos.qclass = DNSClass::CH;
        assert_eq!(z.answer(&chaos, UP).rcode, ResponseCode::Refused);
    }
}
