// ioredis through the Cinnabar proxy, in plain or cluster mode.
//
// Usage: node ioredis.js plain|cluster HOST PORT   (with ioredis resolvable, e.g. via NODE_PATH)
//
// Runs the same steps as redis_py.py (the last one needs notify-keyspace-events on every node) and prints one line of compact JSON:
//   {"ok":true,"library":"ioredis","version":...,"mode":...,"handshake":[...],"results":{...}}
// On the first step that fails, prints {"ok":false,"step":...,"error":...,...} and exits 1.
// "handshake" lists every command the library sent while setting up a connection (ioredis
// ignores errors to CLIENT SETINFO/SETNAME, so they are recorded here to be seen) with the
// reply. crates/proxy/tests/clients.rs asserts on the output.
"use strict";

const Redis = require("ioredis");
const version = require("ioredis/package.json").version;

const handshake = [];

// Records commands sent before a connection is ready (status "connect": CLIENT SETNAME,
// CLIENT SETINFO, the INFO ready check) and the cluster client's topology queries.
function recordHandshakes() {
  const sendCommand = Redis.prototype.sendCommand;
  Redis.prototype.sendCommand = function (command, stream) {
    const name = String(command.name).toLowerCase();
    if (this.status === "connect" || name === "cluster") {
      const text = [command.name, ...command.args.map(String)].join(" ");
      if (!handshake.some((e) => e.command === text)) {
        const entry = { command: text, reply: null };
        handshake.push(entry);
        command.promise.then(
          (reply) => {
            const s = Array.isArray(reply) ? JSON.stringify(reply) : String(reply);
            entry.reply = s.length > 120 ? s.slice(0, 120) + "…" : s;
          },
          (err) => {
            entry.reply = "-" + err.message;
          },
        );
      }
    }
    return sendCommand.call(this, command, stream);
  };
}

function ready(client) {
  return new Promise((resolve, reject) => {
    if (client.status === "ready") return resolve();
    const timer = setTimeout(() => reject(new Error(`not ready after 10s (status ${client.status})`)), 10000);
    client.once("ready", () => {
      clearTimeout(timer);
      resolve();
    });
    client.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

function scanAll(node, match) {
  return new Promise((resolve, reject) => {
    const keys = new Set();
    node
      .scanStream({ match, count: 7 })
      .on("data", (batch) => batch.forEach((k) => keys.add(k)))
      .on("error", reject)
      .on("end", () => resolve(keys));
  });
}

// ioredis answers [[err, reply], ...] for pipelines and transactions.
function replies(pairs) {
  return pairs.map(([err, reply]) => {
    if (err) throw err;
    return reply;
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function run(mode, host, port) {
  const out = { library: "ioredis", version, mode };
  const results = {};
  let step = "connect";
  let r;
  try {
    const options = { connectTimeout: 5000, commandTimeout: 10000, maxRetriesPerRequest: 1 };
    if (mode === "plain") {
      r = new Redis(port, host, { ...options, connectionName: "cinnabar-ioredis" });
      await ready(r);
    } else if (mode === "cluster") {
      r = new Redis.Cluster([{ host, port }], { redisOptions: options, clusterRetryStrategy: () => null });
      await ready(r);
      results.nodes = r.nodes("all").map((n) => `${n.options.host}:${n.options.port}`).sort();
    } else {
      throw new Error(`mode must be plain or cluster, not ${mode}`);
    }
    const masters = mode === "plain" ? [r] : r.nodes("master");

    step = "ping";
    results.ping = await r.ping();

    step = "set/get";
    results.set = await r.set("str", "hello");
    results.get = await r.get("str");

    step = "mset/mget across slots";
    // One MSET, one MGET in both modes: ioredis's cluster client sends a multi-key command to the
    // owner of its first key, which here is the proxy, and the proxy splits it per slot.
    results.mset = await r.mset({ alpha: "1", beta: "2", gamma: "3" });
    results.mget = await r.mget("alpha", "beta", "nothing", "gamma");

    step = "del across slots";
    results.del = await r.del("alpha", "beta", "gamma", "nothing");

    step = "incr";
    results.incr = [await r.incr("counter"), await r.incr("counter"), await r.incr("counter")];

    step = "pipeline of 100 commands";
    // In cluster mode ioredis allows a pipeline across slots only when one node owns them all:
    // the proxy, which answers CLUSTER SLOTS with itself owning 0-16383.
    const pipe = r.pipeline();
    for (let i = 0; i < 50; i++) pipe.set(`pipe:${i}`, i);
    for (let i = 0; i < 50; i++) pipe.get(`pipe:${i}`);
    const piped = replies(await pipe.exec());
    results.pipeline_len = piped.length;
    results.pipeline_sets_ok = piped.slice(0, 50).every((v) => v === "OK");
    results.pipeline_get_sum = piped.slice(50).reduce((sum, v) => sum + Number(v), 0);

    step = "transaction (MULTI/EXEC, hash-tagged keys)";
    results.transaction = replies(
      await r.multi().set("{tx}a", 10).incr("{tx}a").get("{tx}a").exists("{tx}b").exec(),
    );

    step = "scan";
    const found = new Set();
    for (const node of masters) for (const k of await scanAll(node, "pipe:*")) found.add(k);
    results.scan = found.size;

    step = "dbsize";
    let dbsize = 0;
    for (const node of masters) dbsize += await node.dbsize();
    results.dbsize = dbsize;

    step = "info";
    results.info_redis_version = (await r.info("server")).includes("redis_version:");

    if (mode === "plain") {
      step = "info at connect";
      const full = await r.info();
      results.info_at_connect =
        ["redis_version:", "arch_bits:", "cluster_enabled:", "redis_mode:"].every((f) => full.includes(f)) &&
        (await r.info("clients")).includes("blocked_clients:0");

      step = "transactional pipeline across slots";
      try {
        results.cross_slot_tx = replies(await r.multi().set("xs:a", 1).set("xs:b", 2).incr("xs:a").exec());
      } catch (err) {
        results.cross_slot_tx = `refused: ${err.message.split(" ")[0]}`;
      }
    }

    step = "keyspace notifications";
    // Each of alpha, beta and gamma lives on another master; each SET's notification must
    // arrive once, from whichever master ran it.
    const subscriber = r.duplicate();
    const notified = [];
    subscriber.on("pmessage", (_pattern, channel) => notified.push(channel));
    await subscriber.psubscribe("__keyspace@0__:*");
    for (const key of ["alpha", "beta", "gamma"]) await r.set(key, "ks");
    const deadline = Date.now() + 5000;
    while (notified.length < 3 && Date.now() < deadline) await sleep(20);
    await sleep(300); // a duplicate would arrive by now
    results.keyspace = notified.slice().sort();
    subscriber.disconnect();

    step = "close";
    await r.quit();
  } catch (err) {
    Object.assign(out, {
      ok: false,
      step,
      error: `${err.name}: ${err.message}`,
      stack: String(err.stack).split("\n").slice(0, 5).join("\n"),
      handshake,
      results,
    });
    if (r) r.disconnect();
    return out;
  }
  return Object.assign(out, { ok: true, handshake, results });
}

function sorted(value) {
  if (Array.isArray(value)) return value.map(sorted);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, sorted(value[k])]));
  }
  return value;
}

if (process.argv.length !== 5) {
  console.error("usage: node ioredis.js plain|cluster HOST PORT");
  process.exit(2);
}
recordHandshakes();
run(process.argv[2], process.argv[3], Number(process.argv[4])).then((out) => {
  console.log(JSON.stringify(sorted(out)));
  process.exit(out.ok ? 0 : 1);
});
