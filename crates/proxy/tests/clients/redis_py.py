"""redis-py through the Cinnabar proxy, in plain or cluster mode.

Usage: python redis_py.py plain|cluster HOST PORT

Runs the same steps as ioredis.js (the last one needs notify-keyspace-events on every node) and prints one line of compact JSON:
  {"ok":true,"library":"redis-py","version":...,"mode":...,"handshake":[...],"results":{...}}
On the first step that raises, prints {"ok":false,"step":...,"error":...,...} and exits 1.
"handshake" lists every command the library sent while setting up a connection (redis-py
ignores errors to CLIENT SETINFO, so they are recorded here to be seen) with the reply.
crates/proxy/tests/clients.rs asserts on the output.
"""

import json
import sys
import time
import traceback

import redis
import redis.cluster
from redis.connection import AbstractConnection
from redis.exceptions import ResponseError

HANDSHAKE = []


def _text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return [_text(v) for v in value]
    return value


def _record_handshakes():
    """Wraps the connection class so that what on_connect sends, and what comes back, is kept."""
    on_connect = AbstractConnection.on_connect
    send_command = AbstractConnection.send_command
    read_response = AbstractConnection.read_response

    def recording_on_connect(self):
        self._cinnabar_recording = True
        try:
            on_connect(self)
        finally:
            self._cinnabar_recording = False

    def recording_send_command(self, *args, **kwargs):
        if getattr(self, "_cinnabar_recording", False):
            entry = {"command": " ".join(str(_text(a)) for a in args), "reply": None}
            if entry["command"] not in [e["command"] for e in HANDSHAKE]:
                HANDSHAKE.append(entry)
        return send_command(self, *args, **kwargs)

    def recording_read_response(self, *args, **kwargs):
        recording = getattr(self, "_cinnabar_recording", False)
        try:
            reply = read_response(self, *args, **kwargs)
        except ResponseError as e:
            if recording and HANDSHAKE and HANDSHAKE[-1]["reply"] is None:
                HANDSHAKE[-1]["reply"] = "-" + str(e)
            raise
        if recording and HANDSHAKE and HANDSHAKE[-1]["reply"] is None:
            HANDSHAKE[-1]["reply"] = str(_text(reply))
        return reply

    AbstractConnection.on_connect = recording_on_connect
    AbstractConnection.send_command = recording_send_command
    AbstractConnection.read_response = recording_read_response


def _reply(value):
    """One normalised form for both libraries: SET's True is "OK", bytes are text."""
    if value is True:
        return "OK"
    return _text(value)


def run(mode, host, port):
    out = {"library": "redis-py", "version": redis.__version__, "mode": mode}
    results = {}
    step = "connect"
    try:
        if mode == "plain":
            r = redis.Redis(
                host=host,
                port=port,
                protocol=2,
                client_name="cinnabar-redis-py",
                socket_timeout=10,
                decode_responses=True,
            )
        elif mode == "cluster":
            r = redis.cluster.RedisCluster(
                host=host, port=port, socket_timeout=10, decode_responses=True
            )
            results["nodes"] = sorted(f"{n.host}:{n.port}" for n in r.get_nodes())
        else:
            raise ValueError(f"mode must be plain or cluster, not {mode!r}")

        step = "ping"
        results["ping"] = "PONG" if r.ping() else "no PONG"

        step = "set/get"
        results["set"] = _reply(r.set("str", "hello"))
        results["get"] = r.get("str")

        step = "mset/mget across slots"
        pairs = {"alpha": "1", "beta": "2", "gamma": "3"}
        keys = ["alpha", "beta", "nothing", "gamma"]
        if mode == "plain":
            # One MSET, one MGET: the proxy splits them per slot.
            results["mset"] = _reply(r.mset(pairs))
            results["mget"] = r.mget(keys)
        else:
            # A cluster client splits multi-slot commands itself.
            results["mset"] = _reply(all(r.mset_nonatomic(pairs)) or "not OK")
            results["mget"] = r.mget_nonatomic(keys)

        step = "del across slots"
        results["del"] = r.delete("alpha", "beta", "gamma", "nothing")

        step = "incr"
        results["incr"] = [r.incr("counter") for _ in range(3)]

        step = "pipeline of 100 commands"
        pipe = r.pipeline(transaction=False) if mode == "plain" else r.pipeline()
        for i in range(50):
            pipe.set(f"pipe:{i}", i)
        for i in range(50):
            pipe.get(f"pipe:{i}")
        replies = pipe.execute()
        results["pipeline_len"] = len(replies)
        results["pipeline_sets_ok"] = all(v is True for v in replies[:50])
        results["pipeline_get_sum"] = sum(int(v) for v in replies[50:])

        step = "transaction (MULTI/EXEC, hash-tagged keys)"
        if mode == "plain":
            tx_client = r
        else:
            # redis-py 5.x cluster pipelines refuse transaction=True; run it on the client the
            # cluster client made for the node owning the slot (the proxy, from CLUSTER SLOTS).
            tx_client = r.get_node_from_key("{tx}a").redis_connection
        tx = tx_client.pipeline(transaction=True)
        tx.set("{tx}a", 10)
        tx.incr("{tx}a")
        tx.get("{tx}a")
        tx.exists("{tx}b")
        results["transaction"] = [_reply(v) for v in tx.execute()]

        step = "scan"
        found = set(r.scan_iter(match="pipe:*", count=7))
        results["scan"] = len(found)

        step = "dbsize"
        results["dbsize"] = r.dbsize()

        step = "info"
        info = r.info("server")
        if mode == "cluster":
            # RedisCluster.info answers per node: {node name: info}.
            info = next(iter(info.values())) if info and "redis_version" not in info else info
        results["info_redis_version"] = "redis_version" in info

        if mode == "plain":
            step = "info at connect"
            full = r.info()
            wanted = ("redis_version", "arch_bits", "cluster_enabled", "redis_mode")
            results["info_at_connect"] = all(k in full for k in wanted) and (
                r.info("clients").get("blocked_clients") == 0
            )

            step = "transactional pipeline across slots"
            tx = r.pipeline()  # transaction=True: redis-py's default
            tx.set("xs:a", 1)
            tx.set("xs:b", 2)
            tx.incr("xs:a")
            try:
                results["cross_slot_tx"] = [_reply(v) for v in tx.execute()]
            except redis.exceptions.RedisError as e:
                results["cross_slot_tx"] = "refused: " + type(e).__name__

        step = "keyspace notifications"
        # Each of alpha, beta and gamma lives on another master; each SET's notification must
        # arrive once, from whichever master ran it.
        subscriber = r.pubsub(ignore_subscribe_messages=True)
        subscriber.psubscribe("__keyspace@0__:*")
        subscriber.get_message(timeout=5)  # the confirmation
        for key in ("alpha", "beta", "gamma"):
            r.set(key, "ks")
        notified = []
        deadline = time.monotonic() + 5
        while len(notified) < 3 and time.monotonic() < deadline:
            message = subscriber.get_message(timeout=0.1)
            if message:
                notified.append(message["channel"])
        # A duplicate would arrive by now.
        message = subscriber.get_message(timeout=0.3)
        if message:
            notified.append(message["channel"])
        results["keyspace"] = sorted(notified)
        subscriber.close()

        step = "close"
        r.close()
    except Exception as e:  # noqa: BLE001 - the failing step is the report
        out.update(
            ok=False,
            step=step,
            error=f"{type(e).__name__}: {e}",
            traceback=traceback.format_exc(limit=4),
            handshake=HANDSHAKE,
            results=results,
        )
        print(json.dumps(out, separators=(",", ":"), sort_keys=True))
        return 1
    out.update(ok=True, handshake=HANDSHAKE, results=results)
    print(json.dumps(out, separators=(",", ":"), sort_keys=True))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    _record_handshakes()
    sys.exit(run(sys.argv[1], sys.argv[2], int(sys.argv[3])))
