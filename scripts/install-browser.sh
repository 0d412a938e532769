#!/usr/bin/env bash
# Install Debian's Chromium for the browser test (tests/browser). Idempotent and quiet; needs root or sudo.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
bash "$(dirname "$0")/apt-install.sh" chromium fonts-dejavu-core
command -v chromium >/dev/null
