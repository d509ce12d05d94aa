#!/usr/bin/env bash
# Builds the pinned cfssl CA server (github.com/cloudflare/cfssl, `cfssl serve`) from the Go module
# proxy into the project-local .tools/bin. Idempotent: returns at once when the pinned version is
# already there. Prints the binary's path as its last line (progress goes to stderr).
#
#   bash scripts/ca/install-cfssl.sh                       # -> <repo>/.tools/bin/cfssl
#   CFSSL_VERSION=v1.6.5 bash scripts/ca/install-cfssl.sh
#
# Why v1.6.5: the newest release that builds with the Go here (v1.7.x's go.mod asks for go >= 1.27),
# and URI SANs from the sign request's `hosts` (needed for SPIFFE IDs) exist since v1.4.
# Cold build: ~2 min on 2 cores (module download + compile); warm (Go caches kept): seconds.
set -euo pipefail

VERSION="${CFSSL_VERSION:-v1.6.5}"
MODULE="github.com/cloudflare/cfssl"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN_DIR="$ROOT/.tools/bin"
BIN="$BIN_DIR/cfssl"

if [[ -x "$BIN" ]] && "$BIN" version 2>/dev/null | grep -qx "Version: ${VERSION#v}"; then
  echo "$BIN"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "install-cfssl: 'go' is not on PATH; cfssl $VERSION is built from source with Go >= 1.20" >&2
  exit 1
fi

mkdir -p "$BIN_DIR"
start=$(date +%s)
echo "install-cfssl: building $MODULE/cmd/cfssl@$VERSION into $BIN_DIR" >&2
# CGO off: a static binary that needs nothing from the host (cfssl's optional sqlite cert DB is not
# used). The version is stamped in so `cfssl version` (and the check above) can tell what is installed.
GOBIN="$BIN_DIR" CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -buildvcs=false" GOTOOLCHAIN=local \
  go install -trimpath -ldflags "-s -w -X $MODULE/cli/version.version=${VERSION#v}" "$MODULE/cmd/cfssl@$VERSION" >&2
echo "install-cfssl: built in $(( $(date +%s) - start ))s" >&2
echo "$BIN"
