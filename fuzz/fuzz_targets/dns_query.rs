//! Any datagram → decode (hickory) → the router's answer logic → encode. Nothing may panic;
//! hickory answers undecodable messages itself, so everything that decodes reaches `Zone`.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use hickory_server::proto::op::{Message, MessageType, OpCode};
use hickory_server::proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use libfuzzer_sys::fuzz_target;
use strata_health::NodeState;
use strata_router::zone::{Question, Zone};
use strata_router::RouterConfig;

const CONFIG: &str = r#"
listen = "127.0.0.1:0"
zone = "cdn.test"
hosts = ["@", "www", "a.b"]
[[nameserver]]
name = "ns1.cdn.test"
addresses = ["192.0.2.53", "2001:db8::53"]
[[pop]]
name = "x"
addresses = ["192.0.2.1", "2001:db8::1"]
weight = 30
[[pop]]
name = "y"
addresses = ["198.51.100.1"]
[[location]]
name = "l"
prefixes = ["10.0.0.0/8", "10.1.0.0/16", "2001:db8::/32"]
latency = { x = 1, y = 2 }
"#;

fn zone() -> &'static Zone {
    static ZONE: OnceLock<Zone> = OnceLock::new();
    ZONE.get_or_init(|| Zone::new(&RouterConfig::from_toml(CONFIG).unwrap()).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::from_vec(data) else { return };
    let Some(q) = msg.queries.first() else { return };
    let (client, source) = match msg.edns.as_ref().and_then(|e| e.option(EdnsCode::Subnet)) {
        Some(EdnsOption::Subnet(cs)) => (cs.addr(), cs.source_prefix()),
        _ => (IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), 32),
    };
    let question = Question {
        name: q.name().into(),
        qtype: q.query_type(),
        qclass: q.query_class(),
        client,
        source,
    };
    let states = [NodeState::Healthy, NodeState::Unhealthy, NodeState::Degraded];
    let pick = data.len() % 3;
    let answer = zone().answer(&question, |p| states[(p + pick) % 3]);
    let mut out = Message::new(msg.metadata.id, MessageType::Response, OpCode::Query);
    out.add_query(q.clone());
    out.add_answers(answer.answers);
    out.add_authorities(answer.authority);
    out.add_authorities(answer.soa);
    out.add_additionals(answer.additionals);
    let _ = out.to_vec();
});
