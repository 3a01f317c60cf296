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
/// last two need `cafile`.
pub fn server_tls(
    certfile: &Path,
    keyfile: &Path,
    cafile: Option<&Path>,
    verify_client: &str,
) -> Result<ServerTls, TlsError> {
    install_provider();
    let chain = certs(certfile)?;
    let key = PrivateKeyDer::from_pem_file(keyfile).map_err(|e| TlsError::File {
        path: keyfile.to_path_buf(),
        msg: e.to_string(),
    })?;
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
    let builder = rustls::ServerConfig::builder();
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
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
                    path: key.clone(),
                    msg: e.to_string(),
                })?;
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
        let mut pem = read(cert)?;
        if key != cert {
            pem.push(b'\n');
            pem.extend(read(key)?);
        }
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| TlsError::File {
            path: cert.clone(),
            msg: e.to_string(),
        })?;
        b = b.identity(id);
    }
    Ok(b)
}
