//! Zero-copy forwarding with splice(2): socket -> pipe -> socket, in the kernel, so
//! payload bytes never enter user space. Through rustix (safe wrappers; no `unsafe`
//! here). Linux only, like the rest of the agent.
//!
//! Readiness rule that keeps this correct with tokio's edge-triggered readiness: a
//! `WouldBlock` clears the socket's cached readiness, so it must only ever come from the
//! socket, never from the pipe. We therefore fill the pipe only when it is empty (an
//! empty pipe always takes data the socket has) and drain it only when it holds data.

use std::io;
use std::os::fd::OwnedFd;

use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Pipe capacity asked for (the kernel may grant less; 64 KiB is the floor).
const PIPE_SIZE: usize = 1 << 20;

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

/// Empty pipes kept for reuse. Creating two pipes per connection (pipe2, F_SETPIPE_SZ,
/// two inodes, close) was a measurable share of the per-connection cost; HAProxy pools
/// its pipes the same way. Only pipes known to be empty come back.
pub struct PipePool {
    pipes: std::sync::Mutex<Vec<Pipe>>,
    max: usize,
}

impl PipePool {
    pub fn new(max: usize) -> Self {
        Self {
            pipes: std::sync::Mutex::new(Vec::new()),
            max,
        }
    }

    fn take(&self) -> io::Result<Pipe> {
        let pooled = self.pipes.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(p) => Ok(p),
            None => Pipe::new(),
        }
    }

    fn give_back(&self, pipe: Pipe) {
        let mut pipes = self.pipes.lock().unwrap_or_else(|p| p.into_inner());
        if pipes.len() < self.max {
            pipes.push(pipe);
        }
    }

    /// Pipes currently pooled (for tests).
    pub fn pooled(&self) -> usize {
        self.pipes.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Copies both ways until both directions reach EOF (half-close respected: EOF on one
/// side shuts down writing on the other), or an error. Returns bytes (a->b, b->a).
pub async fn splice_bidirectional(
    a: &TcpStream,
    b: &TcpStream,
    pool: &PipePool,
) -> io::Result<(u64, u64)> {
    let (ab, ba) = tokio::try_join!(one_way(a, b, pool), one_way(b, a, pool))?;
    Ok((ab, ba))
}

async fn one_way(src: &TcpStream, dst: &TcpStream, pool: &PipePool) -> io::Result<u64> {
    let pipe = pool.take()?;
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    let mut total = 0u64;
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
            // EOF from the source: pass the half-close on. The pipe is empty: reuse it.
            let _ = SockRef::from(dst).shutdown(std::net::Shutdown::Write);
            pool.give_back(pipe);
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
                Ok(m) => left -= m,
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn moves_bytes_both_ways_with_half_close() {
        // client <-> [p1 splice p2] <-> server
        let (mut client, p1) = pair().await;
        let (p2, mut server) = pair().await;
        let pool = std::sync::Arc::new(PipePool::new(4));
        let relay_pool = pool.clone();
        let relay = tokio::spawn(async move { splice_bidirectional(&p1, &p2, &relay_pool).await });

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
        assert_eq!(pool.pooled(), 2, "both drained pipes are back in the pool");
    }
}
