#!/usr/bin/env bash
# Generate the Python client of stillmotion's API into OUT_DIR/stillmotion_client:
#   bash examples/python-client/generate-client.sh openapi.json build/python-client
# then: PYTHONPATH=build/python-client python examples/python-client/generate_video.py URL photo.png out.mp4
set -euo pipefail
spec=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
generator=${OPENAPI_PYTHON_CLIENT:-openapi-python-client}
rm -rf "$out"
mkdir -p "$out"
"$generator" generate --path "$spec" --config "$here/config.yaml" --meta none \
    --output-path "$out/stillmotion_client" >"$out/generate.log" 2>&1 || { cat "$out/generate.log" >&2; exit 1; }
# A warning means part of the API was left out of the client: fail rather than ship it.
if grep -q "Warning" "$out/generate.log"; then
    cat "$out/generate.log" >&2
    exit 1
fi
