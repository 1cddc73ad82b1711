//! Access log: one JSON line per request, written off the request path.
//!
//! Lines go through a bounded channel to one writer task. When the writer cannot keep up,
//! lines are dropped and counted rather than slowing clients down.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::config::AccessLogTarget;

/// One request, as logged.
#[derive(Debug, Clone, Serialize)]
pub struct AccessRecord {
    /// RFC 3339 time the request arrived.
    pub time: String,
    pub client: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub status: u16,
    pub cache_status: String,
    pub bytes: u64,
    pub duration_ms: f64,
    pub upstream: Option<String>,
}

#[derive(Clone)]
pub struct AccessLog {
    tx: Option<mpsc::Sender<AccessRecord>>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    pub fn off() -> Self {
        Self {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Starts the writer task for a target.
    pub async fn start(target: &AccessLogTarget) -> std::io::Result<Self> {
        let writer: Box<dyn AsyncWrite + Send + Unpin> = match target {
            AccessLogTarget::Off => return Ok(Self::off()),
            AccessLogTarget::Stdout => Box::new(tokio::io::stdout()),
            AccessLogTarget::File(path) => Box::new(open_append(path.clone()).await?),
        };
        let (tx, rx) = mpsc::channel(16_384);
        tokio::spawn(write_lines(rx, writer));
        Ok(Self {
            tx: Some(tx),
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn log(&self, record: AccessRecord) {
        if let Some(tx) = &self.tx {
            if tx.try_send(record).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn open_append(path: PathBuf) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
}

async fn write_lines(
    mut rx: mpsc::Receiver<AccessRecord>,
    mut out: Box<dyn AsyncWrite + Send + Unpin>,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        buf.clear();
        let mut next = Some(first);
        // Batch whatever is already queued into one write.
        while let Some(record) = next {
            if serde_json::to_writer(&mut buf, &record).is_ok() {
                buf.push(b'\n');
            }
            next = if buf.len() < 60 * 1024 {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if out.write_all(&buf).await.is_err() || out.flush().await.is_err() {
            tracing::warn!("access log write failed; logging stops");
            return;
        }
    }
}
