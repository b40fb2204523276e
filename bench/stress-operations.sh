#!/usr/bin/env bash
# Operations under a starved CPU: runs the cluster-operation tests (scale, rolling restart,
# failover, replace-nodes, heal, slot migration) again and again while busy loops take the
# cores, the way a loaded CI machine or a noisy Kubernetes node would. Gossip, handshakes and
# heartbeats then arrive late, which is where planners break: this found seven such faults that
# a quiet machine never showed. A soak, not part of the test suite.
#
#   bash bench/stress-operations.sh [--rounds N] [--hogs N] [--cli]
#
#   --rounds N   how many times to run the tests (default 10)
#   --hogs N     busy loops started beside them (default: one per core)
#   --cli        also run the CLI operations and drill tests each round
#
# Prints one line per round and, at the end, how many rounds failed; the output of a failed
# round is kept in a file named in its line. Exits 1 if any round failed.
set -euo pipefail

rounds=10
hogs=$(nproc)
cli=0
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --hogs) hogs=$2; shift 2 ;;
        --cli) cli=1; shift ;;
        *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
tests=(-p cinnabar-cluster --test operations --test migrate)
cli_tests=(-p cinnabar --test operations --test drill)
cargo test --quiet "${tests[@]}" --no-run
[ "$cli" = 1 ] && cargo test --quiet "${cli_tests[@]}" --no-run

pids=()
stop_hogs() { [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true; }
trap stop_hogs EXIT
for _ in $(seq "$hogs"); do
    (while :; do :; done) &
    pids+=($!)
done

logs=$(mktemp -d /tmp/cinnabar-stress.XXXXXX)
failed=0
for round in $(seq "$rounds"); do
    log="$logs/round-$round.log"
    start=$(date +%s)
    status=passed
    cargo test --quiet "${tests[@]}" >"$log" 2>&1 || status=FAILED
    if [ "$cli" = 1 ] && [ "$status" = passed ]; then
        cargo test --quiet "${cli_tests[@]}" >>"$log" 2>&1 || status=FAILED
    fi
    if [ "$status" = FAILED ]; then
        failed=$((failed + 1))
        echo "round $round: FAILED in $(( $(date +%s) - start )) s; output in $log"
    else
        echo "round $round: passed in $(( $(date +%s) - start )) s"
        rm -f "$log"
    fi
done
echo "$failed of $rounds rounds failed with $hogs busy loops on $(nproc) cores"
[ "$failed" = 0 ]
