#!/usr/bin/env bash
# Install Debian's PostgreSQL server programs for the store tests (tests/conftest.py starts a throwaway
# cluster with them; no system service is used). Idempotent and quiet; needs root or sudo.
set -euo pipefail
if command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    exit 0
fi
bash "$(dirname "$0")/apt-install.sh" postgresql
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
