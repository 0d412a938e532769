#!/usr/bin/env bash
# Generate the Java client of stillmotion's API, compile it with this folder's GenerateVideo.java, against
# Debian's jars only (scripts/install-java-client.sh installs them; no Maven needed):
#   bash examples/java/generate-client.sh openapi.json build/java-client
# then: java -cp "$(cat build/java-client/classpath)" GenerateVideo http://127.0.0.1:7860 photo.png out.mp4
# The spec is the server's /openapi.json (with a token: curl -H "Authorization: Bearer $TOKEN" ...).
set -euo pipefail
spec=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
generator=${OPENAPI_GENERATOR_CLI:-openapi-generator-cli}
rm -rf "$out"
mkdir -p "$out"
# java/native: java.net.http, no OkHttp. openApiNullable=false and dateLibrary=legacy (java.util.Date) need no
# Jackson module beyond core, databind and annotations; useJakartaEe: jakarta.annotation (Debian has it);
# enumUnknownDefaultCase: an error code added by a newer server reads as UNKNOWN_DEFAULT_OPEN_API, not a crash;
# useSingleRequestParameter: a request builder per operation, so an optional field added later breaks no caller.
"$generator" generate --input-spec "$spec" --generator-name java --library native --output "$out/generated" \
    --additional-properties=openApiNullable=false,dateLibrary=legacy,useJakartaEe=true,enumUnknownDefaultCase=true \
    --additional-properties=invokerPackage=stillmotion.client,apiPackage=stillmotion.client.api \
    --additional-properties=modelPackage=stillmotion.client.model,hideGenerationTimestamp=true,useSingleRequestParameter=true \
    >"$out/generate.log" 2>&1 || { tail -40 "$out/generate.log" >&2; exit 1; }
src="$out/generated/src/main/java"
# The native library always registers Jackson's JSR-310 module for java.time types, which Debian does not
# package; with dateLibrary=legacy nothing uses it, so its registration goes.
rm -f "$src/stillmotion/client/RFC3339InstantDeserializer.java" "$src/stillmotion/client/RFC3339JavaTimeModule.java"
sed -i '/jsr310/d; /new JavaTimeModule()/d; /new RFC3339JavaTimeModule()/d' \
    "$src/stillmotion/client/ApiClient.java" "$src/stillmotion/client/JSON.java"
# java/native adds every file part unconditionally, so an optional one left out (last_image, the plan's image)
# is a "File may not be null" (openapi-generator issue 6677): add a file part only when it is given.
sed -i -E 's/^( *)multiPartBuilder\.addBinaryBody\("([a-z_]+)", ([A-Za-z]+)\);/\1if (\3 != null) multiPartBuilder.addBinaryBody("\2", \3);/' \
    "$src"/stillmotion/client/api/*.java
jars=""
for jar in jackson-core jackson-databind jackson-annotations httpmime httpcore jakarta-annotation-api; do
    [ -f "/usr/share/java/$jar.jar" ] || { echo "missing /usr/share/java/$jar.jar: run scripts/install-java-client.sh" >&2; exit 1; }
    jars="$jars:/usr/share/java/$jar.jar"
done
jars=${jars#:}
find "$src" -name '*.java' >"$out/sources"
echo "$here/GenerateVideo.java" >>"$out/sources"
javac -nowarn -encoding UTF-8 -d "$out/classes" -cp "$jars" @"$out/sources"
echo "$out/classes:$jars" >"$out/classpath"
