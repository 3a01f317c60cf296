//! Synchronous and quorum replication as pure functions (spec/ha-loop.md §5.7–5.8).
//!
//! Two things say who has an acknowledged commit: `synchronous_standby_names` (ssn) on the
//! primary decides which standbys a commit waits for, and the `/sync` key decides which members
//! may be promoted. pgpilot's promise — no acknowledged commit lost by a failover — holds when
//! every commit quorum overlaps every promotion quorum, at every moment, including the moments
//! between changing one and then the other. This module computes the next safe step; the agent
//! carries it out (one write at a time) and observes the outcome.
//!
//! The overlap rule, for ssn `ANY n (S)` (or `n (S)`, where `n = |S|`) and `/sync` voters `V`
//! with `quorum q`: a commit is on at least `n` members of `S`; a voter wins a race only when `q`
//! other voters are not ahead of it, a non-voter needs `q + 1`. So some vote comes from a member
//! that has the commit whenever `n + q ≥ |S ∪ V|` ([`overlaps`]). In `on` mode `q = 0` and `n =
//! |S|`: `V ⊆ S` is the same rule. After ssn changes, commits acknowledged under the old value
//! are only known to be on the new set once `n` members of it reached the primary's flush LSN of
//! the moment of the change ("confirmed"); until then `/sync` is left alone.

use std::collections::BTreeSet;

use pgpilot_config::SyncMode;
use pgpilot_dcs::SyncState;

/// The name Patroni puts into ssn when strict mode has no standby: commits wait forever.
pub const PLACEHOLDER: &str = "__patroni_strict_sync_replica_placeholder__";

/// The synchronous-replication settings of the dynamic configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncParams {
    pub mode: SyncMode,
    pub strict: bool,
    /// `synchronous_node_count` (≥ 1).
    pub node_count: usize,
    /// `maximum_lag_on_syncnode`: standbys further behind than this (bytes) are not picked;
    /// `None` = no limit.
    pub max_lag: Option<u64>,
}

impl SyncParams {
    pub fn off() -> SyncParams {
        SyncParams {
            mode: SyncMode::Off,
            strict: false,
            node_count: 1,
            max_lag: None,
        }
    }

    pub fn active(&self) -> bool {
        self.mode.is_active()
    }

    pub fn quorum(&self) -> bool {
        self.mode.is_quorum()
    }
}

/// A standby as the primary sees it: member tags joined with its `pg_stat_replication` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standby {
    pub name: String,
    /// `nosync` as Patroni derives it (the boolean tag, else `sync_priority <= 0`): never
    /// synchronous.
    pub nosync: bool,
    /// `sync_priority` (default 1; 0 with `nosync`): ranks the candidates.
    pub sync_priority: i64,
    pub nofailover: bool,
    /// Connected and `state = streaming`.
    pub streaming: bool,
    /// The LSN column that matches `synchronous_commit` (write, flush or replay).
    pub lsn: u64,
    /// `pg_stat_replication.sync_state` (`sync`, `quorum`, `potential`, `async`).
    pub sync_state: String,
}

/// `synchronous_standby_names` as pgpilot manages it. `numsync == 0` means empty (async).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ssn {
    pub numsync: usize,
    /// Sorted member names (or [`PLACEHOLDER`]).
    pub names: BTreeSet<String>,
}

impl Ssn {
    pub fn empty() -> Ssn {
        Ssn::default()
    }

    fn new(numsync: usize, names: BTreeSet<String>) -> Ssn {
        if names.is_empty() || numsync == 0 {
            return Ssn::empty();
        }
        Ssn {
            numsync: numsync.min(names.len()),
            names,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.numsync == 0
    }

    /// The text for postgresql.conf: `name`, `N (a,b)` or `ANY N (a,b)` (quorum); names quoted
    /// unless they are plain identifiers other than `first`/`any`.
    pub fn render(&self, quorum: bool) -> String {
        if self.is_empty() {
            return String::new();
        }
        let names: Vec<String> = self.names.iter().map(|n| quote_name(n)).collect();
        if quorum {
            return format!("ANY {} ({})", self.numsync, names.join(","));
        }
        if names.len() == 1 {
            return names.join("");
        }
        format!("{} ({})", self.numsync, names.join(","))
    }
}

fn quote_name(name: &str) -> String {
    let mut chars = name.chars();
    let plain = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && !name.eq_ignore_ascii_case("first")
        && !name.eq_ignore_ascii_case("any");
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// The `/sync` key as seen by `me`: voters and quorum when we are its leader, else nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncKey {
    pub voters: BTreeSet<String>,
    pub quorum: usize,
}

impl SyncKey {
    pub fn of(sync: Option<&SyncState>, me: &str) -> Option<SyncKey> {
        let s = sync?;
        if !s.leader_matches(me) {
            return None;
        }
        Some(SyncKey {
            voters: s.voters().map(str::to_string).collect(),
            quorum: s.quorum as usize,
        })
    }

    /// The JSON document for `/sync`.
    pub fn document(&self, leader: &str) -> String {
        let standby = if self.voters.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::Value::from(self.voters.iter().cloned().collect::<Vec<_>>().join(","))
        };
        serde_json::json!({"leader": leader, "sync_standby": standby, "quorum": self.quorum})
            .to_string()
    }
}

/// The overlap rule of the module docs. A key without voters lets nobody but its leader's
/// equals win (the only vote left is the former leader's), so it is safe with any ssn; an empty
/// ssn (commits acknowledged by the primary alone) is safe only with such a key.
pub fn overlaps(ssn: &Ssn, key: &SyncKey) -> bool {
    if key.voters.is_empty() {
        return true;
    }
    if ssn.is_empty() {
        return false;
    }
    let union: BTreeSet<&String> = ssn.names.iter().chain(key.voters.iter()).collect();
    ssn.numsync + key.quorum >= union.len()
}

/// Whether every promotion quorum of `wider` (any `quorum + 1` of its voters) holds one of
/// `key`'s: `key`'s voters are all in it, and its quorum grew by at least the voters added.
fn widens(key: &SyncKey, wider: &SyncKey) -> bool {
    key.voters.is_subset(&wider.voters)
        && wider.quorum >= key.quorum + (wider.voters.len() - key.voters.len())
}

/// Eligible standbys, best first: streaming, not `nosync`, within `max_lag` of the
/// primary; ordered by (priority, already synchronous, LSN) descending, nofailover ones last.
pub fn candidates(p: &SyncParams, standbys: &[Standby], primary_lsn: u64) -> Vec<String> {
    let mut c: Vec<&Standby> = standbys
        .iter()
        .filter(|s| s.streaming && !s.nosync)
        .filter(|s| {
            p.max_lag
                .is_none_or(|max| primary_lsn.saturating_sub(s.lsn) <= max)
        })
        .collect();
    c.sort_by(|a, b| {
        let key = |s: &Standby| {
            (
                !s.nofailover,
                s.sync_priority,
                matches!(s.sync_state.as_str(), "sync" | "quorum"),
                s.lsn,
            )
        };
        key(b).cmp(&key(a)).then_with(|| a.name.cmp(&b.name))
    });
    c.into_iter().map(|s| s.name.clone()).collect()
}

/// What the leader does next about synchronous replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncStep {
    /// Write `/sync` (CAS on the version read this cycle).
    WriteKey(SyncKey),
    /// Change `synchronous_standby_names` and reload; then remember the primary's flush LSN:
    /// the new value is confirmed when `numsync` of its names reached it.
    SetSsn(Ssn),
    /// Waiting for the new ssn to be confirmed.
    WaitConfirm,
    Nothing,
}

/// The state the leader acts on.
#[derive(Debug, Clone)]
pub struct SyncView<'a> {
    pub params: SyncParams,
    /// Current ssn (what the agent last set).
    pub ssn: &'a Ssn,
    /// Primary flush LSN when `ssn` was set.
    pub ssn_lsn: u64,
    /// `/sync` when we are its leader; `None` otherwise (absent, or another leader's).
    pub key: Option<&'a SyncKey>,
    pub standbys: &'a [Standby],
    pub primary_lsn: u64,
}

impl SyncView<'_> {
    /// Standbys in `names` that acknowledged the current ssn: synchronous per
    /// `pg_stat_replication` and at or past the flush LSN of the change.
    fn confirmed(&self, names: &BTreeSet<String>) -> BTreeSet<String> {
        self.standbys
            .iter()
            .filter(|s| {
                s.streaming
                    && matches!(s.sync_state.as_str(), "sync" | "quorum")
                    && s.lsn >= self.ssn_lsn
                    && names.iter().any(|n| n.eq_ignore_ascii_case(&s.name))
            })
            .map(|s| s.name.clone())
            .collect()
    }
}

/// The next step towards the target state, never breaking [`overlaps`] for the ssn in force
/// (the current one, and the previous one until the current is confirmed).
pub fn next_step(v: &SyncView<'_>) -> SyncStep {
    if !v.params.active() {
        return SyncStep::Nothing;
    }
    if v.params.quorum() {
        quorum_step(v)
    } else {
        priority_step(v)
    }
}

/// `synchronous_mode: on`: ssn = the `node_count` best candidates (`FIRST n`, all of them
/// required); `/sync` = the confirmed ones among them.
fn priority_step(v: &SyncView<'_>) -> SyncStep {
    let empty = SyncKey::default();
    let key = v.key.unwrap_or(&empty);
    let mut picked: BTreeSet<String> = candidates(&v.params, v.standbys, v.primary_lsn)
        .into_iter()
        .take(v.params.node_count)
        .collect();
    if v.params.strict && picked.len() < v.params.node_count {
        // Never fall back: keep the last synchronous standbys required (even if gone), else
        // the placeholder nobody can satisfy.
        for old in &key.voters {
            if picked.len() < v.params.node_count {
                picked.insert(old.clone());
            }
        }
        if picked.is_empty() {
            picked.insert(PLACEHOLDER.to_string());
        }
    }
    // 1. Drop from /sync who is not picked any more, before ssn stops waiting for them.
    let keep: BTreeSet<String> = key.voters.intersection(&picked).cloned().collect();
    if v.key.is_none() || keep != key.voters {
        return SyncStep::WriteKey(SyncKey {
            voters: keep,
            quorum: 0,
        });
    }
    // 2. ssn = picked.
    let target = Ssn::new(picked.len(), picked.clone());
    if &target != v.ssn {
        return SyncStep::SetSsn(target);
    }
    // 3. Add to /sync who confirmed.
    let mut voters = key.voters.clone();
    voters.extend(v.confirmed(&v.ssn.names));
    voters.remove(PLACEHOLDER);
    if voters != key.voters {
        return SyncStep::WriteKey(SyncKey { voters, quorum: 0 });
    }
    SyncStep::Nothing
}

/// `synchronous_mode: quorum`: ssn = `ANY numsync (active)`, `/sync` = voters `active`,
/// `quorum = |active| − numsync`, reached through states that all satisfy [`overlaps`].
fn quorum_step(v: &SyncView<'_>) -> SyncStep {
    let empty = SyncKey::default();
    let key = v.key.unwrap_or(&empty);
    let active: BTreeSet<String> = candidates(&v.params, v.standbys, v.primary_lsn)
        .into_iter()
        .collect();
    let (target_ssn, target_key) = if active.len() >= v.params.node_count || !v.params.strict {
        let n = v.params.node_count.min(active.len());
        (
            Ssn::new(n, active.clone()),
            SyncKey {
                quorum: active.len() - n,
                voters: if n == 0 { BTreeSet::new() } else { active },
            },
        )
    } else {
        // Strict with too few standbys: keep the last voters required, else the placeholder.
        let mut names = active;
        names.extend(key.voters.iter().cloned());
        let voters = names.clone();
        if names.is_empty() {
            names.insert(PLACEHOLDER.to_string());
        }
        let n = v.params.node_count.min(names.len());
        let quorum = voters.len().saturating_sub(n);
        (Ssn::new(n, names), SyncKey { voters, quorum })
    };
    // Commits acknowledged under the previous ssn may not be on the current set yet: until
    // it is confirmed, ssn may still change (every value set so far overlaps the key), the
    // key may not.
    let confirmed = v.ssn.is_empty() || v.confirmed(&v.ssn.names).len() >= v.ssn.numsync;
    if v.key.is_none() || key != &target_key {
        if confirmed && overlaps(v.ssn, &target_key) {
            return SyncStep::WriteKey(target_key);
        }
        if &target_ssn != v.ssn && overlaps(&target_ssn, key) {
            return SyncStep::SetSsn(target_ssn);
        }
        // Neither alone is safe: widen /sync to cover both the current and the target ssn.
        let mut all: BTreeSet<String> = key.voters.clone();
        all.extend(target_key.voters.iter().cloned());
        all.extend(v.ssn.names.iter().cloned());
        all.extend(target_ssn.names.iter().cloned());
        let n = match (v.ssn.numsync, target_ssn.numsync) {
            (0, t) => t,
            (c, 0) => c,
            (c, t) => c.min(t),
        };
        let quorum = all.len().saturating_sub(n);
        all.remove(PLACEHOLDER);
        let wider = SyncKey {
            voters: all,
            quorum,
        };
        // Unconfirmed, commits of an earlier ssn may be on fewer members than the current
        // ssn says: only a pure widening is safe then, one whose every promotion quorum
        // contains one of the current key (voters added, quorum raised as much). That is how a
        // standby that starts streaming is taken in while the ssn waits for one that is gone.
        let safe_unconfirmed = &wider != key && widens(key, &wider);
        if confirmed || safe_unconfirmed {
            return SyncStep::WriteKey(wider);
        }
        return SyncStep::WaitConfirm;
    }
    if &target_ssn != v.ssn {
        return SyncStep::SetSsn(target_ssn);
    }
    SyncStep::Nothing
}

/// The ssn that honours what `/sync` promises when we do not know what we set before (the
/// agent restarted while its PostgreSQL ran or was about to start as primary): every listed
/// standby required (`on`), or enough of them that any promotion quorum meets every commit
/// quorum (quorum mode); strict mode with nobody listed waits for the placeholder.
pub fn ssn_for_key(p: &SyncParams, key: Option<&SyncKey>) -> Ssn {
    let voters = key.map(|k| k.voters.clone()).unwrap_or_default();
    if voters.is_empty() {
        if p.strict {
            return Ssn::new(1, BTreeSet::from([PLACEHOLDER.to_string()]));
        }
        return Ssn::empty();
    }
    let n = if p.quorum() {
        voters
            .len()
            .saturating_sub(key.map_or(0, |k| k.quorum))
            .max(1)
    } else {
        voters.len()
    };
    Ssn::new(n, voters)
}

/// What a replica about to be promoted writes first (`/sync` with itself as leader, CAS) and
/// the ssn it starts with, so that nothing it acknowledges can be lost by a later failover.
///
/// In strict mode the former leader counts among the standbys, as in Patroni: it had every
/// commit. In strict quorum mode the new primary waits for `ANY numsync` of the former members
/// but itself, numsync = their number − quorum (Patroni's `_process_quorum_prepromote`); in
/// strict `on` mode for the former synchronous standbys, or for the former leader when there
/// were none; for the placeholder only when nobody is left. A standby streaming later is taken
/// in by widening `/sync` first (see `quorum_step`), so a dead former leader does not hold the
/// commits once another standby is there.
pub fn pre_promote(p: &SyncParams, me: &str, sync: Option<&SyncState>) -> (Ssn, SyncKey) {
    let not_me = |n: &&str| !n.eq_ignore_ascii_case(me) && *n != PLACEHOLDER;
    // `members()` is the key's leader, then its voters.
    let (others, leader, quorum): (BTreeSet<String>, Option<String>, usize) = match sync {
        Some(s) => (
            s.voters().filter(not_me).map(str::to_string).collect(),
            s.members().next().filter(not_me).map(str::to_string),
            s.quorum as usize,
        ),
        None => (BTreeSet::new(), None, 0),
    };
    if p.quorum() {
        // Strict: the former members but us, numsync = their number − quorum (Patroni).
        // Otherwise the former voters only, as before Patroni's change: a former leader that
        // is dead must not hold the commits of a cluster that may fall back to asynchronous
        // (its quorum step could not drop it before it confirms, which it never does).
        let (members, numsync) = if p.strict {
            let members: BTreeSet<String> = others.into_iter().chain(leader).collect();
            let numsync = members.len().saturating_sub(quorum);
            (members, numsync)
        } else {
            let was_voter = sync.is_some_and(|s| s.voters().any(|v| v.eq_ignore_ascii_case(me)));
            let numsync = (others.len() + usize::from(!was_voter))
                .saturating_sub(quorum)
                .min(others.len());
            (others, numsync)
        };
        if numsync > 0 {
            let key = SyncKey {
                quorum: members.len() - numsync,
                voters: members.clone(),
            };
            return (Ssn::new(numsync, members), key);
        }
        if p.strict {
            let mut names = members;
            names.insert(PLACEHOLDER.to_string());
            return (Ssn::new(1, names), SyncKey::default());
        }
        return (Ssn::empty(), SyncKey::default());
    }
    if p.strict {
        let voters = if others.is_empty() {
            leader.into_iter().collect()
        } else {
            others
        };
        let names = if voters.is_empty() {
            BTreeSet::from([PLACEHOLDER.to_string()])
        } else {
            voters.clone()
        };
        return (Ssn::new(names.len(), names), SyncKey { voters, quorum: 0 });
    }
    (Ssn::empty(), SyncKey::default())
}

/// May `me` take part in a leader race at all? (`is_healthiest_node` steps 6 and 9.) In `on`
/// mode only `/sync` members (its former leader included) may; an absent or empty key lets
/// nobody. In quorum mode anyone may race, and needs votes ([`quorum_votes_enough`]).
pub fn may_race(p: &SyncParams, me: &str, sync: Option<&SyncState>) -> bool {
    !p.active() || p.quorum() || sync.is_some_and(|s| s.matches(me, true))
}

/// Quorum mode: do the votes suffice? `votes` = voters (from `/sync`: leader and standbys) that
/// answered, have a WAL position and are not ahead of `me`.
pub fn quorum_votes_enough(sync: Option<&SyncState>, me: &str, votes: usize) -> bool {
    let Some(s) = sync else { return false };
    let quorum = s.quorum as usize;
    if s.leader_matches(me) {
        return true;
    }
    if s.matches(me, false) {
        votes >= quorum
    } else {
        votes > quorum
    }
}

/// The voting set of `/sync`: its leader and standbys ([`SyncState::members`]).
pub fn voting_set(sync: Option<&SyncState>) -> BTreeSet<String> {
    sync.map(|s| s.members().map(str::to_string).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn standby(name: &str, sync_state: &str, lsn: u64) -> Standby {
        Standby {
            name: name.into(),
            nosync: false,
            sync_priority: 1,
            nofailover: false,
            streaming: true,
            lsn,
            sync_state: sync_state.into(),
        }
    }

    fn params(mode: SyncMode, strict: bool, node_count: usize) -> SyncParams {
        SyncParams {
            mode,
            strict,
            node_count,
            max_lag: None,
        }
    }

    #[test]
    fn renders_synchronous_standby_names_like_patroni() {
        assert_eq!(Ssn::new(1, set(&["pg2"])).render(false), "pg2");
        assert_eq!(
            Ssn::new(2, set(&["postgres-1", "pg2"])).render(false),
            "2 (pg2,\"postgres-1\")"
        );
        assert_eq!(Ssn::new(1, set(&["b", "a"])).render(true), "ANY 1 (a,b)");
        assert_eq!(Ssn::new(1, set(&["first"])).render(false), "\"first\"");
        assert_eq!(Ssn::empty().render(true), "");
        assert_eq!(
            Ssn::new(1, set(&[PLACEHOLDER])).render(false),
            PLACEHOLDER,
            "a plain identifier"
        );
    }

    #[test]
    fn sync_key_document() {
        let k = SyncKey {
            voters: set(&["b", "a"]),
            quorum: 1,
        };
        assert_eq!(
            k.document("pg1"),
            r#"{"leader":"pg1","sync_standby":"a,b","quorum":1}"#
        );
        assert_eq!(
            SyncKey::default().document("pg1"),
            r#"{"leader":"pg1","sync_standby":null,"quorum":0}"#
        );
    }

    #[test]
    fn candidates_order_and_filters() {
        let mut a = standby("a", "async", 100);
        let b = standby("b", "sync", 90);
        let mut c = standby("c", "async", 200);
        c.nofailover = true;
        let mut d = standby("d", "async", 300);
        d.nosync = true;
        d.sync_priority = 0;
        // Patroni: `nosync: false` with `sync_priority: 0` may still be synchronous.
        let mut f = standby("f", "async", 50);
        f.sync_priority = 0;
        let mut e = standby("e", "async", 300);
        e.streaming = false;
        a.sync_priority = 2;
        let p = params(SyncMode::On, false, 1);
        assert_eq!(
            candidates(&p, &[a.clone(), b.clone(), c.clone(), d, e, f], 300),
            ["a", "b", "f", "c"]
        );
        let lagging = SyncParams {
            max_lag: Some(150),
            ..p
        };
        assert_eq!(candidates(&lagging, &[a, b, c], 300), ["c"]);
    }

    #[test]
    fn on_mode_adds_to_ssn_before_sync_and_removes_from_sync_first() {
        let p = params(SyncMode::On, false, 1);
        let key = SyncKey::default();
        let ssn = Ssn::empty();
        let sb = [standby("b", "async", 10)];
        let view = |ssn, key, sb| SyncView {
            params: p,
            ssn,
            ssn_lsn: 10,
            key,
            standbys: sb,
            primary_lsn: 10,
        };
        // No key yet: write it (empty) first, then ssn, then /sync after confirmation.
        assert_eq!(
            next_step(&view(&ssn, None, &sb)),
            SyncStep::WriteKey(SyncKey::default())
        );
        let want = Ssn::new(1, set(&["b"]));
        assert_eq!(
            next_step(&view(&ssn, Some(&key), &sb)),
            SyncStep::SetSsn(want.clone())
        );
        assert_eq!(next_step(&view(&want, Some(&key), &sb)), SyncStep::Nothing);
        let confirmed = [standby("b", "sync", 10)];
        let with_b = SyncKey {
            voters: set(&["b"]),
            quorum: 0,
        };
        assert_eq!(
            next_step(&view(&want, Some(&key), &confirmed)),
            SyncStep::WriteKey(with_b.clone())
        );
        // b goes away: /sync first, then ssn.
        assert_eq!(
            next_step(&view(&want, Some(&with_b), &[])),
            SyncStep::WriteKey(SyncKey::default())
        );
        assert_eq!(
            next_step(&view(&want, Some(&key), &[])),
            SyncStep::SetSsn(Ssn::empty())
        );
    }

    #[test]
    fn strict_mode_keeps_the_last_standby_or_the_placeholder() {
        let p = params(SyncMode::On, true, 1);
        let with_b = SyncKey {
            voters: set(&["b"]),
            quorum: 0,
        };
        let ssn_b = Ssn::new(1, set(&["b"]));
        let view = SyncView {
            params: p,
            ssn: &ssn_b,
            ssn_lsn: 0,
            key: Some(&with_b),
            standbys: &[],
            primary_lsn: 10,
        };
        assert_eq!(next_step(&view), SyncStep::Nothing, "b stays required");
        let empty = SyncKey::default();
        let view = SyncView {
            key: Some(&empty),
            ssn: &Ssn::empty(),
            ..view
        };
        assert_eq!(
            next_step(&view),
            SyncStep::SetSsn(Ssn::new(1, set(&[PLACEHOLDER])))
        );
    }

    #[test]
    fn pre_promote_values() {
        let on = params(SyncMode::On, false, 1);
        let s = SyncState {
            leader: Some("a".into()),
            sync_standby: Some("b,c".into()),
            quorum: 1,
            version: 3,
        };
        assert_eq!(
            pre_promote(&on, "b", Some(&s)),
            (Ssn::empty(), SyncKey::default())
        );
        let strict = params(SyncMode::On, true, 1);
        assert_eq!(
            pre_promote(&strict, "b", Some(&s)),
            (
                Ssn::new(1, set(&["c"])),
                SyncKey {
                    voters: set(&["c"]),
                    quorum: 0
                }
            )
        );
        // The only synchronous standby promoted in strict mode waits for the former leader
        // (Patroni's "take two" of strict mode), not for the placeholder.
        let only_b = SyncState {
            sync_standby: Some("b".into()),
            quorum: 0,
            ..s.clone()
        };
        assert_eq!(
            pre_promote(&strict, "b", Some(&only_b)),
            (
                Ssn::new(1, set(&["a"])),
                SyncKey {
                    voters: set(&["a"]),
                    quorum: 0
                }
            )
        );
        let q = params(SyncMode::Quorum, false, 1);
        let strict_q = params(SyncMode::Quorum, true, 1);
        assert_eq!(
            pre_promote(&strict_q, "b", Some(&only_b)),
            (
                Ssn::new(1, set(&["a"])),
                SyncKey {
                    voters: set(&["a"]),
                    quorum: 0
                }
            )
        );
        // Not strict: the former voters only, so a dead former leader holds nothing.
        assert_eq!(
            pre_promote(&q, "b", Some(&only_b)),
            (Ssn::empty(), SyncKey::default())
        );
        // Strict, leader a, voters b,c with quorum 1, b promoted: the members but b are a
        // and c, numsync = 2 - quorum = 1 (Patroni: len(members) - quorum - 1).
        let (ssn, key) = pre_promote(&strict_q, "b", Some(&s));
        assert_eq!(ssn, Ssn::new(1, set(&["a", "c"])));
        assert_eq!(key.voters, set(&["a", "c"]));
        assert_eq!(key.quorum, 1);
        assert!(overlaps(&ssn, &key));
        // Voters b,c,d with quorum 1: strict ANY 2 (a,c,d), not strict ANY 1 (c,d), each
        // with quorum 1 among them.
        let s3 = SyncState {
            sync_standby: Some("b,c,d".into()),
            ..s.clone()
        };
        let (ssn, key) = pre_promote(&strict_q, "b", Some(&s3));
        assert_eq!(ssn, Ssn::new(2, set(&["a", "c", "d"])));
        assert_eq!(key.quorum, 1);
        assert!(overlaps(&ssn, &key));
        let (ssn, key) = pre_promote(&q, "b", Some(&s3));
        assert_eq!(ssn, Ssn::new(1, set(&["c", "d"])));
        assert_eq!(key.quorum, 1);
        assert!(overlaps(&ssn, &key));
        // A member outside the key (a manual failover to e), strict: the same numsync.
        let (ssn, _) = pre_promote(&strict_q, "e", Some(&s));
        assert_eq!(ssn, Ssn::new(2, set(&["a", "b", "c"])));
    }

    /// Strict quorum mode, promoted while the former leader a is dead: ssn waits for a. When c
    /// starts streaming, `/sync` is widened first (safe unconfirmed), then ssn moves to c, so
    /// commits flow again without a; and once c confirmed, a leaves `/sync`.
    #[test]
    fn a_dead_former_leader_does_not_hold_commits_once_another_standby_streams() {
        let p = params(SyncMode::Quorum, true, 1);
        let old = SyncState {
            leader: Some("a".into()),
            sync_standby: Some("b".into()),
            quorum: 0,
            version: 3,
        };
        let (mut ssn, mut key) = pre_promote(&p, "b", Some(&old));
        assert_eq!(ssn, Ssn::new(1, set(&["a"])));
        let mut standbys = vec![standby("c", "async", 10)];
        let mut steps = Vec::new();
        for _ in 0..6 {
            let step = next_step(&SyncView {
                params: p,
                ssn: &ssn,
                ssn_lsn: 10,
                key: Some(&key),
                standbys: &standbys,
                primary_lsn: 10,
            });
            match &step {
                SyncStep::WriteKey(k) => {
                    assert!(overlaps(&ssn, k), "{k:?} against {ssn:?}");
                    key = k.clone();
                }
                SyncStep::SetSsn(n) => {
                    assert!(overlaps(n, &key), "{n:?} against {key:?}");
                    ssn = n.clone();
                    // c confirms what the new value asked for.
                    standbys = vec![standby("c", "quorum", 10)];
                }
                SyncStep::WaitConfirm | SyncStep::Nothing => {}
            }
            steps.push(step);
        }
        assert_eq!(
            steps[0],
            SyncStep::WriteKey(SyncKey {
                voters: set(&["a", "c"]),
                quorum: 1
            }),
            "{steps:?}"
        );
        assert_eq!(ssn, Ssn::new(1, set(&["c"])), "{steps:?}");
        assert_eq!(
            key,
            SyncKey {
                voters: set(&["c"]),
                quorum: 0
            },
            "{steps:?}"
        );
    }

    /// A tiny deterministic generator (xorshift) for the exhaustive walk below.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Random walks of standbys coming and going, confirming or lagging: every state the
    /// leader passes through keeps each ssn that may still hold unconfirmed commits
    /// overlapping `/sync`.
    #[test]
    fn every_transition_keeps_commit_and_promotion_quorums_overlapping() {
        let names = ["a", "b", "c", "d"];
        for mode in [SyncMode::On, SyncMode::Quorum] {
            for strict in [false, true] {
                for node_count in 1..=3 {
                    for seed in 1..=200u64 {
                        let mut rng = Rng(seed * 7919 + node_count as u64);
                        let p = params(mode, strict, node_count);
                        let mut ssn = Ssn::empty();
                        // Every ssn value since the last confirmed one.
                        let mut in_force: Vec<Ssn> = vec![Ssn::empty()];
                        let mut key: Option<SyncKey> = None;
                        let mut lsn = 100u64;
                        let mut ssn_lsn = 0u64;
                        let mut up: Vec<bool> = vec![true; names.len()];
                        for _ in 0..60 {
                            lsn += 1;
                            let r = rng.next();
                            if r.is_multiple_of(4) {
                                let i = (r / 4) as usize % names.len();
                                up[i] = !up[i];
                            }
                            let confirm = !rng.next().is_multiple_of(3);
                            let standbys: Vec<Standby> = names
                                .iter()
                                .zip(&up)
                                .filter(|(_, u)| **u)
                                .map(|(n, _)| {
                                    let listed = ssn.names.contains(*n);
                                    let state = match (listed, mode) {
                                        (true, SyncMode::Quorum) => "quorum",
                                        (true, _) => "sync",
                                        _ => "async",
                                    };
                                    standby(
                                        n,
                                        state,
                                        if confirm {
                                            lsn
                                        } else {
                                            ssn_lsn.saturating_sub(1)
                                        },
                                    )
                                })
                                .collect();
                            let view = SyncView {
                                params: p,
                                ssn: &ssn,
                                ssn_lsn,
                                key: key.as_ref(),
                                standbys: &standbys,
                                primary_lsn: lsn,
                            };
                            let confirmed_now =
                                ssn.is_empty() || view.confirmed(&ssn.names).len() >= ssn.numsync;
                            if confirmed_now {
                                in_force = vec![ssn.clone()];
                            }
                            match next_step(&view) {
                                SyncStep::WriteKey(k) => {
                                    // A voter added in `on` mode has everything acknowledged
                                    // under earlier values: it reached the LSN of the change.
                                    let old = key.as_ref().map(|k| k.voters.clone());
                                    for v in k.voters.difference(&old.unwrap_or_default()) {
                                        let s = standbys.iter().find(|s| &s.name == v);
                                        assert!(
                                            mode == SyncMode::Quorum
                                                || s.is_some_and(|s| s.lsn >= ssn_lsn),
                                            "{mode:?} strict={strict} n={node_count} seed={seed}: {v} added unconfirmed"
                                        );
                                    }
                                    key = Some(k);
                                }
                                SyncStep::SetSsn(s) => {
                                    ssn = s;
                                    ssn_lsn = lsn;
                                    in_force.push(ssn.clone());
                                }
                                SyncStep::WaitConfirm | SyncStep::Nothing => {}
                            }
                            let k = key.clone().unwrap_or_default();
                            if mode == SyncMode::On {
                                // Every commit waits for all of ssn: /sync ⊆ ssn.
                                assert!(
                                    ssn.is_empty() && k.voters.is_empty()
                                        || k.voters.iter().all(|v| ssn.names.contains(v)),
                                    "{mode:?} strict={strict} n={node_count} seed={seed}: /sync {k:?} not within ssn {ssn:?}"
                                );
                                continue;
                            }
                            for s in &in_force {
                                assert!(
                                    overlaps(s, &k),
                                    "{mode:?} strict={strict} n={node_count} seed={seed}: ssn {s:?} vs /sync {k:?}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
