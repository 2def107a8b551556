//! Zero-copy forwarding with splice(2): socket -> pipe -> socket, in the kernel, so
//! payload bytes never enter user space. Through rustix (safe wrappers; no `unsafe`
//! here). Linux only, like the rest of the agent.
//!
//! Each direction starts with plain reads and writes through a small buffer and switches
//! to splice the first time a read fills that buffer (HAProxy's `splice-auto`): for the
//! few hundred bytes of a handshake or an RPC, two splices through a pipe cost more than
//! a read and a write, while a bulk replication stream fills the buffer at once and
//! moves by splice from then on.
//!
//! Readiness rule that keeps this correct with tokio's edge-triggered readiness: a
//! `WouldBlock` clears the socket's cached readiness, so it must only ever come from the
//! socket, never from the pipe. We therefore fill the pipe only when it is empty (an
//! empty pipe always takes data the socket has) and drain it only when it holds data.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Pipe capacity asked for (the kernel may grant less; 64 KiB is the floor).
const PIPE_SIZE: usize = 1 << 20;

/// The buffer a direction starts with; a read that fills it makes the direction bulk
/// (spliced). HAProxy's default buffer size.
const SMALL_BUF: usize = 16 * 1024;

pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    size: usize,
}

impl Pipe {
    fn new() -> io::Result<Self> {
        let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        // Unprivileged processes may be capped by /proc/sys/fs/pipe-max-size: keep the
        // default then.
        let size = fcntl_setpipe_size(&write, PIPE_SIZE).unwrap_or(64 * 1024);
        Ok(Self { read, write, size })
    }
}

/// Objects kept for reuse by a listener's connections, up to a bound.
///
/// Pipes: creating two per connection (pipe2, F_SETPIPE_SZ, two inodes, close) was a
/// measurable share of the per-connection cost; HAProxy pools its pipes the same way.
/// Only pipes known to be empty come back. Buffers: a 16 KiB malloc, memset and free per
/// direction showed in the connection-rate profile (glibc serves that size from its
/// bins, not the thread cache).
pub struct Pool<T> {
    items: std::sync::Mutex<Vec<T>>,
    max: usize,
}

impl<T> Pool<T> {
    pub fn new(max: usize) -> Self {
        Self {
            items: std::sync::Mutex::new(Vec::new()),
            max,
        }
    }

    fn take_or(&self, make: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let pooled = self.items.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(item) => Ok(item),
            None => make(),
        }
    }

    fn give_back(&self, item: T) {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        if items.len() < self.max {
            items.push(item);
        }
    }

    /// Items currently pooled (for tests).
    pub fn pooled(&self) -> usize {
        self.items.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// What the splice data path reuses across connections.
pub struct SplicePools {
    pub pipes: Pool<Pipe>,
    bufs: Pool<Vec<u8>>,
}

impl SplicePools {
    pub fn new(max: usize) -> Self {
        Self {
            pipes: Pool::new(max),
            // 16 KiB each: a burst of connections leaves at most 1 MiB behind.
            bufs: Pool::new(max.min(64)),
        }
    }
}

/// A pooled buffer that goes back to its pool however the direction ends.
struct PooledBuf<'a> {
    buf: Vec<u8>,
    pool: &'a Pool<Vec<u8>>,
}

impl Drop for PooledBuf<'_> {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

/// Copies both ways until both directions reach EOF (half-close respected: EOF on one
/// side shuts down writing on the other), or an error. Returns bytes (a->b, b->a).
/// `moved` counts them as they go (a->b, b->a), so a replication stream that runs for
/// days shows its traffic while it runs, and bytes of a connection cut by a leader
/// change or an error are counted too.
///
/// The caller closes both sockets as soon as this returns: the second direction to
/// reach EOF leaves the FIN to that close instead of a `shutdown` of its own (its
/// destination has already sent us EOF, so the close cannot turn into a reset).
pub async fn splice_bidirectional(
    a: &TcpStream,
    b: &TcpStream,
    pool: &SplicePools,
    moved: [&metrics::Counter; 2],
) -> io::Result<(u64, u64)> {
    let one_done = AtomicBool::new(false);
    let (ab, ba) = tokio::try_join!(
        one_way(a, b, pool, &one_done, moved[0]),
        one_way(b, a, pool, &one_done, moved[1])
    )?;
    Ok((ab, ba))
}

/// EOF from a direction's source: pass the half-close on, unless the other direction
/// is already done (then the caller's close sends the FIN).
fn pass_eof(dst: &TcpStream, one_done: &AtomicBool) {
    if !one_done.swap(true, Ordering::Relaxed) {
        let _ = SockRef::from(dst).shutdown(std::net::Shutdown::Write);
    }
}

#[derive(PartialEq)]
enum Phase {
    Eof,
    Bulk,
}

/// Reads and writes through a pooled buffer until the source's EOF, or until a read
/// fills the buffer (the direction is bulk: splice from then on). Adds to `total`.
async fn small_phase(
    src: &TcpStream,
    dst: &TcpStream,
    pool: &SplicePools,
    total: &mut u64,
    moved: &metrics::Counter,
) -> io::Result<Phase> {
    let mut guard = PooledBuf {
        buf: pool.bufs.take_or(|| Ok(vec![0u8; SMALL_BUF]))?,
        pool: &pool.bufs,
    };
    let buf = guard.buf.as_mut_slice();
    loop {
        let n = super::read::read(src, buf).await?;
        if n == 0 {
            return Ok(Phase::Eof);
        }
        let mut sent = 0;
        while sent < n {
            dst.writable().await?;
            match dst.try_write(&buf[sent..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(m) => sent += m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        *total += n as u64;
        moved.increment(n as u64);
        if n == buf.len() {
            return Ok(Phase::Bulk);
        }
    }
}

async fn one_way(
    src: &TcpStream,
    dst: &TcpStream,
    pool: &SplicePools,
    one_done: &AtomicBool,
    moved: &metrics::Counter,
) -> io::Result<u64> {
    let mut total = 0u64;
    // Small reads through user space until one fills the buffer.
    if small_phase(src, dst, pool, &mut total, moved).await? == Phase::Eof {
        pass_eof(dst, one_done);
        return Ok(total);
    }

    // Bulk from here on: socket -> pipe -> socket.
    let pipe = pool.pipes.take_or(Pipe::new)?;
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    loop {
        // Fill the (empty) pipe from the source.
        let n = loop {
            src.readable().await?;
            match src.try_io(Interest::READABLE, || {
                splice(src, None, &pipe.write, None, pipe.size, flags).map_err(io::Error::from)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            // The pipe is empty: reuse it.
            pass_eof(dst, one_done);
            pool.pipes.give_back(pipe);
            return Ok(total);
        }
        // Drain the pipe into the destination.
        let mut left = n;
        while left > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                splice(&pipe.read, None, dst, None, left, flags).map_err(io::Error::from)
            }) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(m) => {
                    left -= m;
                    moved.increment(m as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::testing::tcp_pair as pair;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn noop() -> metrics::Counter {
        metrics::Counter::noop()
    }

    type Relay = tokio::task::JoinHandle<io::Result<(u64, u64)>>;

    /// client <-> [p1 splice p2] <-> server, uncounted: the two ends, the relay's pool
    /// (4 pipes), and the relay, which closes p1 and p2 when it is done.
    async fn relayed() -> (TcpStream, TcpStream, Arc<SplicePools>, Relay) {
        let (client, p1) = pair().await;
        let (p2, server) = pair().await;
        let pool = Arc::new(SplicePools::new(4));
        let relay_pool = pool.clone();
        let relay = tokio::spawn(async move {
            let r = splice_bidirectional(&p1, &p2, &relay_pool, [&noop(), &noop()]).await;
            drop((p1, p2));
            r
        });
        (client, server, pool, relay)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_are_counted_while_the_stream_runs() {
        let (mut client, p1) = pair().await;
        let (p2, mut server) = pair().await;
        let up = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicU64::new(0));
        let (c_up, c_down) = (
            metrics::Counter::from_arc(up.clone()),
            metrics::Counter::from_arc(down.clone()),
        );
        let pools = Arc::new(SplicePools::new(4));
        let relay_pools = pools.clone();
        let _relay = tokio::spawn(async move {
            splice_bidirectional(&p1, &p2, &relay_pools, [&c_up, &c_down]).await
        });
        // 4 MiB up (bulk: spliced), 100 bytes down (small reads); the connection stays open.
        client.write_all(&vec![1u8; 4 << 20]).await.unwrap();
        let mut got = vec![0u8; 4 << 20];
        server.read_exact(&mut got).await.unwrap();
        server.write_all(&[2u8; 100]).await.unwrap();
        client.read_exact(&mut [0u8; 100]).await.unwrap();
        // The relay counts right after each write returns, on another thread: allow it
        // that moment, while the connection is still open.
        for (counter, want) in [(&up, 4u64 << 20), (&down, 100)] {
            let mut waited = 0;
            while counter.load(Ordering::Relaxed) != want && waited < 500 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                waited += 1;
            }
            assert_eq!(
                counter.load(Ordering::Relaxed),
                want,
                "counted before the end"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn moves_bytes_both_ways_with_half_close() {
        let (mut client, mut server, pool, relay) = relayed().await;

        let data: Vec<u8> = (0..8 * 1024 * 1024u32)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect();
        let sent = data.clone();
        let server_task = tokio::spawn(async move {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            // Half-closed by the client; the server can still answer.
            server.write_all(&got[..1000]).await.unwrap();
            server.shutdown().await.unwrap();
            got
        });
        client.write_all(&sent).await.unwrap();
        client.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        let got = server_task.await.unwrap();
        assert!(got == data, "bytes differ after splice");
        assert_eq!(back, data[..1000]);
        let (up, down) = relay.await.unwrap().unwrap();
        assert_eq!((up, down), (data.len() as u64, 1000));
        assert_eq!(
            pool.pipes.pooled(),
            1,
            "the bulk direction spliced and gave its pipe back; the 1000-byte one never took one"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_exchanges_stay_off_the_pipes_and_close_cleanly() {
        let (mut client, mut server, pool, relay) = relayed().await;
        for round in 0..50u32 {
            let msg = format!("request {round}");
            client.write_all(msg.as_bytes()).await.unwrap();
            let mut got = vec![0u8; msg.len()];
            server.read_exact(&mut got).await.unwrap();
            server.write_all(&got).await.unwrap();
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(got, msg.as_bytes());
        }
        // Server closes first; the client sees EOF, then closes its side.
        server.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        client.shutdown().await.unwrap();
        // The server's side ends in a FIN (EOF), not a reset.
        let mut tail = Vec::new();
        server.read_to_end(&mut tail).await.unwrap();
        let (up, down) = relay.await.unwrap().unwrap();
        assert_eq!(up, down);
        assert_eq!(pool.pipes.pooled(), 0, "no pipe was needed");
        assert_eq!(pool.bufs.pooled(), 2, "both buffers went back to the pool");
    }
}
