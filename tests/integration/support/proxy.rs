//! One in-process proxy side for the data-path tests: its config from a `[[proxy]]`
//! table, its cluster's view set by the test through `views` (the proxy reads only the
//! view; it never polls), two listeners in one SO_REUSEPORT group, stopped at once on
//! `shutdown` (no drain).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vault_locator::config::Config;
use vault_locator::proxy::ProxySide;
use vault_locator::vault::feed::ClusterFeed;
use vault_locator::vault::view::{ClusterView, Leader, LeaderChange};

use super::config::{agent_config, nodes};
use super::tls::FakeNode;

pub struct InProcessProxy {
    pub proxy: Arc<ProxySide>,
    pub addr: SocketAddr,
    pub views: watch::Sender<Arc<ClusterView>>,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcessProxy {
    /// A proxy of cluster `dc1` on `listen` (port 0: any), with `extra` lines in its
    /// `[[proxy]]` table, forwarding to `leader` (none: no leader known).
    pub fn start(listen: &str, extra: &str, leader: Option<&FakeNode>) -> InProcessProxy {
        let text = agent_config("dc1", "127.0.0.1:8600")
            .cluster("dc1", &nodes("127.0.0", 1), &[])
            .proxy("dc1", listen, &[])
            .raw(extra)
            .toml();
        let config = Config::parse(&text, "test").unwrap();
        let (views, rx) = watch::channel(view_led_by(leader));
        let proxy = Arc::new(ProxySide::new(
            config.proxies[0].clone(),
            ClusterFeed::new(rx),
        ));
        // Two listeners in one SO_REUSEPORT group, each on a worker thread of its own.
        let listener = vault_locator::net::bind_tcp_group(config.proxies[0].listen, 2).unwrap();
        let addr = listener[0].local_addr().unwrap();
        let shutdown = CancellationToken::new();
        // Closed at once on shutdown: no drain.
        let run = proxy
            .clone()
            .run(listener, shutdown.clone(), shutdown.clone());
        InProcessProxy {
            proxy,
            addr,
            views,
            shutdown,
            task: tokio::spawn(run),
        }
    }
}

/// A fresh view of `dc1` whose leader is `node` (none: no leader), its cluster address
/// the node's TLS listener.
pub fn view_led_by(node: Option<&FakeNode>) -> Arc<ClusterView> {
    let mut v = ClusterView::empty("dc1", false);
    v.last_confirmed = Some(Instant::now());
    v.leader = node.map(|n| {
        Leader::literal(
            &format!("http://{}:8200", n.addr.ip()),
            &format!("https://{}", n.addr),
            vec![n.addr.ip()],
            8200,
        )
    });
    v.leader_changed = Some(LeaderChange {
        at: SystemTime::now(),
        reason: "test".into(),
    });
    Arc::new(v)
}
