//! A real `nats-server -js` on 127.0.0.1 with a random port and its own store directory,
//! stopped (by PID) when dropped. `scripts/test.sh` installs nats-server.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct NatsServer {
    child: Child,
    pub url: String,
    dir: super::Scratch,
}

pub fn binary() -> String {
    for candidate in [
        "nats-server",
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
    ] {
        if Command::new(candidate).arg("--version").output().is_ok() {
            return candidate.to_string();
        }
    }
    panic!("nats-server not found: run scripts/test.sh, which installs it");
}

impl NatsServer {
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// On a port chosen by the test (one a node was told about before the server ran).
    pub fn start_on(port: u16) -> Self {
        Self::start_at(port, "")
    }

    /// With `config` (nats-server's configuration language: `tls {}`, `authorization {}`)
    /// on top of the address, port and JetStream store given on the command line. The URL
    /// is `tls://` when `config` has a `tls` block.
    pub fn start_with(config: &str) -> Self {
        Self::start_at(0, config)
    }

    /// `port` 0: any free port.
    fn start_at(port: u16, config: &str) -> Self {
        let dir = super::scratch_dir("nats");
        let mut command = Command::new(binary());
        let port = if port == 0 {
            "-1".to_string()
        } else {
            port.to_string()
        };
        command
            .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
            .arg(&dir);
        if !config.is_empty() {
            let file = dir.join("server.conf");
            std::fs::write(&file, config).expect("nats config");
            command.arg("-c").arg(&file);
        }
        let scheme = if config.contains("tls {") {
            "tls"
        } else {
            "nats"
        };
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nats-server");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("nats-server listening");
        Self {
            child,
            url: format!("{scheme}://{addr}"),
            dir,
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An edge node named `name` in front of `origin`, joined to this NATS server.
pub async fn edge_on_bus(origin: &super::TestOrigin, nats: &NatsServer, name: &str) -> super::Edge {
    let (url, name) = (nats.url.clone(), name.to_string());
    super::EdgeBuilder::new(&origin.url())
        .config(move |c| {
            c.bus.nats = Some(url);
            c.node.name = name;
        })
        .start()
        .await
}
