#!/usr/bin/env bash
# Readers connecting all at once, on ChatUp and on raw nchan in the same
# run (release builds): `chatup-bench --reference nchan storm`. Arguments go
# to that scenario (see `chatup-bench storm --help`), e.g.
#   bash ci/bench-connect.sh --readers 10000 --rooms 1000
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash ci/setup.sh
# Tens of thousands of readers need as many sockets in the load generator
# and in nginx (root may raise the hard limit; others get what they have).
ulimit -n 100000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build -q --release -p chatup
export CHATUP_BIN="$root/target/release/chatup"
exec cargo run -q --release -p chatup-testkit --bin chatup-bench -- --reference nchan storm "$@"
