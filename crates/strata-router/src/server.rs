//! The DNS server: hickory on UDP and TCP, answering from [`Zone`], steering by the health
//! monitor's latest snapshot (from the bus).
//!
//! hickory answers FORMERR itself to messages whose header decodes but body does not, and
//! drops datagrams shorter than a header. Here: non-queries get NOTIMP, anything but one
//! question FORMERR, EDNS versions above 0 BADVERS (RFC 6891 §6.1.3).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use strata_bus::{Bus, HEALTH_SUBJECT};
use strata_health::{HealthSnapshot, NodeState};
use tokio::net::{TcpListener, UdpSocket};

use crate::config::RouterConfig;
use crate::zone::{Question, Zone};

/// Largest UDP answer offered (RFC 9715's recommendation against fragmentation).
const MAX_UDP_PAYLOAD: u16 = 1232;

/// Each PoP's state, indexed as the zone's PoPs. PoPs absent from the snapshots (not
/// monitored) count as healthy.
#[derive(Clone)]
pub struct PopStates {
    names: Arc<Vec<String>>,
    states: Arc<RwLock<Vec<NodeState>>>,
}

impl PopStates {
    fn new(names: Vec<String>) -> Self {
        let n = names.len();
        Self {
            names: Arc::new(names),
            states: Arc::new(RwLock::new(vec![NodeState::Healthy; n])),
        }
    }

    pub fn get(&self, i: usize) -> NodeState {
        self.states
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(i)
            .copied()
            .unwrap_or(NodeState::Healthy)
    }

    /// Takes a snapshot; logs changes.
    pub fn apply(&self, snapshot: &HealthSnapshot) {
        let mut states = self.states.write().unwrap_or_else(|e| e.into_inner());
        for (i, name) in self.names.iter().enumerate() {
            if let Some(s) = snapshot.state_of(name) {
                if states[i] != s {
                    tracing::info!(pop = %name, from = states[i].as_str(), to = s.as_str(), "dns: PoP state");
                    states[i] = s;
                }
            }
        }
    }
}

struct Handler {
    zone: Arc<Zone>,
    states: PopStates,
}

/// A running router.
pub struct Router {
    pub udp_addr: SocketAddr,
    pub tcp_addr: SocketAddr,
    pub states: PopStates,
    server: Server<Handler>,
    tasks: tokio::task::JoinSet<()>,
}

impl Router {
    /// Binds UDP and TCP on `config.listen` (the same port for both; port 0 picks one),
    /// and follows health snapshots on `bus` (or on `config.nats` when `bus` is `None`,
    /// joined in the background: answers do not wait for NATS).
    pub async fn start(config: &RouterConfig, bus: Option<Bus>) -> std::io::Result<Self> {
        let zone = Arc::new(Zone::new(config).map_err(std::io::Error::other)?);
        let states = PopStates::new(zone.pop_names());
        let (udp, tcp) = bind_pair(config.listen).await?;
        let (udp_addr, tcp_addr) = (udp.local_addr()?, tcp.local_addr()?);
        let mut server = Server::new(Handler {
            zone,
            states: states.clone(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64);

        let mut tasks = tokio::task::JoinSet::new();
        match (bus, &config.nats) {
            (Some(bus), _) => {
                let sub = bus
                    .subscribe_notices(HEALTH_SUBJECT)
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                tasks.spawn(follow(sub, states.clone()));
            }
            // Answers at once, every PoP taken as healthy until the first snapshot: DNS
            // must not go down with NATS.
            (None, Some(url)) => {
                let (url, auth, states) = (url.clone(), config.nats_auth.clone(), states.clone());
                tasks.spawn(async move {
                    let cut_off = "answering without health (every PoP taken as healthy)";
                    let bus = Bus::join_nats(&url, &auth, cut_off).await;
                    match bus.subscribe_notices(HEALTH_SUBJECT).await {
                        Ok(sub) => follow(sub, states).await,
                        Err(e) => tracing::error!(error = %e, "dns: {cut_off}"),
                    }
                });
            }
            (None, None) => tracing::warn!("dns: no bus configured: every PoP is taken as healthy"),
        }
        Ok(Self {
            udp_addr,
            tcp_addr,
            states,
            server,
            tasks,
        })
    }

    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
        let _ = self.server.shutdown_gracefully().await;
    }
}

/// Applies every health snapshot on `sub` to `states`.
async fn follow(mut sub: strata_bus::Subscription, states: PopStates) {
    while let Some(bytes) = sub.next().await {
        match serde_json::from_slice::<HealthSnapshot>(&bytes) {
            Ok(s) => states.apply(&s),
            Err(e) => tracing::warn!(error = %e, "dns: unreadable health snapshot"),
        }
    }
}

/// UDP and TCP sockets on one port.
async fn bind_pair(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        return Ok((UdpSocket::bind(addr).await?, TcpListener::bind(addr).await?));
    }
    // Port 0: take the UDP port the system gives and try TCP on it; a few attempts.
    let mut last = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind(addr).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port pair")))
}

fn fallback(request: &Request, rcode: ResponseCode) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = rcode;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

/// The client subnet of a question: (address cut to the prefix, prefix length, from ECS).
fn client_of(request: &Request) -> (IpAddr, u8, Option<ClientSubnet>) {
    let ecs = request
        .edns
        .as_ref()
        .and_then(|e| match e.option(EdnsCode::Subnet) {
            Some(EdnsOption::Subnet(cs)) => Some(*cs),
            _ => None,
        });
    let full = |ip: IpAddr| if ip.is_ipv4() { 32 } else { 128 };
    match ecs {
        // Source 0: the client asks that its address not be used (RFC 7871 §7.1.2).
        Some(cs) if cs.source_prefix() > 0 => {
            let source = cs.source_prefix().min(full(cs.addr()));
            let addr = ipnet::IpNet::new(cs.addr(), source)
                .map(|n| n.trunc().addr())
                .unwrap_or(cs.addr());
            (addr, source, Some(cs))
        }
        other => {
            let ip = request.src().ip();
            (ip, full(ip), other)
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let (client, source, ecs) = client_of(request);
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            e
        });
        let md = &request.metadata;
        let early = if md.message_type != MessageType::Query || md.op_code != OpCode::Query {
            Some(ResponseCode::NotImp)
        } else if request.queries.queries().len() != 1 {
            Some(ResponseCode::FormErr)
        } else if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            Some(ResponseCode::BADVERS)
        } else {
            None
        };
        if let Some(rcode) = early {
            let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
            let msg = builder.error_msg(md, rcode);
            return response
                .send_response(msg)
                .await
                .unwrap_or_else(|_| fallback(request, ResponseCode::ServFail));
        }
        let query = &request.queries.queries()[0];
        let question = Question {
            name: query.name().clone(),
            qtype: query.query_type(),
            qclass: query.query_class(),
            client,
            source,
        };
        let answer = self.zone.answer(&question, |p| self.states.get(p));
        // Echo ECS with the scope this answer holds for (RFC 7871 §7.2.1).
        let edns = edns.map(|mut e| {
            if let Some(cs) = ecs {
                let scope = if cs.source_prefix() == 0 {
                    0
                } else {
                    answer.scope
                };
                e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
                    cs.addr(),
                    cs.source_prefix(),
                    scope,
                )));
            }
            e
        });
        let mut metadata = Metadata::response_from_request(md);
        metadata.authoritative = answer.rcode != ResponseCode::Refused;
        metadata.recursion_available = false;
        metadata.response_code = answer.rcode;
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let msg = builder.build(
            metadata,
            answer.answers.iter(),
            answer.authority.iter(),
            answer.soa.iter(),
            answer.additionals.iter(),
        );
        match response.send_response(msg).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "dns: sending the answer");
                fallback(request, ResponseCode::ServFail)
            }
        }
    }
}
