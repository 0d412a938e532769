#!/usr/bin/env bash
# Install what the generated Java client compiles against (tests/clients, examples/java): Debian's Jackson
# (core, databind, annotations), Apache HttpComponents' multipart builder (httpmime, httpcore) and the
# jakarta.annotation API, as jars under /usr/share/java; javac from the JDK. Idempotent and quiet; root or sudo.
set -euo pipefail
packages=()
for pair in jackson-core:libjackson2-core-java jackson-databind:libjackson2-databind-java \
    jackson-annotations:libjackson2-annotations-java httpmime:libhttpmime-java httpcore:libhttpcore-java \
    jakarta-annotation-api:libjakarta-annotation-api-java; do
    [ -f "/usr/share/java/${pair%%:*}.jar" ] || packages+=("${pair#*:}")
done
command -v javac >/dev/null 2>&1 || packages+=(openjdk-17-jdk-headless)
if [ ${#packages[@]} -gt 0 ]; then
    bash "$(dirname "$0")/apt-install.sh" "${packages[@]}"
fi
