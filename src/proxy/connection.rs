//! One proxied connection, start to end: hello -> route -> target -> connect -> pump,
//! with the cut-over when the leader moves. Every refusal is an RST and a
//! [`ConnError`] whose kind is counted by the listener.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use socket2::SockRef;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::config::{DataPath, OnLeaderChange, RouteAction, Side};
use super::connect::{connect, connect_and_send, reset, set_keepalive, with_deferred_keepalive};
use super::error::ConnError;
use super::hello::{read_client_hello, ClientHello};
use super::listener::ProxySide;
use super::route::alpn_label;
use super::splice::splice_bidirectional;
use super::target::{target, target_of};
use crate::vault::feed::ClusterFeed;
use crate::vault::view::ClusterView;

/// Buffer per direction for the copy loop. 64 KiB keeps syscalls per byte low on bulk
/// replication streams without much memory per connection.
const COPY_BUF: usize = 64 * 1024;

/// A refusal: the connection's ALPN label index (None before one is known) and why.
type Refused = (Option<usize>, ConnError);

impl ProxySide {
    pub(super) async fn handle(
        &self,
        client: TcpStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<(), Refused> {
        let (label, hello) = match self.admit(&client).await {
            Ok(admitted) => admitted,
            Err(refused) => {
                reset(client);
                return Err(refused);
            }
        };
        let mut feed = self.feed();
        let view = feed.seen();
        let started = Instant::now();
        let (target, upstream) = match self.reach(&view, hello.as_ref()).await {
            Ok(reached) => reached,
            Err(e) => {
                reset(client);
                return Err((Some(label), e));
            }
        };
        self.metrics
            .connect_duration
            .record(started.elapsed().as_secs_f64());
        self.metrics.forwarded[label].increment(1);
        debug!(%peer, %target, side = self.side.as_str(), alpn = %self.router.labels()[label], sni = ?hello.as_ref().and_then(|h| h.sni()), connect = ?started.elapsed(), "forwarding");
        // Replayed: its buffer need not live as long as the connection.
        drop(hello);
        self.pump(client, upstream, feed, (peer, target), shutdown)
            .await;
        Ok(())
    }

    /// The cluster side reads the ClientHello to route it; the API side forwards
    /// whatever the client sends (its metric label is the one for "no ALPN").
    async fn admit(&self, client: &TcpStream) -> Result<(usize, Option<ClientHello>), Refused> {
        if self.side == Side::Api {
            return Ok((self.router.label(Default::default()), None));
        }
        let hello = read_client_hello(
            client,
            self.config.client_hello_timeout,
            self.config.max_client_hello,
        )
        .await
        .map_err(|e| (None, e.into()))?;
        let label = self.router.label(hello.alpn());
        if self.router.route(hello.alpn()) == RouteAction::Reject {
            let alpn = alpn_label(hello.alpn());
            return Err((Some(label), ConnError::Rejected(alpn)));
        }
        Ok((label, Some(hello)))
    }

    /// The leader's address under `view`, and a connection to it with the hello sent.
    async fn reach(
        &self,
        view: &ClusterView,
        hello: Option<&ClientHello>,
    ) -> Result<(SocketAddr, TcpStream), ConnError> {
        let target = target(self.side, view)?;
        let upstream = match hello {
            Some(hello) => {
                connect_and_send(target, &hello.bytes, self.config.connect_timeout).await?
            }
            None => connect(target, self.config.connect_timeout).await?,
        };
        Ok((target, upstream))
    }

    /// Moves bytes both ways until either side is done, the agent stops, or (with
    /// `on_leader_change = "close"`) the feed names another leader.
    async fn pump(
        &self,
        mut client: TcpStream,
        mut upstream: TcpStream,
        mut feed: ClusterFeed,
        (peer, target): (SocketAddr, SocketAddr),
        shutdown: CancellationToken,
    ) {
        let copy = self.move_bytes(&mut client, &mut upstream);
        tokio::pin!(copy);
        let watch_leader = self.config.on_leader_change == OnLeaderChange::Close;
        let mut feed_open = true;
        loop {
            // biased: polled in order, without drawing a random number per poll.
            tokio::select! {
                biased;
                result = &mut copy => {
                    let (up, down) = result.unwrap_or((0, 0));
                    debug!(%peer, %target, bytes_up = up, bytes_down = down, "connection done");
                    return;
                }
                changed = feed.changed(), if watch_leader && feed_open => {
                    if changed.is_err() {
                        // The watcher is gone: a reload replaced it (follow its successor,
                        // judging its view at once), or the agent is stopping (the
                        // shutdown branch ends us).
                        let next = self.feed();
                        if next.same_source(&feed) {
                            feed_open = false;
                            continue;
                        }
                        feed = next;
                    }
                    // A view without a leader (an election) keeps the connection: it
                    // goes only once another leader is known.
                    let view = feed.seen();
                    if let Some(leader) = &view.leader {
                        let new = target_of(self.side, leader);
                        if new != Some(target) {
                            self.cut_over.fetch_add(1, Ordering::Relaxed);
                            self.metrics.cut_over.increment(1);
                            info!(%peer, old = %target, new = ?new, leader = %leader.api_addr, "leader changed; closing proxied connection");
                            return;
                        }
                    }
                }
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

impl ProxySide {
    /// The data path: bytes both ways until either side is done. Dropping it (leader
    /// change, shutdown) leaves both streams to the caller, which closes them.
    async fn move_bytes(
        &self,
        client: &mut TcpStream,
        upstream: &mut TcpStream,
    ) -> std::io::Result<(u64, u64)> {
        let metrics = &self.metrics;
        match self.config.data_path {
            DataPath::Splice => {
                let counters = [&metrics.bytes_up, &metrics.bytes_down];
                let moving = splice_bidirectional(client, upstream, &self.pools, counters);
                tokio::pin!(moving);
                with_deferred_keepalive(moving, upstream).await
            }
            DataPath::Copy => {
                // The fallback path counts when the connection ends.
                set_keepalive(SockRef::from(&*upstream));
                let result =
                    tokio::io::copy_bidirectional_with_sizes(client, upstream, COPY_BUF, COPY_BUF)
                        .await;
                if let Ok((up, down)) = result {
                    metrics.bytes_up.increment(up);
                    metrics.bytes_down.increment(down);
                }
                result
            }
        }
    }
}
