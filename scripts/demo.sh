#!/bin/bash
# Build mailseal and run it in the foreground on the example configuration
# (inet:8891@127.0.0.1). Makes the example keys first if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/example-keys.sh
exec cargo run --release --ignore-rust-version -- run -c config/mailseal.toml
