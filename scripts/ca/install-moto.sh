#!/usr/bin/env bash
# Installs the moto AWS emulator (server mode) into a project-local venv, .venv/moto, for the
# AWS Private CA backend tests (test/ca/aws-pca.emulator.test.ts). Idempotent: when the pinned
# version is already installed it only prints the path. The last line printed is always the path
# of the moto_server executable.
#
#   bash scripts/ca/install-moto.sh        # then: npx vitest run test/ca
#
# Env: PYTHON (default python3), MOTO_VENV (default <repo>/.venv/moto).
set -euo pipefail

# moto 5.1.x: ACM PCA in server mode, CSR SAN copied to the leaf (see the test file for its gaps).
MOTO_VERSION="5.1.22"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${MOTO_VENV:-$repo_root/.venv/moto}"
python="${PYTHON:-python3}"
server="$venv/bin/moto_server"

installed_version() {
  "$venv/bin/python" -c 'from importlib.metadata import version; print(version("moto"))' 2>/dev/null || true
}

if [[ -x "$server" && "$(installed_version)" == "$MOTO_VERSION" ]]; then
  echo "$server"
  exit 0
fi

if ! command -v "$python" >/dev/null 2>&1; then
  echo "install-moto.sh: $python not found; moto needs Python 3.9+ (set PYTHON=/path/to/python3)" >&2
  exit 1
fi

echo "install-moto.sh: installing moto[server]==$MOTO_VERSION into $venv" >&2
if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv" >&2
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
got="$(installed_version)"
if [[ "$got" != "$MOTO_VERSION" || ! -x "$server" ]]; then
  echo "install-moto.sh: expected moto $MOTO_VERSION and $server, got version '$got'" >&2
  exit 1
fi
echo "install-moto.sh: installed moto $MOTO_VERSION" >&2
echo "$server"
