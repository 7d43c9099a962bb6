#!/usr/bin/env bash
# Build the reference servers (tokio echo, tokio HTTP, monoio echo) into target/peers/release.
# They are built from crates.io only for benchmarking; nothing here is part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --manifest-path bench-scripts/peers/Cargo.toml --target-dir target/peers
ls -1 target/peers/release/{tokio-echo,tokio-http,monoio-echo}
