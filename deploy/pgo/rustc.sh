#!/usr/bin/env bash
# RUSTC_WRAPPER for deploy/pgo/build.sh: passes every rustc call through unchanged, except that
# the crates named in $CINNABAR_PGO_CRATES (the proxy's data path) also get $CINNABAR_PGO_FLAGS
# (profile instrumentation, or the profile to use).
#
# Why per crate and not RUSTFLAGS: the training load runs the proxy only. Under a profile, code
# that never ran in training counts as cold, so a global profile would also mark the sync
# engine, the RDB reader, backups and the operator as cold and inline less into them. Limited to
# the data path, the profile only speaks for code the training exercised, and everything else
# is built exactly as `cargo build --profile dist` builds it.
set -euo pipefail
rustc=$1
shift
crate=""
previous=""
for arg in "$@"; do
  if [ "$previous" = "--crate-name" ]; then
    crate=$arg
    break
  fi
  previous=$arg
done
if [ -n "$crate" ] && [[ " ${CINNABAR_PGO_CRATES:-} " == *" $crate "* ]]; then
  # Word splitting is intended: build.sh refuses paths with spaces.
  # shellcheck disable=SC2086
  exec "$rustc" "$@" ${CINNABAR_PGO_FLAGS:-}
fi
exec "$rustc" "$@"
