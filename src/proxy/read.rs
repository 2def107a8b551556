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
use std::task::{ready, Context, Poll};

use rustix::net::RecvFlags;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Reads once into `buf` (0 at EOF), waiting for data if there is none.
pub fn poll_read(
    sock: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    let want = buf.len();
    poll_recv(sock, cx, want, || {
        Ok(rustix::net::recv(sock, &mut *buf, RecvFlags::empty())?.0)
    })
}

/// Reads once into the spare capacity of `buf` (which must have some), appending: no
/// zeroing of memory the read then overwrites. 0 at EOF.
pub async fn read_append(sock: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let want = buf.capacity() - buf.len();
    debug_assert!(want > 0);
    std::future::poll_fn(|cx| {
        poll_recv(sock, cx, want, || {
            let spare = rustix::buffer::spare_capacity(&mut *buf);
            Ok(rustix::net::recv(sock, spare, RecvFlags::empty())?.0)
        })
    })
    .await
}

/// One `recv` of up to `want` bytes, the way the module header describes.
fn poll_recv(
    sock: &TcpStream,
    cx: &mut Context<'_>,
    want: usize,
    mut recv: impl FnMut() -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(sock.poll_read_ready(cx))?;
        let mut drained = None;
        let result = sock.try_io(Interest::READABLE, || {
            let n = recv()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::testing::tcp_pair as pair;
    use tokio::io::AsyncWriteExt;

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
        let mut total = 0;
        while total < 100 {
            let n =
                tokio::time::timeout(std::time::Duration::from_secs(5), read(&server, &mut buf))
                    .await
                    .expect("remaining bytes are read, not waited for")
                    .unwrap();
            assert!(n > 0);
            total += n;
        }
        assert_eq!(total, 100);
    }
}
