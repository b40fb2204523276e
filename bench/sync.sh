#!/usr/bin/env bash
# Sync benchmark (issue 12): `cinnabar sync` from a standalone redis-server into a 3-master Redis
# Cluster, in one run:
#   1. full sync throughput on N mixed keys (strings, some with a TTL, and small hashes, lists,
#      sets and sorted sets): seconds from starting `cinnabar sync` until `sync status --json`
#      shows every source streaming, then `cinnabar sync verify` (0 differences expected);
#      then the target is flushed and `redis-cli --cluster import --cluster-copy
#      --cluster-replace` copies the same data, timed. Keys/s of both and the ratio
#      (target: ours at least 2x). A second sync of the same data into the flushed target is
#      timed too (and is the one that stays running for step 2); the ratio uses the slower sync.
#   2. steady-state lag: with that sync streaming, SETs at --rate per second on the source for
#      --lag-seconds; `sync status --json` sampled every 100 ms (lag_ms, lag_bytes: p50/p99/max;
#      the status document is rewritten every 0.5 s) and a probe key written on the source every
#      100 ms and read back from the target (end-to-end delay). Target: p99 lag_ms < 1 s.
#   3. peak memory: a fresh source holding one hash of --big-mib MiB (1 KiB values) and 10,000
#      small keys, a full sync, the sync's VmHWM from /proc (target: at most 100 MiB).
# It ends with each target as [PASS] or [MISS] and ours against RedisShake's quoted 50-150k
# keys/s. A benchmark, not a test: exits 0 unless something failed to run.
#
#   bash bench/sync.sh [--quick] [--keys N] [--big-mib N] [--rate N] [--lag-seconds N]
#                      [--cinnabar PATH] [--skip-import]
#
#   --quick           100,000 keys, a 64 MiB key, 10 s of writes (about 2 minutes after the build)
#   --keys N          mixed keys to load (default 1,000,000)
#   --big-mib N       size of the big hash in MiB (default 512)
#   --rate N          writes per second on the source during the lag test (default 50000)
#   --lag-seconds N   how long the write load runs (default 20)
#   --cinnabar PATH   use this cinnabar binary instead of building one
#   --skip-import     do not run redis-cli --cluster import (no ratio)
#
# Everything listens on 127.0.0.1, on free ports; the source's and the cluster's data and the
# sync state directories live in a temporary directory that is deleted on exit. The target
# cluster comes from `cinnabar up --no-proxy` (its nodes keep an AOF, everysec, as in use); the
# source runs without persistence and with repl-diskless-sync-delay 0 (Redis 7's default of 5 s
# would add 5 s to every full sync). Needs redis-server, redis-cli (redis-tools) and python3.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
keys=1000000 big_mib=512 rate=50000 lag_seconds=20 bin="" skip_import=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) keys=100000 big_mib=64 lag_seconds=10 ;;
    --keys) keys=$2; shift ;;
    --big-mib) big_mib=$2; shift ;;
    --rate) rate=$2; shift ;;
    --lag-seconds) lag_seconds=$2; shift ;;
    --cinnabar) bin=$2; shift ;;
    --skip-import) skip_import=1 ;;
    -h|--help) sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

for tool in redis-server redis-cli python3; do
  command -v "$tool" >/dev/null ||
    { echo "bench: $tool not found (bash .ci/setup installs redis)" >&2; exit 1; }
done
helper="$repo/bench/sync_bench.py"

. "$repo/bench/lib.sh"
[ -n "$bin" ] || bin=$(build_cinnabar release)
[ -x "$bin" ] || { echo "bench: no cinnabar binary at $bin" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/cinnabar-syncbench.XXXXXX")
source_pid="" sync_pid=""
# stop PID: SIGTERM to a process this script started, up to 30 s to finish, then SIGKILL.
stop() {
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 0
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  trap '' INT TERM
  stop "$sync_pid"
  stop "$source_pid"
  if [ $rc -ne 0 ]; then
    for f in "$work"/sync*.err "$work/source.log" "$work/import.out"; do
      [ -s "$f" ] || continue
      echo "--- $(basename "$f") (last lines)" >&2; tail -n 15 "$f" >&2
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

now() { date +%s.%N; }
# calc EXPR: floating-point arithmetic (awk), e.g. calc '1/3' -> 0.333
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }
# thousands N: 1234567 -> 1,234,567
thousands() { printf "%.0f" "$1" | sed ':a; s/\B[0-9]\{3\}\>/,&/; ta'; }

read -r port source_port <<<"$(python3 "$helper" free-ports 3)"
source_addr="127.0.0.1:$source_port"
mkdir -p "$work/source"
redis-server --bind 127.0.0.1 --port "$source_port" --dir "$work/source" --save "" \
  --appendonly no --repl-diskless-sync-delay 0 --logfile "$work/source.log" &
source_pid=$!
for i in $(seq 100); do
  redis-cli -p "$source_port" ping >/dev/null 2>&1 && break
  [ "$i" = 100 ] && { echo "bench: the source redis-server did not start" >&2; exit 1; }
  sleep 0.1
done

echo "starting the target: 3 masters, no replicas, on 127.0.0.1:$port.."
mkdir -p "$work/cluster"
target=$("$bin" up --detach --no-proxy --dir "$work/cluster" --port "$port" --masters 3 --maxmemory 2gb \
  --replicas 0 2>"$work/up.err") || { cat "$work/up.err" >&2; exit 1; }
masters=$(redis-cli -p "$port" cluster nodes | awk '$3 ~ /master/ { split($2, a, "@"); print a[1] }')
echo "source: $source_addr (redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'));" \
  "target: $target (masters: $(echo $masters))"

target_keys() {
  local total=0 m
  for m in $masters; do total=$((total + $(redis-cli -h "${m%:*}" -p "${m##*:}" dbsize))); done
  echo "$total"
}
flush_target() {
  local m
  for m in $masters; do redis-cli -h "${m%:*}" -p "${m##*:}" flushall >/dev/null; done
}
# load GENERATOR-ARGS...: pipes the helper's RESP into the source (redis-cli --pipe).
load() {
  local out
  out=$(python3 "$helper" "$@" | redis-cli -p "$source_port" --pipe 2>&1) ||
    { echo "$out" >&2; echo "bench: loading failed" >&2; exit 1; }
  grep -q 'errors: 0' <<<"$out" || { echo "$out" >&2; echo "bench: loading failed" >&2; exit 1; }
}

# start_sync NAME: starts `cinnabar sync` with state in $work/NAME; sets sync_pid, sync_start.
start_sync() {
  sync_start=$(now)
  "$bin" sync --from "$source_addr" --to "$target" --state "$work/$1" 2>"$work/$1.err" &
  sync_pid=$!
}
# wait_sync NAME: prints "seconds peak_rss_kib keys" once every source streams.
wait_sync() {
  python3 "$helper" wait-streaming --cinnabar "$bin" --state "$work/$1" --pid "$sync_pid" \
    --since "$sync_start"
}
stop_sync() {
  kill -TERM "$sync_pid"
  local rc=0
  wait "$sync_pid" || rc=$?
  sync_pid=""
  [ $rc = 0 ] || { echo "bench: cinnabar sync exited with $rc on SIGTERM" >&2; exit 1; }
}
verify() {
  local out rc=0 t0
  t0=$(now)
  out=$("$bin" sync verify --from "$source_addr" --to "$target" --max-reported 5) || rc=$?
  echo "  verify: $(tail -n 1 <<<"$out") ($(calc "$(now) - $t0") s)"
  [ $rc = 0 ] || { echo "$out" | head -n 6 | sed 's/^/    /'; verify_failed=1; }
}
verify_failed=0

# --- 1. full sync throughput
echo
echo "== 1. full sync: $(thousands "$keys") mixed keys"
t0=$(now)
load mixed "$keys"
loaded=$(redis-cli -p "$source_port" dbsize)
echo "  loaded $(thousands "$loaded") keys in $(calc "$(now) - $t0") s" \
  "(source used_memory: $(redis-cli -p "$source_port" info memory |
     awk -F: '/^used_memory_human/ { sub(/\r/, "", $2); print $2 }'))"

start_sync sync1
waited=$(wait_sync sync1)
read -r sync1_s sync1_rss sync1_applied <<<"$waited"
sync1_keys=$(target_keys)
echo "  cinnabar sync (into an empty cluster): $sync1_s s to streaming," \
  "$(thousands "$(calc "$loaded / $sync1_s")") keys/s; target holds $(thousands "$sync1_keys")" \
  "keys; peak RSS $((sync1_rss / 1024)) MiB"
verify
stop_sync

import_s="" import_keys=""
if [ "$skip_import" = 0 ]; then
  flush_target
  t0=$(now)
  redis-cli --cluster import "$target" --cluster-from "$source_addr" --cluster-copy \
    --cluster-replace >"$work/import.out" 2>&1 ||
    { echo "bench: redis-cli --cluster import failed" >&2; exit 1; }
  import_s=$(calc "$(now) - $t0")
  import_keys=$(target_keys)
  echo "  redis-cli --cluster import --cluster-copy --cluster-replace: $import_s s," \
    "$(thousands "$(calc "$loaded / $import_s")") keys/s; target holds" \
    "$(thousands "$import_keys") keys"
fi

flush_target
start_sync sync2
waited=$(wait_sync sync2)
read -r sync2_s sync2_rss sync2_applied <<<"$waited"
sync2_keys=$(target_keys)
echo "  cinnabar sync again (into the flushed cluster): $sync2_s s to streaming," \
  "$(thousands "$(calc "$loaded / $sync2_s")") keys/s; target holds $(thousands "$sync2_keys")" \
  "keys; peak RSS $((sync2_rss / 1024)) MiB"
sync_slow=$(awk -v a="$sync1_s" -v b="$sync2_s" 'BEGIN { print (a > b) ? a : b }')
ours_kps=$(calc "$loaded / $sync_slow")
ratio=""
if [ -n "$import_s" ]; then
  ratio=$(calc "$import_s / $sync_slow")
  echo "  throughput: ours $(thousands "$ours_kps") keys/s (the slower of the two syncs)," \
    "redis-cli $(thousands "$(calc "$loaded / $import_s")") keys/s: ${ratio}x (target >= 2x)"
fi
[ "$sync1_keys" = "$loaded" ] && [ "$sync2_keys" = "$loaded" ] ||
  echo "  NOTE: the target's key count differs from the source's ($loaded)"

# --- 2. steady-state lag
echo
echo "== 2. steady-state lag: $(thousands "$rate") SET/s on the source for $lag_seconds s"
lag_json=$(python3 "$helper" lag --cinnabar "$bin" --state "$work/sync2" --source "$source_addr" \
  --target "$target" --rate "$rate" --seconds "$lag_seconds" --keys 100000)
read -r lag_rate lag_p50 lag_p99 lag_max b50 b99 bmax p50 p99 pmax samples probes lost caught \
  <<<"$(python3 -c '
import json, sys
d = json.loads(sys.argv[1])
c = d["caught_up_s"]
print("%.0f" % d["rate"], *("%.0f" % x for x in d["lag_ms"] + d["lag_bytes"] + d["probe_ms"]),
      d["samples"], d["probes"], d["probe_lost"], "none" if c is None else "%.1f" % c)' "$lag_json")"
echo "  achieved write rate: $(thousands "$lag_rate") SET/s"
echo "  lag_ms    (sync status, $samples samples): p50 $lag_p50  p99 $lag_p99  max $lag_max"
echo "  lag_bytes (sync status):                p50 $b50  p99 $b99  max $bmax"
echo "  end-to-end probe, ms ($probes probes, $lost never seen within 10 s):" \
  "p50 $p50  p99 $p99  max $pmax"
echo "  caught up (lag_bytes 0) $caught s after the writes stopped"
stop_sync

# --- 3. peak RSS with a big key
echo
echo "== 3. peak memory: one hash of $big_mib MiB (1 KiB values) and 10,000 small keys"
redis-cli -p "$source_port" flushall >/dev/null
flush_target
t0=$(now)
load big "$big_mib" 10000
echo "  loaded in $(calc "$(now) - $t0") s (source used_memory:" \
  "$(redis-cli -p "$source_port" info memory |
     awk -F: '/^used_memory_human/ { sub(/\r/, "", $2); print $2 }'))"
start_sync sync3
waited=$(wait_sync sync3)
read -r sync3_s sync3_rss _ <<<"$waited"
# VmHWM is the peak over the process's life: read once more now that the copy is done.
hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$sync_pid/status" 2>/dev/null || echo 0)
[ -n "$hwm" ] && [ "$hwm" -gt "$sync3_rss" ] && sync3_rss=$hwm
big_len=$(redis-cli -c -h "${target%:*}" -p "${target##*:}" hlen big)
echo "  cinnabar sync: $sync3_s s to streaming; target's big hash has $(thousands "$big_len")" \
  "fields (source: $(thousands $((big_mib * 1024))))"
echo "  peak RSS of the sync (VmHWM): $(calc "$sync3_rss / 1024") MiB (target <= 100 MiB)"
verify
stop_sync

# --- summary
echo
echo "== summary ($(thousands "$keys") keys, $big_mib MiB key, $(nproc) CPUs)"
verdict() { if awk "BEGIN { exit !($1) }"; then echo "[PASS]"; else echo "[MISS]"; fi; }
if [ -n "$ratio" ]; then
  echo "$(verdict "$ratio >= 2") full sync ${ratio}x redis-cli --cluster import" \
    "($(thousands "$ours_kps") vs $(thousands "$(calc "$loaded / $import_s")") keys/s; target >= 2x)"
else
  echo "[----] full sync $(thousands "$ours_kps") keys/s (redis-cli import skipped)"
fi
echo "$(verdict "$lag_p99 < 1000 && $lost == 0") p99 lag ${lag_p99} ms at" \
  "$(thousands "$lag_rate") writes/s (probe p99 ${p99} ms; target < 1000 ms)"
echo "$(verdict "$sync3_rss <= 102400") peak RSS $(calc "$sync3_rss / 1024") MiB with a" \
  "$big_mib MiB key (target <= 100 MiB)"
if [ "$verify_failed" = 0 ]; then
  echo "[PASS] cinnabar sync verify: 0 differences after each checked sync"
else
  echo "[MISS] cinnabar sync verify found differences (above)"
fi
echo "RedisShake quotes 50,000-150,000 keys/s as typical; ours: $(thousands "$ours_kps") keys/s" \
  "($(calc "$ours_kps / 50000")x the low end, $(calc "$ours_kps / 150000")x the high end) on" \
  "$(nproc) shared CPUs with source, target and sync on one machine"
