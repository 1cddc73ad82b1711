//! The control plane over a real NATS JetStream: authenticated purge API, per-node acks,
//! `wait`, pending nodes named, bad input refused before anything is published, and the
//! `strata purge` command.

use std::process::Command;

use crate::support::control::{
    call, control_from_toml, post_purge, purge_control as control, purge_status, TOKEN,
};
use crate::support::nats::{edge_on_bus, NatsServer};
use crate::support::{Edge, Reply, TestOrigin};

async fn warmed_pair(nats: &NatsServer) -> (TestOrigin, Edge, Edge) {
    let origin = TestOrigin::fixed(|| {
        Reply::ok("x")
            .cc("max-age=600")
            .header("surrogate-key", "red")
    })
    .await;
    let (a, b) = (
        edge_on_bus(&origin, nats, "edge-a").await,
        edge_on_bus(&origin, nats, "edge-b").await,
    );
    for e in [&a, &b] {
        e.get("/p").send().await;
        e.eventually("stored", || e.proxy().storage().stats().keys == 1)
            .await;
    }
    (origin, a, b)
}

/// Purge records live in the `STRATA_PURGES` bucket and acks in a stream the control plane
/// reads through a durable consumer: a control plane that restarts still reports an earlier
/// purge, and hears the acks nodes sent while it was down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_control_plane_reports_earlier_purges_and_acks_sent_while_it_was_down() {
    let nats = NatsServer::start();
    let first = control(&nats, &["edge-r"]).await;
    let (status, report) = post_purge(&first, r#"{"tags": ["red"]}"#).await;
    assert_eq!(status, 202, "{report}");
    let id = report["id"].as_str().unwrap().to_string();
    assert_eq!(report["nodes"][0]["status"], "pending");
    first.shutdown().await;

    // The node comes up while no control plane runs: it applies the purge and acks.
    let origin = TestOrigin::fixed(|| Reply::ok("x").cc("max-age=600")).await;
    let _edge = edge_on_bus(&origin, &nats, "edge-r").await;
    let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await.unwrap());
    let mut acks = js.get_stream("STRATA_PURGE_ACKS").await.unwrap();
    for _ in 0..200 {
        if acks.info().await.unwrap().state.messages > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(acks.info().await.unwrap().state.messages, 1);

    let second = control(&nats, &["edge-r"]).await;
    let mut report = serde_json::Value::Null;
    for _ in 0..100 {
        let (status, r) = purge_status(&second, &id).await;
        assert_eq!(status, 200, "{r}");
        report = r;
        if report["complete"] == true {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["nodes"][0]["node"], "edge-r");
    assert_eq!(report["seq"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_with_wait_returns_when_every_node_applied() {
    let nats = NatsServer::start();
    let (_origin, a, b) = warmed_pair(&nats).await;
    let control = control(&nats, &["edge-a", "edge-b"]).await;
    let (status, report) = post_purge(&control, r#"{"tags": ["red"], "wait": 10}"#).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["complete"], true);
    let nodes = report["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    assert!(
        nodes
            .iter()
            .all(|n| n["status"] == "applied" && n["objects"] == 1 && n["ms"].as_f64().is_some()),
        "{report}"
    );
    assert!(!a.get("/p").send().await.is_hit());
    assert!(!b.get("/p").send().await.is_hit());
    let id = report["id"].as_str().unwrap();
    let (status, again) = purge_status(&control, id).await;
    assert_eq!(status, 200);
    assert_eq!(again["complete"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_that_ends_first_answers_202_naming_pending_nodes() {
    let nats = NatsServer::start();
    let (_origin, _a, _b) = warmed_pair(&nats).await;
    let control = control(&nats, &["edge-a", "edge-b", "edge-gone"]).await;
    let (status, report) = post_purge(&control, r#"{"tags": ["red"], "wait": 1}"#).await;
    assert_eq!(status, 202, "{report}");
    let pending: Vec<_> = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["status"] == "pending")
        .map(|n| n["node"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(pending, ["edge-gone"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requires_the_bearer_token() {
    let nats = NatsServer::start();
    let control = control(&nats, &["edge-a"]).await;
    assert_eq!(
        call(control.addr, "POST", "/v1/purge", None, r#"{"all": true}"#)
            .await
            .0,
        401
    );
    assert_eq!(
        call(
            control.addr,
            "POST",
            "/v1/purge",
            Some("wrong-token-0123456789"),
            r#"{"all": true}"#
        )
        .await
        .0,
        401
    );
    assert_eq!(
        call(control.addr, "GET", "/v1/purge/x", None, "").await.0,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_nothing_is_published() {
    let nats = NatsServer::start();
    let control = control(&nats, &["edge-a"]).await;
    for (body, needle) in [
        (r#"{"scope": "everything"}"#, "unknown field"),
        (r#"{}"#, "nothing to purge"),
        (r#"{"urls": ["not a url"]}"#, "urls[0]"),
        (r#"{"patterns": ["no-slash*"]}"#, "patterns[0]"),
        (r#"{"all": true, "wait": 9999}"#, "wait"),
    ] {
        let (status, report) = post_purge(&control, body).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            report["error"].as_str().unwrap().contains(needle),
            "{body}: {report}"
        );
    }
    // The first thing ever published gets sequence 1: none of the above reached the bus.
    let (status, report) = post_purge(&control, r#"{"all": true}"#).await;
    assert_eq!(status, 202);
    assert_eq!(report["seq"], 1, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_purge_command_prints_each_node() {
    let nats = NatsServer::start();
    let (_origin, _a, _b) = warmed_pair(&nats).await;
    let control = control(&nats, &["edge-a", "edge-b"]).await;
    let url = format!("http://{}", control.addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .args([
                "purge",
                "--control",
                &url,
                "--token",
                TOKEN,
                "--tag",
                "red",
                "--wait",
                "10s",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("edge-a") && stdout.contains("edge-b") && stdout.contains("applied"),
        "{stdout}"
    );
}

/// The documented way to hash a token: `printf %s "$TOKEN" | sha256sum`.
fn sha256sum(token: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(token.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_tokens_do_only_what_they_may_and_two_rotate() {
    let nats = NatsServer::start();
    let control = control_from_toml(
        &nats,
        &format!(
            r#"
listen = "127.0.0.1:0"
nats = "{}"
nodes = ["edge-a"]
[[tokens]]
name = "ci-old"
sha256 = "{}"
scopes = ["purge"]
[[tokens]]
name = "ci-new"
sha256 = "{}"
scopes = ["purge"]
[[tokens]]
name = "grafana"
sha256 = "{}"
scopes = ["read"]
"#,
            nats.url,
            sha256sum("ci-old-secret"),
            sha256sum("ci-new-secret"),
            sha256sum("grafana-secret")
        ),
    )
    .await;
    let purge = |token: &'static str| async move {
        call(
            control.addr,
            "POST",
            "/v1/purge",
            Some(token),
            r#"{"all": true}"#,
        )
        .await
    };
    // Both purge tokens work while the old one is being retired.
    let (status, body) = purge("ci-old-secret").await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = purge("ci-new-secret").await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    // The reader may read, not purge; the purgers may follow their purge, not read health.
    let (status, body) = purge("grafana-secret").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("grafana"),
        "{body}"
    );
    let get = |path: String, token: &'static str| async move {
        call(control.addr, "GET", &path, Some(token), "").await.0
    };
    assert_eq!(get("/v1/health".into(), "grafana-secret").await, 200);
    assert_eq!(get("/metrics".into(), "grafana-secret").await, 200);
    assert_eq!(get(format!("/v1/purge/{id}"), "grafana-secret").await, 200);
    assert_eq!(get(format!("/v1/purge/{id}"), "ci-new-secret").await, 200);
    assert_eq!(get("/v1/health".into(), "ci-new-secret").await, 403);
    // The hash itself is not a token.
    let hash: &'static str = Box::leak(sha256sum("ci-new-secret").into_boxed_str());
    assert_eq!(purge(hash).await.0, 401);
}

/// `GET /v1/nodes`, the registry's names.
async fn announced(control: &strata_control::Control) -> Vec<String> {
    let (status, body) = call(control.addr, "GET", "/v1/nodes", Some(TOKEN), "").await;
    assert_eq!(status, 200, "{body}");
    body["announced"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_announce_themselves_and_leave_a_ttl_after_they_stop() {
    let nats = NatsServer::start();
    // No node in the file: the registry says who is there.
    let control = control_from_toml(
        &nats,
        &format!(
            "listen = \"127.0.0.1:0\"\nnats = \"{}\"\ntoken = \"{TOKEN}\"\nnode_ttl = \"2s\"\n",
            nats.url
        ),
    )
    .await;
    let origin = TestOrigin::fixed(|| Reply::ok("x").cc("max-age=600")).await;
    let edge = edge_on_bus(&origin, &nats, "edge-r").await;
    let mut names = Vec::new();
    for _ in 0..100 {
        names = announced(&control).await;
        if !names.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(names, ["edge-r"]);
    let (_, body) = call(control.addr, "GET", "/v1/nodes", Some(TOKEN), "").await;
    assert_eq!(body["announced"][0]["role"], "edge", "{body}");

    // A purge waits for the announced node, which applies it.
    let (status, body) = post_purge(&control, r#"{"all": true, "wait": 10}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["nodes"][0]["node"], "edge-r", "{body}");
    assert_eq!(body["nodes"][0]["status"], "applied", "{body}");

    // Stopped: it leaves the registry a TTL later, and purges no longer wait for it.
    edge.stop().await;
    for _ in 0..100 {
        names = announced(&control).await;
        if names.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(names.is_empty(), "{names:?}");
    let (status, body) = post_purge(&control, r#"{"all": true, "wait": 2}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["nodes"].as_array().unwrap().len(), 0, "{body}");
}
