#!/usr/bin/env python3
"""Failover under partition: a real 3-node OpenBao cluster, each node in a network
namespace of its own with an agent and an HAProxy (the peer) beside it, and nft rules
that make packets vanish (tests/support/netlab.rs builds the same lab for the tests).

Rounds (ROUNDS): the active node is cut off from the other two (its packets to and
from them are dropped, so to the others it is a black hole: connects hang). Measured
from the election (a majority-side node first reports the new leader) and from the
moment the new leader's sys/health answers 200: when each majority-side agent first
answers the new leader, and the last time it still answered the isolated one; when the
isolated node's own agent last answered its node (from the cut); when each
majority-side HAProxy (`option httpchk GET /v1/sys/health`, inter 1s fall 2 rise 1,
the usual health-checked setup) first routes a new connection to the new leader.

Addresses: 10.213.9.0/24 exists only inside the lab's namespaces; the benchmark reaches
them through one veth no rule cuts. Needs root. Bounded: every wait has a deadline, and
everything started (processes, namespaces) is removed on exit. Prints a Markdown section.
"""
import os, shutil, signal, subprocess, sys, tempfile, threading, time

from vaultlab import AGENT, BAO, agent_config, bao_config, haproxy_config, cert, dns_a, http, init_and_unseal, leader_index, reported_leader, spread, unseal, wait, wait_voters

ROUNDS = int(os.environ.get("ROUNDS", "5"))
POLL_MS = int(os.environ.get("POLL_MS", "250"))
SUBNET = 9
TAG = "vlbp"
N = 3
IPS = [f"10.213.{SUBNET}.{i + 1}" for i in range(N)]
TEST_IP = f"10.213.{SUBNET}.254"
ACTIVE = "active.vault.service.consul"
procs = []
bao = {}  # host index -> its OpenBao process
work = tempfile.mkdtemp(prefix="vl-partition-")
print(f"work dir {work}", file=sys.stderr)


def sh(*args, check=True):
    r = subprocess.run(args, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: {r.stderr.strip()}")


def ns(i):
    return f"{TAG}-h{i}"


def lab_down():
    sh("ip", "link", "del", f"{TAG}-t", check=False)
    for i in range(N):
        sh("ip", "netns", "del", ns(i), check=False)
    sh("ip", "netns", "del", f"{TAG}-hub", check=False)


def lab_up():
    lab_down()
    hub = f"{TAG}-hub"
    sh("ip", "netns", "add", hub)
    sh("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", hub, "link", "set", "br0", "up")
    for i in range(N):
        sh("ip", "netns", "add", ns(i))
        sh("ip", "link", "add", "eth0", "netns", ns(i), "type", "veth", "peer", "name", f"h{i}", "netns", hub)
        sh("ip", "-n", hub, "link", "set", f"h{i}", "master", "br0", "up")
        sh("ip", "-n", ns(i), "addr", "add", f"{IPS[i]}/24", "dev", "eth0")
        sh("ip", "-n", ns(i), "link", "set", "eth0", "up")
        sh("ip", "-n", ns(i), "link", "set", "lo", "up")
    sh("ip", "link", "add", f"{TAG}-t", "type", "veth", "peer", "name", "t0", "netns", hub)
    sh("ip", "-n", hub, "link", "set", "t0", "master", "br0", "up")
    sh("ip", "addr", "add", f"{TEST_IP}/24", "dev", f"{TAG}-t")
    sh("ip", "link", "set", f"{TAG}-t", "up")


def nft(i, *rule):
    sh("ip", "netns", "exec", ns(i), "nft", *rule)


def heal(i):
    sh("ip", "netns", "exec", ns(i), "nft", "delete", "table", "inet", "fault", check=False)


def cut(i, others):
    """Host i's packets to and from `others` vanish; the benchmark's own still pass."""
    heal(i)
    nft(i, "add", "table", "inet", "fault")
    peers = "{ " + ", ".join(IPS[o] for o in others) + " }"
    for chain, hook, way in (("in", "input", "saddr"), ("out", "output", "daddr")):
        nft(i, "add", "chain", "inet", "fault", chain, f"{{ type filter hook {hook} priority 0 ; }}")
        nft(i, "add", "rule", "inet", "fault", chain, "ip", way, TEST_IP, "accept")
        nft(i, "add", "rule", "inet", "fault", chain, "ip", way, peers, "drop")


def spawn(i, *cmd, log):
    out = open(os.path.join(work, log), "a")
    p = subprocess.Popen(["ip", "netns", "exec", ns(i), *cmd], stdout=out, stderr=out,
                         env={**os.environ, "RUST_LOG": os.environ.get("AGENT_LOG", "warn")})
    procs.append(p)
    return p


def start(i):
    config = bao_config(os.path.join(work, f"node{i}"), IPS[i], IPS, f"node{i + 1}")
    bao[i] = spawn(i, BAO, "server", f"-config={config}", log=f"bao{i}.log")
    cfg = agent_config(os.path.join(work, f"agent{i}.toml"), (IPS[i], 8600), IPS, f"{POLL_MS}ms")
    hcfg = haproxy_config(os.path.join(work, f"haproxy{i}.cfg"), f"{IPS[i]}:8301", IPS)
    return cfg, hcfg


def probe_round(t0, probes, done, timeout=60):
    """Runs each probe every 10 ms on a thread of its own until `done(samples)` or the
    deadline; returns {name: [(seconds since t0, value)]}."""
    stop = threading.Event()
    samples = {k: [] for k in probes}

    def run(key, fn):
        while not stop.is_set():
            v = fn()
            samples[key].append((time.time() - t0, v))
            time.sleep(0.01)
    threads = [threading.Thread(target=run, args=(k, fn), daemon=True) for k, fn in probes.items()]
    for th in threads:
        th.start()
    deadline = t0 + timeout
    while time.time() < deadline and not done({k: list(v) for k, v in samples.items()}):
        time.sleep(0.1)
    time.sleep(0.3)  # a little after, so "last answer naming the old leader" is settled
    stop.set()
    for th in threads:
        th.join()
    return samples


def first(rows, want):
    return next((t for t, v in rows if v == want), None)


def last(rows, want):
    return next((t for t, v in reversed(rows) if v == want), None)


def serving(exclude, among):
    """The index of a node in `among` (not `exclude`) whose sys/health says active (200)."""
    for j in among:
        if j != exclude and http("GET", f"http://{IPS[j]}:8200/v1/sys/health", timeout=0.3)[0] == 200:
            return j
    return None


def rejoin(i, key):
    """Waits for node i to be a standby again after a heal. A node cut off long enough
    can stay a candidate whose pre-votes are rejected (seen here with OpenBao 2.7.2);
    past 30 s it is restarted, as an operator would, and unsealed."""
    standby = lambda: http("GET", f"http://{IPS[i]}:8200/v1/sys/health", timeout=0.5)[0] == 429
    deadline = time.time() + 30
    while time.time() < deadline:
        if standby():
            return
        time.sleep(0.2)
    print(f"node {i + 1} did not rejoin within 30 s of the heal; restarting it", file=sys.stderr)
    bao[i].kill()
    bao[i].wait()
    start(i)
    unseal(IPS[i], key)
    wait(f"node {i + 1} is a standby again", standby, 120, 0.2)


def settle():
    """Waits until every agent answers the leader and every HAProxy routes to it."""
    leader = wait("a leader", lambda: leader_index(IPS), 60)
    for i in range(N):
        wait(f"agent {i} answers the leader", lambda: dns_a((IPS[i], 8600), ACTIVE) == [IPS[leader]], 60)
    leader_cert = wait("the leader's certificate", lambda: cert(f"{IPS[leader]}:8201"), 30, 0.3)
    for i in range(N):
        wait(f"HAProxy {i} routes to the leader", lambda: cert(f"{IPS[i]}:8301") == leader_cert, 60, 0.3)
    return leader


def main():
    lab_up()
    configs = [start(i) for i in range(N)]
    key, token = init_and_unseal(IPS)
    for i, (cfg, hcfg) in enumerate(configs):
        spawn(i, AGENT, "run", "--config", cfg, log=f"agent{i}.log")
        spawn(i, "haproxy", "-f", hcfg, "-db", log=f"haproxy{i}.log")

    rows = {"partition": []}
    for r in range(ROUNDS):
        # --- the active node cut off from the others
        old = settle()
        majority = [i for i in range(N) if i != old]
        t0 = time.time()
        cut(old, majority)
        probes = {"elected": lambda: reported_leader(IPS, old, majority), "isolated": lambda: dns_a((IPS[old], 8600), ACTIVE),
                  "active": lambda: serving(old, majority)}
        for m in majority:
            probes[f"dns{m}"] = (lambda m=m: dns_a((IPS[m], 8600), ACTIVE))
            probes[f"haproxy{m}"] = (lambda m=m: cert(f"{IPS[m]}:8301"))
        new_cert = {}

        def partition_done(s):
            el = next((v for _, v in s["elected"] if v is not None), None)
            if el is None:
                return False
            if "c" not in new_cert:
                new_cert["c"] = cert(f"{IPS[el]}:8201")
            followed = all(first(s[f"dns{m}"], [IPS[el]]) is not None and
                           first(s[f"haproxy{m}"], new_cert["c"]) is not None for m in majority)
            return followed and bool(s["isolated"]) and s["isolated"][-1][1] != [IPS[old]]
        s = probe_round(t0, probes, partition_done)
        new = next((v for _, v in s["elected"] if v is not None), None)
        row = {}
        if new is not None:
            te = first(s["elected"], new)
            row["election"] = [te]
            ta = first(s["active"], new)
            if ta is not None:
                row["serving"] = [ta - te]
            row["dns"] = [first(s[f"dns{m}"], [IPS[new]]) - te for m in majority if first(s[f"dns{m}"], [IPS[new]]) is not None]
            if ta is not None:
                row["dns_active"] = [first(s[f"dns{m}"], [IPS[new]]) - ta for m in majority if first(s[f"dns{m}"], [IPS[new]]) is not None]
            row["old"] = [(last(s[f"dns{m}"], [IPS[old]]) or 0) - te for m in majority]
            row["isolated"] = [last(s["isolated"], [IPS[old]]) or 0]
            row["haproxy"] = [first(s[f"haproxy{m}"], new_cert.get("c")) - te for m in majority
                              if first(s[f"haproxy{m}"], new_cert.get("c")) is not None]
        rows["partition"].append(row)
        print(f"round {r + 1} partition: " + ", ".join(f"{k} {[round(x * 1000) for x in v]} ms" for k, v in row.items()), file=sys.stderr)
        heal(old)
        rejoin(old, key)
        wait_voters(IPS, token)


    labels = (("election", "a majority-side node reports the new leader (from the fault)"),
              ("serving", "the new leader's sys/health answers 200 (after the election)"),
              ("dns_active", "agent's DNS answer is the new leader (after it answers 200)"),
              ("dns", "agent's DNS answer is the new leader (after the election)"),
              ("old", "agent's last answer naming the old leader (after the election)"),
              ("isolated", "isolated node's own agent: last answer naming its node (from the cut)"),
              ("haproxy", "HAProxy health-checked route to the new leader (after the election)"))
    print(f"## Failover under partition ({time.strftime('%Y-%m-%d', time.gmtime())}, {os.cpu_count()} cores, OpenBao 3 nodes, performance_multiplier = 1)")
    print()
    print(f"`bench/partition.py`: {ROUNDS} rounds; nodes, agents and HAProxies each in their host's network")
    print(f"namespace; faults are nft drops (packets vanish). Agents poll every {POLL_MS} ms (50 ms while leaderless),")
    print("request_timeout 2s, connect_timeout 500ms; HAProxy `option httpchk GET /v1/sys/health`, inter 1s fall 2 rise 1.")
    print("Agent and HAProxy rows pool the two majority-side hosts.")
    print()
    print("| fault | what | min ms | median ms | max ms | samples |")
    print("|---|---|---|---|---|---|")
    verdict = []
    for fault, rs in rows.items():
        for key, label in labels:
            vals = [x * 1000 for row in rs for x in row.get(key, [])]
            sp = spread(vals)
            if sp:
                print(f"| {fault} | {label} | {sp[0]:.0f} | {sp[1]:.0f} | {sp[2]:.0f} | {len(vals)} |")
        dns = spread([x * 1000 for row in rs for x in row.get("dns_active", [])])
        old = spread([x * 1000 for row in rs for x in row.get("old", [])])
        if dns:
            verdict.append(f"{fault}: DNS median {dns[1]:.0f} ms after the new leader serves (target <= {POLL_MS + 50})"
                           f" {'holds' if dns[1] <= POLL_MS + 50 else 'MISSED'}")
        if old and fault == "partition":
            verdict.append(f"{fault}: old leader named at most {old[2]:.0f} ms after the election (target <= {POLL_MS + 100})"
                           f" {'holds' if old[2] <= POLL_MS + 100 else 'MISSED'}")
    print()
    for v in verdict:
        print(f"- {v}")
    print()


def cleanup(*_):
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()
    lab_down()
    if not os.environ.get("KEEP"):
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit("bench/partition.py needs root (network namespaces, nft)")
    signal.signal(signal.SIGTERM, lambda *_: (cleanup(), sys.exit(1)))
    try:
        main()
    finally:
        cleanup()
