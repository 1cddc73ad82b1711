//! `strata demo`: the whole system in one process, nothing installed.
//!
//! A sample origin; one shield; two PoPs of two edge nodes each, every PoP a ring with the
//! shield as parent; and the control plane, joined to every node by the embedded bus. The
//! command prints what to try; `--load` adds a bounded traffic generator that reports hit
//! ratios per tier and origin offload.
//!
//! The same topology as separate processes over NATS is in `examples/topology/`.

mod certs;
mod load;
mod media;
mod origin;

use self::certs::DemoCerts;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Args;
use strata_bus::Bus;
use strata_control::config::{HealthSection, NodeEntry, ProbedNode};
use strata_control::{Control, ControlConfig};
use strata_proxy::config::{CertificateConfig, NodeConfig, PeerConfig, Role, RuleConfig, Seconds};
use strata_proxy::{Listeners, Node};
use strata_router::config::{LocationConfig, NameServer, PopConfig};
use strata_router::{Router, RouterConfig};

/// The demo control plane's token (printed; the demo listens on loopback only).
const DEMO_TOKEN: &str = "demo-token-change-me";

#[derive(Args)]
pub struct DemoArgs {
    /// HTTP address of the first edge; the other nodes take the next ports (pop-b's
    /// edges on 127.0.0.2 when this is 127.0.0.1; every node takes a free port when this
    /// port is 0).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// HTTPS address of the first edge (HTTP/1.1 and h2), the other edges on the next
    /// ports, with certificates from a CA made at start.
    #[arg(long, default_value = "127.0.0.1:8443")]
    https: SocketAddr,
    /// Admin address of the first edge; the other nodes take the next ports (free ports
    /// when this port is 0).
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
    /// Control plane API address.
    #[arg(long, default_value = "127.0.0.1:9900")]
    control: SocketAddr,
    /// DNS router address (UDP and TCP), authoritative for `cdn.test`.
    #[arg(long, default_value = "127.0.0.1:5353")]
    dns: SocketAddr,
    /// Print every node's access log lines on stdout.
    #[arg(long)]
    access_log: bool,
    /// Run the built-in traffic generator (Zipf over the sample catalog); prints
    /// requests/s, hits per tier and origin offload every 3 seconds.
    #[arg(long)]
    load: bool,
    /// How long the generator runs, e.g. 60s or 2m.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    load_duration: Duration,
    /// The generator's request rate (requests per second, all edges together).
    #[arg(long, default_value_t = 1000)]
    load_rate: u32,
}

/// One node of the demo topology.
struct Planned {
    name: &'static str,
    role: Role,
    pop: &'static str,
    listeners: Listeners,
}

/// The address `i` ports after `base`, or a free port when `base` asks for one.
fn nth(base: SocketAddr, i: u16) -> SocketAddr {
    let mut a = base;
    if base.port() != 0 {
        a.set_port(base.port().saturating_add(i));
    }
    a
}

fn node_config(args: &DemoArgs, origin: SocketAddr, p: &Planned, certs: &DemoCerts) -> NodeConfig {
    let mut config = NodeConfig::single_origin(&format!("http://{origin}"));
    config.node.name = p.name.into();
    config.node.role = p.role;
    config.node.pop = Some(p.pop.into());
    config.listen.http = p.listeners.http_addrs();
    config.listen.https = p.listeners.https_addrs();
    if !config.listen.https.is_empty() {
        config.tls.certificates = vec![CertificateConfig {
            cert: certs.cert.clone(),
            key: certs.key.clone(),
            names: Vec::new(),
            default: true,
        }];
    }
    config.listen.admin = p.listeners.admin_addr();
    config.cache.size.0 = 128 << 20;
    config.cache.max_object_size.0 = 16 << 20;
    config.log.access = if args.access_log { "stdout" } else { "off" }.into();
    // Demo traffic is light: a key requested 20 times a second on a node is hot there.
    config.hot.threshold = 20.0;
    config.hot.window = Seconds(Duration::from_secs(5));
    config.hot.cooldown = Seconds(Duration::from_secs(20));
    let service = &mut config.services[0];
    // Every node has its own address, so requests carry different Host values: key them
    // under one name so that the ring and the shield share objects across nodes.
    service.cache_key_host = Some("demo.strata".into());
    service.strip_query = vec!["utm_*".into()];
    service.negative_ttl = Some(Seconds(Duration::from_secs(10)));
    // The live channel and the VOD asset: class lifetimes, live playlist caps, LL-HLS
    // blocking reloads shared through the tiers, segment prefetch.
    service.media = Some(strata_proxy::config::MediaConfig::default());
    service.rules.push(RuleConfig {
        bypass: true,
        ..RuleConfig::prefix("/api/nocache")
    });
    service.rules.push(RuleConfig {
        micro_cache: Some(Seconds(Duration::from_secs(1))),
        ..RuleConfig::prefix("/api/live")
    });
    config
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let origin = origin::start().await?;
    let certs = DemoCerts::create(
        &std::env::temp_dir().join(format!("strata-demo-{}", std::process::id())),
    )?;
    let bus = Bus::embedded();

    // Bind every node first: each PoP's ring names its members' addresses.
    let layout = [
        ("edge-a1", Role::Edge, "pop-a"),
        ("edge-a2", Role::Edge, "pop-a"),
        ("edge-b1", Role::Edge, "pop-b"),
        ("edge-b2", Role::Edge, "pop-b"),
        ("shield-1", Role::Shield, "shield"),
    ];
    let mut planned = Vec::new();
    for (i, (name, role, pop)) in layout.into_iter().enumerate() {
        let i = i as u16;
        let mut http = nth(args.listen, i);
        let mut https = nth(args.https, i);
        // pop-b on its own loopback address, so DNS answers tell the PoPs apart.
        if pop == "pop-b" {
            for addr in [&mut http, &mut https] {
                if addr.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST) {
                    addr.set_ip(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
                }
            }
        }
        let mut listeners = Listeners::bind_addrs(&[http], Some(nth(args.admin, i)))?;
        if role == Role::Edge {
            listeners.bind_https(&[https])?;
        }
        planned.push(Planned {
            name,
            role,
            pop,
            listeners,
        });
    }
    let url = |p: &Planned| format!("http://{}", p.listeners.http_addrs()[0]);
    let shield_url = url(&planned[4]);
    let mut configs = Vec::new();
    for p in &planned {
        let mut config = node_config(&args, origin.addr, p, &certs);
        if p.role == Role::Shield {
            // Its clients are the edges, on loopback: they carry every user's misses.
            config.forwarding.trusted_proxies = vec!["127.0.0.0/8".into()];
        }
        if p.role == Role::Edge {
            config.parents.shields = vec![shield_url.clone()];
            config.ring.peers = planned
                .iter()
                .filter(|q| q.pop == p.pop)
                .map(|q| PeerConfig {
                    name: q.name.into(),
                    url: url(q),
                    weight: 1,
                })
                .collect();
        }
        configs.push(config);
    }

    let control_config = ControlConfig {
        listen: args.control,
        token: Some(DEMO_TOKEN.into()),
        tokens: Vec::new(),
        node_ttl: strata_proxy::config::Seconds(std::time::Duration::from_secs(30)),
        stream_replicas: 1,
        // Unused: the demo hands the control plane its embedded bus.
        nats: "nats://embedded".into(),
        nats_auth: Default::default(),
        // Every node is probed: the health monitor feeds the DNS router.
        nodes: planned
            .iter()
            .map(|p| {
                NodeEntry::Probed(ProbedNode {
                    name: p.name.into(),
                    pop: p.pop.into(),
                    url: url(p),
                })
            })
            .collect(),
        health: HealthSection::default(),
    };
    let control = Control::start(&control_config, bus.clone()).await?;
    let router_config = router_config(args.dns, &planned);
    let router = Router::start(&router_config, Some(bus.clone())).await?;

    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    for (p, config) in planned.into_iter().zip(configs) {
        let node = Node::start_on(&config, Some(bus.clone()), p.listeners).await?;
        if p.role == Role::Edge {
            edges.push((p.name, node.http_addrs[0]));
        }
        nodes.push((p.name, node));
    }
    let stop = crate::cli::shutdown_signal();

    // In `layout` order.
    let addr = |i: usize| nodes[i].1.http_addrs[0];
    let (a1, a2, b1, b2, shield) = (addr(0), addr(1), addr(2), addr(3), addr(4));
    let admin = nodes[0]
        .1
        .admin_addr
        .map(|a| a.to_string())
        .unwrap_or_default();
    let ctl = control.addr;
    println!("Strata demo is running (Ctrl-C to stop)");
    println!("  origin  http://{}   sample content", origin.addr);
    println!("  shield   http://{shield}   node 'shield-1', parent of both PoPs");
    println!("  pop-a    http://{a1}  http://{a2}   edge-a1, edge-a2 (a ring: each object stored once per PoP)");
    println!("  pop-b    http://{b1}  http://{b2}   edge-b1, edge-b2");
    let tls_a1 = nodes[0].1.https_addrs[0];
    let tls_b1 = nodes[2].1.https_addrs[0];
    println!("  https    https://{tls_a1} (edge-a1)  https://{tls_b1} (edge-b1), the others on the next ports; HTTP/3 on the same UDP ports; CA {}", certs.ca.display());
    println!("  control  http://{ctl}   token {DEMO_TOKEN}");
    println!("  metrics  http://{admin}/metrics   (edge-a1; the other nodes on the next ports)");
    let dns = router.udp_addr;
    println!(
        "  dns      {dns} (UDP and TCP)  zone {}   nearest healthy PoP: 127.0.0.0/8 -> pop-a, 10.0.0.0/8 -> pop-b",
        router_config.zone
    );
    println!();
    println!("Try (Cache-Status lists every tier, the one closest to the origin first):");
    println!("  curl -si http://{a1}/static/small.txt | grep -i cache-status   # miss: fetched via the shield, stored by its owner edge-a1");
    println!("  curl -si http://{a1}/static/small.txt | grep -i cache-status   # hit");
    println!("  curl -si http://{a2}/static/small.txt | grep -i cache-status   # edge-a2 asks the owner in its PoP: edge-a1's hit");
    println!(
        "  curl -si http://{b1}/static/small.txt | grep -i cache-status   # pop-b: a shield hit"
    );
    println!(
        "  curl -si http://{a2}/static/large.bin -r 0-99 -o /dev/null -D -  # 206 from the cache"
    );
    let ca = certs.ca.display();
    println!("  curl -si --cacert {ca} https://{tls_a1}/static/small.txt   # HTTPS, h2 by ALPN (its own copy: keys carry the scheme)");
    println!("  curl -si --cacert {ca} --http1.1 https://localhost:{}/hello   # HTTP/1.1 over TLS, by name", tls_a1.port());
    println!("  curl -s  http://{a1}/api/live/score                           # no-store, micro-cached for 1 s");
    println!("  open http://{a1}/player/                                    # the live LL-HLS channel (and a VOD asset) in hls.js, with each request's Cache-Status");
    println!("  curl -si -H 'Accept-Language: fr' http://{a1}/hello           # Vary: a variant per language");
    println!("  curl -s  -H 'Authorization: Bearer {DEMO_TOKEN}' http://{ctl}/v1/purge -d '{{\"tags\":[\"static\"],\"wait\":2}}'");
    println!("                                                               # purge everywhere: each node's ack");
    println!("  curl -si http://{b1}/static/small.txt | grep -i cache-status   # after the purge: a miss again");
    let (dns_ip, dns_port) = (dns.ip(), dns.port());
    println!("  dig @{dns_ip} -p {dns_port} cdn.test +short                        # pop-a's address (you are on 127.0.0.0/8)");
    println!("  dig @{dns_ip} -p {dns_port} www.cdn.test +short +subnet=10.1.2.0/24  # a client in 10/8 (EDNS Client Subnet): pop-b");
    println!("  curl -s -H 'Authorization: Bearer {DEMO_TOKEN}' http://{ctl}/v1/health  # PoP and node health the router steers by");
    println!("  strata demo --load                                            # traffic, hit ratio per tier, origin offload");
    println!("ready: edge http://{a1} pop-b http://{b1} control http://{ctl} dns {dns} https https://{tls_a1} ca {ca}");

    let generator = args.load.then(|| {
        tokio::spawn(load::run(
            load::LoadConfig {
                edges: edges.clone(),
                duration: args.load_duration,
                rate: args.load_rate,
            },
            std::sync::Arc::clone(&origin.served),
        ))
    });
    stop.await;
    println!("stopping");
    if let Some(g) = generator {
        g.abort();
    }
    for (_, node) in nodes {
        node.shutdown().await;
    }
    router.shutdown().await;
    control.shutdown().await;
    origin.stop().await;
    let _ = std::fs::remove_dir_all(&certs.dir);
    Ok(())
}

/// The demo's DNS router: zone `cdn.test`, the two edge PoPs at their listeners' addresses,
/// loopback clients nearest pop-a and private networks (via ECS) nearest pop-b.
fn router_config(listen: SocketAddr, planned: &[Planned]) -> RouterConfig {
    let pop = |name: &str| PopConfig {
        name: name.into(),
        addresses: planned
            .iter()
            .filter(|p| p.pop == name)
            .map(|p| p.listeners.http_addrs()[0].ip())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
        weight: 100,
    };
    let location = |name: &str, prefixes: &[&str], a: u32, b: u32| LocationConfig {
        name: name.into(),
        prefixes: prefixes.iter().filter_map(|p| p.parse().ok()).collect(),
        latency: [("pop-a".to_string(), a), ("pop-b".to_string(), b)].into(),
    };
    RouterConfig {
        listen,
        zone: "cdn.test".into(),
        ttl: Seconds(Duration::from_secs(30)),
        hosts: vec!["@".into(), "*".into()],
        hostmaster: None,
        nats: None,
        nats_auth: Default::default(),
        unlisted_latency: 1000,
        degraded_penalty: 50,
        default_location: None,
        nameservers: vec![NameServer {
            name: "ns1.cdn.test".into(),
            addresses: vec![listen.ip()],
        }],
        pops: vec![pop("pop-a"), pop("pop-b")],
        locations: vec![
            location("loopback", &["127.0.0.0/8", "::1/128"], 5, 30),
            location(
                "private",
                &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
                30,
                5,
            ),
        ],
    }
}
