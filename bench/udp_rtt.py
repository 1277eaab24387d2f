#!/usr/bin/env python3
"""UDP round trips through sslocal + ssserver on loopback: a bounded before/after figure.

Starts our ssserver and sslocal (from --bin-dir) on free loopback ports, a UDP echo server in a
thread, takes a SOCKS5 UDP ASSOCIATE, and times --count sequential round trips of --size
bytes (one datagram in flight: the figure is per-datagram latency of the whole UDP path, both
relays included). Prints median, p90 and p99 microseconds, round trips per second, and the CPU
time ssserver and sslocal spent per round trip (less sensitive to a busy machine), for each
method. Every process it starts is killed at the end; every wait is bounded.

    python3 bench/udp_rtt.py --bin-dir target/release --count 20000 --workers 2
"""

import argparse
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

# The proxy bench's reading of /proc/<pid>/stat, rather than a second copy of it.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "proxy"))
from bench import cpu_times  # noqa: E402

METHODS = {
    "aes-256-gcm": "udp-rtt-password",
    "2022-blake3-aes-256-gcm": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
}


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_tcp(port, within=10.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port}")


def echo_server(stop):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.1)

    def serve():
        while not stop.is_set():
            try:
                data, peer = s.recvfrom(65536)
            except socket.timeout:
                continue
            s.sendto(data, peer)

    threading.Thread(target=serve, daemon=True).start()
    return s.getsockname()


def udp_associate(socks_port):
    c = socket.create_connection(("127.0.0.1", socks_port), timeout=5)
    c.sendall(b"\x05\x01\x00" + b"\x05\x03\x00\x01" + bytes(4) + bytes(2))
    reply = b""
    while len(reply) < 12:
        chunk = c.recv(64)
        if not chunk:
            raise RuntimeError("sslocal closed the SOCKS5 connection")
        reply += chunk
    if reply[3] != 0:
        raise RuntimeError(f"UDP ASSOCIATE refused: {reply!r}")
    host = socket.inet_ntoa(reply[6:10])
    (port,) = struct.unpack("!H", reply[10:12])
    return c, (host, port)


def run(bin_dir, method, password, count, size, workers):
    sport = free_port()
    lport = free_port()
    while lport == sport:
        lport = free_port()
    common = ["-k", password, "-m", method, "-u", "-t", "60"]
    server = subprocess.Popen(
        [os.path.join(bin_dir, "ssserver"), "-s", "127.0.0.1", "-p", str(sport), "--forbidden-ip", "",
         "--workers", str(workers)] + common,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    local = subprocess.Popen(
        [os.path.join(bin_dir, "sslocal"), "-s", "127.0.0.1", "-p", str(sport), "-b", "127.0.0.1", "-l",
         str(lport), "--workers", "1"] + common,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop = threading.Event()
    try:
        wait_tcp(sport)
        wait_tcp(lport)
        echo = echo_server(stop)
        control, relay = udp_associate(lport)
        header = b"\x00\x00\x00\x01" + socket.inet_aton(echo[0]) + struct.pack("!H", echo[1])
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(1.0)
        payload = bytes(size)
        _, cpu_before = cpu_times(server.pid, local.pid)
        times = []
        lost = 0
        started = time.monotonic()
        for i in range(count + 200):  # the first 200 warm up and are not counted
            t0 = time.perf_counter_ns()
            s.sendto(header + payload, relay)
            try:
                s.recvfrom(65536)
            except socket.timeout:
                lost += 1
                continue
            if i >= 200:
                times.append((time.perf_counter_ns() - t0) / 1000)
            if time.monotonic() - started > 120:
                break
        cpu = cpu_times(server.pid, local.pid)[1] - cpu_before
        control.close()
        times.sort()
        q = lambda p: times[min(len(times) - 1, int(p * len(times)))]
        total_s = sum(times) / 1e6
        print(f"{method:26} workers={workers} n={len(times)} lost={lost} median={statistics.median(times):.1f}us "
              f"p90={q(0.9):.1f}us p99={q(0.99):.1f}us rate={len(times) / total_s:.0f}/s "
              f"relay_cpu={cpu * 1e6 / (len(times) + 200):.1f}us/round-trip")
    finally:
        stop.set()
        for p in (local, server):
            p.kill()
            p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin-dir", default="target/release")
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--method", action="append", choices=sorted(METHODS))
    args = ap.parse_args()
    for method in args.method or list(METHODS):
        run(args.bin_dir, method, METHODS[method], args.count, args.size, args.workers)


if __name__ == "__main__":
    main()
