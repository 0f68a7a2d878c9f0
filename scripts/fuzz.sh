#!/bin/bash
# Run every cargo-fuzz target for a bounded time (default 60 s each), growing the committed
# corpus in fuzz/corpus/. Outside CI's default run. A crash found here is saved by libFuzzer
# under fuzz/artifacts/ and must become a regression test.
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(milter_packets headers tables config)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --version 0.13.2 --locked
# The toolchain here is stable: RUSTC_BOOTSTRAP lets cargo-fuzz use the nightly-only
# sanitizer flags. cargo-fuzz offers no way to pass --ignore-rust-version (mail-parser
# declares 1.98 but builds on 1.95), so a small wrapper adds it to cargo's build and run commands.
wrapper=$(mktemp -d)/cargo
real_cargo=$(command -v cargo)
cat >"$wrapper" <<WRAP
#!/bin/bash
case "\$1" in build|run) cmd=\$1; shift; exec "$real_cargo" "\$cmd" --ignore-rust-version "\$@";; esac
exec "$real_cargo" "\$@"
WRAP
chmod +x "$wrapper"
export RUSTC_BOOTSTRAP=1 PATH="$(dirname "$wrapper"):$PATH"
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "== $t ($secs s)"
    cargo-fuzz fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=262144 2>&1 | tail -4
done
