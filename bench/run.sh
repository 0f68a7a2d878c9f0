#!/bin/bash
# End-to-end benchmark, side by side: smtp-source → a private Postfix → milter → smtp-sink,
# the same messages for every setup, on TCP and unix milter sockets. Prints msg/s, milter
# CPU seconds per 1000 messages (from /proc) and the milter's peak RSS, and ratios against
# the peers from Debian:
#   signing:   mailseal (RSA-2048; RSA + Ed25519) vs OpenDKIM and rspamd (proxy worker as
#              milter, self-scan, dkim_signing the only module)
#   verifying: mailseal (SPF + DKIM + DMARC) vs OpenDKIM + OpenDMARC (SPF self-validated),
#              the same plus policyd-spf (real SPF, Postfix check_policy_service), and rspamd
#              (dkim, spf, dmarc, milter_headers the only modules); every lookup answered by
#              knotd on 127.0.0.1:53 (OpenDKIM, OpenDMARC and Postfix with its policyd-spf see
#              it through a private /etc/resolv.conf in their own mount namespace)
#   milter level: examples/loadgen.rs against mailseal (unix socket)
# Run as root on Debian 12 (installs the peers if missing):
#   bash bench/run.sh [MESSAGES] [SESSIONS]     (BENCH_ONLY=sign|verify|loadgen runs one part)
#   BENCH_SOCKETS="unix" limits signing and verifying to one socket kind, BENCH_PEERS=0 runs
#   mailseal alone (quick A/B runs; scripts/test.sh runs a short one of these as a smoke test).
#   BENCH_MAILSEAL=/path/to/mailseal benchmarks another build (A/B against the tree's).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
S=${2:-20}
SIZE=4096
ONLY=${BENCH_ONLY:-all}
PEERS=${BENCH_PEERS:-1}
pkgs=(postfix bc)
[ "$ONLY" = sign ] || pkgs+=(knot)
[ "$PEERS" = 1 ] && pkgs+=(opendkim opendmarc rspamd postfix-policyd-spf-python publicsuffix)
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$p" >/dev/null
done
cargo build --release --ignore-rust-version --bin mailseal --example loadgen >/dev/null 2>&1
ms=${BENCH_MAILSEAL:-$PWD/target/release/mailseal}
. bench/lib.sh
bench_workdir bench
(umask 077
 openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/keys/rsa.pem" 2>/dev/null
 openssl genpkey -algorithm ed25519 -out "$work/keys/ed.pem")

stat_of() { # "pid [pid...]" → "cpu_seconds hwm_kib", summed over the processes
    local t cpu=0 rss=0 p; t=$(getconf CLK_TCK)
    for p in $1; do
        cpu=$(echo "$cpu + $(awk -v t="$t" '{print ($14+$15)/t}' "/proc/$p/stat")" | bc -l)
        rss=$((rss + $(awk '/VmHWM/{print $2}' "/proc/$p/status")))
    done
    echo "$cpu $rss"
}

sink_port=$(free_port)
# The sink keeps what it receives (per second, removed after each run), so each run can show
# what the milter did to the last message.
mkdir -p "$work/dump"; chown postfix "$work/dump"
/usr/sbin/smtp-sink -u postfix -S '@@MSG@@\n' -D "$work/dump/%H%M%S" 127.0.0.1:"$sink_port" 2000 >/dev/null 2>&1 &
pids+=($!)

# One Postfix instance; the milter line is switched per run (postfix reload).
pf=$work/postfix
mkdir -p "$pf/etc" "$pf/queue" "$pf/data"
smtp_port=$(free_port)
chown postfix:postfix "$pf/data"
render_postfix ""
echo "nameserver 127.0.0.1" >"$work/resolv.conf"
# A peer daemon resolves through 127.0.0.1 only: started in its own mount namespace with a
# private /etc/resolv.conf (unshare and sh exec, so $! is the daemon's pid). Postfix too, for
# the policyd-spf it spawns; Postfix itself looks nothing up here (no DNS, no peer names).
resolver_ns="mount --bind $work/resolv.conf /etc/resolv.conf && exec \"\$@\""
if [ "$PEERS" = 1 ] && [ "$ONLY" != sign ] && [ "$ONLY" != loadgen ]; then
    unshare -m sh -c "$resolver_ns" sh script -qec "/usr/sbin/postfix -c $pf/etc start" /dev/null >/dev/null
else
    script -qec "/usr/sbin/postfix -c $pf/etc start" /dev/null >/dev/null
fi

# smtp_send MESSAGE_FILE|"" COUNT: send and wait (bounded) until the queue is empty.
smtp_send() {
    if [ -n "$1" ]; then
        /usr/sbin/smtp-source -F "$1" -M client.example.com -m "$2" -s "$S" -f alice@example.com -t bob@example.org 127.0.0.1:"$smtp_port"
    else
        /usr/sbin/smtp-source -l $SIZE -m "$2" -s "$S" -f alice@example.com -t bob@example.org 127.0.0.1:"$smtp_port"
    fi
    for _ in $(seq 1 600); do queue_empty && break; sleep 0.1; done
}
spf_pids() { pgrep -d ' ' -f '^(/usr/bin/)?python3 /usr/bin/policyd-spf' || true; }
queue_empty() { [ -z "$(find "$pf/queue/incoming" "$pf/queue/active" "$pf/queue/deferred" "$pf/queue/maildrop" -type f 2>/dev/null | head -1)" ]; }

# run NAME MILTER_SPEC ["PID..."] [MESSAGE_FILE] [spf]
# With spf, Postfix also asks policyd-spf: Postfix spawns one per smtpd process, which then
# lives as long as that smtpd. A warm-up batch first starts them (as the other daemons are
# started before a run); what they spend in the run counts as the milters' CPU, and the sum
# of their peaks as their RSS.
results=()
run() {
    local name=$1 spec=$2 pid=${3:-} file=${4:-} policy=${5:-}
    render_postfix "$spec" "$policy"
    /usr/sbin/postfix -c "$pf/etc" reload >/dev/null 2>&1
    sleep 1
    local before="0 0"
    declare -A spf_cpu=()
    if [ "$policy" = spf ]; then
        smtp_send "${file}" $((S * 10))
        local p; for p in $(spf_pids); do spf_cpu[$p]=$(stat_of "$p" | cut -d' ' -f1); done
    fi
    [ -n "$pid" ] && before=$(stat_of "$pid")
    local t0; t0=$(date +%s.%N)
    smtp_send "$file" "$N"
    local t1; t1=$(date +%s.%N)
    local rate; rate=$(echo "$N / ($t1 - $t0)" | bc -l)
    local cpu=- rss=-
    if [ -n "$pid" ]; then
        local after; after=$(stat_of "$pid")
        local spent; spent=$(echo "${after%% *} - ${before%% *}" | bc -l)
        rss=${after##* }
        if [ "$policy" = spf ]; then
            local sp n=0; sp=$(spf_pids)
            [ -n "$sp" ] || { echo "no policyd-spf process ran" >&2; exit 1; }
            for p in $sp; do
                local st; st=$(stat_of "$p")
                spent=$(echo "$spent + ${st%% *} - ${spf_cpu[$p]:-0}" | bc -l)
                rss=$((rss + ${st##* })); n=$((n + 1))
            done
            echo "    ($n policyd-spf processes)"
        fi
        cpu=$(echo "$spent * 1000 / $N" | bc -l)
    fi
    local deferred; deferred=$(find "$pf/queue/deferred" -type f | wc -l)
    printf '%-48s %8.0f msg/s   CPU/1000: %6s s   peak RSS: %8s KiB   deferred: %s\n' \
        "$name" "$rate" "$( [ "$cpu" = - ] && echo - || printf '%.2f' "$cpu")" "$rss" "$deferred"
    # What the milter(s) did, from the last message the sink received.
    local last; last=$(ls -t "$work/dump" | head -1)
    if [ -n "$last" ]; then
        local msg; msg=$(awk '/^@@MSG@@/{buf=""; next} {buf=buf"\n"$0} END{print buf}' "$work/dump/$last")
        printf '%48s last message: %s DKIM-Signature(s); %s\n' "" \
            "$(echo "$msg" | grep -c '^DKIM-Signature:' || true)" \
            "$(echo "$msg" | grep -o '\b\(spf\|dkim\|dmarc\)=[a-z]*' | sort | uniq | tr '\n' ' ')"
    fi
    rm -rf "${work:?}/dump/"*
    results+=("$name|$rate|$cpu|$rss")
}

# --- mailseal configurations
mk_mailseal() { # name socket signing_rows multiple
    local d=$work/ms-$1
    mkdir -p "$d"
    printf 'rsa example.com:rsa:%s\ned example.com:ed:%s\n' "$work/keys/rsa.pem" "$work/keys/ed.pem" >"$d/key.table"
    printf '%b' "$3" >"$d/signing.table"
    cat >"$d/mailseal.toml" <<CONF
socket = "$2"
socket_mode = "0666"
mode = "s"
log_level = "warn"
[signing]
key_table = "key.table"
signing_table = "signing.table"
multiple_signatures = $4
internal_hosts = ["127.0.0.0/8"]
CONF
    echo "$d/mailseal.toml"
}
# Start a milter in the background; its pid is left in $pid. (Not in $(...): the child would
# hold the command substitution's pipe open.)
start_mailseal() { "$ms" run -c "$1" >"$1.log" 2>&1 & pid=$!; pids+=("$pid"); sleep 0.5; }

mk_opendkim() { # socket
    local d=$work/od-$RANDOM
    mkdir -p "$d"; chmod 700 "$d"
    cat >"$d/opendkim.conf" <<CONF
Socket $1
UMask 000
Domain example.com
Selector rsa
KeyFile $work/keys/rsa.pem
Mode s
SignatureAlgorithm rsa-sha256
Canonicalization relaxed/simple
InternalHosts 127.0.0.0/8
Background no
Syslog no
PidFile $d/pid
CONF
    echo "$d/opendkim.conf"
}
start_opendkim() { /usr/sbin/opendkim -f -x "$1" >"$1.log" 2>&1 & pid=$!; pids+=("$pid"); sleep 1; }

odv=- rsv=- dmv=-
if [ "$PEERS" = 1 ]; then
    odv=$(opendkim -V | head -1 | awk '{print $NF}')
    rsv=$(/usr/bin/rspamd -v | head -1 | awk '{print $NF}')
    dmv=$(opendmarc -V 2>&1 | head -1 | awk '{print $NF}')
fi
echo "== $N messages of ${SIZE} bytes, $S concurrent SMTP sessions, Postfix $(postconf -d -h mail_version)"
run "Postfix, no milter" ""

sockets() { # tag → sets mspec (mailseal/opendkim syntax) and pspec (Postfix syntax)
    if [ "$sock" = tcp ]; then local p; p=$(free_port); mspec="inet:$p@127.0.0.1"; ospec=$mspec; pspec="inet:127.0.0.1:$p";
    else mspec="unix:$work/$1.sock"; ospec="local:$work/$1.sock"; pspec="unix:$work/$1.sock"; fi
}
# rspamd's own socket syntax: tag → rspec ("127.0.0.1:PORT" or "/path mode=0666", in a
# directory _rspamd may write) and rpspec (Postfix syntax).
rspamd_sockets() {
    if [ "$sock" = tcp ]; then local p; p=$(free_port); rspec="127.0.0.1:$p"; rpspec="inet:127.0.0.1:$p";
    else mkdir -p "$work/rs-sock"; chown _rspamd "$work/rs-sock"; rspec="$work/rs-sock/$1.sock mode=0666"; rpspec="unix:$work/rs-sock/$1.sock"; fi
}

if [ "$ONLY" = all ] || [ "$ONLY" = sign ]; then
for sock in ${BENCH_SOCKETS:-tcp unix}; do
    sockets "ms-$sock"
    cfg=$(mk_mailseal "rsa-$sock" "$mspec" '*@example.com rsa\n' false)
    start_mailseal "$cfg"
    run "mailseal sign RSA-2048 ($sock)" "$pspec" "$pid"
    kill "$pid"; wait "$pid" 2>/dev/null || true

    sockets "ms2-$sock"
    cfg=$(mk_mailseal "dual-$sock" "$mspec" '*@example.com rsa\n*@example.com ed\n' true)
    start_mailseal "$cfg"
    run "mailseal sign RSA-2048 + Ed25519 ($sock)" "$pspec" "$pid"
    kill "$pid"; wait "$pid" 2>/dev/null || true

    [ "$PEERS" = 1 ] || continue
    sockets "od-$sock"
    cfg=$(mk_opendkim "$ospec")
    start_opendkim "$cfg"
    run "OpenDKIM $odv sign RSA-2048 ($sock)" "$pspec" "$pid"
    kill "$pid"; wait "$pid" 2>/dev/null || true

    rspamd_sockets "rs-$sock"
    cfg=$(mk_rspamd sign "$rspec")
    start_rspamd "$cfg" "$rpspec"
    run "rspamd $rsv sign RSA-2048 ($sock)" "$rpspec" "$pid"
    stop_all "$pid"
done
fi

# --- verifying: DNS on 127.0.0.1:53, a message signed once, then checked by each stack.
if [ "$ONLY" = all ] || [ "$ONLY" = verify ]; then
mkdir -p "$work/knot/zones" "$work/knot/db"
pubkey=$(openssl pkey -in "$work/keys/rsa.pem" -pubout -outform DER 2>/dev/null | base64 -w0)
cat >"$work/knot/zones/example.com.zone" <<ZONE
\$ORIGIN example.com.
\$TTL 3600
@ SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 300
@ NS ns.example.com.
ns A 127.0.0.1
@ TXT "v=spf1 ip4:127.0.0.1 -all"
client TXT "v=spf1 ip4:127.0.0.1 -all"
client A 127.0.0.1
_dmarc TXT "v=DMARC1; p=reject"
rsa._domainkey TXT "v=DKIM1; k=rsa; p=${pubkey:0:200}" "${pubkey:200}"
ZONE
# The DMARC tree walk also asks _dmarc.com: serve an empty com. so it gets NXDOMAIN.
cat >"$work/knot/zones/com.zone" <<ZONE
\$ORIGIN com.
\$TTL 3600
@ SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 300
@ NS ns.example.com.
ZONE
cat >"$work/knot/knot.conf" <<CONF
server:
    listen: 127.0.0.1@53
    rundir: $work/knot
database:
    storage: $work/knot/db
template:
  - id: default
    storage: $work/knot/zones
    file: "%s.zone"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: com
  - domain: example.com
CONF
/usr/sbin/knotd -c "$work/knot/knot.conf" >"$work/knot/log" 2>&1 & pids+=($!)
sleep 1

# The message: signed once by mailseal (rsa-sha256, relaxed/simple), identical for every run.
msgdir=$work/ms-signer; mkdir -p "$msgdir"
printf 'rsa example.com:rsa:%s\n' "$work/keys/rsa.pem" >"$msgdir/key.table"
printf '*@example.com rsa\n' >"$msgdir/signing.table"
printf 'mode = "s"\n[signing]\nkey_table = "key.table"\nsigning_table = "signing.table"\n' >"$msgdir/mailseal.toml"
{
    printf 'From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: benchmark\r\n'
    printf 'Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench@example.com>\r\n\r\n'
    for i in $(seq 1 52); do printf 'line %02d of the benchmark message body, about seventy bytes long....\r\n' "$i"; done
} | "$ms" sign -c "$msgdir/mailseal.toml" | sed 's/$/\r/; s/\r\r$/\r/' >"$work/signed.eml"
grep -q '^DKIM-Signature' "$work/signed.eml" || { echo "could not sign the benchmark message" >&2; exit 1; }

for sock in ${BENCH_SOCKETS:-tcp unix}; do
    sockets "msv-$sock"
    cfg=$(mk_mailseal_verify "$sock" "$mspec")
    start_mailseal "$cfg"
    run "mailseal verify SPF+DKIM+DMARC ($sock)" "$pspec" "$pid" "$work/signed.eml"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    [ "$PEERS" = 1 ] || continue

    sockets "odv-$sock"; od_spec=$ospec; od_pf=$pspec
    sockets "dm-$sock"; dm_spec=$ospec; dm_pf=$pspec
    cfg=$(mk_opendkim_verify "$od_spec")
    unshare -m sh -c "$resolver_ns" sh /usr/sbin/opendkim -f -x "$cfg" >"$cfg.log" 2>&1 & od_pid=$!; pids+=("$od_pid")
    cfg=$(mk_opendmarc "$dm_spec")
    unshare -m sh -c "$resolver_ns" sh /usr/sbin/opendmarc -f -c "$cfg" >"$cfg.log" 2>&1 & dm_pid=$!; pids+=("$dm_pid")
    sleep 1
    run "OpenDKIM $odv + OpenDMARC $dmv verify ($sock)" "$od_pf, $dm_pf" "$od_pid $dm_pid" "$work/signed.eml"
    if [ "$sock" = tcp ]; then
        run "OpenDKIM + OpenDMARC + policyd-spf verify ($sock)" "$od_pf, $dm_pf" "$od_pid $dm_pid" "$work/signed.eml" spf
    fi
    kill "$od_pid" "$dm_pid"; wait "$od_pid" "$dm_pid" 2>/dev/null || true

    rspamd_sockets "rsv-$sock"
    cfg=$(mk_rspamd verify "$rspec")
    start_rspamd "$cfg" "$rpspec"
    run "rspamd $rsv verify SPF+DKIM+DMARC ($sock)" "$rpspec" "$pid" "$work/signed.eml"
    stop_all "$pid"
done
# Check that each stack really verified: the sink is not kept, so look at one message.
fi

# --- milter level: the load generator against mailseal and OpenDKIM on a unix socket.
if [ "$ONLY" = all ] || [ "$ONLY" = loadgen ]; then
echo
echo "== milter level (examples/loadgen.rs, unix socket, $((N * 5)) messages, 20 connections x 10 messages, 4 KB)"
lg=$PWD/target/release/examples/loadgen
loadgen() { # name socket pid
    echo "$1:"
    "$lg" --unix "$2" --messages $((N * 5)) --connections 20 --per-connection 10 --pid "$3" | tee "$work/lg.out"
    lg_cpu+=("$1|$(sed -n 's/.*(\([0-9]*\) µs\/message.*/\1/p' "$work/lg.out")")
}
lg_cpu=()
cfg=$(mk_mailseal "lg" "unix:$work/lg.sock" '*@example.com rsa\n' false)
start_mailseal "$cfg"
loadgen "mailseal sign RSA-2048" "$work/lg.sock" "$pid"
kill "$pid"; wait "$pid" 2>/dev/null || true
cfg=$(mk_mailseal "lg-mt" "unix:$work/lg-mt.sock" '*@example.com rsa\n' false)
sed -i 's/^mode = "s"$/mode = "s"\nthreads = 0/' "$cfg"
start_mailseal "$cfg"
loadgen "mailseal sign RSA-2048, threads = 0 (one per CPU)" "$work/lg-mt.sock" "$pid"
kill "$pid"; wait "$pid" 2>/dev/null || true
cfg=$(mk_mailseal "lg-ed" "unix:$work/lg-ed.sock" '*@example.com ed\n' false)
start_mailseal "$cfg"
loadgen "mailseal sign Ed25519 (the signature is about 22 µs; the rest is mailseal's own work)" "$work/lg-ed.sock" "$pid"
kill "$pid"; wait "$pid" 2>/dev/null || true
if [ "$PEERS" = 1 ]; then
    cfg=$(mk_opendkim "local:$work/lg-od.sock")
    start_opendkim "$cfg"
    loadgen "OpenDKIM $odv sign RSA-2048" "$work/lg-od.sock" "$pid"
    kill "$pid"; wait "$pid" 2>/dev/null || true
fi
a=$(printf '%s\n' "${lg_cpu[@]}" | sed -n 's/^mailseal sign RSA-2048|//p')
b=$(printf '%s\n' "${lg_cpu[@]}" | sed -n 's/^OpenDKIM.*|//p')
[ -n "$a" ] && [ -n "$b" ] && printf 'milter level, signing RSA-2048: mailseal CPU per message %.2fx OpenDKIM'"'"'s\n' "$(echo "$a / $b" | bc -l)"
fi

echo
echo "== ratios (same run, same messages)"
get() { for r in "${results[@]}"; do [ "${r%%|*}" = "$1" ] && echo "$r"; done; return 0; }
ceiling=$(get "Postfix, no milter" | cut -d'|' -f2)
ratio() { # label ours theirs
    local a b; a=$(get "$2"); b=$(get "$3")
    [ -n "$a" ] && [ -n "$b" ] || return 0
    printf '%s: throughput %.2fx, CPU per message %.2fx, peak RSS %.2fx; %.0f%% of the no-milter ceiling\n' "$1" \
        "$(echo "$(echo "$a" | cut -d'|' -f2) / $(echo "$b" | cut -d'|' -f2)" | bc -l)" \
        "$(echo "$(echo "$a" | cut -d'|' -f3) / $(echo "$b" | cut -d'|' -f3)" | bc -l)" \
        "$(echo "$(echo "$a" | cut -d'|' -f4) / $(echo "$b" | cut -d'|' -f4)" | bc -l)" \
        "$(echo "100 * $(echo "$a" | cut -d'|' -f2) / $ceiling" | bc -l)"
}
for sock in ${BENCH_SOCKETS:-tcp unix}; do
    ratio "signing RSA-2048 ($sock), mailseal vs OpenDKIM" "mailseal sign RSA-2048 ($sock)" "OpenDKIM $odv sign RSA-2048 ($sock)"
    ratio "signing RSA-2048 ($sock), mailseal vs rspamd" "mailseal sign RSA-2048 ($sock)" "rspamd $rsv sign RSA-2048 ($sock)"
    ratio "verifying ($sock), mailseal vs OpenDKIM + OpenDMARC" "mailseal verify SPF+DKIM+DMARC ($sock)" "OpenDKIM $odv + OpenDMARC $dmv verify ($sock)"
    ratio "verifying ($sock), mailseal vs OpenDKIM + OpenDMARC + policyd-spf" "mailseal verify SPF+DKIM+DMARC ($sock)" "OpenDKIM + OpenDMARC + policyd-spf verify ($sock)"
    ratio "verifying ($sock), mailseal vs rspamd" "mailseal verify SPF+DKIM+DMARC ($sock)" "rspamd $rsv verify SPF+DKIM+DMARC ($sock)"
done
