//! Outbound REST calls: peers' `/patroni` during a leader race, and the duplicate-name check.

use std::time::Duration;

use serde_json::Value;

/// What a peer's `GET /patroni` says, reduced to what the leader race needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    pub name: String,
    /// The peer reports it is not in recovery (`xlog.location` present or role primary).
    pub is_primary: bool,
    /// max(received_location, replayed_location), or location for a primary.
    pub wal_position: u64,
    pub timeline: Option<u32>,
    pub nofailover: bool,
    pub failover_priority: i64,
    pub watchdog_failed: bool,
    /// The whole document, for logs.
    pub raw: Value,
}

/// HTTP client with Basic auth (`ctl.authentication`, else `restapi.authentication`).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    auth: Option<(String, String)>,
}

impl Client {
    pub fn new(auth: Option<(String, String)>) -> Client {
        let _ = auth;
        unimplemented!()
    }

    /// `GET <api_url>` (which ends in `/patroni`). `None` when unreachable, not 200, or the reply
    /// has no `xlog` (PostgreSQL not running): such a peer does not take part in the race.
    pub async fn peer_status(&self, name: &str, api_url: &str, timeout: Duration) -> Option<PeerStatus> {
        let _ = (name, api_url, timeout);
        unimplemented!()
    }

    /// The duplicate-name check: `GET <api_url host>/liveness`; `true` if anything answered
    /// with an HTTP response within `timeout`.
    pub async fn answers(&self, api_url: &str, timeout: Duration) -> bool {
        let _ = (api_url, timeout);
        unimplemented!()
    }
}
