//! HTTPS for the REST API (`restapi.certfile`/`keyfile`/`cafile`/`verify_client`) and for the
//! outbound calls of agents and the CLI (`ctl.certfile`/`keyfile`/`cacert`/`insecure`), with
//! rustls and the `ring` provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pgpilot_dcs::values::x509;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("{0}")]
    Config(String),
}

/// Makes `ring` the process-wide rustls provider (idempotent).
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `restapi.verify_client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyClient {
    /// No client certificate is asked for.
    None,
    /// Asked for; required only by the mutating endpoints (403 `client certificate required`).
    Optional,
    /// Required by the handshake itself.
    Required,
}

/// The server side: what `serve` needs to speak HTTPS.
#[derive(Clone)]
pub struct ServerTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub verify_client: VerifyClient,
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |msg: String| TlsError::File {
        path: path.to_path_buf(),
        msg,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate found".into()));
    }
    Ok(certs)
}

fn roots(path: &Path) -> Result<(RootCertStore, Vec<Vec<u8>>), TlsError> {
    let mut roots = RootCertStore::empty();
    let mut anchors = Vec::new();
    for c in certs(path)? {
        anchors.push(c.as_ref().to_vec());
        roots.add(c).map_err(|e| TlsError::File {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
    }
    Ok((roots, anchors))
}

/// webpki's client verification, plus OpenSSL's acceptance of a client certificate that is
/// itself one of the `cafile` certificates (Patroni's acceptance suite uses one self-signed
/// certificate as CA, server and client certificate; webpki refuses it as "CA used as end
/// entity", Patroni's Python/OpenSSL server takes it).
#[derive(Debug)]
struct ClientVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    anchors: Vec<Vec<u8>>,
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.webpki.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.webpki.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let seconds = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        if x509::is_trusted_as_itself(end_entity, &self.anchors, seconds) {
            return Ok(ClientCertVerified::assertion());
        }
        self.webpki
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// webpki's server verification, plus OpenSSL's acceptance of a server certificate that is
/// itself one of the `cacert` certificates (the self-signed certificate Patroni's acceptance
/// suite uses as CA and server certificate), whose names must still include the host asked.
#[derive(Debug)]
struct ServerVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    anchors: Vec<Vec<u8>>,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seconds = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        if x509::is_trusted_as_itself(end_entity, &self.anchors, seconds) {
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&parsed, server_name)?;
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Builds the server configuration. `verify_client` is `none`, `optional` or `required`; the
/// last two need `cafile`. `ciphers` (`restapi.ciphers`, an OpenSSL cipher string) limits the
/// TLS 1.2 suites (see [`crate::ciphers`]); the words of it that select nothing known are
/// logged.
pub fn server_tls(
    certfile: &Path,
    keyfile: &Path,
    keyfile_password: Option<&str>,
    cafile: Option<&Path>,
    verify_client: &str,
    ciphers: Option<&str>,
) -> Result<ServerTls, TlsError> {
    install_provider();
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(spec) = ciphers {
        let (tls12, unknown) = crate::ciphers::tls12_suites(spec).map_err(TlsError::Config)?;
        if !unknown.is_empty() {
            tracing::warn!(
                "restapi.ciphers: ignored (no TLS 1.2 suite of rustls matches them): {}",
                unknown.join(", ")
            );
        }
        provider
            .cipher_suites
            .retain(|s| s.version() == &rustls::version::TLS13);
        provider.cipher_suites.extend(tls12);
    }
    let chain = certs(certfile)?;
    let key = private_key(keyfile, keyfile_password, "restapi.keyfile_password")?;
    let mode = match verify_client {
        "none" | "" => VerifyClient::None,
        "optional" => VerifyClient::Optional,
        "required" => VerifyClient::Required,
        other => {
            return Err(TlsError::Config(format!(
                "restapi.verify_client: {other} is not one of none, optional, required"
            )))
        }
    };
    let builder = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(format!("restapi.ciphers: {e}")))?;
    let builder = if mode == VerifyClient::None {
        builder.with_no_client_auth()
    } else {
        let ca = cafile
            .ok_or_else(|| TlsError::Config("restapi.verify_client needs restapi.cafile".into()))?;
        let (roots, anchors) = roots(ca)?;
        let verifier = WebPkiClientVerifier::builder(Arc::new(roots));
        let verifier = if mode == VerifyClient::Optional {
            verifier.allow_unauthenticated()
        } else {
            verifier
        };
        let verifier = verifier
            .build()
            .map_err(|e| TlsError::Config(format!("restapi.cafile: {e}")))?;
        builder.with_client_cert_verifier(Arc::new(ClientVerifier {
            webpki: verifier,
            anchors,
        }))
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("restapi.certfile/keyfile: {e}")))?;
    Ok(ServerTls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        verify_client: mode,
    })
}

/// TLS settings of an HTTP client.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientTls {
    /// CA to verify servers with (`ctl.cacert`, else `restapi.cafile`).
    pub cacert: Option<PathBuf>,
    /// Client certificate and key (`ctl.certfile`/`ctl.keyfile`).
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    /// Do not verify server certificates.
    pub insecure: bool,
    /// Password of an encrypted `keyfile` (`ctl.keyfile_password`).
    pub keyfile_password: Option<String>,
}

const KEY_PASSWORD_CTL: &str = "ctl.keyfile_password";

/// The private key of a PEM file: plain (PKCS#8, PKCS#1 or SEC1), or PKCS#8 encrypted with a
/// password (`-----BEGIN ENCRYPTED PRIVATE KEY-----`, PBES2 as `openssl pkcs8 -topk8 -v2` and
/// Python's `cryptography` write it), decrypted with `password` (named `setting` in errors).
/// OpenSSL's legacy encryption (`Proc-Type: 4,ENCRYPTED` in a `BEGIN RSA PRIVATE KEY`) is
/// refused with the command that converts it.
pub fn private_key(
    path: &Path,
    password: Option<&str>,
    setting: &str,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let err = |msg: String| TlsError::File {
        path: path.to_path_buf(),
        msg,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    match pgpilot_values::keys::decrypt_private_key(
        &text,
        password,
        setting,
        &path.display().to_string(),
    )
    .map_err(err)?
    {
        Some(der) => Ok(PrivateKeyDer::Pkcs8(der.into())),
        None => PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| err(e.to_string())),
    }
}

/// A PEM text without its private key blocks (a certificate file holding its key too).
fn strip_private_keys(pem: &str) -> String {
    let mut out = String::new();
    let mut in_key = false;
    for line in pem.lines() {
        if line.starts_with("-----BEGIN") && line.contains("PRIVATE KEY") {
            in_key = true;
        }
        if !in_key {
            out.push_str(line);
            out.push('\n');
        }
        if line.starts_with("-----END") && line.contains("PRIVATE KEY") {
            in_key = false;
        }
    }
    out
}

/// A private key as PEM (`PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` as its format).
fn key_pem(key: &PrivateKeyDer<'_>, path: &Path) -> Result<String, TlsError> {
    let (label, der) = match key {
        PrivateKeyDer::Pkcs8(k) => ("PRIVATE KEY", k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => ("RSA PRIVATE KEY", k.secret_pkcs1_der()),
        PrivateKeyDer::Sec1(k) => ("EC PRIVATE KEY", k.secret_sec1_der()),
        _ => {
            return Err(TlsError::File {
                path: path.to_path_buf(),
                msg: "unsupported private key format".into(),
            })
        }
    };
    pkcs8::der::pem::encode_string(label, pkcs8::der::pem::LineEnding::LF, der).map_err(|e| {
        TlsError::File {
            path: path.to_path_buf(),
            msg: e.to_string(),
        }
    })
}

/// A `reqwest` builder with these TLS settings.
pub fn client_builder(tls: &ClientTls) -> Result<reqwest::ClientBuilder, TlsError> {
    install_provider();
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| TlsError::File {
            path: p.to_path_buf(),
            msg: e.to_string(),
        })
    };
    let mut b = reqwest::Client::builder().tls_danger_accept_invalid_certs(tls.insecure);
    if tls.insecure {
        b = b.tls_danger_accept_invalid_hostnames(true);
    }
    let identity = match &tls.certfile {
        Some(cert) => Some((cert, tls.keyfile.as_ref().unwrap_or(cert))),
        None => None,
    };
    // With a CA file the whole TLS configuration is ours (rustls, with the verifier above);
    // reqwest's own roots and identity are not used then.
    if let (Some(ca), false) = (&tls.cacert, tls.insecure) {
        let (roots, anchors) = roots(ca)?;
        let webpki = WebPkiServerVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|e| TlsError::File {
                path: ca.clone(),
                msg: e.to_string(),
            })?;
        let config = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServerVerifier { webpki, anchors }));
        let config = match identity {
            Some((cert, key)) => {
                let chain = certs(cert)?;
                let key = private_key(key, tls.keyfile_password.as_deref(), KEY_PASSWORD_CTL)?;
                config
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsError::File {
                        path: cert.clone(),
                        msg: e.to_string(),
                    })?
            }
            None => config.with_no_client_auth(),
        };
        return Ok(b.tls_backend_preconfigured(config));
    }
    if let Some((cert, key)) = identity {
        // The certificate(s) of `cert`, then the key as plain PKCS#8 PEM (decrypted when
        // ctl.keyfile_password is set): reqwest reads one PEM holding both.
        let mut pem = read(cert)?;
        if key != cert || tls.keyfile_password.is_some() {
            let der = private_key(key, tls.keyfile_password.as_deref(), KEY_PASSWORD_CTL)?;
            let text = String::from_utf8_lossy(&pem).into_owned();
            pem = strip_private_keys(&text).into_bytes();
            pem.push(b'\n');
            pem.extend(key_pem(&der, key)?.into_bytes());
        }
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| TlsError::File {
            path: cert.clone(),
            msg: e.to_string(),
        })?;
        b = b.identity(id);
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs openssl (the keys are made the way users make them); `None` when it is missing.
    fn openssl(dir: &Path, args: &[&str]) -> Option<()> {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()?;
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(())
    }

    /// An encrypted PKCS#8 key is decrypted with its password into the same key; without the
    /// password, with a wrong one, or in OpenSSL's legacy encryption it is refused with a
    /// message that names the file and the setting; the server and client configurations
    /// take it.
    #[test]
    fn encrypted_keys_need_their_password() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let made = openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "key.pem",
                "-out",
                "cert.pem",
                "-subj",
                "/CN=localhost",
                "-days",
                "1",
            ],
        );
        if made.is_none() {
            eprintln!("SKIPPED: openssl is not installed");
            return;
        }
        openssl(
            d,
            &[
                "pkcs8",
                "-topk8",
                "-v2",
                "aes-256-cbc",
                "-in",
                "key.pem",
                "-out",
                "enc.pem",
                "-passout",
                "pass:s3cret",
            ],
        );
        openssl(
            d,
            &[
                "genrsa",
                "-aes256",
                "-traditional",
                "-passout",
                "pass:s3cret",
                "-out",
                "legacy.pem",
                "2048",
            ],
        );
        let setting = "restapi.keyfile_password";
        let plain = private_key(&d.join("key.pem"), None, setting).unwrap();
        let decrypted = private_key(&d.join("enc.pem"), Some("s3cret"), setting).unwrap();
        assert_eq!(plain.secret_der(), decrypted.secret_der());

        let e = private_key(&d.join("enc.pem"), None, setting)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("enc.pem") && e.contains("restapi.keyfile_password is not set"),
            "{e}"
        );
        let e = private_key(&d.join("enc.pem"), Some("wrong"), setting)
            .unwrap_err()
            .to_string();
        assert!(e.contains("can not decrypt the private key"), "{e}");
        let e = private_key(&d.join("legacy.pem"), Some("s3cret"), setting)
            .unwrap_err()
            .to_string();
        assert!(e.contains("openssl pkcs8 -topk8"), "{e}");

        assert!(server_tls(
            &d.join("cert.pem"),
            &d.join("enc.pem"),
            Some("s3cret"),
            None,
            "none",
            None
        )
        .is_ok());
        assert!(server_tls(
            &d.join("cert.pem"),
            &d.join("enc.pem"),
            None,
            None,
            "none",
            None
        )
        .is_err());
        // Both client paths: reqwest's own (no CA) and ours (with a CA).
        for cacert in [None, Some(d.join("cert.pem"))] {
            let tls = ClientTls {
                cacert,
                certfile: Some(d.join("cert.pem")),
                keyfile: Some(d.join("enc.pem")),
                insecure: false,
                keyfile_password: Some("s3cret".into()),
            };
            client_builder(&tls).unwrap().build().unwrap();
        }
    }
}
