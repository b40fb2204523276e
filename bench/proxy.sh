#!/usr/bin/env bash
# Proxy benchmark: redis-benchmark against a local Redis Cluster directly (--cluster) and
# through `cinnabar proxy` (one worker), interleaved; prints throughput ratios, p50/p99, the
# proxy's CPU microseconds per request, its peak RSS and the memory of 10,000 idle connections,
# and which of the proxy's targets are met. With --predixy, Predixy (one worker thread) runs in
# the same rotation and gets columns and a cinnabar-vs-predixy line per case. With --access, a
# second cinnabar proxy with a user, a key-limited role and a file audit trail runs in the same
# rotation and is compared with the first (no users). A benchmark, not a test: exits 0 unless
# something failed to run.
#
#   bash bench/proxy.sh [--quick] [--rounds N] [--masters N] [--replicas N] [--workers N]
#                       [--idle N] [--cinnabar PATH] [--predixy PATH] [--access]
#
#   --quick          one round with 40% of the requests (under a minute after the build)
#   --rounds N       rounds of every case (default 3: 3 to 5 minutes on 2 CPUs)
#   --masters N      cluster shards (default 3)
#   --replicas N     replicas per master (default 0; on a small machine they compete for CPU)
#   --workers N      proxy worker threads (default 1, which is what the targets assume)
#   --idle N         idle client connections to open against the proxy (default 10000)
#   --cinnabar PATH  use this cinnabar binary instead of building the one that ships
#                    (bash deploy/pgo/build.sh, as the Dockerfile builds it: ~30 minutes)
#   --predixy PATH   also benchmark this Predixy binary (or set PREDIXY=PATH); it is not part of
#                    the repository, see README.md for building one
#   --access         also benchmark a cinnabar proxy with access control and audit: user `bench`
#                    (AUTH with a random password) whose role is readwrite limited to the bench's
#                    keys, and [audit] written to a file; prints its CPU/request and throughput
#                    relative to the proxy without users (target: CPU at most 1.05 times)
#
# Everything listens on 127.0.0.1, on free ports; the cluster (and Predixy's config and log, and
# the access proxy's settings file and audit trail) lives in a temporary directory that is
# deleted on exit. Needs redis-server, redis-benchmark (redis-tools) and python3.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
quick=0 rounds=0 masters=3 replicas=0 workers=1 idle=10000 bin="" predixy=${PREDIXY:-} access=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --rounds) rounds=$2; shift ;;
    --masters) masters=$2; shift ;;
    --replicas) replicas=$2; shift ;;
    --workers) workers=$2; shift ;;
    --idle) idle=$2; shift ;;
    --cinnabar) bin=$2; shift ;;
    --predixy) predixy=$2; shift ;;
    --access) access=1 ;;
    -h|--help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

for tool in redis-server redis-benchmark python3 getconf setsid; do
  command -v "$tool" >/dev/null ||
    { echo "bench: $tool not found (bash .ci/setup installs redis)" >&2; exit 1; }
done
if [ -n "$predixy" ]; then
  [ -f "$predixy" ] && [ -x "$predixy" ] ||
    { echo "bench: no predixy binary at $predixy (README.md says how to build one)" >&2; exit 1; }
  predixy=$(cd "$(dirname "$predixy")" && pwd)/$(basename "$predixy")
fi

# 10,000 idle connections need that many descriptors in the proxy and in the Python client;
# both inherit this shell's limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "open-file limit: $(ulimit -n); CLK_TCK: $(getconf CLK_TCK)"

. "$repo/bench/lib.sh"
[ -n "$bin" ] || bin=$(build_cinnabar ships)
[ -x "$bin" ] || { echo "bench: no cinnabar binary at $bin" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/cinnabar-bench.XXXXXX")
proxy_pid="" predixy_pid="" access_pid="" bench_pid=""
# stop PID SIGNAL: sends SIGNAL to a process this script started, waits up to 5 s, then SIGKILL.
stop() {
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 0
  kill "-$2" "$1" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  trap '' INT TERM  # a second Ctrl-C must not cut the clean-up short
  if [ -n "$bench_pid" ] && kill -0 "$bench_pid" 2>/dev/null; then
    # The measuring script leads a process group of its own (setsid): end it with its
    # redis-benchmark children.
    kill -TERM -- "-$bench_pid" 2>/dev/null || kill -TERM "$bench_pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$bench_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$bench_pid" 2>/dev/null || true
    wait "$bench_pid" 2>/dev/null || true
  fi
  stop "$proxy_pid" INT
  stop "$access_pid" INT
  stop "$predixy_pid" TERM  # predixy quits within about a second of SIGTERM
  if [ $rc -ne 0 ] && [ -s "$work/proxy.err" ]; then
    echo "--- proxy stderr (last lines)" >&2; tail -n 20 "$work/proxy.err" >&2
  fi
  if [ $rc -ne 0 ] && [ -s "$work/access.err" ]; then
    echo "--- access proxy stderr (last lines)" >&2; tail -n 20 "$work/access.err" >&2
  fi
  if [ $rc -ne 0 ] && [ -n "$predixy" ]; then
    for f in predixy.out predixy.log; do
      if [ -s "$work/$f" ]; then
        echo "--- predixy $f (last lines)" >&2; tail -n 20 "$work/$f" >&2
      fi
    done
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
extra=1
[ -n "$predixy" ] && extra=$((extra + 1))
[ "$access" = 1 ] && extra=$((extra + 1))
ports=$(python3 "$repo/bench/proxy_bench.py" free-ports "$nodes" --extra "$extra")
read -r port proxy_port more_ports <<<"$ports"
predixy_port="" access_port=""
[ -n "$predixy" ] && read -r predixy_port more_ports <<<"$more_ports"
[ "$access" = 1 ] && read -r access_port more_ports <<<"$more_ports"

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

if [ "$access" = 1 ]; then
  # The settings file: one user with a custom role (readwrite on the bench's keys only) and the
  # audit trail going to a file; proxy_bench.py writes it (the password's SHA-256 in the file)
  # and prints the password. --listen, --seed and --workers override the file, as for the other
  # proxy.
  access_password=$(python3 "$repo/bench/proxy_bench.py" access-settings "$work/access.toml" \
    --audit "$work/audit.jsonl")
  "$bin" proxy --config "$work/access.toml" --listen "127.0.0.1:$access_port" --seed "$endpoint" \
    --workers "$workers" >"$work/access.out" 2>"$work/access.err" &
  access_pid=$!
  for _ in $(seq 100); do
    [ -s "$work/access.out" ] && break
    kill -0 "$access_pid" 2>/dev/null || { echo "bench: the access proxy exited" >&2; exit 1; }
    sleep 0.1
  done
  access_addr=$(head -n 1 "$work/access.out")
  [ -n "$access_addr" ] || { echo "bench: the access proxy printed no address" >&2; exit 1; }
  echo "access proxy: $access_addr (pid $access_pid, $workers worker(s)); user bench, audit to" \
    "$work/audit.jsonl"
fi

if [ -n "$predixy" ]; then
  # Set up as the proxy it is compared with: one worker thread, reads from masters (see
  # predixy_config in proxy_bench.py).
  python3 "$repo/bench/proxy_bench.py" predixy-config "$work/predixy.conf" --port "$predixy_port" \
    --seed "$endpoint" --log "$work/predixy.log"
  "$predixy" "$work/predixy.conf" >"$work/predixy.out" 2>&1 &
  predixy_pid=$!
  for i in $(seq 100); do
    kill -0 "$predixy_pid" 2>/dev/null || { echo "bench: predixy exited" >&2; exit 1; }
    (exec 3<>"/dev/tcp/127.0.0.1/$predixy_port") 2>/dev/null && break
    [ "$i" = 100 ] && { echo "bench: predixy is not listening on $predixy_port" >&2; exit 1; }
    sleep 0.1
  done
  echo "predixy: 127.0.0.1:$predixy_port (pid $predixy_pid, 1 worker thread): $predixy"
fi
echo

args=(--direct "$endpoint" --proxy "$proxy_addr" --pid "$proxy_pid" --masters "$masters"
      --replicas "$replicas" --workers "$workers" --rounds "$rounds" --idle "$idle")
[ "$quick" = 1 ] && args+=(--quick)
[ -n "$predixy" ] && args+=(--predixy "127.0.0.1:$predixy_port" --predixy-pid "$predixy_pid")
# The password goes through the environment, not the measuring script's command line.
[ "$access" = 1 ] && args+=(--access "$access_addr" --access-pid "$access_pid"
                            --access-audit "$work/audit.jsonl")
# In the background and in a session of its own, so that a signal to this script runs the trap at
# once (bash defers traps while a foreground command runs) and the clean-up can end the
# measuring script and its redis-benchmark children as one process group. A background child
# of a non-interactive shell leads no group, so setsid runs python3 in place ($! is its pid).
BENCH_ACCESS_PASSWORD=${access_password:-} \
  setsid python3 "$repo/bench/proxy_bench.py" run "${args[@]}" &
bench_pid=$!
wait "$bench_pid"
