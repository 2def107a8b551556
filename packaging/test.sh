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

command -v rpm >/dev/null || { apt-get update -qq && apt-get install -y -qq rpm >/dev/null; }
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
deb=$(ls -1t target/debian/vault-locator_*.deb | head -1)
rpmf=$(ls -1t target/rpm/vault-locator-*.rpm | head -1)

# --- .deb contents, conffiles, scripts
dpkg-deb -c "$deb" > "$work/deb.list"
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
         ./usr/share/doc/vault-locator/docs/leader.md; do
    check "deb ships $p" has "$work/deb.list" " $p\$"
done

# --- lintian: clean (the one override, beside its reason, in packaging/deb/)
command -v lintian >/dev/null || { apt-get install -y -qq lintian >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq lintian >/dev/null; }; }
check "lintian reports nothing on the .deb" bash -c "lintian --tag-display-limit 0 '$deb' 2>&1 | grep -v 'running with root privileges' | tee /dev/stderr | (! grep -qE '^[EW]: ')"

# --- the binary runs on glibc 2.28 (RHEL/Rocky 8) and later
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/vault-locator > "$work/packaged-bin"
glibc=$(objdump -T "$work/packaged-bin" | grep -oE 'GLIBC_[0-9.]+' | sort -uV | tail -1)
echo "     highest glibc symbol version: $glibc"
check "the deb asks for the glibc the binary needs (libc6 >= 2.28)" \
    bash -c "dpkg-deb -f '$deb' Depends | grep -q 'libc6 (>= 2.28)'"
check "packaged binary needs glibc <= 2.28 (got $glibc)" \
    bash -c "[ \"\$(printf '%s\n' GLIBC_2.28 '$glibc' | sort -V | tail -1)\" = GLIBC_2.28 ]"

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

# --- .rpm contents, config(noreplace), scriptlets
rpm -qlp "$rpmf" > "$work/rpm.list" 2>/dev/null
for p in /usr/bin/vault-locator /usr/lib/systemd/system/vault-locator.service \
         /usr/lib/sysusers.d/vault-locator.conf /etc/vault-locator/config.toml \
         /etc/systemd/resolved.conf.d/vault-locator.conf \
         /usr/share/vault-locator/vault-locator.rules.yml \
         /usr/share/vault-locator/vault-locator.dashboard.json \
         /usr/share/man/man1/vault-locator.1.gz /usr/share/licenses/vault-locator/LICENSE \
         /usr/share/bash-completion/completions/vault-locator \
         /usr/share/doc/vault-locator/docs/leader.md; do
    check "rpm ships $p" has "$work/rpm.list" "^$p\$"
done
rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpmf" > "$work/rpm.flags" 2>/dev/null
check "rpm marks the config %config(noreplace)" has "$work/rpm.flags" '^/etc/vault-locator/config.toml cn'
rpm -qp --scripts "$rpmf" > "$work/rpm.scripts" 2>/dev/null
check "rpm %post enables on install" has "$work/rpm.scripts" 'enable --now vault-locator'
check "rpm %preun disables on removal" has "$work/rpm.scripts" 'disable --now vault-locator'
check "rpm %postun restarts on upgrade" has "$work/rpm.scripts" 'try-restart vault-locator'
for p in /usr/share/man/man1/vault-locator-run.1.gz /usr/share/zsh/site-functions/_vault-locator \
         /usr/share/fish/vendor_completions.d/vault-locator.fish; do
    check "rpm ships $p" has "$work/rpm.list" "^$p\$"
done
rpm -qip "$rpmf" > "$work/rpm.info" 2>/dev/null
for tag in Packager Group License; do
    check "rpm has a $tag" has "$work/rpm.info" "^$tag +: [^ ]"
done
check "rpm has a changelog" bash -c "rpm -qp --changelog '$rpmf' 2>/dev/null | grep -q '^\* '"

# --- rpmlint: clean (each filter, with its reason, in packaging/rpm/rpmlint.toml)
command -v rpmlint >/dev/null || { apt-get update -qq && apt-get install -y -qq rpmlint >/dev/null; }
check "rpmlint reports nothing on the .rpm" bash -c "rpmlint -c packaging/rpm/rpmlint.toml '$rpmf' 2>&1 | tee /dev/stderr | grep -q ' 0 errors, 0 warnings'"

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
    cp "$deb" "$host/tmp/vault-locator.deb"
    cat > "$work/install.yml" <<YML
- name: Install vault-locator from a local .deb on a clean Debian 12
  hosts: all
  gather_facts: false
  roles:
    - role: vault_locator
      vars:
        vault_locator_package: /tmp/vault-locator.deb
        vault_locator_manage_service: false
        vault_locator_datacenter: us-east-1
        vault_locator_clusters:
          - name: us-east-1
            nodes: ["http://10.0.1.10:8200"]
YML
    chroot_play() {
        ANSIBLE_PYTHON_INTERPRETER=/usr/bin/python3 \
            ansible-playbook -i "$host," -c community.general.chroot "$work/install.yml"
    }
    chroot_play > "$work/install1.log" 2>&1
    check "role on clean Debian 12: runs" has "$work/install1.log" 'failed=0'
    check "role on clean Debian 12: installs the .deb from its path" \
        bash -c "chroot '$host' dpkg-query -W -f '\${Status}' vault-locator | grep -q 'install ok installed'"
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
