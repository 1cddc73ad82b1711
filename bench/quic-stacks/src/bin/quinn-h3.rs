//! A minimal HTTP/3 server on quinn + h3 (rustls on aws-lc-rs, as Strata): every request
//! gets 200 and a 1 KiB body.
//!
//! ```text
//! quinn-h3 <addr> <cert.pem> <key.pem>
//! ```
//! One tokio thread (current_thread), as bench/quic-stacks.sh pins it.

use std::sync::Arc;

use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

static BODY: [u8; 1024] = [b'x'; 1024];

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, cert, key] = args.as_slice() else {
        panic!("usage: quinn-h3 <addr> <cert.pem> <key.pem>");
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert).expect("cert").map(|c| c.expect("cert")).collect();
    let key = PrivateKeyDer::from_pem_file(key).expect("key");
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("certificate");
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("QUIC TLS");
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(100u32.into());
    server.transport_config(Arc::new(transport));
    let endpoint = quinn::Endpoint::server(server, addr.parse().expect("addr")).expect("endpoint");
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            let Ok(mut h3) = h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn)).await else {
                return;
            };
            while let Ok(Some(resolver)) = h3.accept().await {
                tokio::spawn(async move {
                    let Ok((_req, mut stream)) = resolver.resolve_request().await else { return };
                    let resp = http::Response::builder()
                        .status(200)
                        .header("content-length", "1024")
                        .body(())
                        .expect("response");
                    if stream.send_response(resp).await.is_ok() {
                        let _ = stream.send_data(Bytes::from_static(&BODY)).await;
                        let _ = stream.finish().await;
                    }
                });
            }
        });
    }
}
