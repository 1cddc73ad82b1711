//! `strata purge`: sends a purge to the control plane and prints the per-node result.

use std::time::Duration;

use clap::Args;
use http::StatusCode;

#[derive(Args)]
pub struct PurgeArgs {
    /// Control plane URL, e.g. http://127.0.0.1:9000.
    #[arg(long)]
    control: String,
    /// API bearer token.
    #[arg(long)]
    token: String,
    /// URL to purge (repeatable).
    #[arg(long = "url")]
    urls: Vec<String>,
    /// Surrogate key to purge (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// URL prefix to purge (repeatable).
    #[arg(long = "prefix")]
    prefixes: Vec<String>,
    /// Path glob to purge (repeatable).
    #[arg(long = "pattern")]
    patterns: Vec<String>,
    /// Purge everything.
    #[arg(long)]
    all: bool,
    /// Mark stale instead of removing.
    #[arg(long)]
    soft: bool,
    /// Wait this long for every node's ack, e.g. 5s.
    #[arg(long)]
    wait: Option<String>,
}

/// Exit status: 0 all nodes applied, 1 some pending, 2 refused or unreachable.
pub async fn run(args: PurgeArgs) -> anyhow::Result<u8> {
    let wait = match &args.wait {
        Some(w) => Some(humantime::parse_duration(w).map_err(|e| anyhow::anyhow!("--wait: {e}"))?),
        None => None,
    };
    let body = serde_json::json!({
        "urls": args.urls, "tags": args.tags, "prefixes": args.prefixes,
        "patterns": args.patterns, "all": args.all, "soft": args.soft,
        "wait": wait.map(|w| w.as_secs_f64()),
    });
    let timeout = wait.unwrap_or_default() + Duration::from_secs(10);
    let (status, value, bytes) = crate::post::post_json(
        &args.control,
        "--control",
        "/v1/purge",
        Some(&args.token),
        body.to_string(),
        timeout,
    )
    .await?;
    if status != StatusCode::OK && status != StatusCode::ACCEPTED {
        eprintln!(
            "purge refused ({status}): {}",
            value["error"]
                .as_str()
                .unwrap_or(&String::from_utf8_lossy(&bytes))
        );
        return Ok(2);
    }
    println!(
        "purge {} (seq {})",
        value["id"].as_str().unwrap_or("?"),
        value["seq"]
    );
    for node in value["nodes"].as_array().into_iter().flatten() {
        let name = node["node"].as_str().unwrap_or("?");
        match node["status"].as_str() {
            Some("applied") => println!(
                "  {name:<20} applied  {:>8.1} ms  {} objects{}",
                node["ms"].as_f64().unwrap_or(0.0),
                node["objects"].as_u64().unwrap_or(0),
                node["error"]
                    .as_str()
                    .map(|e| format!("  error: {e}"))
                    .unwrap_or_default()
            ),
            _ => println!("  {name:<20} pending"),
        }
    }
    Ok(if value["complete"].as_bool() == Some(true) {
        0
    } else {
        1
    })
}
