//! A real ACME CA for tests: Let's Encrypt's Pebble (Debian package `pebble`, installed by
//! `scripts/test.sh`) on 127.0.0.1, with `pebble-challtestsrv` as the DNS server it
//! resolves every name through (all names are 127.0.0.1). Validations go to the ports the
//! test names (the node's `http` and `https` listeners). Both processes are stopped by PID
//! when dropped.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tls::TestPki;

pub struct Pebble {
    pebble: Child,
    dns: Child,
    /// The ACME directory URL.
    pub directory: String,
    /// The CA bundle that verifies the directory's own HTTPS (`tls.acme.ca_file`).
    pub https_ca: PathBuf,
    management: SocketAddr,
}

/// A port free on 127.0.0.1 for both TCP and UDP right now (the OS picks it; the test
/// binds it moments later).
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

fn installed(binary: &str) -> String {
    for candidate in [binary.to_string(), format!("/usr/bin/{binary}")] {
        if Command::new(&candidate)
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
        {
            return candidate;
        }
    }
    panic!("{binary} not found: run scripts/test.sh, which installs the pebble package");
}

impl Pebble {
    /// Pebble on `port` (0: any) serving its directory with a certificate from `pki`,
    /// validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`. Waits (bounded)
    /// until its directory answers.
    pub fn start(pki: &TestPki, port: u16, http_port: u16, tls_port: u16) -> Self {
        let cert = pki.issue(&format!("pebble-{}", free_port()), &["localhost"]);
        let port = if port == 0 { free_port() } else { port };
        let management: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let dns_port = free_port();
        let config = pki.dir.join(format!("pebble-{port}.json"));
        std::fs::write(
            &config,
            serde_json::json!({
                "pebble": {
                    "listenAddress": format!("127.0.0.1:{port}"),
                    "managementListenAddress": management.to_string(),
                    "certificate": cert.cert,
                    "privateKey": cert.key,
                    "httpPort": http_port,
                    "tlsPort": tls_port,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": false
                }
            })
            .to_string(),
        )
        .unwrap();
        let dns = Command::new(installed("pebble-challtestsrv"))
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble-challtestsrv");
        let pebble = Command::new(installed("pebble"))
            .arg("-config")
            .arg(&config)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            // No random validation delays, no nonces refused on purpose, and every order
            // validated afresh (a renewal answers its challenges again).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble");
        let started = Self {
            pebble,
            dns,
            directory: format!("https://127.0.0.1:{port}/dir"),
            https_ca: pki.ca_pem.clone(),
            management,
        };
        let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(listen).is_err() {
            assert!(
                Instant::now() < deadline,
                "pebble did not listen on {listen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        started
    }

    /// The port of the ACME directory.
    pub fn port(&self) -> u16 {
        self.directory
            .trim_start_matches("https://127.0.0.1:")
            .trim_end_matches("/dir")
            .parse()
            .unwrap()
    }

    /// The root that issues this Pebble's certificates (made anew at each start), as a PEM
    /// file a client can trust.
    pub async fn root(&self) -> PathBuf {
        let got = super::tls::TlsClient::new(&self.https_ca)
            .alpn(&["http/1.1"])
            .get(self.management, "localhost", "/roots/0")
            .await;
        assert_eq!(got.status, 200, "pebble /roots/0");
        let path = self
            .https_ca
            .with_file_name(format!("pebble-root-{}.pem", free_port()));
        std::fs::write(&path, &got.body).unwrap();
        path
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [&mut self.pebble, &mut self.dns] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
