#!/usr/bin/env bash
# Build the ChatUp nginx module against the nginx that will load it.
#
# By default that is Debian bookworm's packaged nginx (1.22.1): we install
# nginx-dev, copy its configured-source skeleton and run ./configure with
# Debian's own flags (as debhelper's nginx_mod.pm does), so the resulting
# .so carries the same module signature as /usr/sbin/nginx.
#
# Another nginx (nginx.org packages, your own build): point NGINX_SOURCE_DIR
# at that nginx's source tree, already ./configure'd with the same flags as
# the binary (`nginx -V`), or NGINX_BUILD_DIR at its objs/ directory, and set
# NGINX_BIN to the binary that will load the module. The script refuses to
# build when the source version differs from the binary's version.
#
# Environment:
#   NGINX_BIN         nginx binary that will load the module (default: nginx on PATH)
#   NGINX_SOURCE_DIR  a configured nginx source tree (skips the Debian steps)
#   NGINX_BUILD_DIR   its objs/ directory (default: $NGINX_SOURCE_DIR/objs)
#   SKIP_APT=1        do not run apt-get (everything is already installed)
#   CARGO_PROFILE     release (default) or dev
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
profile=${CARGO_PROFILE:-release}

log() { printf '[nginx-build] %s\n' "$*" >&2; }
die() { printf '[nginx-build] error: %s\n' "$*" >&2; exit 1; }

apt_packages=(nginx nginx-dev libnginx-mod-nchan libclang-dev clang libpcre2-dev libssl-dev zlib1g-dev dpkg-dev)

install_debian_packages() {
    [ "${SKIP_APT:-0}" = 1 ] && return 0
    local missing=()
    for p in "${apt_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "apt-get not found; install ${missing[*]} by hand or set NGINX_SOURCE_DIR"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# Prints the version of an nginx binary, e.g. 1.22.1.
binary_version() { "$1" -v 2>&1 | sed -n 's|^nginx version: [^/]*/\([0-9.]*\).*|\1|p'; }

# Prints the version of an nginx source tree, from src/core/nginx.h.
source_version() { sed -n 's|^#define NGINX_VERSION *"\([0-9.]*\)".*|\1|p' "$1/src/core/nginx.h"; }

prepare_debian_tree() {
    local src=/usr/share/nginx/src build=$target_dir/nginx-build/debian
    [ -f "$src/conf_flags" ] || die "$src/conf_flags missing: is nginx-dev installed?"
    local stamp_want
    stamp_want="$(source_version "$src") $(dpkg-buildflags --get CFLAGS) $(cat "$src/conf_flags")"
    if [ -f "$build/objs/ngx_auto_config.h" ] && [ "$(cat "$build/.chatup-stamp" 2>/dev/null)" = "$stamp_want" ]; then
        echo "$build"; return 0
    fi
    log "configuring nginx $(source_version "$src") with Debian's flags in $build"
    rm -rf "$build"; mkdir -p "$build"
    cp -a "$src/." "$build/"
    (
        cd "$build"
        # shellcheck disable=SC1091
        . ./conf_flags
        ./configure \
            --with-cc-opt="$(dpkg-buildflags --get CFLAGS) -fPIC $(dpkg-buildflags --get CPPFLAGS)" \
            --with-ld-opt="$(dpkg-buildflags --get LDFLAGS) -fPIC" \
            "${NGX_CONF_FLAGS[@]}" >configure.log 2>&1 || { tail -20 configure.log >&2; exit 1; }
    )
    echo "$stamp_want" >"$build/.chatup-stamp"
    echo "$build"
}

main() {
    local nginx_bin=${NGINX_BIN:-}
    local source_dir=${NGINX_SOURCE_DIR:-}
    if [ -z "${NGINX_BUILD_DIR:-}" ] && [ -z "$source_dir" ]; then
        install_debian_packages
        source_dir=$(prepare_debian_tree)
    fi
    [ -n "$nginx_bin" ] || nginx_bin=$(command -v nginx || true)
    [ -n "$nginx_bin" ] || die "no nginx binary found; set NGINX_BIN"
    local build_dir=${NGINX_BUILD_DIR:-$source_dir/objs}
    [ -f "$build_dir/ngx_auto_config.h" ] || die "$build_dir is not a configured nginx objs/ directory (run ./configure there first)"
    local tree=${source_dir:-$(cd "$build_dir/.." && pwd)}

    local want have
    want=$(binary_version "$nginx_bin")
    have=$(source_version "$tree")
    [ -n "$want" ] || die "cannot read the version of $nginx_bin"
    if [ "$want" != "$have" ]; then
        die "version mismatch: $nginx_bin is nginx $want but $tree holds nginx $have; build against the source of the nginx that will load the module"
    fi

    log "building ngx-chatup ($profile) against nginx $have ($build_dir)"
    local flag=--release
    [ "$profile" = release ] || flag=
    NGINX_BUILD_DIR=$build_dir cargo build $flag -p ngx-chatup --manifest-path "$root/Cargo.toml"
    # cargo puts the dev profile's output under debug/.
    local out_dir=$profile
    [ "$profile" = dev ] && out_dir=debug
    local out=$target_dir/$out_dir/libngx_chatup.so
    [ -f "$out" ] || die "build finished but $out is missing"
    # Record which nginx this module is for, so scripts can refuse a mismatch.
    echo "$want" >"$out.nginx-version"
    log "module: $out (for nginx $want)"
    echo "$out"
}

main "$@"
