#!/bin/bash
# Install what the test suite needs on Debian 12 (when run as root) and run every test.
# CI runs this through .ci/run; newcomers run it directly: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Under sudo, PATH no longer has the invoking user's cargo: use their toolchain.
if ! command -v cargo >/dev/null 2>&1 && [ -n "${SUDO_USER:-}" ]; then
    user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    export CARGO_HOME="${CARGO_HOME:-$user_home/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$user_home/.rustup}"
    export PATH="$CARGO_HOME/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (https://rustup.rs), see README" >&2; exit 1; }

need=(postfix python3-dkim openssl swaks opendkim opendmarc systemd man-db postgresql libxml2-utils bc faketime lintian knot chromium)
missing=()
for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Packages installed just now may have started their daemons (Postfix on port 25 would take
# the tests' port): stop those, and only those. A service that ran before is left alone.
if [ ${#missing[@]} -gt 0 ] && command -v systemctl >/dev/null 2>&1; then
    for p in "${missing[@]}"; do
        case "$p" in postfix|postgresql|opendkim|opendmarc|knot) systemctl stop "$p" >/dev/null 2>&1 || true ;; esac
    done
fi

# The Debian package builds and holds what it should (before the tests, so their summary
# is the last thing printed).
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --version 3.8.0 --locked
bash scripts/package.sh
deb=$(ls -t target/debian/mailseal_*.deb | head -1)
echo "== contents of $deb"
dpkg-deb -c "$deb" | tee target/debian/contents.txt
for f in ./usr/bin/mailseal ./usr/lib/systemd/system/mailseal.service ./usr/lib/sysusers.d/mailseal.conf \
         ./usr/lib/tmpfiles.d/mailseal.conf ./etc/mailseal/mailseal.toml ./usr/share/man/man8/mailseal.8.gz \
         ./usr/share/man/man5/mailseal.toml.5.gz ./usr/share/doc/mailseal/changelog.Debian.gz; do
    grep -q " $f\$" target/debian/contents.txt || { echo "package lacks $f" >&2; exit 1; }
done

# The benchmark still runs: mailseal alone, signing through a private Postfix, a few messages
# (the release build is the package's). The full side-by-side run is bash bench/run.sh.
if [ "$(id -u)" -eq 0 ]; then
    echo "== benchmark smoke: BENCH_ONLY=sign BENCH_PEERS=0 BENCH_SOCKETS=unix bash bench/run.sh 40 4"
    BENCH_ONLY=sign BENCH_PEERS=0 BENCH_SOCKETS=unix bash bench/run.sh 40 4 | tee target/bench-smoke.txt
    grep -q '^mailseal sign RSA-2048 (unix) .* deferred: 0$' target/bench-smoke.txt &&
        grep -q 'last message: 1 DKIM-Signature' target/bench-smoke.txt ||
        { echo "benchmark smoke: mailseal did not sign every message" >&2; exit 1; }
    echo "== cold-cache benchmark smoke: BENCH_PEERS=0 bash bench/coldcache.sh 240 2"
    BENCH_PEERS=0 bash bench/coldcache.sh 240 2 | tee target/coldcache-smoke.txt
    [ "$(grep -cE ' ([0-9]+)/\1 +ok ' target/coldcache-smoke.txt)" = 8 ] ||
        { echo "cold-cache benchmark smoke: not every message was verified" >&2; exit 1; }
fi

mkdir -p target
set +e
cargo test --ignore-rust-version --all-targets 2>&1 | tee target/test-output.txt
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo prints one per test binary, the last of which
# may be a target without tests), also when tests failed; then cargo's exit status.
awk '/^test result:/ { p += $4; f += $6 } END { printf "total: %d passed, %d failed\n", p, f }' target/test-output.txt
exit "$status"
