#!/usr/bin/env bash
# The host lab: the .deb on a booted Debian 12, checked as an operator checks it.
#
# Boots a debootstrapped Debian 12 (systemd as PID 1) under systemd-nspawn with a private
# network, runs a 3-node OpenBao raft cluster inside it as systemd services on the
# container's loopback (127.0.0.1-3), installs the package with the Ansible role (run
# against the booted container through its nsenter connection), and checks: the
# unit active and READY with the leader inside its status, names through the system
# resolver (getent, resolvectl, curl), `systemctl reload` applying a change and failing
# on a bad file, the watchdog restarting a frozen agent, logfmt lines inside the journal, no
# sandbox denial, the exposure score, lookups lost across `systemctl restart` and a
# package upgrade (counted at ~50 Hz through getent), failover through the resolver,
# `vault-locator doctor` healthy and broken, the agent behind dnsmasq and unbound with
# packaging/README.md's snippets, the agent up before OpenBao at boot, remove and purge,
# then the .rpm's scriptlets (install, upgrade, erase). Prints "N passed, N failed"; exits 1 on any failure.
#
# Needs root (nspawn, nsenter); elsewhere it says so and exits 0. The debootstrapped
# root is cached under target/host-lab/ (built once, ~3 min); every run boots a fresh
# copy and removes it, and the container, even when a check fails.
#
#   packaging/host-lab.sh [DEB]     (default: target/dist/'s amd64 .deb)
#
# Given an older package (bench/RESULTS.md measured the one before the file-descriptor
# store this way), the checks that package cannot pass fail and the figures still print.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "host lab: skipped (needs root for systemd-nspawn)"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
deb=${1:-$(ls -1t target/dist/vault-locator_*_amd64.deb 2>/dev/null | head -1)}
[ -f "$deb" ] || { echo "host lab: no .deb (run packaging/build.sh)"; echo "0 passed, 1 failed"; exit 1; }
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
if [ ${#missing[@]} -gt 0 ]; then
    { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; } >/dev/null
fi
scripts/install-openbao >/dev/null
bao=.tools/bin/bao

cache=target/host-lab/root
# python3 and python3-apt: what Ansible's apt module needs on the host it manages; rpm,
# dnsmasq and unbound for the .rpm's scriptlets and the other resolvers.
if [ ! -d "$cache/usr/lib/python3/dist-packages/apt" ] || [ ! -x "$cache/usr/sbin/unbound" ] ||
    [ ! -x "$cache/usr/sbin/dnsmasq" ] || [ ! -x "$cache/usr/bin/rpm" ]; then
    echo "host lab: debootstrapping Debian 12 into $cache (once)"
    rm -rf "$cache.tmp"
    mkdir -p target/host-lab
    debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,systemd-resolved,dbus,libnss-resolve,iproute2,curl,ca-certificates,python3,python3-apt,rpm,dnsmasq-base,unbound \
        bookworm "$cache.tmp" >target/host-lab/debootstrap.log 2>&1 \
        || { tail -20 target/host-lab/debootstrap.log; echo "0 passed, 1 failed"; exit 1; }
    mv "$cache.tmp" "$cache"
fi

work=$(mktemp -d "$PWD/target/host-lab/run.XXXXXX")
machine="vlhost$$"
nspawn_pid=""
stop_container() {
    [ -n "$nspawn_pid" ] || return 0
    if kill -0 "$nspawn_pid" 2>/dev/null; then
        inside systemctl poweroff >/dev/null 2>&1 || true
        for _ in $(seq 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$nspawn_pid" 2>/dev/null || true
    fi
    wait "$nspawn_pid" 2>/dev/null || true
    nspawn_pid=""
}
cleanup() {
    stop_container
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

. packaging/checks.sh
# inside CMD...: runs CMD inside the container (all its namespaces).
inside() { nsenter -t "$init" -a "$@"; }
# until_true SECONDS CMD...: retries CMD every 0.2 s.
until_true() {
    local n=$(($1 * 5)); shift
    for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    "$@"
}

boot() {
    systemd-nspawn -D "$work/root" -b --private-network --register=no --keep-unit \
        -M "$machine" >>"$work/console.log" 2>&1 &
    nspawn_pid=$!
    init=""
    for _ in $(seq 100); do
        init=$(cat /proc/"$nspawn_pid"/task/*/children 2>/dev/null | awk '{print $1; exit}')
        [ -n "$init" ] && break
        sleep 0.1
    done
    [ -n "$init" ] || { echo "the container did not start"; cat "$work/console.log"; return 1; }
    # Wait for the boot to settle, then give it a link: with only lo, systemd-resolved
    # answers "Network is down" (a real host has one). The address exists only there.
    until_true 60 bash -c "nsenter -t $init -a systemctl is-system-running | grep -qE 'running|degraded'" >/dev/null
    inside ip link add v0 type veth peer name v1
    inside ip link set v0 up
    inside ip link set v1 up
    inside ip addr add 10.213.250.1/24 dev v0
}

# --- a fresh root: OpenBao as three services, the package to install
cp -a "$cache" "$work/root"
install -m 0755 "$bao" "$work/root/usr/local/bin/bao"
cp "$deb" "$work/root/root/vault-locator.deb"
# unbound is run by hand below, with the README's snippet: not its packaged service.
ln -sf /dev/null "$work/root/etc/systemd/system/unbound.service"
mkdir -p "$work/root/etc/openbao"
for i in 1 2 3; do
    unit=openbao.service; [ "$i" = 1 ] || unit="openbao-node$i.service"
    peers=""
    for j in 1 2 3; do [ "$j" = "$i" ] || peers+="  retry_join { leader_api_addr = \"http://127.0.0.$j:8200\" }"$'\n'; done
    mkdir -p "$work/root/var/lib/openbao/node$i"
    cat >"$work/root/etc/openbao/node$i.hcl" <<HCL
disable_mlock = true
api_addr = "http://127.0.0.$i:8200"
cluster_addr = "https://127.0.0.$i:8201"
listener "tcp" {
  address = "127.0.0.$i:8200"
  cluster_address = "127.0.0.$i:8201"
  tls_disable = true
}
storage "raft" {
  path = "/var/lib/openbao/node$i"
  node_id = "node$i"
  performance_multiplier = 1
$peers}
HCL
    cat >"$work/root/etc/systemd/system/$unit" <<UNIT
[Unit]
Description=OpenBao node $i (host lab)
After=network.target
[Service]
ExecStart=/usr/local/bin/bao server -config=/etc/openbao/node$i.hcl
Restart=on-failure
[Install]
WantedBy=multi-user.target
UNIT
    ln -s "/etc/systemd/system/$unit" "$work/root/etc/systemd/system/multi-user.target.wants/$unit"
done

started=$(date +%s)
check "the container boots (systemd running)" boot

# --- the OpenBao cluster: init node 1, unseal all three
leader_ip() { # the leader's IP, as the first node that knows says it
    local i
    for i in 1 2 3; do
        inside curl -s -m 2 "http://127.0.0.$i:8200/v1/sys/leader" 2>/dev/null |
            python3 -c 'import json,sys; a=json.load(sys.stdin)["leader_address"]; print(a.split("//")[1].split(":")[0])' 2>/dev/null &&
            return 0
    done
    return 1
}
setup_openbao() {
    until_true 30 inside curl -s -o /dev/null http://127.0.0.1:8200/v1/sys/health || return 1
    inside bao operator init -address=http://127.0.0.1:8200 -key-shares=1 -key-threshold=1 -format=json \
        >"$work/init.json" || return 1
    key=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["unseal_keys_b64"][0])' "$work/init.json")
    unseal_all
}
unseal_all() { # every node unsealed (after a start or a reboot), and a leader known
    local i
    for i in 1 2 3; do
        until_true 60 bash -c "nsenter -t $init -a bao operator unseal -address=http://127.0.0.$i:8200 $key | grep -q 'Sealed *false'" || return 1
    done
    until_true 60 leader_ip
}
check "a 3-node OpenBao raft cluster runs as systemd services" setup_openbao

# --- install with the Ansible role, run against the booted container (its nsenter
# connection runs every task in the container's namespaces, as SSH would on a host)
venv=$(packaging/ansible-venv.sh)
cat >"$work/play.yml" <<YML
- name: vault-locator on the lab host
  hosts: lab
  gather_facts: false
  roles:
    - role: vault_locator
      vars:
        vault_locator_package: /root/vault-locator.deb
        vault_locator_datacenter: dc1
        vault_locator_clusters:
          - name: dc1
            nodes: ["http://127.0.0.1:8200", "http://127.0.0.2:8200", "http://127.0.0.3:8200"]
            poll_interval: 250ms
        vault_locator_check_status: true
YML
play() {
    ANSIBLE_ROLES_PATH="$PWD/packaging/ansible/roles" ANSIBLE_NOCOLOR=1 \
        "$venv/bin/ansible-playbook" -i lab, -c community.docker.nsenter \
        -e "ansible_nsenter_pid=$init" -e ansible_python_interpreter=/usr/bin/python3 \
        "$work/play.yml" >"$work/play.log" 2>&1
    cat "$work/play.log"
    grep -q 'failed=0' "$work/play.log"
}
check "the Ansible role installs, configures and starts it (status check included)" play
play_again() { play >/dev/null && grep -q 'changed=0.*failed=0' "$work/play.log"; }
check "... and a second run changes nothing" play_again
leader=$(leader_ip 2>/dev/null || true)
check "the unit is active" until_true 20 inside systemctl is-active vault-locator
check "systemctl status shows the leader (STATUS=)" \
    until_true 20 bash -c "nsenter -t $init -a systemctl show -p StatusText --value vault-locator | grep -q 'dc1: http://$leader:8200'"
check "getent hosts active.vault.service.consul (through systemd-resolved)" \
    until_true 20 bash -c "nsenter -t $init -a getent hosts active.vault.service.consul | grep -q '^$leader '"
check "resolvectl query routes ~consul to the agent" \
    bash -c "nsenter -t $init -a resolvectl query active.vault.service.consul | grep -q '$leader'"
check "curl http://active.vault.service.consul:8200 reaches the active node" \
    bash -c "nsenter -t $init -a curl -sf http://active.vault.service.consul:8200/v1/sys/leader | grep -q '\"is_self\":true'"

# --- doctor: healthy, then without the resolved drop-in, then with the agent stopped
doctor_healthy() { inside vault-locator doctor; }
check "vault-locator doctor passes on the healthy host" doctor_healthy
doctor_names() { # doctor_names TEXT...: doctor exits 5 and its output has every TEXT
    local out
    out=$(inside vault-locator doctor); local rc=$?
    echo "$out"
    [ "$rc" = 5 ] || return 1
    shift 0
    for t in "$@"; do grep -qF -- "$t" <<<"$out" || return 1; done
}
mv "$work/root/etc/systemd/resolved.conf.d/vault-locator.conf" "$work/dropin.conf"
inside systemctl restart systemd-resolved
check "doctor names the missing resolved drop-in" \
    doctor_names "systemd-resolved" "no route for ~consul" "/etc/systemd/resolved.conf.d/vault-locator.conf"
mv "$work/dropin.conf" "$work/root/etc/systemd/resolved.conf.d/vault-locator.conf"
inside systemctl restart systemd-resolved
inside systemctl stop vault-locator
check "doctor names a stopped agent" doctor_names "systemctl status vault-locator"
inside systemctl start vault-locator
check "... and passes again once it runs" until_true 20 inside vault-locator doctor

# --- reload
pid_of() { inside systemctl show -p MainPID --value vault-locator; }
pid0=$(pid_of)
sed -i 's/poll_interval = "250ms"/poll_interval = "300ms"/' "$work/root/etc/vault-locator/config.toml"
check "systemctl reload applies a change" inside systemctl reload vault-locator
check "... inside the same process" test "$(pid_of)" = "$pid0"
check "... and the journal says so" bash -c "nsenter -t $init -a journalctl -u vault-locator --no-pager | grep -q 'reload applied'"
cp "$work/root/etc/vault-locator/config.toml" "$work/good.toml"
echo 'poll_interval = "soon"' >>"$work/root/etc/vault-locator/config.toml"
reload_refused() {
    if inside systemctl reload vault-locator; then return 1; fi
    inside journalctl -u vault-locator --no-pager | grep -q 'poll_interval'
}
check "systemctl reload fails on a bad file, saying why" reload_refused
check "... the agent keeps running (same process, still answering)" \
    bash -c "test \"\$(nsenter -t $init -a systemctl show -p MainPID --value vault-locator)\" = $pid0 && nsenter -t $init -a getent hosts active.vault.service.consul"
cp "$work/good.toml" "$work/root/etc/vault-locator/config.toml"

# --- the journal
check "journal lines are logfmt" \
    bash -c "nsenter -t $init -a journalctl -u vault-locator -o cat --no-pager | grep -E '^ts=[0-9T:.-]+Z level=INFO target=vault_locator' | grep -q 'msg=\"vault-locator running\"'"
no_denial() {
    inside journalctl --no-pager >"$work/journal.txt" || return 1
    ! grep -iE 'vault-locator.*(denied|not permitted|SECCOMP|audit)' "$work/journal.txt"
}
check "no sandbox denial in the journal" no_denial
score=$(inside systemd-analyze security vault-locator.service 2>/dev/null | sed -n 's/.*Overall exposure level for vault-locator.service: \([0-9.]*\).*/\1/p')
echo "     systemd-analyze security (systemd 252 inside the container): $score"
check "exposure <= 1.1 (got $score)" awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 1.1) }'

# --- lookups lost across a restart and an upgrade, counted through getent at ~50 Hz
# lookups SECONDS: getent every 20 ms for SECONDS; prints "failed total".
cat >"$work/root/root/lookups.sh" <<'SH'
#!/bin/bash
end=$((SECONDS + $1)); n=0; bad=0
while [ $SECONDS -lt $end ]; do
    getent hosts active.vault.service.consul >/dev/null || bad=$((bad + 1))
    n=$((n + 1)); sleep 0.02
done
echo "$bad $n"
SH
chmod +x "$work/root/root/lookups.sh"
during() { # during LABEL CMD...: lookups for 6 s while CMD runs 1 s in
    local label=$1; shift
    inside /root/lookups.sh 6 >"$work/lookups.out" &
    local l=$!
    sleep 1
    local t0 t1
    t0=$(date +%s%N)
    inside "$@" >/dev/null 2>&1
    t1=$(date +%s%N)
    wait "$l"
    read -r bad n <"$work/lookups.out"
    echo "     $label: $bad of $n lookups failed ($* took $(( (t1 - t0) / 1000000 )) ms)"
    echo "$bad" >"$work/lost.$label"
}
during restart systemctl restart vault-locator
check "no lookup lost across systemctl restart" test "$(cat "$work/lost.restart")" = 0
# An upgrade: the same package with a higher version.
inside bash -c 'rm -rf /root/up && dpkg-deb -R /root/vault-locator.deb /root/up && sed -i "s/^Version: \(.*\)/Version: \1+lab1/" /root/up/DEBIAN/control && dpkg-deb -b /root/up /root/vault-locator-up.deb' >/dev/null
during upgrade dpkg -i /root/vault-locator-up.deb
check "no lookup lost across a package upgrade" test "$(cat "$work/lost.upgrade")" = 0
check "the upgrade installed the new version" bash -c "nsenter -t $init -a dpkg-query -W vault-locator | grep -q '+lab1'"
check "names answer after the upgrade" until_true 20 inside getent hosts active.vault.service.consul

# --- failover as a client on the host sees it: kill -9 of the active OpenBao node, then
# how long until the agent's own answer (a direct query to 127.0.0.1:8600) and the
# system resolver's (getaddrinfo through systemd-resolved) name the new leader.
cat >"$work/root/root/failover.py" <<'PY'
import socket, struct, subprocess, sys, time
unit, old = sys.argv[1], sys.argv[2]
name = "active.vault.service.consul"
def direct():
    q = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.5)
    try:
        s.sendto(q, ("127.0.0.1", 8600)); r = s.recv(512)
    except OSError:
        return None
    finally:
        s.close()
    return socket.inet_ntoa(r[-4:]) if struct.unpack(">H", r[6:8])[0] else None
def system():
    try:
        return socket.gethostbyname(name)
    except OSError:
        return None
# kill -9 of the node's process (systemctl kill cannot reach the auxiliary processes of
# a unit under nspawn's hybrid cgroups here, and fails for that).
pid = int(subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", unit],
                         check=True, capture_output=True, text=True).stdout)
import os, signal
os.kill(pid, signal.SIGKILL)
t0 = time.monotonic(); seen = {}
while len(seen) < 2 and time.monotonic() - t0 < 30:
    for label, ask in (("direct", direct), ("resolver", system)):
        ip = ask()
        if label not in seen and ip and ip != old:
            seen[label] = (round((time.monotonic() - t0) * 1000), ip)
    time.sleep(0.005)
print(seen.get("direct", ("-",))[0], seen.get("resolver", ("-",))[0])
PY
failover_rounds() {
    local rounds=${1:-3} old unit n i
    : >"$work/failover.txt"
    for _ in $(seq "$rounds"); do
        old=$(leader_ip) || return 1
        n=${old##*.}; unit=openbao.service; [ "$n" = 1 ] || unit="openbao-node$n.service"
        inside python3 /root/failover.py "$unit" "$old" >>"$work/failover.txt" || return 1
        # The killed node comes back (Restart=on-failure) sealed: unseal it, and wait
        # until it is a standby again before the next round.
        until_true 60 bash -c "nsenter -t $init -a bao operator unseal -address=http://$old:8200 $key | grep -q 'Sealed *false'" || return 1
        until_true 60 bash -c "nsenter -t $init -a curl -s -o /dev/null -w '%{http_code}' http://$old:8200/v1/sys/health | grep -q 429" || return 1
    done
    ! grep -q -- - "$work/failover.txt"
}
check "after kill -9 of the active node both paths answer the new leader" failover_rounds 5
echo "     failover, ms from kill -9 of the active node until the new leader is answered"
echo "     (direct from the agent, then through getaddrinfo and systemd-resolved), per round:"
echo "     $(tr '\n' ';' <"$work/failover.txt")"

# --- the watchdog: a frozen agent is killed and restarted
pid1=$(pid_of)
inside bash -c "kill -STOP $pid1"  # bash's own kill: a minimal Debian has no /bin/kill
check "the watchdog restarts a frozen agent (SIGSTOP)" \
    until_true 40 bash -c "p=\$(nsenter -t $init -a systemctl show -p MainPID --value vault-locator); [ \"\$p\" != 0 ] && [ \"\$p\" != $pid1 ] && nsenter -t $init -a systemctl is-active vault-locator"
check "... and the journal says why" bash -c "nsenter -t $init -a journalctl -u vault-locator --no-pager | grep -qi 'watchdog timeout'"

# --- boot order: the agent is up before OpenBao
reboot_container() {
    stop_container
    boot
}
check "the container reboots" reboot_container
order() {
    local agent bao
    agent=$(inside systemctl show -p ActiveEnterTimestampMonotonic --value vault-locator)
    bao=$(inside systemctl show -p ExecMainStartTimestampMonotonic --value openbao)
    echo "agent ready at $agent us, openbao started at $bao us"
    [ "$agent" -gt 0 ] && [ "$bao" -gt 0 ] && [ "$agent" -le "$bao" ]
}
check "at boot the agent is ready before OpenBao starts" until_true 30 order
boot_gap() { # how long OpenBao waited at boot for the agent's READY, and since boot
    local started agent bao
    started=$(inside systemctl show -p ExecMainStartTimestampMonotonic --value vault-locator)
    agent=$(inside systemctl show -p ActiveEnterTimestampMonotonic --value vault-locator)
    bao=$(inside systemctl show -p ExecMainStartTimestampMonotonic --value openbao)
    echo "     at boot: the agent was READY $(( (agent - started) / 1000 )) ms after it started (its local cluster not up yet), OpenBao started $(( (bao - agent) / 1000 )) ms later"
    [ $((agent - started)) -lt 5000000 ]
}
check "READY at boot does not wait for the local cluster, which starts after it" boot_gap
boot_gap | head -1
check "OpenBao unsealed again after the reboot" unseal_all
inside systemctl show -p ActiveEnterTimestampMonotonic -p ExecMainStartTimestampMonotonic vault-locator openbao | tr '\n' ' ' >"$work/boot.txt"; echo >>"$work/boot.txt"

# --- the other resolvers operators use (EL hosts without systemd-resolved): the agent
# behind dnsmasq, then behind unbound, each configured with packaging/README.md's
# snippet, systemd-resolved stopped and /etc/resolv.conf naming 127.0.0.1.
snippet() { # snippet NAME: the fenced block after "- **NAME**" in packaging/README.md
    python3 - "$1" <<'PY'
import re, sys
text = open("packaging/README.md").read()
part = text.split("- **%s**" % sys.argv[1], 1)[1]
m = re.search(r"```\n(.*?)```", part, re.S)
if m and part.index("```") < part.find("\n- **"):
    print("\n".join(l[2:] if l.startswith("  ") else l for l in m.group(1).splitlines()))
else:
    print(re.search(r"`([^`]+)`", part).group(1))
PY
}
behind() { # behind NAME COMMAND...: NAME serving 127.0.0.1:53, getent through it answering $expected
    inside systemctl stop systemd-resolved
    rm -f "$work/root/etc/resolv.conf"
    echo "nameserver 127.0.0.1" >"$work/root/etc/resolv.conf"
    inside systemd-run --unit="lab-$1" --collect "${@:2}" >/dev/null || return 1
    until_true 10 bash -c "nsenter -t $init -a getent hosts active.vault.service.consul | grep -q '^$expected '"
    local ok=$?
    if [ "$ok" != 0 ]; then # what it saw, for the FAIL line
        cat "$work/root/etc/resolv.conf"
        inside getent hosts active.vault.service.consul
        inside journalctl -u "lab-$1" --no-pager | tail -8
    fi
    inside systemctl stop "lab-$1"
    ln -sf ../run/systemd/resolve/stub-resolv.conf "$work/root/etc/resolv.conf"
    inside systemctl start systemd-resolved
    return $ok
}
# What the agent answers, through systemd-resolved: each resolver must answer the same.
until_true 20 inside getent hosts active.vault.service.consul >/dev/null
expected=$(inside getent hosts active.vault.service.consul | awk '{print $1}')
{ echo "no-resolv"; echo "listen-address=127.0.0.1"; echo "bind-interfaces"; snippet dnsmasq; } \
    >"$work/root/root/dnsmasq.conf"
check "getent through dnsmasq with its snippet ($(snippet dnsmasq))" \
    behind dnsmasq dnsmasq --keep-in-foreground --conf-file=/root/dnsmasq.conf
{ printf 'server:\n    interface: 127.0.0.1\n    username: ""\n    chroot: ""\n    use-syslog: no\n'; snippet unbound; } \
    >"$work/root/root/unbound.conf"
check "getent through unbound with its snippet" behind unbound unbound -d -c /root/unbound.conf

# --- remove, then purge
check "dpkg -r stops the unit and keeps the config" \
    bash -c "nsenter -t $init -a dpkg -r vault-locator >/dev/null && ! nsenter -t $init -a systemctl is-active vault-locator && test -f $work/root/etc/vault-locator/config.toml"
check "dpkg -P removes the config, the resolved drop-in and the user" \
    bash -c "nsenter -t $init -a dpkg -P vault-locator >/dev/null && test ! -e $work/root/etc/vault-locator/config.toml && test ! -e $work/root/etc/systemd/resolved.conf.d/vault-locator.conf && ! nsenter -t $init -a getent passwd vault-locator"
not_routed() {
    inside resolvectl status >"$work/resolved.txt" || return 1
    ! grep -q '~consul' "$work/resolved.txt"
}
check "... and systemd-resolved no longer routes ~consul" not_routed

# --- the .rpm's scriptlets, on the same host once the .deb is purged. No EL root can be
# had here: rpm from Debian, `--nodeps` (its dependencies are glibc's and systemd's,
# which this host has), and the same checks as for the .deb.
rpmf=${RPM:-$(ls -1t target/dist/vault-locator-*.x86_64.rpm 2>/dev/null | head -1)}
if [ -n "$rpmf" ]; then
    cp "$rpmf" "$work/root/root/vault-locator.rpm"
    rpm_installed() {
        inside rpm -i --nodeps /root/vault-locator.rpm || return 1
        inside getent passwd vault-locator && inside systemctl is-enabled vault-locator &&
            until_true 20 inside systemctl is-active vault-locator &&
            until_true 20 bash -c "nsenter -t $init -a getent hosts active.vault.service.consul | grep -q '^$leader '"
    }
    leader=$(leader_ip 2>/dev/null || true)
    check "rpm -i: the user made, the unit enabled and started, names through resolved" rpm_installed
    during rpm-upgrade rpm -U --replacepkgs --nodeps /root/vault-locator.rpm
    check "no lookup lost across an rpm upgrade (rpm -U)" test "$(cat "$work/lost.rpm-upgrade")" = 0
    rpm_removed() {
        inside rpm -e --nodeps vault-locator || return 1
        ! inside systemctl is-active vault-locator && ! inside systemctl is-enabled vault-locator &&
            test ! -e "$work/root/usr/bin/vault-locator" && not_routed
    }
    check "rpm -e: stopped, disabled, gone, ~consul no longer routed" rpm_removed
fi

echo "     lab time: $(( $(date +%s) - started )) s"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
