#!/usr/bin/env bash
# Builds the cinnabar binary that ships: the `dist` profile (whole-program optimization, see
# Cargo.toml) with profile-guided optimization of the proxy's data path. Prints the binary's path
# on stdout; progress goes to stderr.
#
#   bash deploy/pgo/build.sh
#
# Three steps, each in its own target directory under the workspace's target directory, so an
# ordinary `cargo build` never has to rebuild for them:
#   1. target/pgo-generate: a `dist` build whose data-path crates count what runs
#      (-Cprofile-generate).
#   2. deploy/pgo/train.sh runs that binary's proxy under load; llvm-profdata merges the counts
#      into target/pgo-profile/cinnabar.profdata.
#   3. target/pgo: the `dist` build again, optimized with those counts (-Cprofile-use). The binary
#      is target/pgo/dist/cinnabar.
#
# Only the crates on the proxy's path get the flags (deploy/pgo/rustc.sh says why): ours that
# parse, route, check and audit a request, and tokio and mio under them. With -pgso=false, code
# in them that the training never ran is still optimized for speed, not size.
#
# Needs what the tests need (redis-server, redis-tools, python3) and rustup's llvm-tools
# component for llvm-profdata (added here if missing). About twice the time of one `dist` build:
# some 30 minutes from scratch on 2 cores. docs/architecture.md has the measurements.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
. "$repo/bench/lib.sh"
target=$(cargo_target_dir)
case "$target" in
  *[[:space:]]*) echo "pgo build: the target directory's path has a space: $target" >&2; exit 1 ;;
esac

sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$sysroot/lib/rustlib/$host/bin/llvm-profdata"
if ! [ -x "$profdata" ]; then
  echo "pgo build: adding rustup's llvm-tools component (for llvm-profdata)" >&2
  rustup component add llvm-tools >&2
fi
[ -x "$profdata" ] || { echo "pgo build: no llvm-profdata at $profdata" >&2; exit 1; }

export RUSTC_WRAPPER="$repo/deploy/pgo/rustc.sh"
data_path="cinnabar_proxy cinnabar_resp cinnabar_commands cinnabar_access cinnabar_audit tokio mio"
counts="$target/pgo-profile"
generate_flags="-Cprofile-generate=$counts/raw"
use_flags="-Cprofile-use=$counts/cinnabar.profdata -Cllvm-args=-pgso=false"

# Cargo does not see the wrapper's variables, so it would not rebuild a crate whose flags
# changed: a target directory built with other crates or flags (or another wrapper) is emptied.
fresh() {
  local dir=$1 config=$2 stamp
  stamp=$( (echo "$config"; cat "$RUSTC_WRAPPER") | sha256sum | cut -c1-16)
  if [ "$(cat "$dir/pgo-stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    echo "$stamp" >"$dir/pgo-stamp"
  fi
}

rm -rf "$counts"
mkdir -p "$counts/raw"

# The binary's own crate is instrumented too: only a final link that asks for counts brings in
# the runtime that writes them at exit.
echo "pgo build: 1/3 instrumented build (target/pgo-generate)" >&2
fresh "$target/pgo-generate" "$data_path cinnabar|$generate_flags"
CINNABAR_PGO_CRATES="$data_path cinnabar" CINNABAR_PGO_FLAGS="$generate_flags" \
  cargo build --profile dist --locked --bin cinnabar --target-dir "$target/pgo-generate" >&2

echo "pgo build: 2/3 training load" >&2
bash "$repo/deploy/pgo/train.sh" "$target/pgo-generate/dist/cinnabar" >&2
if ! compgen -G "$counts/raw/*.profraw" >/dev/null; then
  echo "pgo build: the instrumented binary wrote no counts to $counts/raw" >&2
  exit 1
fi
"$profdata" merge -o "$counts/cinnabar.profdata" "$counts/raw" >&2
proxy_functions=$("$profdata" show --all-functions "$counts/cinnabar.profdata" 2>/dev/null |
  grep -c "cinnabar_proxy" || true)
if [ "${proxy_functions:-0}" -eq 0 ]; then
  echo "pgo build: the training left no counts for the proxy" >&2
  exit 1
fi

echo "pgo build: 3/3 optimized build (target/pgo)" >&2
fresh "$target/pgo" "$data_path|$use_flags"
CINNABAR_PGO_CRATES="$data_path" CINNABAR_PGO_FLAGS="$use_flags" \
  cargo build --profile dist --locked --bin cinnabar --target-dir "$target/pgo" >&2
echo "$target/pgo/dist/cinnabar"
