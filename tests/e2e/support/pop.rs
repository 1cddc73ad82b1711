//! Several nodes that know each other: a PoP's ring and parent shields, all in-process on
//! 127.0.0.1:0. Sockets are bound first so each node's configuration can name the others.

use strata_proxy::clock::Clock;
use strata_proxy::config::{NodeConfig, PeerConfig, Role};
use strata_proxy::Listeners;

use super::edge::{Edge, EdgeBuilder};

/// Adjusts one node's configuration, given the HTTP URLs of the whole group.
type Tweak = Box<dyn Fn(&mut NodeConfig, &[String])>;

/// Builder for a group of nodes sharing an origin.
pub struct PopBuilder {
    origin: String,
    names: Vec<String>,
    ring: bool,
    role: Role,
    parents: Vec<String>,
    tweak: Tweak,
    clock: Clock,
}

impl PopBuilder {
    /// Nodes `names` in front of `origin`; a ring unless [`PopBuilder::no_ring`].
    pub fn new(origin: &str, names: &[&str]) -> Self {
        Self {
            origin: origin.to_string(),
            names: names.iter().map(|n| n.to_string()).collect(),
            ring: true,
            role: Role::Edge,
            parents: Vec::new(),
            tweak: Box::new(|_, _| {}),
            clock: Clock::system(),
        }
    }

    /// Independent nodes (no ring between them).
    pub fn no_ring(mut self) -> Self {
        self.ring = false;
        self
    }

    /// One clock for every node (a manual one: time moves only when the test says so).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn shields(mut self) -> Self {
        self.role = Role::Shield;
        self
    }

    /// Parent shields by URL, primary first.
    pub fn parents(mut self, urls: &[String]) -> Self {
        self.parents = urls.to_vec();
        self
    }

    /// Adjusts each node's configuration; gets the HTTP URLs of every node of the group.
    pub fn config(mut self, f: impl Fn(&mut NodeConfig, &[String]) + 'static) -> Self {
        self.tweak = Box::new(f);
        self
    }

    pub async fn start(self) -> Vec<Edge> {
        let mut configs = Vec::new();
        let mut listeners = Vec::new();
        for name in &self.names {
            let mut config = NodeConfig::single_origin(&self.origin);
            config.node.name = name.clone();
            config.node.role = self.role;
            config.node.pop = Some("pop-test".into());
            config.listen.http = vec!["127.0.0.1:0".parse().expect("addr")];
            config.listen.admin = Some("127.0.0.1:0".parse().expect("addr"));
            config.log.access = "off".into();
            config.cache.size.0 = 64 << 20;
            config.cache.max_object_size.0 = 16 << 20;
            config.parents.shields = self.parents.clone();
            listeners.push(Listeners::bind(&config).expect("bind"));
            configs.push(config);
        }
        let peers: Vec<PeerConfig> = self
            .names
            .iter()
            .zip(&listeners)
            .map(|(name, l)| PeerConfig {
                name: name.clone(),
                url: format!("http://{}", l.http_addrs()[0]),
                weight: 1,
            })
            .collect();
        let urls: Vec<String> = peers.iter().map(|p| p.url.clone()).collect();
        let mut nodes = Vec::new();
        for (mut config, listeners) in configs.into_iter().zip(listeners) {
            if self.ring {
                config.ring.peers = peers.clone();
            }
            (self.tweak)(&mut config, &urls);
            let node = EdgeBuilder::with_config(config).clock(self.clock.clone());
            nodes.push(node.start_on(listeners).await);
        }
        nodes
    }
}

impl Edge {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
