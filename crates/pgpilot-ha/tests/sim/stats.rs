//! What a run counts ([`Stats`]), summed over seeds and clusters.

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub seeds: u64,
    pub steps: u64,
    pub commits: u64,
    pub acked: u64,
    pub promotions: u64,
    pub switchovers_requested: u64,
    pub faults: BTreeMap<&'static str, u64>,
    /// Acknowledged commits lost in asynchronous mode (allowed), and synchronous ones
    /// acknowledged before a thawed agent re-created an expired leader key (`gap_mark`;
    /// excused only in runs without a watchdog, module docs).
    pub async_lost: u64,
    pub gap_lost: u64,
    /// PostgreSQL stopped by a guard at its deadline.
    pub fences: u64,
    /// Members reset by their watchdog (not pinged in time).
    pub watchdog_resets: u64,
    /// Thawed agents that renewed the leader key on a decision taken before their freeze while
    /// the key was gone (a violation, invariant 4, if their watchdog was active).
    pub stale_renewals: u64,
    /// Of those, in runs with a watchdog: agents that held the key without an active watchdog
    /// (the part of the gap the watchdog leaves open, module docs).
    pub unwatched_stale_renewals: u64,
    /// Seeds that ended without a writable leader after the quiet period.
    pub no_leader_at_end: u64,
    pub no_leader_why: BTreeMap<&'static str, u64>,
    /// The agent exited (Decision::Fatal or a failed bootstrap), by message.
    pub fatal: BTreeMap<String, u64>,
    /// Acknowledged commits lost to known bugs (tolerated in the main run), and in how many
    /// seeds.
    pub known_lost: BTreeMap<&'static str, u64>,
    pub known_seeds: BTreeMap<&'static str, u64>,
    pub by_mode: BTreeMap<String, u64>,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.seeds += o.seeds;
        self.steps += o.steps;
        self.commits += o.commits;
        self.acked += o.acked;
        self.promotions += o.promotions;
        self.switchovers_requested += o.switchovers_requested;
        for (k, v) in &o.faults {
            *self.faults.entry(k).or_default() += v;
        }
        self.async_lost += o.async_lost;
        self.gap_lost += o.gap_lost;
        self.stale_renewals += o.stale_renewals;
        self.unwatched_stale_renewals += o.unwatched_stale_renewals;
        self.fences += o.fences;
        self.watchdog_resets += o.watchdog_resets;
        self.no_leader_at_end += o.no_leader_at_end;
        for (k, v) in &o.no_leader_why {
            *self.no_leader_why.entry(k).or_default() += v;
        }
        for (k, v) in &o.fatal {
            *self.fatal.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.known_lost {
            *self.known_lost.entry(k).or_default() += v;
        }
        for (k, v) in &o.known_seeds {
            *self.known_seeds.entry(k).or_default() += v;
        }
        for (k, v) in &o.by_mode {
            *self.by_mode.entry(k.clone()).or_default() += v;
        }
    }
}
