//! TLS of the etcd client: `etcd3.cacert` (the CA etcd's certificate is verified with; the
//! system's CAs without it), `etcd3.cert` and `etcd3.key` (the client certificate, for etcd's
//! `--client-cert-auth`; `etcd3.key_password` decrypts an encrypted PKCS#8 key). Every file is
//! read and parsed at start, so a missing, unreadable or
//! non-PEM file is refused with its key and path instead of failing each connection later.
//! Server verification cannot be turned off.

use std::path::{Path, PathBuf};

use etcd_client::{Certificate, Identity, TlsOptions};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::DcsError;

/// The TLS files of the etcd section. Used only with `https` endpoints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EtcdTls {
    /// The configuration section the files come from (`etcd3` or `etcd`), to name the keys in
    /// errors; `etcd3` when empty.
    pub section: String,
    /// `cacert`: CA certificate(s) etcd's server certificate must chain to.
    pub cacert: Option<PathBuf>,
    /// `cert`: client certificate (chain).
    pub cert: Option<PathBuf>,
    /// `key`: its private key; the `cert` file when absent (one PEM holding both).
    pub key: Option<PathBuf>,
    /// `key_password`: decrypts `key` when it is encrypted PKCS#8.
    pub key_password: Option<String>,
}

impl EtcdTls {
    /// Whether any file is configured.
    pub fn is_set(&self) -> bool {
        self.cacert.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// `etcd3` or `etcd`, for messages.
    pub fn section_name(&self) -> &str {
        if self.section.is_empty() {
            "etcd3"
        } else {
            &self.section
        }
    }

    fn key_name(&self, key: &str) -> String {
        format!("{}.{key}", self.section_name())
    }

    fn error(&self, key: &str, path: &Path, reason: impl std::fmt::Display) -> DcsError {
        DcsError::Config(format!(
            "{}: {}: {reason}",
            self.key_name(key),
            path.display()
        ))
    }

    fn read(&self, key: &str, path: &Path) -> Result<Vec<u8>, DcsError> {
        std::fs::read(path).map_err(|e| {
            let reason = match e.kind() {
                std::io::ErrorKind::NotFound => "missing (no such file)".to_string(),
                std::io::ErrorKind::PermissionDenied => {
                    "unreadable (permission denied for this user)".to_string()
                }
                _ => format!("unreadable ({e})"),
            };
            self.error(key, path, reason)
        })
    }

    /// Certificates of a PEM file: at least one.
    fn certs(&self, key: &str, path: &Path, pem: &[u8]) -> Result<(), DcsError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.error(key, path, format!("not PEM ({e})")))?;
        if certs.is_empty() {
            return Err(self.error(key, path, "not PEM: no CERTIFICATE block found"));
        }
        if key == "cacert" {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs {
                roots.add(c).map_err(|e| {
                    self.error(key, path, format!("not a usable CA certificate ({e})"))
                })?;
            }
        }
        Ok(())
    }

    /// The private key of a PEM file, checked, as a clear PEM for the client: an encrypted
    /// PKCS#8 key is decrypted with `key_password`.
    fn private_key(&self, key: &str, path: &Path, pem: &[u8]) -> Result<Vec<u8>, DcsError> {
        let text = String::from_utf8_lossy(pem);
        let decrypted = pgpilot_values::keys::decrypt_private_key(
            &text,
            self.key_password.as_deref(),
            &self.key_name("key_password"),
            &path.display().to_string(),
        )
        .map_err(|e| self.error(key, path, e))?;
        let (der, clear) = match decrypted {
            Some(der) => {
                let clear =
                    pgpilot_values::keys::pkcs8_pem(&der).map_err(|e| self.error(key, path, e))?;
                (PrivateKeyDer::Pkcs8(der.into()), clear.into_bytes())
            }
            None => {
                let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
                    self.error(key, path, format!("not PEM: no private key found ({e})"))
                })?;
                (der, pem.to_vec())
            }
        };
        rustls::crypto::ring::sign::any_supported_type(&der)
            .map_err(|e| self.error(key, path, format!("unsupported private key ({e})")))?;
        Ok(clear)
    }

    /// Reads and checks the files, as a start does (`--validate-config`).
    pub fn check(&self) -> Result<(), DcsError> {
        self.options().map(|_| ())
    }

    /// Reads and checks the files and builds the client's TLS settings.
    pub(crate) fn options(&self) -> Result<TlsOptions, DcsError> {
        let mut tls = TlsOptions::new();
        match &self.cacert {
            Some(path) => {
                let pem = self.read("cacert", path)?;
                self.certs("cacert", path, &pem)?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            None => tls = tls.with_native_roots(),
        }
        match (&self.cert, &self.key) {
            (Some(cert), key) => {
                let cert_pem = self.read("cert", cert)?;
                self.certs("cert", cert, &cert_pem)?;
                let (key_name, key_path, key_pem) = match key {
                    Some(k) => ("key", k, self.read("key", k)?),
                    None => ("cert", cert, cert_pem.clone()),
                };
                let key_pem = self.private_key(key_name, key_path, &key_pem)?;
                tls = tls.identity(Identity::from_pem(cert_pem, key_pem));
            }
            (None, Some(key)) => {
                return Err(self.error(
                    "key",
                    key,
                    format!(
                        "a client key without a client certificate ({} is not set)",
                        self.key_name("cert")
                    ),
                ))
            }
            (None, None) => {}
        }
        Ok(tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(cacert: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> EtcdTls {
        EtcdTls {
            section: "etcd3".into(),
            cacert: cacert.map(Path::to_path_buf),
            cert: cert.map(Path::to_path_buf),
            key: key.map(Path::to_path_buf),
            key_password: None,
        }
    }

    fn message(r: Result<TlsOptions, DcsError>) -> String {
        match r {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_files_are_named_with_their_key_and_reason() {
        let dir = std::env::temp_dir().join(format!("pgpilot-etcd-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let m = message(tls(Some(&missing), None, None).options());
        assert!(
            m.contains("etcd3.cacert") && m.contains("missing.pem") && m.contains("missing"),
            "{m}"
        );

        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "hello").unwrap();
        let m = message(tls(Some(&junk), None, None).options());
        assert!(m.contains("etcd3.cacert") && m.contains("not PEM"), "{m}");
        let m = message(tls(None, Some(&junk), None).options());
        assert!(m.contains("etcd3.cert") && m.contains("not PEM"), "{m}");

        let encrypted = dir.join("enc.key");
        std::fs::write(
            &encrypted,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        let cert = dir.join("cert.pem");
        // A syntactically valid PEM block: only the key is under test here.
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let m = message(tls(None, Some(&cert), Some(&encrypted)).options());
        assert!(
            m.contains("etcd3.key") && m.contains("encrypted and etcd3.key_password is not set"),
            "{m}"
        );
        let with_password = EtcdTls {
            key_password: Some("x".into()),
            ..tls(None, Some(&cert), Some(&encrypted))
        };
        let m = message(with_password.options());
        assert!(m.contains("can not read the encrypted private key"), "{m}");

        let m = message(tls(None, None, Some(&junk)).options());
        assert!(
            m.contains("etcd3.key") && m.contains("etcd3.cert is not set"),
            "{m}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
