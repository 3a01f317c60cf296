//! The pieces of the access check of mutating requests: the allowlist with the members'
//! addresses, Basic authentication (the expected header, its comparison, the 401 answer).

use std::net::IpAddr;

use pgpilot_dcs::Dcs;

use super::Shared;
use crate::http::Response;
use crate::write::{allowed, resolve_allowlist};

pub(super) async fn allowed_client<D: Dcs>(
    shared: &Shared<D>,
    peer: IpAddr,
    members: bool,
) -> bool {
    if allowed(peer, &shared.allowlist) {
        return true;
    }
    if !members {
        return false;
    }
    let Ok(cluster) = shared.dcs.cluster().await else {
        return false;
    };
    let hosts: Vec<String> = cluster
        .members
        .iter()
        .filter_map(|m| {
            let rest = m.data.api_url.split_once("://")?.1;
            let hostport = rest.split('/').next()?;
            let host = match hostport.rsplit_once(':') {
                Some((h, _)) => h,
                None => hostport,
            };
            Some(host.trim_matches(['[', ']']).to_string())
        })
        .collect();
    allowed(peer, &resolve_allowlist(&hosts).await)
}

pub(super) fn unauthorized(msg: &str) -> Response {
    let mut r = Response::text(401, msg);
    r.extra_headers
        .push(("WWW-Authenticate".into(), "Basic realm=\"Patroni\"".into()));
    r
}

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_basic_auth() {
        assert_eq!(base64(b"admin:admin"), "YWRtaW46YWRtaW4=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }
}
