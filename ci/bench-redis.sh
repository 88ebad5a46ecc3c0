#!/usr/bin/env bash
# Many small rooms on one Redis server and on a 3-shard Redis Cluster
# (sharded Pub/Sub), in one run, with release builds; prints messages/s
# accepted and CPU per message for both, and their ratios. Arguments go to
# chatup-redis-bench (see --help): e.g.
#   bash ci/bench-redis.sh --rooms 300 --messages 3000 --posters 8
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash ci/setup.sh
cargo build -q --release -p chatup
export CHATUP_BIN="$root/target/release/chatup"
exec cargo run -q --release -p chatup-testkit --bin chatup-redis-bench -- "$@"
