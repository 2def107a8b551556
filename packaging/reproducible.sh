#!/usr/bin/env bash
# Checks that the release is reproducible: builds one commit twice with
# packaging/build.sh, in two clones at different paths, and compares every artefact
# (both architectures' .deb and .rpm, the SBOMs, SHA256SUMS, BUILDINFO) byte for byte.
#
#   packaging/reproducible.sh [COMMIT] [--arch x86_64|aarch64|all] [--against DIST]
#
# (default: HEAD, all). With --against, the first build is one already made (DIST, a
# target/dist/ whose BUILDINFO names COMMIT, built from a clean tree), and only the
# second is built (for one architecture, its files are compared with the first's of
# the same name).
#
# What the two builds share is what a rebuilder shares with the release: the toolchain
# (the release build root, packaging/build-root.sh) and the crates (the host's cargo
# cache, each crate checked against Cargo.lock's checksum). What differs: the checkout
# path and its length, the target directory, the clock, the time zone, the umask.
# Prints both SHA256SUMS, then "reproducible" or the files that differ; exits 1 then.
# Needs root (as build.sh). Each build takes as long as a release build (~10 minutes
# for both architectures on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
commit=HEAD arch=(--arch all) against=
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch=(--arch "$2"); shift 2 ;;
        --against) against=$(realpath "$2"); shift 2 ;;
        -*) echo "usage: packaging/reproducible.sh [COMMIT] [--arch x86_64|aarch64|all] [--against DIST]" >&2; exit 64 ;;
        *) commit=$1; shift ;;
    esac
done
commit=$(git rev-parse --verify "$commit^{commit}")
export BUILD_ROOT=${BUILD_ROOT:-$PWD/target/build-root}
packaging/build-root.sh >/dev/null
one=$(mktemp -d /tmp/vl-repro.XXXXXX)
two=$(mktemp -d /var/tmp/vault-locator-reproducible-second-build.XXXXXX)
trap 'rm -rf "$one" "$two"' EXIT

# build DIR UMASK TZ: a clone of $commit in DIR/src, built; its target/dist/ is kept.
build() {
    git clone --quiet --no-local "$PWD" "$1/src"
    git -C "$1/src" checkout --quiet --detach "$commit"
    (cd "$1/src" && umask "$2" && TZ=$3 packaging/build.sh "${arch[@]}" >"$1/build.log" 2>&1) \
        || { tail -30 "$1/build.log"; echo "reproducible: the build in $1 failed" >&2; exit 1; }
}
if [ -n "$against" ]; then
    grep -qx "source: $commit" "$against/BUILDINFO" \
        || { echo "reproducible: $against was not built from a clean $commit:" >&2; head -1 "$against/BUILDINFO" >&2; exit 1; }
    first=$against
else
    echo "reproducible: building $commit in $one/src"
    build "$one" 0022 UTC
    first=$one/src/target/dist
fi
echo "reproducible: building $commit in $two/src"
build "$two" 0002 Pacific/Auckland
second=$two/src/target/dist

for dist in "$first" "$second"; do echo "== $dist/SHA256SUMS"; cat "$dist/SHA256SUMS"; done
# Every file of the second build, byte for byte against the first's of the same name
# (the second may be of one architecture: its SHA256SUMS is then a part of the first's).
differ=()
for f in "$second"/*; do
    name=$(basename "$f")
    if [ "$name" = SHA256SUMS ]; then
        grep -vxFf "$first/SHA256SUMS" "$f" >/dev/null && differ+=("$name")
    else
        cmp -s "$f" "$first/$name" || differ+=("$name")
    fi
done
if [ ${#differ[@]} = 0 ]; then
    echo "reproducible: $(ls "$second" | wc -l) files identical, commit $commit"
else
    echo "NOT reproducible: ${differ[*]} differ"
    exit 1
fi
