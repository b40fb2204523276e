# Sourced by the benchmark scripts: what they share.
#
# build_cinnabar PROFILE: builds the cinnabar binary with cargo's PROFILE (`dist` for what
# ships, as the Dockerfile builds it; `release` for a quicker build where the proxy's own speed
# is not what is measured), progress on stderr, and prints the binary's path.
build_cinnabar() {
  local profile=$1 repo target
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  echo "building: cargo build --profile $profile -p cinnabar" >&2
  (cd "$repo" && cargo build --quiet --profile "$profile" -p cinnabar) >&2
  target=$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  echo "$target/$profile/cinnabar"
}
