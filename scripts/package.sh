#!/bin/bash
# Build the Debian package: release binary, man page (from the clap definitions), cargo-deb.
# Prints the path of the .deb. Needs cargo-deb (cargo install cargo-deb --version 3.8.0 --locked).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --ignore-rust-version
mkdir -p target/man
./target/release/mailseal manpage > target/man/mailseal.8
./target/release/mailseal manpage --page config-format > target/man/mailseal.toml.5
# The example tables as shipped: every row commented out (their keys do not exist yet).
mkdir -p target/deb
for t in key.table signing.table; do
    sed -E 's/^([^#[:space:]])/# \1/' "config/$t" > "target/deb/$t"
done
cargo deb --no-build --output target/debian/ 2>&1 | tail -1
