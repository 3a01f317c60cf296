//! `restapi.ciphers`: an OpenSSL cipher string (what Patroni hands to Python's
//! `SSLContext.set_ciphers`) applied to the TLS 1.2 suites rustls offers.
//!
//! As with OpenSSL, the string restricts TLS 1.2 and below only; TLS 1.3 suites are always
//! offered. Elements are separated by `:`, `,` or spaces and read left to right: a name or alias
//! adds its suites, `-X` removes them (they may come back), `!X` removes them for good, `+X`
//! moves them to the end; `A+B` is the suites in both. Names are OpenSSL's
//! (`ECDHE-RSA-AES128-GCM-SHA256`) or IANA's (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`); the
//! aliases are the ones that select among rustls's suites (`ALL`, `DEFAULT`, `HIGH`, `ECDHE`,
//! `aRSA`, `AESGCM`, `CHACHA20`, ...). OpenSSL suites rustls does not implement (`DHE-*`, CBC
//! modes, RC4, ...) and classes with nothing rustls offers (`aNULL`, `MD5`, `SSLv3`, ...) select
//! nothing, as they would select nothing acceptable; a word that is neither is reported, so a
//! typo is not taken silently. A string that leaves no TLS 1.2 suite is refused, as OpenSSL
//! refuses it ("No cipher can be selected").

use rustls::crypto::ring::cipher_suite as cs;
use rustls::SupportedCipherSuite;

/// rustls's TLS 1.2 suites with their OpenSSL names, in rustls's order of preference.
fn suites() -> [(&'static str, SupportedCipherSuite); 6] {
    [
        (
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        (
            "ECDHE-RSA-AES256-GCM-SHA384",
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "ECDHE-RSA-AES128-GCM-SHA256",
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "ECDHE-RSA-CHACHA20-POLY1305",
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ]
}

/// Aliases and classes that select among [`SUITES`] (by index), OpenSSL's meaning.
fn alias(word: &str) -> Option<Vec<usize>> {
    let table = suites();
    let all = || (0..table.len()).collect::<Vec<_>>();
    let by = |f: fn(&str) -> bool| -> Vec<usize> {
        (0..table.len()).filter(|&i| f(table[i].0)).collect()
    };
    Some(match word {
        "ALL" | "DEFAULT" | "HIGH" | "TLSv1.2" | "ECDHE" | "EECDH" | "kECDHE" | "kEECDH"
        | "AEAD" => all(),
        "SHA256" => by(|n| n.ends_with("SHA256") || n.contains("CHACHA20")),
        "SHA384" => by(|n| n.ends_with("SHA384")),
        "FIPS" => by(|n| !n.contains("CHACHA20")),
        "COMPLEMENTOFDEFAULT" => Vec::new(),
        "aRSA" | "RSA" => by(|n| n.starts_with("ECDHE-RSA")),
        "aECDSA" | "ECDSA" => by(|n| n.starts_with("ECDHE-ECDSA")),
        "AESGCM" | "AES" => by(|n| n.contains("GCM")),
        "AES128" => by(|n| n.contains("AES128")),
        "AES256" => by(|n| n.contains("AES256")),
        "CHACHA20" => by(|n| n.contains("CHACHA20")),
        // Classes rustls offers nothing of.
        "aNULL" | "eNULL" | "NULL" | "COMPLEMENTOFALL" | "MEDIUM" | "LOW" | "EXPORT" | "MD5"
        | "SHA1" | "SHA" | "RC4" | "3DES" | "DES" | "IDEA" | "SEED" | "CAMELLIA" | "ARIA"
        | "PSK" | "SRP" | "DSS" | "aDSS" | "DH" | "DHE" | "EDH" | "kDHE" | "kEDH" | "ADH"
        | "AECDH" | "kRSA" | "AESCCM" | "AESCCM8" | "SSLv3" | "SSLv2" | "SSLv1" | "TLSv1"
        | "TLSv1.0" | "TLSv1.1" | "GOST94" | "GOST89MAC" | "kGOST" | "CBC" => Vec::new(),
        _ => return None,
    })
}

/// The suites `word` names: an OpenSSL or IANA suite name, an alias, or `None`.
fn group(word: &str) -> Option<Vec<usize>> {
    if let Some(i) = suites()
        .iter()
        .position(|(openssl, suite)| *openssl == word || suite_name(*suite) == word)
    {
        return Some(vec![i]);
    }
    if let Some(g) = alias(word) {
        return Some(g);
    }
    // A real OpenSSL suite name rustls does not implement (DHE, CBC, RC4, ...): nothing.
    let openssl_like = word.contains('-')
        && word
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-');
    let iana_like = word.starts_with("TLS_") || word.starts_with("SSL_");
    (openssl_like || iana_like).then(Vec::new)
}

fn suite_name(s: SupportedCipherSuite) -> String {
    format!("{:?}", s.suite())
}

/// The TLS 1.2 suites `spec` selects, in order, and the words it did not understand (reported
/// by the caller). `Err` when no TLS 1.2 suite is left.
pub fn tls12_suites(spec: &str) -> Result<(Vec<SupportedCipherSuite>, Vec<String>), String> {
    let mut list: Vec<usize> = Vec::new();
    let mut killed: Vec<usize> = Vec::new();
    let mut unknown = Vec::new();
    for element in spec
        .split([':', ',', ' '])
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        if element.starts_with('@') {
            // @STRENGTH, @SECLEVEL=n: orderings and key-size floors rustls decides itself.
            unknown.push(element.to_string());
            continue;
        }
        let (op, body) = match element.chars().next() {
            Some(c @ ('!' | '-' | '+')) => (c, &element[1..]),
            _ => (' ', element),
        };
        // `A+B`: the suites in both.
        let mut selected: Option<Vec<usize>> = None;
        let mut understood = true;
        for word in body.split('+').filter(|w| !w.is_empty()) {
            match group(word) {
                Some(g) => {
                    selected = Some(match selected {
                        None => g,
                        Some(prev) => prev.into_iter().filter(|i| g.contains(i)).collect(),
                    })
                }
                None => {
                    unknown.push(word.to_string());
                    understood = false;
                }
            }
        }
        let selected = match selected {
            Some(s) if understood => s,
            _ => continue,
        };
        match op {
            '!' => {
                list.retain(|i| !selected.contains(i));
                killed.extend(selected);
            }
            '-' => list.retain(|i| !selected.contains(i)),
            '+' => {
                let (moved, kept): (Vec<usize>, Vec<usize>) =
                    list.iter().partition(|i| selected.contains(i));
                list = kept.into_iter().chain(moved).collect();
            }
            _ => {
                for i in selected {
                    if !list.contains(&i) && !killed.contains(&i) {
                        list.push(i);
                    }
                }
            }
        }
    }
    if list.is_empty() {
        return Err(format!(
            "restapi.ciphers: {spec:?} selects none of the TLS 1.2 suites pgpilot offers ({})",
            suites().map(|(n, _)| n).join(", ")
        ));
    }
    let table = suites();
    Ok((list.into_iter().map(|i| table[i].1).collect(), unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(spec: &str) -> Vec<&'static str> {
        let (selected, _) = tls12_suites(spec).unwrap();
        selected
            .iter()
            .map(|s| suites().iter().find(|(_, x)| x == s).unwrap().0)
            .collect()
    }

    #[test]
    fn patronis_example_keeps_the_ecdhe_gcm_suites_in_its_order() {
        // The example of Patroni's documentation: DHE suites are not in rustls, the
        // protocol exclusions change nothing it offers.
        let spec = "ECDHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES128-GCM-SHA256:!SSLv1:!SSLv2:!SSLv3:!TLSv1:!TLSv1.1";
        assert_eq!(
            names(spec),
            ["ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-GCM-SHA256"]
        );
        assert!(tls12_suites(spec).unwrap().1.is_empty());
    }

    #[test]
    fn aliases_exclusions_and_intersections() {
        assert_eq!(names("HIGH:!aNULL:!MD5").len(), suites().len());
        assert_eq!(
            names("ECDHE+AESGCM:!aECDSA"),
            ["ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-GCM-SHA256"]
        );
        // `-` removes, a later element brings back; `!` is for good.
        assert_eq!(names("CHACHA20:-aRSA:aRSA+CHACHA20").len(), 2);
        assert_eq!(
            names("CHACHA20:!aRSA:aRSA+CHACHA20"),
            ["ECDHE-ECDSA-CHACHA20-POLY1305"]
        );
        // `+` moves to the end.
        assert_eq!(
            names("AES128:CHACHA20:+aECDSA"),
            [
                "ECDHE-RSA-AES128-GCM-SHA256",
                "ECDHE-RSA-CHACHA20-POLY1305",
                "ECDHE-ECDSA-AES128-GCM-SHA256",
                "ECDHE-ECDSA-CHACHA20-POLY1305"
            ]
        );
        assert_eq!(
            names("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
            ["ECDHE-RSA-AES128-GCM-SHA256"]
        );
    }

    #[test]
    fn unknown_words_are_reported_and_nothing_selectable_is_refused() {
        let (_, unknown) = tls12_suites("HIGH:HIHG:@STRENGTH").unwrap();
        assert_eq!(unknown, ["HIHG", "@STRENGTH"]);
        let e = tls12_suites("DHE-RSA-AES256-GCM-SHA384:RC4").unwrap_err();
        assert!(e.contains("selects none"), "{e}");
        assert!(tls12_suites("").is_err());
        assert!(tls12_suites("HIHG").is_err());
    }
}
