#!/bin/sh
# Runs every fuzz target for N seconds each (default 30), one after the other:
#   fuzz/run.sh [seconds] [target...]
# Needs nightly and cargo-fuzz (`cargo install cargo-fuzz`). The committed seeds in
# corpus/<target> are read, never written: new inputs go to work/<target>, crashes to
# artifacts/<target>, logs to work/<target>.log. Exits non-zero if any target failed.
set -u
cd "$(dirname "$0")"
secs=${1:-30}
[ $# -gt 0 ] && shift
targets=${*:-"socks5 address aead_chunks sip022_header sip022_open_in_place udp_packet config dns_answer acl"}
toolchain=${FUZZ_TOOLCHAIN:-+nightly}

cargo $toolchain fuzz build -a || exit 1
failed=""
for t in $targets; do
    mkdir -p "work/$t"
    case $t in
        aead_chunks | sip022_header | sip022_open_in_place) max_len=20000 ;;
        *) max_len=4096 ;;
    esac
    cargo $toolchain fuzz run -a "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
        >"work/$t.log" 2>&1
    status=$?
    summary=$(grep -E '^Done [0-9]+ runs' "work/$t.log" | tail -1)
    echo "$t: exit $status; ${summary:-no summary (see fuzz/work/$t.log)}"
    [ $status -eq 0 ] || failed="$failed $t"
done
if [ -n "$failed" ]; then
    echo "FAILED:$failed (crash inputs in fuzz/artifacts/<target>/, logs in fuzz/work/)"
    exit 1
fi
