#!/usr/bin/env bash
# Packaging checks: build the .deb and .rpm, inspect them, install the .deb into a
# throwaway root, verify and score the systemd unit, and run the Ansible role for real
# (twice, for idempotence) plus ansible-lint. Prints "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
root_dir="$(pwd)"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
. packaging/checks.sh
has() { grep -qE -- "$2" "$1"; }

# rpm (rpm2cpio) and cpio unpack the .rpm; file names a binary's machine.
missing=()
for tool in rpm:rpm cpio:cpio file:file; do command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}"); done
[ ${#missing[@]} = 0 ] || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
# Ansible and ansible-lint, in a virtual environment under target/ (PEP 668).
venv=$(packaging/ansible-venv.sh)
export PATH="$venv/bin:$PATH"
# promtool, for the alert rules: Debian's prometheus package, its service kept from
# starting while it installs (policy-rc.d says no; a policy already there is kept).
if ! command -v promtool >/dev/null; then
    policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; made_policy=1; fi
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; } >/dev/null 2>&1
    [ "$made_policy" = 1 ] && rm -f "$policy"
fi

packaging/build.sh >"$work/build.log" 2>&1 || { cat "$work/build.log"; echo "0 passed, 1 failed"; exit 1; }
command -v lintian >/dev/null || { apt-get install -y -qq lintian >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq lintian >/dev/null; }; }
command -v rpmlint >/dev/null || { apt-get update -qq && apt-get install -y -qq rpmlint >/dev/null; }
# rust-audit-info reads the dependency list cargo-auditable embeds (as `cargo audit
# bin` does, without needing the advisory database).
command -v rust-audit-info >/dev/null || cargo install --quiet --locked rust-audit-info@0.5.4
dist=target/dist
version=$(cargo metadata --no-deps --format-version 1 --locked \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["packages"][0]["version"])')
# The host's packages: installed below, by dpkg, by the role, and in the host lab.
deb="$dist/vault-locator_${version}-1_amd64.deb"
rpmf="$dist/vault-locator-${version}-1.x86_64.rpm"

check "the release has both architectures' packages and SBOMs, and SHA256SUMS over them" bash -c "
    cd $dist && for f in vault-locator_${version}-1_amd64.deb vault-locator_${version}-1_arm64.deb \
        vault-locator-${version}-1.x86_64.rpm vault-locator-${version}-1.aarch64.rpm \
        vault-locator-${version}.x86_64.cdx.json vault-locator-${version}.aarch64.cdx.json; do
        grep -q \"  \$f\$\" SHA256SUMS || { echo \"\$f not in SHA256SUMS\"; exit 1; }; done
    sha256sum -c SHA256SUMS && grep -q '^source: [0-9a-f]\{40\}' BUILDINFO"

# --- each architecture: contents, lintian, rpmlint, the ELF machine, the glibc floor,
# the SBOM shipped, and the dependency list in the binary agreeing with it.
for arch in x86_64 aarch64; do
    a_deb="$dist/vault-locator_${version}-1_$([ "$arch" = x86_64 ] && echo amd64 || echo arm64).deb"
    a_rpm="$dist/vault-locator-${version}-1.$arch.rpm"
    machine=$([ "$arch" = x86_64 ] && echo x86-64 || echo "ARM aarch64")
    dpkg-deb -c "$a_deb" > "$work/deb.list"
    for p in ./usr/bin/vault-locator ./usr/lib/systemd/system/vault-locator.service \
             ./usr/lib/sysusers.d/vault-locator.conf ./etc/vault-locator/config.toml \
             ./etc/systemd/resolved.conf.d/vault-locator.conf \
             ./etc/dnssec-trust-anchors.d/vault-locator.negative \
             ./usr/share/vault-locator/vault-locator.rules.yml \
             ./usr/share/vault-locator/vault-locator.dashboard.json \
             ./usr/share/man/man1/vault-locator.1.gz ./usr/share/man/man1/vault-locator-run.1.gz \
             ./usr/share/bash-completion/completions/vault-locator \
             ./usr/share/zsh/vendor-completions/_vault-locator \
             ./usr/share/fish/vendor_completions.d/vault-locator.fish \
             ./usr/share/doc/vault-locator/copyright ./usr/share/doc/vault-locator/changelog.gz \
             ./usr/share/doc/vault-locator/docs/leader.md \
             ./usr/share/doc/vault-locator/vault-locator.cdx.json; do
        check "[$arch] deb ships $p" has "$work/deb.list" " $p\$"
    done
    rpm -qlp "$a_rpm" > "$work/rpm.list" 2>/dev/null
    for p in /usr/bin/vault-locator /usr/lib/systemd/system/vault-locator.service \
             /usr/lib/sysusers.d/vault-locator.conf /etc/vault-locator/config.toml \
             /etc/systemd/resolved.conf.d/vault-locator.conf \
             /usr/share/vault-locator/vault-locator.rules.yml \
             /usr/share/vault-locator/vault-locator.dashboard.json \
             /usr/share/man/man1/vault-locator.1.gz /usr/share/man/man1/vault-locator-run.1.gz \
             /usr/share/licenses/vault-locator/LICENSE \
             /usr/share/bash-completion/completions/vault-locator \
             /usr/share/zsh/site-functions/_vault-locator \
             /usr/share/fish/vendor_completions.d/vault-locator.fish \
             /usr/share/doc/vault-locator/docs/leader.md \
             /usr/share/doc/vault-locator/vault-locator.cdx.json; do
        check "[$arch] rpm ships $p" has "$work/rpm.list" "^$p\$"
    done
    # lintian and rpmlint: clean (each override or filter, beside its reason, in
    # packaging/deb/lintian-overrides and packaging/rpm/rpmlint.toml).
    check "[$arch] lintian reports nothing on the .deb" bash -c "lintian --tag-display-limit 0 '$a_deb' 2>&1 | grep -v 'running with root privileges' | tee /dev/stderr | (! grep -qE '^[EW]: ')"
    check "[$arch] rpmlint reports nothing on the .rpm" bash -c "rpmlint -c packaging/rpm/rpmlint.toml '$a_rpm' 2>&1 | tee /dev/stderr | grep -q ' 0 errors, 0 warnings'"

    # The binary is the architecture's, the same in both packages, and runs on glibc
    # 2.28 (RHEL/Rocky 8, Debian 10) and later.
    mkdir -p "$work/$arch"
    dpkg-deb -x "$a_deb" "$work/$arch/deb"
    rpm2cpio "$a_rpm" | (mkdir -p "$work/$arch/rpm" && cd "$work/$arch/rpm" && cpio -idm --quiet)
    bin="$work/$arch/deb/usr/bin/vault-locator"
    check "[$arch] the packaged binary is an $machine ELF" bash -c "file -b '$bin' | grep -q 'ELF 64-bit LSB .*, $machine,'"
    check "[$arch] the deb and the rpm ship the same binary and SBOM" bash -c "
        cmp '$bin' '$work/$arch/rpm/usr/bin/vault-locator' &&
        cmp '$work/$arch/deb/usr/share/doc/vault-locator/vault-locator.cdx.json' '$work/$arch/rpm/usr/share/doc/vault-locator/vault-locator.cdx.json'"
    glibc=$(objdump -T "$bin" | grep -oE 'GLIBC_[0-9.]+' | sort -uV | tail -1)
    echo "     [$arch] highest glibc symbol version: $glibc"
    check "[$arch] packaged binary needs glibc <= 2.28 (got $glibc)" \
        bash -c "[ -n '$glibc' ] && [ \"\$(printf '%s\n' GLIBC_2.28 '$glibc' | sort -V | tail -1)\" = GLIBC_2.28 ]"
    check "[$arch] the deb asks for the glibc the binary needs (libc6 >= 2.28)" \
        bash -c "dpkg-deb -f '$a_deb' Depends | grep -q 'libc6 (>= 2.28)'"
    # What is inside: the dependency list cargo-auditable embedded, against the SBOM.
    # Every crate linked at run time is in the SBOM; every SBOM entry is in the
    # binary's list (the SBOM keeps proc-macros, which auditable marks "build").
    check "[$arch] the binary carries its dependency list, and the SBOM agrees with it" bash -c "
        rust-audit-info '$bin' > '$work/$arch/audit.json' &&
        python3 - '$work/$arch/audit.json' '$work/$arch/deb/usr/share/doc/vault-locator/vault-locator.cdx.json' '$arch' <<'PY'
import json, sys
audit = json.load(open(sys.argv[1]))['packages']
sbom = json.load(open(sys.argv[2]))
crates = {(p['name'], p['version']) for p in audit if not p.get('root')}
runtime = {(p['name'], p['version']) for p in audit if not p.get('root') and p.get('kind', 'runtime') == 'runtime'}
listed = {(c['name'], c['version']) for c in sbom['components']}
props = {p['name']: p['value'] for p in sbom['metadata'].get('properties', [])}
assert len(runtime) > 100, f'only {len(runtime)} crates in the binary'
assert ('tokio', next(v for n, v in runtime if n == 'tokio')) in listed
assert runtime <= listed, f'linked but not in the SBOM: {sorted(runtime - listed)}'
assert listed <= crates, f'in the SBOM but not in the binary: {sorted(listed - crates)}'
assert props.get('cdx:rustc:sbom:target:triple') == sys.argv[3] + '-unknown-linux-gnu', props
assert all(p.get('source') in ('crates.io', 'local') for p in audit), 'a crate from elsewhere'
print(f'{len(runtime)} crates linked, {len(listed)} in the SBOM')
PY"
done
check "the SHA256SUMS' SBOMs are the packaged ones" bash -c "
    cmp $dist/vault-locator-${version}.x86_64.cdx.json '$work/x86_64/deb/usr/share/doc/vault-locator/vault-locator.cdx.json' &&
    cmp $dist/vault-locator-${version}.aarch64.cdx.json '$work/aarch64/deb/usr/share/doc/vault-locator/vault-locator.cdx.json'"

# --- the man page renders, the completions load
check "the man page renders" bash -c "dpkg-deb --fsys-tarfile '$deb' | tar -xO ./usr/share/man/man1/vault-locator.1.gz | gunzip | grep -q 'vault-locator'"
check "the bash completion loads and completes the subcommands" bash -c "
    dpkg-deb --fsys-tarfile '$deb' | tar -xO ./usr/share/bash-completion/completions/vault-locator > '$work/completion.bash'
    source '$work/completion.bash'; COMP_WORDS=(vault-locator st); COMP_CWORD=1; COMP_LINE='vault-locator st'; COMP_POINT=\${#COMP_LINE}
    _vault__locator vault-locator st vault-locator; printf '%s\n' \"\${COMPREPLY[@]}\" | grep -qx status"
check "LICENSE is the licence Cargo.toml names (MPL-2.0)" \
    bash -c "grep -q '^license = \"MPL-2.0\"' Cargo.toml && head -1 LICENSE | grep -q 'Mozilla Public License Version 2.0'"

# --- alert rules and dashboard
mon=packaging/monitoring
check "promtool check rules" promtool check rules "$mon/vault-locator.rules.yml"
check "promtool test rules (the alerts fire on the cases they are for)" \
    bash -c "cd '$mon' && promtool test rules vault-locator.rules.test.yml"
check "the dashboard is JSON" python3 -m json.tool "$mon/vault-locator.dashboard.json"
# Every metric the rules and the dashboard use is one the agent exports.
grep -oE '"vault_locator_[a-z_]+"' src/telemetry.rs | tr -d '"' | sort -u > "$work/metrics.known"
grep -ohE 'vault_locator_[a-z_]+' "$mon/vault-locator.rules.yml" "$mon/vault-locator.dashboard.json" \
    | sed -E 's/_(bucket|sum|count)$//' | sort -u > "$work/metrics.used"
check "rules and dashboard use only exported metrics" \
    bash -c "comm -23 '$work/metrics.used' '$work/metrics.known' | tee /dev/stderr | (! grep -q .)"
dpkg-deb -e "$deb" "$work/control"
check "deb marks the config as a conffile" has "$work/control/conffiles" '^/etc/vault-locator/config.toml$'
check "deb postinst creates the user and enables on install (debhelper-style)" \
    bash -c "grep -q systemd-sysusers '$work/control/postinst' && grep -q 'deb-systemd-helper enable vault-locator' '$work/control/postinst'"
check "deb postinst restarts on upgrade" has "$work/control/postinst" 'then action=restart'
check "deb prerm stops on removal, postrm forgets the unit (debhelper-style)" \
    bash -c "grep -q 'deb-systemd-invoke stop vault-locator' '$work/control/prerm' && grep -q 'deb-systemd-helper purge vault-locator' '$work/control/postrm'"
check "deb postrm drops the config only on purge" has "$work/control/postrm" 'purge'

# --- .rpm config(noreplace), scriptlets
rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpmf" > "$work/rpm.flags" 2>/dev/null
check "rpm marks the config %config(noreplace)" has "$work/rpm.flags" '^/etc/vault-locator/config.toml cn'
rpm -qp --scripts "$rpmf" > "$work/rpm.scripts" 2>/dev/null
check "rpm %post enables on install" has "$work/rpm.scripts" 'enable --now vault-locator'
check "rpm %preun disables on removal" has "$work/rpm.scripts" 'disable --now vault-locator'
check "rpm %postun restarts on upgrade" has "$work/rpm.scripts" 'try-restart vault-locator'
rpm -qip "$rpmf" > "$work/rpm.info" 2>/dev/null
for tag in Packager Group License; do
    check "rpm has a $tag" has "$work/rpm.info" "^$tag +: [^ ]"
done
check "rpm has a changelog" bash -c "rpm -qp --changelog '$rpmf' 2>/dev/null | grep -q '^\* '"

# --- install the .deb into a throwaway root
troot="$work/root"
mkdir -p "$troot/var/lib/dpkg/updates" "$troot/var/lib/dpkg/info" "$troot/etc" "$troot/bin"
touch "$troot/var/lib/dpkg/status"
check "deb installs into a throwaway root" \
    dpkg --root="$troot" --force-script-chrootless --force-depends --force-not-root \
         --log=/dev/null -i "$deb"
check "installed: binary, unit, config" test -x "$troot/usr/bin/vault-locator" -a \
    -f "$troot/usr/lib/systemd/system/vault-locator.service" -a -f "$troot/etc/vault-locator/config.toml"
check "installed: the vault-locator user" has "$troot/etc/passwd" '^vault-locator:'
check "installed binary accepts the installed example config" \
    "$troot/usr/bin/vault-locator" check-config --config "$troot/etc/vault-locator/config.toml"
check "dpkg knows the conffile" bash -c "dpkg --root='$troot' --status vault-locator | grep -A3 Conffiles | grep -q /etc/vault-locator/config.toml"

# --- the unit
# verify resolves the unit's dependencies and commands inside the root: give it the
# host's targets, which a real system has (the unit needs no kill(1)).
cp -n /usr/lib/systemd/system/*.target "$troot/usr/lib/systemd/system/" 2>/dev/null || true
check "systemd-analyze verify" systemd-analyze verify --root="$troot" /usr/lib/systemd/system/vault-locator.service
score=$(systemd-analyze security --offline=true systemd/vault-locator.service 2>/dev/null | sed -n 's/.*Overall exposure level for vault-locator.service: \([0-9.]*\).*/\1/p')
echo "     systemd-analyze security --offline=true: $score"
check "unit exposure <= 1.5 (got $score)" awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 1.5) }'

# --- the Ansible role, for real, twice
aroot="$work/aroot"; mkdir -p "$aroot"
cat > "$work/play.yml" <<YML
- name: Render vault-locator into a throwaway root
  hosts: localhost
  gather_facts: false
  roles:
    - role: vault_locator
      vars:
        vault_locator_install_package: false
        vault_locator_manage_service: false
        vault_locator_root: "$aroot"
        vault_locator_binary: "$troot/usr/bin/vault-locator"
        vault_locator_datacenter: us-east-1
        vault_locator_dns_records:
          - name: nomad.service.consul
            a: ["10.0.0.9"]
        vault_locator_clusters:
          - name: us-east-1
            nodes: ["http://10.0.1.10:8200", "http://10.0.1.11:8200"]
            poll_interval: 250ms
          - name: us-west-2
            nodes: ["http://10.1.0.10:8200"]
            load_balanced: true
        vault_locator_proxies:
          - cluster: us-east-1
            listen: 127.77.0.1:8201
            answer: true
            routes:
              raft_storage_v1: reject
        vault_locator_replication_clusters: [us-east-1, us-west-2]
        vault_locator_dns_zone_fallback: ["127.0.0.1:8601"]
        vault_locator_dns_udp_answer_limit: 5
YML
export ANSIBLE_ROLES_PATH="$root_dir/packaging/ansible/roles" ANSIBLE_NOCOLOR=1 ANSIBLE_LOCALHOST_WARNING=false
# The Python that runs Ansible, not whatever interpreter discovery finds first.
export ANSIBLE_PYTHON_INTERPRETER="$(python3 -c "import sys; print(sys.executable)")"
ansible-playbook -i localhost, -c local "$work/play.yml" > "$work/run1.log" 2>&1
check "ansible role runs" has "$work/run1.log" 'failed=0'
check "the role renders a config check-config accepts" \
    "$troot/usr/bin/vault-locator" check-config --config "$aroot/etc/vault-locator/config.toml"
check "the role renders every key it has a variable for" bash -c "
    c='$aroot/etc/vault-locator/config.toml'
    grep -q '^zone_fallback = \[\"127.0.0.1:8601\"\]' \$c && grep -q '^udp_answer_limit = 5' \$c &&
    grep -q '^\[replication\]' \$c && grep -q '^ready_timeout = ' \$c && grep -q '^lameduck = ' \$c"
check "no systemd-resolved in the root: its restart is skipped, not failed" \
    bash -c "! grep -q 'RUNNING HANDLER \[vault_locator : Restart systemd-resolved\].*failed' '$work/run1.log'"
ansible-playbook -i localhost, -c local "$work/play.yml" > "$work/run2.log" 2>&1
check "ansible role is idempotent (second run: changed=0)" has "$work/run2.log" 'changed=0.*failed=0'
check "ansible-lint passes" bash -c "cd '$root_dir/packaging/ansible' && ansible-lint roles/vault_locator playbook.yml"

# --- the role on a clean Debian 12: installs the .deb from a local path (apt deb=),
# gives the config the service's group, skips systemd-resolved where it is absent.
# Needs root (debootstrap, chroot); the pristine root is made once under target/ and
# copied for each run.
if [ "$(id -u)" = 0 ]; then
    pristine="$root_dir/target/chroot-bookworm"
    if [ ! -x "$pristine/usr/bin/python3" ]; then
        command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
        rm -rf "$pristine"
        debootstrap --variant=minbase --include=python3,python3-apt,init-system-helpers \
            bookworm "$pristine" http://deb.debian.org/debian > "$work/debootstrap.log" 2>&1 \
            || { tail -20 "$work/debootstrap.log"; rm -rf "$pristine"; }
    fi
    host="$work/bookworm"
    cp -a "$pristine" "$host"
    cp "$deb" "$host/tmp/vault-locator_amd64.deb"
    cp "$dist/vault-locator_${version}-1_arm64.deb" "$host/tmp/vault-locator_arm64.deb"
    # install_play FILE PACKAGES: a play installing from PACKAGES, a map from
    # architecture to path (the role picks this host's).
    install_play() {
        cat > "$1" <<YML
- name: Install vault-locator from a local .deb on a clean Debian 12
  hosts: all
  gather_facts: false
  roles:
    - role: vault_locator
      vars:
        vault_locator_packages_by_architecture: $2
        vault_locator_manage_service: false
        vault_locator_datacenter: us-east-1
        vault_locator_clusters:
          - name: us-east-1
            nodes: ["http://10.0.1.10:8200"]
YML
    }
    install_play "$work/install.yml" \
        '{x86_64: /tmp/vault-locator_amd64.deb, aarch64: /tmp/vault-locator_arm64.deb}'
    install_play "$work/install-arm64-only.yml" '{aarch64: /tmp/vault-locator_arm64.deb}'
    chroot_play() {
        ANSIBLE_PYTHON_INTERPRETER=/usr/bin/python3 \
            ansible-playbook -i "$host," -c community.general.chroot "${1:-$work/install.yml}"
    }
    chroot_play "$work/install-arm64-only.yml" > "$work/install0.log" 2>&1
    check "role on clean Debian 12: no package for x86_64 named, the play fails saying so" \
        bash -c "grep -q 'has no package for this host.s architecture x86_64 (it has: aarch64)' '$work/install0.log' &&
                 ! chroot '$host' dpkg-query -W vault-locator 2>/dev/null"
    chroot_play > "$work/install1.log" 2>&1
    check "role on clean Debian 12: runs" has "$work/install1.log" 'failed=0'
    check "role on clean Debian 12: installs the host's architecture's .deb (amd64) from its path" \
        bash -c "chroot '$host' dpkg-query -W -f '\${Status} \${Architecture}' vault-locator | grep -q 'install ok installed amd64'"
    check "role on clean Debian 12: config is root:vault-locator 0640" \
        bash -c "[ \"\$(chroot '$host' stat -c '%U:%G %a' /etc/vault-locator/config.toml)\" = 'root:vault-locator 640' ]"
    check "role on clean Debian 12: no systemd-resolved, no restart of it" \
        bash -c "grep -A1 'RUNNING HANDLER \\[vault_locator : Restart systemd-resolved\\]' '$work/install1.log' | grep -q '^skipping'"
    chroot_play > "$work/install2.log" 2>&1
    check "role on clean Debian 12: idempotent, install included (changed=0)" has "$work/install2.log" 'changed=0.*failed=0'
else
    echo "skip the role on a clean Debian 12 (needs root: debootstrap, chroot)"
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
