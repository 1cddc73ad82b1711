//! What ACME leaves on disk under `tls.acme.storage`: the account key
//! (`account.key`), and one directory per certificate, named after its first host name,
//! with `cert.pem` (the chain) and `key.pem`. Files are written whole (to a temporary
//! name, then renamed), keys readable by the owner only, so a crash never leaves half a
//! key and a restart serves what the node had.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::sign::CertifiedKey;

use crate::tls::certs::{self, CertInfo};

pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Creates the directory if it is missing.
    pub fn open(dir: &Path) -> Result<Self, String> {
        create_private_dir(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The account key, made (ECDSA P-256, as ACME CAs take) on first use.
    pub fn account_key(&self) -> Result<PrivatePkcs8KeyDer<'static>, String> {
        let path = self.dir.join("account.key");
        if path.exists() {
            return PrivatePkcs8KeyDer::from_pem_file(&path)
                .map_err(|e| format!("{}: {e}", path.display()));
        }
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        write_whole(&path, key.serialize_pem().as_bytes(), true)?;
        Ok(PrivatePkcs8KeyDer::from(key.serialize_der()))
    }

    /// The stored certificate for `names`, if it is readable, valid at `now`, and covers
    /// every one of them (a changed list is ordered anew).
    pub fn load(&self, names: &[String], now: SystemTime) -> Option<(CertifiedKey, CertInfo)> {
        let (cert, key) = self.paths(names)?;
        if !cert.exists() {
            return None;
        }
        let provider = crate::tls::provider();
        match certs::load_checked(&cert, &key, "cert", "key", &provider, now) {
            Ok((certified, info)) if names.iter().all(|n| info.dns_names.contains(n)) => {
                Some((certified, info))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "a stored ACME certificate is not usable; ordering a new one");
                None
            }
        }
    }

    /// Keeps an obtained certificate chain and its key.
    pub fn save(&self, names: &[String], chain_pem: &str, key_pem: &str) -> Result<(), String> {
        let (cert, key) = self.paths(names).ok_or("no name")?;
        if let Some(dir) = cert.parent() {
            create_private_dir(dir)?;
        }
        // The key first: a certificate on disk always has its key beside it.
        write_whole(&key, key_pem.as_bytes(), true)?;
        write_whole(&cert, chain_pem.as_bytes(), false)
    }

    /// `cert.pem` and `key.pem` of the certificate for `names`. Names are checked host
    /// names (letters, digits, `-`, `.`), so the first is a safe directory name.
    fn paths(&self, names: &[String]) -> Option<(PathBuf, PathBuf)> {
        let dir = self.dir.join(names.first()?.to_ascii_lowercase());
        Some((dir.join("cert.pem"), dir.join("key.pem")))
    }
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`.
fn write_whole(path: &Path, bytes: &[u8], secret: bool) -> Result<(), String> {
    let at = |e: std::io::Error| format!("{}: {e}", path.display());
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&tmp).map_err(at)?;
    file.write_all(bytes).map_err(at)?;
    file.sync_all().map_err(at)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("strata-acme-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_account_key_is_made_once_and_kept_private() {
        let dir = scratch("account");
        let store = Store::open(&dir).unwrap();
        let first = store.account_key().unwrap();
        let again = store.account_key().unwrap();
        assert_eq!(first.secret_pkcs8_der(), again.secret_pkcs8_der());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("account.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "readable by others: {mode:o}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_saved_certificate_loads_only_for_the_names_it_covers() {
        let dir = scratch("cert");
        let store = Store::open(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".into(), "b.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let names = vec!["a.example".to_string(), "b.example".to_string()];
        store
            .save(&names, &cert.pem(), &key.serialize_pem())
            .unwrap();
        let now = SystemTime::now();
        assert!(store.load(&names, now).is_some());
        let more = vec!["a.example".to_string(), "c.example".to_string()];
        assert!(store.load(&more, now).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
