//! Where a connection goes: the leader's address on a listener's side, as the watcher
//! resolved it (the proxy never resolves names itself).

use std::net::SocketAddr;
use std::time::Instant;

use super::config::Side;
use super::error::ConnError;
use crate::vault::view::{ClusterView, Freshness, Leader};

/// The socket address a new connection on `side` goes to under `view`: none while the
/// view may not be used or names no leader.
pub(super) fn target(side: Side, view: &ClusterView) -> Result<SocketAddr, ConnError> {
    if view.freshness(Instant::now()) == Freshness::Unusable {
        return Err(ConnError::NoLeader);
    }
    let leader = view.leader.as_ref().ok_or(ConnError::NoLeader)?;
    target_of(side, leader).ok_or_else(|| {
        ConnError::Unusable(match side {
            Side::Cluster => leader.cluster_addr.clone(),
            Side::Api => leader.api_addr.clone(),
        })
    })
}

/// The leader's socket address on `side`, if it has a usable one.
pub(super) fn target_of(side: Side, leader: &Leader) -> Option<SocketAddr> {
    match side {
        Side::Cluster => leader.cluster_target,
        Side::Api => leader.api_target(),
    }
}
