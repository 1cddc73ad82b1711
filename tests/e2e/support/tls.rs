//! A test PKI (a CA made per test with rcgen, certificates it signs, written as PEM files)
//! and a TLS client that reports what the handshake chose: protocol, ALPN, the
//! certificate presented, whether the session resumed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, HandshakeKind, ProtocolVersion, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A CA and the directory its files go to.
pub struct TestPki {
    pub dir: super::Scratch,
    pub ca_pem: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and key on disk.
#[derive(Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// This certificate as a `[[tls.certificate]]` table.
    pub fn toml(&self) -> String {
        format!(
            "[[tls.certificate]]\ncert = \"{}\"\nkey = \"{}\"\n",
            self.cert.display(),
            self.key.display()
        )
    }
}

/// A node configuration for the real binary: HTTP and HTTPS listeners on port 0 (and an
/// admin listener with `admin`), `cert`, `extra` sections, one service for every host in
/// front of `origin`.
pub fn https_node(cert: &CertFiles, origin: &str, admin: bool, extra: &str) -> String {
    format!(
        "[listen]\nhttp = [\"127.0.0.1:0\"]\nhttps = [\"127.0.0.1:0\"]\n{}{extra}\n\
         [log]\naccess = \"off\"\n{}\n\
         [[service]]\nname = \"site\"\nhosts = [\"*\"]\norigins = [\"{origin}\"]\n",
        if admin {
            "admin = \"127.0.0.1:0\"\n"
        } else {
            ""
        },
        cert.toml(),
    )
}

impl TestPki {
    pub fn new() -> Self {
        let dir = super::scratch_dir("pki");
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Strata test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, cert.pem()).unwrap();
        Self {
            dir,
            ca_pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// An ECDSA P-256 certificate for `names` (and 127.0.0.1), valid now.
    pub fn issue(&self, file: &str, names: &[&str]) -> CertFiles {
        self.issue_with(file, names, KeyPair::generate().unwrap(), |_| {})
    }

    /// A certificate with its parameters adjusted by `adjust` (validity, say), for `key`.
    pub fn issue_with(
        &self,
        file: &str,
        names: &[&str],
        key: KeyPair,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> CertFiles {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("test"));
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        adjust(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = CertFiles {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    /// An RSA 2048 key (ring cannot make one: openssl does).
    pub fn rsa_key(&self) -> KeyPair {
        let path = self.dir.join("rsa-source.key");
        let ok = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl")
            .success();
        assert!(ok, "openssl genpkey");
        KeyPair::from_pem(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    /// A server config presenting `files` that requires a client certificate from this
    /// CA (a stand-in for a ring peer with mutual TLS).
    pub fn acceptor_requiring_clients(&self, files: &CertFiles) -> tokio_rustls::TlsAcceptor {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca_pem).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .build()
        .unwrap();
        let chain = CertificateDer::pem_file_iter(&files.cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&files.key).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// A server config presenting `files` (for test origins), ALPN h2 and http/1.1.
    pub fn acceptor(&self, files: &CertFiles) -> tokio_rustls::TlsAcceptor {
        let chain = CertificateDer::pem_file_iter(&files.cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&files.key).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// A client trusting this CA.
    pub fn client(&self) -> TlsClient {
        TlsClient::new(&self.ca_pem)
    }
}

/// What a TLS client asks for.
#[derive(Clone)]
pub struct TlsClient {
    roots: Arc<RootCertStore>,
    versions: Vec<&'static rustls::SupportedProtocolVersion>,
    alpn: Vec<Vec<u8>>,
    sni: bool,
    /// Presented when the server asks for a client certificate.
    identity: Option<CertFiles>,
    /// The local address connections come from (another loopback address stands for
    /// another host).
    from: Option<IpAddr>,
    /// Kept between connections when set: sessions resume.
    config: Option<Arc<ClientConfig>>,
}

/// What the handshake chose, and the response.
#[derive(Debug)]
pub struct TlsGot {
    pub version: ProtocolVersion,
    pub alpn: Option<Vec<u8>>,
    /// The presented certificate's DNS names.
    pub cert_names: Vec<String>,
    pub resumed: bool,
    pub status: StatusCode,
    pub http_version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TlsGot {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl TlsClient {
    pub fn new(ca: &Path) -> Self {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        Self {
            roots: Arc::new(roots),
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            sni: true,
            identity: None,
            from: None,
            config: None,
        }
    }

    /// Connects from `ip` (a loopback address).
    pub fn connecting_from(mut self, ip: IpAddr) -> Self {
        self.from = Some(ip);
        self
    }

    /// Presents `files` as a client certificate.
    pub fn client_cert(mut self, files: &CertFiles) -> Self {
        self.identity = Some(files.clone());
        self
    }

    pub fn tls12_only(mut self) -> Self {
        self.versions = vec![&rustls::version::TLS12];
        self
    }

    pub fn alpn(mut self, protocols: &[&str]) -> Self {
        self.alpn = protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
        self
    }

    pub fn no_sni(mut self) -> Self {
        self.sni = false;
        self
    }

    /// One config for every connection from now on, so sessions can resume.
    pub fn remembering(mut self) -> Self {
        self.config = Some(self.build());
        self
    }

    fn build(&self) -> Arc<ClientConfig> {
        if let Some(c) = &self.config {
            return Arc::clone(c);
        }
        let config = ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&self.versions)
        .unwrap()
        .with_root_certificates(Arc::clone(&self.roots));
        let mut config = match &self.identity {
            Some(files) => config
                .with_client_auth_cert(
                    CertificateDer::pem_file_iter(&files.cert)
                        .unwrap()
                        .collect::<Result<Vec<_>, _>>()
                        .unwrap(),
                    rustls::pki_types::PrivateKeyDer::from_pem_file(&files.key).unwrap(),
                )
                .unwrap(),
            None => config.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.clone();
        config.enable_sni = self.sni;
        config.resumption = Resumption::in_memory_sessions(64);
        Arc::new(config)
    }

    /// The handshake alone: `Err` with rustls's reason when it fails.
    pub async fn handshake(
        &self,
        addr: SocketAddr,
        name: &str,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, std::io::Error> {
        let tcp = match self.from {
            None => TcpStream::connect(addr).await?,
            Some(ip) => {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(addr).await?
            }
        };
        let name = ServerName::try_from(name.to_string()).unwrap();
        TlsConnector::from(self.build()).connect(name, tcp).await
    }

    /// `GET path` over a new connection to `addr`, asking for `name`.
    pub async fn get(&self, addr: SocketAddr, name: &str, path: &str) -> TlsGot {
        self.get_with(addr, name, path, &[]).await
    }

    /// The same, with extra request fields.
    pub async fn get_with(
        &self,
        addr: SocketAddr,
        name: &str,
        path: &str,
        fields: &[(&str, &str)],
    ) -> TlsGot {
        let tls = self.handshake(addr, name).await.expect("TLS handshake");
        let conn = tls.get_ref().1;
        let version = conn.protocol_version().expect("version");
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
        let cert_names = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| strata_proxy::tls::certs::inspect(c).unwrap().dns_names)
            .unwrap_or_default();
        let mut req = Request::get(path).header("host", name);
        for (k, v) in fields {
            req = req.header(*k, *v);
        }
        let req = req.body(Empty::<Bytes>::new()).unwrap();
        let io = TokioIo::new(tls);
        let resp = if alpn.as_deref() == Some(b"h2") {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            let (mut parts, body) = req.into_parts();
            parts.uri = format!("https://{name}{path}").parse().unwrap();
            parts.headers.remove("host");
            send.send_request(Request::from_parts(parts, body))
                .await
                .unwrap()
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        };
        let (parts, body) = resp.into_parts();
        TlsGot {
            version,
            alpn,
            cert_names,
            resumed,
            status: parts.status,
            http_version: parts.version,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }
}

/// An h2 or HTTP/3 response, fully read.
#[derive(Debug)]
pub struct Got {
    /// Interim responses before the final one.
    pub interim: Vec<(StatusCode, HeaderMap)>,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl TestPki {
    /// A QUIC connection (ALPN h3) to `addr` as `name`, nothing sent on it; `Err` with
    /// quinn's reason when the server refuses it. Its endpoint comes with it (dropping the
    /// endpoint would close the connection).
    pub async fn quic_connect(
        &self,
        addr: SocketAddr,
        name: &str,
    ) -> (
        quinn::Endpoint,
        Result<quinn::Connection, quinn::ConnectionError>,
    ) {
        let endpoint = self.quic_endpoint();
        let connecting = endpoint.connect(addr, name).unwrap();
        let conn = tokio::time::timeout(std::time::Duration::from_secs(10), connecting)
            .await
            .expect("QUIC handshake within 10 s");
        (endpoint, conn)
    }

    fn quic_endpoint(&self) -> quinn::Endpoint {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca_pem).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut tls = ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        endpoint
    }

    /// `GET path` over h2 (TLS, ALPN `h2`) to `addr`, asking for `name`. Every request in
    /// `paths` goes on one connection, in order.
    pub async fn h2_get(&self, addr: SocketAddr, name: &str, paths: &[&str]) -> Vec<Got> {
        let tls = TlsClient::new(&self.ca_pem)
            .alpn(&["h2"])
            .handshake(addr, name)
            .await
            .expect("TLS handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        h2_get(tls, &format!("https://{name}"), paths).await
    }

    /// `GET path` over HTTP/3 (quinn + h3) to `addr` (UDP), asking for `name`. Every
    /// request in `paths` goes on one QUIC connection, in order.
    pub async fn h3_get(&self, addr: SocketAddr, name: &str, paths: &[&str]) -> Vec<Got> {
        let (endpoint, conn) = self.quic_connect(addr, name).await;
        let conn = conn.expect("QUIC handshake");
        let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn))
            .await
            .unwrap();
        let drive = tokio::spawn(async move {
            std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        let mut got = Vec::new();
        for path in paths {
            let req = Request::get(format!("https://{name}{path}"))
                .body(())
                .unwrap();
            let mut stream = send.send_request(req).await.unwrap();
            stream.finish().await.unwrap();
            // Interim responses (1xx) first, as HEADERS frames before the final one.
            let mut interim = Vec::new();
            let resp = loop {
                let resp = stream.recv_response().await.unwrap();
                if !resp.status().is_informational() {
                    break resp;
                }
                interim.push((resp.status(), resp.headers().clone()));
            };
            let mut body = Vec::new();
            while let Some(mut chunk) = stream.recv_data().await.unwrap() {
                use bytes::Buf;
                let piece = chunk.copy_to_bytes(chunk.remaining());
                body.extend_from_slice(&piece);
            }
            let (parts, ()) = resp.into_parts();
            got.push(Got {
                interim,
                status: parts.status,
                headers: parts.headers,
                body: Bytes::from(body),
            });
        }
        drop(send);
        drive.abort();
        endpoint.close(0u32.into(), b"done");
        got
    }
}

/// `GET base + path` for each of `paths`, in order, on one h2 connection over `io` (the `h2`
/// crate's client, which shows interim responses).
pub async fn h2_get<S>(io: S, base: &str, paths: &[&str]) -> Vec<Got>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = h2::client::handshake(io).await.expect("h2 handshake");
    let drive = tokio::spawn(conn);
    let mut got = Vec::new();
    for path in paths {
        let req = Request::get(format!("{base}{path}")).body(()).unwrap();
        send = send.ready().await.unwrap();
        let (mut resp, _) = send.send_request(req, true).unwrap();
        let mut interim = Vec::new();
        while let Some(head) = std::future::poll_fn(|cx| resp.poll_informational(cx)).await {
            let head = head.unwrap();
            interim.push((head.status(), head.headers().clone()));
        }
        let resp = resp.await.unwrap();
        let (parts, mut body) = resp.into_parts();
        let mut read = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            read.extend_from_slice(&chunk);
        }
        got.push(Got {
            interim,
            status: parts.status,
            headers: parts.headers,
            body: Bytes::from(read),
        });
    }
    drive.abort();
    got
}
