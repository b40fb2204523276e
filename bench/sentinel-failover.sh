#!/usr/bin/env bash
# Sentinel failover benchmark: the same Sentinel group (a master, 2 replicas, 3 Sentinels, all with
# a password) behind cinnabar's group backend and behind HAProxy with the seed's role check
# (tcp-check AUTH, PING, `info replication`, expect `role:master`, inter 1s), measured in one run:
# a writer through each endpoint (acknowledged SETs of unique keys, 2 connections each, failed
# attempts retried every 100 ms), kill -9 of the master (not restarted), then per endpoint the
# client-visible errors, the time from the kill until writes succeed again, the longest a write
# waited, and the acknowledged writes lost (read back through the endpoint). Prints one table per
# round. A benchmark, not a test: exits 0 unless something failed to run.
#
#   bash bench/sentinel-failover.sh [--rounds N] [--down-after MS] [--cinnabar PATH]
#
#   --rounds N        rounds (default 1), each on a new group
#   --down-after MS   Sentinel down-after-milliseconds (default 5000, as `cinnabar up`)
#   --cinnabar PATH   use this cinnabar binary instead of building one (cargo build --release)
#
# Everything listens on 127.0.0.1, on free ports, in a temporary directory deleted on exit. Needs
# redis-server (Sentinel mode included), haproxy and python3 (no Python packages).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
rounds=1 down_after=5000 bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift ;;
    --down-after) down_after=$2; shift ;;
    --cinnabar) bin=$2; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for tool in redis-server haproxy python3; do
  command -v "$tool" >/dev/null ||
    { echo "bench: $tool not found (bash .ci/setup installs redis-server and haproxy)" >&2; exit 1; }
done
. "$repo/bench/lib.sh"
[ -n "$bin" ] || bin=$(build_cinnabar release)
[ -x "$bin" ] || { echo "bench: no cinnabar binary at $bin" >&2; exit 1; }
exec python3 "$repo/bench/sentinel_failover.py" --cinnabar "$bin" --rounds "$rounds" \
  --down-after "$down_after"
