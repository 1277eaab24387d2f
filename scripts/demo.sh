#!/usr/bin/env bash
# The main job: an ssserver and an sslocal on loopback, from config/*.example.json.
# Checks the pair with a page fetched through it, then serves until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q -p ssproxy
bin=target/release
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 0' INT TERM

"$bin/ssserver" -c config/server.example.json & pids+=($!)
"$bin/sslocal" -c config/local.example.json & pids+=($!)

# A page on loopback to fetch through the proxy.
www=$(mktemp -d)
echo "<h1>Hello through evloop's shadowsocks</h1>" > "$www/index.html"
python3 -m http.server 8000 --bind 127.0.0.1 --directory "$www" >/dev/null 2>&1 & pids+=($!)

for _ in $(seq 50); do
    curl -s -o /dev/null --max-time 1 --socks5-hostname 127.0.0.1:1080 http://127.0.0.1:8000/ && break
    sleep 0.1
done
echo
echo "== fetched through sslocal (127.0.0.1:1080) -> ssserver (127.0.0.1:8388):"
curl -s --max-time 5 --socks5-hostname 127.0.0.1:1080 http://127.0.0.1:8000/
echo
echo "== The proxy is running. Set your browser's SOCKS5 proxy to 127.0.0.1:1080"
echo "   (with remote DNS), or: curl --socks5-hostname 127.0.0.1:1080 http://example.com/"
echo "   Ctrl-C stops both."
wait
