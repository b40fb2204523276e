"""Runs bench/sentinel-failover.sh: see its header for what is measured and printed.

One group per round (redis-server processes and Sentinels started here, in a temporary
directory), cinnabar's proxy (`cinnabar proxy --config` with a [group] section) and HAProxy with
the seed's check in front of it, one writer per endpoint, kill -9 of the master. Plain sockets
speak RESP, so no Python package is needed. Every process started here is stopped on exit.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

PASSWORD = "bench-secret"
GROUP = "bench"
CONNECTIONS = 2
RETRY_PAUSE = 0.1
# Longer than the proxy's retry window (10 s): a held request is not a client timeout.
CLIENT_TIMEOUT = 15.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class Conn:
    """One RESP connection; replies are read as whole lines or bulk strings (all we need)."""

    def __init__(self, port, password=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT)
        self.buf = b""
        if password:
            reply = self.call("AUTH", password)
            if reply.startswith(b"-"):
                raise OSError(reply.decode(errors="replace"))

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def call(self, *args):
        self.sock.sendall(command(*args))
        line = self._line()
        if line.startswith(b"$"):
            n = int(line[1:])
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise OSError("connection closed")
                self.buf += chunk
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        return line

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def wait_ping(port, password=None, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            c = Conn(port, password)
            if c.call("PING") in (b"+PONG",):
                c.close()
                return
            c.close()
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing answers PING on {port}")


class Writer(threading.Thread):
    """Writes `prefix:conn:seq` = seq on one connection, records each attempt's outcome."""

    def __init__(self, port, password, prefix, index):
        super().__init__(daemon=True)
        self.port, self.password, self.prefix, self.index = port, password, prefix, index
        self.stop = False
        # (started, finished, ok, key)
        self.attempts = []

    def run(self):
        conn, seq = None, 0
        while not self.stop:
            started = time.time()
            try:
                if conn is None:
                    conn = Conn(self.port, self.password)
                seq += 1
                key = f"{self.prefix}:{self.index}:{seq}"
                reply = conn.call("SET", key, seq)
                ok = reply == b"+OK"
                self.attempts.append((started, time.time(), ok, key))
                if not ok:
                    time.sleep(RETRY_PAUSE)
            except OSError:
                self.attempts.append((started, time.time(), False, None))
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(RETRY_PAUSE)
            time.sleep(0.001)
        if conn is not None:
            conn.close()


def measure(writers, killed_at, port, password):
    attempts = sorted(a for w in writers for a in w.attempts)
    after = [a for a in attempts if a[1] >= killed_at]
    errors = sum(1 for a in after if not a[2])
    failures = [a for a in after if not a[2]]
    last_failure = max((a[1] for a in failures), default=killed_at)
    # Writes succeed again: the first write started after the last failure (or, with none,
    # the first started after the kill) that was acknowledged; its acknowledgement time.
    recovered = next(
        (a[1] for a in after if a[2] and a[0] >= killed_at and a[1] >= last_failure), None
    )
    longest = max((a[1] - a[0] for a in attempts), default=0.0)
    acked = [a[3] for a in attempts if a[2]]
    conn = Conn(port, password)
    lost = 0
    for key in acked:
        if conn.call("GET", key) is None:
            lost += 1
    conn.close()
    return {
        "acked": len(acked),
        "errors": errors,
        "recover_s": None if recovered is None else recovered - killed_at,
        "longest_s": longest,
        "lost": lost,
    }


class Group:
    def __init__(self, work, down_after):
        self.work, self.procs = work, []
        self.nodes = [free_port() for _ in range(3)]
        self.sentinels = [free_port() for _ in range(3)]
        for i, port in enumerate(self.nodes):
            conf = [
                f"port {port}", "bind 127.0.0.1", f"dir {self.dir(port)}", "appendonly yes",
                "appendfsync everysec", "repl-diskless-sync-delay 0", f"requirepass {PASSWORD}",
                f"masterauth {PASSWORD}", "save \"\"",
            ]
            if i > 0:
                conf.append(f"replicaof 127.0.0.1 {self.nodes[0]}")
            self.start(port, conf)
        for port in self.nodes:
            wait_ping(port, PASSWORD)
        for port in self.sentinels:
            conf = [
                f"port {port}", "bind 127.0.0.1", f"dir {self.dir(port)}",
                f"sentinel monitor {GROUP} 127.0.0.1 {self.nodes[0]} 2",
                f"sentinel auth-pass {GROUP} {PASSWORD}",
                f"sentinel down-after-milliseconds {GROUP} {down_after}",
                f"sentinel failover-timeout {GROUP} 30000",
                f"sentinel parallel-syncs {GROUP} 1",
            ]
            self.start(port, conf, sentinel=True)
        for port in self.sentinels:
            wait_ping(port)
        self.wait_discovered()

    def dir(self, port):
        path = os.path.join(self.work, str(port))
        os.makedirs(path, exist_ok=True)
        return path

    def start(self, port, conf, sentinel=False):
        path = os.path.join(self.dir(port), "redis.conf")
        with open(path, "w") as f:
            f.write("\n".join(conf) + "\n")
        args = ["redis-server", path] + (["--sentinel"] if sentinel else [])
        log = open(os.path.join(self.dir(port), "log"), "w")
        self.procs.append((port, subprocess.Popen(args, stdout=log, stderr=log)))

    def wait_discovered(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            ready = 0
            for port in self.sentinels:
                try:
                    c = Conn(port)
                    c.sock.sendall(command("SENTINEL", "MASTER", GROUP))
                    text = c.sock.recv(65536)
                    c.close()
                    if b"num-slaves\r\n$1\r\n2" in text and b"num-other-sentinels\r\n$1\r\n2" in text:
                        ready += 1
                except OSError:
                    pass
            if ready == len(self.sentinels):
                return
            time.sleep(0.2)
        raise RuntimeError("the Sentinels did not discover the group")

    def master_pid(self):
        c = Conn(self.sentinels[0])
        c.sock.sendall(command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", GROUP))
        time.sleep(0.1)
        text = c.sock.recv(65536).split(b"\r\n")
        c.close()
        port = int(text[4])
        return port, next(p for q, p in self.procs if q == port)

    def new_master(self, old):
        c = Conn(self.sentinels[0])
        c.sock.sendall(command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", GROUP))
        time.sleep(0.05)
        text = c.sock.recv(65536).split(b"\r\n")
        c.close()
        port = int(text[4])
        return port if port != old else None

    def stop(self):
        for _, p in self.procs:
            if p.poll() is None:
                p.terminate()
        for _, p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


def haproxy_config(port, nodes):
    servers = "\n".join(
        f"  server n{i} 127.0.0.1:{p} check inter 1s" for i, p in enumerate(nodes)
    )
    return f"""global
  maxconn 1000
defaults
  mode tcp
  timeout connect 1s
  timeout client 60s
  timeout server 60s
frontend redis
  bind 127.0.0.1:{port}
  default_backend group
backend group
  option tcp-check
  tcp-check connect
  tcp-check send AUTH\\ {PASSWORD}\\r\\n
  tcp-check expect string +OK
  tcp-check send PING\\r\\n
  tcp-check expect string +PONG
  tcp-check send info\\ replication\\r\\n
  tcp-check expect string role:master
  tcp-check send QUIT\\r\\n
  tcp-check expect string +OK
{servers}
"""


def round_once(args, number):
    work = tempfile.mkdtemp(prefix="cinnabar-sentinel-bench-")
    group, others = None, []
    try:
        group = Group(work, args.down_after)
        proxy_port, hap_port = free_port(), free_port()
        secret = os.path.join(work, "password")
        with open(secret, "w") as f:
            f.write(PASSWORD + "\n")
        settings = os.path.join(work, "proxy.toml")
        sentinels = ", ".join(f'"127.0.0.1:{p}"' for p in group.sentinels)
        with open(settings, "w") as f:
            f.write(
                f'listen = "127.0.0.1:{proxy_port}"\nbackend_password_file = "{secret}"\n'
                f'[group]\nname = "{GROUP}"\nsentinels = [{sentinels}]\n'
            )
        hap_conf = os.path.join(work, "haproxy.cfg")
        with open(hap_conf, "w") as f:
            f.write(haproxy_config(hap_port, group.nodes))
        log = open(os.path.join(work, "proxy.log"), "w")
        others.append(subprocess.Popen([args.cinnabar, "proxy", "--config", settings], stdout=log, stderr=log))
        hlog = open(os.path.join(work, "haproxy.log"), "w")
        others.append(subprocess.Popen(["haproxy", "-f", hap_conf, "-db"], stdout=hlog, stderr=hlog))
        wait_ping(proxy_port)
        wait_ping(hap_port, PASSWORD)
        writers = {
            "cinnabar": [Writer(proxy_port, None, "cin", i) for i in range(CONNECTIONS)],
            "haproxy": [Writer(hap_port, PASSWORD, "hap", i) for i in range(CONNECTIONS)],
        }
        for ws in writers.values():
            for w in ws:
                w.start()
        time.sleep(3)
        old, pid = group.master_pid()
        pid.send_signal(signal.SIGKILL)
        killed_at = time.time()
        promoted = None
        while time.time() - killed_at < 60:
            if promoted is None and group.new_master(old):
                promoted = time.time() - killed_at
            time.sleep(0.1)
            if promoted is not None and time.time() - killed_at > promoted + 8:
                break
        for ws in writers.values():
            for w in ws:
                w.stop = True
        for ws in writers.values():
            for w in ws:
                w.join(CLIENT_TIMEOUT + 5)
        results = {
            "cinnabar": measure(writers["cinnabar"], killed_at, proxy_port, None),
            "haproxy": measure(writers["haproxy"], killed_at, hap_port, PASSWORD),
        }
        print(f"\nround {number}: kill -9 of master 127.0.0.1:{old}; Sentinel promoted a replica "
              f"{promoted:.2f} s later (down-after {args.down_after} ms)" if promoted else
              f"\nround {number}: no promotion within 60 s")
        print(f"{'endpoint':<10} {'acked':>7} {'errors':>7} {'writes ok again':>16} {'longest write':>14} {'lost':>5}")
        for name, r in results.items():
            recover = "never" if r["recover_s"] is None else f"{r['recover_s']:.2f} s"
            print(f"{name:<10} {r['acked']:>7} {r['errors']:>7} {recover:>16} {r['longest_s']:>12.2f} s {r['lost']:>5}")
        return results
    finally:
        for p in others:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
        if group is not None:
            group.stop()
        shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cinnabar", required=True)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--down-after", type=int, default=5000)
    args = parser.parse_args()
    print(f"{CONNECTIONS} writer connections per endpoint, failed attempts retried every "
          f"{RETRY_PAUSE * 1000:.0f} ms; errors = failed attempts after the kill")
    for number in range(1, args.rounds + 1):
        round_once(args, number)


if __name__ == "__main__":
    sys.exit(main())
