//! `cargo bench -p pgpilot --bench cluster -- [--reps N] [--idle SECONDS] [--profile fast|default|short|all]
//! [--compare patroni] [--patroni PATH] [--members 3,5,7] [--idle-only] [--markdown]`
//!
//! Starts its own etcd and 3-member clusters on loopback (see
//! `crates/pgpilot-test-support/src/bench.rs` for what is measured), runs each measurement N
//! times (default 5) and prints min / median / max. With `--compare patroni` the same workload
//! runs against Patroni (`patroni[etcd3]` 4.x from PyPI in a virtualenv built from
//! /usr/bin/python3, or `--patroni PATH`), interleaved repetition by repetition, with a ratio
//! column (pgpilot median / Patroni median). `--markdown` prints the result as the
//! BENCHMARKS.md document (`bench/run.sh` writes it). `--idle-only` measures bootstrap and the
//! idle cost only (no switchover, handover or crash). `--members` runs clusters of each size
//! given (default 3) and adds a table of the idle cost per member against the size.
//!
//! Scale mode, `--scale [--fleet 1,10,25] [--sizes 3,5,7,9] [--parallel 5] [--plot PATH]`
//! (`--members` and `--idle-only` do not apply; fast and default unless `--profile` is given):
//! - fleet: for each N of `--fleet`, N clusters of 3 members on ONE etcd (each its own scope,
//!   same namespace), bootstrap and idle only: per member RSS, idle CPU, etcd messages/s by
//!   gRPC method, bytes/s in and out, open watch streams, plus the fleet's bootstrap time,
//!   PostgreSQL's PSS per member against `MemAvailable`, all agents' CPU and the load
//!   average, which say what limits the fleet on this machine. `--parallel` clusters are
//!   started at once.
//! - cluster size: for each M of `--sizes`, one cluster of M members, the full measurement
//!   (crash failover and switchover write gaps among others).
//!
//! pgpilot and (with `--compare patroni`) Patroni are interleaved repetition by repetition.
//! It writes an SVG plot of the fleet's cost per member (`--plot`, else `$PGPILOT_BENCH_PLOT`,
//! else `bench/scale.svg`; the markdown links `$PGPILOT_BENCH_PLOT_LINK` if set) and, with
//! `--markdown`, prints the scale section of BENCHMARKS.md between the markers of
//! `scale::BEGIN`/`scale::END` (`bench/run.sh --scale` puts it in place).

mod scale;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pgpilot_test_support as harness;

use harness::bench::{
    cell, measure, measure_fleet, methods_median, rows, spread, FleetSample, Sample, PROFILES,
};

struct Args {
    reps: usize,
    idle: Duration,
    /// Indexes into `PROFILES`; None until `--profile` is given (fast, or both in scale mode).
    profiles: Option<Vec<usize>>,
    compare: bool,
    patroni: Option<PathBuf>,
    markdown: bool,
    idle_only: bool,
    /// Cluster sizes to run (each a separate table; a scale table when several).
    members: Vec<usize>,
    /// Scale mode (see the module doc) with its fleet sizes (clusters of 3 members on one
    /// etcd), cluster sizes, clusters started at once, and the plot's path.
    scale: bool,
    fleet: Vec<usize>,
    sizes: Vec<usize>,
    parallel: usize,
    plot: PathBuf,
}

/// A comma-separated list of counts of at least `min`.
fn counts(flag: &str, value: &str, min: usize) -> Result<Vec<usize>, String> {
    value
        .split(',')
        .map(|n| match n.trim().parse::<usize>() {
            Ok(m) if m >= min => Ok(m),
            _ => Err(format!("{flag}: {n} is not a count of {min} or more")),
        })
        .collect()
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        reps: 5,
        idle: Duration::from_secs(60),
        profiles: None,
        compare: false,
        patroni: None,
        markdown: false,
        idle_only: false,
        members: vec![3],
        scale: false,
        fleet: vec![1, 10, 25],
        sizes: vec![3, 5, 7, 9],
        parallel: 5,
        // bench/run.sh names a directory the harness's unprivileged user may write in (the
        // harness drops root) and copies the plot to bench/scale.svg itself.
        plot: std::env::var_os("PGPILOT_BENCH_PLOT").map_or_else(
            || {
                PathBuf::from(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../bench/scale.svg"
                ))
            },
            PathBuf::from,
        ),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--reps" => {
                a.reps = value("--reps")?
                    .parse()
                    .map_err(|e| format!("--reps: {e}"))?
            }
            "--idle" => {
                a.idle = Duration::from_secs(
                    value("--idle")?
                        .parse()
                        .map_err(|e| format!("--idle: {e}"))?,
                )
            }
            "--profile" => {
                a.profiles = Some(match value("--profile")?.as_str() {
                    "fast" => vec![0],
                    "default" => vec![1],
                    "short" => vec![2],
                    "all" => vec![0, 1, 2],
                    other => {
                        return Err(format!(
                            "--profile: {other} is not fast, default, short or all"
                        ))
                    }
                })
            }
            "--compare" => {
                let v = value("--compare")?;
                if v != "patroni" {
                    return Err(format!("--compare: only 'patroni' is known, not {v}"));
                }
                a.compare = true;
            }
            "--patroni" => a.patroni = Some(PathBuf::from(value("--patroni")?)),
            "--markdown" => a.markdown = true,
            "--idle-only" => a.idle_only = true,
            "--members" => a.members = counts("--members", &value("--members")?, 2)?,
            "--scale" => a.scale = true,
            "--fleet" => a.fleet = counts("--fleet", &value("--fleet")?, 1)?,
            "--sizes" => a.sizes = counts("--sizes", &value("--sizes")?, 2)?,
            "--parallel" => a.parallel = counts("--parallel", &value("--parallel")?, 1)?[0],
            "--plot" => a.plot = PathBuf::from(value("--plot")?),
            // cargo bench passes --bench to harness=false targets.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    Ok(a)
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or("?".into(), |kib| {
            format!("{:.1} GiB", kib as f64 / 1048576.0)
        });
    let version = |cmd: &str, arg: &str| {
        std::process::Command::new(cmd)
            .arg(arg)
            .output()
            .ok()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default()
    };
    format!(
        "{cores} cores, {mem} memory; {}; {}; pgpilot {} (release build)",
        version("/usr/lib/postgresql/15/bin/postgres", "--version"),
        version("/usr/bin/etcd", "--version"),
        env!("CARGO_PKG_VERSION"),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::exit(2);
        }
    };
    harness::init_with_agent(env!("CARGO_BIN_EXE_pgpilot"));
    let ctl = PathBuf::from(env!("CARGO_BIN_EXE_pgpilotctl"));
    let patroni = if args.compare {
        match args
            .patroni
            .clone()
            .map(Ok)
            .unwrap_or_else(harness::bench::patroni_executable)
        {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("Error: can not get Patroni for --compare: {e}");
                std::process::exit(2);
            }
        }
    } else {
        None
    };
    if args.scale {
        run_scale(&args, patroni, ctl).await;
        return;
    }
    let mut out = String::new();
    let started = jiff::Timestamp::now();
    for &p in args.profiles.as_deref().unwrap_or(&[0]) {
        let (name, ttl, lw, rt) = PROFILES[p];
        // (members, pgpilot samples, Patroni samples) for the scale table.
        let mut by_size: Vec<(usize, Vec<Sample>, Vec<Sample>)> = Vec::new();
        for &members in &args.members {
            let mut ours: Vec<Sample> = Vec::new();
            let mut theirs: Vec<Sample> = Vec::new();
            for rep in 1..=args.reps {
                let mut agents: Vec<(bool, Option<PathBuf>)> = vec![(true, None)];
                if let Some(pt) = &patroni {
                    agents.push((false, Some(pt.clone())));
                }
                for (is_ours, agent) in agents {
                    let who = if is_ours { "pgpilot" } else { "Patroni" };
                    eprintln!(
                        "bench: {name}, {members} members: {who} repetition {rep}/{}",
                        args.reps
                    );
                    // A repetition that panics (an agent that died, a timeout) is reported
                    // and skipped; its cluster is torn down as the panic unwinds.
                    let run = CatchUnwind(Box::pin(measure(
                        agent,
                        members,
                        (ttl, lw, rt),
                        args.idle,
                        ctl.clone(),
                        args.idle_only,
                    )));
                    let result = match run.await {
                        Ok(r) => r,
                        Err(_) => Err(anyhow::anyhow!("the repetition panicked (see above)")),
                    };
                    match result {
                        Ok(s) => {
                            eprintln!("bench: {who}: {s:?}");
                            if is_ours {
                                ours.push(s)
                            } else {
                                theirs.push(s)
                            }
                        }
                        Err(e) => eprintln!("bench: {who} repetition {rep} failed: {e:#}"),
                    }
                }
            }
            out.push_str(&format!("\n### {name}, {members} members\n\n"));
            out.push_str(&measurements_table(&ours, &theirs, patroni.is_some()));
            out.push_str(&methods_table(&ours, &theirs, patroni.is_some()));
            out.push_str(&format!(
                "\n{} pgpilot and {} Patroni repetitions completed.\n",
                ours.len(),
                theirs.len()
            ));
            by_size.push((members, ours, theirs));
        }
        if by_size.len() > 1 {
            out.push_str(&scale_table(name, &by_size, patroni.is_some()));
        }
    }
    if args.markdown {
        println!("# Benchmarks\n");
        println!("{}", generated_by(started));
        println!("Machine: {}.\n", machine());
        println!("Each repetition starts a fresh etcd and cluster on loopback; write gaps are measured by a client inserting a row every 10 ms through a multi-host connection string with `target_session_attrs=read-write` (first failed write to the next acknowledged one). Each repetition then runs a second switchover and a second handover, seen by another client alone (the rows marked \"direct client\"): it holds one connection to each member and, once the last primary refuses a write, sends the next one to every member at once. Its gap is the servers' own unavailability, without the libpq client's connection, authentication and `read-only` check at each host it tries before the new primary; \"CPUs busy\" is the share of the machine's CPUs (`/proc/stat`) busy during that gap, whatever ran. Idle cost is measured over {} s per repetition; RSS and CPU are per agent. CPU is the scheduler's run time of the agent's threads (`/proc/PID/task/*/schedstat`), pgpilot's guard process included. RSS is the agent's VmRSS plus the private memory (`Private_Clean + Private_Dirty`) of pgpilot's guard, whose other resident pages are the executable's and libc's, mapped by the agent too.", args.idle.as_secs());
        print!("{out}");
    } else {
        println!("machine: {}", machine());
        print!("{out}");
    }
}

/// "Generated by `bench/run.sh ARGS` on DATE" for the markdown.
fn generated_by(started: jiff::Timestamp) -> String {
    let cmdline: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench" && a != "--markdown")
        .collect();
    format!(
        "Generated by `bench/run.sh {}` on {} — do not edit by hand.\n",
        cmdline.join(" "),
        started.strftime("%Y-%m-%d %H:%M UTC")
    )
}

/// Runs `run` (one repetition), reporting and skipping it (None) when it fails or panics; a
/// panic tears its clusters down as it unwinds. Failures are also added to `failures`.
async fn attempt<T: std::fmt::Debug>(
    what: &str,
    run: impl Future<Output = anyhow::Result<T>>,
    failures: &mut Vec<String>,
) -> Option<T> {
    let result = match CatchUnwind(Box::pin(run)).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!("the repetition panicked (see above)")),
    };
    match result {
        Ok(s) => {
            eprintln!("bench: {what}: {s:?}");
            Some(s)
        }
        Err(e) => {
            eprintln!("bench: {what} failed: {e:#}");
            failures.push(format!("{what}: {e:#}"));
            None
        }
    }
}

/// `reps` repetitions of `run` for each of `agents` (`(name, executable)`, pgpilot first),
/// interleaved; the samples of each agent in that order.
async fn repetitions<T: std::fmt::Debug, F, Fut>(
    reps: usize,
    agents: &[(&str, Option<PathBuf>)],
    label: &str,
    failures: &mut Vec<String>,
    mut run: F,
) -> [Vec<T>; 2]
where
    F: FnMut(Option<PathBuf>) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut samples: [Vec<T>; 2] = [Vec::new(), Vec::new()];
    for rep in 1..=reps {
        for (k, (who, agent)) in agents.iter().enumerate() {
            let what = format!("{label}: {who} repetition {rep}/{reps}");
            eprintln!("bench: {what}");
            if let Some(s) = attempt(&what, run(agent.clone()), failures).await {
                samples[k].push(s);
            }
        }
    }
    samples
}

/// The scale mode (see the module doc): fleets on one etcd, then cluster sizes, for each
/// profile; prints the scale section and writes the plot.
async fn run_scale(args: &Args, patroni: Option<PathBuf>, ctl: PathBuf) {
    /// Where the simulated fleet is (this bench does not measure it): one line of the scale
    /// section.
    const FLEET_SIMULATION: &str = "\nThe simulated fleet (etcd requests by kind at 1,000 clusters, idle and under faults, and how many 3-member clusters one 3-node etcd serves, pgpilot against Patroni) is in [bench/fleet.md](bench/fleet.md), written by `PGPILOT_SIM_FLEET=1000 PGPILOT_SIM_FLEET_OUT=bench/fleet.md cargo nextest run -p pgpilot-ha --test simulation fleet --no-capture` (simulated time: the figures do not depend on the machine).\n";

    const FLEET_MEMBERS: usize = 3;
    let started = jiff::Timestamp::now();
    let clock = std::time::Instant::now();
    let mut agents: Vec<(&str, Option<PathBuf>)> = vec![("pgpilot", None)];
    if let Some(p) = &patroni {
        agents.push(("Patroni", Some(p.clone())));
    }
    let compare = patroni.is_some();
    let mut failures = Vec::new();
    let mut fleet_md = String::new();
    let mut size_md = String::new();
    let mut series: Vec<scale::Series> = Vec::new();
    // Both timings unless --profile narrows it.
    for &p in args.profiles.as_deref().unwrap_or(&[0, 1]) {
        let (name, ttl, lw, rt) = PROFILES[p];
        let short = name.split(" (").next().unwrap_or(name);
        let mut by_fleet = Vec::new();
        for &clusters in &args.fleet {
            let label = format!("{short}, fleet of {clusters} × {FLEET_MEMBERS}");
            let samples = repetitions(args.reps, &agents, &label, &mut failures, |agent| {
                measure_fleet(
                    agent,
                    clusters,
                    FLEET_MEMBERS,
                    (ttl, lw, rt),
                    args.idle,
                    args.parallel,
                )
            })
            .await;
            let [ours, theirs] = samples;
            fleet_md.push_str(&scale::fleet_table(
                name,
                clusters,
                FLEET_MEMBERS,
                &ours,
                &theirs,
                compare,
            ));
            by_fleet.push((clusters, ours, theirs));
        }
        if by_fleet.len() > 1 {
            fleet_md.push_str(&scale::fleet_summary(name, &by_fleet));
        }
        for (k, (who, _)) in agents.iter().enumerate() {
            let points: Vec<(usize, Vec<FleetSample>)> = by_fleet
                .iter()
                .map(|(n, a, b)| (*n, if k == 0 { a.clone() } else { b.clone() }))
                .collect();
            series.push((format!("{who}, {short}"), scale::plot_points(&points)));
        }

        let mut by_size = Vec::new();
        for &members in &args.sizes {
            let label = format!("{short}, {members} members");
            let samples = repetitions(args.reps, &agents, &label, &mut failures, |agent| {
                measure(agent, members, (ttl, lw, rt), args.idle, ctl.clone(), false)
            })
            .await;
            let [ours, theirs] = samples;
            size_md.push_str(&format!("\n#### {name}, {members} members\n\n"));
            size_md.push_str(&measurements_table(&ours, &theirs, compare));
            size_md.push_str(&format!(
                "\n{} pgpilot and {} Patroni repetitions completed.\n",
                ours.len(),
                theirs.len()
            ));
            by_size.push((members, ours, theirs));
        }
        if by_size.len() > 1 {
            size_md.push_str(&scale::size_summary(name, &by_size));
        }
    }
    let plotted = match scale::plot(&args.plot, &series) {
        Ok(()) => {
            eprintln!("bench: plot written to {}", args.plot.display());
            true
        }
        Err(e) => {
            eprintln!(
                "bench: can not write the plot {}: {e:#}",
                args.plot.display()
            );
            failures.push(format!("the plot {}: {e:#}", args.plot.display()));
            false
        }
    };
    let took = clock.elapsed().as_secs();
    let mut out = String::new();
    if args.markdown {
        out.push_str(&format!("{}\n## Scale\n\n", scale::BEGIN));
        out.push_str(&generated_by(started));
        out.push_str(&format!(
            "\nMachine: {}. The run took {} min {} s.\n\n",
            machine(),
            took / 60,
            took % 60
        ));
        out.push_str(&format!("**Fleet**: N clusters of {FLEET_MEMBERS} members (each its own `scope`, one namespace) on ONE local etcd, {} clusters started at a time; once all are up, after `2 × loop_wait + 2 s` to settle, one idle window of {} s measures every agent. RSS and CPU are per agent as in the main tables; etcd's figures (messages by gRPC method, client bytes received and sent, open watch streams and watchers from etcd's `/metrics`) are the whole etcd's, divided by the number of agents. What limits a fleet on this machine: memory (each member's PostgreSQL PSS, its postmaster and children, plus the agent's RSS, against the machine's `MemAvailable` at the end of the idle window: how many more members would fit) and CPU (all agents' idle CPU together, the load average, and the fleet's bootstrap time with its clusters started a few at a time).\n\n", args.parallel, args.idle.as_secs()));
        if plotted {
            // Where the markdown's image points: bench/run.sh copies the plot there.
            let shown = std::env::var("PGPILOT_BENCH_PLOT_LINK")
                .unwrap_or_else(|_| args.plot.display().to_string());
            out.push_str(&format!(
                "![Idle cost per member against fleet size]({shown})\n"
            ));
        }
        out.push_str(FLEET_SIMULATION);
        out.push_str("\n### Fleet: idle cost per member\n");
        out.push_str(&fleet_md);
        out.push_str(&format!("\n### Cluster size: write gaps\n\nOne cluster of M members per repetition, measured as in the main tables (idle window of {} s, then switchover and graceful handover, each seen by the libpq client and then by the direct client, then crash failover). All the members run on this one machine: what they do at once when the leader changes shares its CPUs, which the second table shows.\n", args.idle.as_secs()));
        out.push_str(&size_md);
        if !failures.is_empty() {
            out.push_str("\n### Failed repetitions\n\n");
            for f in &failures {
                out.push_str(&format!("- {}\n", f.replace('\n', " ")));
            }
        }
        out.push_str(&format!("\n{}\n", scale::END));
    } else {
        out.push_str(&format!("machine: {}\n{fleet_md}{size_md}", machine()));
        for f in &failures {
            out.push_str(&format!("failed: {f}\n"));
        }
    }
    print!("{out}");
}

/// etcd messages per second during the idle window by gRPC method (medians), the cluster's
/// three agents together.
fn methods_table(ours: &[Sample], theirs: &[Sample], compare: bool) -> String {
    let a = methods_median(ours);
    let b = methods_median(theirs);
    let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
    names.sort();
    names.dedup();
    let mut out = String::from("\netcd messages per second while idle, by gRPC method (median, all the agents of the cluster together):\n\n");
    if compare {
        out.push_str("| gRPC method | pgpilot | Patroni |\n|---|---:|---:|\n");
    } else {
        out.push_str("| gRPC method | pgpilot |\n|---|---:|\n");
    }
    for m in names {
        let x = a.get(m).copied().unwrap_or(0.0);
        if compare {
            let y = b.get(m).copied().unwrap_or(0.0);
            out.push_str(&format!("| {m} | {x:.2} | {y:.2} |\n"));
        } else {
            out.push_str(&format!("| {m} | {x:.2} |\n"));
        }
    }
    out
}

/// A future whose panic is returned as `Err` (the payload) instead of unwinding further.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// The main table: each measurement's min / median / max, and the ratio of the medians.
fn measurements_table(ours: &[Sample], theirs: &[Sample], compare: bool) -> String {
    let mut out = String::new();
    if compare {
        out.push_str("| measurement | unit | pgpilot min / median / max | Patroni min / median / max | ratio (median) |\n|---|---|---|---|---|\n");
    } else {
        out.push_str("| measurement | unit | pgpilot min / median / max |\n|---|---|---|\n");
    }
    for (label, unit, f) in rows() {
        let a: Vec<f64> = ours.iter().filter_map(f).collect();
        if compare {
            let b: Vec<f64> = theirs.iter().filter_map(f).collect();
            // A share of the machine during gaps of different lengths is no cost to compare.
            let ratio = match (spread(&a), spread(&b)) {
                (Some((_, x, _)), Some((_, y, _))) if y > 0.0 && unit != "%" => {
                    format!("{:.2}", x / y)
                }
                _ => "-".into(),
            };
            out.push_str(&format!(
                "| {label} | {unit} | {} | {} | {ratio} |\n",
                cell(&a),
                cell(&b)
            ));
        } else {
            out.push_str(&format!("| {label} | {unit} | {} |\n", cell(&a)));
        }
    }
    out
}

/// Idle cost per member against the cluster size (medians).
fn scale_table(
    profile: &str,
    by_size: &[(usize, Vec<Sample>, Vec<Sample>)],
    compare: bool,
) -> String {
    let median = |v: &[Sample], f: &dyn Fn(&Sample) -> f64| -> String {
        let values: Vec<f64> = v.iter().map(f).collect();
        spread(&values).map_or("-".into(), |(_, m, _)| format!("{m:.2}"))
    };
    let mut out =
        format!("\n### {profile}: idle cost per member against the cluster size (medians)\n\n");
    if compare {
        out.push_str("| members | CPU % pgpilot | CPU % Patroni | RSS MiB pgpilot | RSS MiB Patroni | etcd messages/s per member pgpilot | Patroni |\n|---:|---:|---:|---:|---:|---:|---:|\n");
    } else {
        out.push_str("| members | CPU % pgpilot | RSS MiB pgpilot | etcd messages/s per member pgpilot |\n|---:|---:|---:|---:|\n");
    }
    for (members, ours, theirs) in by_size {
        let n = *members as f64;
        let cpu = |s: &Sample| s.cpu_percent;
        let rss = |s: &Sample| s.rss_kib / 1024.0;
        let etcd = |s: &Sample| s.etcd_rps / n;
        if compare {
            out.push_str(&format!(
                "| {members} | {} | {} | {} | {} | {} | {} |\n",
                median(ours, &cpu),
                median(theirs, &cpu),
                median(ours, &rss),
                median(theirs, &rss),
                median(ours, &etcd),
                median(theirs, &etcd)
            ));
        } else {
            out.push_str(&format!(
                "| {members} | {} | {} | {} |\n",
                median(ours, &cpu),
                median(ours, &rss),
                median(ours, &etcd)
            ));
        }
    }
    out
}
