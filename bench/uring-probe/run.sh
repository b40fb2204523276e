#!/usr/bin/env bash
# The io_uring probe of issue 16: a relay with the proxy's syscall pattern on epoll (tokio) and
# on io_uring, side by side in one run against one redis-server, with redis-benchmark; prints
# requests/s and the relay's CPU microseconds per request (from /proc/PID/stat) per case, and
# the io_uring/epoll ratio. Not a test; not built by CI.
#
#   bash bench/uring-probe/run.sh [-n REQUESTS] [--rounds N]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
n=200000 rounds=2
while [ $# -gt 0 ]; do
  case "$1" in
    -n) n=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
target=${CARGO_TARGET_DIR:-/var/tmp/uring-probe-target}
cargo build --quiet --release --manifest-path "$here/Cargo.toml" --target-dir "$target"
bin="$target/release/uring-probe"
base=$((24000 + RANDOM % 2000))
redis-server --port "$base" --save "" --appendonly no --daemonize no >/dev/null 2>&1 & redis_pid=$!
"$bin" epoll $((base + 1)) "127.0.0.1:$base" & epoll_pid=$!
"$bin" uring $((base + 2)) "127.0.0.1:$base" & uring_pid=$!
"$bin" uring-tuned $((base + 3)) "127.0.0.1:$base" & tuned_pid=$!
trap 'kill $redis_pid $epoll_pid $uring_pid $tuned_pid 2>/dev/null' EXIT
sleep 0.5
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
printf '%-28s %-12s %12s %14s\n' case path "requests/s" "CPU us/req"
declare -A cpu
for round in $(seq "$rounds"); do
  for case in "-c 50 -t get" "-c 50 -P 16 -t get" "-c 1 -t get"; do
    for path in epoll uring uring-tuned; do
      case $path in
        epoll) port=$((base + 1)); pid=$epoll_pid ;;
        uring) port=$((base + 2)); pid=$uring_pid ;;
        uring-tuned) port=$((base + 3)); pid=$tuned_pid ;;
      esac
      before=$(ticks "$pid")
      rps=$(redis-benchmark -p "$port" -n "$n" $case -q 2>/dev/null | sed -n 's/.*: \([0-9.]*\) requests per second.*/\1/p' | tail -1)
      after=$(ticks "$pid")
      us=$(python3 -c "print(f'{($after - $before) / $hz * 1e6 / $n:.2f}')")
      printf '%-28s %-12s %12s %14s\n' "$case (round $round)" "$path" "$rps" "$us"
    done
  done
done
