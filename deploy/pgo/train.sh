#!/usr/bin/env bash
# The training load for the profile-guided build (deploy/pgo/build.sh): a local 3-master
# cluster, one cinnabar proxy in front of it and one more with a user and an audit file, and
# redis-benchmark through both with the shapes the proxy benchmark measures (bench/proxy.sh):
# unpipelined and pipelined SET/GET from 50 clients, 10-key MSET and MGET split across slots,
# 500 clients, one client, and a few other data types. About a minute with an instrumented
# binary.
#
#   bash deploy/pgo/train.sh [--quick] BIN
#
# BIN is any cinnabar binary: build.sh gives the instrumented one, whose counts land where its
# build said. CI runs this script with `--quick` (a twentieth of the requests) on the test build,
# so a change to the flags it uses fails there and not first in an image build. Fails if a load
# does not run through the proxy: a profile of error replies would teach the compiler the wrong
# paths.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
scale=1
if [ "${1:-}" = "--quick" ]; then
  scale=20
  shift
fi
bin=${1:?usage: train.sh [--quick] BIN}
[ -x "$bin" ] || { echo "pgo train: no cinnabar binary at $bin" >&2; exit 1; }
for tool in redis-server redis-benchmark redis-cli python3; do
  command -v "$tool" >/dev/null || { echo "pgo train: $tool not found" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/cinnabar-pgo-train.XXXXXX")
proxy_pid="" access_pid=""
cleanup() {
  local rc=$?
  for pid in $proxy_pid $access_pid; do kill "$pid" 2>/dev/null || true; done
  "$bin" down --dir "$work/cluster" --purge >/dev/null 2>&1 || true
  if [ $rc -ne 0 ]; then
    for log in "$work"/*.err; do [ -s "$log" ] && { echo "--- $log" >&2; tail -n 20 "$log" >&2; }; done
  fi
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r port proxy_port access_port < <(python3 "$repo/bench/proxy_bench.py" free-ports 3 --extra 2)
endpoint=$("$bin" up --detach --no-proxy --dir "$work/cluster" --port "$port" --masters 3 \
  --replicas 0 2>"$work/up.err")
password=$(python3 "$repo/bench/proxy_bench.py" access-settings "$work/access.toml" \
  --audit "$work/audit.jsonl")
"$bin" proxy --listen "127.0.0.1:$proxy_port" --seed "$endpoint" --workers 1 \
  >"$work/proxy.out" 2>"$work/proxy.err" &
proxy_pid=$!
"$bin" proxy --config "$work/access.toml" --listen "127.0.0.1:$access_port" --seed "$endpoint" \
  --workers 1 >"$work/access.out" 2>"$work/access.err" &
access_pid=$!
for p in "$proxy_port" "$access_port"; do
  for _ in $(seq 100); do
    redis-cli -p "$p" --no-auth-warning PING 2>/dev/null | grep -q -e PONG -e NOAUTH && break
    sleep 0.1
  done
done

# One load: a request count, then redis-benchmark's other arguments; fails unless it reports a
# rate.
load() {
  local requests=$(($1 / scale)) out
  shift
  out=$(redis-benchmark -q -r 100000 -n "$requests" "$@" 2>&1 | tr '\r' '\n') || true
  if ! grep -q "requests per second" <<<"$out" || grep -qi -e "error" -e "noauth" <<<"$out"; then
    echo "pgo train: redis-benchmark $* did not run through the proxy:" >&2
    tail -n 5 <<<"$out" >&2
    return 1
  fi
}
mset="MSET k0:__rand_int__ v k1:__rand_int__ v k2:__rand_int__ v k3:__rand_int__ v k4:__rand_int__ v"
mset="$mset k5:__rand_int__ v k6:__rand_int__ v k7:__rand_int__ v k8:__rand_int__ v k9:__rand_int__ v"
mget="MGET k0:__rand_int__ k1:__rand_int__ k2:__rand_int__ k3:__rand_int__ k4:__rand_int__"

plain=(-p "$proxy_port")
load 100000 "${plain[@]}" -c 50 -d 100 -t set,get
load 200000 "${plain[@]}" -c 50 -d 100 -P 16 -t set,get
load 30000 "${plain[@]}" -c 50 $mset
load 30000 "${plain[@]}" -c 50 $mget
load 50000 "${plain[@]}" -c 500 -t get
load 5000 "${plain[@]}" -c 1 -t set,get
load 20000 "${plain[@]}" -c 50 -t incr,lpush,rpop,hset,sadd,lrange_100

access=(-p "$access_port" --user bench -a "$password")
load 50000 "${access[@]}" -c 50 -d 100 -t set,get
load 100000 "${access[@]}" -c 50 -d 100 -P 16 -t set,get
load 20000 "${access[@]}" -c 50 $mset

# A clean exit, or the instrumented binary writes no counts.
for pid in $proxy_pid $access_pid; do
  kill -TERM "$pid"
  wait "$pid" || { echo "pgo train: a proxy exited with status $?" >&2; exit 1; }
done
proxy_pid="" access_pid=""
echo "pgo train: done ($endpoint)" >&2
