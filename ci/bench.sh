#!/usr/bin/env bash
# Benchmarks a real local cluster (Redis, chat workers with nginx + nchan +
# the module, chatup worker) with release builds, and prints figures.
# Arguments go to chatup-bench (see --help): e.g.
#   bash ci/bench.sh --readers 2000 --posters 8 --messages 200
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash ci/setup.sh
cargo build -q --release -p chatup
export CHATUP_BIN="$root/target/release/chatup"
exec cargo run -q --release -p chatup-testkit --bin chatup-bench -- "$@"
