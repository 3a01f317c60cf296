//! The scale mode's report: markdown tables of the fleet runs (N clusters on one etcd, idle
//! cost per member) and of the cluster-size runs (write gaps against the member count), and
//! the SVG plot of cost per member against fleet size. Shared by `benches/cluster.rs` and the
//! smoke test (`tests/bench_smoke.rs`, which includes this file by path).

use std::collections::BTreeMap;
use std::path::Path;

use pgpilot_test_support::bench::{cell, median_by_method, spread, FleetSample, GapCpu, Sample};
use plotters::prelude::*;

/// The lines that open and close the scale section in BENCHMARKS.md: `bench/run.sh --scale`
/// replaces what lies between them, a normal run keeps it.
pub const BEGIN: &str = "<!-- scale section: begin (bench/run.sh --scale writes it) -->";
pub const END: &str = "<!-- scale section: end -->";

/// `(label, unit, figure per member)` rows of a fleet table.
#[allow(clippy::type_complexity)]
fn fleet_rows() -> Vec<(&'static str, &'static str, Box<dyn Fn(&FleetSample) -> f64>)> {
    vec![
        (
            "fleet bootstrap (all clusters)",
            "s",
            Box::new(|s| s.bootstrap.as_secs_f64()),
        ),
        ("agent RSS", "MiB", Box::new(|s| s.idle.rss_kib / 1024.0)),
        (
            "agent idle CPU",
            "% of a core",
            Box::new(|s| s.idle.cpu_percent),
        ),
        (
            "etcd messages",
            "per s per member",
            Box::new(|s| s.idle.etcd_rps() / s.agents()),
        ),
        (
            "etcd bytes received",
            "per s per member",
            Box::new(|s| s.idle.received_bps / s.agents()),
        ),
        (
            "etcd bytes sent",
            "per s per member",
            Box::new(|s| s.idle.sent_bps / s.agents()),
        ),
        (
            "etcd watch streams",
            "per member",
            Box::new(|s| s.idle.watch_streams / s.agents()),
        ),
        (
            "etcd watchers",
            "per member",
            Box::new(|s| s.idle.watchers / s.agents()),
        ),
        (
            "PostgreSQL PSS (postmaster and children)",
            "MiB per member",
            Box::new(|s| s.postgres_pss_kib / 1024.0),
        ),
        (
            "members that would still fit in MemAvailable at the end",
            "members",
            Box::new(|s| s.mem_available_kib / (s.postgres_pss_kib + s.idle.rss_kib).max(1.0)),
        ),
        (
            "all agents' idle CPU together",
            "% of a core",
            Box::new(|s| s.idle.cpu_percent * s.agents()),
        ),
        ("load average (1 min) at the end", "", Box::new(|s| s.load)),
    ]
}

fn median(values: &[f64]) -> Option<f64> {
    spread(values).map(|(_, m, _)| m)
}

fn ratio(a: &[f64], b: &[f64]) -> String {
    match (median(a), median(b)) {
        (Some(x), Some(y)) if y > 0.0 => format!("{:.2}", x / y),
        _ => "-".into(),
    }
}

/// Every gRPC method of `samples` with the median of its per-member rate.
fn methods_per_member(samples: &[FleetSample]) -> BTreeMap<String, f64> {
    median_by_method(
        samples
            .iter()
            .map(|s| (&s.idle.etcd_rps_by_method, s.agents())),
    )
}

/// One fleet size's table: each figure per member, min / median / max, with Patroni's and
/// the ratio of the medians when `compare`; then etcd messages by gRPC method per member.
pub fn fleet_table(
    profile: &str,
    clusters: usize,
    members: usize,
    ours: &[FleetSample],
    theirs: &[FleetSample],
    compare: bool,
) -> String {
    let mut out = format!(
        "\n#### {profile}: {clusters} × {members} members on one etcd ({} agents)\n\n",
        clusters * members
    );
    if compare {
        out.push_str("| measurement | unit | pgpilot min / median / max | Patroni min / median / max | ratio (median) |\n|---|---|---|---|---|\n");
    } else {
        out.push_str("| measurement | unit | pgpilot min / median / max |\n|---|---|---|\n");
    }
    for (label, unit, f) in fleet_rows() {
        let a: Vec<f64> = ours.iter().map(&f).collect();
        let b: Vec<f64> = theirs.iter().map(&f).collect();
        if compare {
            out.push_str(&format!(
                "| {label} | {unit} | {} | {} | {} |\n",
                cell(&a),
                cell(&b),
                ratio(&a, &b)
            ));
        } else {
            out.push_str(&format!("| {label} | {unit} | {} |\n", cell(&a)));
        }
    }
    let a = methods_per_member(ours);
    let b = methods_per_member(theirs);
    let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
    names.sort();
    names.dedup();
    for m in names {
        let x = a.get(m).copied().unwrap_or(0.0);
        if compare {
            let y = b.get(m).copied().unwrap_or(0.0);
            let r = if y > 0.0 {
                format!("{:.2}", x / y)
            } else {
                "-".into()
            };
            out.push_str(&format!(
                "| etcd {m} messages (median) | per s per member | {x:.3} | {y:.3} | {r} |\n"
            ));
        } else {
            out.push_str(&format!(
                "| etcd {m} messages (median) | per s per member | {x:.3} |\n"
            ));
        }
    }
    out.push_str(&format!(
        "\n{} pgpilot and {} Patroni repetitions completed.\n",
        ours.len(),
        theirs.len()
    ));
    out
}

/// The fleet sizes side by side (medians per member).
pub fn fleet_summary(
    profile: &str,
    by_fleet: &[(usize, Vec<FleetSample>, Vec<FleetSample>)],
) -> String {
    let m = |v: &[FleetSample], f: &dyn Fn(&FleetSample) -> f64| -> String {
        let values: Vec<f64> = v.iter().map(f).collect();
        median(&values).map_or("-".into(), |x| format!("{x:.2}"))
    };
    let cpu = |s: &FleetSample| s.idle.cpu_percent;
    let rss = |s: &FleetSample| s.idle.rss_kib / 1024.0;
    let msgs = |s: &FleetSample| s.idle.etcd_rps() / s.agents();
    let bytes = |s: &FleetSample| (s.idle.received_bps + s.idle.sent_bps) / s.agents();
    let mut out = format!(
        "\n#### {profile}: idle cost per member against the fleet size (medians; pgpilot / Patroni)\n\n"
    );
    out.push_str("| clusters | agents | CPU % of a core | RSS MiB | etcd messages/s | etcd bytes/s (in + out) |\n|---:|---:|---:|---:|---:|---:|\n");
    for (clusters, ours, theirs) in by_fleet {
        let agents = ours
            .first()
            .or(theirs.first())
            .map_or(0, |s| s.agents() as usize);
        out.push_str(&format!(
            "| {clusters} | {agents} | {} / {} | {} / {} | {} / {} | {} / {} |\n",
            m(ours, &cpu),
            m(theirs, &cpu),
            m(ours, &rss),
            m(theirs, &rss),
            m(ours, &msgs),
            m(theirs, &msgs),
            m(ours, &bytes),
            m(theirs, &bytes),
        ));
    }
    out
}

/// Write gaps against the cluster size (medians; pgpilot / Patroni).
pub fn size_summary(profile: &str, by_size: &[(usize, Vec<Sample>, Vec<Sample>)]) -> String {
    let m = |v: &[Sample], f: &dyn Fn(&Sample) -> Option<f64>| -> String {
        let values: Vec<f64> = v.iter().filter_map(f).collect();
        median(&values).map_or("-".into(), |x| format!("{x:.2}"))
    };
    let crash = |s: &Sample| s.crash.map(|d| d.as_secs_f64());
    let switchover = |s: &Sample| s.switchover.map(|d| d.as_secs_f64());
    let handover = |s: &Sample| s.handover.map(|d| d.as_secs_f64());
    let switchover_direct = |s: &Sample| s.switchover_direct.map(|d| d.as_secs_f64());
    let handover_direct = |s: &Sample| s.handover_direct.map(|d| d.as_secs_f64());
    let bootstrap = |s: &Sample| Some(s.bootstrap.as_secs_f64());
    let mut out = format!(
        "\n#### {profile}: write gaps against the cluster size (medians, s; pgpilot / Patroni)\n\n"
    );
    out.push_str("| members | crash failover | switchover | switchover, direct client | graceful handover | graceful handover, direct client | bootstrap |\n|---:|---:|---:|---:|---:|---:|---:|\n");
    for (members, ours, theirs) in by_size {
        out.push_str(&format!(
            "| {members} | {} / {} | {} / {} | {} / {} | {} / {} | {} / {} | {} / {} |\n",
            m(ours, &crash),
            m(theirs, &crash),
            m(ours, &switchover),
            m(theirs, &switchover),
            m(ours, &switchover_direct),
            m(theirs, &switchover_direct),
            m(ours, &handover),
            m(theirs, &handover),
            m(ours, &handover_direct),
            m(theirs, &handover_direct),
            m(ours, &bootstrap),
            m(theirs, &bootstrap),
        ));
    }
    let busy =
        |f: fn(&Sample) -> Option<GapCpu>| move |s: &Sample| f(s).map(|c| 100.0 * c.machine_busy);
    let agents = |f: fn(&Sample) -> Option<GapCpu>| move |s: &Sample| f(s).map(|c| c.agents_cores);
    let (sw_busy, sw_agents) = (busy(|s| s.switchover_cpu), agents(|s| s.switchover_cpu));
    let (ho_busy, ho_agents) = (busy(|s| s.handover_cpu), agents(|s| s.handover_cpu));
    out.push_str(&format!(
        "\n#### {profile}: the machine during the direct client's gaps (medians; pgpilot / Patroni)\n\n\
         Share of the machine's CPUs busy (all processes: PostgreSQL, agents, etcd, the client), and the CPU used by all the agents together, in cores.\n\n\
         | members | switchover: CPUs busy (%) | switchover: agents (cores) | handover: CPUs busy (%) | handover: agents (cores) |\n|---:|---:|---:|---:|---:|\n"
    ));
    for (members, ours, theirs) in by_size {
        out.push_str(&format!(
            "| {members} | {} / {} | {} / {} | {} / {} | {} / {} |\n",
            m(ours, &sw_busy),
            m(theirs, &sw_busy),
            m(ours, &sw_agents),
            m(theirs, &sw_agents),
            m(ours, &ho_busy),
            m(theirs, &ho_busy),
            m(ours, &ho_agents),
            m(theirs, &ho_agents),
        ));
    }
    out
}

/// One plotted system and profile: its label and its points per panel
/// (`[cpu, rss, messages, bytes]`, each `(clusters, median per member)`).
pub type Series = (String, [Vec<(f64, f64)>; 4]);

/// The points of one system and profile for the plot: `[cpu, rss, messages, bytes]`, each
/// `(clusters, median per member)`.
pub fn plot_points(by_fleet: &[(usize, Vec<FleetSample>)]) -> [Vec<(f64, f64)>; 4] {
    let mut out: [Vec<(f64, f64)>; 4] = Default::default();
    #[allow(clippy::type_complexity)]
    let figures: [&dyn Fn(&FleetSample) -> f64; 4] = [
        &|s| s.idle.cpu_percent,
        &|s| s.idle.rss_kib / 1024.0,
        &|s| s.idle.etcd_rps() / s.agents(),
        &|s| (s.idle.received_bps + s.idle.sent_bps) / s.agents(),
    ];
    for (clusters, samples) in by_fleet {
        for (k, f) in figures.iter().enumerate() {
            let v: Vec<f64> = samples.iter().map(f).collect();
            if let Some(m) = median(&v) {
                out[k].push((*clusters as f64, m));
            }
        }
    }
    out
}

const PANELS: [&str; 4] = [
    "idle CPU per member (% of a core)",
    "RSS per member (MiB)",
    "etcd messages/s per member",
    "etcd bytes/s per member (in + out)",
];

/// Writes the SVG: four panels (CPU, RSS, etcd messages, etcd bytes per member) against the
/// number of clusters on the etcd, one line per `series` entry (`[label, points per panel]`).
pub fn plot(path: &Path, series: &[Series]) -> anyhow::Result<()> {
    const COLORS: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    let root = SVGBackend::new(path, (1000, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "Idle cost per member against fleet size (N clusters on one etcd)",
        ("sans-serif", 20),
    )?;
    let panels = root.split_evenly((2, 2));
    let max_x = series
        .iter()
        .flat_map(|(_, p)| p.iter().flatten())
        .map(|&(x, _)| x)
        .fold(1.0, f64::max);
    for (k, area) in panels.iter().enumerate() {
        let max_y = series
            .iter()
            .flat_map(|(_, p)| p[k].iter())
            .map(|&(_, y)| y)
            .fold(0.0, f64::max);
        let max_y = if max_y > 0.0 { max_y * 1.15 } else { 1.0 };
        let mut chart = ChartBuilder::on(area)
            .caption(PANELS[k], ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..max_x * 1.05, 0.0..max_y)?;
        chart
            .configure_mesh()
            .x_desc("clusters of the fleet")
            .x_labels(8)
            .y_labels(6)
            .draw()?;
        for (i, (label, points)) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(
                    LineSeries::new(points[k].clone(), color.stroke_width(2)).point_size(3),
                )?
                .label(label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 11))
            .draw()?;
    }
    root.present()?;
    Ok(())
}
