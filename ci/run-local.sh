#!/usr/bin/env bash
# Sets up and runs a complete local ChatUp cluster in the foreground: its
# own redis-server, two chat workers (each an nginx with nchan and the
# ChatUp module, and the `chatup worker` sidecar beside it) and a
# `chatup dispatcher`. Prints how to join, post and subscribe; Ctrl-C stops
# everything it started.
#
# Environment (all optional):
#   CHATUP_DEMO_PORT        HTTP port of the first chat worker; the second
#                           uses the next one (default 8080, 8081)
#   CHATUP_DEMO_DISPATCHER_PORT  the dispatcher's port (default 8090)
#   CHATUP_DEMO_REDIS_PORT  port of the demo's redis-server (default 6390)
#   CHATUP_DEMO_METRICS_PORT  Prometheus metrics of worker1; worker2 and the
#                           dispatcher use the next two (default 9464-9466)
#   CHATUP_DEMO_DIR         run directory: sockets, logs (default .run/)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

bash ci/setup.sh
# Release builds, as in production (setup.sh builds the module in release
# already; the tests use the debug sidecar).
echo "[run-local] building chatup (release)" >&2
cargo build -q --release -p chatup

http_port=${CHATUP_DEMO_PORT:-8080}
second_port=$((http_port + 1))
dispatcher_port=${CHATUP_DEMO_DISPATCHER_PORT:-8090}
redis_port=${CHATUP_DEMO_REDIS_PORT:-6390}
run=${CHATUP_DEMO_DIR:-$root/.run}
chatup=$root/target/release/chatup
module=$root/target/release/libngx_chatup.so
public_key=$root/conf/dev-keys/jwt-rs256.pub
ticket_secret=$root/conf/dev-keys/ticket-hs256.secret

log() { printf '[run-local] %s\n' "$*" >&2; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
operator_port=$((dispatcher_port + 1))
# Prometheus metrics: worker1, worker2, the dispatcher.
metrics_port=${CHATUP_DEMO_METRICS_PORT:-9464}
for port in "$http_port" "$second_port" "$dispatcher_port" "$operator_port" "$redis_port" \
    "$metrics_port" "$((metrics_port + 1))" "$((metrics_port + 2))"; do
    if port_in_use "$port"; then
        log "port $port is already in use; set CHATUP_DEMO_PORT / CHATUP_DEMO_DISPATCHER_PORT / CHATUP_DEMO_REDIS_PORT / CHATUP_DEMO_METRICS_PORT"
        exit 1
    fi
done

# Waits up to 10 s for a command to succeed.
wait_for() {
    local what=$1; shift
    for _ in $(seq 100); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    log "$what did not come up; see the logs in $run"
    exit 1
}

pids=()
stop_all() {
    trap - EXIT INT TERM
    log "stopping"
    # Reverse order: nginx and the sidecar before Redis, so nothing is lost.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null || true
        wait "${pids[i]}" 2>/dev/null || true
    done
}
trap stop_all EXIT
trap 'stop_all; exit 0' INT TERM

rm -rf "$run"
# Sockets live here (nginx makes its internal one 0666): only this user
# may enter, so no other local user can publish to nchan or hand the
# sidecar an envelope (see docs/security.md).
mkdir -p -m 0700 "$run"
mkdir -p "$run/redis"

redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$run/redis" \
    --save "" --appendonly no >"$run/redis/redis.log" 2>&1 &
pids+=($!)
wait_for redis redis-cli -p "$redis_port" ping

# Starts one chat worker (sidecar + nginx) in $run/$1 on port $2.
start_chat_worker() {
    local dir=$run/$1 port=$2
    mkdir -p -m 0700 "$dir" "$dir/tmp"
    sed -e "s|{{ACCESS_LOG}}|$dir/nginx-access.log|g" \
        -e "s|{{RUN_DIR}}|$dir|g" \
        -e "s|{{LISTEN}}|127.0.0.1:$port|g" \
        -e "s|{{NGINX_USER}}|$(id -un)|g" \
        -e "s|{{NCHAN_MODULE}}|/usr/lib/nginx/modules/ngx_nchan_module.so|g" \
        -e "s|{{CHATUP_MODULE}}|$module|g" \
        -e "s|{{JWT_PUBLIC_KEY}}|$public_key|g" \
        -e "s|{{TICKET_SECRET}}|$ticket_secret|g" \
        -e "s|{{JWT_ISSUER}}|chatup-dev-site|g" \
        conf/chatup-worker.nginx.conf >"$dir/nginx.conf"

    "$chatup" worker --config conf/chatup-worker.toml \
        --worker-id "$1" --public-url "http://127.0.0.1:$port" \
        --redis-url "redis://127.0.0.1:$redis_port" \
        --listen "$dir/sidecar.sock" --socket-mode 660 \
        --nchan-socket "$dir/nginx-internal.sock" \
        --metrics-listen "127.0.0.1:$3" 2>"$dir/sidecar.log" &
    pids+=($!)
    wait_for "chatup worker ($1)" test -S "$dir/sidecar.sock"

    nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' 2>"$dir/nginx-stderr.log" &
    pids+=($!)
    wait_for "nginx ($1)" port_in_use "$port"
    log "$1: http://127.0.0.1:$port (logs in $dir)"
}

start_chat_worker worker1 "$http_port" "$metrics_port"
start_chat_worker worker2 "$second_port" "$((metrics_port + 1))"

"$chatup" dispatcher --config conf/chatup-dispatcher.toml \
    --listen "127.0.0.1:$dispatcher_port" \
    --operator-listen "127.0.0.1:$operator_port" \
    --metrics-listen "127.0.0.1:$((metrics_port + 2))" \
    --server-secret-file conf/dev-keys/jwt-hs256.secret \
    --user-public-key conf/dev-keys/jwt-rs256.pub --user-issuer chatup-dev-site \
    --ticket-secret-file "$ticket_secret" \
    --demo-dir client/dist --dev-token-key conf/dev-keys/jwt-rs256.key \
    --redis-url "redis://127.0.0.1:$redis_port" 2>"$run/dispatcher.log" &
pids+=($!)
wait_for dispatcher port_in_use "$dispatcher_port"
log "dispatcher: http://127.0.0.1:$dispatcher_port (log in $run/dispatcher.log)"

token=$("$chatup" dev-token --key conf/dev-keys/jwt-rs256.key --sub alice --name Alice)
base=http://127.0.0.1:$http_port
dispatcher=http://127.0.0.1:$dispatcher_port
cat <<EOF

ChatUp is running: two chat workers and a dispatcher on one Redis
(development keys: never use them in production).

Open the example page, in two windows to chat with yourself:
  $dispatcher/demo/

Ask the dispatcher for a worker (and the room's counts and history):
  curl -s -X POST $dispatcher/join/lobby

Subscribe to the room "lobby" on a worker (EventSource; WebSocket and long-poll use the same URL;
to be listed as a member, get a read ticket from the dispatcher, POST /tickets/lobby with
-H "Authorization: Bearer <JWT>", and add ?ticket=<ticket>):
  curl -N -H 'Accept: text/event-stream' $base/sub/lobby

Post to it as "alice" (a development token, valid for an hour), on either worker:
  curl -i -X POST $base/rooms/lobby/messages \\
    -H 'Authorization: Bearer $token' \\
    -H 'Content-Type: application/json' -d '{"msg": "hello"}'

Who is there, and the history:
  curl -s $dispatcher/rooms/lobby/stats
  curl -s $dispatcher/rooms/lobby/messages

Ban bob from the room for a minute (the server API takes JWTs signed with the server key):
  curl -s -X POST $dispatcher/bans --data-binary "\$($chatup dev-server-token --act ban \\
    --claims '{"bans": [{"user": "bob", "room": "lobby", "duration": 60}]}')"

Prometheus metrics (worker1, worker2, the dispatcher; docs/operations.md lists them):
  curl -s http://127.0.0.1:$metrics_port/metrics
  curl -s http://127.0.0.1:$((metrics_port + 1))/metrics
  curl -s http://127.0.0.1:$((metrics_port + 2))/metrics

Another token: $chatup dev-token --sub bob --name Bob
Press Ctrl-C to stop.
EOF

# Runs until Ctrl-C or until any process exits (then stops the rest).
set +e
wait -n "${pids[@]}"
log "a process exited; see the logs in $run"
exit 1
