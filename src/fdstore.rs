//! DNS listening sockets that outlive the process: systemd's file-descriptor store
//! (`FileDescriptorStoreMax=` in the unit). The running DNS server hands systemd a copy
//! of each of its sockets (`FDSTORE=1`, one `FDNAME=` per address and protocol); when
//! the agent restarts (`systemctl restart`, a package upgrade, a crash under
//! `Restart=on-failure`) systemd keeps them open and passes them to the new process
//! (`LISTEN_FDS`, `LISTEN_FDNAMES`), which serves on them instead of binding anew. In
//! between, queries wait in the sockets' buffers instead of meeting a closed port (an
//! ICMP "port unreachable" that the system resolver turns into a failed lookup).
//!
//! Without systemd (`NOTIFY_SOCKET` and `LISTEN_PID` unset: tests, a shell) nothing is
//! stored and nothing is inherited.
//!
//! The store must hold exactly the sockets the running server reads: the UDP sockets of
//! one address form an SO_REUSEPORT group, and the kernel would hand a share of the
//! queries to a stored socket nobody reads. So every store replaces the whole set
//! ([`replace`]): names no longer served are removed (`FDSTOREREMOVE=1`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Mutex, OnceLock};

use tracing::{debug, info, warn};

/// Which of an address's sockets a stored descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    DnsUdp,
    DnsTcp,
}

/// The name a socket is stored under: `dns-udp@127.0.0.1_8600`. systemd refuses `:` in
/// a name (it separates `LISTEN_FDNAMES`), so the address's colons become `_`.
pub fn name(kind: Kind, addr: SocketAddr) -> String {
    let kind = match kind {
        Kind::DnsUdp => "dns-udp",
        Kind::DnsTcp => "dns-tcp",
    };
    format!("{kind}@{}", addr.to_string().replace(':', "_"))
}

/// The sockets systemd passed this process at start, by name, until taken.
static INHERITED: OnceLock<Mutex<Vec<(String, OwnedFd)>>> = OnceLock::new();
/// The names stored by this process (and, at start, those inherited: systemd still
/// holds them).
static STORED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Takes the descriptors systemd passed (call once, early in `main`, before anything
/// opens a file: the descriptors are 3.. as `LISTEN_FDS` counts them).
pub fn adopt_inherited() {
    let fds = match sd_notify::listen_fds_with_names() {
        Ok(fds) => fds,
        Err(e) => {
            warn!(error = %e, "LISTEN_FDS unreadable: binding every listener anew");
            return;
        }
    };
    let mut adopted = Vec::new();
    for (raw, name) in fds {
        // SAFETY: `listen_fds_with_names` yields only descriptors 3..3+LISTEN_FDS, and
        // only when LISTEN_PID is this process: systemd opened them for this process
        // before exec, and nothing in it has used them yet. This runs once, first thing
        // in `main` (before any thread, file or socket of ours exists), and every
        // descriptor is adopted exactly once, here, so each OwnedFd is the sole owner.
        #[allow(unsafe_code)]
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        adopted.push((name, fd));
    }
    if !adopted.is_empty() {
        let names: Vec<&str> = adopted.iter().map(|(n, _)| n.as_str()).collect();
        info!(sockets = %names.join(","), "serving on sockets kept by systemd across the restart");
        let mut stored = STORED.lock().unwrap_or_else(|p| p.into_inner());
        stored.extend(names.iter().map(|n| n.to_string()));
    }
    let _ = INHERITED.set(Mutex::new(adopted));
}

/// Takes every inherited descriptor stored under `name` (none when nothing was).
pub fn take(name: &str) -> Vec<OwnedFd> {
    let Some(inherited) = INHERITED.get() else {
        return Vec::new();
    };
    let mut all = inherited.lock().unwrap_or_else(|p| p.into_inner());
    let (taken, rest): (Vec<_>, Vec<_>) = all.drain(..).partition(|(n, _)| n == name);
    *all = rest;
    taken.into_iter().map(|(_, fd)| fd).collect()
}

/// Whether sockets for `name` were inherited and not yet taken: the address is ours
/// (systemd holds it for us), not another process's.
pub fn holds(name: &str) -> bool {
    INHERITED.get().is_some_and(|i| {
        i.lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|(n, _)| n == name)
    })
}

/// Makes the store hold exactly `sockets` (name, descriptors): each name is replaced,
/// and names stored before but not given are removed. A no-op without systemd.
pub fn replace(sockets: &[(String, Vec<BorrowedFd<'_>>)]) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let mut stored = STORED.lock().unwrap_or_else(|p| p.into_inner());
    replace_in(&path, &mut stored, sockets);
    debug!(count = sockets.len(), "sockets stored with systemd");
}

/// [`replace`], given the manager's socket and what it holds now.
fn replace_in(
    path: &std::ffi::OsStr,
    stored: &mut BTreeSet<String>,
    sockets: &[(String, Vec<BorrowedFd<'_>>)],
) {
    let gone: Vec<String> = stored
        .iter()
        .filter(|n| !sockets.iter().any(|(s, _)| s == *n))
        .cloned()
        .collect();
    for name in gone.iter().chain(sockets.iter().map(|(n, _)| n)) {
        send(path, &format!("FDSTOREREMOVE=1\nFDNAME={name}\n"), &[]);
    }
    for (name, fds) in sockets {
        send(path, &format!("FDSTORE=1\nFDNAME={name}\n"), fds);
    }
    *stored = sockets.iter().map(|(n, _)| n.clone()).collect();
}

/// One notification with descriptors attached (SCM_RIGHTS); a failure is logged: the
/// agent runs on, only a restart would then drop queries.
fn send(path: &std::ffi::OsStr, msg: &str, fds: &[BorrowedFd<'_>]) {
    if let Err(e) = send_with_fds(path, msg.as_bytes(), fds) {
        warn!(error = %e, "cannot store sockets with systemd: a restart will drop queries");
    }
}

fn send_with_fds(
    path: &std::ffi::OsStr,
    msg: &[u8],
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    use rustix::net::{
        sendmsg_addr, AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
        SocketAddrUnix, SocketFlags, SocketType,
    };
    use std::os::unix::ffi::OsStrExt;
    let addr = match path.as_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddrUnix::new_abstract_name(name)?,
        None => SocketAddrUnix::new(path)?,
    };
    // Non-blocking, as every notification of ours (`systemd`): a manager that does not
    // read its queue never stalls the agent; the message is then lost, and said so.
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    let mut space =
        vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len().max(1)))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other(
            "too many descriptors for one message",
        ));
    }
    sendmsg_addr(
        sock.as_fd(),
        &addr,
        &[std::io::IoSlice::new(msg)],
        &mut control,
        SendFlags::empty(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_have_no_colon() {
        assert_eq!(
            name(Kind::DnsUdp, "127.0.0.1:8600".parse().unwrap()),
            "dns-udp@127.0.0.1_8600"
        );
        assert_eq!(
            name(Kind::DnsTcp, "[::1]:53".parse().unwrap()),
            "dns-tcp@[__1]_53"
        );
    }

    /// A stand-in for systemd's notify socket receives the store's messages with the
    /// descriptors attached, and a second `replace` removes what it no longer holds.
    #[test]
    fn replace_sends_the_sockets_and_removes_the_gone() {
        use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let manager = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        manager.set_nonblocking(true).unwrap();
        let receive = || {
            let mut out = Vec::new();
            loop {
                let mut buf = [0u8; 256];
                let mut space =
                    vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let mut iov = [std::io::IoSliceMut::new(&mut buf)];
                let Ok(r) = recvmsg(&manager, &mut iov, &mut control, RecvFlags::empty()) else {
                    return out;
                };
                let fds: usize = control
                    .drain()
                    .map(|m| match m {
                        RecvAncillaryMessage::ScmRights(fds) => fds.count(),
                        _ => 0,
                    })
                    .sum();
                out.push((String::from_utf8_lossy(&buf[..r.bytes]).to_string(), fds));
            }
        };
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut stored = BTreeSet::new();
        let path = path.as_os_str();
        replace_in(
            path,
            &mut stored,
            &[("dns-udp@x".into(), vec![a.as_fd(), b.as_fd()])],
        );
        let got = receive();
        assert_eq!(
            got,
            vec![
                ("FDSTOREREMOVE=1\nFDNAME=dns-udp@x\n".to_string(), 0),
                ("FDSTORE=1\nFDNAME=dns-udp@x\n".to_string(), 2),
            ]
        );
        replace_in(path, &mut stored, &[("dns-udp@y".into(), vec![a.as_fd()])]);
        let got = receive();
        assert_eq!(
            got[0],
            ("FDSTOREREMOVE=1\nFDNAME=dns-udp@x\n".to_string(), 0),
            "{got:?}"
        );
        assert_eq!(
            got.last().unwrap(),
            &("FDSTORE=1\nFDNAME=dns-udp@y\n".to_string(), 1)
        );
    }
}
