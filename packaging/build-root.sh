#!/usr/bin/env bash
# Makes the release build root once (target/build-root, or $BUILD_ROOT) and prints its
# path. packaging/build.sh builds both architectures' binaries inside it, so every
# package comes from one named toolchain at fixed paths, wherever the checkout lives:
#
# - Debian sid, debootstrapped: Debian's rustc and cargo (1.97.1 when this was written)
#   with Debian's arm64 standard library (libstd-rust-dev:arm64). rustup cannot fetch
#   other targets from this network; Debian can. trixie's 1.85 is older than what the
#   dependency tree needs (1.89: uuid, time, icu_*).
# - zig from the ziglang wheel and cargo-zigbuild: links against glibc 2.28 for x86_64
#   and aarch64 alike, whatever glibc the root has (sid's is 2.41+).
# - cargo-auditable (the dependency list embedded in the binary) and cargo-cyclonedx
#   (the SBOM shipped in the packages).
# Tool versions are pinned here: a different zig or cargo-auditable writes a different
# binary. The toolchain that built a release is recorded in its BUILDINFO.
# Needs root (debootstrap, chroot).
set -euo pipefail
cd "$(dirname "$0")/.."
root=${BUILD_ROOT:-$PWD/target/build-root}
zig_version=0.17.1
tools=(cargo-zigbuild@0.24.1 cargo-auditable@0.7.7 cargo-cyclonedx@0.5.9)
stamp="$root/.vault-locator-build-root"
want="zig $zig_version ${tools[*]}"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "$root"; exit 0
fi
[ "$(id -u)" = 0 ] || { echo "build-root: needs root (debootstrap, chroot)" >&2; exit 1; }
log=$(mktemp); trap 'rm -f "$log"' EXIT
fail() { echo "build-root: $1" >&2; tail -20 "$log" >&2; exit 1; }
command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }

if [ ! -x "$root/usr/bin/cargo" ]; then
    rm -rf "$root"
    debootstrap --variant=minbase sid "$root" http://deb.debian.org/debian >"$log" 2>&1 \
        || { rm -rf "$root"; fail "debootstrap sid failed"; }
    # The mirror serves a snapshot of sid whose Release file is past its Valid-Until
    # date: apt would refuse it, and there is no fresher one to fetch.
    echo 'Acquire::Check-Valid-Until "false";' > "$root/etc/apt/apt.conf.d/99snapshot"
    chroot "$root" dpkg --add-architecture arm64
    { chroot "$root" apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends \
            rustc cargo libstd-rust-dev:arm64 ca-certificates; } >"$log" 2>&1 \
        || { rm -rf "$root"; fail "installing Debian's rustc, cargo and arm64 std failed"; }
fi

# zig: the ziglang wheel's static binary and its lib/ (zig finds lib/ beside itself).
venv=target/zig-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv" 2>/dev/null \
    || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$venv"; }
"$venv/bin/pip" install -q "ziglang==$zig_version" >"$log" 2>&1 || fail "pip install ziglang failed"
rm -rf "$root/opt/ziglang"
mkdir -p "$root/opt"
cp -a "$("$venv/bin/python" -c 'import ziglang, os; print(os.path.dirname(ziglang.__file__))')" "$root/opt/ziglang"
ln -sf /opt/ziglang/zig "$root/usr/local/bin/zig"

# The cargo tools, built by this host's toolchain straight into the root's /usr/local.
cargo install --quiet --locked --root "$root/usr/local" "${tools[@]}" >"$log" 2>&1 \
    || fail "cargo install ${tools[*]} failed"
echo "$want" > "$stamp"
echo "$root"
