//! The `simulate` example's command line: the summary line scripts parse, and arguments it
//! must refuse with exit code 2 rather than run or panic.
#![cfg(feature = "sim")]

mod examples_common;

use std::collections::BTreeMap;
use std::process::Output;

use examples_common::example;

fn simulate(args: &[&str]) -> Output {
    std::process::Command::new(example("simulate"))
        .args(args)
        .output()
        .unwrap()
}

/// The last line is `summary` and the keys the issue names, in its order, with values of
/// the right shape, each the table's figure of that name; and a run is reproduced by its
/// seed.
#[test]
fn the_summary_line_keeps_its_contract_and_its_seed() {
    let args = ["--scenario", "crash", "--nodes", "12", "--seed", "7"];
    let out = simulate(&args);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.lines().last().unwrap();
    let mut words = last.split(' ');
    assert_eq!(words.next(), Some("summary"), "{last}");
    let pairs: Vec<(&str, &str)> = words.map(|w| w.split_once('=').unwrap()).collect();
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        keys,
        [
            "scenario",
            "nodes",
            "seed",
            "converged",
            "rounds",
            "virtual_ms",
            "bytes_per_node_per_s",
            "max_datagram",
            "false_downs",
            "trace"
        ],
        "{last}"
    );
    assert_eq!(
        &pairs[..4],
        [
            ("scenario", "crash"),
            ("nodes", "12"),
            ("seed", "7"),
            ("converged", "true")
        ]
    );
    for (k, v) in &pairs[4..9] {
        assert!(v.parse::<u64>().is_ok(), "{k}={v} is not a whole number");
    }
    let trace = pairs[9].1;
    assert!(
        !trace.is_empty() && trace.chars().all(|c| c.is_ascii_hexdigit()),
        "{trace}"
    );
    // Each value is the one the table above it shows under its own name.
    let table = |label: &str| -> &str {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no `{label}` line in\n{stdout}"));
        line.trim_start()[label.len()..]
            .split_whitespace()
            .next()
            .unwrap()
    };
    let value = |key: &str| pairs.iter().find(|(k, _)| *k == key).unwrap().1;
    for (key, label) in [
        ("rounds", "rounds"),
        ("virtual_ms", "virtual time"),
        ("bytes_per_node_per_s", "sent per node per second"),
        ("max_datagram", "largest datagram"),
        ("false_downs", "false downs"),
    ] {
        assert_eq!(
            value(key),
            table(label),
            "{key} against `{label}`:\n{stdout}"
        );
    }
    assert!(value("max_datagram").parse::<u64>().unwrap() > 0, "{last}");
    // The same seed prints the same summary.
    let again = String::from_utf8(simulate(&args).stdout).unwrap();
    assert_eq!(again.lines().last(), Some(last));
}

/// The `summary` line's values by key (the last line of `out`'s stdout); panics if the last
/// line is not a summary.
fn summary(out: &Output) -> BTreeMap<String, String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let rest = last
        .strip_prefix("summary ")
        .unwrap_or_else(|| panic!("last line is not a summary:\n{stdout}"));
    rest.split(' ')
        .map(|w| {
            let (k, v) = w.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Arguments refused with exit code 2, no report, and a message naming the fault. Each case
/// would otherwise run a small, quick scenario, so that one accepted by mistake fails here
/// fast.
#[test]
fn bad_arguments_exit_with_2_and_say_why() {
    let most = u64::MAX.to_string();
    let idle_with = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut v = vec!["--scenario", "idle", "--nodes", "3", "--duration-s", "1"];
        v.extend_from_slice(extra);
        v
    };
    for (args, says) in [
        (vec!["--nodes", "3"], "--scenario is required"),
        (idle_with(&["--loss", "1"]), "--loss must be in [0, 1)"),
        (idle_with(&["--loss", "-0.1"]), "--loss must be in [0, 1)"),
        (idle_with(&["--ring", "maybe"]), "--ring takes on|off"),
        (
            idle_with(&["--frobnicate"]),
            "unknown argument \"--frobnicate\"",
        ),
        (idle_with(&["--phi", "0.5"]), "phi_threshold"),
        (
            vec!["--scenario", "idle", "--nodes", "1"],
            "--nodes must be at least 2, not 1",
        ),
        (
            idle_with(&["--interval-ms", "0"]),
            "--interval-ms must be positive",
        ),
        (vec!["--scenario", "nope"], "nope"),
        (idle_with(&["--limit-s", "x"]), "--limit-s: invalid digit"),
        (
            idle_with(&["--warmup-s", "-1"]),
            "--warmup-s: invalid digit",
        ),
        (
            vec!["--scenario", "crash", "--nodes"],
            "--nodes needs a value",
        ),
        (
            vec!["--scenario", "idle", "--limit-s", most.as_str()],
            "--limit-s must be at most",
        ),
        (
            vec!["--scenario", "idle", "--duration-s", most.as_str()],
            "--duration-s must be at most",
        ),
        (
            vec!["--scenario", "idle", "--warmup-s", most.as_str()],
            "--warmup-s must be at most",
        ),
        (
            idle_with(&["--pause-ms", "0"]),
            "--pause-ms must be positive",
        ),
        (
            idle_with(&["--pause-ms", "2s"]),
            "--pause-ms: invalid digit",
        ),
        (
            vec!["--scenario", "idle", "--pause-ms", most.as_str()],
            "--pause-ms must be at most",
        ),
        (idle_with(&["--split-s", "0"]), "--split-s must be positive"),
        (idle_with(&["--limit-s", "0"]), "--limit-s must be positive"),
        (
            idle_with(&["--duration-s", "0"]),
            "--duration-s must be positive",
        ),
        (idle_with(&["--split-s", "-5"]), "--split-s: invalid digit"),
        (
            vec!["--scenario", "idle", "--split-s", most.as_str()],
            "--split-s must be at most",
        ),
        (
            idle_with(&["--churn-pct", "0"]),
            "--churn-pct must be in (0, 100]",
        ),
        (
            idle_with(&["--churn-pct", "150"]),
            "--churn-pct must be in (0, 100]",
        ),
        (
            idle_with(&["--churn-pct", "NaN"]),
            "--churn-pct must be in (0, 100]",
        ),
        (
            idle_with(&["--churn-pct", "ten"]),
            "--churn-pct: invalid float",
        ),
        (
            vec!["--scenario", "idle", "--churn-over-s", most.as_str()],
            "--churn-over-s must be at most",
        ),
    ] {
        let out = simulate(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed a report");
    }
}

/// A run that does not converge within `--limit-s` still prints its report with the summary
/// last, says `converged=false`, and exits 1 (scripts tell a failed run by its exit code).
/// One second is too short to convict a crashed node at the defaults.
#[test]
fn an_unconverged_run_exits_1_with_its_summary_last() {
    let out = simulate(&[
        "--scenario",
        "crash",
        "--nodes",
        "12",
        "--seed",
        "7",
        "--limit-s",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let s = summary(&out);
    assert_eq!(s["converged"], "false", "{s:?}");
    assert_eq!(s["scenario"], "crash", "{s:?}");
}

/// `idle` measures exactly `--duration-s` of virtual time, one round per `--interval-ms`:
/// both flags reach the run.
#[test]
fn the_idle_summary_follows_the_duration_and_interval_flags() {
    let out = simulate(&[
        "--scenario",
        "idle",
        "--nodes",
        "5",
        "--duration-s",
        "3",
        "--interval-ms",
        "100",
    ]);
    assert!(out.status.success(), "{out:?}");
    let s = summary(&out);
    assert_eq!(s["converged"], "true", "{s:?}");
    assert_eq!(s["virtual_ms"], "3000", "{s:?}");
    assert_eq!(s["rounds"], "30", "{s:?}");
}

/// The flags that shape a run reach the simulation: each changes the same seeded run (its
/// trace, or its figures where the direction is known), and `--ring on` on a small cluster,
/// where the ring is on by default, changes nothing.
#[test]
fn the_run_shaping_flags_change_the_run() {
    let base = ["--scenario", "crash", "--nodes", "12", "--seed", "7"];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let out = simulate(&args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        summary(&out)
    };
    let default = run(&[]);
    for extra in [
        &["--loss", "0.2"][..],
        &["--warmup-s", "5"],
        &["--ring", "off"],
    ] {
        assert_ne!(
            run(extra)["trace"],
            default["trace"],
            "{extra:?} changed nothing"
        );
    }
    assert_eq!(run(&["--ring", "on"])["trace"], default["trace"]);
    // A lower phi threshold convicts the crashed node sooner.
    let sooner = run(&["--phi", "3"]);
    let (at, by_default): (u64, u64) = (
        sooner["virtual_ms"].parse().unwrap(),
        default["virtual_ms"].parse().unwrap(),
    );
    assert!(
        at < by_default,
        "--phi 3: {at} ms, default: {by_default} ms"
    );
    // The detector's prior weight shows once datagrams are lost.
    let lossy = run(&["--loss", "0.3"]);
    assert_ne!(
        run(&["--loss", "0.3", "--prior-weight", "100"])["trace"],
        lossy["trace"],
        "--prior-weight changed nothing"
    );
}

/// The fault-length flags reach the run and the table: `--pause-ms 8000` freezes the paused
/// node 8 s (the measured phase lasts that long at least, and it still converges), and
/// `--split-s` changes the partition run.
#[test]
fn the_fault_length_flags_reach_the_run_and_the_table() {
    let run = |args: &[&str]| {
        let out = simulate(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        let stdout = String::from_utf8(out.stdout.clone()).unwrap();
        (summary(&out), stdout)
    };
    let pause = ["--scenario", "pause", "--nodes", "12", "--seed", "7"];
    let (s, stdout) = run(&[&pause[..], &["--pause-ms", "8000"]].concat());
    let ms: u64 = s["virtual_ms"].parse().unwrap();
    assert!(ms >= 8_000, "{s:?}");
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().eq(["pause", "8000", "ms"])),
        "{stdout}"
    );
    let (default, stdout) = run(&pause);
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().eq(["pause", "2000", "ms"])),
        "{stdout}"
    );
    assert_ne!(default["trace"], s["trace"]);
    let split = ["--scenario", "partition", "--nodes", "12", "--seed", "7"];
    let (short, stdout) = run(&[&split[..], &["--split-s", "5"]].concat());
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().eq(["split", "5", "s"])),
        "{stdout}"
    );
    assert_ne!(short["trace"], run(&split).0["trace"]);
}

/// `--help` prints the usage on stdout and exits 0 (it was refused as an unknown argument,
/// with exit 2).
#[test]
fn help_prints_the_usage_and_succeeds() {
    for flag in ["--help", "-h"] {
        let out = simulate(&[flag]);
        assert!(out.status.success(), "{flag}: {out:?}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            stdout.starts_with("usage: simulate --scenario <cold-start|"),
            "{stdout}"
        );
    }
}

/// `--help` gives every optional flag's default, as the README says (`--loss`,
/// `--interval-ms`, `--phi`, `--prior-weight` and `--ring` had none).
#[test]
fn help_gives_every_flag_its_default() {
    let out = simulate(&["--help"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let flags: Vec<&str> = stdout.split('[').skip(1).collect();
    assert!(flags.len() >= 14, "{stdout}");
    for flag in flags {
        let flag = flag.split(']').next().unwrap();
        assert!(flag.ends_with(')'), "no default for [{flag}] in {stdout}");
    }
    assert!(stdout.contains("[--interval-ms T (200)]"), "{stdout}");
}
