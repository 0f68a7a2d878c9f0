#!/bin/bash
# The docker-compose rig, end to end: Postfix + mailseal + knot (authoritative DNS with demo
# zones) + a mail sink, on Debian images built here from local files. Sends one outbound
# message (signed by mailseal, checked with python3-dkim) and one inbound message (verified by
# mailseal), refuses a spoof, prints the results, and exits non-zero if any check fails.
# Run as root on Debian 12:  bash docker/rig.sh
set -euo pipefail
cd "$(dirname "$0")/.."
state=docker/state
compose=(docker-compose -p mailseal-rig -f docker-compose.yml)

need=(docker.io docker-compose debootstrap swaks python3-dkim)
missing=()
for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The Docker engine, started by hand if it is not running. No bridge network: every
# container uses the host's loopback (network_mode: host).
if ! docker info >/dev/null 2>&1; then
    dockerd --bridge=none --iptables=false --ip6tables=false >/var/log/mailseal-rig-dockerd.log 2>&1 &
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/mailseal-rig-dockerd.log" >&2; exit 1; }
fi
docker image inspect mailseal-base:bookworm >/dev/null 2>&1 || bash docker/build-base-image.sh mailseal-base:bookworm

cargo build --release --ignore-rust-version
ms=target/release/mailseal

# Fresh keys, zones and configuration for every run.
"${compose[@]}" down --remove-orphans >/dev/null 2>&1 || true
rm -rf "$state"
mkdir -p "$state/zones" "$state/mailseal/keys" "$state/out" "$state/sender"
$ms keygen --domain example.com --selector rig --out "$state/mailseal/keys" >/dev/null
$ms keygen --domain sender.example --selector ext --algorithm ed25519 --out "$state/sender" >/dev/null

soa() { printf '$TTL 300\n@ SOA ns.%s. hostmaster.%s. 1 3600 600 86400 300\n@ NS ns.%s.\nns A 127.0.0.1\n' "$1" "$1" "$1"; }
{
    echo '$ORIGIN example.com.'; soa example.com
    echo '@ MX 10 mx.example.com.'; echo 'mx A 127.0.0.1'
    echo '@ TXT "v=spf1 ip4:127.0.0.1 -all"'
    echo '_dmarc TXT "v=DMARC1; p=reject; rua=mailto:dmarc@example.com"'
    cat "$state/mailseal/keys/rig.txt"
} >"$state/zones/example.com.zone"
{ echo '$ORIGIN example.'; soa example; } >"$state/zones/example.zone"
{
    echo '$ORIGIN sender.example.'; soa sender.example
    echo '@ MX 10 mail.sender.example.'; echo 'mail A 192.0.2.25'
    echo '@ TXT "v=spf1 ip4:192.0.2.25 -all"'
    echo '_dmarc TXT "v=DMARC1; p=reject"'
    cat "$state/sender/ext.txt"
} >"$state/zones/sender.example.zone"

cat >"$state/mailseal/mailseal.toml" <<CONF
socket = "inet:18891@127.0.0.1"
authserv_id = "mx.example.com"
[signing]
key_table = "key.table"
signing_table = "signing.table"
internal_hosts = ["127.0.0.0/8"]
[dns]
nameservers = ["127.0.0.1:5353"]
[dmarc]
enforce = true
CONF
echo "rig example.com:rig:/etc/mailseal/keys/rig.private" >"$state/mailseal/key.table"
echo "*@example.com rig" >"$state/mailseal/signing.table"
# The remote sender signs its own mail (with mailseal's sign command, on the host).
echo "ext sender.example:ext:$PWD/$state/sender/ext.private" >"$state/sender/key.table"
echo "*@sender.example ext" >"$state/sender/signing.table"
printf 'mode = "s"\n[signing]\nkey_table = "key.table"\nsigning_table = "signing.table"\n' >"$state/sender/mailseal.toml"

cleanup() { "${compose[@]}" down --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT
"${compose[@]}" up -d

wait_port() {
    for _ in $(seq 1 60); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 1
    done
    echo "port $1 did not open" >&2; "${compose[@]}" logs >&2; return 1
}
for p in 5353 18891 2526 2525; do wait_port "$p"; done

wait_file() {
    for _ in $(seq 1 60); do [ -f "$1" ] && return 0; sleep 1; done
    echo "no message at $1" >&2; "${compose[@]}" logs postfix >&2; return 1
}
fail=0

echo "== outbound: alice@example.com from an internal client, signed by mailseal"
printf 'From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: rig outbound\r\n\r\nHello from the rig.\r\n' >"$state/outbound.eml"
swaks --server 127.0.0.1:2525 --from alice@example.com --to bob@example.org --data "$state/outbound.eml" >"$state/outbound.swaks" 2>&1 ||
    { cat "$state/outbound.swaks" >&2; "${compose[@]}" logs mailseal postfix >&2; exit 1; }
wait_file "$state/out/1.eml"
grep -A1 '^DKIM-Signature:' "$state/out/1.eml" || true
record=$(sed -n 's/.*"\(.*\)".*/\1/p' "$state/mailseal/keys/rig.txt" | tr -d '\n')
verdict=$(/usr/bin/python3 - "$state/out/1.eml" "$record" <<'PY'
import sys, dkim
msg = open(sys.argv[1], "rb").read()
rec = sys.argv[2].encode()
ok = dkim.DKIM(msg).verify(dnsfunc=lambda name, timeout=5: rec if name.startswith(b"rig._domainkey.example.com") else None)
print("pass" if ok else "fail")
PY
)
echo "python3-dkim: $verdict"
[ "$verdict" = pass ] || fail=1

echo "== inbound: bob@sender.example (DKIM-signed, from its SPF-listed host), verified by mailseal"
printf 'From: Bob <bob@sender.example>\r\nTo: alice@example.org\r\nSubject: rig inbound\r\nMessage-ID: <rig-in@sender.example>\r\n\r\nHello from outside.\r\n' |
    $ms sign -c "$state/sender/mailseal.toml" >"$state/inbound.eml"
swaks --server 127.0.0.1:2525 --helo mail.sender.example --xclient-addr 192.0.2.25 --xclient-helo mail.sender.example \
    --from bob@sender.example --to alice@example.org --data "$state/inbound.eml" >"$state/inbound.swaks" 2>&1 ||
    { cat "$state/inbound.swaks" >&2; "${compose[@]}" logs mailseal postfix >&2; exit 1; }
wait_file "$state/out/2.eml"
ar=$(awk '/^Authentication-Results:/{p=1} p&&/^[^ \t]/&&!/^Authentication-Results:/{exit} p' "$state/out/2.eml")
echo "$ar"
for want in "spf=pass" "dkim=pass" "dmarc=pass"; do
    grep -q "$want" <<<"$ar" || { echo "missing $want" >&2; fail=1; }
done

echo "== spoof: ceo@sender.example from a host SPF does not list, unsigned"
out=$(printf 'From: CEO <ceo@sender.example>\r\nTo: alice@example.org\r\nSubject: urgent\r\n\r\nPay now.\r\n' |
    swaks --server 127.0.0.1:2525 --xclient-addr 203.0.113.9 --xclient-helo evil.example \
        --from ceo@sender.example --to alice@example.org --data - 2>&1 || true)
grep -E '^<\*\* +550' <<<"$out" || { echo "spoof was not refused:" >&2; echo "$out" >&2; fail=1; }

if [ "$fail" = 0 ]; then echo "rig: all checks passed"; else echo "rig: FAILED" >&2; fi
exit "$fail"
