//! Choosing what to do with a connection from the ALPN ids its ClientHello offers.
//!
//! Vault clients offer exactly one id per connection. When a client offers several, the
//! connection goes to the active node only if every id it offers routes there: the
//! server picks the id, so an id we would reject must not get through behind another.

use super::config::{ProxyConfig, RouteAction};
use super::hello::Alpn;

/// The ALPN ids Vault uses on its cluster port, and where each belongs when the target
/// is "the active node of a cluster" (Vault's `sdk/helper/consts`; see docs/proxy.md).
/// A listener's `routes` are laid over this table.
pub const DEFAULT_ROUTES: &[(&str, RouteAction)] = &[
    // Standby -> active request forwarding: only the active serves it.
    ("req_fw_sb-act_v1", RouteAction::Active),
    // Enterprise performance standby -> active.
    ("perf_standby_v1", RouteAction::Active),
    // Enterprise performance and DR replication, secondary -> primary's active.
    ("replication_v1", RouteAction::Active),
    ("replication_dr_v1", RouteAction::Active),
    // Enterprise replication address resolution (any unsealed node; the active is fine).
    ("replication_resolver_v1", RouteAction::Active),
    // Raft RPC is node-to-node, addressed to one specific node: never "the active".
    ("raft_storage_v1", RouteAction::Reject),
];

#[derive(Debug, Clone)]
pub struct Router {
    /// Each id and its action; its index is its index in `labels`.
    routes: Vec<(Vec<u8>, RouteAction)>,
    default_route: RouteAction,
    no_alpn: RouteAction,
    /// The ids in the table, then "none" and "other": every value the `alpn` metric
    /// label can take.
    labels: Vec<String>,
}

impl Router {
    pub fn new(config: &ProxyConfig) -> Self {
        let mut labels: Vec<String> = config.routes.keys().cloned().collect();
        let routes = config
            .routes
            .iter()
            .map(|(id, a)| (id.as_bytes().to_vec(), *a))
            .collect();
        labels.push("none".into());
        labels.push("other".into());
        Self {
            routes,
            default_route: config.default_route,
            no_alpn: config.no_alpn,
            labels,
        }
    }

    /// The metric label of an ALPN list, as an index into [`Router::labels`]: its first
    /// id when that id is in the route table, else "none" (no ALPN) or "other". Clients
    /// choose their ALPN ids, so using them raw would let any client mint new time
    /// series without bound.
    pub fn label(&self, alpn: Alpn<'_>) -> usize {
        match alpn.first() {
            None => self.labels.len() - 2,
            Some(id) => self.find(id).map_or(self.labels.len() - 1, |(_, i)| i),
        }
    }

    /// An id's action and label index. A scan, not a hash: the table holds a handful
    /// of short ids, and hashing them (SipHash, twice per connection) cost more.
    fn find(&self, id: &[u8]) -> Option<(RouteAction, usize)> {
        self.routes
            .iter()
            .position(|(known, _)| known == id)
            .map(|i| (self.routes[i].1, i))
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn route(&self, alpn: Alpn<'_>) -> RouteAction {
        if alpn.is_empty() {
            return self.no_alpn;
        }
        let all_active = alpn
            .iter()
            .all(|id| self.find(id).map_or(self.default_route, |(a, _)| a) == RouteAction::Active);
        if all_active {
            RouteAction::Active
        } else {
            RouteAction::Reject
        }
    }
}

/// An ALPN list for a log line: the first id as sent (lossy UTF-8), or "none".
pub fn alpn_label(alpn: Alpn<'_>) -> String {
    match alpn.first() {
        Some(id) => String::from_utf8_lossy(id).into_owned(),
        None => "none".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn router(extra: &str) -> Router {
        let text = crate::config::with_proxy(extra);
        Router::new(&Config::parse(&text, "t").unwrap().proxies[0])
    }

    /// The wire form of an ALPN list; [`Alpn::parse`] reads it back.
    fn ids(v: &[&str]) -> Vec<u8> {
        v.iter()
            .flat_map(|s| std::iter::once(s.len() as u8).chain(s.bytes()))
            .collect()
    }

    fn alpn(wire: &[u8]) -> Alpn<'_> {
        Alpn::parse(wire).unwrap()
    }

    /// A log line names the first id as sent, lossily, or "none".
    #[test]
    fn the_alpn_label_is_the_first_id_or_none() {
        let wire = ids(&["replication_v1", "h2"]);
        assert_eq!(alpn_label(alpn(&wire)), "replication_v1");
        assert_eq!(alpn_label(alpn(&[])), "none");
        assert_eq!(alpn_label(alpn(&[2, b'h', 0xff])), "h\u{fffd}");
    }

    #[test]
    fn default_table_is_right_for_replication() {
        let r = router("");
        for id in [
            "req_fw_sb-act_v1",
            "perf_standby_v1",
            "replication_v1",
            "replication_dr_v1",
            "replication_resolver_v1",
        ] {
            assert_eq!(r.route(alpn(&ids(&[id]))), RouteAction::Active, "{id}");
        }
        assert_eq!(
            r.route(alpn(&ids(&["raft_storage_v1"]))),
            RouteAction::Reject
        );
        assert_eq!(
            r.route(alpn(&ids(&["h2"]))),
            RouteAction::Reject,
            "unknown ids: default reject"
        );
        assert_eq!(
            r.route(Alpn::default()),
            RouteAction::Reject,
            "no ALPN: rejected"
        );
    }

    #[test]
    fn mixed_offers_need_every_id_routed_to_active() {
        let r = router("");
        assert_eq!(
            r.route(alpn(&ids(&["bogus", "req_fw_sb-act_v1"]))),
            RouteAction::Reject
        );
        assert_eq!(
            r.route(alpn(&ids(&["replication_v1", "replication_dr_v1"]))),
            RouteAction::Active
        );
    }

    #[test]
    fn metric_labels_are_bounded_to_the_table() {
        let r = router("[proxy.routes]\n\"custom_v1\" = \"active\"\n");
        let label = |v: &[&str]| r.labels()[r.label(alpn(&ids(v)))].as_str();
        assert_eq!(label(&["req_fw_sb-act_v1"]), "req_fw_sb-act_v1");
        assert_eq!(label(&["custom_v1", "x"]), "custom_v1");
        assert_eq!(label(&[]), "none");
        assert_eq!(label(&["made-up-by-a-client"]), "other");
        assert_eq!(
            label(&["x", "req_fw_sb-act_v1"]),
            "other",
            "the first id names it"
        );
    }

    #[test]
    fn config_overrides_the_table() {
        let r = router(
            "default_route = \"active\"\nno_alpn = \"active\"\n[proxy.routes]\n\"replication_v1\" = \"reject\"\n",
        );
        assert_eq!(
            r.route(alpn(&ids(&["replication_v1"]))),
            RouteAction::Reject
        );
        assert_eq!(r.route(alpn(&ids(&["anything"]))), RouteAction::Active);
        assert_eq!(r.route(Alpn::default()), RouteAction::Active);
        assert_eq!(
            r.route(alpn(&ids(&["raft_storage_v1"]))),
            RouteAction::Reject
        );
    }
}
