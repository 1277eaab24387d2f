#!/usr/bin/env bash
# Proxy benchmark: ssproxy (this repo) vs shadowsocks-libev vs shadowsocks-rust.
#
#   bash bench/proxy/run.sh            # full run (3 runs, 4 methods, ~20 min)
#   bash bench/proxy/run.sh --quick    # one run, 2 methods, small sizes (~3 min)
#   bash bench/proxy/run.sh --help     # every option of bench.py
#
# Installs what is missing first: Debian's shadowsocks-libev (apt), shadowsocks-rust
# (cargo install into bench/proxy/.cargo-root, about 11 minutes once), a Python venv
# with matplotlib (bench/proxy/.venv); builds ssproxy and the load tools.
# Results: bench/proxy/results/<date>.md, .json and .png. Loopback traffic only.
# Not a test: CI does not run it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SSRUST_VERSION="${SSRUST_VERSION:-1.25.0}"
cd "$ROOT"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# 1. Peers.
if ! command -v ss-server >/dev/null || ! command -v ss-local >/dev/null; then
    echo "== installing shadowsocks-libev (apt)" >&2
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q shadowsocks-libev
fi
# shadowsocks-rust is skipped when --impls leaves it out (e.g. --impls ours,libev).
want_rust=1
prev=""
for a in "$@"; do
    case "$a" in --impls=*) [[ "${a#--impls=}" == *rust* ]] || want_rust=0 ;; esac
    if [ "$prev" = "--impls" ] && [[ "$a" != *rust* ]]; then want_rust=0; fi
    prev="$a"
done
if [ "$want_rust" = 1 ] && { [ ! -x "$HERE/.cargo-root/bin/ssserver" ] || [ ! -x "$HERE/.cargo-root/bin/sslocal" ]; }; then
    echo "== building shadowsocks-rust $SSRUST_VERSION into bench/proxy/.cargo-root (once, ~11 min)" >&2
    cargo install shadowsocks-rust --version "$SSRUST_VERSION" \
        --locked --root "$HERE/.cargo-root"
fi

# 2. Ours and the load tools (a standalone crate, not in the workspace).
echo "== building ssproxy and the load tools" >&2
cargo build --release -q -p ssproxy
cargo build --release -q --manifest-path "$HERE/Cargo.toml"

# 3. Python with matplotlib for the chart.
if [ ! -x "$HERE/.venv/bin/python" ] || ! "$HERE/.venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    echo "== creating bench/proxy/.venv (matplotlib)" >&2
    python3 -m venv "$HERE/.venv"
    "$HERE/.venv/bin/pip" install -q matplotlib
fi

# 4. Descriptors: a local or server holds two sockets per relayed connection.
ulimit -n "$(ulimit -Hn)"

exec "$HERE/.venv/bin/python" "$HERE/bench.py" "$@"
