#!/usr/bin/env bash
# Builds target/debian/vault-locator_*.deb and target/generate-rpm/vault-locator-*.rpm
# from a clean checkout, installing cargo-deb and cargo-generate-rpm when missing, with
# the man pages and shell completions generated from the CLI definitions.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
command -v cargo-generate-rpm >/dev/null || cargo install --locked cargo-generate-rpm
cargo build --release --locked --bin vault-locator
strip target/release/vault-locator 2>/dev/null || true
# Man pages and completions from the clap definitions (packaging/gen-docs.rs).
rm -rf target/assets
cargo run --release --locked --quiet --example gen-docs -- target/assets >/dev/null
gzip -9n target/assets/*.1
cargo deb --no-build --no-strip
cargo generate-rpm
ls -1 target/debian/*.deb target/generate-rpm/*.rpm
