#!/usr/bin/env bash
# Builds the release into target/dist/: for x86_64 (amd64) and aarch64 (arm64), a .deb
# (cargo-deb, from Cargo.toml's [package.metadata.deb]) and an .rpm (rpmbuild, from
# packaging/rpm/vault-locator.spec), each holding the binary and its CycloneDX SBOM;
# the SBOMs beside them; SHA256SUMS over all of it; BUILDINFO naming the toolchain.
#
#   packaging/build.sh [--arch x86_64|aarch64|all]     (default: all)
#
# The binaries are built in the release build root (packaging/build-root.sh: Debian's
# rustc with an arm64 std, zig, cargo-zigbuild, cargo-auditable, cargo-cyclonedx), with
# the checkout at /src and the crates at /cargo whatever the host's paths are, every
# timestamp from the commit (SOURCE_DATE_EPOCH), against glibc 2.28 (RHEL/Rocky 8,
# Debian 10 and later). Two builds of one commit give the same bytes:
# packaging/reproducible.sh checks it. Needs root (debootstrap, chroot, mount).
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { echo "usage: packaging/build.sh [--arch x86_64|aarch64|all]" >&2; exit 64; }
arches=(x86_64 aarch64)
case "${1:-}" in
    --arch) case "${2:-}" in x86_64 | aarch64) arches=("$2") ;; all) ;; *) usage ;; esac ;;
    "") ;;
    *) usage ;;
esac
[ "$(id -u)" = 0 ] || { echo "build: needs root (the build root is a chroot)" >&2; exit 1; }
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb@3.8.0
command -v rpmbuild >/dev/null || { apt-get update -qq && apt-get install -y -qq rpm >/dev/null; }
root=$(packaging/build-root.sh)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
version=$(cargo metadata --no-deps --format-version 1 --locked \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["packages"][0]["version"])')

# Every crate the lock file names, fetched once on the host into its cargo home, which
# the root sees read-only at /cargo: the build itself runs offline.
cargo_home=${CARGO_HOME:-$HOME/.cargo}
cargo fetch --locked --quiet
# in_root COMMAND...: runs COMMAND in the build root, in a mount namespace of its own
# (the bind mounts vanish with it, even when the build fails), in /src, offline.
in_root() {
    unshare --mount --propagation private -- bash -c '
        set -e; root=$1; shift
        mkdir -p "$root/src" "$root/cargo/registry"
        mount --bind "$PWD" "$root/src"
        mount --bind -o ro "$CARGO_HOME_REGISTRY" "$root/cargo/registry"
        mount -t proc proc "$root/proc"
        exec chroot "$root" env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root \
            CARGO_HOME=/cargo CARGO_NET_OFFLINE=true CARGO_TARGET_DIR=/src/target/build \
            SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" RUSTFLAGS="$RUSTFLAGS" \
            CARGO_PROFILE_RELEASE_STRIP=symbols bash -c "cd /src && \"\$@\"" _ "$@"' \
        _ "$root" "$@"
}
export CARGO_HOME_REGISTRY="$cargo_home/registry"
# The crates' sources are at /cargo/registry/src/<index>/: panic locations name them
# as crates/<index>/..., not by the build machine's layout.
export RUSTFLAGS="--remap-path-prefix=/cargo/registry/src=crates --remap-path-prefix=/src=."

triple() { echo "$1-unknown-linux-gnu"; }
rm -rf target/dist target/package
mkdir -p target/dist
for arch in "${arches[@]}"; do
    t=$(triple "$arch")
    # cargo auditable: the dependency tree, embedded in the binary (`cargo audit bin`,
    # rust-audit-info, Trivy, Syft and Grype read it).
    in_root cargo auditable zigbuild --release --frozen --bin vault-locator --target "$t.2.28"
    # The SBOM of what this target links (build scripts' dependencies left out, the
    # proc-macros kept): cargo-cyclonedx writes it beside Cargo.toml.
    in_root cargo cyclonedx --format json --describe binaries --spec-version 1.5 \
        --no-build-deps --target "$t"
    mkdir -p "target/package/$arch"
    cp "target/build/$t/release/vault-locator" "target/package/$arch/vault-locator"
    mv vault-locator_bin.cdx.json "target/package/$arch/vault-locator.cdx.json"
done

# Man pages and completions from the clap definitions (packaging/gen-docs.rs; a debug
# build on the host is enough: they are text, the same for every architecture).
rm -rf target/assets
cargo run --locked --quiet --example gen-docs -- target/assets >/dev/null
gzip -9n target/assets/*.1
gzip -9nc CHANGELOG.md > target/assets/changelog.gz
# Pinned, so that a rebuild reads the same timestamp into both package formats.
touch -d "@$SOURCE_DATE_EPOCH" target/assets/*

rm -rf target/rpmbuild
for arch in "${arches[@]}"; do
    t=$(triple "$arch")
    deb_arch=$([ "$arch" = x86_64 ] && echo amd64 || echo arm64)
    # Both package recipes read target/package/vault-locator and its SBOM: stage this
    # architecture's.
    cp "target/package/$arch/vault-locator" "target/package/$arch/vault-locator.cdx.json" target/package/
    cargo deb --no-build --no-strip --target "$t" --output "target/dist/vault-locator_${version}-1_${deb_arch}.deb" >/dev/null
    # Timestamps from SOURCE_DATE_EPOCH (build time, file times), no build host name:
    # the same .rpm from the same inputs.
    rpmbuild -bb --quiet --target "$arch" \
        --define "_topdir $PWD/target/rpmbuild" --define "_sourcedir $PWD" \
        --define "_rpmdir $PWD/target/dist" --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
        --define "use_source_date_epoch_as_buildtime 1" --define "clamp_mtime_to_source_date_epoch 1" \
        --define "_buildhost reproducible" \
        --define "pkg_version $version" packaging/rpm/vault-locator.spec
    cp "target/package/$arch/vault-locator.cdx.json" "target/dist/vault-locator-$version.$arch.cdx.json"
done

# What made these bytes, for whoever rebuilds them to compare.
{
    echo "source: $(git rev-parse HEAD)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "SOURCE_DATE_EPOCH: $SOURCE_DATE_EPOCH"
    echo "build root: Debian sid (packaging/build-root.sh)"
    in_root rustc -vV | sed 's/^/  /'
    in_root cargo --version | sed 's/^/  /'
    echo "  $(cat "$root/.vault-locator-build-root")"
    echo "packaged on the host with: $(cargo deb --version), $(rpmbuild --version)"
} > target/dist/BUILDINFO
(cd target/dist && sha256sum -- *.deb *.rpm *.cdx.json > SHA256SUMS)
ls -1 target/dist/*
