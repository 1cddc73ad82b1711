//! Command line: `strata edge`, `strata check-config`, `strata demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::demo;
use strata_proxy::config::{parse_size, CertificateConfig, ConfigError, NodeConfig, OriginEntry};
use strata_proxy::Node;

/// Exit code for invalid configuration or arguments.
const EXIT_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Strata: a self-hostable CDN in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a caching edge node.
    Edge(EdgeArgs),
    /// Run a shield (regional mid-tier): a node whose config says `role = "shield"`.
    Shield {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file; exits 2 and names the failing key when invalid.
    CheckConfig {
        file: PathBuf,
        /// The file is a control plane configuration (`strata control`).
        #[arg(long, conflicts_with_all = ["dns", "anycast"])]
        control: bool,
        /// The file is a DNS router configuration (`strata dns`).
        #[arg(long, conflicts_with = "anycast")]
        dns: bool,
        /// The file is an anycast announcer configuration (`strata anycast`).
        #[arg(long)]
        anycast: bool,
    },
    /// Run the whole CDN in one process: a sample origin, a shield, two PoPs of two edges,
    /// the control plane and the DNS router, on an embedded bus.
    Demo(demo::DemoArgs),
    /// Run the control plane (purge API with per-node acks over NATS).
    Control {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Purge through the control plane and print each node's result.
    Purge(crate::purge_cli::PurgeArgs),
    /// Print a URL that passes a service's EdgeAuth token or signed-URL checks, signed
    /// with the keys in a node configuration.
    Sign(crate::sign_cli::SignArgs),
    /// Make a running node read its configuration again (`POST /v1/reload` on its admin
    /// listener): new certificates go in service; exits 2 when the new configuration is
    /// refused (the running one stays).
    Reload {
        /// The node's admin listener, e.g. http://127.0.0.1:9901.
        #[arg(long)]
        admin: String,
        /// The admin token, when the node has one.
        #[arg(long)]
        token: Option<String>,
    },
    /// Run the DNS request router: authoritative for the CDN zone, answers each client
    /// with its nearest healthy PoP.
    Dns {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the anycast announcer as an ExaBGP process (ExaBGP's API on stdout):
    /// announces the PoP's prefixes while the local node is healthy.
    Anycast {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Args, Clone)]
struct EdgeArgs {
    /// TOML configuration file. Flags below override its values.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Listen address for HTTP (repeatable).
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// Listen address for HTTPS, HTTP/1.1 and h2 by ALPN (repeatable). Needs a
    /// certificate: --tls-cert and --tls-key, or [[tls.certificate]] in the config.
    #[arg(long)]
    https: Vec<SocketAddr>,
    /// PEM certificate chain for the HTTPS listeners (its names come from the certificate).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Origin URL for every host (no config file needed), e.g. http://127.0.0.1:9000.
    #[arg(long)]
    origin: Option<String>,
    /// Admin listen address (/metrics, /healthz).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Memory cache capacity, e.g. 512MiB.
    #[arg(long)]
    cache_size: Option<String>,
    /// Node name used in Cache-Status, Via and CDN-Loop.
    #[arg(long)]
    name: Option<String>,
    /// Access log: stdout, off, or a file path.
    #[arg(long)]
    access_log: Option<String>,
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::CheckConfig {
            file, dns: true, ..
        } => match strata_router::RouterConfig::from_file(&file) {
            Ok(c) => {
                println!(
                    "{}: ok (dns router, zone {}, {} PoP(s), {} location(s))",
                    file.display(),
                    c.zone_fqdn(),
                    c.pops.len(),
                    c.locations.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => config_error(&e),
        },
        Command::CheckConfig {
            file,
            anycast: true,
            ..
        } => match strata_router::anycast::AnycastConfig::from_file(&file) {
            Ok(c) => {
                println!(
                    "{}: ok (anycast announcer, {} prefix(es))",
                    file.display(),
                    c.prefixes.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => config_error(&e),
        },
        Command::CheckConfig {
            file,
            control: true,
            ..
        } => match strata_control::ControlConfig::from_file(&file) {
            Ok(c) => {
                println!(
                    "{}: ok (control plane, {} node(s))",
                    file.display(),
                    c.nodes.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => config_error(&e),
        },
        Command::CheckConfig { file, .. } => match NodeConfig::from_file(&file) {
            Ok(c) => {
                let ring = match c.ring.peers.len() {
                    0 => String::new(),
                    n => format!(", ring of {n}"),
                };
                println!(
                    "{}: ok ({} '{}'{ring}, {} parent(s), {} service(s))",
                    file.display(),
                    c.node.role.as_str(),
                    c.node.name,
                    c.parents.shields.len(),
                    c.services.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => config_error(&e),
        },
        Command::Edge(args) => {
            let config = match edge_config(args.clone()) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            runtime_then(|| async move { run_edge(config, move || edge_config(args.clone())).await })
        }
        Command::Shield { config } => match NodeConfig::from_file(&config) {
            Ok(c) if c.node.role != strata_proxy::config::Role::Shield => {
                config_error(&ConfigError::new(
                    "node.role",
                    "`strata shield` runs nodes with role = \"shield\"; use `strata edge` for edges",
                ))
            }
            Ok(c) => runtime_then(|| async move {
                run_edge(c, move || NodeConfig::from_file(&config)).await
            }),
            Err(e) => config_error(&e),
        },
        Command::Demo(args) => runtime_then(|| demo::run(args)),
        Command::Dns { config } => match strata_router::RouterConfig::from_file(&config) {
            Ok(c) => runtime_then(|| async move { run_dns(c).await }),
            Err(e) => config_error(&e),
        },
        Command::Anycast { config } => {
            match strata_router::anycast::AnycastConfig::from_file(&config) {
                Ok(c) => runtime_then(|| async move {
                    strata_router::anycast::run(c, shutdown_signal()).await?;
                    Ok(())
                }),
                Err(e) => config_error(&e),
            }
        }
        Command::Control { config } => match strata_control::ControlConfig::from_file(&config) {
            Ok(c) => runtime_then(|| async move { run_control(c).await }),
            Err(e) => config_error(&e),
        },
        Command::Reload { admin, token } => client_command(async move {
            let (status, value, bytes) = crate::post::post_json(
                &admin,
                "--admin",
                "/v1/reload",
                token.as_deref(),
                String::new(),
                std::time::Duration::from_secs(30),
            )
            .await?;
            if status == http::StatusCode::OK {
                let restart: Vec<String> = value["restart_needed"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect();
                if restart.is_empty() {
                    println!("reloaded");
                } else {
                    println!("reloaded; these sections take effect at the next restart: {}", restart.join(", "));
                }
                Ok(0)
            } else {
                eprintln!(
                    "reload refused ({status}): {}",
                    value["error"].as_str().unwrap_or(&String::from_utf8_lossy(&bytes))
                );
                Ok(2)
            }
        }),
        Command::Purge(args) => client_command(crate::purge_cli::run(args)),
        Command::Sign(args) => crate::sign_cli::run(args),
    }
}

/// Runs a client command (`purge`, `reload`) on a small runtime; its result is the exit
/// code, and an error (unreachable, bad flag) exits 2.
fn client_command(f: impl std::future::Future<Output = anyhow::Result<u8>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("error: invalid configuration: {e}");
    ExitCode::from(EXIT_CONFIG)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn runtime_then<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Fairness under load: with hundreds of connections ready at once, a worker's
        // local run queue (256 tasks) overflows into the global queue, which by default is
        // looked at only now and then, so the overflowed connections wait tens of
        // milliseconds. Looking at it every tick keeps the order first come, first served.
        // Measured on one worker (hot 1 KiB hits): 640 HTTP/1.1 connections p99 92 ms ->
        // 7 ms, h2 over TLS 64x10 streams p99 58 ms -> 16 ms, requests/s unchanged
        // (bench/README.md, "TLS").
        .global_queue_interval(1)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the node configuration from a file and/or flags.
fn edge_config(args: EdgeArgs) -> Result<NodeConfig, ConfigError> {
    let flag_error = |key: &str, message: String| ConfigError {
        path: key.to_string(),
        message,
    };
    let mut config = match (&args.config, &args.origin) {
        (Some(path), _) => NodeConfig::from_file(path)?,
        (None, Some(origin)) => NodeConfig::single_origin(origin),
        (None, None) => {
            return Err(flag_error(
                "--origin",
                "either --config FILE or --origin URL is required".into(),
            ))
        }
    };
    if args.config.is_some() {
        if let Some(origin) = &args.origin {
            for s in &mut config.services {
                s.origins = vec![OriginEntry::Url(origin.clone())];
            }
        }
    }
    if !args.listen.is_empty() {
        config.listen.http = args.listen;
    }
    if !args.https.is_empty() {
        config.listen.https = args.https;
    }
    if let (Some(cert), Some(key)) = (args.tls_cert.clone(), args.tls_key.clone()) {
        config.tls.certificates = vec![CertificateConfig {
            cert,
            key,
            names: Vec::new(),
            default: true,
        }];
    }
    if let Some(admin) = args.admin {
        config.listen.admin = Some(admin);
    }
    if let Some(size) = args.cache_size {
        config.cache.size = parse_size(&size).map_err(|m| flag_error("--cache-size", m))?;
        config.cache.max_object_size.0 = config.cache.max_object_size.0.min(config.cache.size.0);
    }
    if let Some(name) = args.name {
        config.node.name = name;
    }
    if let Some(log) = args.access_log {
        config.log.access = log;
    }
    config.validate().map_err(|e| {
        // Flag-provided values are named by their flag.
        match e.path.as_str() {
            "service[0].origins[0]" if args.origin.is_some() => flag_error("--origin", e.message),
            "cache.size" => flag_error("--cache-size", e.message),
            "node.name" => flag_error("--name", e.message),
            "tls.certificate[0].cert" if args.tls_cert.is_some() => {
                flag_error("--tls-cert", e.message)
            }
            "tls.certificate[0].key" if args.tls_key.is_some() => {
                flag_error("--tls-key", e.message)
            }
            "tls.certificate" if !config.listen.https.is_empty() => {
                flag_error("--tls-cert", e.message)
            }
            _ => e,
        }
    })?;
    Ok(config)
}

/// Runs a node until SIGINT/SIGTERM. SIGHUP (like `POST /v1/reload` on the admin
/// listener) reads the configuration again with `load` (the same file and flags) and
/// applies what can change in place (`strata_proxy::reload`).
async fn run_edge(
    config: NodeConfig,
    load: impl Fn() -> Result<NodeConfig, ConfigError> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let node = Node::start(&config).await?;
    node.set_config_source(Box::new(load));
    let stop = shutdown_signal();
    let mut hangup = signal(SignalKind::hangup())?;
    for addr in &node.http_addrs {
        tracing::info!(%addr, "{} listening (HTTP/1.1, h2c)", config.node.role.as_str());
    }
    for addr in &node.https_addrs {
        tracing::info!(%addr, "{} listening (HTTPS: HTTP/1.1, h2)", config.node.role.as_str());
    }
    if let Some(addr) = node.admin_addr {
        tracing::info!(%addr, "admin listening (/metrics, /healthz, /v1/purge, /v1/reload)");
    }
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = hangup.recv() => match node.reload() {
                Ok(done) if done.restart_needed.is_empty() => {
                    tracing::info!("reloaded: certificates in service for new connections");
                }
                Ok(done) => tracing::warn!(
                    sections = %done.restart_needed.join(", "),
                    "reloaded certificates; changes to these sections take effect at the next restart"
                ),
                Err(e) => tracing::error!(error = %e, "reload refused: the running configuration stays"),
            },
        }
    }
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}

async fn run_control(config: strata_control::ControlConfig) -> anyhow::Result<()> {
    let stop = shutdown_signal();
    // NATS may come up after the control plane (a cluster elects its JetStream leader
    // first): wait for it rather than exit.
    let joining = strata_bus::Bus::join_nats(
        &config.nats,
        &config.nats_auth,
        "the control plane waits for it before listening",
    );
    tokio::pin!(stop);
    let bus = tokio::select! {
        bus = joining => bus,
        _ = &mut stop => return Ok(()),
    };
    let control = strata_control::Control::start(&config, bus).await?;
    tracing::info!(addr = %control.addr, nodes = config.nodes.len(), "control plane listening");
    stop.await;
    control.shutdown().await;
    Ok(())
}

async fn run_dns(config: strata_router::RouterConfig) -> anyhow::Result<()> {
    let router = strata_router::Router::start(&config, None).await?;
    let stop = shutdown_signal();
    tracing::info!(udp = %router.udp_addr, tcp = %router.tcp_addr, zone = %config.zone_fqdn(),
        "dns router listening");
    stop.await;
    router.shutdown().await;
    Ok(())
}

/// Ctrl-C (SIGINT) or SIGTERM. The handlers are registered when this is called, not when
/// it is first awaited: call it before announcing readiness, so a signal sent right after
/// the announcement is caught instead of killing the process.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        match (interrupt, terminate) {
            (Ok(mut i), Ok(mut t)) => {
                tokio::select! {
                    _ = i.recv() => {}
                    _ = t.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
