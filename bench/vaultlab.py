"""Helpers the OpenBao benchmarks share (bench/failover.py, bench/partition.py): HTTP
to the nodes, bounded waits, a DNS A query, the cluster port's certificate, and a raft
node's config. Standard library only."""
import json, os, random, socket, struct, subprocess, time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BAO = os.path.join(ROOT, ".tools/bin/bao")
# VAULT_LOCATOR: another build to measure (a baseline, say), in the same run as HAProxy.
AGENT = os.environ.get("VAULT_LOCATOR", os.path.join(ROOT, "target/release/vault-locator"))


def http(method, url, body=None, token=None, timeout=2):
    """(status, JSON body); (None, {}) when the node does not answer."""
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
    """Retries `fn` until it returns something (0 counts); exits naming `what` after `timeout`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v is not None and v is not False:
            return v
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what}")


def dns_a(server, name, timeout=0.5):
    """The A records `server` (ip, port) answers for `name`; [] on NXDOMAIN or no answer."""
    q = struct.pack(">HHHHHH", random.randint(0, 65535), 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(q, server)
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
    """The certificate behind `addr` for request forwarding (only the active node
    completes that handshake; a new active presents a new certificate)."""
    try:
        out = subprocess.run(["timeout", "3", "openssl", "s_client", "-connect", addr, "-alpn", "req_fw_sb-act_v1",
                              "-servername", "fw-bench"], stdin=subprocess.DEVNULL, capture_output=True, text=True).stdout
    except Exception:
        return None
    if "-----BEGIN CERTIFICATE-----" not in out:
        return None
    return out.split("-----BEGIN CERTIFICATE-----")[1].split("-----END CERTIFICATE-----")[0]


def bao_config(d, ip, ips, node_id):
    """Writes node `ip`'s config in `d` (raft, fast elections, joins to every other node)."""
    os.makedirs(os.path.join(d, "raft"), exist_ok=True)
    joins = "".join(f'  retry_join {{ leader_api_addr = "http://{o}:8200" }}\n' for o in ips if o != ip)
    path = os.path.join(d, "bao.hcl")
    with open(path, "w") as f:
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
  node_id = "{node_id}"
  performance_multiplier = 1
{joins}}}
''')
    return path


def agent_config(path, dns, ips, poll, proxy=None, extra=""):
    """Writes an agent config to `path`: DNS on `dns` (ip, port), admin on the same ip
    at :9464, one cluster "dc1" of `ips` polled every `poll` ("250ms"), `extra` lines
    for that cluster, and a [[proxy]] on `proxy` ("ip:port") if given."""
    nodes = ", ".join(f'"http://{ip}:8200"' for ip in ips)
    text = f'''datacenter = "dc1"
[dns]
listen = ["{dns[0]}:{dns[1]}"]
[admin]
listen = "{dns[0]}:9464"
[[clusters]]
name = "dc1"
nodes = [{nodes}]
poll_interval = "{poll}"
{extra}'''
    if proxy:
        text += f'''[[proxy]]
cluster = "dc1"
listen = "{proxy}"
'''
    with open(path, "w") as f:
        f.write(text)
    return path


def haproxy_config(path, bind, ips):
    """Writes the peer's config to `path`: HAProxy on `bind` routing to whichever of
    `ips` answers /v1/sys/health with 200, the usual health-checked front of the cluster
    port (inter 1s, fall 2, rise 1)."""
    with open(path, "w") as f:
        f.write(f'''defaults
    mode tcp
    timeout connect 1s
    timeout client 30s
    timeout server 30s
frontend cluster
    bind {bind}
    default_backend active
backend active
    option httpchk GET /v1/sys/health
    http-check expect status 200
''' + "".join(f"    server n{j} {ip}:8201 check port 8200 inter 1s fall 2 rise 1\n" for j, ip in enumerate(ips)))
    return path


def init_and_unseal(ips):
    """Initialises the cluster on ips[0], unseals every node, waits for all voters.
    Returns (unseal key, root token)."""
    wait("node 1 API", lambda: http("GET", f"http://{ips[0]}:8200/v1/sys/health")[0] is not None, 30)
    _, init = http("PUT", f"http://{ips[0]}:8200/v1/sys/init", {"secret_shares": 1, "secret_threshold": 1}, timeout=30)
    key, token = init["keys_base64"][0], init["root_token"]
    for ip in ips:
        unseal(ip, key)
    wait_voters(ips, token)
    return key, token


def unseal(ip, key):
    wait(f"{ip} unsealed", lambda: http("PUT", f"http://{ip}:8200/v1/sys/unseal", {"key": key})[1].get("sealed") is False, 90, 0.3)


def wait_voters(ips, token):
    def voters():
        for ip in ips:
            code, b = http("GET", f"http://{ip}:8200/v1/sys/storage/raft/configuration", token=token, timeout=1)
            servers = (b.get("data") or {}).get("config", {}).get("servers", []) if code == 200 else []
            if len(servers) == len(ips) and all(s.get("voter") for s in servers):
                return True
        return None
    wait("all voters", voters, 120, 0.5)


def leader_index(ips, skip=()):
    """The index of the node that says it is active (is_self), if any answers so."""
    for i, ip in enumerate(ips):
        if i in skip:
            continue
        code, body = http("GET", f"http://{ip}:8200/v1/sys/leader", timeout=0.3)
        if code == 200 and body.get("is_self"):
            return i
    return None


def reported_leader(ips, exclude, askers):
    """The index of the node that one of `askers` names as leader in /v1/sys/leader, if
    it is not `exclude` (the old leader): the moment the cluster has elected anew."""
    for a in askers:
        code, body = http("GET", f"http://{ips[a]}:8200/v1/sys/leader", timeout=0.3)
        addr = body.get("leader_address", "") if code == 200 else ""
        for j, ip in enumerate(ips):
            if j != exclude and addr == f"http://{ip}:8200":
                return j
    return None


def spread(values):
    """(min, median, max) of a non-empty list, in its units, or None."""
    if not values:
        return None
    v = sorted(values)
    return v[0], v[len(v) // 2], v[-1]
