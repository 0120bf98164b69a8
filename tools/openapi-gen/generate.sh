#!/usr/bin/env bash
# Regenerates crates/openapi/data/*.json.zst and crates/openapi/src/generated.rs.
# Usage: tools/openapi-gen/generate.sh [--kubernetes-version 1.33.0] [--level 19]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
cache="$here/.cache"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
mkdir -p "$cache"
"$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --require-hashes -r "$here/source.txt" -d "$cache"
wheel="$(ls "$cache"/kubernetes_validate-*.whl | sort | tail -n 1)"

"$venv/bin/python" "$here/openapi_gen.py" --wheel "$wheel" --crate-dir "$root/crates/openapi" "$@"
