//! The `simulate` example's command line: the summary line scripts parse, and arguments it
//! must refuse with exit code 2 rather than run or panic.
#![cfg(feature = "sim")]

mod examples_common;

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

#[test]
fn bad_arguments_exit_with_2_and_say_why() {
    let most = u64::MAX.to_string();
    for (args, says) in [
        (vec!["--scenario", "nope"], "nope"),
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
    ] {
        let out = simulate(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed a report");
    }
}
