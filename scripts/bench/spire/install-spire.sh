#!/usr/bin/env bash
# Builds spire-server and spire-agent (SPIRE v1.13.3 unless SPIRE_VERSION says otherwise) from the
# Go module proxy into .tools/spire-<version>/bin, once; later runs reuse the binaries.
# Used by `npm run bench -- --peer spire`; runnable on its own. Needs Go (SPIRE 1.13.3 declares go 1.25.3; an older Go with GOTOOLCHAIN=auto fetches that toolchain from the proxy).
set -euo pipefail

version="${SPIRE_VERSION:-1.13.3}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
dest="${SPIRE_TOOLS_DIR:-$root/.tools/spire-$version}"
bin="$dest/bin"

if [[ -x "$bin/spire-server" && -x "$bin/spire-agent" ]]; then
  echo "install-spire: reusing SPIRE $version in $bin"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "install-spire: Go is not installed (or not on PATH); the SPIRE comparison builds spire-server" >&2
  echo "  and spire-agent $version from source. Install Go >= 1.25 (https://go.dev/dl/) and re-run," >&2
  echo "  or put prebuilt binaries in $bin." >&2
  exit 127
fi

echo "install-spire: building SPIRE $version (spire-server, spire-agent) with $(go version | cut -d' ' -f3)"
echo "install-spire: from the Go module proxy ($(go env GOPROXY)) into $bin; this takes minutes on 2 cores"
scratch="$dest/module"
mkdir -p "$scratch" "$bin"
cd "$scratch"
if [[ ! -f go.mod ]]; then
  echo "install-spire: go mod init spire-tools (scratch module in $scratch)"
  go mod init spire-tools >/dev/null 2>&1
fi
for cmd in spire-server spire-agent; do
  echo "install-spire: go get -tool github.com/spiffe/spire/cmd/$cmd@v$version"
  go get -tool "github.com/spiffe/spire/cmd/$cmd@v$version"
done
echo "install-spire: go install (GOBIN=$bin)"
GOBIN="$bin" go install github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent
"$bin/spire-server" --version 2>&1 | sed 's/^/install-spire: spire-server version /'
echo "install-spire: done"
