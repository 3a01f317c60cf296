//! The benchmark in its smoke form (one repetition, pgpilot only, a short idle window), so that
//! it can not rot: every measurement produces a figure. Timings are printed, never asserted.

mod harness;

use std::path::PathBuf;
use std::time::Duration;

use harness::bench::{measure, PROFILES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmark_smoke_run_measures_everything() {
    harness::init();
    let (name, ttl, lw, rt) = PROFILES[0];
    let s = measure(
        None,
        3,
        (ttl, lw, rt),
        Duration::from_secs(5),
        PathBuf::from(env!("CARGO_BIN_EXE_pgpilotctl")),
        false,
    )
    .await
    .expect("one benchmark repetition");
    eprintln!("bench smoke, {name}: {s:#?}");
    assert!(
        s.switchover.is_some(),
        "the switchover was seen by the writer"
    );
    assert!(s.handover.is_some(), "the handover was seen by the writer");
    assert!(s.crash.is_some(), "the crash was seen by the writer");
    assert!(s.rss_kib > 0.0 && s.etcd_rps > 0.0, "{s:?}");
    assert!(
        s.etcd_rps_by_method.contains_key("LeaseKeepAlive"),
        "the leader's keepalives are counted by method: {:?}",
        s.etcd_rps_by_method
    );
}
