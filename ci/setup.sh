#!/usr/bin/env bash
# Installs what ChatUp needs on Debian bookworm (as root) and builds it:
# apt packages (nginx, nchan, redis, chromium, build deps), the nginx module
# against Debian's nginx, the chatup binary and the JS client. Safe to run
# again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

need=()
# chromium: the client's browser tests (Debian's build, driven by playwright-core);
# libnss3-tools: certutil, to make the HTTPS browser test's CA trusted by it.
for p in redis-server redis-tools curl openssl chromium fonts-dejavu-core fonts-noto-color-emoji libnss3-tools; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "[setup] installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's redis-server package may start a system instance; ours are
# started by the scripts and tests on their own ports.

# nginx, nchan, nginx-dev and the module (installs its own apt packages).
bash nginx-build/build.sh >/dev/null
echo "[setup] building chatup" >&2
cargo build -q -p chatup

# The JS client: npm packages from package-lock.json, then dist/.
echo "[setup] building the client" >&2
if ! command -v npm >/dev/null; then
    echo "[setup] npm is missing: install Node.js 18 or later" >&2
    exit 1
fi
(
    cd client
    if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
        npm ci --no-audit --no-fund --loglevel=error >/dev/null
    fi
    node build.mjs >&2
)
