//! The few facts pgpilot reads from an X.509 certificate itself (the TLS stacks verify the
//! rest): its signature algorithm (for channel binding) and its validity period (for a
//! self-signed certificate trusted as itself, which webpki refuses and OpenSSL accepts).
//!
//! A minimal DER walk over `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version,
//! serialNumber, signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... },
//! signatureAlgorithm SEQUENCE { OID, ... }, signatureValue }`. Anything unexpected gives
//! `None`, never a panic.

/// One DER element with tag `tag` at the start of `input`: (its content, what follows).
pub fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Any one element: (tag, content, what follows).
fn any_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    der_element(input, tag).map(|(c, r)| (tag, c, r))
}

/// The OID (content bytes) of the certificate's outer `signatureAlgorithm`.
pub fn signature_algorithm(cert: &[u8]) -> Option<&[u8]> {
    let (cert, _) = der_element(cert, 0x30)?;
    let (_, rest) = der_element(cert, 0x30)?;
    let (alg, _) = der_element(rest, 0x30)?;
    der_element(alg, 0x06).map(|(oid, _)| oid)
}

/// `notBefore` and `notAfter` as Unix seconds.
pub fn validity(cert: &[u8]) -> Option<(i64, i64)> {
    let (cert, _) = der_element(cert, 0x30)?;
    let (tbs, _) = der_element(cert, 0x30)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = any_element(rest)?.2; // version
    }
    rest = der_element(rest, 0x02)?.1; // serialNumber
    rest = der_element(rest, 0x30)?.1; // signature
    rest = der_element(rest, 0x30)?.1; // issuer
    let (validity, _) = der_element(rest, 0x30)?;
    let (t1, c1, after) = any_element(validity)?;
    let (t2, c2, _) = any_element(after)?;
    Some((time(t1, c1)?, time(t2, c2)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(tag: u8, content: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(content).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 if s.len() == 12 => {
            let yy: i64 = s[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        0x18 if s.len() == 14 => (s[..4].parse().ok()?, &s[4..]),
        _ => return None,
    };
    let n = |i: usize| rest.get(i..i + 2)?.parse::<i64>().ok();
    let (month, day, hour, min, sec) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// OpenSSL's acceptance of a peer whose certificate is itself one of the trusted
/// certificates (the self-signed certificate Patroni's acceptance suite uses as CA, server and
/// client certificate at once), which webpki refuses as "CA used as end entity": the same
/// bytes as a trust anchor, within its validity period at `now` (Unix seconds).
pub fn is_trusted_as_itself(end_entity: &[u8], anchors: &[Vec<u8>], now: i64) -> bool {
    anchors.iter().any(|a| a.as_slice() == end_entity)
        && validity(end_entity).is_some_and(|(from, to)| from <= now && now <= to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_short_and_long() {
        assert_eq!(
            der_element(&[0x30, 0x02, 1, 2, 9], 0x30),
            Some((&[1u8, 2][..], &[9u8][..]))
        );
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend(std::iter::repeat_n(7u8, 0x80));
        let (content, rest) = der_element(&long, 0x04).unwrap();
        assert_eq!(content.len(), 0x80);
        assert!(rest.is_empty());
        assert_eq!(der_element(&[0x30, 0x05, 1], 0x30), None, "truncated");
        assert_eq!(der_element(&[0x31, 0x00], 0x30), None, "wrong tag");
    }

    #[test]
    fn times() {
        assert_eq!(time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(time(0x17, b"261203160000Z"), Some(1_796_313_600));
        assert_eq!(time(0x18, b"20261203160000Z"), Some(1_796_313_600));
        assert_eq!(time(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(time(0x17, b"261303160000Z"), None, "month 13");
        assert_eq!(time(0x17, b"2612031600Z"), None, "too short");
    }

    /// A certificate skeleton: tbs { [0] v3, serial, alg, issuer, validity }, alg.
    fn skeleton(not_before: &[u8], not_after: &[u8], oid: &[u8]) -> Vec<u8> {
        fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
            let mut v = vec![tag, content.len() as u8];
            v.extend(content);
            v
        }
        let alg = tlv(0x30, &tlv(0x06, oid));
        let mut validity = tlv(0x17, not_before);
        validity.extend(tlv(0x17, not_after));
        let mut tbs = tlv(0xa0, &tlv(0x02, &[2]));
        tbs.extend(tlv(0x02, &[1]));
        tbs.extend(&alg);
        tbs.extend(tlv(0x30, &[]));
        tbs.extend(tlv(0x30, &validity));
        let mut cert = tlv(0x30, &tbs);
        cert.extend(&alg);
        tlv(0x30, &cert)
    }

    #[test]
    fn validity_and_algorithm_are_read() {
        let oid = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
        let c = skeleton(b"700101000000Z", b"700102000000Z", &oid);
        assert_eq!(validity(&c), Some((0, 86_400)));
        assert_eq!(signature_algorithm(&c), Some(&oid[..]));
        assert!(is_trusted_as_itself(&c, std::slice::from_ref(&c), 10));
        assert!(
            !is_trusted_as_itself(&c, std::slice::from_ref(&c), 86_401),
            "expired"
        );
        assert!(
            !is_trusted_as_itself(&c, &[vec![0x30, 0x00]], 10),
            "not an anchor"
        );
    }
}
