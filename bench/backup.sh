#!/usr/bin/env bash
# Backup and restore benchmark (issue 14), in one run on N mixed keys (bench/sync_bench.py's
# data set: strings, some with a TTL, and small hashes, lists, sets and sorted sets):
#   1. backup: `cinnabar backup` of a 3-master, 3-replica local cluster to a store, against the
#      usual way: `redis-cli --rdb` from each replica (three in parallel) and then an upload of
#      the files (a copy for file://; `curl --aws-sigv4` PUTs for S3). MB/s and keys/s of both.
#   2. restore: `cinnabar restore` into an empty 3-master cluster, against loading the same data
#      with `redis-cli --pipe` through a Cinnabar endpoint into another empty 3-master cluster
#      (the way people load a cluster without writing a slot-aware loader). Keys/s of both and
#      the ratio; target: restore at least 2x the --pipe load.
# Both stores when s3s-fs is found (see .ci/setup): file:// and a local S3 server. A benchmark,
# not a test: exits 0 unless something failed to run.
#
#   bash bench/backup.sh [--quick] [--keys N] [--cinnabar PATH] [--s3s-fs PATH]
#
#   --quick           100,000 keys (under a minute after the build)
#   --keys N          mixed keys to load (default 1,000,000)
#   --cinnabar PATH   use this cinnabar binary instead of building one
#   --s3s-fs PATH     the S3 server (default: <target dir>/tools/bin/s3s-fs, then the PATH)
#
# Everything listens on 127.0.0.1, on free ports, and lives in a temporary directory deleted on
# exit. Needs redis-server, redis-cli (redis-tools), curl and python3.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
keys=1000000 bin="" s3s=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) keys=100000 ;;
    --keys) keys=$2; shift ;;
    --cinnabar) bin=$2; shift ;;
    --s3s-fs) s3s=$2; shift ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

for tool in redis-server redis-cli curl python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool not found" >&2; exit 1; }
done
helper="$repo/bench/sync_bench.py"
. "$repo/bench/lib.sh"
target_dir=$(cargo_target_dir)
[ -n "$bin" ] || bin=$(build_cinnabar release)
[ -x "$bin" ] || { echo "bench: no cinnabar binary at $bin" >&2; exit 1; }
if [ -z "$s3s" ]; then
  s3s="$target_dir/tools/bin/s3s-fs"
  [ -x "$s3s" ] || s3s=$(command -v s3s-fs || true)
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/cinnabar-backupbench.XXXXXX")
s3_pid=""
cleanup() {
  for d in a b c; do [ -d "$work/$d" ] && "$bin" down --dir "$work/$d" --purge >/dev/null 2>&1 || true; done
  [ -n "$s3_pid" ] && kill "$s3_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

read -r base s3_port < <(python3 "$helper" free-ports 16)
pa=$base pb=$((base + 7)) pc=$((base + 11))
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$(now)"; }
ratio() { python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f'{a / b:.2f}' if b else 'n/a')" "$1" "$2"; }
rate() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):,.0f}')" "$1" "$2"; }
mbps() { python3 -c "import sys; print(f'{float(sys.argv[1]) / 1e6 / float(sys.argv[2]):.1f}')" "$1" "$2"; }

echo "cluster a: 3 masters + 3 replicas on $pa; loading $keys mixed keys through its endpoint"
"$bin" up --detach --dir "$work/a" --port "$pa" --masters 3 --replicas 1 --maxmemory 1gb >/dev/null 2>&1
python3 "$helper" mixed "$keys" > "$work/data.resp"
redis-cli -p "$pa" --pipe < "$work/data.resp" >/dev/null
sleep 2
mapfile -t replicas < <("$bin" status --dir "$work/a" --json |
  python3 -c 'import json, sys; [print(n["address"]) for n in json.load(sys.stdin)["nodes"] if n["role"] == "replica"]')

s3_env=()
stores=("file://$work/store")
if [ -n "$s3s" ] && [ -x "$s3s" ]; then
  mkdir -p "$work/s3/bench"
  "$s3s" --host 127.0.0.1 --port "$s3_port" --access-key benchkey --secret-key benchsecret "$work/s3" \
    >"$work/s3.log" 2>&1 &
  s3_pid=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$s3_port/" && break; sleep 0.05; done
  s3_env=(AWS_ENDPOINT_URL="http://127.0.0.1:$s3_port" AWS_ACCESS_KEY_ID=benchkey AWS_SECRET_ACCESS_KEY=benchsecret)
  stores+=("s3://bench/redis")
else
  echo "(no s3s-fs: file:// only; bash .ci/setup installs it)"
fi

# upload STORE FILE...: the baseline's upload of RDB files taken by redis-cli --rdb.
upload() {
  local store=$1; shift
  case "$store" in
    file://*) mkdir -p "${store#file://}/baseline" && cp "$@" "${store#file://}/baseline/" ;;
    s3://*)
      local pids=()
      for f in "$@"; do
        curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user benchkey:benchsecret \
          -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -T "$f" \
          "http://127.0.0.1:$s3_port/bench/baseline/$(basename "$f")" & pids+=($!)
      done
      for p in "${pids[@]}"; do wait "$p"; done ;;
  esac
}

declare -A backup_s baseline_s
bytes=0
for store in "${stores[@]}"; do
  t=$(now)
  env "${s3_env[@]}" "$bin" backup --dir "$work/a" --to "$store" --json > "$work/manifest.json"
  backup_s[$store]=$(since "$t")
  bytes=$(python3 -c 'import json, sys; print(sum(s["bytes"] for s in json.load(open(sys.argv[1]))["shards"]))' "$work/manifest.json")
  t=$(now)
  pids=() files=()
  for r in "${replicas[@]}"; do
    f="$work/rdb-${r##*:}.rdb"; files+=("$f")
    redis-cli -h "${r%:*}" -p "${r##*:}" --rdb "$f" >/dev/null 2>&1 & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  upload "$store" "${files[@]}"
  baseline_s[$store]=$(since "$t")
  rm -f "${files[@]}"
done

echo "cluster b: 3 empty masters on $pb (restore); cluster c: 3 empty masters on $pc (--pipe)"
"$bin" up --detach --dir "$work/b" --port "$pb" --masters 3 --replicas 0 --maxmemory 1gb >/dev/null 2>&1
"$bin" up --detach --dir "$work/c" --port "$pc" --masters 3 --replicas 0 --maxmemory 1gb >/dev/null 2>&1
declare -A restore_s
for store in "${stores[@]}"; do
  t=$(now)
  env "${s3_env[@]}" "$bin" restore --from "$store" --to "127.0.0.1:$((pb + 1))" --force --json > "$work/restore.json"
  restore_s[$store]=$(since "$t")
  restored=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["keys"])' "$work/restore.json")
  [ "$restored" = "$keys" ] || echo "WARNING: restored $restored keys of $keys"
done
t=$(now)
redis-cli -p "$pc" --pipe < "$work/data.resp" >/dev/null
pipe_s=$(since "$t")

echo
echo "keys: $keys, RDB bytes over 3 shards: $bytes"
printf '%-22s %10s %12s %12s\n' "step" "seconds" "MB/s" "keys/s"
for store in "${stores[@]}"; do
  kind=${store%%:*}
  printf '%-22s %10s %12s %12s\n' "backup ($kind)" "${backup_s[$store]}" "$(mbps "$bytes" "${backup_s[$store]}")" "$(rate "$keys" "${backup_s[$store]}")"
  printf '%-22s %10s %12s %12s\n' "--rdb + upload ($kind)" "${baseline_s[$store]}" "$(mbps "$bytes" "${baseline_s[$store]}")" "$(rate "$keys" "${baseline_s[$store]}")"
  printf '%-22s %10s %12s %12s\n' "restore ($kind)" "${restore_s[$store]}" "$(mbps "$bytes" "${restore_s[$store]}")" "$(rate "$keys" "${restore_s[$store]}")"
done
printf '%-22s %10s %12s %12s\n' "redis-cli --pipe" "$pipe_s" "-" "$(rate "$keys" "$pipe_s")"
echo
for store in "${stores[@]}"; do
  kind=${store%%:*}
  r=$(ratio "$pipe_s" "${restore_s[$store]}")
  verdict=$(python3 -c "import sys; print('PASS' if float(sys.argv[1]) >= 2 else 'MISS')" "$r")
  echo "[$verdict] restore ($kind) is ${r}x redis-cli --pipe (target >= 2x)"
  echo "       backup ($kind) takes $(ratio "${backup_s[$store]}" "${baseline_s[$store]}")x the time of redis-cli --rdb + upload"
done
