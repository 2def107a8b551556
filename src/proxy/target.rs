//! Where a connection goes: the leader's address on a listener's side, from the view,
//! to a socket address.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use url::Url;

use super::config::Side;
use super::error::ConnError;
use crate::vault::view::{ClusterView, Freshness, Leader};

/// A side's targets, with the last one parsed.
pub(super) struct Targets {
    side: Side,
    /// The last view a target was parsed for, the address and its socket address.
    last: Mutex<Option<(Arc<ClusterView>, String, SocketAddr)>>,
}

impl Targets {
    pub fn new(side: Side) -> Self {
        Self {
            side,
            last: Mutex::default(),
        }
    }

    /// Where a new connection goes under `view`: the leader's cluster address as
    /// reported, and the socket address it names. An IP literal is parsed once per view
    /// (URL parsing and formatting showed in the per-connection profile); a host name
    /// is looked up every time, so it follows the name's records.
    pub async fn target(&self, view: &Arc<ClusterView>) -> Result<(String, SocketAddr), ConnError> {
        let Some(target_addr) = self.target_of(view) else {
            return Err(ConnError::NoLeader);
        };
        {
            let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((v, addr, socket)) = &*last {
                if Arc::ptr_eq(v, view) && *addr == target_addr {
                    return Ok((target_addr, *socket));
                }
            }
        }
        let resolved = match self.side {
            Side::Cluster => resolve(&target_addr).await,
            Side::Api => resolve_api(&target_addr).await,
        };
        let (socket, literal) = match resolved {
            Ok(r) => r,
            Err(Unresolved::BadAddress) => return Err(ConnError::BadAddress(target_addr)),
            Err(Unresolved::Lookup) => return Err(ConnError::Resolve(target_addr)),
        };
        if literal {
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((view.clone(), target_addr.clone(), socket));
        }
        Ok((target_addr, socket))
    }

    /// The leader's address on this side, when the view may be used.
    fn target_of(&self, view: &ClusterView) -> Option<String> {
        if view.freshness(Instant::now()) == Freshness::Unusable {
            return None;
        }
        view.leader.as_ref().map(|l| self.address_of(l))
    }

    /// The leader's address this side forwards to: its `api_addr`, or its cluster address.
    pub fn address_of(&self, leader: &Leader) -> String {
        match self.side {
            Side::Cluster => self.cluster_addr_of(leader),
            Side::Api => leader.api_addr.clone(),
        }
    }

    /// `leader_cluster_address` as reported, or the leader's address on port 8201 when
    /// a node did not report one.
    fn cluster_addr_of(&self, leader: &Leader) -> String {
        if !leader.cluster_addr.is_empty() {
            return leader.cluster_addr.clone();
        }
        match leader.addrs.first() {
            Some(ip) => format!("https://{}", SocketAddr::new(*ip, 8201)),
            None => String::new(),
        }
    }
}

/// Why a leader address gave no socket address.
enum Unresolved {
    /// Not a URL with a host.
    BadAddress,
    /// Its host name resolves to nothing (now).
    Lookup,
}

/// `https://host:port` (Vault's `cluster_addr` form) or `host:port` to a socket address,
/// and whether the host was an IP literal (no lookup involved). No port means 8201.
async fn resolve(cluster_addr: &str) -> Result<(SocketAddr, bool), Unresolved> {
    let with_scheme = if cluster_addr.contains("://") {
        cluster_addr.to_string()
    } else {
        format!("https://{cluster_addr}")
    };
    let url = Url::parse(&with_scheme).map_err(|_| Unresolved::BadAddress)?;
    let port = url.port().unwrap_or(8201);
    resolve_host(&url, port).await
}

/// An `api_addr` (`http://host:8200`, `https://host`) to a socket address: its port, or
/// its scheme's (a URL without a port means the scheme's port to every HTTP client).
async fn resolve_api(api_addr: &str) -> Result<(SocketAddr, bool), Unresolved> {
    let url = Url::parse(api_addr).map_err(|_| Unresolved::BadAddress)?;
    let port = url.port_or_known_default().ok_or(Unresolved::BadAddress)?;
    resolve_host(&url, port).await
}

async fn resolve_host(url: &Url, port: u16) -> Result<(SocketAddr, bool), Unresolved> {
    match url.host().ok_or(Unresolved::BadAddress)? {
        url::Host::Ipv4(ip) => Ok((SocketAddr::new(ip.into(), port), true)),
        url::Host::Ipv6(ip) => Ok((SocketAddr::new(ip.into(), port), true)),
        url::Host::Domain(name) => {
            let mut found = tokio::net::lookup_host((name, port))
                .await
                .map_err(|_| Unresolved::Lookup)?;
            Ok((found.next().ok_or(Unresolved::Lookup)?, false))
        }
    }
}
