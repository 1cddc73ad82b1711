//! `strata demo`: everything in one process, nothing installed. A sample origin runs
//! behind an edge node, and the command prints what to try.
//!
//! Later roles (shield, PoPs, control plane, DNS) join this command as they are built.

mod origin;

use std::net::SocketAddr;

use clap::Args;
use strata_proxy::config::{NodeConfig, RuleConfig, Seconds};
use strata_proxy::Node;

#[derive(Args)]
pub struct DemoArgs {
    /// Edge listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Admin listen address.
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
    /// Print access log lines.
    #[arg(long)]
    access_log: bool,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let origin = origin::start().await?;
    let mut config = NodeConfig::single_origin(&format!("http://{}", origin.addr));
    config.node.name = "demo-edge".into();
    config.listen.http = vec![args.listen];
    config.listen.admin = Some(args.admin);
    config.log.access = if args.access_log {
        "stdout".into()
    } else {
        "off".into()
    };
    let service = &mut config.services[0];
    service.strip_query = vec!["utm_*".into()];
    service.negative_ttl = Some(Seconds(std::time::Duration::from_secs(10)));
    service.rules.push(RuleConfig {
        bypass: true,
        ..RuleConfig::prefix("/api/nocache")
    });
    service.rules.push(RuleConfig {
        micro_cache: Some(Seconds(std::time::Duration::from_secs(1))),
        ..RuleConfig::prefix("/api/live")
    });
    let node = Node::start(&config).await?;
    let stop = crate::cli::shutdown_signal();
    let edge = node.http_addrs[0];
    let admin = node.admin_addr.map(|a| a.to_string()).unwrap_or_default();
    println!("Strata demo is running (Ctrl-C to stop)");
    println!("  origin  http://{}   sample content", origin.addr);
    println!("  edge    http://{edge}   node 'demo-edge', HTTP/1.1 and h2c");
    println!("  admin   http://{admin}/metrics");
    println!();
    println!("Try:");
    println!("  curl -si http://{edge}/static/small.txt | grep -i cache-status     # first: fwd=uri-miss; stored");
    println!("  curl -si http://{edge}/static/small.txt | grep -i cache-status     # again: hit");
    println!("  curl -si http://{edge}/static/large.bin -r 0-99 -o /dev/null -D -   # 206 from the cache");
    println!("  curl -si http://{edge}/api/time                                     # JSON cached for 2 s");
    println!("  curl -s  http://{edge}/api/live/score                               # no-store, micro-cached for 1 s");
    println!("  curl -si -H 'Accept-Language: fr' http://{edge}/hello              # Vary: a variant per language");
    println!("  curl -si http://{edge}/missing | grep -i cache-status              # 404 cached for 10 s");
    println!("  curl -s  http://{admin}/metrics | grep strata_requests");
    println!("  curl -s  -X POST http://{admin}/v1/purge -d '{{\"tags\": [\"static\"]}}'   # purge by surrogate key");
    println!("{}", origin::ready_line(edge));
    stop.await;
    println!("stopping");
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}
