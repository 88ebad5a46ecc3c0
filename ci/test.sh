#!/usr/bin/env bash
# Runs every ChatUp test: formatting and lints, unit tests, and the
# end-to-end tests against real redis-server, nginx (nchan + the module)
# and chatup processes. Installs and builds what is missing first.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

bash ci/setup.sh
# The module once more with debug assertions (Rust's checks of unsafe
# preconditions included): tests post chunked and empty bodies to it.
echo "[test] building the module with debug assertions" >&2
CARGO_PROFILE=dev SKIP_APT=1 bash nginx-build/build.sh >/dev/null
# The configured nginx tree the module builds against: the one setup.sh
# prepared, unless the caller points at another nginx (nginx-build/build.sh).
export NGINX_BUILD_DIR="${NGINX_BUILD_DIR:-$root/target/nginx-build/debian/objs}"

echo "[test] cargo fmt --check" >&2
cargo fmt --all --check
echo "[test] cargo clippy" >&2
cargo clippy -q --workspace --all-targets -- -D warnings
echo "[test] client unit tests" >&2
(cd client && node build.mjs --tests >/dev/null && node --test build/test/) 2>&1 | tee "$root/target/client-unit.txt"
echo "[test] cargo test" >&2
cargo test --workspace --no-fail-fast 2>&1 | tee "$root/target/test-output.txt"
# A short fuzz run of every parser an outsider reaches (nightly only; a
# long one: FUZZ_SECONDS=3600 bash ci/fuzz.sh).
echo "[test] fuzzing" >&2
FUZZ_SECONDS="${FUZZ_SECONDS:-20}" bash ci/fuzz.sh
# Plain summary line over all test binaries and the client's unit tests.
awk '/^test result:/ { p += $4; f += $6 } /^# pass / { p += $3 } /^# fail / { f += $3 }
     END { printf "%d passed, %d failed\n", p, f; exit (f > 0) }' \
    "$root/target/test-output.txt" "$root/target/client-unit.txt"
