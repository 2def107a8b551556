#!/usr/bin/env bash
# Makes (once) and prints the path of the virtual environment with Ansible (the full
# package: its collections have the chroot and nsenter connections packaging/test.sh
# and packaging/host-lab.sh use) and ansible-lint, under target/: a stock Debian 12
# python3 refuses global pip installs (PEP 668).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$PWD/target/packaging-venv"
collections="$venv/lib/python3.11/site-packages/ansible_collections/community"
if [ ! -x "$venv/bin/ansible-lint" ] || [ ! -d "$collections/general" ] || [ ! -d "$collections/docker" ]; then
    python3 -m venv "$venv" 2>/dev/null \
        || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$venv"; }
    "$venv/bin/pip" install -q ansible ansible-lint >&2
fi
echo "$venv"
