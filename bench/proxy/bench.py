#!/usr/bin/env python3
"""Proxy benchmark: ssproxy (ours) vs shadowsocks-libev vs shadowsocks-rust.

Run through bench/proxy/run.sh, which installs and builds everything first.
Each implementation is measured as its own local -> its own server, with a
loopback sink/echo target and a SOCKS5 load generator (bench/proxy/src/bin).
All traffic stays on 127.0.0.1; every load run is bounded in time and count.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOOLS = os.path.join(HERE, "target", "release")
OURS = os.path.join(ROOT, "target", "release")
RUST = os.path.join(HERE, ".cargo-root", "bin")
# "base": ours at another commit (--base-dir names its release build), measured in the
# same run as "ours" so that a change's before/after ratio is paired like the others.
BASE = None

METHODS = ["aes-128-gcm", "aes-256-gcm", "chacha20-ietf-poly1305", "2022-blake3-aes-128-gcm"]
IMPLS = ["ours", "base", "libev", "rust"]
# A fixed key for the 2022 method: base64 of 16 bytes (not a secret; loopback only).
KEY_2022 = "YmVuY2htYXJrLWtleS0xNg=="  # b"benchmark-key-16"
PASSWORD = "bench-password"

# Single-thread configuration: the client side (load tool + local) on CPU 0,
# the server side (server + sink) on CPU 1. Default configuration: no pinning.
PIN = {"load": "0", "local": "0", "server": "1", "sink": "1"}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def supports(impl, method):
    return not (impl == "libev" and method.startswith("2022-"))


def password(method):
    return KEY_2022 if method.startswith("2022-") else PASSWORD


def ours_dir(impl):
    """Where the binaries of ours ("ours") or of the baseline commit ("base") are."""
    return BASE if impl == "base" else OURS


def server_cmd(impl, method, port, single):
    k = password(method)
    if impl in ("ours", "base"):
        c = [os.path.join(ours_dir(impl), "ssserver"), "-s", "127.0.0.1", "-p", str(port), "-k", k, "-m", method,
             "--forbidden-ip", ""]
        return c + (["--workers", "1"] if single else [])
    if impl == "libev":
        return ["ss-server", "-s", "127.0.0.1", "-p", str(port), "-k", k, "-m", method, "-t", "600", "--no-delay"]
    c = [os.path.join(RUST, "ssserver"), "-s", f"127.0.0.1:{port}", "-k", k, "-m", method, "--tcp-no-delay",
         "--timeout", "600"]
    return c + (["--single-threaded"] if single else [])


def local_cmd(impl, method, sport, lport, single):
    k = password(method)
    if impl in ("ours", "base"):
        c = [os.path.join(ours_dir(impl), "sslocal"), "-s", "127.0.0.1", "-p", str(sport), "-k", k, "-m", method,
             "-b", "127.0.0.1", "-l", str(lport)]
        return c + (["--workers", "1"] if single else [])
    if impl == "libev":
        return ["ss-local", "-s", "127.0.0.1", "-p", str(sport), "-k", k, "-m", method, "-b", "127.0.0.1",
                "-l", str(lport), "-t", "600", "--no-delay"]
    c = [os.path.join(RUST, "sslocal"), "-s", f"127.0.0.1:{sport}", "-k", k, "-m", method,
         "-b", f"127.0.0.1:{lport}", "--tcp-no-delay", "--timeout", "600"]
    return c + (["--single-threaded"] if single else [])


def raise_nofile():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pinned(role, cmd, single):
    if single and shutil.which("taskset"):
        return ["taskset", "-c", PIN[role]] + cmd
    return cmd


class Proc:
    def __init__(self, name, cmd, logdir, **kw):
        self.name = name
        self.cmd = cmd
        self.logf = open(os.path.join(logdir, f"{name}.log"), "ab")
        self.logf.write((" ".join(repr(c) if c == "" else c for c in cmd) + "\n").encode())
        self.logf.flush()
        self.p = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  preexec_fn=raise_nofile, **kw)

    @property
    def pid(self):
        return self.p.pid

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self.logf.close()


def wait_port(port, proc, timeout=15.0):
    end = time.time() + timeout
    while time.time() < end:
        if proc.p.poll() is not None:
            raise RuntimeError(f"{proc.name} exited early ({proc.p.returncode}); see its log")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{proc.name}: port {port} not listening after {timeout}s")


def rss_kib(pid):
    """VmRSS of a process, summed over nothing else (threads share it)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


CLK = os.sysconf("SC_CLK_TCK")


def cpu_times(*pids):
    """(user, user + system) CPU seconds of these processes together (all their threads),
    from one reading of each /proc/<pid>/stat."""
    user = system = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        user += int(fields[11])
        system += int(fields[12])
    return user / CLK, (user + system) / CLK


def kv(line):
    out = {}
    for part in line.split():
        if "=" in part:
            k, v = part.split("=", 1)
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def run_load(args, single, timeout):
    cmd = pinned("load", [os.path.join(TOOLS, "load")] + args, single)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=raise_nofile)
    if r.returncode != 0:
        raise RuntimeError(f"load {args[0]} failed: {r.stderr.strip()[-400:]}")
    return kv(r.stdout.strip().splitlines()[-1])


class Ports:
    """Listening ports below the ephemeral range (32768+), so that no outgoing
    connection can already hold one; each is checked free before use."""

    LOW, HIGH = 21000, 32000

    def __init__(self, base):
        self.n = base

    def take(self):
        for _ in range(1000):
            self.n += 1
            if self.n > self.HIGH:
                self.n = self.LOW
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", self.n))
                    return self.n
                except OSError:
                    continue
        raise RuntimeError("no free port")


def idle_memory(tag, impl, method, single, opt, ports, logdir, server, local, socks_port, sink_port):
    """VmRSS growth per idle proxied connection. One process cannot hold more than
    `opt.idle_per_pair` of them (two descriptors each against RLIMIT_NOFILE), so the
    connections are shared out over as many server+local pairs as that takes, the
    first being the measurement's own pair; growth is summed over all of them."""
    shards = -(-opt.idle_conns // opt.idle_per_pair)
    pairs, socks_ports, extra, holders = [(server, local)], [socks_port], [], []
    try:
        for i in range(1, shards):
            sport, lport = ports.take(), ports.take()
            s = Proc(f"{tag}-server{i}", pinned("server", server_cmd(impl, method, sport, single), single), logdir)
            extra.append(s)
            lo = Proc(f"{tag}-local{i}", pinned("local", local_cmd(impl, method, sport, lport, single), single),
                      logdir)
            extra.append(lo)
            wait_port(sport, s)
            wait_port(lport, lo)
            pairs.append((s, lo))
            socks_ports.append(lport)
        if extra:
            time.sleep(0.3)
        base = [(rss_kib(s.pid), rss_kib(lo.pid)) for s, lo in pairs]
        for i, lport in enumerate(socks_ports):
            share = opt.idle_conns // shards + (1 if i < opt.idle_conns % shards else 0)
            cmd = pinned("load", [os.path.join(TOOLS, "load"), "idle", "--socks", f"127.0.0.1:{lport}",
                                  "--target", f"127.0.0.1:{sink_port}", "--conns", str(share),
                                  "--concurrency", "200", "--hold", "120", "--setup-timeout", "90"], single)
            holders.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                            preexec_fn=raise_nofile))
        readies = [kv(h.stdout.readline()) for h in holders]
        time.sleep(1.0)
        held = [(rss_kib(s.pid), rss_kib(lo.pid)) for s, lo in pairs]
    finally:
        for h in holders:
            try:
                h.stdin.write("\n")
                h.stdin.flush()
                h.stdin.close()
            except (BrokenPipeError, ValueError):
                pass
        for h in holders:
            h.wait(30)
        for p in reversed(extra):
            p.stop()
    res = {"idle_pairs": len(pairs)}
    n = sum(int(r.get("established", 0)) for r in readies)
    res["idle_established"] = n
    res["idle_errors"] = sum(int(r.get("errors", 0) or 0) for r in readies)
    res["rss_base_server_kib"], res["rss_base_local_kib"] = sum(b[0] for b in base), sum(b[1] for b in base)
    res["rss_idle_server_kib"], res["rss_idle_local_kib"] = sum(h[0] for h in held), sum(h[1] for h in held)
    if n > 0:
        res["mem_server_b_per_conn"] = (res["rss_idle_server_kib"] - res["rss_base_server_kib"]) * 1024 / n
        res["mem_local_b_per_conn"] = (res["rss_idle_local_kib"] - res["rss_base_local_kib"]) * 1024 / n
        res["mem_b_per_conn"] = res["mem_server_b_per_conn"] + res["mem_local_b_per_conn"]
    return res


def measure(impl, method, single, opt, ports, logdir):
    """One full measurement of one implementation pair; returns a dict."""
    sink_port, server_port, socks_port = ports.take(), ports.take(), ports.take()
    tag = f"{impl}-{method}-{'1t' if single else 'dflt'}"
    procs = []
    res = {}
    try:
        sink = Proc(f"{tag}-sink", pinned("sink", [os.path.join(TOOLS, "sink"), "--listen",
                                                    f"127.0.0.1:{sink_port}", "--max-secs", "600"], single), logdir)
        procs.append(sink)
        server = Proc(f"{tag}-server", pinned("server", server_cmd(impl, method, server_port, single), single),
                      logdir)
        procs.append(server)
        local = Proc(f"{tag}-local", pinned("local", local_cmd(impl, method, server_port, socks_port, single),
                                            single), logdir)
        procs.append(local)
        wait_port(sink_port, sink)
        wait_port(server_port, server)
        wait_port(socks_port, local)
        time.sleep(0.3)
        socks, target = f"127.0.0.1:{socks_port}", f"127.0.0.1:{sink_port}"

        # 1. Memory with idle connections (fresh processes).
        if opt.idle_conns > 0:
            res.update(idle_memory(tag, impl, method, single, opt, ports, logdir, server, local, socks_port,
                                   sink_port))
            time.sleep(1.0)  # let the proxies tear the connections down

        # 2. Bulk throughput and CPU per GiB.
        _, cpu0 = cpu_times(server.pid, local.pid)
        b = run_load(["bulk", "--socks", socks, "--target", target, "--bytes", str(opt.bulk_bytes),
                      "--timeout", "240"], single, 300)
        _, cpu1 = cpu_times(server.pid, local.pid)
        res["bulk_mbps"] = b["mbps"]
        res["cpu_s_per_gib"] = (cpu1 - cpu0) / (opt.bulk_bytes / 2**30)
        if cpu1 > cpu0:
            res["mb_per_cpu_s"] = opt.bulk_bytes / 1e6 / (cpu1 - cpu0)

        # 3. Request rate: 100 connections, small request/response.
        user0, cpu0 = cpu_times(server.pid, local.pid)
        r = run_load(["rr", "--socks", socks, "--target", target, "--conns", str(opt.rr_conns), "--size",
                      str(opt.rr_size), "--secs", str(opt.rr_secs), "--setup-timeout", "60"], single,
                     opt.rr_secs + 90)
        res["rr_rps"], res["rr_p50_us"], res["rr_p99_us"] = r["rps"], r["p50_us"], r["p99_us"]
        res["rr_errors"] = r["errors"]
        if r["reqs"]:
            user1, cpu1 = cpu_times(server.pid, local.pid)
            res["rr_cpu_us_per_req"] = (cpu1 - cpu0) / r["reqs"] * 1e6
            # The rest is the kernel's: what no user-space change can take away.
            res["rr_user_us_per_req"] = (user1 - user0) / r["reqs"] * 1e6

        # 4. Connection rate: connect, SOCKS5, one exchange, close.
        _, cpu0 = cpu_times(server.pid, local.pid)
        c = run_load(["connrate", "--socks", socks, "--target", target, "--concurrency", str(opt.cr_concurrency),
                      "--size", str(opt.rr_size), "--secs", str(opt.cr_secs)], single, opt.cr_secs + 60)
        res["cr_cps"], res["cr_p50_us"], res["cr_p99_us"] = c["cps"], c["p50_us"], c["p99_us"]
        res["cr_errors"] = c["errors"]
        if c["conns"]:
            res["cr_cpu_us_per_conn"] = (cpu_times(server.pid, local.pid)[1] - cpu0) / c["conns"] * 1e6
        res["hwm_server_kib"], res["hwm_local_kib"] = hwm_kib(server.pid), hwm_kib(local.pid)
    except Exception as e:  # keep going: one failure must not lose the whole run
        log(f"  !! {tag}: {e}")
        res["error"] = str(e)
    finally:
        for p in reversed(procs):
            p.stop()
    return res


# Metrics reported: key, label, unit, higher-is-better.
METRICS = [
    ("bulk_mbps", "bulk throughput", "MB/s", True),
    ("cpu_s_per_gib", "CPU (server+local)", "s/GiB", False),
    ("mb_per_cpu_s", "bulk efficiency: bytes relayed per CPU-second of server+local", "MB/CPU-s", True),
    ("rr_rps", "request rate (100 conns, 64 B)", "req/s", True),
    ("rr_p50_us", "request p50", "µs", False),
    ("rr_p99_us", "request p99", "µs", False),
    ("rr_cpu_us_per_req", "CPU per request (server+local)", "µs", False),
    ("rr_user_us_per_req", "of which user space (server+local; the rest is the kernel's)", "µs", False),
    ("cr_cps", "connection rate", "conn/s", True),
    ("cr_p99_us", "connection p99", "µs", False),
    ("cr_cpu_us_per_conn", "CPU per proxied connection (server+local)", "µs", False),
    ("mem_b_per_conn", "memory per idle conn (server+local)", "B", False),
    ("mem_server_b_per_conn", "memory per idle conn, server", "B", False),
    ("mem_local_b_per_conn", "memory per idle conn, local", "B", False),
]


def summarize(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    med = statistics.median(vals)
    return {"median": med, "min": min(vals), "max": max(vals), "n": len(vals),
            "spread_pct": (max(vals) - min(vals)) / med * 100 if med else 0.0}


def fmt(x, unit=""):
    if x is None:
        return "—"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="one run, 2 methods, 256 MiB, short windows")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--configs", default="single,default", help="single (1 worker, pinned) and/or default")
    ap.add_argument("--bulk-bytes", type=int, default=2**30)
    ap.add_argument("--rr-conns", type=int, default=100)
    ap.add_argument("--rr-size", type=int, default=64)
    ap.add_argument("--rr-secs", type=float, default=4.0)
    ap.add_argument("--cr-secs", type=float, default=4.0)
    ap.add_argument("--cr-concurrency", type=int, default=32)
    ap.add_argument("--idle-conns", type=int, default=0, help="0: 10000, shared out over as many server+local pairs as RLIMIT_NOFILE needs")
    ap.add_argument("--base-dir", metavar="DIR",
                    help="a release build of ours at another commit (its target/release): measured as 'base' "
                         "in the same run, and the report gives ours/base")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--report-only", metavar="JSON", help="rewrite the .md and .png of an earlier run's .json")
    opt = ap.parse_args()
    if opt.report_only:
        with open(opt.report_only) as f:
            data = json.load(f)
        raw, meta = data["raw"], data["meta"]
        for r in raw:  # figures added after that run was made
            if r.get("cpu_s_per_gib") and "mb_per_cpu_s" not in r:
                r["mb_per_cpu_s"] = 2**30 / 1e6 / r["cpu_s_per_gib"]
        seen = lambda k: list(dict.fromkeys(r[k] for r in raw))
        impls = [i for i in IMPLS if i in seen("impl")]
        base = os.path.basename(opt.report_only)[:-len(".json")]
        report(raw, meta, os.path.dirname(os.path.abspath(opt.report_only)), base, seen("method"), impls,
               seen("config"))
        return
    if opt.quick:
        opt.runs = 1
        opt.methods = "aes-128-gcm,2022-blake3-aes-128-gcm" if opt.methods == ",".join(METHODS) else opt.methods
        opt.bulk_bytes = min(opt.bulk_bytes, 256 * 2**20)
        opt.rr_secs = min(opt.rr_secs, 2.0)
        opt.cr_secs = min(opt.cr_secs, 2.0)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The local and the server each hold two sockets per relayed connection.
    feasible = max(0, (hard - 200) // 2)
    feasible = feasible // 1000 * 1000 if feasible >= 1000 else feasible
    # More than one pair can hold: the idle connections are shared out over several pairs.
    opt.idle_per_pair = max(1, feasible)
    if opt.idle_conns <= 0:
        opt.idle_conns = 10000
    # ... but the sink and each load tool hold one descriptor per connection.
    if opt.idle_conns > hard - 200:
        log(f"idle connections capped at {hard - 200}: RLIMIT_NOFILE hard limit is {hard}")
        opt.idle_conns = max(0, hard - 200)
    if opt.quick:
        opt.idle_conns = min(opt.idle_conns, 2000)
    methods = opt.methods.split(",")
    impls = opt.impls.split(",")
    global BASE
    if opt.base_dir:
        BASE = os.path.abspath(opt.base_dir)
        if not os.path.exists(os.path.join(BASE, "ssserver")):
            sys.exit(f"--base-dir {BASE}: no ssserver there (build it with cargo build --release -p ssproxy)")
        if "base" not in impls:
            impls.insert(impls.index("ours") + 1 if "ours" in impls else 0, "base")
    elif "base" in impls:
        impls.remove("base")
    configs = [c == "single" for c in opt.configs.split(",")]
    if not os.path.exists(os.path.join(RUST, "ssserver")) and "rust" in impls:
        log("shadowsocks-rust not built: skipping it")
        impls.remove("rust")
    if not shutil.which("ss-server") and "libev" in impls:
        log("shadowsocks-libev not installed: skipping it")
        impls.remove("libev")

    os.makedirs(opt.out, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d")
    stamp_time = datetime.datetime.now().strftime("%Y-%m-%d_%H%M%S")
    logdir = os.path.join(HERE, "work", "logs", stamp_time)
    os.makedirs(logdir, exist_ok=True)
    ports = Ports(Ports.LOW + (os.getpid() % 1000) * 10)
    raw = []  # one dict per measurement
    t_start = time.time()
    load_start = os.getloadavg()
    combos = []
    for single in configs:
        for method in methods:
            for impl in impls:
                if not supports(impl, method):
                    continue
                # libev is single-threaded: its default is the single configuration.
                if impl == "libev" and not single and True in configs:
                    continue
                combos.append((single, method, impl))
    log(f"{len(combos)} pairs x {opt.runs} runs; idle connections: {opt.idle_conns}; logs in {logdir}")
    for run in range(opt.runs):
        # Within each (config, method) the implementations rotate from run to run,
        # so that none is always measured first (against drift on a shared VM).
        groups = {}
        for c in combos:
            groups.setdefault((c[0], c[1]), []).append(c)
        for key, g in groups.items():
            r = run % len(g)
            for single, method, impl in g[r:] + g[:r]:
                t0 = time.time()
                res = measure(impl, method, single, opt, ports, logdir)
                res.update({"run": run, "impl": impl, "method": method, "config": "single" if single else "default",
                            "loadavg1": os.getloadavg()[0]})
                raw.append(res)
                log(f"run {run + 1}/{opt.runs} {res['config']:7} {method:24} {impl:5} "
                    f"bulk {fmt(res.get('bulk_mbps'))} MB/s  cpu {fmt(res.get('cpu_s_per_gib'))} s/GiB  "
                    f"rr {fmt(res.get('rr_rps'))}/s p99 {fmt(res.get('rr_p99_us'))}us  "
                    f"conn {fmt(res.get('cr_cps'))}/s  mem {fmt(res.get('mem_b_per_conn'))} B/conn "
                    f"({res.get('idle_established', '-')} idle)  [{time.time() - t0:.0f}s]")
    elapsed = time.time() - t_start
    meta = {
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "date": stamp_time, "elapsed_s": elapsed, "runs": opt.runs, "quick": opt.quick,
        "bulk_bytes": opt.bulk_bytes, "rr_conns": opt.rr_conns, "rr_size": opt.rr_size, "rr_secs": opt.rr_secs,
        "cr_secs": opt.cr_secs, "cr_concurrency": opt.cr_concurrency, "idle_conns": opt.idle_conns,
        "idle_per_pair": opt.idle_per_pair,
        "nofile_hard": hard, "cpus": os.cpu_count(), "kernel": platform.release(),
        "cpu_model": cpu_model(), "versions": versions(BASE),
    }
    base = f"{stamp}{'-quick' if opt.quick else ''}"
    with open(os.path.join(opt.out, base + ".json"), "w") as f:
        json.dump({"meta": meta, "raw": raw}, f, indent=1)
    report(raw, meta, opt.out, base, methods, impls, [("single" if s else "default") for s in configs])
    log(f"done in {elapsed / 60:.1f} min: {os.path.join(opt.out, base + '.md')}")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def versions(base_dir=None):
    v = {}
    trees = {"ours": ROOT}
    if base_dir:  # DIR is <checkout>/target/release
        trees["base"] = os.path.dirname(os.path.dirname(base_dir))
    for name, tree in trees.items():
        try:
            v[name] = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True).stdout.strip() or "?"
        except OSError:
            v[name] = "?"
    for name, cmd in (("rust", [os.path.join(RUST, "ssserver"), "--version"]), ("libev", ["ss-server", "-h"])):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
            text = (out.stdout + out.stderr).strip().splitlines()
            v[name] = next((t.strip() for t in text if t.strip()), "?")
        except (OSError, subprocess.TimeoutExpired):
            v[name] = "not installed"
    return v


def measurements(raw, config, method, impl):
    """One implementation's measurements of `method` in `config`. libev is single-threaded
    and has no default runs of its own: its single ones stand for both."""
    rows = [r for r in raw if r["method"] == method and r["impl"] == impl and r["config"] == config]
    if not rows and impl == "libev":
        rows = [r for r in raw if r["method"] == method and r["impl"] == impl and r["config"] == "single"]
    return rows


def table_rows(raw, config, methods, impls):
    """{(method, impl): {metric: summary}}"""
    out = {}
    for m in methods:
        for i in impls:
            rows = measurements(raw, config, m, i)
            if not rows:
                continue
            out[(m, i)] = {k: summarize([r.get(k) for r in rows]) for k, *_ in METRICS}
    return out


def report(raw, meta, outdir, base, methods, impls, configs):
    lines = []
    w = lines.append
    w(f"# Proxy benchmark, {meta['date']}{' (quick mode)' if meta['quick'] else ''}")
    w("")
    w(f"Machine: {meta['cpus']} CPUs ({meta['cpu_model']}), Linux {meta['kernel']}, shared VM. "
      f"Versions: ours `{meta['versions'].get('ours')}`"
      f"{', base `' + meta['versions']['base'] + '`' if 'base' in meta['versions'] else ''}, "
      f"shadowsocks-rust `{meta['versions'].get('rust')}`, "
      f"libev `{meta['versions'].get('libev')}`.")
    w("")
    loads = [r["loadavg1"] for r in raw if r.get("loadavg1") is not None]
    if loads:
        w(f"Load average (1 min) seen at the end of each measurement: {min(loads):.1f} to {max(loads):.1f} "
          f"(median {statistics.median(loads):.1f}) on {meta['cpus']} CPUs: anything above ~4 (the benchmark's own "
          f"processes) is other work on the machine, and throughput figures are then noisy; CPU s/GiB and "
          f"memory are the figures least affected.")
        w("")
    w(f"Each figure is the **median of {meta['runs']} runs**; *spread* is (max−min)/median. "
      f"Every pair is its own local → its own server → loopback sink, driven through SOCKS5 by "
      f"`bench/proxy` `load` (Rust, epoll). Fresh processes for each measurement.")
    w("")
    w(f"- bulk: {meta['bulk_bytes'] / 2**20:.0f} MiB in one connection, MB/s = 10^6 bytes/s, "
      f"timed from the first payload byte to the sink's acknowledgement of the last;")
    w(f"- CPU: utime+stime of server+local (all threads) during the bulk transfer, per GiB;")
    w(f"- request rate: {meta['rr_conns']} concurrent connections, {meta['rr_size']} B request, "
      f"{meta['rr_size']} B echo, one outstanding request per connection, {meta['rr_secs']} s window;")
    w(f"- connection rate: {meta['cr_concurrency']} in flight, each connect + SOCKS5 handshake + one "
      f"{meta['rr_size']} B echo + close, {meta['cr_secs']} s window;")
    w(f"- memory: VmRSS growth of server and local with **{meta['idle_conns']} idle proxied connections** "
      f"(each did one echo), divided by the count. A local or server needs two descriptors per connection and "
      f"RLIMIT_NOFILE's hard limit is {meta['nofile_hard']}, so one process holds at most "
      f"{meta.get('idle_per_pair', '?')}: the connections are shared out evenly over as many server+local pairs "
      f"of the same implementation as that takes (all pinned as below), and the growth summed over them.")
    w("- configurations: **single** = one worker thread each (ours `--workers 1`, libev as is, "
      "shadowsocks-rust `--single-threaded`), pinned with taskset: load tool + local on CPU 0, server + sink "
      "on CPU 1; **default** = each implementation's default threading (ours: one worker per CPU; "
      "shadowsocks-rust: multi-threaded tokio runtime; libev: single-threaded, so its *single* figures are "
      "reused), no pinning.")
    w("- TCP_NODELAY on everywhere (libev `--no-delay`, shadowsocks-rust `--tcp-no-delay`; ours always).")
    w("")
    for config in configs:
        rows = table_rows(raw, config, methods, impls)
        w(f"## Configuration: {config}")
        w("")
        for key, label, unit, hib in METRICS:
            if not any(v.get(key) for v in rows.values()):
                continue  # not measured in this run (older .json)
            w(f"### {label} ({unit}, {'higher' if hib else 'lower'} is better)")
            w("")
            hdr = "| method | " + " | ".join(f"{i} | spread" for i in impls)
            others = [o for o in ("base", "libev", "rust") if o in impls] if "ours" in impls else []
            hdr += "".join(f" | ours/{o}" for o in others) + " |"
            w(hdr)
            w("|" + "---|" * (1 + 2 * len(impls) + len(others)))
            for m in methods:
                cells = [m]
                meds = {}
                for i in impls:
                    s = rows.get((m, i), {}).get(key)
                    if s is None:
                        cells += ["—", ""]
                    else:
                        meds[i] = s["median"]
                        cells += [fmt(s["median"]), f"{s['spread_pct']:.0f}%"]
                for other in others:
                    if "ours" in meds and meds.get(other):
                        cells.append(f"{meds['ours'] / meds[other]:.2f}x")
                    else:
                        cells.append("—")
                w("| " + " | ".join(cells) + " |")
            w("")
    if "base" in impls and "ours" in impls:
        w("## This change: ours against base")
        w("")
        w(change_check(raw, methods, configs))
        w("")
    w("## Targets")
    w("")
    w(target_check(raw, methods, impls, configs))
    w("")
    w(f"![chart]({base}.png)")
    day = base[:10]
    for name in sorted(os.listdir(outdir)):
        if name.startswith(day) and name.endswith(".md") and name != base + ".md":
            what = "Profile notes and suggestions" if name.endswith("-profile.md") else "Another run of the same day"
            w("")
            w(f"{what}: [{name}]({name}).")
    w("")
    w(f"Raw figures of every run: `{base}.json`. Total time {meta['elapsed_s'] / 60:.1f} min.")
    with open(os.path.join(outdir, base + ".md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    try:
        chart(raw, outdir, base, methods, impls, configs)
    except Exception as e:
        log(f"chart failed: {e}")


def paired_ratios(raw, config, method, other, key):
    """ours/other of each run (one run measures every implementation in turn, so its
    figures are the closest in time): drift between runs cancels."""
    def by_run(impl):
        return {r["run"]: r[key] for r in measurements(raw, config, method, impl) if r.get(key)}
    ours, theirs = by_run("ours"), by_run(other)
    return [ours[run] / theirs[run] for run in sorted(ours) if run in theirs]


def target_check(raw, methods, impls, configs):
    out = ["Ratios are of the medians, and *paired*: the median of the per-run ratios (each run measures "
           "every implementation in turn), which cancels the machine's drift between runs. ✅ or ❌ when "
           "both agree; *split* when they fall on either side of the target (noise decides).", "",
           "| config | method | throughput vs rust (≥1.3x) | vs libev (≥1.5x) | req/s vs rust (≥1.2x) | "
           "p99 ≤ both | mem/conn ≤ libev |", "|---|---|---|---|---|---|---|"]
    for config in configs:
        rows = table_rows(raw, config, methods, impls)

        def med(m, i, k):
            s = rows.get((m, i), {}).get(k)
            return s["median"] if s else None

        for m in methods:
            o = med(m, "ours", "bulk_mbps")
            if o is None:
                continue

            def ratio(other, key, goal):
                x, ours = med(m, other, key), med(m, "ours", key)
                if x is None or ours is None:
                    return "—"
                r = ours / x
                p = paired_ratios(raw, config, m, other, key)
                both = [r >= goal] + ([statistics.median(p) >= goal] if p else [])
                mark = "✅" if all(both) else ("❌" if not any(both) else "split")
                return f"{r:.2f}x{f' (paired {statistics.median(p):.2f}x)' if p else ''} {mark}"

            p99 = med(m, "ours", "rr_p99_us")
            others = [med(m, i, "rr_p99_us") for i in ("libev", "rust")]
            others = [x for x in others if x is not None]
            p99c = "—" if p99 is None or not others else (
                f"{p99:.0f} vs {', '.join(f'{x:.0f}' for x in others)} {'✅' if p99 <= min(others) else '❌'}")
            mo, ml = med(m, "ours", "mem_b_per_conn"), med(m, "libev", "mem_b_per_conn")
            memc = "—" if mo is None or ml is None else f"{mo:.0f} vs {ml:.0f} {'✅' if mo <= ml else '❌'}"
            out.append(f"| {config} | {m} | {ratio('rust', 'bulk_mbps', 1.3)} | {ratio('libev', 'bulk_mbps', 1.5)} | "
                       f"{ratio('rust', 'rr_rps', 1.2)} | {p99c} | {memc} |")
    return "\n".join(out)


def change_check(raw, methods, configs):
    """ours/base for the figures a change must not worsen, as ratio of medians and paired."""
    keys = [("bulk_mbps", "throughput"), ("rr_rps", "req/s"), ("rr_user_us_per_req", "user CPU/req"),
            ("cr_cps", "conn/s"), ("mem_b_per_conn", "mem/conn")]
    out = ["ours/base: the ratio of the medians, then *paired* (the median of the per-run ratios). "
           "Above 1 is more for ours (better for the first, second and fourth, worse for the others).", "",
           "| config | method | " + " | ".join(label for _, label in keys) + " |",
           "|---|---|" + "---|" * len(keys)]
    for config in configs:
        rows = table_rows(raw, config, methods, ["ours", "base"])
        for m in methods:
            cells = []
            for key, _ in keys:
                o = rows.get((m, "ours"), {}).get(key)
                b = rows.get((m, "base"), {}).get(key)
                if not o or not b or not b["median"]:
                    cells.append("—")
                    continue
                p = paired_ratios(raw, config, m, "base", key)
                paired = f" (paired {statistics.median(p):.2f}x)" if p else ""
                cells.append(f"{o['median'] / b['median']:.2f}x{paired}")
            out.append(f"| {config} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def chart(raw, outdir, base, methods, impls, configs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [("bulk_mbps", "bulk MB/s ↑"), ("rr_rps", "requests/s ↑"), ("rr_p99_us", "request p99 µs ↓"),
              ("cr_cps", "connections/s ↑"), ("mem_b_per_conn", "bytes per idle conn ↓"),
              ("cpu_s_per_gib", "CPU s per GiB ↓")]
    colors = {"ours": "#d62728", "base": "#9467bd", "libev": "#1f77b4", "rust": "#ff7f0e"}
    fig, axes = plt.subplots(len(configs), len(panels), figsize=(4.2 * len(panels), 4.0 * len(configs)),
                             squeeze=False)
    short = {m: m.replace("chacha20-ietf-poly1305", "chacha20").replace("2022-blake3-aes-128-gcm", "2022-aes128")
             for m in methods}
    for r, config in enumerate(configs):
        rows = table_rows(raw, config, methods, impls)
        for c, (key, title) in enumerate(panels):
            ax = axes[r][c]
            width = 0.8 / len(impls)
            for j, i in enumerate(impls):
                xs, ys, lo, hi = [], [], [], []
                for k, m in enumerate(methods):
                    s = rows.get((m, i), {}).get(key)
                    if s is None:
                        continue
                    xs.append(k + (j - (len(impls) - 1) / 2) * width)
                    ys.append(s["median"])
                    lo.append(s["median"] - s["min"])
                    hi.append(s["max"] - s["median"])
                ax.bar(xs, ys, width, yerr=[lo, hi], label=i, color=colors.get(i), capsize=2)
            ax.set_xticks(range(len(methods)))
            ax.set_xticklabels([short[m] for m in methods], rotation=30, ha="right", fontsize=8)
            ax.set_title(f"{title} [{config}]", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
            if c == 0:
                ax.legend(fontsize=8)
    fig.suptitle("ssproxy (ours) vs shadowsocks-libev vs shadowsocks-rust — medians, bars = min..max", fontsize=11)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, base + ".png"), dpi=90)


if __name__ == "__main__":
    main()
