//! The benchmark in its smoke form (one repetition, pgpilot only, a short idle window), so that
//! it can not rot: every measurement produces a figure. Timings are printed, never asserted.

mod harness;
// The scale mode's report and plot, as the bench builds them.
#[path = "../benches/scale/mod.rs"]
#[allow(dead_code)]
mod scale;

use std::path::PathBuf;
use std::time::Duration;

use harness::bench::{measure, measure_fleet, PROFILES};

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
    assert!(
        s.switchover_direct.is_some() && s.handover_direct.is_some(),
        "the second switchover and handover were seen by the direct client"
    );
    for cpu in [s.switchover_cpu, s.handover_cpu] {
        let cpu = cpu.expect("the machine's CPU use during the direct client's gaps");
        assert!(
            (0.0..=1.0).contains(&cpu.machine_busy) && cpu.agents_cores >= 0.0,
            "{cpu:?}"
        );
    }
    assert!(s.crash.is_some(), "the crash was seen by the writer");
    assert!(
        s.node_crash.is_some(),
        "the node crash was seen by the writer"
    );
    assert!(s.rss_kib > 0.0 && s.etcd_rps > 0.0, "{s:?}");
    assert!(
        s.etcd_rps_by_method.contains_key("LeaseKeepAlive"),
        "the leader's keepalives are counted by method: {:?}",
        s.etcd_rps_by_method
    );
}

/// The scale mode's fleet and plot in smoke form: 2 clusters × 3 members on one etcd, pgpilot
/// only, a few seconds idle, the plot written to a temporary directory. Every figure the scale
/// tables show is produced; timings are printed, never asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_smoke_run_measures_every_fleet_figure() {
    harness::init();
    let (name, ttl, lw, rt) = PROFILES[0];
    let s = measure_fleet(None, 2, 3, (ttl, lw, rt), Duration::from_secs(3), 2)
        .await
        .expect("one fleet repetition");
    eprintln!("scale smoke, {name}: {s:#?}");
    assert_eq!(s.agents(), 6.0);
    let idle = &s.idle;
    assert!(
        idle.rss_kib > 0.0 && idle.cpu_percent > 0.0 && idle.etcd_rps() > 0.0,
        "{s:?}"
    );
    assert!(idle.received_bps > 0.0 && idle.sent_bps > 0.0, "{s:?}");
    assert!(
        idle.watch_streams >= 2.0 && idle.watchers >= 2.0,
        "every cluster watches its keys: {s:?}"
    );
    assert!(
        idle.etcd_rps_by_method.contains_key("LeaseKeepAlive"),
        "both leaders' keepalives are counted: {:?}",
        idle.etcd_rps_by_method
    );
    assert!(
        s.postgres_pss_kib > 0.0 && s.mem_available_kib > 0.0 && s.load > 0.0,
        "{s:?}"
    );

    let fleet = vec![(2, vec![s.clone()], Vec::new())];
    let table = scale::fleet_table(name, 2, 3, std::slice::from_ref(&s), &[], false);
    assert!(table.contains("etcd watch streams") && table.contains("LeaseKeepAlive"));
    assert!(scale::fleet_summary(name, &fleet).contains("| 2 | 6 |"));
    let dir = tempfile::tempdir().expect("temp dir");
    let svg = dir.path().join("scale.svg");
    let points = scale::plot_points(&[(2, vec![s])]);
    scale::plot(&svg, &[("pgpilot, fast".into(), points)]).expect("write the plot");
    let text = std::fs::read_to_string(&svg).expect("read the plot");
    assert!(
        text.starts_with("<svg") && text.contains("pgpilot, fast"),
        "{}",
        &text[..text.len().min(300)]
    );
}
