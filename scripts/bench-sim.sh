#!/usr/bin/env bash
# Runs the simulator measurements recorded in BENCHMARKS.md and prints each summary line
# (plus detection figures where they apply). Takes a long time at 1,000 nodes: pass a subset
# of section names to run only those: convergence detection idle scale speed large.
# `large` (3,000 and 4,000 nodes, up to 17 GB of memory) runs only when named.
set -euo pipefail
cd "$(dirname "$0")/.."
# The `sim` profile: `release` with whole-program optimisation (Cargo.toml), about 10 % faster
# on these long runs; `SIM=path` runs another build instead.
cargo build --profile sim --features sim --example simulate >/dev/null
SIM=${SIM:-${CARGO_TARGET_DIR:-target}/sim/examples/simulate}
sections=${*:-convergence detection idle scale speed}
# A run that does not converge (exit 1) is printed like the others and marked; the script
# goes on and exits 1 at the end (under `set -e` it used to stop silently at that run).
failed=0
run() {
  local out rc=0
  out=$("$SIM" "$@") || rc=$?
  echo "\$ simulate $*"
  echo "$out" | grep -E 'detection median|false convictions|paused node|wall time' | sed 's/^ */    /' || true
  echo "$out" | tail -n 1
  if [ "$rc" -ne 0 ]; then
    echo "    (exit $rc: did not converge, or refused its arguments)"
    failed=1
  fi
}
for s in $sections; do
  case $s in
    convergence)
      for n in 10 100 1000; do run --scenario update --nodes $n --seed 1 --interval-ms 100; done
      run --scenario cold-start --nodes 1000 --seed 1 --interval-ms 100
      run --scenario update --nodes 1000 --seed 1 --interval-ms 100 --loss 0.2
      run --scenario cold-start --nodes 1000 --seed 1 --interval-ms 100 --loss 0.2
      run --scenario partition --nodes 100 --seed 1 --interval-ms 100
      run --scenario churn --nodes 100 --seed 1 --interval-ms 100
      for n in 10 100 200; do run --scenario load --nodes $n --seed 1 --interval-ms 100; done
      ;;
    detection)
      for l in 0 0.05 0.1 0.2; do run --scenario crash --nodes 100 --seed 1 --interval-ms 100 --loss $l; done
      for seed in 2 3 4 5; do run --scenario crash --nodes 100 --seed $seed --interval-ms 100 --loss 0.1; done
      run --scenario pause --nodes 100 --seed 1 --interval-ms 100 --loss 0.1
      run --scenario idle --nodes 100 --seed 1 --interval-ms 100 --loss 0.1 --duration-s 3600
      ;;
    idle)
      for n in 100 300 1000; do run --scenario idle --nodes $n --seed 1 --interval-ms 100; done
      ;;
    scale)
      run --scenario crash --nodes 1000 --seed 1 --interval-ms 100 --loss 0.05
      ;;
    large)
      run --scenario update --nodes 3000 --seed 1 --interval-ms 100
      run --scenario cold-start --nodes 3000 --seed 1 --interval-ms 100
      run --scenario update --nodes 4000 --seed 1 --interval-ms 100
      ;;
    speed)
      run --scenario idle --nodes 1000 --seed 1 --interval-ms 1000 --duration-s 600
      ;;
  esac
done
exit $failed
