#!/usr/bin/env bash
# Fuzzes every parser an outsider reaches (fuzz/fuzz_targets: tokens and
# tickets, the chat POST, room names and query strings, frames, envelopes
# and the readers zone's changes) with cargo fuzz (libFuzzer), for
# FUZZ_SECONDS per target (default 20: the test command's short run; give
# it hours for a long one). Needs the nightly toolchain: without it the run
# is skipped, and says so. A crash fails the run; its input is kept in
# target/fuzz-artifacts/<target>/ (turn it into a regression test).
#
#   FUZZ_SECONDS=3600 bash ci/fuzz.sh          # a long run of every target
#   FUZZ_SECONDS=600 bash ci/fuzz.sh token     # one target
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${FUZZ_SECONDS:-20}

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "[fuzz] skipped: no nightly toolchain (rustup toolchain install nightly)" >&2
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "[fuzz] installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked --quiet
fi

export CARGO_TARGET_DIR=$root/target/fuzz
cd "$root/fuzz"
echo "[fuzz] building the targets (nightly, AddressSanitizer)" >&2
cargo +nightly fuzz build -O 2>&1 | tail -1
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
for target in "${targets[@]}"; do
    # The working corpus grows under target/; the seeds (from the tests)
    # stay as committed.
    corpus=$root/target/fuzz-corpus/$target
    artifacts=$root/target/fuzz-artifacts/$target
    mkdir -p "$corpus" "$artifacts"
    echo "[fuzz] $target for ${seconds}s" >&2
    if ! cargo +nightly fuzz run -O "$target" "$corpus" "$root/fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -artifact_prefix="$artifacts/" -print_final_stats=1 \
        >"$root/target/fuzz-$target.log" 2>&1; then
        tail -40 "$root/target/fuzz-$target.log" >&2
        echo "[fuzz] $target FAILED: the input is in $artifacts/" >&2
        exit 1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$root/target/fuzz-$target.log" | grep -o '[0-9]*$' || echo "?")
    echo "[fuzz] $target ok: $runs inputs, no crash" >&2
done
