#!/usr/bin/env bash
# Installs the programs the registry tests run, at pinned versions, from the Go module proxy:
#   registry             distribution/distribution's OCI registry (the server under test)
#   crane                go-containerregistry's client (the independent oracle)
#   btrfs-layers-bcrypt  scripts/bcrypt: the htpasswd lines of the basic-auth mode
# into ${BTRFS_LAYERS_TOOLS_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/btrfs-layers-ci/bin}, the
# directory .ci/run caches actionlint in and __test__/helpers/registry.ts looks in. A binary
# already there that reports its pinned version is kept. Needs Go (PATH or /usr/local/go/bin).
# Exits non-zero, naming what failed, when a tool cannot be built.
#
#   bash scripts/test-tools.sh          # then: npm test
set -euo pipefail
cd "$(dirname "$0")/.."

registry_version=v3.1.2
crane_version=v0.22.1
bin="${BTRFS_LAYERS_TOOLS_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/btrfs-layers-ci/bin}"

go=$(command -v go || true)
[ -n "$go" ] || { [ -x /usr/local/go/bin/go ] && go=/usr/local/go/bin/go; }
mkdir -p "$bin"

failed=()
# has NAME PATTERN ARGS...: the cached binary runs and its output matches PATTERN.
has() {
  local name=$1 pattern=$2
  shift 2
  [ -x "$bin/$name" ] && "$bin/$name" "$@" 2>&1 | grep -Eq -- "$pattern"
}
# install NAME VERSION PATTERN VERSION-ARGS -- BUILD-COMMAND...
install() {
  local name=$1 version=$2 pattern=$3
  shift 3
  local args=()
  while [ "$1" != -- ]; do args+=("$1"); shift; done
  shift
  if has "$name" "$pattern" "${args[@]}"; then
    echo "test-tools: $name $version (cached in $bin)"
    return
  fi
  if [ -z "$go" ]; then
    failed+=("$name $version (no Go toolchain: install Go 1.26 or newer)")
    return
  fi
  echo "test-tools: building $name $version into $bin"
  if "$@" && has "$name" "$pattern" "${args[@]}"; then
    echo "test-tools: $name $version installed"
  else
    failed+=("$name $version (go build failed, or the Go module proxy is unreachable; see above)")
  fi
}

install registry "$registry_version" " ${registry_version//./\\.}(\\+.*)?$" --version -- \
  env GOBIN="$bin" "$go" install "github.com/distribution/distribution/v3/cmd/registry@$registry_version"
install crane "$crane_version" "^$crane_version\$" version -- \
  env GOBIN="$bin" "$go" install "github.com/google/go-containerregistry/cmd/crane@$crane_version"
bcrypt_version=$(sed -n 's/^const version = "\(.*\)"$/\1/p' scripts/bcrypt/main.go)
install btrfs-layers-bcrypt "$bcrypt_version" "^$bcrypt_version\$" -version -- \
  bash -c 'cd scripts/bcrypt && "$1" build -o "$2/btrfs-layers-bcrypt" .' _ "$go" "$bin"

if [ ${#failed[@]} -gt 0 ]; then
  bar=$(printf '!%.0s' {1..100})
  printf '\n%s\n!!! test-tools: could not install what the registry tests run:\n' "$bar" >&2
  for f in "${failed[@]}"; do printf '!!!   - %s\n' "$f" >&2; done
  printf '%s\n\n' "$bar" >&2
  exit 1
fi
