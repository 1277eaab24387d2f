#!/usr/bin/env bash
# Type-check and lint the evloop crate for the kqueue platforms.
#
# The kqueue backend (crates/evloop/src/poller/kqueue.rs) only exists on macOS and
# the BSDs. No such machine is at hand, so this script COMPILES AND LINTS it for
# those targets; it never EXECUTES it (its unit tests are compiled, not run).
#
# For each target, one of two ways:
#   rustup: `rustup target add <t>`, then
#           `cargo clippy -p evloop --target <t> --all-targets -- -D warnings`
#           (CARGO_TARGET_DIR=target/cross).
#   debian: used when `rustup target add` fails (no rustup, or no network to its
#           dist server), or when CROSS_FORCE_DEBIAN=1: Debian's own toolchain
#           (rustc-web, cargo-web, rust-web-src, and rust-web-clippy if it installs)
#           builds std for the target from source:
#           `RUSTC_BOOTSTRAP=1 /usr/bin/cargo clippy -Zbuild-std=std --target <t> ...`
#           (`cargo check` instead when clippy is missing), with
#           CARGO_TARGET_DIR=target/cross-debian. /usr/bin is named explicitly
#           because rustup's cargo comes first on PATH.
#
# Environment:
#   CROSS_TARGETS       targets to check (default: x86_64-unknown-freebsd aarch64-apple-darwin)
#   CROSS_FORCE_DEBIAN  1: skip rustup and use the debian way for every target
#
# Exits non-zero if any target fails to type-check or lint.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

read -r -a TARGETS <<<"${CROSS_TARGETS:-x86_64-unknown-freebsd aarch64-apple-darwin}"
FORCE_DEBIAN=${CROSS_FORCE_DEBIAN:-0}
RUSTUP_TARGET_DIR=$ROOT/target/cross
DEBIAN_TARGET_DIR=$ROOT/target/cross-debian

log() { printf '[cross-check] %s\n' "$*"; }

# rustup way: returns 2 if the target cannot be installed (so the caller falls
# back), 1 if clippy fails.
rustup_way() {
    local target=$1
    if ! command -v rustup >/dev/null 2>&1; then
        log "$target: rustup not found"
        return 2
    fi
    if ! rustup target add "$target"; then
        log "$target: 'rustup target add $target' failed"
        return 2
    fi
    CARGO_TARGET_DIR=$RUSTUP_TARGET_DIR cargo clippy -p evloop --target "$target" --all-targets -- -D warnings ||
        return 1
}

DEBIAN_READY=""
DEBIAN_TOOL=""
debian_setup() {
    [[ -n $DEBIAN_READY ]] && return 0
    local sysroot
    if [[ ! -x /usr/bin/rustc || ! -x /usr/bin/cargo ]] ||
        [[ ! -d $(/usr/bin/rustc --print sysroot 2>/dev/null)/lib/rustlib/src/rust/library ]]; then
        log "installing Debian's rustc-web cargo-web rust-web-src"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y rustc-web cargo-web rust-web-src; then
            apt-get update
            DEBIAN_FRONTEND=noninteractive apt-get install -y rustc-web cargo-web rust-web-src
        fi
    fi
    if [[ ! -x /usr/bin/cargo-clippy ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y rust-web-clippy ||
            log "rust-web-clippy did not install: the debian way will type-check only (cargo check)"
    fi
    sysroot=$(/usr/bin/rustc --print sysroot)
    if [[ ! -d $sysroot/lib/rustlib/src/rust/library ]]; then
        log "no std source under $sysroot/lib/rustlib/src/rust/library: -Zbuild-std cannot work"
        return 1
    fi
    if [[ -x /usr/bin/cargo-clippy && -x /usr/bin/clippy-driver ]]; then
        DEBIAN_TOOL=clippy
    else
        DEBIAN_TOOL=check
    fi
    log "debian toolchain: $(/usr/bin/rustc --version), $(/usr/bin/cargo --version), tool: cargo $DEBIAN_TOOL"
    DEBIAN_READY=1
}

debian_way() {
    local target=$1
    debian_setup || return 1
    # PATH: so that `cargo clippy` finds Debian's cargo-clippy, not rustup's proxy.
    local -a vars=(
        PATH="/usr/bin:$PATH"
        RUSTC=/usr/bin/rustc
        RUSTC_BOOTSTRAP=1
        CARGO_TARGET_DIR="$DEBIAN_TARGET_DIR"
    )
    if [[ $DEBIAN_TOOL == clippy ]]; then
        env "${vars[@]}" /usr/bin/cargo clippy -Zbuild-std=std --target "$target" -p evloop --all-targets -- -D warnings
    else
        env "${vars[@]}" RUSTFLAGS="-D warnings" \
            /usr/bin/cargo check -Zbuild-std=std --target "$target" -p evloop --all-targets
    fi
}

declare -a SUMMARY=()
failed=0
for target in "${TARGETS[@]}"; do
    log "=== $target"
    start=$SECONDS
    way=""
    rc=0
    if [[ $FORCE_DEBIAN != 1 ]]; then
        way=rustup
        rustup_way "$target" || rc=$?
        if [[ $rc == 2 ]]; then
            log "$target: falling back to Debian's toolchain with -Zbuild-std"
            way=""
            rc=0
        fi
    else
        log "$target: CROSS_FORCE_DEBIAN=1: using Debian's toolchain with -Zbuild-std"
    fi
    if [[ -z $way ]]; then
        way=debian
        debian_way "$target" || rc=$?
        way="debian (cargo ${DEBIAN_TOOL:-setup failed})"
    elif [[ $way == rustup ]]; then
        way="rustup (cargo clippy --all-targets -D warnings)"
    fi
    elapsed=$((SECONDS - start))
    if [[ $rc == 0 ]]; then
        status=ok
    else
        status=FAILED
        failed=1
    fi
    SUMMARY+=("$(printf '%-24s %-6s %4ss  via %s' "$target" "$status" "$elapsed" "$way")")
done

log "=== summary: the kqueue backend was compiled and linted for these targets, NOT executed"
for line in "${SUMMARY[@]}"; do
    log "$line"
done
if [[ $failed != 0 ]]; then
    log "cross-check FAILED"
    exit 1
fi
log "cross-check passed"
