//! A node's role, the one vocabulary the health parser, the rules, DNS and `/status`
//! share (a leaf: it imports nothing of the crate).

/// A node's role: what its own health answer says it is, or `Unreachable` when it
/// has no current answer. The DNS tags, `/status` and the votes all read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Active,
    Standby,
    /// A standby whose heartbeats to the active node fail (Vault 1.19+, health 474).
    /// It stays under `standby.`: Vault's own Consul registration tags a node by its
    /// HA state alone, and the node is unsealed and answers reads it can serve; /status
    /// and the log say what is wrong with it.
    StandbyHaUnhealthy,
    PerfStandby,
    Sealed,
    Uninitialized,
    /// Removed from the raft cluster (Vault 1.19+, health 530): not a member any more,
    /// never named, its votes not counted.
    Removed,
    Unreachable,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
            Role::StandbyHaUnhealthy => "standby (HA connection unhealthy)",
            Role::PerfStandby => "perf-standby",
            Role::Sealed => "sealed",
            Role::Uninitialized => "uninitialized",
            Role::Removed => "removed from the cluster",
            Role::Unreachable => "unreachable",
        }
    }

    /// Unsealed and initialized: what Consul would list as a healthy `vault` instance.
    pub fn is_serving(self) -> bool {
        matches!(
            self,
            Role::Active | Role::Standby | Role::StandbyHaUnhealthy | Role::PerfStandby
        )
    }

    /// Listed under Consul's `standby` tag.
    pub fn is_standby(self) -> bool {
        matches!(self, Role::Standby | Role::StandbyHaUnhealthy)
    }
}
