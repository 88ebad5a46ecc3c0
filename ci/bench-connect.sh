#!/usr/bin/env bash
# Times readers connecting to a ChatUp chat worker (shipped configuration)
# and to raw nchan, side by side on this machine, and prints the ratio.
# Arguments go to chatup-connect-bench (see --help), e.g.
#   bash ci/bench-connect.sh --readers 10000 --rooms 1000
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash ci/setup.sh
cargo build -q --release -p chatup
export CHATUP_BIN="$root/target/release/chatup"
exec cargo run -q --release -p chatup-testkit --bin chatup-connect-bench -- "$@"
