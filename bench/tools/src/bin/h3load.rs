//! HTTP/3 load generator for `bench/tls.sh`. Prints one JSON object per run.
//!
//! ```text
//! h3load <addr> <sni> <ca.pem> <path> <connections> <streams> <seconds>
//!     <connections> QUIC connections to <addr> (UDP), each keeping <streams> requests for
//!     <path> in flight back to back for <seconds>, the server checked against <ca.pem> as
//!     <sni>. Reports requests/s and latency (request sent to body read), like loadgen.
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use strata_bench_tools::report;

type Sender = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

async fn connect(endpoint: &quinn::Endpoint, addr: SocketAddr, sni: &str) -> Sender {
    let conn = endpoint
        .connect(addr, sni)
        .expect("connect")
        .await
        .expect("QUIC handshake");
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .expect("h3");
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    send
}

async fn get(send: &mut Sender, uri: &str) -> Result<u16, String> {
    let req = http::Request::get(uri)
        .body(())
        .map_err(|e| e.to_string())?;
    let mut stream = send.send_request(req).await.map_err(|e| e.to_string())?;
    stream.finish().await.map_err(|e| e.to_string())?;
    let resp = stream.recv_response().await.map_err(|e| e.to_string())?;
    while let Some(mut chunk) = stream.recv_data().await.map_err(|e| e.to_string())? {
        chunk.advance(chunk.remaining());
    }
    Ok(resp.status().as_u16())
}

async fn run(
    addr: SocketAddr,
    sni: String,
    ca: String,
    path: String,
    connections: usize,
    streams: usize,
    seconds: u64,
) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca).expect("CA file") {
        roots.add(cert.expect("CA certificate")).expect("CA");
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let uri = Arc::new(format!("https://{sni}{path}"));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let send = connect(&endpoint, addr, &sni).await;
        for _ in 0..streams {
            let (mut send, uri) = (send.clone(), Arc::clone(&uri));
            tasks.push(tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::with_capacity(100_000), 0u64);
                while Instant::now() < deadline {
                    let started = Instant::now();
                    match get(&mut send, &uri).await {
                        Ok(200) => lat.push(started.elapsed().as_micros() as u64),
                        Ok(_) => errors += 1,
                        Err(_) => {
                            errors += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                (lat, errors)
            }));
        }
    }
    report(tasks, Instant::now(), seconds).await;
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| {
        args.get(i)
            .cloned()
            .unwrap_or_else(|| panic!("missing argument {i}; see the file's doc comment"))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(
        arg(1).parse().expect("address"),
        arg(2),
        arg(3),
        arg(4),
        arg(5).parse().expect("connections"),
        arg(6).parse().expect("streams"),
        arg(7).parse().expect("seconds"),
    ));
}
