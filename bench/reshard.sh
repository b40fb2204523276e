#!/usr/bin/env bash
# Resharding benchmark: in one run, times `redis-cli --cluster rebalance --cluster-use-empty-masters`
# and cinnabar's slot migration (plan_rebalance + SlotMigrator::run) on the same data: each round
# starts a 3-master cluster on free loopback ports, loads the keys, adds two empty masters and
# times only the rebalance, then checks every key and slot. Prints slots and keys moved, seconds,
# keys/s and the speed-up (target: ours at least 2× faster). A benchmark, not a test.
#
#   bash bench/reshard.sh [--keys N] [--value-size BYTES] [--rounds N]
#                         [--batch-keys N] [--pipeline-depth N] [--slots-per-step N]
#                         [--parallel-steps N] [--only-ours]
#
#   --keys N            keys to load (default 300000)
#   --value-size BYTES  value size (default 100)
#   --rounds N          rounds, each tool once per round, in turn; the ratio uses medians (default 1)
#   --batch-keys … --parallel-steps   our MigrateOptions, to tune them
#   --only-ours         skip redis-cli
#
# Needs redis-server and redis-cli (redis-tools). Builds the example in release mode first.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
command -v redis-cli >/dev/null || { echo "redis-cli not found (apt-get install redis-tools)" >&2; exit 1; }
cd "$repo"
cargo build --quiet --release -p cinnabar-cluster --example reshard_bench
target_dir=${CARGO_TARGET_DIR:-$repo/target}
exec "$target_dir/release/examples/reshard_bench" "$@"
