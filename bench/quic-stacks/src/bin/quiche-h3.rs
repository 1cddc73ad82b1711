//! A minimal HTTP/3 server on tokio-quiche: every request gets 200 and a 1 KiB body.
//!
//! ```text
//! quiche-h3 <addr> <cert.pem> <key.pem>
//! ```
//! One tokio thread (current_thread), as bench/quic-stacks.sh pins it.

use futures_util::SinkExt;
use futures_util::StreamExt;
use quiche::h3::Header;
use tokio_quiche::http3::driver::{H3Event, OutboundFrame, ServerH3Event};
use tokio_quiche::http3::settings::Http3Settings;
use tokio_quiche::metrics::DefaultMetrics;
use tokio_quiche::settings::{CertificateKind, Hooks, QuicSettings, TlsCertificatePaths};
use tokio_quiche::{ConnectionParams, ServerH3Driver};

static BODY: [u8; 1024] = [b'x'; 1024];

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, cert, key] = args.as_slice() else {
        panic!("usage: quiche-h3 <addr> <cert.pem> <key.pem>");
    };
    let socket = tokio::net::UdpSocket::bind(addr).await.expect("bind");
    let mut settings = QuicSettings::default();
    settings.initial_max_streams_bidi = 100;
    settings.max_idle_timeout = Some(std::time::Duration::from_secs(30));
    let params = ConnectionParams::new_server(
        settings,
        TlsCertificatePaths { cert, private_key: key, kind: CertificateKind::X509 },
        Hooks::default(),
    );
    let mut listeners = tokio_quiche::listen([socket], params, DefaultMetrics).expect("listen");
    let accepted = &mut listeners[0];
    while let Some(conn) = accepted.next().await {
        let Ok(conn) = conn else { continue };
        let (driver, mut controller) = ServerH3Driver::new(Http3Settings::default());
        conn.start(driver);
        tokio::spawn(async move {
            let events = controller.event_receiver_mut();
            while let Some(event) = events.recv().await {
                match event {
                    ServerH3Event::Headers { incoming_headers, .. } => {
                        let mut send = incoming_headers.send;
                        tokio::spawn(async move {
                            let headers = vec![
                                Header::new(b":status", b"200"),
                                Header::new(b"content-length", b"1024"),
                            ];
                            let _ = send.send(OutboundFrame::Headers(headers, None)).await;
                            let body = bytes::Bytes::from_static(&BODY);
                            let _ = send.send(OutboundFrame::Body(body, true)).await;
                        });
                    }
                    ServerH3Event::Core(H3Event::ConnectionShutdown(_) | H3Event::ConnectionError(_)) => break,
                    ServerH3Event::Core(_) => {}
                }
            }
        });
    }
}
