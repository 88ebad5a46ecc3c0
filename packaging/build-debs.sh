#!/usr/bin/env bash
# Builds ChatUp's two Debian packages into target/debian/ (release builds):
#   chatup_<version>-1_amd64.deb: /usr/bin/chatup; /etc/chatup/worker.toml
#     and dispatcher.toml; systemd units chatup-worker.service and
#     chatup-dispatcher.service (user chatup, hardened); /run/chatup through
#     tmpfiles.d; /etc/default/chatup-* for environment settings.
#   libnginx-mod-http-chatup_<version>-1_amd64.deb: the nginx module, built
#     against the nginx installed here and depending on exactly its ABI
#     (nginx-abi-*), enabled the Debian way (modules-available and a link in
#     modules-enabled), and the chat worker's site
#     (/etc/nginx/sites-available/chatup-worker, not enabled).
# Prints the paths of the two packages.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
here=$root/packaging
target=${CARGO_TARGET_DIR:-$root/target}
out=$target/debian
stage=$out/stage

log() { printf '[build-debs] %s\n' "$*" >&2; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
revision=1
arch=$(dpkg --print-architecture)

log "building chatup and the module (release)"
cargo build -q --release -p chatup
bash nginx-build/build.sh >/dev/null
module=$target/release/libngx_chatup.so
nginx_version=$(cat "$module.nginx-version")
abi=$(dpkg-query -W -f='${Provides}' nginx | tr ',' '\n' | grep -o 'nginx-abi-[0-9a-z.+~-]*' | head -1)
[ -n "$abi" ] || { log "the installed nginx provides no nginx-abi-*: build on Debian's nginx"; exit 1; }

# The newest glibc symbol version a binary needs.
glibc_of() { objdump -T "$1" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1; }

rm -rf "$stage"
mkdir -p "$out"

# --- chatup ---------------------------------------------------------------
p=$stage/chatup
install -D -m 0755 "$target/release/chatup" "$p/usr/bin/chatup"
strip --strip-unneeded "$p/usr/bin/chatup"
install -D -m 0640 conf/chatup-worker.toml "$p/etc/chatup/worker.toml"
install -D -m 0640 conf/chatup-dispatcher.toml "$p/etc/chatup/dispatcher.toml"
install -D -m 0640 "$here/chatup/default-chatup-worker" "$p/etc/default/chatup-worker"
install -D -m 0640 "$here/chatup/default-chatup-dispatcher" "$p/etc/default/chatup-dispatcher"
install -D -m 0644 "$here/chatup/chatup-worker.service" "$p/lib/systemd/system/chatup-worker.service"
install -D -m 0644 "$here/chatup/chatup-dispatcher.service" "$p/lib/systemd/system/chatup-dispatcher.service"
install -D -m 0644 "$here/chatup/tmpfiles.conf" "$p/usr/lib/tmpfiles.d/chatup.conf"
for doc in README.md docs/operations.md docs/security.md docs/http-api.md conf/chatup-dispatcher.nginx.conf \
    conf/monitoring/chatup-alerts.yml conf/monitoring/chatup-dashboard.json; do
    install -D -m 0644 "$doc" "$p/usr/share/doc/chatup/$(basename "$doc")"
done
mkdir -p "$p/DEBIAN"
install -m 0755 "$here/chatup/postinst" "$here/chatup/prerm" "$here/chatup/postrm" "$p/DEBIAN/"
printf '%s\n' /etc/chatup/worker.toml /etc/chatup/dispatcher.toml \
    /etc/default/chatup-worker /etc/default/chatup-dispatcher >"$p/DEBIAN/conffiles"
cat >"$p/DEBIAN/control" <<CONTROL
Package: chatup
Version: $version-$revision
Architecture: $arch
Maintainer: ChatUp developers <chatup@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$p" | cut -f1)
Depends: libc6 (>= $(glibc_of "$p/usr/bin/chatup")), adduser
Recommends: libnginx-mod-http-chatup (= $version-$revision), redis-server, ca-certificates
Section: net
Priority: optional
Description: ChatUp chat worker sidecar and dispatcher
 chatup worker runs beside each chat worker's nginx (nchan and the ChatUp
 module): it stores messages in Redis, fans them out to the local nchan and
 announces the worker's load. chatup dispatcher sends each client to the
 least-loaded live worker and serves stats, history, bans and server posts.
CONTROL
deb=$out/chatup_${version}-${revision}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$p" "$deb" >/dev/null
echo "$deb"

# --- libnginx-mod-http-chatup --------------------------------------------
p=$stage/nginx-module
install -D -m 0644 "$module" "$p/usr/lib/nginx/modules/ngx_http_chatup_module.so"
strip --strip-unneeded "$p/usr/lib/nginx/modules/ngx_http_chatup_module.so"
install -D -m 0644 "$here/nginx-module/mod-http-chatup.conf" \
    "$p/usr/share/nginx/modules-available/mod-http-chatup.conf"
# The chat worker's site: the http-level part of the template, for
# Debian's nginx.conf to include, with Debian's paths.
mkdir -p "$p/etc/nginx/sites-available"
{
    cat <<'HEADER'
# ChatUp chat worker, for Debian's nginx (from conf/chatup-worker.nginx.conf).
# Before enabling it (ln -s ../sites-available/chatup-worker
# /etc/nginx/sites-enabled/): put the site's JWT public key in
# /etc/chatup/site-jwt-public.pem, the read-ticket secret shared with the
# dispatchers in /etc/chatup/ticket.secret (mode 0640, group chatup), and
# set chatup_jwt_issuer below. In /etc/nginx/nginx.conf, raise
# worker_connections (16384) and worker_rlimit_nofile for many readers.
HEADER
    sed -n '/^http {$/,/^}$/p' conf/chatup-worker.nginx.conf | sed '1d;$d' \
        | sed '/# Temp files in the run directory/,/which sets these already\./d' \
        | sed -e 's/^    //' \
              -e 's|{{ACCESS_LOG}}|/var/log/nginx/chatup-access.log|g' \
              -e 's|{{RUN_DIR}}|/run/chatup|g' \
              -e 's|{{LISTEN}}|80|g' \
              -e 's|{{JWT_PUBLIC_KEY}}|/etc/chatup/site-jwt-public.pem|g' \
              -e 's|{{TICKET_SECRET}}|/etc/chatup/ticket.secret|g' \
              -e 's|{{JWT_ISSUER}}|https://www.example.com|g'
} >"$p/etc/nginx/sites-available/chatup-worker"
if grep -q '{{' "$p/etc/nginx/sites-available/chatup-worker"; then
    log "a placeholder is left in the site file"
    exit 1
fi
install -D -m 0644 README.md "$p/usr/share/doc/libnginx-mod-http-chatup/README.md"
mkdir -p "$p/DEBIAN"
install -m 0755 "$here/nginx-module/postinst" "$here/nginx-module/prerm" "$here/nginx-module/postrm" "$p/DEBIAN/"
echo /etc/nginx/sites-available/chatup-worker >"$p/DEBIAN/conffiles"
cat >"$p/DEBIAN/control" <<CONTROL
Package: libnginx-mod-http-chatup
Version: $version-$revision
Architecture: $arch
Maintainer: ChatUp developers <chatup@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$p" | cut -f1)
Depends: $abi, libnginx-mod-nchan, libc6 (>= $(glibc_of "$p/usr/lib/nginx/modules/ngx_http_chatup_module.so"))
Recommends: chatup (= $version-$revision)
Section: httpd
Priority: optional
Description: ChatUp module for nginx (built for nginx $nginx_version)
 Verifies the site's JSON Web Tokens, checks chat posts and hands them to
 the chatup worker sidecar, and admits and counts readers, in-process and
 without blocking nginx; nchan delivers. Built against nginx $nginx_version
 and depending on exactly its module ABI ($abi).
CONTROL
deb=$out/libnginx-mod-http-chatup_${version}-${revision}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$p" "$deb" >/dev/null
echo "$deb"
