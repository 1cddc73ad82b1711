//! The anycast announcer with real BGP: ExaBGP (Debian `exabgp`) runs `strata anycast` as
//! its API process and peers with BIRD (Debian `bird2`) in a network namespace this test
//! creates; BIRD's table must gain the PoP's prefix while the node is healthy and lose it
//! when the node degrades (here: a 5xx burst), then gain it back once it recovers.
//!
//! Needs root (network namespaces) and the two daemons: `scripts/test.sh` installs them.
//! Everything started here is stopped by PID, and the namespace and veth are deleted, when
//! the test ends, passing or not.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{PopBuilder, Reply, TestOrigin};

const PREFIX: &str = "192.0.2.0/24";

/// Network namespace, veth, BIRD and ExaBGP of one test; torn down on drop.
struct Lab {
    ns: String,
    veth: String,
    dir: crate::support::Scratch,
    children: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            // SIGTERM first (ExaBGP stops its API process and closes the session).
            crate::support::binary::stop_within(c, "TERM", Duration::from_secs(10));
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn run(cmd: &[&str]) {
    let status = Command::new(cmd[0]).args(&cmd[1..]).status().expect(cmd[0]);
    assert!(
        status.success(),
        "{cmd:?} failed (the anycast test needs root)"
    );
}

impl Lab {
    fn new() -> Self {
        for bin in ["/usr/sbin/exabgp", "/usr/sbin/bird", "/usr/sbin/birdc"] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} missing: scripts/test.sh installs exabgp and bird2"
            );
        }
        let id = std::process::id() % 10_000;
        let lab = Lab {
            ns: format!("strata-bgp-{id}"),
            veth: format!("sbgp{id}a"),
            dir: crate::support::scratch_dir("anycast"),
            children: Vec::new(),
        };
        let peer = format!("sbgp{id}b");
        run(&["ip", "netns", "add", &lab.ns]);
        run(&[
            "ip", "link", "add", &lab.veth, "type", "veth", "peer", "name", &peer,
        ]);
        run(&["ip", "link", "set", &peer, "netns", &lab.ns]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", lab.addr(1)),
            "dev",
            &lab.veth,
        ]);
        run(&["ip", "link", "set", &lab.veth, "up"]);
        run(&[
            "ip",
            "-n",
            &lab.ns,
            "addr",
            "add",
            &format!("{}/30", lab.addr(2)),
            "dev",
            &peer,
        ]);
        run(&["ip", "-n", &lab.ns, "link", "set", &peer, "up"]);
        run(&["ip", "-n", &lab.ns, "link", "set", "lo", "up"]);
        lab
    }

    /// 10.213.N.1 (ExaBGP, this namespace) and 10.213.N.2 (BIRD, the lab's).
    fn addr(&self, host: u8) -> String {
        format!("10.213.{}.{host}", std::process::id() % 250)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    fn start_bird(&mut self) {
        let conf = self.file(
            "bird.conf",
            &format!(
                "log stderr all;\nrouter id {me};\nprotocol device {{ }}\n\
                 protocol bgp exa {{\n  local {me} as 65002;\n  neighbor {peer} as 65001;\n  hold time 9;\n\
                 ipv4 {{ import all; export none; }};\n}}\n",
                me = self.addr(2),
                peer = self.addr(1)
            ),
        );
        let sock = self.dir.join("bird.ctl").display().to_string();
        let log = std::fs::File::create(self.dir.join("bird.log")).unwrap();
        let child = Command::new("ip")
            .args([
                "netns", "exec", &self.ns, "bird", "-f", "-c", &conf, "-s", &sock,
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    fn start_exabgp(&mut self, announcer_config: &str) {
        let conf = self.file(
            "exabgp.conf",
            &format!(
                "process announcer {{\n  run {bin} anycast --config {announcer_config};\n  encoder text;\n}}\n\
                 neighbor {peer} {{\n  router-id {me};\n  local-address {me};\n  local-as 65001;\n  peer-as 65002;\n\
                 hold-time 9;\n  api {{ processes [ announcer ]; }}\n}}\n",
                bin = env!("CARGO_BIN_EXE_strata"),
                me = self.addr(1),
                peer = self.addr(2)
            ),
        );
        let log = std::fs::File::create(self.dir.join("exabgp.log")).unwrap();
        let child = Command::new("exabgp")
            .arg(&conf)
            .env("exabgp.daemon.user", "root")
            .env("exabgp.daemon.daemonize", "false")
            .env("exabgp.api.cli", "false")
            .env("exabgp.log.destination", "stdout")
            .env("exabgp.daemon.pid", self.dir.join("exabgp.pid"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    /// Whether BIRD's table holds the prefix now.
    fn bird_has_route(&self) -> bool {
        let sock = self.dir.join("bird.ctl").display().to_string();
        let out = Command::new("birdc")
            .args(["-s", &sock, "show", "route", PREFIX])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(PREFIX)
    }

    fn logs(&self) -> String {
        ["bird.log", "exabgp.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// Waits (up to 30 s) until BIRD's table has (or lacks) the route, doing `meanwhile`
    /// between looks.
    async fn until_route<F: std::future::Future<Output = ()>>(
        &self,
        present: bool,
        mut meanwhile: impl FnMut() -> F,
    ) {
        for _ in 0..150 {
            if self.bird_has_route() == present {
                return;
            }
            meanwhile().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "BIRD never {} {PREFIX}\n{}",
            if present { "learned" } else { "dropped" },
            self.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bird_learns_the_prefix_while_the_node_is_healthy_and_loses_it_when_it_degrades() {
    let origin = TestOrigin::start(|seen, _| {
        if seen.path().starts_with("/fail") {
            Reply::status(503)
        } else {
            Reply::ok("x").cc("max-age=60")
        }
    })
    .await;
    let edge = PopBuilder::new(&origin.url(), &["any1"])
        .config(|c, _| c.services[0].health.failures = 100_000)
        .start()
        .await
        .remove(0);

    let mut lab = Lab::new();
    let announcer = lab.file(
        "anycast.toml",
        &format!(
            "node = \"{}\"\nprefixes = [\"{PREFIX}\"]\ninterval = \"200ms\"\n\
             [health]\nrise = 2\nwindow = \"1s\"\nmin_responses = 10\n",
            edge.url()
        ),
    );
    let check = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["check-config", "--anycast", &announcer])
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    lab.start_bird();
    lab.start_exabgp(&announcer);

    // Healthy: announced, and BIRD (another namespace, over eBGP) learns it.
    lab.until_route(true, || async {}).await;

    // A burst of 5xx: degraded, withdrawn before the node fails outright.
    let burst = || async {
        for i in 0..20 {
            edge.get(&format!("/fail{i}")).send().await;
        }
    };
    lab.until_route(false, burst).await;

    // Clean traffic again: healthy after a window, announced again (one withdrawal is
    // under the damping threshold).
    let clean = || async {
        for i in 0..30 {
            edge.get(&format!("/ok{}", i % 5)).send().await;
        }
    };
    lab.until_route(true, clean).await;
}
