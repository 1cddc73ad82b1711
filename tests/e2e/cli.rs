//! The real binary: `check-config`, `edge` from flags, `demo`. Each test starts its own
//! process on port 0 and stops it by PID.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_strata");

fn write_temp(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Waits (bounded) for a line containing `needle` on a child's stream.
fn wait_for_line(stream: impl Read + Send + 'static, needle: &'static str) -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if line.contains(needle) {
                let _ = tx.send(line);
                // Keep draining so the child never blocks on a full pipe.
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no line with {needle:?}"))
}

fn stop(mut child: Child) -> std::process::ExitStatus {
    crate::support::binary::stop_within(&mut child, "INT", Duration::from_secs(6))
        .expect("process did not stop within 6s of SIGINT")
}

fn get(url: &str) -> (u16, String, String) {
    http("GET", url, "", "")
}

/// A tiny blocking HTTP/1.1 exchange, enough for smoke checks of the binary.
fn http(method: &str, url: &str, extra_headers: &str, body: &str) -> (u16, String, String) {
    use std::io::Write;
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest
        .split_once('/')
        .map(|(a, p)| (a, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(authority).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: demo.test\r\nConnection: close\r\n{extra_headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    // Media bodies are binary: what the checks read is text.
    let out = String::from_utf8_lossy(&raw);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// `strata demo` on free ports, its output readable.
fn demo_on_free_ports() -> std::process::Child {
    Command::new(BIN)
        .args(DEMO_ON_FREE_PORTS)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn check_config_accepts_a_valid_file() {
    let dir = crate::support::scratch_dir("cli");
    let path = write_temp(
        &dir,
        "ok.toml",
        "[[service]]\nname = \"s\"\nhosts = [\"*\"]\norigins = [\"http://127.0.0.1:9000\"]\n",
    );
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn check_config_names_the_failing_key_and_exits_2() {
    let dir = crate::support::scratch_dir("cli");
    let path = write_temp(
        &dir,
        "bad.toml",
        "[[service]]\nname = \"s\"\nhosts = [\"*\"]\norigins = [\"http://127.0.0.1:9000\", \"ftp://nope\"]\n",
    );
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("service[0].origins[1]"), "{err}");
}

#[test]
fn check_config_reports_unknown_keys_and_bad_units() {
    let dir = crate::support::scratch_dir("cli");
    let path = write_temp(&dir, "unit.toml", "[cache]\nsize = \"lots\"\n[[service]]\nname = \"s\"\nhosts = [\"*\"]\norigins = [\"http://127.0.0.1:1\"]\n");
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cache.size"));
    let dir = crate::support::scratch_dir("cli");
    let path = write_temp(&dir, "unknown.toml", "[cache]\nsizee = 1\n");
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sizee"));
}

/// Runs `check-config` on every `.toml` in `dir` and its subfolders (control plane, DNS
/// router and anycast files say so by their name's start); how many passed.
fn check_configs_in(dir: &std::path::Path) -> usize {
    let mut checked = 0;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            for inner in std::fs::read_dir(&path).unwrap() {
                files.push(inner.unwrap().path());
            }
        } else {
            files.push(path);
        }
    }
    for path in files {
        // Cargo manifests (the example filters' workspace) are not node configurations.
        let manifest = path.file_name().is_some_and(|n| n == "Cargo.toml");
        if path.extension().is_some_and(|e| e == "toml") && !manifest {
            let mut cmd = Command::new(BIN);
            cmd.arg("check-config");
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            for kind in ["control", "dns", "anycast"] {
                if name.starts_with(kind) {
                    cmd.arg(format!("--{kind}"));
                }
            }
            let out = cmd.arg(&path).output().unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn examples_in_the_repository_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    assert!(
        check_configs_in(&dir) >= 10,
        "example configs missing in {}",
        dir.display()
    );
}

#[test]
fn edge_with_bad_origin_flag_exits_2_naming_the_flag() {
    let out = Command::new(BIN)
        .args(["edge", "--origin", "ftp://x", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--origin"));
}

#[test]
fn edge_from_flags_proxies_and_caches() {
    // The demo's sample origin would do, but a plain edge in front of a demo proves the
    // flags path on its own: start a demo for its origin, then an edge in front of it.
    let mut demo = demo_on_free_ports();
    let origin_line = wait_for_line(demo.stdout.take().unwrap(), "origin  http://");
    let origin = origin_line.split_whitespace().nth(1).unwrap().to_string();

    let mut edge = Command::new(BIN)
        .args([
            "edge",
            "--origin",
            &origin,
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--cache-size",
            "64MiB",
            "--name",
            "cli-edge",
            "--access-log",
            "off",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = wait_for_line(edge.stderr.take().unwrap(), "edge listening");
    let addr = line
        .split("addr=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let (status, head, body) = get(&format!("http://{addr}/static/small.txt"));
    assert_eq!(status, 200);
    assert_eq!(body.len(), 1024);
    assert!(
        head.contains("cache-status: cli-edge; fwd=uri-miss"),
        "{head}"
    );
    let (_, head, _) = get(&format!("http://{addr}/static/small.txt"));
    assert!(head.contains("cache-status: cli-edge; hit"), "{head}");
    assert!(stop(edge).success());
    assert!(stop(demo).success());
}

/// Every listener on a free port: the demo tests run at once (the https default, 8443, made
/// two of them fail in CI when a third held it).
const DEMO_ON_FREE_PORTS: [&str; 11] = [
    "demo",
    "--listen",
    "127.0.0.1:0",
    "--https",
    "127.0.0.1:0",
    "--admin",
    "127.0.0.1:0",
    "--control",
    "127.0.0.1:0",
    "--dns",
    "127.0.0.1:0",
];

#[test]
fn demo_runs_the_topology_answers_purges_and_stops_on_ctrl_c() {
    let mut demo = demo_on_free_ports();
    // ready: edge http://A1 pop-b http://B1 control http://C dns IP:PORT
    let ready = wait_for_line(demo.stdout.take().unwrap(), "ready: edge");
    let words: Vec<&str> = ready.split_whitespace().collect();
    let (a1, b1, control, dns) = (words[2], words[4], words[6], words[8]);
    let (https, ca) = (words[10], words[12]);

    // The router answers for cdn.test: loopback clients get pop-a, a 10/8 subnet pop-b.
    let (dns_ip, dns_port) = dns.rsplit_once(':').unwrap();
    let dig = |args: &[&str]| {
        let out = Command::new("dig")
            .args([
                &format!("@{dns_ip}"),
                "-p",
                dns_port,
                "+short",
                "+time=2",
                "+tries=1",
            ])
            .args(args)
            .output()
            .expect("dig (scripts/test.sh installs dnsutils)");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(dig(&["cdn.test"]), "127.0.0.1");
    assert_eq!(dig(&["www.cdn.test", "+subnet=10.1.2.0/24"]), "127.0.0.2");

    let (status, head, _) = get(&format!("{a1}/static/small.txt"));
    assert_eq!(status, 200);
    assert!(
        head.contains("cache-status: shield-1; fwd=uri-miss"),
        "{head}"
    );
    let (_, head, _) = get(&format!("{a1}/static/small.txt"));
    assert!(head.contains("; hit"), "{head}");
    // The other PoP shares the shield.
    let (_, head, _) = get(&format!("{b1}/static/small.txt"));
    assert!(head.contains("cache-status: shield-1; hit"), "{head}");

    // A purge through the control plane reaches all five nodes over the embedded bus.
    let (status, _, body) = http(
        "POST",
        &format!("{control}/v1/purge"),
        "Authorization: Bearer demo-token-change-me\r\n",
        r#"{"tags":["static"],"wait":5}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"complete\":true"), "{body}");
    assert_eq!(body.matches("\"status\":\"applied\"").count(), 5, "{body}");
    let (_, head, _) = get(&format!("{b1}/static/small.txt"));
    assert!(
        head.contains("cache-status: shield-1; fwd=uri-miss"),
        "{head}"
    );
    // HTTPS with the CA the demo made: h2 by ALPN, verified by curl (OpenSSL).
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
        ])
        .args(["--max-time", "10", "--cacert", ca])
        .arg(format!("{https}/static/small.txt"))
        .output()
        .expect("curl (scripts/test.sh installs it)");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200 2");
    assert!(stop(demo).success());
}

/// The demo's video through the CDN: the player page and hls.js, a live LL-HLS playlist
/// whose blocking reload is held until the part exists, that part, and the VOD asset.
#[test]
fn demo_serves_a_live_channel_and_a_player_page_through_the_cdn() {
    let mut demo = demo_on_free_ports();
    let ready = wait_for_line(demo.stdout.take().unwrap(), "ready: edge");
    let a1 = ready.split_whitespace().nth(2).unwrap().to_string();

    let (status, head, page) = get(&format!("{a1}/player/"));
    assert_eq!(status, 200, "{head}");
    assert!(page.contains("/media/live/master.m3u8") && page.contains("cache-status"));
    let (status, _, js) = get(&format!("{a1}/player/hls.js"));
    assert_eq!(status, 200);
    assert!(js.len() > 100_000, "hls.js is served");

    let (status, _, playlist) = get(&format!("{a1}/media/live/index.m3u8"));
    assert_eq!(status, 200);
    let hint = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part"))
        .and_then(|rest| rest.strip_suffix(".m4s\""))
        .unwrap_or_else(|| panic!("a preload hint in {playlist}"));
    let (msn, part) = hint.split_once('.').unwrap();
    // Held until the hinted part is published (a third of a second at most), then listed.
    let (status, head, blocked) = get(&format!(
        "{a1}/media/live/index.m3u8?_HLS_msn={msn}&_HLS_part={part}"
    ));
    assert_eq!(status, 200, "{head}");
    assert!(
        blocked.contains(&format!("URI=\"part{msn}.{part}.m4s\"")),
        "{blocked}"
    );
    assert!(head.contains("cache-status: shield-1"), "{head}");
    let (status, head, _) = get(&format!("{a1}/media/live/part{msn}.{part}.m4s"));
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: video/iso.segment"), "{head}");
    let (status, _, vod) = get(&format!("{a1}/media/vod/index.m3u8"));
    assert_eq!(status, 200);
    assert!(vod.contains("#EXT-X-ENDLIST"));
    assert!(stop(demo).success());
}

#[test]
fn demo_load_reports_rates_hit_ratios_per_tier_and_offload() {
    let mut args = DEMO_ON_FREE_PORTS.to_vec();
    args.extend(["--load", "--load-duration", "4s", "--load-rate", "200"]);
    let mut demo = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let done = wait_for_line(demo.stdout.take().unwrap(), "load done");
    for part in [
        "req/s",
        "edge",
        "owner",
        "shield",
        "origin offload",
        "errors 0",
    ] {
        assert!(done.contains(part), "{done}");
    }
    assert!(stop(demo).success());
}

/// The docker-compose topology's files (deploy/compose): every configuration passes
/// `check-config` for its role, and every file the compose file mounts exists. (No Docker
/// daemon is needed; the images are not built here.)
#[test]
fn deploy_compose_files_pass_check_config() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/compose");
    assert_eq!(
        check_configs_in(&dir),
        7,
        "control, dns, a shield and four edges"
    );
    let compose = std::fs::read_to_string(dir.join("docker-compose.yml")).unwrap();
    for mount in compose
        .split('"')
        .filter(|s| s.starts_with("./"))
        .map(|s| s.split(':').next().unwrap())
    {
        assert!(dir.join(mount).exists(), "{mount} is mounted but missing");
    }
    let dockerfile = dir.join("../../Dockerfile");
    assert!(std::fs::read_to_string(dockerfile)
        .unwrap()
        .contains("USER nonroot"));
}
