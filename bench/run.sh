#!/bin/bash
# End-to-end benchmark, side by side: smtp-source → a private Postfix → milter → smtp-sink,
# the same messages for every setup, on TCP and unix milter sockets. Prints msg/s, milter
# CPU seconds per 1000 messages (from /proc) and the milter's peak RSS, and ratios against
# OpenDKIM. Run as root on Debian 12 (installs postfix and opendkim if missing):
#   bash bench/run.sh [MESSAGES] [SESSIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
S=${2:-20}
SIZE=4096
for p in postfix opendkim; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$p" >/dev/null
done
cargo build --release --ignore-rust-version --bin mailseal >/dev/null 2>&1
ms=$PWD/target/release/mailseal
# OpenDKIM refuses files below world-writable directories such as /tmp.
work=$(mktemp -d /var/lib/mailseal-bench.XXXXXX)
chmod 755 "$work"
mkdir -m 700 "$work/keys"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "${pf:-}" ] && /usr/sbin/postfix -c "$pf/etc" stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
(umask 077
 openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/keys/rsa.pem" 2>/dev/null
 openssl genpkey -algorithm ed25519 -out "$work/keys/ed.pem")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

stat_of() { # pid → "cpu_seconds hwm_kib"
    local t; t=$(getconf CLK_TCK)
    awk -v t="$t" '{print ($14+$15)/t}' "/proc/$1/stat" | tr '\n' ' '
    awk '/VmHWM/{print $2}' "/proc/$1/status"
}

sink_port=$(free_port)
/usr/sbin/smtp-sink -u postfix 127.0.0.1:"$sink_port" 2000 >/dev/null 2>&1 &
pids+=($!)

# One Postfix instance; the milter line is switched per run (postfix reload).
pf=$work/postfix
mkdir -p "$pf/etc" "$pf/queue" "$pf/data"
smtp_port=$(free_port)
render_postfix() { # milter spec or empty
    for f in main.cf master.cf; do
        sed -e "s#@DIR@#$pf#g" -e "s#@SMTP_PORT@#$smtp_port#g" -e "s#@MILTER@#$1#g" \
            -e "s#@RELAY@#[127.0.0.1]:$sink_port#g" -e "s#@HOSTNAME@#mx.bench.test#g" "tests/e2e/$f" >"$pf/etc/$f"
    done
    if [ -z "$1" ]; then sed -i -e '/^smtpd_milters/d' -e '/^non_smtpd_milters/d' "$pf/etc/main.cf"; fi
    # Benchmark settings: no fast-retry tuning needed, plenty of smtpd processes.
    echo "default_process_limit = 100" >>"$pf/etc/main.cf"
}
chown postfix:postfix "$pf/data"
render_postfix ""
script -qec "/usr/sbin/postfix -c $pf/etc start" /dev/null >/dev/null

queue_empty() { [ -z "$(find "$pf/queue/incoming" "$pf/queue/active" "$pf/queue/deferred" "$pf/queue/maildrop" -type f 2>/dev/null | head -1)" ]; }

# run NAME MILTER_SPEC [PID]
results=()
run() {
    local name=$1 spec=$2 pid=${3:-}
    render_postfix "$spec"
    /usr/sbin/postfix -c "$pf/etc" reload >/dev/null 2>&1
    sleep 1
    local before="0 0"
    [ -n "$pid" ] && before=$(stat_of "$pid")
    local t0; t0=$(date +%s.%N)
    /usr/sbin/smtp-source -l $SIZE -m "$N" -s "$S" -f alice@example.com -t bob@example.org 127.0.0.1:"$smtp_port"
    for _ in $(seq 1 600); do queue_empty && break; sleep 0.1; done
    local t1; t1=$(date +%s.%N)
    local rate; rate=$(echo "$N / ($t1 - $t0)" | bc -l)
    local cpu=- rss=-
    if [ -n "$pid" ]; then
        local after; after=$(stat_of "$pid")
        cpu=$(echo "(${after%% *} - ${before%% *}) * 1000 / $N" | bc -l)
        rss=${after##* }
    fi
    local deferred; deferred=$(find "$pf/queue/deferred" -type f | wc -l)
    printf '%-40s %8.0f msg/s   CPU/1000: %6s s   peak RSS: %8s KiB   deferred: %s\n' \
        "$name" "$rate" "$( [ "$cpu" = - ] && echo - || printf '%.2f' "$cpu")" "$rss" "$deferred"
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

echo "== $N messages of ${SIZE} bytes, $S concurrent SMTP sessions, Postfix $(postconf -d -h mail_version)"
run "Postfix, no milter" ""

for sock in tcp unix; do
    if [ $sock = tcp ]; then p=$(free_port); mspec="inet:$p@127.0.0.1"; pspec="inet:127.0.0.1:$p";
    else mspec="unix:$work/ms-$sock.sock"; pspec="unix:$work/ms-$sock.sock"; fi
    cfg=$(mk_mailseal "rsa-$sock" "$mspec" '*@example.com rsa\n' false)
    start_mailseal "$cfg"
    run "mailseal sign RSA-2048 ($sock)" "$pspec" "$pid"
    kill "$pid"; wait "$pid" 2>/dev/null || true

    if [ $sock = tcp ]; then p=$(free_port); mspec="inet:$p@127.0.0.1"; pspec="inet:127.0.0.1:$p";
    else mspec="unix:$work/ms2-$sock.sock"; pspec="unix:$work/ms2-$sock.sock"; fi
    cfg=$(mk_mailseal "dual-$sock" "$mspec" '*@example.com rsa\n*@example.com ed\n' true)
    start_mailseal "$cfg"
    run "mailseal sign RSA-2048 + Ed25519 ($sock)" "$pspec" "$pid"
    kill "$pid"; wait "$pid" 2>/dev/null || true

    if [ $sock = tcp ]; then p=$(free_port); ospec="inet:$p@127.0.0.1"; pspec="inet:127.0.0.1:$p";
    else ospec="local:$work/od-$sock.sock"; pspec="unix:$work/od-$sock.sock"; fi
    cfg=$(mk_opendkim "$ospec")
    start_opendkim "$cfg"
    run "OpenDKIM $(opendkim -V | head -1 | awk '{print $NF}') sign RSA-2048 ($sock)" "$pspec" "$pid"
    kill "$pid"; wait "$pid" 2>/dev/null || true
done

echo
echo "== ratios (same run, same messages)"
get() { for r in "${results[@]}"; do [ "${r%%|*}" = "$1" ] && echo "$r"; done; return 0; }
ceiling=$(get "Postfix, no milter" | cut -d'|' -f2)
for sock in tcp unix; do
    od=$(get "OpenDKIM $(opendkim -V | head -1 | awk '{print $NF}') sign RSA-2048 ($sock)")
    ms=$(get "mailseal sign RSA-2048 ($sock)")
    od_rate=$(echo "$od" | cut -d'|' -f2); od_cpu=$(echo "$od" | cut -d'|' -f3)
    ms_rate=$(echo "$ms" | cut -d'|' -f2); ms_cpu=$(echo "$ms" | cut -d'|' -f3)
    printf 'signing RSA-2048 (%s): mailseal/OpenDKIM throughput %.2fx, CPU per message %.2fx of OpenDKIM; mailseal reaches %.0f%% of the no-milter ceiling\n' \
        "$sock" "$(echo "$ms_rate / $od_rate" | bc -l)" "$(echo "$ms_cpu / $od_cpu" | bc -l)" "$(echo "100 * $ms_rate / $ceiling" | bc -l)"
done
