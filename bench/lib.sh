# Sourced by the benchmark scripts, the profile-guided build (deploy/pgo) and CI: what they
# share.

# cargo_target_dir: prints the workspace's target directory (CARGO_TARGET_DIR when set).
cargo_target_dir() {
  (cd "$(dirname "${BASH_SOURCE[0]}")/.." && cargo metadata --format-version 1 --no-deps) |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

# build_cinnabar PROFILE: builds the cinnabar binary with cargo's PROFILE (`release` for a
# quicker build where the proxy's own speed is not what is measured), or with `ships` the binary
# the Dockerfile ships (deploy/pgo/build.sh: `dist` with profile-guided optimization, some 30
# minutes from scratch on 2 cores), progress on stderr, and prints the binary's path.
build_cinnabar() {
  local profile=$1 repo
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  if [ "$profile" = ships ]; then
    echo "building: bash deploy/pgo/build.sh" >&2
    bash "$repo/deploy/pgo/build.sh"
    return
  fi
  echo "building: cargo build --profile $profile -p cinnabar" >&2
  (cd "$repo" && cargo build --quiet --profile "$profile" -p cinnabar) >&2
  echo "$(cargo_target_dir)/$profile/cinnabar"
}
