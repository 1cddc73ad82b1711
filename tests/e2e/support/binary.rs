//! The real `strata` binary as a child process, and raw sockets to talk to it the way an
//! attacker would: bytes on a TCP connection, no HTTP library smoothing them over.
//!
//! `STRATA_TEST_BIN` runs the tests against another build (an older commit, to see a
//! regression test fail there).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Stops a process this test started: `signal` (`TERM`, `INT`), then SIGKILL if it has
/// not exited within `grace`. Its exit status, or `None` when it had to be killed.
pub fn stop_within(
    child: &mut Child,
    signal: &str,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status();
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        match child.try_wait() {
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Ok(Some(status)) => return Some(status),
            Err(_) => return None,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The binary under test.
pub fn strata_bin() -> String {
    std::env::var("STRATA_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_strata").to_string())
}

/// A running `strata edge` process, stopped by PID when dropped.
pub struct Strata {
    child: Child,
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    /// Every line it wrote to stderr so far.
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Its configuration file; removed after the process has stopped.
    _dir: super::Scratch,
}

impl Strata {
    /// `strata edge --config <file>` with `toml` as the file (its listeners should be on
    /// port 0). Waits (bounded) until it listens.
    pub fn edge(toml: &str) -> Self {
        Self::edge_with_descriptors(toml, None)
    }

    /// The same, with the process's descriptor limit (soft and hard) set to `limit`.
    pub fn edge_with_descriptors(toml: &str, limit: Option<u32>) -> Self {
        let dir = super::scratch_dir("bin");
        let path = dir.join("edge.toml");
        std::fs::write(&path, toml).expect("write config");
        let mut command = match limit {
            None => Command::new(strata_bin()),
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(strata_bin());
                c
            }
        };
        let mut child = command
            .args(["edge", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start strata");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Drained to the end so the child never blocks on a full pipe.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut http = None;
        let mut https = None;
        let mut admin = None;
        let wants_admin = toml.contains("admin =");
        let wants_https = toml.contains("https =");
        while http.is_none() || (wants_admin && admin.is_none()) || (wants_https && https.is_none())
        {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("strata did not start listening"));
            let addr = || {
                line.split("addr=")
                    .nth(1)
                    .and_then(|a| a.split_whitespace().next())
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            };
            if line.contains("admin listening") {
                admin = addr();
            } else if line.contains("listening (HTTPS") {
                https = https.or_else(addr);
            } else if line.contains("listening") {
                http = http.or_else(addr);
            } else if line.contains("error") {
                panic!("strata failed to start: {line}");
            }
        }
        // Keep reading stderr in the background (the thread above) until exit.
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = std::sync::Arc::clone(&stderr);
        std::thread::spawn(move || {
            while let Ok(line) = rx.recv() {
                lines.lock().expect("stderr lines").push(line);
            }
        });
        Self {
            child,
            _dir: dir,
            http: http.expect("http addr"),
            https,
            admin,
            stderr,
        }
    }

    /// Lines written to stderr since start (after the listening lines) containing `needle`.
    /// A metric's value from the admin listener (the first line starting with `prefix`).
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        let text = exchange(
            self.admin.expect("admin"),
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .text();
        super::metric_value(&text, prefix)
    }

    pub fn stderr_lines_with(&self, needle: &str) -> usize {
        self.stderr
            .lock()
            .expect("stderr lines")
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Sends a signal (`HUP`, `INT`...) to the process.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{name}");
    }

    /// Resident memory of the process, in bytes (Linux `/proc`).
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS");
        kb * 1024
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }
}

impl Drop for Strata {
    fn drop(&mut self) {
        stop_within(&mut self.child, "INT", Duration::from_secs(6));
    }
}

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Field lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn cache_status(&self) -> String {
        self.headers
            .iter()
            .filter(|(n, _)| n == "cache-status")
            .map(|(_, v)| v.clone())
            .next_back()
            .unwrap_or_default()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Writes `request` (raw bytes) on a new connection and reads one response (bounded in
/// time).
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    read_response(&mut s).await.expect("a response")
}

/// Reads one HTTP/1.1 response (Content-Length, chunked, or to the end of the
/// connection). `None` if the connection closes before a head arrives.
pub async fn read_response(s: &mut TcpStream) -> Option<RawResponse> {
    let deadline = Duration::from_secs(20);
    tokio::time::timeout(deadline, read_response_inner(s))
        .await
        .expect("response within 20s")
}

async fn read_response_inner(s: &mut TcpStream) -> Option<RawResponse> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut rest = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let body = if status == 304 || status == 204 || (100..200).contains(&status) {
        Vec::new()
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while rest.len() < len {
            let mut chunk = [0u8; 16384];
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(len);
        rest
    } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            if find(&rest, b"0\r\n\r\n").is_some() {
                break;
            }
            let mut chunk = [0u8; 16384];
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        dechunk(&rest)
    } else {
        let _ = s.read_to_end(&mut rest).await;
        rest
    };
    Some(RawResponse {
        status,
        headers,
        body,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = find(data, b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..i])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = i + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

/// Whether the server closed `s` (EOF) within `within`; false if it is still open.
pub async fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // Something (an h2 GOAWAY, a 408) came first: keep reading to the close.
            Ok(Ok(_)) => continue,
        }
    }
}
