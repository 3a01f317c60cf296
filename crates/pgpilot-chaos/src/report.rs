//! The result of a chaos run: one row per fault run, the markdown table, the exit code.

use std::fmt::Write as _;
use std::time::Duration;

use crate::analysis::spread;
use crate::config::{Fault, Mode};

/// Exit code: no violation found and every fault recovered.
pub const EXIT_OK: i32 = 0;
/// Exit code: a safety violation (lost commit in a synchronous mode, split-brain window,
/// balance changed).
pub const EXIT_VIOLATION: i32 = 1;
/// Exit code: the tool itself failed (bad arguments, cluster did not start or recover).
pub const EXIT_TOOL_FAILURE: i32 = 2;

/// One injection of one fault in one mode, and what the clients saw around it.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub fault: Fault,
    pub mode: Mode,
    /// Why the fault was not injected.
    pub skipped: Option<String>,
    /// Transfers acknowledged from the start of this run to the start of the next.
    pub acked: usize,
    /// Ids of those acknowledged transfers that the final leader does not have.
    pub lost: Vec<String>,
    /// Transfers whose COMMIT outcome was unknown, and how many of them the final leader has.
    pub indeterminate: usize,
    pub indeterminate_present: usize,
    /// Lengths of the split-brain windows that started during this run.
    pub windows: Vec<Duration>,
    /// The same, seen by the direct sampler's probe writes.
    pub sampled: Vec<Duration>,
    /// First failed write after the injection to the next acknowledged one.
    pub recovery: Option<Duration>,
}

/// Everything a chaos run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub runs: Vec<RunResult>,
    /// A mode whose total balance changed (the bank was corrupted).
    pub corruption: Vec<String>,
    /// Failures of the tool or of recovery (each makes the exit code non-zero).
    pub tool_errors: Vec<String>,
}

impl Report {
    /// The safety violations: lost commits in a synchronous mode, split-brain windows in any
    /// mode, corruption.
    pub fn violations(&self) -> Vec<String> {
        let mut out = self.corruption.clone();
        for r in &self.runs {
            if r.mode.is_sync() && !r.lost.is_empty() {
                out.push(format!(
                    "{} / {}: {} acknowledged commit(s) lost (e.g. {})",
                    r.fault,
                    r.mode,
                    r.lost.len(),
                    r.lost
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            for (windows, seen) in [(&r.windows, "client writes"), (&r.sampled, "probes")] {
                if let Some(longest) = windows.iter().max() {
                    out.push(format!(
                        "{} / {}: {} split-brain window(s) seen by {seen}, longest {}",
                        r.fault,
                        r.mode,
                        windows.len(),
                        secs(*longest)
                    ));
                }
            }
        }
        out
    }

    pub fn lost(&self) -> usize {
        self.runs.iter().map(|r| r.lost.len()).sum()
    }

    /// Split-brain windows seen by the bank clients' writes and by the probes.
    pub fn split_brain_windows(&self) -> usize {
        self.runs
            .iter()
            .map(|r| r.windows.len() + r.sampled.len())
            .sum()
    }

    pub fn exit_code(&self) -> i32 {
        if !self.violations().is_empty() {
            EXIT_VIOLATION
        } else if !self.tool_errors.is_empty() {
            EXIT_TOOL_FAILURE
        } else {
            EXIT_OK
        }
    }

    /// The markdown table: one row per (fault, mode), in the order they ran.
    pub fn table(&self) -> String {
        let mut keys: Vec<(Fault, Mode)> = Vec::new();
        for r in &self.runs {
            if !keys.contains(&(r.fault, r.mode)) {
                keys.push((r.fault, r.mode));
            }
        }
        let mut out = String::from(
            "| fault | mode | runs | writes acknowledged | lost | indeterminate present | \
             split-brain windows (count, longest) | sampled by probes (count, longest) | \
             recovery time (min / median / max) |\n\
             |---|---|---:|---:|---:|---:|---|---|---|\n",
        );
        for (fault, mode) in keys {
            let rows: Vec<&RunResult> = self
                .runs
                .iter()
                .filter(|r| r.fault == fault && r.mode == mode)
                .collect();
            let ran: Vec<&&RunResult> = rows.iter().filter(|r| r.skipped.is_none()).collect();
            if ran.is_empty() {
                let why = rows
                    .first()
                    .and_then(|r| r.skipped.clone())
                    .unwrap_or_default();
                let _ = writeln!(out, "| {fault} | {mode} | skipped: {why} | | | | | | |");
                continue;
            }
            let acked: usize = ran.iter().map(|r| r.acked).sum();
            let lost: usize = ran.iter().map(|r| r.lost.len()).sum();
            let ind: usize = ran.iter().map(|r| r.indeterminate).sum();
            let ind_present: usize = ran.iter().map(|r| r.indeterminate_present).sum();
            let cell = |w: Vec<Duration>| match w.iter().max() {
                Some(longest) => format!("{}, {}", w.len(), secs(*longest)),
                None => "0".into(),
            };
            let windows = cell(ran.iter().flat_map(|r| r.windows.clone()).collect());
            let sampled = cell(ran.iter().flat_map(|r| r.sampled.clone()).collect());
            let gaps: Vec<Duration> = ran.iter().filter_map(|r| r.recovery).collect();
            let mut recovery = match spread(&gaps) {
                Some((min, med, max)) => format!("{} / {} / {}", secs(min), secs(med), secs(max)),
                None => "-".into(),
            };
            if !gaps.is_empty() && gaps.len() < ran.len() {
                let _ = write!(recovery, " ({} without a gap)", ran.len() - gaps.len());
            }
            let _ = writeln!(
                out,
                "| {fault} | {mode} | {} | {acked} | {lost} | {ind_present} of {ind} | {windows} | {sampled} | {recovery} |",
                ran.len()
            );
        }
        out
    }
}

/// Seconds with one decimal.
pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(fault: Fault, mode: Mode, lost: usize, windows: usize) -> RunResult {
        RunResult {
            fault,
            mode,
            skipped: None,
            acked: 100,
            lost: (0..lost).map(|i| format!("c0-{i}")).collect(),
            indeterminate: 2,
            indeterminate_present: 1,
            windows: vec![Duration::from_millis(1500); windows],
            sampled: Vec::new(),
            recovery: Some(Duration::from_secs(21)),
        }
    }

    #[test]
    fn lost_commits_count_only_in_synchronous_modes() {
        let mut r = Report::default();
        r.runs.push(run(Fault::Kill9, Mode::Async, 3, 0));
        assert_eq!(r.exit_code(), EXIT_OK);
        r.runs.push(run(Fault::Kill9, Mode::Quorum, 1, 0));
        assert_eq!(r.exit_code(), EXIT_VIOLATION);
    }

    #[test]
    fn split_brain_counts_in_every_mode() {
        let mut r = Report::default();
        r.runs.push(run(Fault::FreezeAgent, Mode::Async, 0, 1));
        assert_eq!(r.exit_code(), EXIT_VIOLATION);
    }

    #[test]
    fn tool_errors_fail_the_run() {
        let r = Report {
            tool_errors: vec!["no recovery".into()],
            ..Report::default()
        };
        assert_eq!(r.exit_code(), EXIT_TOOL_FAILURE);
    }

    #[test]
    fn table_aggregates_runs_of_one_fault_and_mode() {
        let mut r = Report::default();
        r.runs.push(run(Fault::Kill9, Mode::Sync, 0, 0));
        r.runs.push(run(Fault::Kill9, Mode::Sync, 0, 2));
        let t = r.table();
        assert!(
            t.contains(
                "| kill9 | sync | 2 | 200 | 0 | 2 of 4 | 2, 1.5 s | 0 | 21.0 s / 21.0 s / 21.0 s |"
            ),
            "{t}"
        );
    }
}
