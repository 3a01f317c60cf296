//! The etcd members one client talks to, and which of them answers each request.
//!
//! etcd-client spreads its requests over every configured endpoint (tower's power-of-two-choices
//! balancer) and keeps choosing a member that is down: about half the requests then fail with
//! "tcp connect error", and a member that accepts TCP but does not answer (SIGSTOP, a hung disk)
//! holds a request until its deadline. A primary whose lease renewal failed that way demoted
//! while etcd as a whole was healthy. So pgpilot routes requests itself, as Patroni's etcd3
//! client does:
//!
//! * one [`Client`] per member; requests go to one preferred member, the one that answered last;
//! * a request that fails on a member with a transport-level error (refused, reset, timed out,
//!   "no leader") is sent to the next member at once; one that has not answered within its share
//!   of the budget is sent to the next member too, without abandoning the first (the first
//!   answer wins), so a slow but healthy cluster is not mistaken for a dead one;
//! * a member that failed is tried last until it answers again;
//! * only "no member answered before the deadline" (retry_timeout) is an error for the caller:
//!   that alone is what the HA cycle treats as a DCS failure;
//! * the members are discovered from etcd itself (`MemberList`), so a configuration that names
//!   one reachable member still finds the others; `use_proxies` turns discovery off.
//!
//! Every client is built with `require_leader`, so a member cut off from the etcd quorum refuses
//! requests and cancels watches ("no leader") instead of serving a stale view.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::{DcsError, Result};

/// The smallest share of the budget a member gets before the request is also sent to the next
/// member. A hedge costs one more request; a false "dead" costs a failover of the preferred
/// member, so the share is not made smaller than this even with many members.
pub(crate) const MIN_SHARE: Duration = Duration::from_millis(500);

/// Pause before sending a request round again after every member refused it at once (all
/// connections refused): not a busy loop, and well inside any retry_timeout.
const ROUND_PAUSE: Duration = Duration::from_millis(100);

/// One etcd member as a client sees it.
struct Node {
    /// Stable identity: positions change when discovery adds or removes members.
    id: u64,
    /// `http://host:port`.
    url: String,
    /// From the configuration (never removed by discovery).
    configured: bool,
    /// Built on first use (building needs the member when etcd auth is on).
    client: Option<Client>,
    /// When a request last failed here; `None` once it answered again.
    failed_at: Option<Instant>,
}

struct State {
    nodes: Vec<Node>,
    /// The member requests go to first: the one that answered last.
    preferred: u64,
    next_id: u64,
}

/// What one attempt sends back to [`Endpoints::call`].
struct Attempt<T> {
    id: u64,
    /// A client the attempt had to build, to keep for the next request, with the generation
    /// of the options it was built with (see [`Endpoints::replace_options`]).
    built: Option<(u64, Client)>,
    result: std::result::Result<T, etcd_client::Error>,
}

/// The members of one etcd cluster and the routing rule above.
pub(crate) struct Endpoints {
    /// How clients are built: the options, the same without the user (for an etcd whose
    /// authentication is not enabled), and their generation, bumped when they are replaced.
    options: Mutex<(ConnectOptions, ConnectOptions, u64)>,
    /// Add the members etcd reports (`use_proxies: false`).
    discover: bool,
    state: Mutex<State>,
    /// Bumped when the preferred member changes or fails: the watch stream follows it.
    moved: watch::Sender<u64>,
}

/// `host:port` or a URL → `http://host:port` (no trailing slash), the form etcd reports in
/// `MemberList`, so configured and discovered members compare equal.
pub(crate) fn normalize_url(endpoint: &str) -> String {
    let e = endpoint.trim().trim_end_matches('/');
    if e.contains("://") {
        e.to_string()
    } else {
        format!("http://{e}")
    }
}

/// Whether an error means "this member did not serve the request" (try another one), as
/// opposed to an answer from the cluster (a refused compare, an unknown lease, a permission).
pub(crate) fn is_member_failure(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    use tonic::Code;
    match e {
        E::TransportError(_) | E::IoError(_) | E::EndpointError(_) | E::Internal(_) => true,
        // The stream of a lease keepalive or a watch closed under us.
        E::WatchError(_) => true,
        E::LeaseKeepAliveError(m) => !m.contains("not found"),
        E::GRpcStatus(s) => matches!(
            s.code(),
            // Unavailable covers "no leader", "leader changed", "request timed out" and
            // connection failures; Unknown and Internal are h2/transport errors surfaced by tonic.
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Unknown
                | Code::Internal
                | Code::ResourceExhausted
                | Code::Aborted
        ),
        _ => false,
    }
}

/// The error with its causes: a transport error says only "transport error", the reason (a
/// refused connection, a TLS certificate etcd or we refused) is in its sources.
pub(crate) fn describe(e: &etcd_client::Error) -> String {
    let mut text = match e {
        etcd_client::Error::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => other.to_string(),
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        source = cause.source();
    }
    text
}

/// etcd's answer to an authentication request while auth is off: Patroni then works without a
/// token, and so do we.
fn auth_not_enabled(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("authentication is not enabled"))
}

impl Endpoints {
    /// `endpoints`: the configured members (`host:port` or URLs), in the configured order.
    /// `anonymous`: the same options without credentials (used when etcd says its
    /// authentication is not enabled).
    pub(crate) fn new(
        endpoints: &[String],
        options: ConnectOptions,
        anonymous: ConnectOptions,
        discover: bool,
    ) -> Endpoints {
        let mut nodes = Vec::new();
        for e in endpoints {
            let url = normalize_url(e);
            if !nodes.iter().any(|n: &Node| n.url == url) {
                nodes.push(Node {
                    id: nodes.len() as u64,
                    url,
                    configured: true,
                    client: None,
                    failed_at: None,
                });
            }
        }
        let (moved, _) = watch::channel(0);
        Endpoints {
            options: Mutex::new((
                options.with_require_leader(true),
                anonymous.with_require_leader(true),
                0,
            )),
            discover,
            state: Mutex::new(State {
                next_id: nodes.len() as u64,
                nodes,
                preferred: 0,
            }),
            moved,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain data; a panic elsewhere while holding it leaves it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many members are known.
    pub(crate) fn len(&self) -> usize {
        self.lock().nodes.len()
    }

    /// The URLs currently known, configured ones first (for logs and tests).
    pub(crate) fn urls(&self) -> Vec<String> {
        self.lock().nodes.iter().map(|n| n.url.clone()).collect()
    }

    /// Members in the order a request tries them: the preferred one if it did not fail, the
    /// other healthy ones in list order, then the failed ones, longest-failed first.
    fn plan(&self) -> Vec<(u64, String, Option<Client>)> {
        let st = self.lock();
        let mut healthy: Vec<&Node> = st.nodes.iter().filter(|n| n.failed_at.is_none()).collect();
        healthy.sort_by_key(|n| n.id != st.preferred);
        let mut failed: Vec<&Node> = st.nodes.iter().filter(|n| n.failed_at.is_some()).collect();
        failed.sort_by_key(|n| n.failed_at);
        healthy
            .into_iter()
            .chain(failed)
            .map(|n| (n.id, n.url.clone(), n.client.clone()))
            .collect()
    }

    /// The member that answered last, with its client, for a watch stream.
    pub(crate) fn preferred(&self) -> Option<(u64, Client)> {
        let st = self.lock();
        st.nodes
            .iter()
            .find(|n| n.id == st.preferred)
            .and_then(|n| Some((n.id, n.client.clone()?)))
    }

    /// Whether `id` is still the member to use (preferred and not failed since).
    pub(crate) fn is_current(&self, id: u64) -> bool {
        let st = self.lock();
        st.preferred == id && st.nodes.iter().any(|n| n.id == id && n.failed_at.is_none())
    }

    /// Wakes when the preferred member changes or fails.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.moved.subscribe()
    }

    /// Builds clients with `options` and `anonymous` from now on (TLS files read again after a
    /// reload) and forgets the clients built before: the next request to each member connects
    /// anew. Streams already open (the watch, the lease keepalive) go on on their connection
    /// until it breaks or moves, as an established TLS session does.
    pub(crate) fn replace_options(&self, options: ConnectOptions, anonymous: ConnectOptions) {
        {
            let mut o = self.options.lock().unwrap_or_else(|e| e.into_inner());
            let generation = o.2 + 1;
            *o = (
                options.with_require_leader(true),
                anonymous.with_require_leader(true),
                generation,
            );
        }
        for n in self.lock().nodes.iter_mut() {
            n.client = None;
        }
    }

    /// A client an attempt built, unless the options changed since.
    fn current(&self, built: Option<(u64, Client)>) -> Option<Client> {
        let (generation, client) = built?;
        let now = self.options.lock().unwrap_or_else(|e| e.into_inner()).2;
        (generation == now).then_some(client)
    }

    fn answered(&self, id: u64, built: Option<(u64, Client)>) {
        let built = self.current(built);
        let mut st = self.lock();
        let before = st.preferred;
        let Some(n) = st.nodes.iter_mut().find(|n| n.id == id) else {
            return;
        };
        if let Some(c) = built {
            n.client = Some(c);
        }
        if n.failed_at.take().is_some() {
            info!("etcd member {} answers again", n.url);
        }
        st.preferred = id;
        if before != id {
            let url = st.nodes.iter().find(|n| n.id == id).map(|n| n.url.clone());
            drop(st);
            if let Some(url) = url {
                info!("etcd requests now go to {url}");
            }
            self.moved.send_modify(|g| *g += 1);
        }
    }

    /// Marks `id` failed: it is tried last from now on.
    pub(crate) fn failed(&self, id: u64, why: &str) {
        let mut st = self.lock();
        let preferred = st.preferred == id;
        let Some(n) = st.nodes.iter_mut().find(|n| n.id == id) else {
            return;
        };
        if n.failed_at.is_none() {
            warn!("etcd member {} failed: {why}", n.url);
        }
        n.failed_at = Some(Instant::now());
        drop(st);
        if preferred {
            self.moved.send_modify(|g| *g += 1);
        }
    }

    fn keep_client(&self, id: u64, built: Option<(u64, Client)>) {
        if let Some(c) = self.current(built) {
            if let Some(n) = self.lock().nodes.iter_mut().find(|n| n.id == id) {
                n.client.get_or_insert(c);
            }
        }
    }

    /// Adds the members etcd reports and forgets discovered ones it no longer reports
    /// (configured members always stay). Nothing with `use_proxies`, or when etcd cannot be
    /// asked: discovery is a convenience, the configured members keep working without it.
    pub(crate) async fn discover(&self, deadline: Instant) {
        if !self.discover {
            return;
        }
        let listed = self
            .call("member list", deadline, |mut c| async move {
                c.member_list().await
            })
            .await;
        match listed {
            Ok((resp, _)) => {
                let urls: Vec<String> = resp
                    .members()
                    .iter()
                    .flat_map(|m| m.client_urls().iter().map(|u| normalize_url(u)))
                    .collect();
                self.merge(&urls);
            }
            Err(e) => debug!("etcd member discovery: {e}"),
        }
    }

    /// Merges a member list into the known members (see [`Endpoints::discover`]).
    fn merge(&self, urls: &[String]) {
        // A list without client URLs says nothing about where the members are.
        if urls.is_empty() {
            return;
        }
        let mut st = self.lock();
        // Only the schemes of the configured members: their connection options fit those.
        let schemes: Vec<String> = st
            .nodes
            .iter()
            .filter(|n| n.configured)
            .filter_map(|n| n.url.split_once("://").map(|(s, _)| s.to_string()))
            .collect();
        let usable: Vec<&String> = urls
            .iter()
            .filter(|u| {
                u.split_once("://")
                    .is_some_and(|(s, _)| schemes.iter().any(|k| k == s))
            })
            .collect();
        let before: Vec<String> = st.nodes.iter().map(|n| n.url.clone()).collect();
        let preferred = st.preferred;
        st.nodes
            .retain(|n| n.configured || n.id == preferred || usable.contains(&&n.url));
        for u in usable {
            if !st.nodes.iter().any(|n| n.url == *u) {
                let id = st.next_id;
                st.next_id += 1;
                st.nodes.push(Node {
                    id,
                    url: u.clone(),
                    configured: false,
                    client: None,
                    failed_at: None,
                });
            }
        }
        let after: Vec<String> = st.nodes.iter().map(|n| n.url.clone()).collect();
        if after != before {
            info!("etcd members: {}", after.join(", "));
        }
    }

    /// Sends a request built by `f` until a member answers or `deadline` passes. Returns the
    /// answer and the member that gave it. An answer that is an error from the cluster itself
    /// (see [`is_member_failure`]) is returned as [`DcsError::Request`] without trying others.
    ///
    /// The request may reach more than one member (a hedge, or a retry after a lost answer):
    /// callers use idempotent operations or compare-and-swap transactions, whose second
    /// execution is refused by the compare.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        what: &str,
        deadline: Instant,
        f: F,
    ) -> Result<(T, u64)>
    where
        T: Send + 'static,
        F: Fn(Client) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>> + Send + 'static,
    {
        let mut tasks: JoinSet<Attempt<T>> = JoinSet::new();
        let mut in_flight: Vec<u64> = Vec::new();
        let mut last_error = String::from("no etcd member configured");
        let until = tokio::time::Instant::from_std(deadline);
        'rounds: while Instant::now() < deadline {
            let plan = self.plan();
            if plan.is_empty() {
                break;
            }
            let mut next = 0;
            loop {
                let now = Instant::now();
                if now >= deadline {
                    break 'rounds;
                }
                if tasks.is_empty() {
                    if next == plan.len() {
                        // Every member of this round failed at once: start over shortly.
                        let pause = ROUND_PAUSE.min(deadline - now);
                        tokio::time::sleep(pause).await;
                        continue 'rounds;
                    }
                    let (id, url, client) = plan[next].clone();
                    next += 1;
                    in_flight.push(id);
                    tasks.spawn(self.attempt(id, url, client, f.clone()));
                    continue;
                }
                // The share of what is left of the budget that the members in flight get
                // before the next member is asked too.
                let members_left = u32::try_from(plan.len() - next + 1).unwrap_or(u32::MAX);
                let share = ((deadline - now) / members_left).max(MIN_SHARE);
                let hedge = tokio::time::Instant::from_std(now + share);
                tokio::select! {
                    joined = tasks.join_next() => {
                        let Some(joined) = joined else { continue };
                        let attempt = match joined {
                            Ok(a) => a,
                            Err(e) => {
                                // A panicking attempt is a bug; losing its member id only
                                // means it stays "in flight" until the deadline.
                                last_error = format!("request task failed: {e}");
                                continue;
                            }
                        };
                        in_flight.retain(|&i| i != attempt.id);
                        match attempt.result {
                            Ok(v) => {
                                self.answered(attempt.id, attempt.built);
                                // Members still silent lost the race: slower or dead.
                                for id in in_flight {
                                    self.failed(id, &format!("{what}: no answer while another member answered"));
                                }
                                return Ok((v, attempt.id));
                            }
                            Err(e) if is_member_failure(&e) => {
                                self.keep_client(attempt.id, attempt.built);
                                last_error = describe(&e);
                                self.failed(attempt.id, &format!("{what}: {last_error}"));
                            }
                            Err(e) => {
                                // The cluster answered: this member works.
                                self.answered(attempt.id, attempt.built);
                                return Err(DcsError::Request(describe(&e)));
                            }
                        }
                    }
                    _ = tokio::time::sleep_until(hedge), if next < plan.len() => {
                        let (id, url, client) = plan[next].clone();
                        next += 1;
                        if !in_flight.contains(&id) {
                            in_flight.push(id);
                            tasks.spawn(self.attempt(id, url, client, f.clone()));
                        }
                    }
                    _ = tokio::time::sleep_until(until) => break 'rounds,
                }
            }
        }
        for id in in_flight {
            self.failed(id, &format!("{what}: no answer before the deadline"));
        }
        Err(DcsError::Unavailable(format!(
            "{what}: no etcd member answered ({last_error})"
        )))
    }

    /// One attempt on one member; builds its client first when it has none.
    fn attempt<T, F, Fut>(
        &self,
        id: u64,
        url: String,
        client: Option<Client>,
        f: F,
    ) -> impl Future<Output = Attempt<T>> + Send + 'static
    where
        T: Send + 'static,
        F: Fn(Client) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>> + Send + 'static,
    {
        let (options, anonymous, generation) = self
            .options
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        async move {
            let (client, built) = match client {
                Some(c) => (c, None),
                None => match connect(&url, options, anonymous).await {
                    Ok(c) => (c.clone(), Some((generation, c))),
                    Err(e) => {
                        return Attempt {
                            id,
                            built: None,
                            result: Err(e),
                        }
                    }
                },
            };
            Attempt {
                id,
                built,
                result: f(client).await,
            }
        }
    }
}

/// A client for one member; without the user when etcd's authentication is not enabled.
async fn connect(
    url: &str,
    options: ConnectOptions,
    anonymous: ConnectOptions,
) -> std::result::Result<Client, etcd_client::Error> {
    match Client::connect([url], Some(options)).await {
        Err(e) if auth_not_enabled(&e) => {
            debug!("etcd {url}: authentication is not enabled; connecting without a user");
            Client::connect([url], Some(anonymous)).await
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(urls: &[&str]) -> Endpoints {
        let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
        Endpoints::new(&urls, ConnectOptions::new(), ConnectOptions::new(), true)
    }

    fn order(e: &Endpoints) -> Vec<String> {
        e.plan().into_iter().map(|(_, url, _)| url).collect()
    }

    #[test]
    fn urls_are_normalized_and_deduplicated() {
        assert_eq!(normalize_url("127.0.0.1:2379"), "http://127.0.0.1:2379");
        assert_eq!(normalize_url(" http://h:1/ "), "http://h:1");
        assert_eq!(normalize_url("https://h:1"), "https://h:1");
        let e = pool(&["a:1", "http://a:1", "b:2"]);
        assert_eq!(e.urls(), ["http://a:1", "http://b:2"]);
    }

    #[test]
    fn the_preferred_member_goes_first_and_a_failed_one_last() {
        let e = pool(&["a:1", "b:2", "c:3"]);
        assert_eq!(order(&e), ["http://a:1", "http://b:2", "http://c:3"]);
        let mut moved = e.subscribe();
        moved.borrow_and_update();
        e.failed(0, "test");
        assert!(moved.has_changed().unwrap(), "the watch is told to move");
        assert!(!e.is_current(0));
        assert_eq!(order(&e), ["http://b:2", "http://c:3", "http://a:1"]);
        e.answered(2, None);
        assert!(e.is_current(2));
        assert_eq!(order(&e), ["http://c:3", "http://b:2", "http://a:1"]);
        // Failed longest ago is tried first among the failed.
        e.failed(1, "test");
        assert_eq!(order(&e), ["http://c:3", "http://a:1", "http://b:2"]);
        // Answering again makes a member healthy again.
        e.answered(0, None);
        assert_eq!(order(&e), ["http://a:1", "http://c:3", "http://b:2"]);
    }

    #[test]
    fn discovery_adds_members_of_the_same_scheme_and_forgets_stale_ones() {
        let e = pool(&["a:1"]);
        e.merge(&[
            "http://a:1".into(),
            "http://b:2".into(),
            "https://c:3".into(),
        ]);
        assert_eq!(e.urls(), ["http://a:1", "http://b:2"]);
        e.merge(&["http://d:4".into()]);
        assert_eq!(
            e.urls(),
            ["http://a:1", "http://d:4"],
            "configured members stay"
        );
        e.merge(&[]);
        assert_eq!(
            e.urls(),
            ["http://a:1", "http://d:4"],
            "an empty list changes nothing"
        );
    }

    #[test]
    fn transport_errors_move_on_and_answers_do_not() {
        use etcd_client::Error as E;
        let status = |code| E::GRpcStatus(tonic::Status::new(code, "x"));
        assert!(is_member_failure(&status(tonic::Code::Unavailable)));
        assert!(is_member_failure(&status(tonic::Code::DeadlineExceeded)));
        assert!(!is_member_failure(&status(tonic::Code::FailedPrecondition)));
        assert!(!is_member_failure(&status(tonic::Code::NotFound)));
        assert!(!is_member_failure(&status(tonic::Code::PermissionDenied)));
        assert!(!is_member_failure(&E::LeaseKeepAliveError(
            "lease not found".into()
        )));
        assert!(is_member_failure(&E::WatchError("closed".into())));
    }
}
