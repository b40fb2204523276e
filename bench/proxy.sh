#!/usr/bin/env bash
# Proxy benchmark: redis-benchmark against a local Redis Cluster directly (--cluster) and
# through `cinnabar proxy` (one worker), interleaved; prints throughput ratios, p50/p99, the
# proxy's CPU microseconds per request, its peak RSS and the memory of 10,000 idle connections,
# and which of the proxy's targets are met. A benchmark, not a test: exits 0 unless something
# failed to run.
#
#   bash bench/proxy.sh [--quick] [--rounds N] [--masters N] [--replicas N] [--workers N]
#                       [--idle N] [--cinnabar PATH]
#
#   --quick          one round with 40% of the requests (under a minute after the build)
#   --rounds N       rounds of every case (default 3: 3 to 5 minutes on 2 CPUs)
#   --masters N      cluster shards (default 3)
#   --replicas N     replicas per master (default 0; on a small machine they compete for CPU)
#   --workers N      proxy worker threads (default 1, which is what the targets assume)
#   --idle N         idle client connections to open against the proxy (default 10000)
#   --cinnabar PATH  use this cinnabar binary instead of building one (cargo build --release)
#
# Everything listens on 127.0.0.1, on free ports; the cluster lives in a temporary directory
# that is deleted on exit. Needs redis-server, redis-benchmark (redis-tools) and python3.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
quick=0 rounds=0 masters=3 replicas=0 workers=1 idle=10000 bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --rounds) rounds=$2; shift ;;
    --masters) masters=$2; shift ;;
    --replicas) replicas=$2; shift ;;
    --workers) workers=$2; shift ;;
    --idle) idle=$2; shift ;;
    --cinnabar) bin=$2; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

for tool in redis-server redis-benchmark python3 getconf; do
  command -v "$tool" >/dev/null ||
    { echo "bench: $tool not found (bash .ci/setup installs redis)" >&2; exit 1; }
done

# 10,000 idle connections need that many descriptors in the proxy and in the Python client;
# both inherit this shell's limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "open-file limit: $(ulimit -n); CLK_TCK: $(getconf CLK_TCK)"

if [ -z "$bin" ]; then
  echo "building: cargo build --release -p cinnabar"
  (cd "$repo" && cargo build --release -p cinnabar)
  target=$(cd "$repo" && cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  bin="$target/release/cinnabar"
fi
[ -x "$bin" ] || { echo "bench: no cinnabar binary at $bin" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/cinnabar-bench.XXXXXX")
proxy_pid=""
cleanup() {
  local rc=$?
  if [ -n "$proxy_pid" ] && kill -0 "$proxy_pid" 2>/dev/null; then
    kill -INT "$proxy_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$proxy_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$proxy_pid" 2>/dev/null || true
  fi
  if [ $rc -ne 0 ] && [ -s "$work/proxy.err" ]; then
    echo "--- proxy stderr (last lines)" >&2; tail -n 20 "$work/proxy.err" >&2
  fi
  if [ -d "$work/cluster" ] && ! "$bin" down --dir "$work/cluster" --purge >/dev/null 2>&1; then
    echo "bench: cinnabar down --dir $work/cluster --purge failed; left $work for a look" >&2
    exit 1
  fi
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

nodes=$((masters * (1 + replicas)))
ports=$(python3 "$repo/bench/proxy_bench.py" free-ports "$nodes")
read -r port proxy_port <<<"$ports"

echo "starting the cluster: $masters masters x $replicas replicas on 127.0.0.1:$port.."
mkdir -p "$work/cluster"
# --no-proxy: the benchmark compares the nodes themselves with a proxy process of its own (whose
# CPU it reads from /proc), so `up` must not put its built-in proxy on the endpoint.
endpoint=$("$bin" up --detach --no-proxy --dir "$work/cluster" --port "$port" --masters "$masters" \
  --replicas "$replicas" 2>"$work/up.err") || { cat "$work/up.err" >&2; exit 1; }

"$bin" proxy --listen "127.0.0.1:$proxy_port" --seed "$endpoint" --workers "$workers" \
  >"$work/proxy.out" 2>"$work/proxy.err" &
proxy_pid=$!
for _ in $(seq 100); do
  [ -s "$work/proxy.out" ] && break
  kill -0 "$proxy_pid" 2>/dev/null || { echo "bench: the proxy exited" >&2; exit 1; }
  sleep 0.1
done
proxy_addr=$(head -n 1 "$work/proxy.out")
[ -n "$proxy_addr" ] || { echo "bench: the proxy printed no address" >&2; exit 1; }
echo "proxy: $proxy_addr (pid $proxy_pid, $workers worker(s)); cluster: $endpoint"
echo

args=(--direct "$endpoint" --proxy "$proxy_addr" --pid "$proxy_pid" --masters "$masters"
      --replicas "$replicas" --workers "$workers" --rounds "$rounds" --idle "$idle")
[ "$quick" = 1 ] && args+=(--quick)
python3 "$repo/bench/proxy_bench.py" run "${args[@]}"
