#!/usr/bin/env bash
# The arm64 smoke test: the agent from the arm64 .deb (target/dist/, made by
# packaging/build.sh), run under qemu-user, against a real 3-node OpenBao raft cluster
# (tests/integration/arm64.rs). The arm64 glibc it loads is the release build root's
# (libc6:arm64, installed there with the arm64 standard library).
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(ls -1 target/dist/vault-locator_*_arm64.deb 2>/dev/null | head -1)
[ -f "$deb" ] || { echo "arm64 smoke: no arm64 .deb in target/dist (run packaging/build.sh)" >&2; exit 1; }
command -v qemu-aarch64-static >/dev/null \
    || { apt-get update -qq && apt-get install -y -qq qemu-user-static >/dev/null; }
root=$(packaging/build-root.sh)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$deb" "$work/pkg"
echo "arm64 smoke: $(basename "$deb"), $(file -b "$work/pkg/usr/bin/vault-locator" | cut -d, -f1-2)"
VAULT_LOCATOR_ARM64="$work/pkg/usr/bin/vault-locator" VAULT_LOCATOR_ARM64_SYSROOT="$root" \
VAULT_LOCATOR_QEMU=$(command -v qemu-aarch64-static) \
    cargo test --locked --test integration -- --ignored --exact \
        arm64::arm64_agent_answers_proxies_and_follows_failover
