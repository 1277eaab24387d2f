#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine (idempotent, quiet when
# everything is there). Run as root, or with sudo available, for the apt packages.
set -euo pipefail

# make: tikv-jemalloc-sys builds jemalloc (the binaries' allocator) with it.
apt_packages=(curl make python3 shadowsocks-libev)
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian starts an ss-server service on install; the tests run their own.
if systemctl is-active --quiet shadowsocks-libev 2>/dev/null; then
    systemctl stop shadowsocks-libev || true
fi

for component in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component" >&2
done
