//! The demo's certificates: a CA made at start, and one edge certificate it signs for
//! `localhost`, `demo.strata` and the loopback addresses the edges listen on. Written to
//! a directory of their own so `curl --cacert` can trust the CA.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Where the demo's PEM files are.
pub struct DemoCerts {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl DemoCerts {
    /// Makes a CA and an edge certificate under `dir` (created if missing).
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Strata demo CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "demo.strata".to_string()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "Strata demo edge");
        for ip in [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)] {
            params
                .subject_alt_names
                .push(SanType::IpAddress(IpAddr::V4(ip)));
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;

        let certs = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("edge.pem"),
            key: dir.join("edge.key"),
            dir: dir.to_path_buf(),
        };
        std::fs::write(&certs.ca, ca_cert.pem())?;
        std::fs::write(&certs.cert, cert.pem())?;
        write_private(&certs.key, &key.serialize_pem())?;
        Ok(certs)
    }
}

/// A key file only its owner may read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}
