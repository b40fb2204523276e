#!/usr/bin/env bash
# The proxy's own work per request, counted rather than timed: each proxy runs under valgrind's
# callgrind (with its cache simulator) in front of a local Redis Cluster, redis-benchmark sends
# the same load through it, and the script prints user-space instructions, simulated L1
# data-cache misses and simulated misses of a 512 KiB second-level cache per request, for
# Cinnabar and (with --predixy) for Predixy in the same run.
#
#   bash bench/proxy-instructions.sh [--cinnabar PATH] [--predixy PATH] [-n N]
#
#   --cinnabar PATH  use this cinnabar binary instead of building the one that ships
#                    (bash deploy/pgo/build.sh, as the Dockerfile builds it: ~30 minutes)
#   --predixy PATH   also count this Predixy binary (or set PREDIXY=PATH; README.md says how to
#                    build one)
#   -n N             requests per case (default 20000; each case first sends 5000 to warm up)
#
# Why: on a small VM the CPU time `bench/proxy.sh` reads from /proc moves by about 12 % between
# runs of the same binary, which hides most changes to the proxy's own code. Both proxies make
# the same system calls per request, so the kernel's part is a floor they share; what differs
# is the user-space part, and these counts are the same to within a fraction of a percent from
# run to run. They are not a speed: under valgrind a proxy runs some 50 times slower, so more
# requests arrive per wake-up than in a real run, and the counts leave out the kernel. Compare
# the two proxies (and two builds) with each other, not with `bench/proxy.sh`.
#
# The second-level cache is simulated at 512 KiB (callgrind's last level, set with --LL), the
# L2 of one core of this machine class. With 500 clients the state every connection touches per
# request no longer fits in it, and a line missed there waits for L3 or memory. That, not the
# instruction count, is where the user time goes as clients grow: see docs/architecture.md.
#
# Needs valgrind, redis-server and redis-benchmark; a minute or two per proxy. A benchmark, not
# a test: exits 0 unless something failed to run.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin="" predixy=${PREDIXY:-} n=20000
while [ $# -gt 0 ]; do
  case "$1" in
    --cinnabar) bin=$2; shift ;;
    --predixy) predixy=$2; shift ;;
    -n) n=$2; shift ;;
    -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for tool in valgrind callgrind_control redis-server redis-benchmark redis-cli python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool not found" >&2; exit 1; }
done
. "$repo/bench/lib.sh"
[ -n "$bin" ] || bin=$(build_cinnabar ships)
[ -x "$bin" ] || { echo "bench: no cinnabar binary at $bin" >&2; exit 1; }
if [ -n "$predixy" ] && ! [ -x "$predixy" ]; then
  echo "bench: no predixy binary at $predixy" >&2; exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/cinnabar-instr.XXXXXX")
under=""
cleanup() {
  local rc=$?
  [ -n "$under" ] && kill "$under" 2>/dev/null && wait "$under" 2>/dev/null
  "$bin" down --dir "$work/cluster" --purge >/dev/null 2>&1 || true
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r port proxy_port < <(python3 "$repo/bench/proxy_bench.py" free-ports 3 --extra 1)
endpoint=$("$bin" up --detach --no-proxy --dir "$work/cluster" --port "$port" --masters 3 \
  --replicas 0 2>"$work/up.err") || { cat "$work/up.err" >&2; exit 1; }
echo "cluster: $endpoint (3 masters); $n requests per case, after 5000 to warm up"

# The cases: a name, then redis-benchmark's arguments (keys spread over the three masters).
cases=(
  "GET -c 50|-c 50 GET key:__rand_int__"
  "GET -c 50 -P 16|-c 50 -P 16 GET key:__rand_int__"
  "MSET 10 keys -c 50|-c 50 MSET k0:__rand_int__ v k1:__rand_int__ v k2:__rand_int__ v k3:__rand_int__ v k4:__rand_int__ v k5:__rand_int__ v k6:__rand_int__ v k7:__rand_int__ v k8:__rand_int__ v k9:__rand_int__ v"
  "GET -c 1|-c 1 GET key:__rand_int__"
  "GET -c 500|-c 500 GET key:__rand_int__"
)

# count NAME COMMAND...: runs COMMAND under callgrind, sends every case through it, and writes
# "case|instructions|d1-misses|l2-misses" lines per request to $work/NAME.counts.
count() {
  local name=$1; shift
  valgrind --tool=callgrind --cache-sim=yes --LL=524288,8,64 --compress-strings=no \
    --callgrind-out-file="$work/$name.%p.out" "$@" >"$work/$name.log" 2>&1 &
  under=$!
  for i in $(seq 300); do
    redis-cli -p "$proxy_port" GET key:0 >/dev/null 2>&1 && break
    kill -0 "$under" 2>/dev/null || { cat "$work/$name.log" >&2; exit 1; }
    [ "$i" = 300 ] && { echo "bench: $name does not answer on $proxy_port" >&2; exit 1; }
    sleep 0.2
  done
  local dump=0
  : >"$work/$name.counts"
  for case in "${cases[@]}"; do
    local label=${case%%|*} args=${case#*|}
    # shellcheck disable=SC2086  # the arguments are split on purpose
    redis-benchmark -p "$proxy_port" -n 5000 -r 100000 $args >/dev/null 2>&1
    callgrind_control -d "$under" >/dev/null 2>&1
    dump=$((dump + 1))
    # shellcheck disable=SC2086
    redis-benchmark -p "$proxy_port" -n "$n" -r 100000 $args >/dev/null 2>&1
    callgrind_control -d "$under" >/dev/null 2>&1
    dump=$((dump + 1))
    local file
    for _ in $(seq 50); do
      file=$(ls "$work/$name".*.out."$dump" 2>/dev/null || true)
      [ -n "$file" ] && break
      sleep 0.1
    done
    [ -n "$file" ] || { echo "bench: callgrind wrote no dump $dump for $name" >&2; exit 1; }
    # `summary:` (or `totals:`) holds the counts in the order of `events:`.
    python3 - "$file" "$n" "$label" >>"$work/$name.counts" <<'PY'
import sys
path, n, label = sys.argv[1], int(sys.argv[2]), sys.argv[3]
events = totals = None
for line in open(path):
    if line.startswith("events:"):
        events = line.split()[1:]
    elif line.startswith(("summary:", "totals:")) and totals is None:
        totals = [int(x) for x in line.split()[1:]]
# Trailing zero counts are left out of the line.
count = dict(zip(events, totals + [0] * (len(events) - len(totals))))
d1 = (count["D1mr"] + count["D1mw"]) / n
l2 = (count["DLmr"] + count["DLmw"]) / n
print(f"{label}|{count['Ir'] / n:.0f}|{d1:.1f}|{l2:.1f}")
PY
  done
  kill -INT "$under" 2>/dev/null || true
  wait "$under" 2>/dev/null || true
  under=""
}

# Under valgrind nearly every request takes longer than the slow log's 10 ms threshold, and
# recording each one (a clock reading, a lock, a copy of the client's name) would be counted as
# per-request work that a real run never does. Predixy has no such log.
printf 'slowlog_slower_than_us = 3600000000\n' >"$work/cinnabar.toml"
count cinnabar "$bin" proxy --config "$work/cinnabar.toml" --listen "127.0.0.1:$proxy_port" \
  --seed "$endpoint" --workers 1
if [ -n "$predixy" ]; then
  python3 "$repo/bench/proxy_bench.py" predixy-config "$work/predixy.conf" --port "$proxy_port" \
    --seed "$endpoint" --log "$work/predixy.log"
  count predixy "$predixy" "$work/predixy.conf"
fi

echo
printf '%-20s %13s %10s %10s' case "instructions" "D1 misses" "L2 misses"
if [ -n "$predixy" ]; then
  printf ' %14s %10s %10s %7s %7s %7s' "predixy instr" "D1 misses" "L2 misses" "instr" "D1" "L2"
  echo "   (per request; the last three: cinnabar / predixy)"
else
  echo "   (per request)"
fi
ratio() { python3 -c "print(f'{$1 / $2:.2f}' if $2 else '-')"; }
while IFS='|' read -r label ir d1 l2; do
  printf '%-20s %13s %10s %10s' "$label" "$ir" "$d1" "$l2"
  if [ -n "$predixy" ]; then
    IFS='|' read -r _ xir xd1 xl2 < <(grep -F "$label|" "$work/predixy.counts")
    printf ' %14s %10s %10s %7s %7s %7s' "$xir" "$xd1" "$xl2" "$(ratio "$ir" "$xir")" \
      "$(ratio "$d1" "$xd1")" "$(ratio "$l2" "$xl2")"
  fi
  echo
done <"$work/cinnabar.counts"
