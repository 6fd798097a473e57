//! Runs one simulator scenario and prints a table and a summary line.
//!
//! ```text
//! cargo run --release --features sim --example simulate -- \
//!     --scenario update --nodes 1000 --seed 1 [--loss 0.1] [--interval-ms 100]
//! ```
//!
//! The faults' lengths are flags too: `--pause-ms` (pause), `--split-s` (partition),
//! `--churn-pct` and `--churn-over-s` (churn); `--help` lists every flag with its default.
//!
//! The last line is machine-readable and stable:
//! `summary scenario=S nodes=N seed=X converged=true|false rounds=R virtual_ms=T
//! bytes_per_node_per_s=B max_datagram=D false_downs=F trace=HEX`.
//!
//! Clusters of 100 nodes or more run on every core, with the same result (and trace) as on one;
//! `RAYON_NUM_THREADS=1` keeps a run to one core.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use tidings::sim::{Scenario, ScenarioOptions, run_scenario};

fn main() -> ExitCode {
    match run() {
        Ok(converged) => {
            if converged {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("{}", usage());
            ExitCode::from(2)
        }
    }
}

fn usage() -> String {
    let config = tidings::Config::default();
    format!(
        "usage: simulate --scenario <{}> [--nodes N (100)] [--seed X (1)] [--loss P (0)] \
         [--interval-ms T ({})] [--limit-s S (600)] [--warmup-s S (20)] [--phi X ({})] \
         [--prior-weight W ({})] [--ring on|off (on up to 300 nodes)] \
         [--duration-s S (idle: 60)] [--pause-ms T (pause: 2000)] [--split-s S (partition: 60)] \
         [--churn-pct P (churn: 10)] [--churn-over-s S (churn: 60)]",
        Scenario::ALL.map(|s| s.name()).join("|"),
        config.gossip_interval.as_millis(),
        config.phi_threshold,
        config.detector_prior_weight,
    )
}

/// `value` of `flag` parsed, or an error naming the flag ("--seed: invalid digit ...").
fn parsed<T: std::str::FromStr>(flag: &str, value: String) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e| format!("{flag}: {e}"))
}

fn run() -> Result<bool, String> {
    let mut scenario = None;
    let mut nodes = 100usize;
    let mut seed = 1u64;
    let mut loss = 0.0f64;
    let mut interval_ms = None;
    let mut limit_s = None;
    let mut warmup_s = None;
    let mut phi = None;
    let mut prior_weight = None;
    let mut ring = None;
    let mut duration_s = None;
    let mut pause_ms = None;
    let mut split_s = None;
    let mut churn_pct = None;
    let mut churn_over_s = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--help" || a == "-h" {
            println!("{}", usage());
            std::process::exit(0);
        }
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--scenario" => scenario = Some(val()?.parse::<Scenario>().map_err(|e| e.to_string())?),
            "--nodes" => nodes = parsed(&a, val()?)?,
            "--seed" => seed = parsed(&a, val()?)?,
            "--loss" => loss = parsed(&a, val()?)?,
            "--interval-ms" => interval_ms = Some(parsed::<u64>(&a, val()?)?),
            "--limit-s" => limit_s = Some(parsed::<u64>(&a, val()?)?),
            "--warmup-s" => warmup_s = Some(parsed::<u64>(&a, val()?)?),
            "--phi" => phi = Some(parsed::<f64>(&a, val()?)?),
            "--prior-weight" => prior_weight = Some(parsed::<u32>(&a, val()?)?),
            "--duration-s" => duration_s = Some(parsed::<u64>(&a, val()?)?),
            "--pause-ms" => pause_ms = Some(parsed::<u64>(&a, val()?)?),
            "--split-s" => split_s = Some(parsed::<u64>(&a, val()?)?),
            "--churn-pct" => churn_pct = Some(parsed::<f64>(&a, val()?)?),
            "--churn-over-s" => churn_over_s = Some(parsed::<u64>(&a, val()?)?),
            "--ring" => {
                ring = Some(match val()?.as_str() {
                    "on" => true,
                    "off" => false,
                    other => return Err(format!("--ring takes on|off, not {other:?}")),
                })
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let scenario = scenario.ok_or("--scenario is required")?;
    if !(0.0..1.0).contains(&loss) {
        return Err("--loss must be in [0, 1)".into());
    }
    // Every scenario needs a peer to gossip with (crash and partition need two); a smaller
    // cluster used to be run silently with 2 nodes, and a zero interval with 1 ms.
    if nodes < 2 {
        return Err(format!("--nodes must be at least 2, not {nodes}"));
    }
    if interval_ms == Some(0) {
        return Err("--interval-ms must be positive".into());
    }
    let mut opts = ScenarioOptions::new(nodes, seed);
    opts.loss = loss;
    if let Some(ms) = interval_ms {
        let interval = Duration::from_millis(ms);
        opts.config.gossip_interval = interval;
    }
    if let Some(p) = phi {
        opts.config.phi_threshold = p;
    }
    if let Some(w) = prior_weight {
        opts.config.detector_prior_weight = w;
    }
    // Each node's ring costs ~3 KB per member: off by default above 300 simulated nodes.
    let ring = ring.unwrap_or(nodes <= 300);
    if !ring {
        opts.config.ring = None;
    }
    // Virtual spans up to a year each, as the configuration's durations: beyond, the clock's
    // arithmetic would overflow.
    let span = |flag: &str, s: u64| {
        let d = Duration::from_secs(s);
        if d > tidings::MAX_DURATION {
            Err(format!(
                "{flag} must be at most {} s",
                tidings::MAX_DURATION.as_secs()
            ))
        } else {
            Ok(d)
        }
    };
    // A limit of nothing gives up at once; an idle window of nothing measures no time.
    let positive_span = |flag: &str, s: u64| {
        if s == 0 {
            Err(format!("{flag} must be positive"))
        } else {
            span(flag, s)
        }
    };
    if let Some(s) = limit_s {
        opts.limit = positive_span("--limit-s", s)?;
    }
    if let Some(s) = duration_s {
        opts.idle_for = positive_span("--duration-s", s)?;
    }
    if let Some(s) = warmup_s {
        opts.warmup = span("--warmup-s", s)?;
    }
    if let Some(ms) = pause_ms {
        if ms == 0 {
            return Err("--pause-ms must be positive".into());
        }
        let d = Duration::from_millis(ms);
        if d > tidings::MAX_DURATION {
            return Err(format!(
                "--pause-ms must be at most {} ms",
                tidings::MAX_DURATION.as_millis()
            ));
        }
        opts.pause = d;
    }
    if let Some(s) = split_s {
        opts.split = positive_span("--split-s", s)?;
    }
    if let Some(p) = churn_pct {
        // Written so that NaN is refused too.
        if !(p > 0.0 && p <= 100.0) {
            return Err(format!("--churn-pct must be in (0, 100], not {p}"));
        }
        opts.churn_fraction = p / 100.0;
    }
    if let Some(s) = churn_over_s {
        opts.churn_over = span("--churn-over-s", s)?;
    }
    opts.config.validate().map_err(|e| e.to_string())?;
    #[allow(clippy::disallowed_methods)] // wall time of the simulator itself, for the table
    let started = Instant::now();
    let mut report = run_scenario(scenario, &opts).map_err(|e| e.to_string())?;
    let wall = started.elapsed();
    report
        .notes
        .push(("wall time".into(), format!("{:.2} s", wall.as_secs_f64())));
    report.notes.push((
        "gossip interval".into(),
        format!("{} ms", opts.config.gossip_interval.as_millis()),
    ));
    report.notes.push(("loss".into(), format!("{loss}")));
    match scenario {
        Scenario::Pause => report
            .notes
            .push(("pause".into(), format!("{} ms", opts.pause.as_millis()))),
        Scenario::Partition => report
            .notes
            .push(("split".into(), format!("{} s", opts.split.as_secs()))),
        Scenario::Churn => report.notes.push((
            "churn".into(),
            format!(
                "{:.1} % of the nodes over {} s",
                opts.churn_fraction * 100.0,
                opts.churn_over.as_secs()
            ),
        )),
        _ => {}
    }
    report.notes.push((
        "ownership ring".into(),
        if ring { "on" } else { "off" }.into(),
    ));
    print!("{}", report.table());
    println!("{}", report.summary_line());
    Ok(report.converged)
}
