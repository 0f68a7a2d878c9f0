#!/bin/bash
# Cold and warm caches under real DNS latency, side by side: mailseal, OpenDKIM + OpenDMARC
# and rspamd verify the same corpus of messages from thousands of sender domains
# (examples/coldcache.rs: SPF with nested includes and redirects, DKIM, DMARC at organizational
# domains and some subdomains, some broken), every DNS answer delayed by DELAY_MS, served on
# 127.0.2.53:53 (an address no other test uses; the peers see it through a private
# /etc/resolv.conf in their own mount namespace, mailseal through [dns] nameservers).
#
# For each stack, twice (milter level, then end to end): a fresh daemon (empty caches), then
# at concurrency 1 the first 200 domains (cold), the same 200 again (warm), then at
# concurrency 50 the other domains (cold) and the same again (warm). Each message comes from
# its own client address over its own connection. Milter level: examples/loadgen.rs --corpus
# on unix sockets, latency from MAIL FROM to the end-of-message answer. End to end: loadgen
# --smtp through a private Postfix (XCLIENT sets the client address and HELO) relaying to
# smtp-sink, latency from MAIL FROM to the answer after the final dot. Queries are what the
# DNS server answered per message.
#   bash bench/coldcache.sh [DOMAINS] [DELAY_MS]      (run as root on Debian 12)
# BENCH_PEERS=0 runs mailseal alone.
set -euo pipefail
cd "$(dirname "$0")/.."
DOMAINS=${1:-2000}
DELAY=${2:-20}
PEERS=${BENCH_PEERS:-1}
FIRST=200
BENCH_DNS=127.0.2.53
pkgs=(postfix bc)
[ "$PEERS" = 1 ] && pkgs+=(opendkim opendmarc rspamd publicsuffix)
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$p" >/dev/null
done
cargo build --release --ignore-rust-version --bin mailseal --example loadgen --example coldcache >/dev/null 2>&1
ms=${BENCH_MAILSEAL:-$PWD/target/release/mailseal}
lg=$PWD/target/release/examples/loadgen
cc=$PWD/target/release/examples/coldcache
. bench/lib.sh
bench_workdir coldcache
# rspamd's configuration installs a signing key even when it only verifies.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/keys/rsa.pem" 2>/dev/null

"$cc" corpus --domains "$DOMAINS" --out "$work/corpus" >/dev/null
"$cc" dns --corpus "$work/corpus" --listen "$BENCH_DNS:53" --delay-ms "$DELAY" 2>"$work/dns.log" &
pids+=($!)
sleep 0.5
echo "nameserver $BENCH_DNS" >"$work/resolv.conf"
resolver_ns="mount --bind $work/resolv.conf /etc/resolv.conf && exec \"\$@\""
queries() { cat "$work/corpus/queries" 2>/dev/null || echo 0; }

# Postfix for the end-to-end runs (started with the first stack's milters).
sink_port=$(free_port)
/usr/sbin/smtp-sink -u postfix 127.0.0.1:"$sink_port" 2000 >/dev/null 2>&1 &
pids+=($!)
pf=$work/postfix
mkdir -p "$pf/etc" "$pf/queue" "$pf/data"
chown postfix:postfix "$pf/data"
smtp_port=$(free_port)
postfix_with() { # the milters, Postfix syntax, comma separated
    render_postfix "$1"
    if /usr/sbin/postfix -c "$pf/etc" status >/dev/null 2>&1; then
        /usr/sbin/postfix -c "$pf/etc" reload >/dev/null 2>&1
    else
        script -qec "/usr/sbin/postfix -c $pf/etc start" /dev/null >/dev/null
    fi
    sleep 1
}

rows=()
# measure NAME "PID..." TARGET...: the four runs against running daemons; TARGET is
# "smtp" (through Postfix) or the milters' unix sockets.
measure() {
    local name=$1 pids_=$2; shift 2
    local socks=() s p pidargs=()
    if [ "$1" = smtp ]; then
        socks=(--smtp "127.0.0.1:$smtp_port"); name="$name, Postfix"
    else
        for s in "$@"; do socks+=(--unix "$s"); done
    fi
    for p in $pids_; do pidargs+=(--pid "$p"); done
    local phase skip count conc
    for phase in "cold 1" "warm 1" "cold 50" "warm 50"; do
        set -- $phase
        conc=$2
        if [ "$conc" = 1 ]; then skip=0; count=$FIRST; else skip=$FIRST; count=$((DOMAINS - FIRST)); fi
        local q0; q0=$(queries)
        local out; out=$("$lg" "${socks[@]}" "${pidargs[@]}" --corpus "$work/corpus" --skip "$skip" \
            --messages "$count" --connections "$conc" 2>"$work/lg.err" || true)
        sleep 0.3
        local q1; q1=$(queries)
        local ok rate p50 p99 cpu rss
        ok=$(echo "$out" | sed -n 's/^messages: \([0-9]*\) ok.*/\1/p')
        rate=$(echo "$out" | sed -n 's/.*: \([0-9]*\) msg\/s.*/\1/p')
        p50=$(echo "$out" | sed -n 's/.*p50 \([0-9.]*\) ms.*/\1/p')
        p99=$(echo "$out" | sed -n 's/.*p99 \([0-9.]*\) ms.*/\1/p')
        cpu=$(echo "$out" | sed -n 's/.*(\([0-9]*\) µs\/message.*/\1/p')
        rss=$(echo "$out" | sed -n 's/.*peak \([0-9]*\) KiB.*/\1/p')
        printf '%-43s %-4s c=%-3s %5s/%-5s ok %6s msg/s  p50 %7s ms  p99 %7s ms  %5.1f queries/msg  CPU %5s µs/msg  peak RSS %6s KiB\n' \
            "$name" "$1" "$conc" "${ok:-0}" "$count" "${rate:--}" "${p50:--}" "${p99:--}" \
            "$(echo "($q1 - $q0) / $count" | bc -l)" "${cpu:--}" "${rss:--}"
        [ -s "$work/lg.err" ] && sed 's/^/    /' "$work/lg.err" | head -3
        rows+=("$name|$1|$conc|${p50:-0}|${p99:-0}|${rate:-0}")
    done
}

echo "== $DOMAINS sender domains, every DNS answer after $DELAY ms; unix milter sockets"
cfg=$(mk_mailseal_verify cc "unix:$work/ms.sock")
msv=$("$ms" --version | awk '{print $2}')
for target in milter smtp; do
    rm -f "$work/ms.sock"
    "$ms" run -c "$cfg" >"$cfg.log" 2>&1 & pid=$!; pids+=("$pid")
    for _ in $(seq 1 100); do [ -S "$work/ms.sock" ] && break; sleep 0.1; done
    if [ "$target" = smtp ]; then
        postfix_with "unix:$work/ms.sock"
        measure "mailseal $msv" "$pid" smtp
    else
        measure "mailseal $msv" "$pid" "$work/ms.sock"
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
done

if [ "$PEERS" = 1 ]; then
    odv=$(opendkim -V | head -1 | awk '{print $NF}')
    rsv=$(/usr/bin/rspamd -v | head -1 | awk '{print $NF}')
    dmv=$(opendmarc -V 2>&1 | head -1 | awk '{print $NF}')
    for target in milter smtp; do
        rm -f "$work/od.sock" "$work/dm.sock"
        cfg=$(mk_opendkim_verify "local:$work/od.sock")
        unshare -m sh -c "$resolver_ns" sh /usr/sbin/opendkim -f -x "$cfg" >"$cfg.log" 2>&1 & od_pid=$!; pids+=("$od_pid")
        cfg=$(mk_opendmarc "local:$work/dm.sock")
        unshare -m sh -c "$resolver_ns" sh /usr/sbin/opendmarc -f -c "$cfg" >"$cfg.log" 2>&1 & dm_pid=$!; pids+=("$dm_pid")
        for _ in $(seq 1 100); do [ -S "$work/od.sock" ] && [ -S "$work/dm.sock" ] && break; sleep 0.1; done
        if [ "$target" = smtp ]; then
            postfix_with "unix:$work/od.sock, unix:$work/dm.sock"
            measure "OpenDKIM $odv + OpenDMARC $dmv" "$od_pid $dm_pid" smtp
        else
            measure "OpenDKIM $odv + OpenDMARC $dmv" "$od_pid $dm_pid" "$work/od.sock" "$work/dm.sock"
        fi
        kill "$od_pid" "$dm_pid"; wait "$od_pid" "$dm_pid" 2>/dev/null || true
    done

    mkdir -p "$work/rs-sock"; chown _rspamd "$work/rs-sock"
    for target in milter smtp; do
        rm -f "$work/rs-sock/rs.sock"
        cfg=$(mk_rspamd verify "$work/rs-sock/rs.sock mode=0666")
        start_rspamd "$cfg" "unix:$work/rs-sock/rs.sock"
        if [ "$target" = smtp ]; then
            postfix_with "unix:$work/rs-sock/rs.sock"
            measure "rspamd $rsv" "$pid" smtp
        else
            measure "rspamd $rsv" "$pid" "$work/rs-sock/rs.sock"
        fi
        stop_all "$pid"
    done
fi

echo
echo "== ratios of p50 latency a message adds (same run, same corpus, same DNS)"
# get STACK TARGET PHASE CONCURRENCY → p50
get() {
    local r n ph c p50 p99 rate
    for r in "${rows[@]}"; do
        IFS='|' read -r n ph c p50 p99 rate <<<"$r"
        [[ $n == "$1"* ]] || continue
        if [ "$2" = smtp ]; then [[ $n == *", Postfix" ]] || continue; else [[ $n == *", Postfix" ]] && continue; fi
        [ "$ph" = "$3" ] && [ "$c" = "$4" ] && echo "$p50"
    done
    return 0
}
for target in milter smtp; do
    for phase in "cold 1" "warm 1" "cold 50" "warm 50"; do
        set -- $phase
        a=$(get mailseal "$target" "$1" "$2"); b=$(get rspamd "$target" "$1" "$2"); c=$(get OpenDKIM "$target" "$1" "$2")
        line="$( [ "$target" = smtp ] && echo "end to end" || echo "milter level") $1 c=$2: mailseal p50 ${a:-?} ms"
        [ -n "$a" ] && [ -n "$b" ] && line+=$(printf '; vs rspamd %.2fx' "$(echo "$a / $b" | bc -l)")
        [ -n "$a" ] && [ -n "$c" ] && line+=$(printf '; vs OpenDKIM + OpenDMARC %.2fx' "$(echo "$a / $c" | bc -l)")
        echo "$line"
    done
done
