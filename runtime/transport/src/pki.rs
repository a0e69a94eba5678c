//! The cluster CA and the master's certificate.
//!
//! On the master's first start [`MasterIdentity::load_or_create`] writes into its state
//! folder `ca.pem` (the CA certificate agents and clients trust), `ca.key`, `master.pem`
//! and `master.key`. Later starts read them back.

use std::path::{Path, PathBuf};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The CA certificate's file name inside the master's state folder.
pub const CA_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca.key";
const CERT_FILE: &str = "master.pem";
const KEY_FILE: &str = "master.key";

/// Why certificates could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable certificate or key.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The master's certificate chain and key, and the CA certificate that signed them.
#[derive(Debug)]
pub struct MasterIdentity {
    /// The master's certificate followed by the CA's.
    pub chain: Vec<CertificateDer<'static>>,
    /// The master's private key.
    pub key: PrivateKeyDer<'static>,
    /// Where the CA certificate lives, for agents on this machine to trust.
    pub ca_path: PathBuf,
}

impl MasterIdentity {
    /// Reads the identity from `dir`, making a new CA and certificate there if none exists.
    ///
    /// # Errors
    /// [`PkiError`] when the folder cannot be written or holds damaged files.
    pub fn load_or_create(dir: &Path) -> Result<Self, PkiError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let ca_path = dir.join(CA_FILE);
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        if !(ca_path.exists() && cert_path.exists() && key_path.exists()) {
            create(dir)?;
        }
        let mut chain = read_certs(&cert_path)?;
        chain.extend(read_certs(&ca_path)?);
        let key = read_key(&key_path)?;
        Ok(Self {
            chain,
            key,
            ca_path,
        })
    }
}

fn create(dir: &Path) -> Result<(), PkiError> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Corral cluster CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);

    let key = rcgen::KeyPair::generate()?;
    let mut params =
        rcgen::CertificateParams::new(vec![crate::SERVER_NAME.to_owned(), "localhost".to_owned()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Corral master");
    let cert = params.signed_by(&key, &issuer)?;

    write_private(&dir.join(CA_KEY_FILE), &ca_key.serialize_pem())?;
    write_private(&dir.join(KEY_FILE), &key.serialize_pem())?;
    let cert_path = dir.join(CERT_FILE);
    std::fs::write(&cert_path, cert.pem()).map_err(io_err(&cert_path))?;
    // The CA file last: its presence marks a complete set.
    let ca_path = dir.join(CA_FILE);
    std::fs::write(&ca_path, ca_cert.pem()).map_err(io_err(&ca_path))?;
    Ok(())
}

fn write_private(path: &Path, pem: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(pem.as_bytes()).map_err(io_err(path))
}

/// Reads every certificate in a PEM file.
///
/// # Errors
/// [`PkiError`] when the file cannot be read or holds no certificate.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let data = std::fs::read(path).map_err(io_err(path))?;
    let certs = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PkiError::Invalid {
            path: path.to_owned(),
            reason: "no PEM certificate in the file".to_owned(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    let data = std::fs::read(path).map_err(io_err(path))?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|e| PkiError::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| PkiError::Invalid {
            path: path.to_owned(),
            reason: "no PEM private key in the file".to_owned(),
        })
}

/// A root store holding the CA certificates in a PEM file.
///
/// # Errors
/// [`PkiError`] when the file cannot be read or its certificates are not usable roots.
pub fn root_store(ca_path: &Path) -> Result<rustls::RootCertStore, PkiError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(ca_path)? {
        roots.add(cert).map_err(|e| PkiError::Invalid {
            path: ca_path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_made_once_and_read_back() {
        let dir = std::env::temp_dir().join(format!("corral-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = MasterIdentity::load_or_create(&dir).expect("create");
        let second = MasterIdentity::load_or_create(&dir).expect("load");
        assert_eq!(first.chain, second.chain);
        assert_eq!(first.chain.len(), 2);
        assert!(root_store(&first.ca_path).expect("roots").len() == 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
