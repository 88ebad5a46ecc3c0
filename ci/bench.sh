#!/usr/bin/env bash
# Benchmarks a real local cluster (Redis, chat workers with nginx + nchan +
# the module, chatup worker) with release builds, and prints figures.
# Arguments go to chatup-bench (see --help): a scenario (big-room,
# many-rooms, storm) and its settings, with --reference nchan to run raw
# nchan with the same load in the same run, e.g.
#   bash ci/bench.sh --reference nchan many-rooms --rooms 500 --rate 500
#   bash ci/bench.sh big-room --readers 2000 --posters 8 --messages 200
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash ci/setup.sh
# Tens of thousands of readers need as many sockets in the load generator
# and in nginx (root may raise the hard limit; others get what they have).
ulimit -n 100000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build -q --release -p chatup
export CHATUP_BIN="$root/target/release/chatup"
exec cargo run -q --release -p chatup-testkit --bin chatup-bench -- "$@"
