//! Certificates for HTTPS tests, made with the `openssl` command: a CA, a server certificate
//! for 127.0.0.1 and a client certificate, all signed by the CA (EC P-256, valid one day).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The PEM files of one test cluster.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `key` encrypted as PKCS#8 with `password` (`openssl pkcs8 -topk8 -v2 aes-256-cbc`), written
/// beside it as `<name>.enc`; returns its path.
pub fn encrypted_key(key: &Path, password: &str) -> PathBuf {
    let dir = key.parent().expect("the key's directory");
    let name = key.file_name().expect("the key's file name");
    let out = dir.join(format!("{}.enc", name.to_string_lossy()));
    let (inp, outp) = (key.display().to_string(), out.display().to_string());
    let pass = format!("pass:{password}");
    openssl(
        dir,
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-in",
            &inp,
            "-out",
            &outp,
            "-passout",
            &pass,
        ],
    );
    out
}

/// A fresh temporary directory with a CA and both certificates, made after the harness dropped
/// root (see [`crate::init`]), so the processes the tests start (etcd, agents) can read them.
pub fn temp_certs() -> (tempfile::TempDir, TlsFiles) {
    crate::init();
    let dir = tempfile::Builder::new()
        .prefix("pgpilot-tls-")
        .tempdir()
        .expect("create the tls dir");
    let files = make_certs(dir.path());
    (dir, files)
}

/// Writes the CA and both certificates into `dir`.
pub fn make_certs(dir: &Path) -> TlsFiles {
    std::fs::create_dir_all(dir).expect("create the tls dir");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=pgpilot test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    openssl(dir, &ca);
    for (name, cn, ext) in [
        (
            "server",
            "127.0.0.1",
            // clientAuth too: etcd's JSON gateway connects to its own TLS port with the server
            // certificate, which `--client-cert-auth` then checks as a client certificate.
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        ),
        (
            "client",
            "pgpilot test client",
            "extendedKeyUsage=clientAuth\n",
        ),
    ] {
        let subj = format!("/CN={cn}");
        let (key, csr, crt, extfile) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        std::fs::write(dir.join(&extfile), ext).expect("write the extension file");
        let mut req = vec!["req", "-subj", subj.as_str()];
        req.extend(ec);
        req.extend(["-keyout", key.as_str(), "-out", csr.as_str()]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &extfile,
                "-out",
                &crt,
            ],
        );
    }
    TlsFiles {
        ca: dir.join("ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
    }
}
