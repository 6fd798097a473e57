#!/usr/bin/env bash
# Builds and runs every fuzz target for SECONDS each, one after the other; exits non-zero if
# any target crashed (panic, timeout, out of memory). For CI, 30 to 60 seconds each.
#
#   fuzz/run.sh 60                 # all targets, 60 s each
#   fuzz/run.sh 600 structured     # one target
#
# Environment:
#   FUZZ_SANITIZER   cargo fuzz sanitizer (default: none; the crate forbids unsafe code, so
#                    AddressSanitizer mostly halves the speed; set "address" to use it)
#   FUZZ_TARGET_DIR  cargo target dir for the fuzz build (default: fuzz/target)
#   FUZZ_ARGS        extra libFuzzer arguments
#
# Needs cargo-fuzz (installed here if missing) and libFuzzer's -Z flags: on a stable
# toolchain they are enabled with RUSTC_BOOTSTRAP=1, which this script sets for its own cargo
# calls only. Crashing inputs land in fuzz/artifacts/<target>/; the growing corpora in
# fuzz/corpus/<target>/ (seeds, checked in, are in fuzz/seeds/<target>/).
set -euo pipefail

if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 SECONDS [TARGET...]" >&2
    exit 2
fi
seconds=$1
shift
cd "$(dirname "$0")/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "run.sh: cargo-fuzz is missing; installing it with 'cargo install cargo-fuzz --locked'"
    cargo install cargo-fuzz --locked
fi

sanitizer=${FUZZ_SANITIZER:-none}
target_dir=${FUZZ_TARGET_DIR:-fuzz/target}
export RUSTC_BOOTSTRAP=1

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(datagram stream_frame structured)
fi

# Per-target libFuzzer arguments.
args_for() {
    case $1 in
        datagram) echo "-max_len=4096" ;;
        # Frames are larger than datagrams (up to max_frame_size); 64 KiB covers every
        # captured frame with room to grow.
        stream_frame) echo "-max_len=65536" ;;
        # Structure-aware: the input is a byte source for `arbitrary`, not a packet.
        structured) echo "-max_len=4096" ;;
        *) echo "" ;;
    esac
}

echo "run.sh: building ${targets[*]} (sanitizer: $sanitizer)"
for t in "${targets[@]}"; do
    cargo fuzz build -s "$sanitizer" --target-dir "$target_dir" "$t"
done

failed=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t" "fuzz/artifacts/$t"
    echo "run.sh: fuzzing $t for ${seconds}s"
    # shellcheck disable=SC2046 # word splitting of the argument lists is intended
    if ! cargo fuzz run -s "$sanitizer" --target-dir "$target_dir" "$t" \
        "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        $(args_for "$t") ${FUZZ_ARGS:-}; then
        echo "run.sh: $t FAILED; reproduce with:" >&2
        for a in "fuzz/artifacts/$t"/*; do
            [ -e "$a" ] && echo "  RUSTC_BOOTSTRAP=1 cargo fuzz run -s $sanitizer $t $a" >&2
        done
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "run.sh: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "run.sh: no crash in ${targets[*]} (${seconds}s each)"
