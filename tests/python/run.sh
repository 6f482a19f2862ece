#!/usr/bin/env bash
# Runs the IBM Python SDK compatibility suite against a real `keyward serve`.
# Usage: tests/python/run.sh [pytest args...]   (KEYWARD_BIN overrides target/debug/keyward)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$repo/target/pyvenv"
req="$repo/tests/python/requirements.txt"

if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.requirements" ] || ! cmp -s "$req" "$venv/.requirements"; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$venv/.requirements"
fi

cd "$repo"
set +e
"$venv/bin/python" -m pytest -q -o cache_dir=target/pytest-cache tests/python "$@"
exit $?
