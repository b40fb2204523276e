#!/usr/bin/env python3
"""The measuring half of bench/sync.sh (standard library only, Python 3.8+).

sync.sh starts the servers and the syncs; this file writes the data sets as RESP for
`redis-cli --pipe`, waits for a sync to reach streaming while watching its memory, drives the
steady write load while sampling the sync's lag, and does the arithmetic.

Subcommands:
  free-ports N              print a base port B such that B..B+N-1 and their bus ports (+10000)
                            are free on 127.0.0.1, then one more free port (the source)
  mixed N                   RESP for N mixed keys: 70% strings (2% of them with a TTL), 10%
                            hashes, 7% lists, 7% sets, 6% sorted sets of 4-5 elements each
  big MIB SMALL             RESP for one hash `big` of MIB MiB (1 KiB values, HSET in batches
                            of 256 fields) and SMALL small strings
  wait-streaming ...        poll `cinnabar sync status --json` until every source streams;
                            print seconds since --since and the sync's peak RSS
  lag ...                   write at --rate on the source for --seconds, sample the lag
"""

import argparse
import json
import math
import os
import random
import socket
import subprocess
import sys
import threading
import time


def free_ports(n):
    def free(port):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return True
            except OSError:
                return False

    base = 21000 + (os.getpid() % 200) * 100
    for _ in range(400):
        if base + n + 100 < 55000 and all(free(p) and free(p + 10000)
                                          for p in range(base, base + n)):
            more = [p for p in range(base + n, base + n + 100) if free(p)]
            if more:
                print(base, more[0])
                return 0
        base = 21000 + (base + 100 - 21000) % 34000
    print("no free port range found", file=sys.stderr)
    return 1


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if not isinstance(a, bytes):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def mixed(n):
    out = sys.stdout.buffer
    buf = []
    for i in range(n):
        r = i % 100
        v = b"%016d" % i
        if r < 70:
            value = v * 4  # 64 bytes
            if r == 0 or r == 50:
                buf.append(resp(b"SET", b"s:%d" % i, value, b"EX", b"86400"))
            else:
                buf.append(resp(b"SET", b"s:%d" % i, value))
        elif r < 80:
            buf.append(resp(b"HSET", b"h:%d" % i, b"name", v, b"count", b"%d" % i,
                            b"kind", b"bench", b"note", v * 2))
        elif r < 87:
            buf.append(resp(b"RPUSH", b"l:%d" % i, b"a", v, b"c", b"%d" % i, b"e"))
        elif r < 94:
            buf.append(resp(b"SADD", b"t:%d" % i, b"x", b"y", v, b"m%d" % i))
        else:
            buf.append(resp(b"ZADD", b"z:%d" % i, b"1", b"a", b"2.5", v, b"3", b"c",
                            b"%d" % i, b"d"))
        if len(buf) >= 10000:
            out.write(b"".join(buf))
            buf.clear()
    out.write(b"".join(buf))
    out.flush()


def big(mib, small):
    out = sys.stdout.buffer
    fields = mib * 1024
    filler = b"v" * 1016
    per = 256
    for start in range(0, fields, per):
        args = [b"HSET", b"big"]
        for j in range(start, min(start + per, fields)):
            args.append(b"f%d" % j)
            args.append(b"%08d" % j + filler)
        out.write(resp(*args))
    buf = []
    for i in range(small):
        buf.append(resp(b"SET", b"small:%d" % i, b"%032d" % i))
    out.write(b"".join(buf))
    out.flush()


def status(cinnabar, state):
    out = subprocess.run([cinnabar, "sync", "status", "--json", "--state", state],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False)
    try:
        return json.loads(out.stdout)
    except ValueError:
        return None


def vm_kib(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def wait_streaming(a):
    deadline = time.time() + a.timeout
    peak = 0
    while True:
        rss = vm_kib(a.pid, "VmHWM")
        if rss is not None:
            peak = max(peak, rss)
        st = status(a.cinnabar, a.state)
        sources = (st or {}).get("sources") or []
        if st and st.get("pid") == a.pid and sources and all(
                s["phase"] == "streaming" and not s.get("error") for s in sources):
            elapsed = time.time() - a.since
            keys = sum(s.get("keys_applied") or 0 for s in sources)
            print("%.3f %d %d" % (elapsed, peak, keys))
            return 0
        errors = [s["error"] for s in sources if s.get("error")]
        if not os.path.exists("/proc/%d" % a.pid):
            print("the sync exited before streaming; last error: %s" % errors, file=sys.stderr)
            return 1
        if time.time() > deadline:
            print("the sync was not streaming after %d s; status: %s" % (a.timeout, st),
                  file=sys.stderr)
            return 1
        time.sleep(0.05)


def percentile(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


class Conn:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        line = self.line()
        if line[:1] == b"$":
            n = int(line[1:])
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("connection closed")
                self.buf += chunk
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        return line

    def skip_bytes(self, n):
        """Reads and drops n bytes (pipelined +OK replies)."""
        while len(self.buf) < n:
            chunk = self.sock.recv(262144)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        if not self.buf.startswith(b"+OK"):
            raise RuntimeError("unexpected reply: %r" % self.buf[:80])
        self.buf = self.buf[n:]


def hostport(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def lag(a):
    src = hostport(a.source)
    stop = threading.Event()
    result = {"writes": 0, "write_seconds": 0.0, "samples": [], "probes": [], "probe_lost": 0,
              "error": None}

    # The writer: SET of 64-byte values on `lag:<random below --keys>`, in pipelined batches
    # every 10 ms so that the rate is steady; it catches up when a batch was late.
    def writer():
        try:
            conn = Conn(*src)
            per_tick = max(1, round(a.rate / 100))
            rng = random.Random(1)
            value = b"w" * 64
            pool = [b"".join(resp(b"SET", b"lag:%d" % rng.randrange(a.keys), value)
                             for _ in range(per_tick)) for _ in range(64)]
            start = time.monotonic()
            next_t = start
            end = start + a.seconds
            i = 0
            while True:
                now = time.monotonic()
                if now >= end:
                    break
                if now < next_t:
                    time.sleep(next_t - now)
                conn.send(pool[i % len(pool)])
                conn.skip_bytes(5 * per_tick)
                result["writes"] += per_tick
                i += 1
                next_t += 0.01
            result["write_seconds"] = time.monotonic() - start
        except Exception as e:  # noqa: BLE001 - reported as a failure to run
            result["error"] = "writer: %s" % e
        finally:
            stop.set()

    # The sampler: `cinnabar sync status --json` every 100 ms.
    def sampler():
        while not stop.is_set():
            t = time.monotonic()
            st = status(a.cinnabar, a.state)
            if st and st.get("sources"):
                srcs = st["sources"]
                result["samples"].append((max(s["lag_ms"] for s in srcs),
                                          max(s["lag_bytes"] for s in srcs),
                                          all(s["phase"] == "streaming" for s in srcs)))
            time.sleep(max(0.0, 0.1 - (time.monotonic() - t)))

    # The probe: every 100 ms a SET of a sequence number on the source, then GET on the
    # target's owner of that key every millisecond until it is there: end-to-end delay.
    def prober():
        try:
            s = Conn(*src)
            target = hostport(a.target)
            t = Conn(*target)
            key = b"syncbench:probe"
            t.send(resp(b"GET", key))
            r = t.reply()
            if r is not None and r.startswith(b"-MOVED"):
                t = Conn(*hostport(r.split()[2].decode()))
            seq = 0
            while not stop.is_set():
                seq += 1
                want = b"%d" % seq
                s.send(resp(b"SET", key, want))
                s.reply()
                sent = time.monotonic()
                while True:
                    t.send(resp(b"GET", key))
                    if t.reply() == want:
                        result["probes"].append((time.monotonic() - sent) * 1000)
                        break
                    if time.monotonic() - sent > 10:
                        result["probe_lost"] += 1
                        break
                    time.sleep(0.001)
                time.sleep(max(0.0, 0.1 - (time.monotonic() - sent)))
        except Exception as e:  # noqa: BLE001
            result["error"] = "probe: %s" % e

    threads = [threading.Thread(target=f, daemon=True) for f in (writer, sampler, prober)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if result["error"]:
        print(result["error"], file=sys.stderr)
        return 1
    # After the writes: how long until the sync has everything (lag_bytes 0 again).
    t0 = time.monotonic()
    caught = None
    while time.monotonic() - t0 < 60:
        st = status(a.cinnabar, a.state)
        if st and st.get("sources") and all(s["lag_bytes"] == 0 and s["phase"] == "streaming"
                                            for s in st["sources"]):
            caught = time.monotonic() - t0
            break
        time.sleep(0.1)
    ms = [s[0] for s in result["samples"]]
    by = [s[1] for s in result["samples"]]
    not_streaming = sum(1 for s in result["samples"] if not s[2])
    rate = result["writes"] / result["write_seconds"] if result["write_seconds"] else 0
    out = {
        "writes": result["writes"], "seconds": result["write_seconds"], "rate": rate,
        "samples": len(ms), "not_streaming": not_streaming,
        "lag_ms": [percentile(ms, 50), percentile(ms, 99), max(ms) if ms else float("nan")],
        "lag_bytes": [percentile(by, 50), percentile(by, 99), max(by) if by else float("nan")],
        "probes": len(result["probes"]), "probe_lost": result["probe_lost"],
        "probe_ms": [percentile(result["probes"], 50), percentile(result["probes"], 99),
                     max(result["probes"]) if result["probes"] else float("nan")],
        "caught_up_s": caught,
    }
    print(json.dumps(out))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    fp = sub.add_parser("free-ports")
    fp.add_argument("n", type=int)
    m = sub.add_parser("mixed")
    m.add_argument("n", type=int)
    b = sub.add_parser("big")
    b.add_argument("mib", type=int)
    b.add_argument("small", type=int)
    w = sub.add_parser("wait-streaming")
    w.add_argument("--cinnabar", required=True)
    w.add_argument("--state", required=True)
    w.add_argument("--pid", type=int, required=True)
    w.add_argument("--since", type=float, required=True, help="start time, Unix seconds")
    w.add_argument("--timeout", type=int, default=1800)
    lg = sub.add_parser("lag")
    lg.add_argument("--cinnabar", required=True)
    lg.add_argument("--state", required=True)
    lg.add_argument("--source", required=True)
    lg.add_argument("--target", required=True)
    lg.add_argument("--rate", type=int, default=50000)
    lg.add_argument("--seconds", type=float, default=20)
    lg.add_argument("--keys", type=int, default=100000)
    a = ap.parse_args()
    if a.cmd == "free-ports":
        return free_ports(a.n)
    if a.cmd == "mixed":
        mixed(a.n)
        return 0
    if a.cmd == "big":
        big(a.mib, a.small)
        return 0
    if a.cmd == "wait-streaming":
        return wait_streaming(a)
    return lag(a)


if __name__ == "__main__":
    sys.exit(main())
