#!/usr/bin/env bash
# Runs the evloop crate's tests under sanitizers. Not part of CI: on a 2-core
# machine a cold run takes about 11 minutes (asan about 6, nearly all of it
# building std and the dependencies instrumented; miri about 5.5, nearly all of it
# timer's 10,000-timer compaction test); a warm asan run about 1. The summary at
# the end gives each step's time. Run it by hand or on a schedule:
#
#   bash scripts/sanitize.sh            # both steps
#   SANITIZE_STEPS=asan bash scripts/sanitize.sh
#   SANITIZE_STEPS=miri bash scripts/sanitize.sh
#
# Steps:
#   asan  AddressSanitizer (and LeakSanitizer) over every evloop test target: the
#         unit tests (--lib), conformance, model, faults and regressions, and the
#         doc tests if this cargo runs them for an explicit --target. Nightly, with
#         std rebuilt instrumented (-Zbuild-std, which needs the rust-src
#         component). Target dir: target/sanitize-asan.
#         LeakSanitizer suppressions (a file written to a temporary directory):
#         conformance's fd_reused_within_batch_gets_no_stale_event leaks its spare
#         sockets on purpose (mem::forget, to keep them open for the rest of the test).
#   miri  Miri over the modules that make no system calls Miri cannot emulate:
#         events and timer (`cargo miri test -p evloop --lib -- events:: timer::`).
#         The pollers (epoll, poll, select), the waker and signals are syscalls;
#         Miri cannot run them. Target dir: target/sanitize-miri.
#
# Environment:
#   SANITIZE_STEPS   which steps to run (default: "asan miri")
#   SANITIZE_TARGET  the target triple (default: the nightly host's)
#   PROPTEST_CASES   cases per backend for tests/model.rs (proptest's default: 256)
#   EVLOOP_STORM_SECS  length of the signal storm in tests/faults.rs (default here: 2)
#
# Installs the nightly toolchain's rust-src and miri components if missing
# (rustup's dist server must be reachable then). Exits non-zero if a step fails.
set -euo pipefail

cd "$(dirname "$0")/.."

read -r -a STEPS <<<"${SANITIZE_STEPS:-asan miri}"
log() { printf '[sanitize] %s\n' "$*" >&2; }

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    log "installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
TARGET=${SANITIZE_TARGET:-$(rustc +nightly -vV | sed -n 's/^host: //p')}

need_component() {
    if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q "^$1"; then
        log "installing the nightly $1 component"
        rustup component add "$1" --toolchain nightly
    fi
}

SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

# The steps run as `if` conditions, where `set -e` does not apply: every command
# that can fail returns explicitly.
run_asan() {
    need_component rust-src || return 1
    local supp=$SCRATCH/lsan.supp
    printf '%s\n' 'leak:fd_reused_within_batch_gets_no_stale_event' >"$supp" || return 1
    RUSTFLAGS="${RUSTFLAGS:-} -Zsanitizer=address" \
        RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -Zsanitizer=address" \
        ASAN_OPTIONS="detect_leaks=1:detect_stack_use_after_return=1:strict_string_checks=1" \
        LSAN_OPTIONS="suppressions=$supp:print_suppressions=1" \
        EVLOOP_STORM_SECS="${EVLOOP_STORM_SECS:-2}" \
        CARGO_TARGET_DIR=target/sanitize-asan \
        cargo +nightly test -Zbuild-std --target "$TARGET" -p evloop
}

run_miri() {
    need_component rust-src || return 1
    need_component miri || return 1
    cargo +nightly miri setup || return 1
    CARGO_TARGET_DIR=target/sanitize-miri \
        cargo +nightly miri test -p evloop --lib -- events:: timer::
}

run_step() {
    case $1 in
    asan) run_asan ;;
    miri) run_miri ;;
    esac
}

for step in "${STEPS[@]}"; do
    if [[ $step != asan && $step != miri ]]; then
        log "unknown step '$step' (expected asan or miri)"
        exit 2
    fi
done

declare -a SUMMARY=()
failed=0
for step in "${STEPS[@]}"; do
    log "step $step: starting"
    start=$SECONDS
    if run_step "$step"; then
        outcome=passed
    else
        outcome=FAILED
        failed=1
    fi
    SUMMARY+=("$step: $outcome in $((SECONDS - start)) s")
    log "step $step: $outcome"
done

log "summary (target $TARGET):"
for line in "${SUMMARY[@]}"; do
    log "  $line"
done
exit "$failed"
