//! A fault lab on one machine: hosts in network namespaces of their own, joined by a
//! bridge in a hub namespace, with nft rules that cut, black-hole or thin out the
//! traffic of one host (see `shared/FAULT-LAB.md`).
//!
//! Host i of lab `S` has the address `10.213.S.(i+1)`, which exists only inside the
//! lab's namespaces; the test itself reaches every host through one veth into the hub
//! (`10.213.S.254`), which no rule ever cuts, so the test can always ask each host what
//! it sees. Nothing is routed anywhere else: the hosts have no default route.
//!
//! Everything the lab creates (namespaces, with their veths and nft tables, and the
//! test's veth) is removed when the `Lab` is dropped, also when the test fails, and at
//! the next start of a lab with the same tag if a killed run left it behind. Needs root
//! (CI is root); [`Lab::new`] returns None elsewhere, and the tests say they skipped.

use std::net::Ipv4Addr;
use std::process::Command;

pub struct Lab {
    tag: String,
    subnet: u8,
    hosts: usize,
}

/// Runs a command, panicking with its output if it fails.
fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command whose failure does not matter (cleaning up what may not exist).
fn sh_quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}

impl Lab {
    /// `hosts` namespaces on `10.213.subnet.0/24`. `tag` (a few letters) names them;
    /// each test uses its own tag and subnet, so tests run in parallel.
    pub fn new(tag: &str, subnet: u8, hosts: usize) -> Option<Lab> {
        if !is_root() {
            eprintln!("skipped: the fault lab needs root (network namespaces, nft)");
            return None;
        }
        for tool in ["ip", "nft"] {
            if Command::new(tool).arg("-V").output().is_err() {
                panic!(
                    "the fault lab needs `{tool}` (iproute2, nftables): scripts/test installs them"
                );
            }
        }
        let lab = Lab {
            tag: format!("vl{tag}"),
            subnet,
            hosts,
        };
        lab.remove(); // a run that was killed leaves its namespaces behind
        let hub = lab.hub();
        sh(&["ip", "netns", "add", &hub]);
        sh(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", &hub, "link", "set", "br0", "up"]);
        for i in 0..hosts {
            let ns = lab.ns(i);
            let port = format!("h{i}");
            sh(&["ip", "netns", "add", &ns]);
            sh(&[
                "ip", "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &hub,
            ]);
            sh(&[
                "ip", "-n", &hub, "link", "set", &port, "master", "br0", "up",
            ]);
            let addr = format!("{}/24", lab.ip(i));
            sh(&["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        // The test's own way in.
        let outside = lab.outside();
        sh(&[
            "ip", "link", "add", &outside, "type", "veth", "peer", "name", "t0", "netns", &hub,
        ]);
        sh(&["ip", "-n", &hub, "link", "set", "t0", "master", "br0", "up"]);
        let addr = format!("{}/24", lab.test_ip());
        sh(&["ip", "addr", "add", &addr, "dev", &outside]);
        sh(&["ip", "link", "set", &outside, "up"]);
        Some(lab)
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.tag)
    }

    /// The test's end of its veth (in the test's own namespace).
    fn outside(&self) -> String {
        format!("{}-t", self.tag)
    }

    /// Host i's namespace.
    pub fn ns(&self, i: usize) -> String {
        format!("{}-h{i}", self.tag)
    }

    pub fn ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, i as u8 + 1)
    }

    /// The test's own address in the lab: never cut.
    pub fn test_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 254)
    }

    fn nft(&self, i: usize, rule: &str) {
        let ns = self.ns(i);
        let mut args = vec!["ip", "netns", "exec", &ns, "nft"];
        args.extend(rule.split(' '));
        sh(&args);
    }

    /// A fresh rule table in host i (replacing any earlier one), letting the test and
    /// the host's own loopback through.
    fn table(&self, i: usize) {
        self.heal(i);
        self.nft(i, "add table inet fault");
        let test = self.test_ip().to_string();
        for (chain, hook, dir) in [("in", "input", "saddr"), ("out", "output", "daddr")] {
            let ns = self.ns(i);
            sh(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "nft",
                "add",
                "chain",
                "inet",
                "fault",
                chain,
                &format!("{{ type filter hook {hook} priority 0 ; }}"),
            ]);
            self.nft(
                i,
                &format!("add rule inet fault {chain} ip {dir} {test} accept"),
            );
            let lo = if chain == "in" { "iif" } else { "oif" };
            self.nft(i, &format!("add rule inet fault {chain} {lo} lo accept"));
        }
    }

    fn set(&self, hosts: &[usize]) -> String {
        let ips: Vec<String> = hosts.iter().map(|h| self.ip(*h).to_string()).collect();
        format!("{{ {} }}", ips.join(", "))
    }

    /// Host i's packets to and from `others` vanish (a partition: connects hang).
    pub fn cut(&self, i: usize, others: &[usize]) {
        self.table(i);
        let set = self.set(others);
        self.nft(i, &format!("add rule inet fault in ip saddr {set} drop"));
        self.nft(i, &format!("add rule inet fault out ip daddr {set} drop"));
    }

    /// Every packet of host i vanishes, to and from every other host (a dead cloud host).
    pub fn black_hole(&self, i: usize) {
        let others: Vec<usize> = (0..self.hosts).filter(|h| *h != i).collect();
        self.cut(i, &others);
    }

    /// Host i drops `percent` % of the packets `from` sends to its port `port`, at random.
    pub fn lossy(&self, i: usize, from: usize, port: u16, percent: u8) {
        self.table(i);
        let src = self.ip(from);
        self.nft(
            i,
            &format!(
                "add rule inet fault in ip saddr {src} tcp dport {port} numgen random mod 100 < {percent} counter drop"
            ),
        );
    }

    /// Packets host i's rules have dropped so far (rules with a counter: [`Lab::lossy`]).
    pub fn dropped(&self, i: usize) -> u64 {
        let ns = self.ns(i);
        let out = Command::new("ip")
            .args([
                "netns", "exec", &ns, "nft", "list", "table", "inet", "fault",
            ])
            .output()
            .expect("nft list");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Removes host i's rules.
    pub fn heal(&self, i: usize) {
        let ns = self.ns(i);
        sh_quiet(&[
            "ip", "netns", "exec", &ns, "nft", "delete", "table", "inet", "fault",
        ]);
    }

    fn remove(&self) {
        sh_quiet(&["ip", "link", "del", &self.outside()]);
        for i in 0..self.hosts {
            sh_quiet(&["ip", "netns", "del", &self.ns(i)]);
        }
        sh_quiet(&["ip", "netns", "del", &self.hub()]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.remove();
    }
}
