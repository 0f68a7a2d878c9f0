# Shared by bench/run.sh and bench/coldcache.sh (sourced): the peers' private configurations.
# Callers set $work (a directory OpenDKIM accepts), the array pids (killed at exit) and, for
# rspamd's keys, $work/keys/rsa.pem. BENCH_DNS is the one resolver every peer uses.
BENCH_DNS=${BENCH_DNS:-127.0.0.1}

# A work directory OpenDKIM accepts (not below a world-writable one such as /tmp), removed
# at exit with every process in pids and the benchmark's Postfix ($pf), if started.
bench_workdir() { # name
    work=$(mktemp -d "/var/lib/mailseal-$1.XXXXXX")
    chmod 755 "$work"
    mkdir -m 700 "$work/keys"
    pids=()
    trap bench_cleanup EXIT
}
bench_cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "${pf:-}" ] && /usr/sbin/postfix -c "$pf/etc" stop >/dev/null 2>&1 || true
    rm -rf "$work"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The benchmark's Postfix ($pf, listening on $smtp_port, relaying to smtp-sink on $sink_port),
# from the end-to-end tests' templates.
render_postfix() { # milter spec or empty; "spf" to check SPF with policyd-spf
    for f in main.cf master.cf; do
        sed -e "s#@DIR@#$pf#g" -e "s#@SMTP_PORT@#$smtp_port#g" -e "s#@MILTER@#$1#g" \
            -e "s#@RELAY@#[127.0.0.1]:$sink_port#g" -e "s#@HOSTNAME@#mx.bench.test#g" "tests/e2e/$f" >"$pf/etc/$f"
    done
    if [ -z "$1" ]; then sed -i -e '/^smtpd_milters/d' -e '/^non_smtpd_milters/d' "$pf/etc/main.cf"; fi
    # Benchmark settings: no fast-retry tuning needed, plenty of smtpd processes.
    echo "default_process_limit = 100" >>"$pf/etc/main.cf"
    if [ "${2:-}" = spf ]; then
        # As its README sets it up, except that 127.0.0.1 is checked rather than skipped.
        printf 'debugLevel = 0\nTestOnly = 1\nHELO_reject = Fail\nMail_From_reject = Fail\nPermError_reject = False\nTempError_Defer = False\nskip_addresses = 192.0.2.255/32\nHeader_Type = AR\nAuthserv_Id = mx.bench.test\n' >"$pf/etc/policyd-spf.conf"
        echo "policyd-spf unix - n n - 0 spawn user=nobody argv=/usr/bin/policyd-spf $pf/etc/policyd-spf.conf" >>"$pf/etc/master.cf"
        printf 'policyd-spf_time_limit = 3600\nsmtpd_recipient_restrictions = check_policy_service unix:private/policyd-spf\n' >>"$pf/etc/main.cf"
    fi
}

# mailseal verifying only, as mx.bench.test, through $BENCH_DNS.
mk_mailseal_verify() { # name socket
    local d=$work/msv-$1
    mkdir -p "$d"
    cat >"$d/mailseal.toml" <<CONF
socket = "$2"
socket_mode = "0666"
mode = "v"
authserv_id = "mx.bench.test"
log_level = "warn"
[signing]
internal_hosts = []
[dns]
nameservers = ["$BENCH_DNS:53"]
CONF
    echo "$d/mailseal.toml"
}

# rspamd: a private configuration with only the modules of the role, the proxy worker as
# milter scanning by itself (no normal worker), DNS from $BENCH_DNS:53. Its key copy and
# socket belong to _rspamd.
mk_rspamd() { # role (sign|verify) bind_socket → config path
    local d=$work/rs-$1-$RANDOM
    mkdir -p "$d/plugins" "$d/db"
    # The dkim C module is loaded for both: dkim_signing signs through it. Signing: the
    # client (127.0.0.1) is local, so rspamd signs and checks nothing. Verifying: checks run
    # for local clients too (rspamd skips loopback clients whatever local_addrs says).
    local mods local_addrs check
    if [ "$1" = sign ]; then
        mods="dkim_signing"; local_addrs='"127.0.0.0/8"'; check=false
    else
        mods="spf dmarc milter_headers"; local_addrs='[]'; check=true
    fi
    for m in $mods; do ln -s "/usr/share/rspamd/plugins/$m.lua" "$d/plugins/"; done
    install -m 600 "$work/keys/rsa.pem" "$d/rsa.pem"
    cat >"$d/rspamd.conf" <<CONF
options {
    pidfile = "$d/rspamd.pid";
    dbdir = "$d/db";
    hs_cache_dir = "$d/db";
    filters = "dkim";
    local_addrs = $local_addrs;
    dns { nameserver = ["$BENCH_DNS:53"]; timeout = 1s; retransmits = 2; }
}
logging { type = "file"; filename = "$d/rspamd.log"; level = "error"; }
modules { path = "$d/plugins"; }
actions { reject = 1000; add_header = 999; greylist = 998; }
worker "rspamd_proxy" {
    bind_socket = "$2";
    milter = yes;
    timeout = 120s;
    upstream "local" { default = yes; self_scan = yes; }
    count = 1;
}
dkim { check_local = $check; check_authed = $check; }
spf { check_local = $check; check_authed = $check; }
dmarc { check_local = $check; check_authed = $check; }
milter_headers { use = ["authentication-results"]; skip_local = false; skip_authenticated = false; }
dkim_signing {
    sign_local = true;
    allow_hdrfrom_mismatch = true;
    use_esld = false;
    domain { example.com { selector = "rsa"; path = "$d/rsa.pem"; } }
}
CONF
    chown -R _rspamd:_rspamd "$d"
    echo "$d/rspamd.conf"
}
# Start rspamd (no fork); $pid is left holding the main process and its workers, once the
# proxy listens (rspamd compiles its rules first: up to 60 s).
start_rspamd() { # config socket_spec_for_postfix
    /usr/bin/rspamd -f -c "$1" -u _rspamd -g _rspamd >"$1.out" 2>&1 &
    local main=$! i
    pids+=("$main")
    for i in $(seq 1 600); do
        case $2 in
            unix:*) [ -S "${2#unix:}" ] && break ;;
            *) ss -ltn | grep -q "${2#inet:}\b" && break ;;
        esac
        sleep 0.1
    done
    sleep 0.5
    pid="$main $(pgrep -d ' ' -P "$main")"
}
stop_all() { # pids
    local p; for p in $1; do kill "$p" 2>/dev/null || true; done
    for p in $1; do wait "$p" 2>/dev/null || true; done
}

mk_opendkim_verify() { # socket
    local d=$work/odv-$RANDOM
    mkdir -p "$d"; chmod 700 "$d"
    echo "192.0.2.255" >"$d/internal"
    cat >"$d/opendkim.conf" <<CONF
Socket $1
UMask 000
Mode v
AuthservID mx.bench.test
InternalHosts $d/internal
Nameservers $BENCH_DNS
Background no
PidFile $d/pid
CONF
    echo "$d/opendkim.conf"
}
mk_opendmarc() { # socket
    local d=$work/dm-$RANDOM
    mkdir -p "$d"; chmod 700 "$d"
    echo "192.0.2.255" >"$d/ignore"
    cat >"$d/opendmarc.conf" <<CONF
Socket $1
UMask 000
AuthservID mx.bench.test
TrustedAuthservIDs mx.bench.test
IgnoreHosts $d/ignore
SPFSelfValidate true
SPFIgnoreResults true
PublicSuffixList /usr/share/publicsuffix/public_suffix_list.dat
RejectFailures false
Background no
Syslog false
PidFile $d/pid
CONF
    echo "$d/opendmarc.conf"
}

