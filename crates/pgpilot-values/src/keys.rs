//! Private keys in PEM files that may be encrypted: the REST API's `keyfile_password`,
//! `ctl.keyfile_password`, etcd's `key_password` and libpq's `sslpassword` all name the password
//! of a PKCS#8 key encrypted as `openssl pkcs8 -topk8 -v2` and Python's `cryptography` write it
//! (`-----BEGIN ENCRYPTED PRIVATE KEY-----`, PBES2). OpenSSL's legacy PEM encryption
//! (`Proc-Type: 4,ENCRYPTED`) is refused with the command that converts it.

const ENCRYPTED_BEGIN: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
const ENCRYPTED_END: &str = "-----END ENCRYPTED PRIVATE KEY-----";

/// The encrypted PKCS#8 key of `text` decrypted with `password`, as PKCS#8 DER; `Ok(None)` when
/// the text holds no encrypted key (the caller reads it as a clear key). `setting` names the
/// password's key in errors; `path` the file.
pub fn decrypt_private_key(
    text: &str,
    password: Option<&str>,
    setting: &str,
    path: &str,
) -> Result<Option<Vec<u8>>, String> {
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(format!(
            "the key is encrypted with OpenSSL's legacy PEM encryption, which pgpilot does not \
             read; convert it to encrypted PKCS#8 (same password): openssl pkcs8 -topk8 -v2 \
             aes-256-cbc -in {path} -out {path}.p8"
        ));
    }
    let Some(start) = text.find(ENCRYPTED_BEGIN) else {
        return Ok(None);
    };
    let Some(password) = password else {
        return Err(format!(
            "the private key is encrypted and {setting} is not set"
        ));
    };
    let end = text[start..]
        .find(ENCRYPTED_END)
        .map(|e| start + e + ENCRYPTED_END.len())
        .ok_or_else(|| "the encrypted private key has no END line".to_string())?;
    let unreadable =
        |e: &dyn std::fmt::Display| format!("can not read the encrypted private key: {e}");
    let (_, der) =
        pkcs8::der::pem::decode_vec(&text.as_bytes()[start..end]).map_err(|e| unreadable(&e))?;
    let info =
        pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice()).map_err(|e| unreadable(&e))?;
    let doc = info
        .decrypt(password.as_bytes())
        .map_err(|e| format!("can not decrypt the private key with {setting}: {e}"))?;
    Ok(Some(doc.as_bytes().to_vec()))
}

/// PKCS#8 DER as a clear PEM block (`-----BEGIN PRIVATE KEY-----`), for libraries that take
/// PEM only.
pub fn pkcs8_pem(der: &[u8]) -> Result<String, String> {
    pkcs8::der::pem::encode_string("PRIVATE KEY", pkcs8::der::pem::LineEnding::LF, der)
        .map_err(|e| format!("can not encode the decrypted key: {e}"))
}
