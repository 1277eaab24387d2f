#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine (idempotent, quiet when
# everything is there). Run as root, or with sudo available, for the apt packages.
set -euo pipefail

# make: tikv-jemalloc-sys builds jemalloc (the binaries' allocator) with it.
# cmake: c-ares-sys builds the bundled c-ares (the resolver) with it.
# dnsmasq-base: the nameserver tests/dns.rs starts on a loopback port of its own
# (the binary only: Debian's `dnsmasq` package would also start a service on port 53).
apt_packages=(curl make cmake python3 shadowsocks-libev dnsmasq-base)
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
# Where the full `dnsmasq` package is installed too, its service is not needed by the
# tests (nor in the way: they listen on ports of their own); stop it all the same so
# that nothing answers on port 53 behind a test's back.
if systemctl is-active --quiet dnsmasq 2>/dev/null; then
    systemctl stop dnsmasq || true
fi

for component in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component" >&2
done
