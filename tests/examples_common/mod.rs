//! Building an example's binary from an integration test.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

/// The binary of the example `name`, built if needed.
///
/// Integration tests cannot name an example's binary (`CARGO_BIN_EXE_*` covers `[[bin]]`
/// targets only), so this runs `cargo build --example NAME` into the target directory and
/// profile of this test binary, with the features this test was built with. When `cargo test`
/// already built the examples (it does unless targets are narrowed), that is a fingerprint
/// check of a second or so; run alone (`cargo test --test metrics`) it builds the example
/// first. Cargo holds no lock on the build directory while tests run, so this does not wait
/// on the outer `cargo test`.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // <target>/<profile>/deps/<test>-<hash>
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let profile = profile_dir.file_name().unwrap().to_str().unwrap();
    // The same feature set as this test (`default` included: it is a feature of its own, so
    // naming the others is not the same build), so cargo reuses what it built.
    let mut features = Vec::new();
    for (on, feature) in [
        (cfg!(feature = "default"), "default"),
        (cfg!(feature = "tokio"), "tokio"),
        (cfg!(feature = "prometheus"), "prometheus"),
        (cfg!(feature = "sim"), "sim"),
        (cfg!(feature = "fuzzing"), "fuzzing"),
    ] {
        if on {
            features.push(feature);
        }
    }
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.args(["build", "--example", name, "--no-default-features"])
        .arg("--features")
        .arg(features.join(","))
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "building the {name} example failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = profile_dir.join("examples").join(name);
    assert!(bin.exists(), "{} missing after the build", bin.display());
    bin
}
