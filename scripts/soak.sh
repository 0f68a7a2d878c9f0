#!/bin/bash
# Soak: N messages (default 1,000,000) through the daemon from the milter load generator,
# with the daemon's RSS sampled: printed after a 10% warm-up and at the end, with the peak.
# Fails if the RSS after the run exceeds the warmed-up RSS by more than 4 MiB.
#   bash scripts/soak.sh [MESSAGES]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
warm=$((n / 10))
cargo build --release --ignore-rust-version --bin mailseal --example loadgen
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
umask 077
openssl genpkey -algorithm ed25519 -out "$dir/ed.pem"
echo "ed example.com:ed:$dir/ed.pem" >"$dir/key.table"
echo "*@example.com ed" >"$dir/signing.table"
cat >"$dir/mailseal.toml" <<CONF
socket = "unix:$dir/mailseal.sock"
mode = "s"
log_level = "warn"
[signing]
key_table = "key.table"
signing_table = "signing.table"
CONF
target/release/mailseal run -c "$dir/mailseal.toml" &
pid=$!
for _ in $(seq 1 50); do [ -S "$dir/mailseal.sock" ] && break; sleep 0.1; done
gen=(target/release/examples/loadgen --unix "$dir/mailseal.sock" --connections 20 --per-connection 50 --pid "$pid")
echo "== warm-up: $warm messages"
"${gen[@]}" --messages "$warm" | tee "$dir/warm.txt"
warm_rss=$(grep -o 'end [0-9]* KiB' "$dir/warm.txt" | grep -o '[0-9]*')
echo "== soak: $((n - warm)) messages"
"${gen[@]}" --messages "$((n - warm))" | tee "$dir/soak.txt"
end_rss=$(grep -o 'end [0-9]* KiB' "$dir/soak.txt" | grep -o '[0-9]*')
peak_rss=$(grep -o 'peak [0-9]* KiB' "$dir/soak.txt" | grep -o '[0-9]*')
echo "soak: $n messages; RSS after warm-up $warm_rss KiB, peak $peak_rss KiB, end $end_rss KiB"
if [ "$end_rss" -gt $((warm_rss + 4096)) ]; then
    echo "soak: RSS grew after warm-up" >&2
    exit 1
fi
echo "soak: no growth after warm-up"
