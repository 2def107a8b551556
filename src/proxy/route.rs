//! Choosing what to do with a connection from the ALPN ids its ClientHello offers.
//!
//! Vault clients offer exactly one id per connection. When a client offers several, the
//! connection goes to the active node only if every id it offers routes there: the
//! server picks the id, so an id we would reject must not get through behind another.

use std::collections::HashMap;

use crate::config::{ProxyConfig, RouteAction};

#[derive(Debug, Clone)]
pub struct Router {
    routes: HashMap<Vec<u8>, RouteAction>,
    default_route: RouteAction,
    no_alpn: RouteAction,
}

impl Router {
    pub fn new(config: &ProxyConfig) -> Self {
        Self {
            routes: config
                .routes
                .iter()
                .map(|(id, a)| (id.as_bytes().to_vec(), *a))
                .collect(),
            default_route: config.default_route,
            no_alpn: config.no_alpn,
        }
    }

    pub fn route(&self, alpn: &[Vec<u8>]) -> RouteAction {
        if alpn.is_empty() {
            return self.no_alpn;
        }
        let all_active = alpn.iter().all(|id| {
            self.routes.get(id).copied().unwrap_or(self.default_route) == RouteAction::Active
        });
        if all_active {
            RouteAction::Active
        } else {
            RouteAction::Reject
        }
    }
}

/// The label used for an ALPN list in logs and metrics: the first id, or "none".
pub fn alpn_label(alpn: &[Vec<u8>]) -> String {
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
        let text = format!(
            r#"
datacenter = "dc1"
[[clusters]]
name = "dc1"
nodes = ["http://127.0.0.1:8200"]
[[proxy]]
cluster = "dc1"
listen = "127.77.0.1:8201"
{extra}
"#
        );
        Router::new(&Config::parse(&text, "t").unwrap().proxies[0])
    }

    fn ids(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
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
            assert_eq!(r.route(&ids(&[id])), RouteAction::Active, "{id}");
        }
        assert_eq!(r.route(&ids(&["raft_storage_v1"])), RouteAction::Reject);
        assert_eq!(
            r.route(&ids(&["h2"])),
            RouteAction::Reject,
            "unknown ids: default reject"
        );
        assert_eq!(r.route(&[]), RouteAction::Reject, "no ALPN: rejected");
    }

    #[test]
    fn mixed_offers_need_every_id_routed_to_active() {
        let r = router("");
        assert_eq!(
            r.route(&ids(&["bogus", "req_fw_sb-act_v1"])),
            RouteAction::Reject
        );
        assert_eq!(
            r.route(&ids(&["replication_v1", "replication_dr_v1"])),
            RouteAction::Active
        );
    }

    #[test]
    fn config_overrides_the_table() {
        let r = router(
            "default_route = \"active\"\nno_alpn = \"active\"\n[proxy.routes]\n\"replication_v1\" = \"reject\"\n",
        );
        assert_eq!(r.route(&ids(&["replication_v1"])), RouteAction::Reject);
        assert_eq!(r.route(&ids(&["anything"])), RouteAction::Active);
        assert_eq!(r.route(&[]), RouteAction::Active);
        assert_eq!(r.route(&ids(&["raft_storage_v1"])), RouteAction::Reject);
    }
}
