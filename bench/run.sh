#!/usr/bin/env bash
# The benchmark harness, in one command: installs what it needs (valgrind, taskset,
# a venv at bench/.venv with shadowsocks 2.8.2 and matplotlib), builds the bench
# crate in release mode, runs every workload on every variant and writes
# bench/results/<YYYY-MM-DD>.md (+ .json, .png, callgrind-<date>/). About 6-8
# minutes on 2 cores. Extra arguments go to bench/run.py (e.g. --reps 3).
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=()
command -v valgrind >/dev/null || missing+=(valgrind)
command -v taskset >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
    echo "bench: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The original runs on Python 3.11 when the machine has it (the version the brief
# names), else on the default python3.
python=python3.11
command -v "$python" >/dev/null || python=python3
venv=bench/.venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import shadowsocks, matplotlib" 2>/dev/null; then
    echo "bench: creating $venv with $($python --version)" >&2
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check shadowsocks==2.8.2 matplotlib
fi

cargo build --release -q -p evloop-bench
exec "$venv/bin/python" bench/run.py "$@"
