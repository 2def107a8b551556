//! Real OpenBao under network faults: three raft nodes, each in a network namespace of
//! its own with an agent beside it (the per-node sidecar), and nft rules that partition
//! a node, black-hole one, or drop half the packets on one path (`crate::support::netlab`).
//!
//! Each scenario asserts what must happen eventually, with generous deadlines, and one
//! invariant throughout: no agent ever answers two addresses for `active`. How fast it
//! happens is measured in `bench/`, not here. Needs root; skipped (with a line saying
//! so) elsewhere.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::agent::Agent;
use crate::support::config::agent_config;
use crate::support::dns::{ips, query, rcode, Proto};
use crate::support::netlab::Lab;
use crate::support::openbao::{eventually, Cluster};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const ACTIVE: &str = "active.vault.service.consul.";

/// Three hosts, an OpenBao node and an agent on each.
struct Site {
    agents: Vec<Agent>,
    cluster: Cluster,
    lab: Lab,
}

impl Site {
    async fn start(tag: &str, subnet: u8) -> Option<Site> {
        let lab = Lab::new(tag, subnet, 3)?;
        let cluster =
            Cluster::start_on((0..3).map(|i| (lab.ip(i), Some(lab.ns(i)))).collect()).await;
        let nodes: Vec<String> = (0..3)
            .map(|i| format!("http://{}:8200", lab.ip(i)))
            .collect();
        let agents = (0..3)
            .map(|i| {
                let dns = SocketAddr::new(IpAddr::V4(lab.ip(i)), 8600);
                let config = agent_config("dc1", &dns.to_string())
                    .cluster("dc1", &nodes, &[("poll_interval", "250ms")])
                    .toml();
                Agent::start_in(&lab.ns(i), &config, dns)
            })
            .collect();
        // Fields drop in order: agents, then the cluster, then the namespaces.
        Some(Site {
            agents,
            cluster,
            lab,
        })
    }

    fn ip(&self, i: usize) -> IpAddr {
        IpAddr::V4(self.lab.ip(i))
    }

    /// What agent `a` answers for `active`: its addresses (empty for NXDOMAIN).
    fn active_of(&self, a: usize) -> Option<Vec<IpAddr>> {
        let m = query(self.agents[a].dns, ACTIVE, RecordType::A, Proto::Udp).ok()?;
        match rcode(&m) {
            ResponseCode::NoError => Some(ips(&m)),
            ResponseCode::NXDomain => Some(Vec::new()),
            _ => None,
        }
    }

    /// Waits until agent `a` answers exactly `want` (empty: NXDOMAIN).
    async fn wait_answer(&self, a: usize, want: &[IpAddr], what: &str) {
        eventually(Duration::from_secs(30), what, || async {
            (self.active_of(a).as_deref() == Some(want)).then_some(())
        })
        .await;
    }

    /// The node the cluster itself says is active, asked from the test's own address
    /// (never cut), once it is not `not`.
    async fn leader_other_than(&self, not: Option<usize>) -> usize {
        eventually(Duration::from_secs(60), "a new active node", || async {
            self.cluster
                .active_index()
                .await
                .filter(|i| Some(*i) != not)
        })
        .await
    }

    /// Starts asking every agent for `active` every 50 ms, in the background.
    fn probe(&self) -> Probe {
        let dns: Vec<SocketAddr> = self.agents.iter().map(|a| a.dns).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                for d in &dns {
                    if let Ok(m) = query(*d, ACTIVE, RecordType::A, Proto::Udp) {
                        if ips(&m).len() > 1 {
                            seen.push(format!("{d} answered {:?}", ips(&m)));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            seen
        });
        Probe { stop, thread }
    }
}

struct Probe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Probe {
    /// Stops probing; fails if any agent ever answered two addresses for `active`.
    fn assert_never_two_actives(self) {
        self.stop.store(true, Ordering::Relaxed);
        let seen = self.thread.join().unwrap();
        assert!(seen.is_empty(), "two addresses for active: {seen:?}");
    }
}

/// The active node cut off from the other two: the agents beside the other two move to
/// the new leader; the agent beside the isolated node, which now hears only its own
/// node, stops vouching for it; after the heal all three agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_isolated_active_node() {
    let Some(site) = Site::start("pa", 1).await else {
        return;
    };
    let old = site.leader_other_than(None).await;
    for a in 0..3 {
        site.wait_answer(a, &[site.ip(old)], "every agent answers the leader")
            .await;
    }
    let probe = site.probe();
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    site.lab.cut(old, &others);

    let new = site.leader_other_than(Some(old)).await;
    for &a in &others {
        site.wait_answer(
            a,
            &[site.ip(new)],
            "majority-side agents answer the new leader",
        )
        .await;
    }
    site.wait_answer(old, &[], "the isolated agent vouches for no one")
        .await;
    let (_, status) = site.agents[old].admin_get("/status");
    assert!(
        status.contains("members unheard") || status.contains("when polled"),
        "the isolated agent says why: {status}"
    );

    site.lab.heal(old);
    let leader = site.leader_other_than(None).await;
    for a in 0..3 {
        site.wait_answer(a, &[site.ip(leader)], "after the heal, all agents agree")
            .await;
    }
    probe.assert_never_two_actives();
}

/// A follower whose packets vanish (a dead host) while the leader steps down: the other
/// agents follow the new leader; the black-holed host's agent, hearing one member,
/// answers none. Then half the packets from one agent to a follower are dropped: that
/// agent keeps answering the leader every time, since the leader and the other follower
/// are a majority without the lossy one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_follower_and_a_lossy_path() {
    let Some(site) = Site::start("bh", 2).await else {
        return;
    };
    let old = site.leader_other_than(None).await;
    let follower = (old + 1) % 3;
    let third = (old + 2) % 3;
    for a in 0..3 {
        site.wait_answer(a, &[site.ip(old)], "every agent answers the leader")
            .await;
    }
    let probe = site.probe();
    site.lab.black_hole(follower);
    site.cluster.step_down().await;
    let new = site.leader_other_than(Some(old)).await;
    assert_ne!(new, follower, "a black-holed node cannot win");
    for a in [old, third] {
        site.wait_answer(a, &[site.ip(new)], "agents beside reachable nodes follow")
            .await;
    }
    site.wait_answer(follower, &[], "the black-holed host's agent answers none")
        .await;

    site.lab.heal(follower);
    for a in 0..3 {
        site.wait_answer(a, &[site.ip(new)], "after the heal, all agents agree")
            .await;
    }

    // Half the packets from the leader's host to one follower's API are dropped, once
    // the other follower (back from its black hole) answers that host's agent again:
    // the leader and that follower are then a majority without the lossy one.
    let lossy = (new + 1) % 3;
    let other = (new + 2) % 3;
    eventually(
        Duration::from_secs(60),
        "the other follower answers again",
        || async {
            let (_, body) = site.agents[new].admin_get("/status");
            let status: serde_json::Value = serde_json::from_str(&body).ok()?;
            let member = &status["clusters"][0]["members"][other];
            (member["role"] == "standby" && member["error"].is_null()).then_some(())
        },
    )
    .await;
    site.lab.lossy(lossy, new, 8200, 50);
    for _ in 0..40 {
        assert_eq!(
            site.active_of(new).as_deref(),
            Some(&[site.ip(new)][..]),
            "a lossy path to one follower never costs the answer: {}",
            site.agents[new].admin_get("/status").1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        site.lab.dropped(lossy) > 0,
        "the lossy rule dropped packets (else this proved nothing)"
    );
    site.lab.heal(lossy);
    probe.assert_never_two_actives();
}
