#!/usr/bin/env bash
# Sets up and runs a complete local ChatUp deployment in the foreground:
# its own redis-server, nginx (nchan + the ChatUp module) and the
# `chatup worker` sidecar beside it. Prints how to post and subscribe;
# Ctrl-C stops everything it started.
#
# Environment (all optional):
#   CHATUP_DEMO_PORT        public HTTP port of the chat worker (default 8080)
#   CHATUP_DEMO_REDIS_PORT  port of the demo's redis-server (default 6390)
#   CHATUP_DEMO_DIR         run directory: sockets, logs (default .run/)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

bash ci/setup.sh

http_port=${CHATUP_DEMO_PORT:-8080}
redis_port=${CHATUP_DEMO_REDIS_PORT:-6390}
run=${CHATUP_DEMO_DIR:-$root/.run}
chatup=$root/target/debug/chatup
module=$root/target/release/libngx_chatup.so
public_key=$root/conf/dev-keys/jwt-rs256.pub

log() { printf '[run-local] %s\n' "$*" >&2; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$http_port" "$redis_port"; do
    if port_in_use "$port"; then
        log "port $port is already in use; set CHATUP_DEMO_PORT / CHATUP_DEMO_REDIS_PORT"
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
mkdir -p "$run/redis"

redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$run/redis" \
    --save "" --appendonly no >"$run/redis/redis.log" 2>&1 &
pids+=($!)
wait_for redis redis-cli -p "$redis_port" ping

# Starts one chat worker (sidecar + nginx) in $run/$1 on port $2.
start_chat_worker() {
    local dir=$run/$1 port=$2
    mkdir -p "$dir/tmp"
    sed -e "s|{{RUN_DIR}}|$dir|g" \
        -e "s|{{LISTEN}}|127.0.0.1:$port|g" \
        -e "s|{{NGINX_USER}}|$(id -un)|g" \
        -e "s|{{NCHAN_MODULE}}|/usr/lib/nginx/modules/ngx_nchan_module.so|g" \
        -e "s|{{CHATUP_MODULE}}|$module|g" \
        -e "s|{{JWT_PUBLIC_KEY}}|$public_key|g" \
        conf/chatup-worker.nginx.conf >"$dir/nginx.conf"

    "$chatup" worker --config conf/chatup-worker.toml \
        --redis-url "redis://127.0.0.1:$redis_port" \
        --listen "$dir/sidecar.sock" --socket-mode 666 \
        --nchan-socket "$dir/nginx-internal.sock" \
        --state-file "$dir/rooms.json" 2>"$dir/sidecar.log" &
    pids+=($!)
    wait_for "chatup worker ($1)" test -S "$dir/sidecar.sock"

    nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' 2>"$dir/nginx-stderr.log" &
    pids+=($!)
    wait_for "nginx ($1)" port_in_use "$port"
    log "$1: http://127.0.0.1:$port (logs in $dir)"
}

start_chat_worker worker1 "$http_port"

token=$("$chatup" dev-token --key conf/dev-keys/jwt-rs256.key --sub alice --name Alice)
base=http://127.0.0.1:$http_port
cat <<EOF

ChatUp is running (development keys: never use them in production).

Subscribe to the room "lobby" (EventSource; WebSocket and long-poll work on the same URL):
  curl -N -H 'Accept: text/event-stream' $base/sub/lobby

Post to it as "alice" (a development token, valid for an hour):
  curl -i -X POST $base/rooms/lobby/messages \\
    -H 'Authorization: Bearer $token' \\
    -H 'Content-Type: application/json' -d '{"msg": "hello"}'

Another token: $chatup dev-token --sub bob --name Bob
Press Ctrl-C to stop.
EOF

# Runs until Ctrl-C or until any process exits (then stops the rest).
set +e
wait -n "${pids[@]}"
log "a process exited; see the logs in $run"
exit 1
