#!/usr/bin/env bash
# Builds target/debian/vault-locator_*.deb (cargo-deb) and target/rpm/vault-locator-*.rpm
# (rpmbuild, from packaging/rpm/vault-locator.spec) from a clean checkout, installing
# cargo-deb and rpm when missing, with the man pages and shell completions generated
# from the CLI definitions.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
command -v rpmbuild >/dev/null || { apt-get update -qq && apt-get install -y -qq rpm >/dev/null; }
# The packaged binary links against glibc 2.28 at most, so the packages install on
# RHEL/Rocky 8 and Debian 10+, whatever this host's glibc is: cargo-zigbuild, with zig
# from the ziglang wheel in a virtual environment under target/ (PEP 668).
venv=target/zig-venv
if ! "$venv/bin/python" -m ziglang version >/dev/null 2>&1; then
    python3 -m venv "$venv" 2>/dev/null \
        || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$venv"; }
    "$venv/bin/pip" install -q ziglang
fi
command -v cargo-zigbuild >/dev/null || cargo install --locked cargo-zigbuild
PATH="$PWD/$venv/bin:$PATH" cargo zigbuild --release --locked --bin vault-locator \
    --target x86_64-unknown-linux-gnu.2.28
mkdir -p target/package
cp target/x86_64-unknown-linux-gnu/release/vault-locator target/package/vault-locator
strip target/package/vault-locator 2>/dev/null || true
# Man pages and completions from the clap definitions (packaging/gen-docs.rs; a debug
# build is enough, and the tests have built most of it).
rm -rf target/assets
cargo run --locked --quiet --example gen-docs -- target/assets >/dev/null
gzip -9n target/assets/*.1
gzip -9nc CHANGELOG.md > target/assets/changelog.gz
cargo deb --no-build --no-strip
version=$(cargo metadata --no-deps --format-version 1 --locked \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["packages"][0]["version"])')
rm -rf target/rpm target/rpmbuild
rpmbuild -bb --quiet --define "_topdir $PWD/target/rpmbuild" --define "_sourcedir $PWD" \
    --define "_rpmdir $PWD/target/rpm" --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
    --define "pkg_version $version" packaging/rpm/vault-locator.spec
ls -1 target/debian/*.deb target/rpm/*.rpm
