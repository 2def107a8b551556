#!/usr/bin/env python3
"""Failover benchmark against a real 3-node OpenBao cluster (127.64.0.1-3).

Per round (kill -9 of the active node, ROUNDS times, then STEPDOWNS graceful step-downs):
when a surviving node first reports the new leader via /v1/sys/leader ("elected"), when
vault-locator's DNS answer changes to it, when a new connection through its proxy
reaches the new active's cluster port (same certificate as a direct connection), and
when HAProxy with `option httpchk GET /v1/sys/health` (inter 1s, fall 2, rise 1) routes
a new connection to it. Prints a Markdown section with min/median/max delays after the
election, and again after the new leader's own sys/health first answers 200 (the
second table leaves out what OpenBao takes to become active). ROUNDS_JSON=<file> also
writes every round's times (bench/failover-compare pools them over runs). Bounded:
every wait has a deadline; everything started is killed on exit.
"""
import json, os, shutil, signal, subprocess, sys, tempfile, threading, time

import vaultlab
from vaultlab import AGENT, BAO, agent_config, bao_config, haproxy_config, cert, dns_a, http, init_and_unseal, unseal, wait, wait_voters

ROUNDS = int(os.environ.get("ROUNDS", "5"))
STEPDOWNS = int(os.environ.get("STEPDOWNS", "5"))
POLL = os.environ.get("POLL_INTERVAL", "250ms")
IPS = ["127.64.0.1", "127.64.0.2", "127.64.0.3"]
DNS = ("127.64.0.100", 8600)
PROXY = "127.64.0.200:8201"
HAPROXY = "127.64.0.210:8201"
procs = {}
work = tempfile.mkdtemp(prefix="vl-failover-")


def start_node(i):
    d = os.path.join(work, f"node{i+1}")
    config = bao_config(d, IPS[i], IPS, f"node{i+1}")
    log = open(os.path.join(d, "bao.log"), "a")
    procs[f"node{i}"] = subprocess.Popen([BAO, "server", f"-config={config}"], stdout=log, stderr=log)


def restart_node(i, key, token):
    """Starts node i again (killing it first if it runs) and waits until it is an
    unsealed standby and every node votes."""
    if procs.get(f"node{i}") is not None:
        procs[f"node{i}"].kill()
        procs[f"node{i}"].wait()
    start_node(i)
    unseal(IPS[i], key)
    wait("the restarted node is a standby", lambda: http("GET", f"http://{IPS[i]}:8200/v1/sys/health")[0] == 429, 60, 0.2)
    wait_voters(IPS, token)


def running():
    return [i for i in range(len(IPS)) if procs.get(f"node{i}") is not None]


def leader_index():
    return vaultlab.leader_index(IPS, skip=set(range(len(IPS))) - set(running()))


def reported_leader(exclude):
    """The leader a surviving node reports, as an index, if it is not `exclude`."""
    return vaultlab.reported_leader(IPS, exclude, [i for i in running() if i != exclude])


def cleanup(*_):
    for p in procs.values():
        if p is not None:
            p.kill()
    for p in procs.values():
        if p is not None:
            p.wait()
    shutil.rmtree(work, ignore_errors=True)


def main():
    for i in range(3):
        start_node(i)
    key, token = init_and_unseal(IPS)
    # On OpenBao 2.7.2 a node that has been a standby since it joined answers its own
    # sys/step-down 204 once active and never acts on it (the next ones log "manual
    # step-down operation already queued"); after a restart it steps down. Without
    # these restarts, rounds in which the new leader held sys/leader and sys/health for
    # ~1.7 s after its election were common (two in nine); none in 252 rounds with
    # them. So every standby is restarted once before the first round, unless
    # RESTART_STANDBYS=0 (to measure those rounds: the new leader's polls hang).
    first = wait("a leader", leader_index, 60)
    for i in range(len(IPS)):
        if i != first and os.environ.get("RESTART_STANDBYS", "1") != "0":
            restart_node(i, key, token)

    cfg = agent_config(os.path.join(work, "agent.toml"), DNS, IPS, POLL, proxy=PROXY, extra='request_timeout = "500ms"\n')
    procs["agent"] = subprocess.Popen([AGENT, "run", "--config", cfg], stdout=subprocess.DEVNULL, stderr=open(os.environ.get("AGENT_LOG_FILE", os.devnull), "a"),
                                      env={**os.environ, "RUST_LOG": os.environ.get("AGENT_LOG", "warn")})
    hcfg = haproxy_config(os.path.join(work, "haproxy.cfg"), HAPROXY, IPS)
    procs["haproxy"] = subprocess.Popen(["haproxy", "-f", hcfg, "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    results = {"kill -9": [], "step-down": []}
    for r in range(ROUNDS + STEPDOWNS):
        graceful = r >= ROUNDS
        old = wait("a leader", leader_index, 60)
        wait("the agent answers the leader", lambda: dns_a(DNS, "active.vault.service.consul") == [IPS[old]], 30)
        wait("haproxy routes to the leader", lambda: cert(HAPROXY) is not None, 30, 0.3)
        t0 = time.time()
        if graceful:
            code, body = http("PUT", f"http://{IPS[old]}:8200/v1/sys/step-down", token=token)
            if code not in (200, 204):
                print(f"step-down answered {code} {body}", file=sys.stderr)
        else:
            procs[f"node{old}"].kill()
            procs[f"node{old}"].wait()
            procs[f"node{old}"] = None
        # One probe thread per path, so a slow probe (an openssl handshake) never
        # delays another path's observation.
        stop = threading.Event()
        samples = {k: [] for k in ("elected", "active", "dns", "proxy", "haproxy")}

        def probe(key, fn, every):
            while not stop.is_set():
                v = fn()
                samples[key].append((time.time() - t0, v))
                time.sleep(every)

        def active(j):
            """j, when node j's health answers 200 (one probe per node: a node whose
            health hangs while it becomes active must not delay another's sample)."""
            ok = procs.get(f"node{j}") is not None and \
                http("GET", f"http://{IPS[j]}:8200/v1/sys/health", timeout=0.3)[0] == 200
            return j if ok else None

        samples.update({f"active{j}": [] for j in range(len(IPS)) if j != old})
        threads = [threading.Thread(target=probe, args=a, daemon=True) for a in (
            ("elected", lambda: reported_leader(old), 0.01),
            *((f"active{j}", lambda j=j: active(j), 0.01) for j in range(len(IPS)) if j != old),
            ("dns", lambda: dns_a(DNS, "active.vault.service.consul"), 0.01),
            ("proxy", lambda: cert(PROXY), 0.01),
            ("haproxy", lambda: cert(HAPROXY), 0.01),
        )]
        for th in threads:
            th.start()
        deadline = t0 + 60
        new, new_cert = None, None
        while time.time() < deadline:
            time.sleep(0.1)
            if new is None:
                new = next((v for _, v in list(samples["elected"]) if v is not None), None)
            if new is not None and new_cert is None:
                new_cert = cert(f"{IPS[new]}:8201")
            if new_cert is not None and all(
                    any(v == want for _, v in list(samples[k]))
                    for k, want in (("dns", [IPS[new]]), ("proxy", new_cert), ("haproxy", new_cert))):
                break
        stop.set()
        for th in threads:
            th.join()
        samples["active"] = sorted(x for j in range(len(IPS)) if j != old for x in samples[f"active{j}"])
        seen = {}
        wants = {"elected": new, "active": new, "dns": [IPS[new]] if new is not None else None,
                 "proxy": new_cert, "haproxy": new_cert}
        for k, want in wants.items():
            hit = next((t for t, v in samples[k] if want is not None and v == want), None)
            if hit is not None:
                seen[k] = hit
        results["step-down" if graceful else "kill -9"].append(seen)
        print(f"round {r+1} ({'step-down' if graceful else 'kill -9'}, node{old+1} -> "
              f"{'node' + str(new + 1) if new is not None else 'none in 60 s'}): " +
              ", ".join(f"{k} {v*1000:.0f} ms" for k, v in seen.items()), file=sys.stderr)
        if not graceful:
            restart_node(old, key, token)

    # ROUNDS_JSON: every round's sample times (seconds from the kill / step-down), for
    # bench/failover-compare to pool over several runs.
    if os.environ.get("ROUNDS_JSON"):
        with open(os.environ["ROUNDS_JSON"], "w") as f:
            json.dump(results, f)

    def stats(rows, key, since="elected"):
        d = sorted((row[key] - row[since]) * 1000 for row in rows if key in row and since in row)
        if not d:
            return "-", "-", "-", 0
        return f"{d[0]:.0f}", f"{d[len(d)//2]:.0f}", f"{d[-1]:.0f}", len(d)

    print(f"## Failover ({time.strftime('%Y-%m-%d', time.gmtime())}, {os.cpu_count()} cores, OpenBao 3 nodes, performance_multiplier = 1)")
    print()
    print(f"`bench/failover.py`: {ROUNDS} rounds of kill -9 of the active node and {STEPDOWNS} of `sys/step-down`.")
    print(f"Agent: `{os.path.relpath(AGENT, vaultlab.ROOT)}` (VAULT_LOCATOR picks another build).")
    print(f"vault-locator polls every {POLL} (failover_poll_interval 50ms while leaderless); HAProxy `option httpchk GET /v1/sys/health`, inter 1s fall 2 rise 1.")
    print("Delays are measured from the moment a surviving node first reports the new leader;")
    print("each path has its own probe thread (an openssl handshake per HAProxy/proxy probe).")
    print()
    print("| event | path | min ms | median ms | max ms | rounds |")
    print("|---|---|---|---|---|---|")
    for ev, rows in results.items():
        el = sorted(row["elected"] * 1000 for row in rows if "elected" in row)
        if el:
            print(f"| {ev} | survivor reports the new leader (from the kill / step-down) | {el[0]:.0f} | {el[len(el)//2]:.0f} | {el[-1]:.0f} | {len(el)} |")
        for key, label in (("active", "new leader's sys/health answers 200"), ("dns", "vault-locator DNS answer"), ("proxy", "vault-locator proxy, new connection"),
                           ("haproxy", "HAProxy health-checked route")):
            mn, md, mx, n = stats(rows, key)
            print(f"| {ev} | {label} | {mn} | {md} | {mx} | {n} |")
    print()
    print("The same paths measured from the new leader's first 200 on sys/health (OpenBao's")
    print("time to become active left out: vault-locator waits for the new leader to confirm itself):")
    print()
    print("| event | path | min ms | median ms | max ms | rounds |")
    print("|---|---|---|---|---|---|")
    for ev, rows in results.items():
        for key, label in (("dns", "vault-locator DNS answer"), ("proxy", "vault-locator proxy, new connection"),
                           ("haproxy", "HAProxy health-checked route")):
            mn, md, mx, n = stats(rows, key, "active")
            print(f"| {ev} | {label} | {mn} | {md} | {mx} | {n} |")
    print()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: (cleanup(), sys.exit(1)))
    try:
        main()
    finally:
        cleanup()
