//! Reading from a TCP socket without the read that only returns EAGAIN.
//!
//! tokio keeps a socket marked readable until a read fails with `WouldBlock`, so every
//! burst of data costs one more `recv` that finds the queue empty: on a short forwarding
//! connection (ClientHello one way, an answer the other) that was one syscall in
//! twenty. On Linux, TCP `recv` returns less than asked only when it has emptied the
//! receive queue, so a short read tells us as much as the EAGAIN would. We then clear
//! tokio's readiness ourselves, which is safe because:
//! - the read runs inside `try_io`, which clears readiness only if no event arrived
//!   since the readiness it observed before the read (tokio compares ticks);
//! - data arriving after the read raises a new epoll event, hence new readiness;
//! - EOF and errors (EPOLLRDHUP, EPOLLHUP) are never cleared by tokio, so a FIN that
//!   came with the data is still seen on the next read.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustix::net::RecvFlags;
use tokio::io::{AsyncRead, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Reads once into `buf` (0 at EOF), waiting for data if there is none.
pub fn poll_read(
    sock: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    loop {
        ready!(sock.poll_read_ready(cx))?;
        let want = buf.len();
        let mut drained = None;
        let result = sock.try_io(Interest::READABLE, || {
            let (n, _) = rustix::net::recv(sock, &mut *buf, RecvFlags::empty())?;
            if n > 0 && n < want {
                // Short: the queue is empty now. Report WouldBlock so tokio clears the
                // readiness it saw before this read; hand the bytes over below.
                drained = Some(n);
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match (result, drained) {
            (_, Some(n)) => return Poll::Ready(Ok(n)),
            (Ok(n), None) => return Poll::Ready(Ok(n)),
            (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => continue,
            (Err(e), None) => return Poll::Ready(Err(e)),
        }
    }
}

/// [`poll_read`] as a future.
pub async fn read(sock: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    std::future::poll_fn(|cx| poll_read(sock, cx, buf)).await
}

/// A shared TCP socket as an `AsyncRead` that reads the [`poll_read`] way.
pub struct Reader<'a>(pub &'a TcpStream);

impl AsyncRead for Reader<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = ready!(poll_read(self.0, cx, buf.initialize_unfilled()))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::testing::tcp_pair as pair;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn short_reads_then_later_data_and_eof_are_all_seen() {
        let (mut client, server) = pair().await;
        let mut buf = [0u8; 64];
        for round in 0..200u32 {
            let msg = round.to_be_bytes();
            client.write_all(&msg).await.unwrap();
            let mut got = 0;
            while got < 4 {
                got += read(&server, &mut buf[got..]).await.unwrap();
            }
            assert_eq!(buf[..4], msg);
        }
        // Data and FIN together: the short read must not hide the EOF behind it.
        client.write_all(b"last").await.unwrap();
        client.shutdown().await.unwrap();
        let mut all = Vec::new();
        loop {
            let n =
                tokio::time::timeout(std::time::Duration::from_secs(5), read(&server, &mut buf))
                    .await
                    .expect("EOF seen, not a hang")
                    .unwrap();
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        assert_eq!(all, b"last");
    }

    #[tokio::test]
    async fn a_full_buffer_is_read_again_without_waiting() {
        let (mut client, server) = pair().await;
        client.write_all(&[7u8; 100]).await.unwrap();
        let mut buf = [0u8; 10];
        let mut r = Reader(&server);
        let mut total = 0;
        while total < 100 {
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), r.read(&mut buf))
                .await
                .expect("remaining bytes are read, not waited for")
                .unwrap();
            assert!(n > 0);
            total += n;
        }
        assert_eq!(total, 100);
    }
}
