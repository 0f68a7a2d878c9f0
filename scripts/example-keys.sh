#!/bin/sh
# Make the two keys the example configuration names (config/keys/), if they are missing.
set -eu
dir="$(cd "$(dirname "$0")/../config" && pwd)/keys"
mkdir -p "$dir"
umask 077
[ -f "$dir/s2026r.private" ] || openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/s2026r.private" 2>/dev/null
[ -f "$dir/s2026e.private" ] || openssl genpkey -algorithm ed25519 -out "$dir/s2026e.private"
chmod 600 "$dir"/*.private
