//! What the acknowledgement log proves, without I/O: reigns, split-brain windows, write gaps.
//!
//! A *reign* is one member's time as primary on one timeline: all acknowledged transfers with
//! the same `(member, timeline)`. A switchback A → B → A gives three reigns (A comes back on a
//! newer timeline), so it is not mistaken for two primaries at once.
//!
//! A *split-brain window* is proven when some member X sent a COMMIT that was then acknowledged
//! after another member Y had already acknowledged its first transfer of a reign that started
//! after X's reign: X committed after Y had committed, and Y's reign started later, so both were
//! writable at once. The window runs from Y's first acknowledgement to the last COMMIT X sent;
//! its length is a lower bound of the real overlap (the times are the client's, and a commit
//! lies between the client sending COMMIT and receiving the answer).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::workload::Ack;

/// One member's run as primary on one timeline, seen through acknowledged transfers.
#[derive(Debug, Clone, PartialEq)]
pub struct Reign {
    pub member: usize,
    pub timeline: u32,
    pub first_ack: Instant,
    /// The last time a COMMIT that was then acknowledged was sent to this reign.
    pub last_sent: Instant,
    pub count: usize,
}

/// Two members accepting writes at once.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// The member whose reign began first and kept accepting writes.
    pub old: usize,
    /// The member that started accepting writes in the meantime.
    pub new: usize,
    pub start: Instant,
    pub length: Duration,
}

/// The reigns in `acks`, ordered by their first acknowledgement.
pub fn reigns(acks: &[Ack]) -> Vec<Reign> {
    let mut by_key: BTreeMap<(usize, u32), Reign> = BTreeMap::new();
    for a in acks {
        by_key
            .entry((a.member, a.timeline))
            .and_modify(|r| {
                r.first_ack = r.first_ack.min(a.acked);
                r.last_sent = r.last_sent.max(a.sent);
                r.count += 1;
            })
            .or_insert(Reign {
                member: a.member,
                timeline: a.timeline,
                first_ack: a.acked,
                last_sent: a.sent,
                count: 1,
            });
    }
    let mut out: Vec<Reign> = by_key.into_values().collect();
    out.sort_by_key(|r| r.first_ack);
    out
}

/// Every proven split-brain window (see the module comment), ordered by start.
pub fn split_brain_windows(acks: &[Ack]) -> Vec<Window> {
    let reigns = reigns(acks);
    let mut out = Vec::new();
    for (i, old) in reigns.iter().enumerate() {
        for new in &reigns[i + 1..] {
            if new.member != old.member && old.last_sent > new.first_ack {
                out.push(Window {
                    old: old.member,
                    new: new.member,
                    start: new.first_ack,
                    length: old.last_sent - new.first_ack,
                });
            }
        }
    }
    out.sort_by_key(|w| w.start);
    out
}

/// The write gap after `since`: from the first failed attempt at or after `since` (and before
/// `until`) to the first acknowledgement after that failure. `None` when no attempt failed in
/// that span or nothing was acknowledged after the failure.
pub fn recovery_time(
    acks: &[Ack],
    failures: &[Instant],
    since: Instant,
    until: Instant,
) -> Option<Duration> {
    let first_failure = failures
        .iter()
        .copied()
        .filter(|&f| f >= since && f < until)
        .min()?;
    let next_ack = acks
        .iter()
        .map(|a| a.acked)
        .filter(|&t| t > first_failure)
        .min()?;
    Some(next_ack - first_failure)
}

/// `(min, median, max)` of `values` (the upper median for an even count).
pub fn spread(values: &[Duration]) -> Option<(Duration, Duration, Duration)> {
    let mut v = values.to_vec();
    v.sort();
    Some((*v.first()?, v[v.len() / 2], *v.last()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(t0: Instant, member: usize, timeline: u32, sent_ms: u64, acked_ms: u64) -> Ack {
        Ack {
            id: format!("{member}-{sent_ms}"),
            member,
            timeline,
            sent: t0 + Duration::from_millis(sent_ms),
            acked: t0 + Duration::from_millis(acked_ms),
        }
    }

    /// A failover A → B with a gap: two reigns, no window.
    #[test]
    fn clean_failover_has_no_window() {
        let t0 = Instant::now();
        let acks = vec![
            ack(t0, 0, 1, 0, 5),
            ack(t0, 0, 1, 10, 15),
            ack(t0, 1, 2, 20_000, 20_005),
            ack(t0, 1, 2, 20_010, 20_015),
        ];
        assert_eq!(reigns(&acks).len(), 2);
        assert!(split_brain_windows(&acks).is_empty());
    }

    /// A → B → A on new timelines (a switchback) is three reigns and no window.
    #[test]
    fn switchback_is_not_split_brain() {
        let t0 = Instant::now();
        let acks = vec![
            ack(t0, 0, 1, 0, 5),
            ack(t0, 1, 2, 1000, 1005),
            ack(t0, 0, 3, 2000, 2005),
        ];
        assert_eq!(reigns(&acks).len(), 3);
        assert!(split_brain_windows(&acks).is_empty());
    }

    /// A commit acknowledged late by the old primary, but sent before the new primary's first
    /// acknowledgement, proves nothing.
    #[test]
    fn late_ack_sent_before_the_new_reign_is_not_split_brain() {
        let t0 = Instant::now();
        let acks = vec![
            ack(t0, 0, 1, 0, 5),
            ack(t0, 0, 1, 100, 400),
            ack(t0, 1, 2, 150, 200),
        ];
        assert!(split_brain_windows(&acks).is_empty());
    }

    /// A frozen leader keeps accepting writes while the new leader does: one window, from the
    /// new leader's first acknowledgement to the old one's last COMMIT.
    #[test]
    fn interleaved_writes_are_one_window() {
        let t0 = Instant::now();
        let acks = vec![
            ack(t0, 0, 1, 0, 5),
            ack(t0, 1, 2, 1000, 1005),
            ack(t0, 0, 1, 1500, 1505),
            ack(t0, 1, 2, 1600, 1605),
            ack(t0, 0, 1, 3000, 3005),
        ];
        let w = split_brain_windows(&acks);
        assert_eq!(w.len(), 1);
        assert_eq!((w[0].old, w[0].new), (0, 1));
        assert_eq!(w[0].start, t0 + Duration::from_millis(1005));
        assert_eq!(w[0].length, Duration::from_millis(1995));
    }

    #[test]
    fn recovery_is_first_failure_to_next_ack() {
        let t0 = Instant::now();
        let ms = |m| t0 + Duration::from_millis(m);
        let acks = vec![ack(t0, 0, 1, 0, 5), ack(t0, 1, 2, 3000, 3100)];
        let failures = vec![ms(50), ms(60), ms(2000)];
        assert_eq!(
            recovery_time(&acks, &failures, ms(10), ms(10_000)),
            Some(Duration::from_millis(3050))
        );
        assert_eq!(recovery_time(&acks, &failures, ms(5000), ms(10_000)), None);
    }

    #[test]
    fn spread_takes_min_median_max() {
        let d = Duration::from_secs;
        assert_eq!(spread(&[d(3), d(1), d(2)]), Some((d(1), d(2), d(3))));
        assert_eq!(spread(&[]), None);
    }
}
