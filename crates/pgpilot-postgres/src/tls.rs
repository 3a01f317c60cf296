//! TLS for the agent's own PostgreSQL connections, with libpq's `sslmode` semantics, on rustls
//! (ring provider, as everywhere else in pgpilot).
//!
//! | sslmode | handshake | server certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `allow`, `prefer` | if the server offers it | as `require` |
//! | `require` | always | not checked, unless a root certificate file exists: then as `verify-ca` (libpq's rule) |
//! | `verify-ca` | always | chain checked against `sslrootcert` (and `sslcrl`/`sslcrldir`) |
//! | `verify-full` | always | chain and host name checked |
//!
//! File options default as in libpq: `~/.postgresql/root.crt`, `root.crl`, `postgresql.crt`,
//! `postgresql.key`. `sslrootcert=system` uses the system's trust store and implies
//! `verify-full`. A client certificate (`sslcert`, `sslkey`) is presented when its file exists.
//! An encrypted client key (PKCS#8, `-----BEGIN ENCRYPTED PRIVATE KEY-----`) is decrypted with
//! `sslpassword`, as libpq does; OpenSSL's legacy PEM encryption is refused with the command
//! that converts it.
//!
//! Certificates are read at each connection, so a renewed file is picked up without a
//! restart.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::{PgError, Result};

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    Nothing,
    Chain,
    ChainAndName,
}

/// Reads the TLS options of one role (`postgresql.authentication.<role>`) into a rustls
/// client configuration. `role` names the key in errors.
pub(crate) fn client_config(
    role: &str,
    options: &std::collections::BTreeMap<String, String>,
) -> Result<ClientConfig> {
    let opt = |k: &str| options.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let key_path = |k: &str| format!("postgresql.authentication.{role}.{k}");
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let default_file = |name: &str| home.as_ref().map(|h| h.join(".postgresql").join(name));
    let mode = opt("sslmode").unwrap_or("prefer");
    let rootcert = opt("sslrootcert");
    let system = rootcert == Some("system");
    let root_path = match rootcert {
        Some("system") => None,
        Some(p) => Some(PathBuf::from(p)),
        None => default_file("root.crt"),
    };
    let root_exists = root_path.as_deref().is_some_and(Path::exists);
    let verify = match mode {
        "verify-full" => Verify::ChainAndName,
        _ if system => Verify::ChainAndName,
        "verify-ca" => Verify::Chain,
        _ if root_exists => Verify::Chain,
        _ => Verify::Nothing,
    };
    if system && !matches!(mode, "verify-full" | "prefer" | "allow" | "require") {
        return Err(PgError::Invalid(format!(
            "{}: sslrootcert=system requires sslmode verify-full (got {mode})",
            key_path("sslmode")
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Invalid(format!("TLS set-up: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = if verify == Verify::Nothing {
        Arc::new(AcceptAny(provider.signature_verification_algorithms))
    } else {
        let mut roots = RootCertStore::empty();
        let mut anchors = Vec::new();
        if system {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system store with some unreadable entries is still usable, as for libpq.
                let _ = roots.add(cert);
            }
        } else {
            let path = match root_path {
                Some(p) if p.exists() => p,
                Some(p) => {
                    return Err(PgError::Invalid(format!(
                        "{}: root certificate file \"{}\" does not exist (sslmode {mode} needs it)",
                        key_path("sslrootcert"),
                        p.display()
                    )))
                }
                None => {
                    return Err(PgError::Invalid(format!(
                        "{}: not set and no home directory to find ~/.postgresql/root.crt (sslmode {mode} needs it)",
                        key_path("sslrootcert")
                    )))
                }
            };
            for cert in pem_certs(&key_path("sslrootcert"), &path)? {
                anchors.push(cert.as_ref().to_vec());
                roots.add(cert).map_err(|e| {
                    PgError::Invalid(format!(
                        "{}: {}: {e}",
                        key_path("sslrootcert"),
                        path.display()
                    ))
                })?;
            }
        }
        let mut crls = Vec::new();
        match opt("sslcrl")
            .map(PathBuf::from)
            .or_else(|| default_file("root.crl"))
        {
            Some(p) if p.exists() => crls.extend(pem_crls(&key_path("sslcrl"), &p)?),
            Some(p) if opt("sslcrl").is_some() => {
                return Err(PgError::Invalid(format!(
                    "{}: {}: no such file",
                    key_path("sslcrl"),
                    p.display()
                )))
            }
            _ => {}
        }
        if let Some(dir) = opt("sslcrldir") {
            let entries = std::fs::read_dir(dir)
                .map_err(|e| PgError::Invalid(format!("{}: {dir}: {e}", key_path("sslcrldir"))))?;
            for entry in entries.flatten() {
                let p = entry.path();
                if p.is_file() {
                    crls.extend(pem_crls(&key_path("sslcrldir"), &p)?);
                }
            }
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .with_crls(crls)
            .build()
            .map_err(|e| PgError::Invalid(format!("{}: {e}", key_path("sslrootcert"))))?;
        Arc::new(Checked {
            webpki,
            anchors,
            check_name: verify == Verify::ChainAndName,
        })
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);

    let cert_path = opt("sslcert")
        .map(PathBuf::from)
        .or_else(|| default_file("postgresql.crt"));
    let config = match cert_path {
        Some(cert) if cert.exists() => {
            let chain = pem_certs(&key_path("sslcert"), &cert)?;
            let key_file = opt("sslkey")
                .map(PathBuf::from)
                .or_else(|| default_file("postgresql.key"))
                .ok_or_else(|| {
                    PgError::Invalid(format!(
                        "{}: not set, and sslcert {} needs its key",
                        key_path("sslkey"),
                        cert.display()
                    ))
                })?;
            let key = private_key(
                &key_path("sslkey"),
                &key_file,
                opt("sslpassword"),
                &key_path("sslpassword"),
            )?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                PgError::Invalid(format!(
                    "{}: {} does not go with {}: {e}",
                    key_path("sslkey"),
                    key_file.display(),
                    cert.display()
                ))
            })?
        }
        Some(cert) if opt("sslcert").is_some() => {
            return Err(PgError::Invalid(format!(
                "{}: {}: no such file",
                key_path("sslcert"),
                cert.display()
            )))
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| PgError::Invalid(format!("{key}: can not read {}: {e}", path.display())))
}

fn pem_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| PgError::Invalid(format!("{key}: {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(PgError::Invalid(format!(
            "{key}: {}: no PEM certificate in the file",
            path.display()
        )));
    }
    Ok(certs)
}

fn pem_crls(key: &str, path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let pem = read(key, path)?;
    CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| PgError::Invalid(format!("{key}: {}: {e}", path.display())))
}

/// The client key of `path`, decrypted with `sslpassword` when it is an encrypted PKCS#8 key
/// (libpq's rule: the password of the `sslkey` file).
fn private_key(
    key: &str,
    path: &Path,
    password: Option<&str>,
    setting: &str,
) -> Result<PrivateKeyDer<'static>> {
    let pem = read(key, path)?;
    let text = String::from_utf8_lossy(&pem);
    let invalid =
        |e: &dyn std::fmt::Display| PgError::Invalid(format!("{key}: {}: {e}", path.display()));
    match pgpilot_values::keys::decrypt_private_key(
        &text,
        password,
        setting,
        &path.display().to_string(),
    )
    .map_err(|e| invalid(&e))?
    {
        Some(der) => Ok(PrivateKeyDer::Pkcs8(der.into())),
        None => PrivateKeyDer::from_pem_slice(&pem).map_err(|e| invalid(&e)),
    }
}

/// `sslmode=require` without a root certificate: encrypt, trust whoever answers (libpq does
/// the same). Handshake signatures are still checked, so the session is bound to the
/// certificate shown.
#[derive(Debug)]
struct AcceptAny(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca` and `verify-full`: the chain must lead to a trusted root (or the certificate
/// be one of them, as OpenSSL accepts and webpki does not); `verify-full` also compares the
/// name in the certificate with the host connected to.
#[derive(Debug)]
struct Checked {
    webpki: Arc<WebPkiServerVerifier>,
    /// The DER of every `sslrootcert` certificate.
    anchors: Vec<Vec<u8>>,
    check_name: bool,
}

impl ServerCertVerifier for Checked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let seconds = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        if pgpilot_values::x509::is_trusted_as_itself(end_entity, &self.anchors, seconds) {
            if self.check_name {
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
            }
            return Ok(ServerCertVerified::assertion());
        }
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// tokio-postgres's TLS hook over one rustls client configuration.
#[derive(Clone)]
pub(crate) struct PgTls(Arc<ClientConfig>);

impl PgTls {
    pub(crate) fn new(config: ClientConfig) -> Self {
        PgTls(Arc::new(config))
    }
}

impl<S> MakeTlsConnect<S> for PgTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type TlsConnect = PgTlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<PgTlsConnect> {
        let name = ServerName::try_from(domain.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(PgTlsConnect {
            connector: tokio_rustls::TlsConnector::from(self.0.clone()),
            name,
        })
    }
}

pub(crate) struct PgTlsConnect {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for PgTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<PgTlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            self.connector
                .connect(self.name, stream)
                .await
                .map(PgTlsStream)
        })
    }
}

pub(crate) struct PgTlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PgTlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PgTlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for PgTlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, conn) = self.0.get_ref();
        conn.peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| server_end_point(cert.as_ref()))
            .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
    }
}

/// RFC 5929 `tls-server-end-point`: the server certificate hashed with the hash of its
/// signature algorithm (SHA-256 for MD5 and SHA-1). `None` for an algorithm without one
/// (Ed25519, RSA-PSS) or one ring lacks (SHA-224), as PostgreSQL itself then refuses channel
/// binding.
fn server_end_point(der: &[u8]) -> Option<Vec<u8>> {
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    let algorithm = match pgpilot_values::x509::signature_algorithm(der)? {
        [p @ .., last] if p == RSA => match last {
            0x04 | 0x05 | 0x0b => &ring::digest::SHA256,
            0x0c => &ring::digest::SHA384,
            0x0d => &ring::digest::SHA512,
            _ => return None,
        },
        [p @ .., last] if p == ECDSA_SHA2 => match last {
            0x02 => &ring::digest::SHA256,
            0x03 => &ring::digest::SHA384,
            0x04 => &ring::digest::SHA512,
            _ => return None,
        },
        o if o == ECDSA_SHA1 => &ring::digest::SHA256,
        _ => return None,
    };
    Some(ring::digest::digest(algorithm, der).as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_point_hash_follows_the_signature_algorithm() {
        // SEQUENCE { SEQUENCE {} (tbs), SEQUENCE { OID sha384WithRSAEncryption } }
        let oid = [
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c,
        ];
        let mut alg = vec![0x30, oid.len() as u8];
        alg.extend(oid);
        let mut body = vec![0x30, 0x00];
        body.extend(&alg);
        let mut cert = vec![0x30, body.len() as u8];
        cert.extend(&body);
        let hash = server_end_point(&cert).unwrap();
        assert_eq!(hash.len(), 48, "SHA-384");
        assert_eq!(
            hash,
            ring::digest::digest(&ring::digest::SHA384, &cert)
                .as_ref()
                .to_vec()
        );
        // Ed25519 (1.3.101.112): no hash, no binding.
        let mut ed = cert.clone();
        let at = ed.len() - oid.len();
        ed.truncate(at);
        assert_eq!(server_end_point(&ed), None);
    }

    #[test]
    fn missing_files_are_named_with_their_key() {
        let mut o = std::collections::BTreeMap::new();
        o.insert("sslmode".to_string(), "verify-ca".to_string());
        o.insert("sslrootcert".to_string(), "/nonexistent/ca.pem".to_string());
        let e = client_config("replication", &o).unwrap_err().to_string();
        assert!(
            e.contains("postgresql.authentication.replication.sslrootcert")
                && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        o.insert("sslmode".to_string(), "require".to_string());
        o.insert("sslcert".to_string(), "/nonexistent/client.pem".to_string());
        let e = client_config("superuser", &o).unwrap_err().to_string();
        assert!(
            e.contains("postgresql.authentication.superuser.sslcert"),
            "{e}"
        );
    }
}
