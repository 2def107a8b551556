#!/usr/bin/env python3
"""Failover benchmark against a real 3-node OpenBao cluster (127.64.0.1-3).

Per round (kill -9 of the active node, ROUNDS times, then one graceful step-down):
when a surviving node first reports the new leader via /v1/sys/leader ("elected"), when
vault-locator's DNS answer changes to it, when a new connection through its proxy
reaches the new active's cluster port (same certificate as a direct connection), and
when HAProxy with `option httpchk GET /v1/sys/health` (inter 1s, fall 2, rise 1) routes
a new connection to it. Prints a Markdown section with min/median/max delays after the
election. Bounded: every wait has a deadline; everything started is killed on exit.
"""
import json, os, random, shutil, signal, socket, struct, subprocess, sys, tempfile, threading, time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BAO = os.path.join(ROOT, ".tools/bin/bao")
AGENT = os.path.join(ROOT, "target/release/vault-locator")
ROUNDS = int(os.environ.get("ROUNDS", "5"))
POLL = os.environ.get("POLL_INTERVAL", "250ms")
IPS = ["127.64.0.1", "127.64.0.2", "127.64.0.3"]
DNS = ("127.64.0.100", 8600)
PROXY = "127.64.0.200:8201"
HAPROXY = "127.64.0.210:8201"
procs = {}
work = tempfile.mkdtemp(prefix="vl-failover-")


def http(method, url, body=None, token=None, timeout=2):
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None)
    if token:
        req.add_header("X-Vault-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"{}")
        except Exception:
            return e.code, {}
    except Exception:
        return None, {}


def wait(what, fn, timeout=60, every=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v is not None and v is not False:  # index 0 is an answer
            return v
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what}")


def start_node(i):
    ip = IPS[i]
    d = os.path.join(work, f"node{i+1}")
    os.makedirs(os.path.join(d, "raft"), exist_ok=True)
    joins = "".join(f'  retry_join {{ leader_api_addr = "http://{o}:8200" }}\n' for o in IPS if o != ip)
    with open(os.path.join(d, "bao.hcl"), "w") as f:
        f.write(f'''disable_mlock = true
api_addr = "http://{ip}:8200"
cluster_addr = "https://{ip}:8201"
listener "tcp" {{
  address = "{ip}:8200"
  cluster_address = "{ip}:8201"
  tls_disable = true
}}
storage "raft" {{
  path = "{d}/raft"
  node_id = "node{i+1}"
  performance_multiplier = 1
{joins}}}
''')
    log = open(os.path.join(d, "bao.log"), "a")
    procs[f"node{i}"] = subprocess.Popen([BAO, "server", f"-config={d}/bao.hcl"], stdout=log, stderr=log)


def unseal(i, key):
    wait(f"node {i+1} unsealed", lambda: http("PUT", f"http://{IPS[i]}:8200/v1/sys/unseal", {"key": key})[1].get("sealed") is False, 90, 0.3)


def leader_index():
    for i, ip in enumerate(IPS):
        if procs.get(f"node{i}") is None:
            continue
        code, body = http("GET", f"http://{ip}:8200/v1/sys/leader", timeout=0.5)
        if code == 200 and body.get("is_self"):
            return i
    return None


def reported_leader(exclude):
    """The leader a surviving node reports, as an index, if it is not `exclude`."""
    for i, ip in enumerate(IPS):
        if i == exclude or procs.get(f"node{i}") is None:
            continue
        code, body = http("GET", f"http://{ip}:8200/v1/sys/leader", timeout=0.3)
        addr = body.get("leader_address", "") if code == 200 else ""
        for j, other in enumerate(IPS):
            if j != exclude and addr == f"http://{other}:8200":
                return j
    return None


def dns_a(name):
    q = struct.pack(">HHHHHH", random.randint(0, 65535), 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    try:
        s.sendto(q, DNS)
        r, _ = s.recvfrom(4096)
    except OSError:
        return []
    finally:
        s.close()
    an = struct.unpack(">H", r[6:8])[0]
    pos = len(q)
    out = []
    for _ in range(an):
        pos += 2 if r[pos] & 0xC0 == 0xC0 else r.index(b"\0", pos) - pos + 1
        rtype, _, _, rdlen = struct.unpack(">HHIH", r[pos:pos + 10])
        pos += 10
        if rtype == 1:
            out.append(socket.inet_ntoa(r[pos:pos + 4]))
        pos += rdlen
    return out


def cert(addr):
    try:
        out = subprocess.run(["timeout", "3", "openssl", "s_client", "-connect", addr, "-alpn", "req_fw_sb-act_v1",
                              "-servername", "fw-bench"], stdin=subprocess.DEVNULL, capture_output=True, text=True).stdout
    except Exception:
        return None
    if "-----BEGIN CERTIFICATE-----" not in out:
        return None
    return out.split("-----BEGIN CERTIFICATE-----")[1].split("-----END CERTIFICATE-----")[0]


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
    wait("node 1 API", lambda: http("GET", f"http://{IPS[0]}:8200/v1/sys/health")[0] is not None, 30)
    _, init = http("PUT", f"http://{IPS[0]}:8200/v1/sys/init", {"secret_shares": 1, "secret_threshold": 1}, timeout=30)
    key, token = init["keys_base64"][0], init["root_token"]
    for i in range(3):
        unseal(i, key)

    def voters():
        code, b = http("GET", f"http://{IPS[0]}:8200/v1/sys/storage/raft/configuration", token=token)
        servers = (b.get("data") or {}).get("config", {}).get("servers", []) if code == 200 else []
        return len(servers) == 3 and all(s.get("voter") for s in servers)
    wait("all voters", voters, 120, 0.5)

    cfg = os.path.join(work, "agent.toml")
    with open(cfg, "w") as f:
        f.write(f'''datacenter = "dc1"
[dns]
listen = ["{DNS[0]}:{DNS[1]}"]
[admin]
listen = "{DNS[0]}:9464"
[[clusters]]
name = "dc1"
nodes = [{", ".join(f'"http://{ip}:8200"' for ip in IPS)}]
poll_interval = "{POLL}"
request_timeout = "500ms"
[[proxy]]
cluster = "dc1"
listen = "{PROXY}"
''')
    procs["agent"] = subprocess.Popen([AGENT, "run", "--config", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      env={**os.environ, "RUST_LOG": "warn"})
    hcfg = os.path.join(work, "haproxy.cfg")
    with open(hcfg, "w") as f:
        f.write(f'''defaults
    mode tcp
    timeout connect 1s
    timeout client 30s
    timeout server 30s
frontend cluster
    bind {HAPROXY}
    default_backend active
backend active
    option httpchk GET /v1/sys/health
    http-check expect status 200
''' + "".join(f"    server n{i} {ip}:8201 check port 8200 inter 1s fall 2 rise 1\n" for i, ip in enumerate(IPS)))
    procs["haproxy"] = subprocess.Popen(["haproxy", "-f", hcfg, "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    results = {"kill -9": [], "step-down": []}
    for r in range(ROUNDS + 1):
        graceful = r == ROUNDS
        old = wait("a leader", leader_index, 60)
        wait("the agent answers the leader", lambda: dns_a("active.vault.service.consul") == [IPS[old]], 30)
        wait("haproxy routes to the leader", lambda: cert(HAPROXY) is not None, 30, 0.3)
        old_cert = cert(f"{IPS[old]}:8201")
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

        def healthy_other():
            for j, ip in enumerate(IPS):
                if j != old and procs.get(f"node{j}") is not None and \
                        http("GET", f"http://{ip}:8200/v1/sys/health", timeout=0.3)[0] == 200:
                    return j
            return None

        threads = [threading.Thread(target=probe, args=a, daemon=True) for a in (
            ("elected", lambda: reported_leader(old), 0.01),
            ("active", healthy_other, 0.01),
            ("dns", lambda: dns_a("active.vault.service.consul"), 0.01),
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
        seen = {}
        wants = {"elected": new, "active": new, "dns": [IPS[new]] if new is not None else None,
                 "proxy": new_cert, "haproxy": new_cert}
        for k, want in wants.items():
            hit = next((t for t, v in samples[k] if want is not None and v == want), None)
            if hit is not None:
                seen[k] = hit
        results["step-down" if graceful else "kill -9"].append(seen)
        print(f"round {r+1} ({'step-down' if graceful else 'kill -9'}): " +
              ", ".join(f"{k} {v*1000:.0f} ms" for k, v in seen.items()), file=sys.stderr)
        if not graceful:
            start_node(old)
            unseal(old, key)
            wait("the restarted node is a standby", lambda: http("GET", f"http://{IPS[old]}:8200/v1/sys/health")[0] == 429, 60, 0.2)
            wait("all voters again", voters, 120, 0.5)

    def stats(rows, key):
        d = sorted((row[key] - row["elected"]) * 1000 for row in rows if key in row and "elected" in row)
        if not d:
            return "-", "-", "-", 0
        return f"{d[0]:.0f}", f"{d[len(d)//2]:.0f}", f"{d[-1]:.0f}", len(d)

    print(f"## Failover ({time.strftime('%Y-%m-%d', time.gmtime())}, {os.cpu_count()} cores, OpenBao 3 nodes, performance_multiplier = 1)")
    print()
    print(f"`bench/failover.py`: {ROUNDS} rounds of kill -9 of the active node and one `sys/step-down`.")
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


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: (cleanup(), sys.exit(1)))
    try:
        main()
    finally:
        cleanup()
