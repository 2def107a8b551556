#!/usr/bin/env bash
# Builds target/debian/vault-locator_*.deb and target/generate-rpm/vault-locator-*.rpm
# from a clean checkout, installing cargo-deb and cargo-generate-rpm when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
command -v cargo-generate-rpm >/dev/null || cargo install --locked cargo-generate-rpm
cargo build --release --locked --bin vault-locator
strip target/release/vault-locator 2>/dev/null || true
cargo deb --no-build --no-strip
cargo generate-rpm
ls -1 target/debian/*.deb target/generate-rpm/*.rpm
