"""Drives the original: shadowsocks 2.8.2's eventloop.EventLoop (Python), with
handler objects exactly as the proxy drives it: loop.add(sock, mode, handler),
then handler.handle_event(sock, fd, event) for each event. One JSON line out.

    python original.py pingpong pairs=1 size=1 idle=0 events=2000000 secs=0.5
    python original.py churn ops=2000000 secs=0.5
    python original.py echo-server conns=100 secs=30
"""

import collections
import collections.abc
import json
import resource
import signal
import socket
import sys
import time

# Python 3.10 removed the ABC aliases from `collections`; parts of shadowsocks
# 2.8.2 (lru_cache) still use them. Shim at run time, never patch the package.
for _name in ("Callable", "MutableMapping", "Mapping", "Iterable"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))

from shadowsocks import eventloop  # noqa: E402

POLL_IN = eventloop.POLL_IN
READ_BUF = 64 * 1024


def args():
    out = {}
    for a in sys.argv[2:]:
        k, v = a.split("=", 1)
        out[k.lstrip("-")] = v
    return out


def cpu_time():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def emit(**fields):
    print(json.dumps(fields), flush=True)


class Budget(object):
    def __init__(self, loop, limit, secs):
        self.loop = loop
        self.count = 0
        self.limit = limit
        self.deadline = time.perf_counter() + secs


class Bouncer(object):
    """W1/W2: each readable event reads what came and writes it back."""

    def __init__(self, budget):
        self._budget = budget

    def handle_event(self, sock, fd, event):
        try:
            data = sock.recv(READ_BUF)
        except BlockingIOError:
            return
        sock.sendall(data)
        b = self._budget
        b.count += 1
        if b.count >= b.limit or (b.count & 63 == 0 and time.perf_counter() >= b.deadline):
            b.loop.stop()


class Idle(object):
    def handle_event(self, sock, fd, event):
        pass


def pingpong(a):
    pairs, size, idle = int(a.get("pairs", 1)), int(a.get("size", 1)), int(a.get("idle", 0))
    loop = eventloop.EventLoop()
    budget = Budget(loop, int(a.get("events", 2000000)), float(a.get("secs", 0.5)))
    idle_socks = []
    for _ in range(idle):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        loop.add(s, POLL_IN, Idle())
        idle_socks.append(s)
    msg = bytes(ord("a") + i % 26 for i in range(size))
    socks = []
    for _ in range(pairs):
        x, y = socket.socketpair()
        x.setblocking(False)
        y.setblocking(False)
        loop.add(x, POLL_IN, Bouncer(budget))
        loop.add(y, POLL_IN, Bouncer(budget))
        socks.append((x, y))
    for x, _ in socks:
        x.sendall(msg)
    start, cpu_start = time.perf_counter(), cpu_time()
    loop.run()
    secs, cpu = time.perf_counter() - start, cpu_time() - cpu_start
    emit(events=budget.count, secs=secs, per_sec=budget.count / secs, cpu_ns_per_op=cpu * 1e9 / max(1, budget.count))


def churn(a):
    ops, secs = int(a.get("ops", 2000000)), float(a.get("secs", 0.5))
    loop = eventloop.EventLoop()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    handler = Idle()
    deadline = time.perf_counter() + secs
    start, cpu_start = time.perf_counter(), cpu_time()
    done = 0
    while done < ops:
        loop.add(s, POLL_IN, handler)
        loop.remove(s)
        done += 1
        if done & 1023 == 0 and time.perf_counter() >= deadline:
            break
    elapsed, cpu = time.perf_counter() - start, cpu_time() - cpu_start
    emit(events=done, secs=elapsed, per_sec=done / elapsed, cpu_ns_per_op=cpu * 1e9 / max(1, done))


class Server(object):
    def __init__(self, loop, expected):
        self.loop = loop
        self.expected = expected
        self.accepted = 0
        self.closed = 0
        self.served = 0


class Acceptor(object):
    def __init__(self, server):
        self._server = server

    def handle_event(self, sock, fd, event):
        srv = self._server
        while True:
            try:
                conn, _ = sock.accept()
            except BlockingIOError:
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            srv.loop.add(conn, POLL_IN, Client(srv))
            srv.accepted += 1


class Client(object):
    def __init__(self, server):
        self._server = server

    def handle_event(self, sock, fd, event):
        srv = self._server
        try:
            data = sock.recv(READ_BUF)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            srv.served += 1
            sock.sendall(data)
            return
        srv.loop.remove(sock)
        sock.close()
        srv.closed += 1
        if srv.closed >= srv.expected and srv.closed == srv.accepted:
            srv.loop.stop()


def echo_server(a):
    conns, secs = int(a.get("conns", 100)), float(a.get("secs", 30))
    signal.alarm(max(1, int(secs)))  # a hard bound: SIGALRM's default action ends the process
    loop = eventloop.EventLoop()
    srv = Server(loop, conns)
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1024)
    lsock.setblocking(False)
    loop.add(lsock, POLL_IN, Acceptor(srv))
    emit(port=lsock.getsockname()[1])
    loop.run()
    emit(served=srv.served)


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    try:
        {"pingpong": pingpong, "churn": churn, "echo-server": echo_server}[cmd](args())
    except Exception as e:  # reported as a result, like the Rust binary's errors
        emit(error="%s: %s" % (type(e).__name__, e), kind=type(e).__name__)
        sys.exit(2)


if __name__ == "__main__":
    main()
