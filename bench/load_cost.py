#!/usr/bin/env python3
"""What a Redis server spends to take in N keys, by the way they arrive (issue 14's restore target).

Starts one standalone redis-server (no persistence) on a free loopback port and, for N small
string keys (40-byte values), measures the server's own CPU time (utime + stime from /proc, so
other load on the machine does not count) for:
  SET        one SET per key through `redis-cli --pipe` (how a plain loader writes)
  MSET x64   64 keys per MSET (the cheapest way by command)
  RESTORE    one RESTORE per key with a DUMP payload (how a restore or sync writes a value)
  RDB load   the same keys loaded from an RDB file at start (no command at all)
and prints microseconds of server CPU per key and the ratio to SET. A restore can be at most
(SET cost / its own cost) times faster than a SET loader on a machine where the servers are the
bottleneck. Standard library only; needs redis-server and redis-cli.

  python3 bench/load_cost.py [--keys N]     (default 500,000)
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

TICKS = os.sysconf("SC_CLK_TCK")
VALUE = b"v" * 40


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Server:
    def __init__(self, work, port):
        self.port = port
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", work, "--dbfilename", "load.rdb"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if self.cli("PING") == "PONG":
                return
            time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    def cli(self, *args):
        done = subprocess.run(["redis-cli", "-p", str(self.port), *args],
                              capture_output=True, text=True)
        return done.stdout.strip()

    def pipe(self, data):
        subprocess.run(["redis-cli", "-p", str(self.port), "--pipe"], input=data,
                       stdout=subprocess.DEVNULL, check=True)

    def stop(self):
        self.cli("SHUTDOWN", "NOSAVE")
        self.proc.wait(timeout=10)


def dump_payload(port):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(resp(b"SET", b"sample", VALUE) + resp(b"DUMP", b"sample"))
        data = b""
        while data.count(b"\r\n") < 3:
            data += s.recv(4096)
    reply = data.split(b"\r\n", 1)[1]
    header, rest = reply.split(b"\r\n", 1)
    return rest[: int(header[1:])]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=500_000)
    n = parser.parse_args().keys
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found")
    work = tempfile.mkdtemp(prefix="cinnabar-loadcost.")
    try:
        server = Server(work, free_port())
        payload = dump_payload(server.port)
        keys = [b"key:%d" % i for i in range(n)]
        ways = {
            "SET": b"".join(resp(b"SET", k, VALUE) for k in keys),
            "MSET x64": b"".join(
                resp(b"MSET", *[x for k in keys[i:i + 64] for x in (k, VALUE)])
                for i in range(0, n, 64)),
            "RESTORE": b"".join(resp(b"RESTORE", k, b"0", payload, b"REPLACE") for k in keys),
        }
        results = {}
        for name, data in ways.items():
            server.cli("FLUSHALL")
            before = cpu_seconds(server.proc.pid)
            server.pipe(data)
            results[name] = cpu_seconds(server.proc.pid) - before
            assert server.cli("DBSIZE") == str(n), f"{name}: DBSIZE {server.cli('DBSIZE')}"
        server.cli("SAVE")
        server.stop()
        # A server that starts with the file loads it before it answers: its CPU time once it
        # answers, less that of an empty start, is the load.
        os.rename(os.path.join(work, "load.rdb"), os.path.join(work, "keep.rdb"))
        empty = Server(work, free_port())
        empty_start = cpu_seconds(empty.proc.pid)
        empty.stop()
        os.rename(os.path.join(work, "keep.rdb"), os.path.join(work, "load.rdb"))
        loaded = Server(work, free_port())
        assert loaded.cli("DBSIZE") == str(n)
        results["RDB load"] = cpu_seconds(loaded.proc.pid) - empty_start
        loaded.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"server CPU to take in {n:,} string keys (40-byte values), redis-server "
          f"{subprocess.run(['redis-server', '--version'], capture_output=True, text=True).stdout.split()[2]}")
    print(f"{'way':<10} {'CPU s':>8} {'us/key':>8} {'vs SET':>8}")
    for name, seconds in results.items():
        print(f"{name:<10} {seconds:>8.2f} {seconds * 1e6 / n:>8.2f} "
              f"{results['SET'] / seconds if seconds else float('nan'):>7.2f}x")


if __name__ == "__main__":
    sys.exit(main())
