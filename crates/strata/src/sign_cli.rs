//! `strata sign`: a URL that passes a service's token or signed-URL checks, made with the
//! keys of a node configuration (the first key of each list signs).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use strata_proxy::access::{signed_url, TokenFields};
use strata_proxy::config::NodeConfig;

#[derive(Args)]
pub struct SignArgs {
    /// The node configuration whose service (by --host) and rule (by the path) say what a
    /// URL needs.
    #[arg(long, short)]
    config: PathBuf,
    /// The host the URL is for.
    #[arg(long)]
    host: String,
    /// The path (and query) to sign, e.g. /videos/a.m3u8.
    path: String,
    /// How long the URL stays valid, e.g. 30m, 1h, 7d.
    #[arg(long, default_value = "1h")]
    ttl: humantime::Duration,
    /// EdgeAuth: path patterns the token opens (`*`, `?`; several joined by `!`) instead of
    /// the path alone.
    #[arg(long)]
    acl: Option<String>,
    /// EdgeAuth: the client address the token is bound to.
    #[arg(long)]
    ip: Option<String>,
    /// EdgeAuth: a session id (a rate limit may be keyed on it).
    #[arg(long)]
    id: Option<String>,
    #[arg(long, default_value = "https")]
    scheme: String,
}

pub fn run(args: SignArgs) -> ExitCode {
    let config = match NodeConfig::from_file(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let exp = (now + Duration::from(args.ttl)).as_secs();
    let fields = TokenFields {
        acl: args.acl.as_deref(),
        ip: args.ip.as_deref(),
        id: args.id.as_deref(),
    };
    match signed_url(&config, &args.scheme, &args.host, &args.path, exp, &fields) {
        Ok(url) => {
            println!("{url}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("error: {why}");
            ExitCode::from(2)
        }
    }
}
