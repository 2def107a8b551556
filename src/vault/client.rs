//! HTTP client for the two unauthenticated endpoints every Vault and OpenBao node
//! answers for itself: `/v1/sys/health` (what am I) and `/v1/sys/leader` (who leads).
//!
//! Each request runs under the cluster's timeouts and becomes a typed answer; which
//! endpoints one poll asks is [`super::poll`]'s choice, and what the answers mean for
//! the cluster is [`super::rules`]'.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::modes::{Mode, Modes};
use super::role::Role;

/// Query string for `/v1/sys/health` that pins every state to its documented code, so
/// the code can be cross-checked against the body whatever a node's defaults are
/// (Vault: 200 active, 429 standby, 473 perf standby, 472 DR secondary, 503 sealed, 501
/// uninitialized; 1.19+: 474 a standby whose HA connection is unhealthy, 530 a node
/// removed from the raft cluster, `removedcode` and `haunhealthycode` in Vault's
/// `http/sys_health.go`). OpenBao ignores the parameters it does not know.
const HEALTH_QUERY: &str = "standbyok=false&perfstandbyok=false&activecode=200&standbycode=429\
     &performancestandbycode=473&sealedcode=503&uninitcode=501&drsecondarycode=472\
     &haunhealthycode=474&removedcode=530";

/// Largest body we read from a node; health and leader answers are a few hundred bytes.
const MAX_BODY: usize = 64 * 1024;

/// What `/v1/sys/leader` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderReport {
    /// False for a server without HA storage: it leads itself, if it is active.
    pub ha_enabled: bool,
    /// The answering node is the active one (Vault and OpenBao both send `is_self`).
    pub is_self: bool,
    /// The answering node is a performance standby (Vault Enterprise; false elsewhere).
    pub performance_standby: bool,
    /// The leader's `api_addr`, empty when the node does not know one.
    pub leader_address: String,
    /// The leader's `cluster_addr`, empty when unknown.
    pub leader_cluster_address: String,
}

impl Default for LeaderReport {
    fn default() -> Self {
        Self {
            ha_enabled: true,
            is_self: false,
            performance_standby: false,
            leader_address: String::new(),
            leader_cluster_address: String::new(),
        }
    }
}

/// Why a poll did not produce an answer. `kind()` is a stable label for logs/metrics.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PollError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connect(String),
    /// The TLS handshake failed: rustls' reason (a certificate that does not verify, a
    /// client certificate the node wanted).
    #[error("TLS: {0}")]
    Tls(String),
    #[error("unexpected HTTP status {0}")]
    Status(u16),
    #[error("unreadable body: {0}")]
    Body(String),
    /// The node's latest answer is too old to count (its poll has not come back).
    #[error("no answer for {}", humantime::format_duration(Duration::from_millis(.0.as_millis() as u64)))]
    Unheard(Duration),
    #[error("no answer yet")]
    NotYet,
}

impl PollError {
    pub fn kind(&self) -> &'static str {
        match self {
            PollError::Timeout(_) => "timeout",
            PollError::Connect(_) => "connect",
            PollError::Tls(_) => "tls",
            PollError::Status(_) => "status",
            PollError::Body(_) => "body",
            PollError::Unheard(_) | PollError::NotYet => "unheard",
        }
    }
}

/// What one node's `/v1/sys/health` says: its own state, and its cluster's replication
/// modes as this node sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub state: Role,
    pub replication: Modes,
}

/// One node's answers from one poll round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    pub health: Result<Role, PollError>,
    /// From the same health answer; unknown when there was none.
    pub replication: Modes,
    /// `Ok(None)` when the node cannot say (sealed nodes answer 503 here).
    pub leader: Result<Option<LeaderReport>, PollError>,
}

#[derive(Deserialize)]
struct HealthBody {
    initialized: bool,
    sealed: bool,
    standby: bool,
    #[serde(default)]
    performance_standby: bool,
    /// Absent on servers that predate replication: unknown, not "disabled".
    #[serde(default)]
    replication_performance_mode: Option<String>,
    #[serde(default)]
    replication_dr_mode: Option<String>,
    /// Vault 1.13+ says whether it is Enterprise; OpenBao leaves it out.
    #[serde(default)]
    enterprise: Option<bool>,
    #[serde(default)]
    version: Option<String>,
    /// Vault 1.19+: a node removed from the raft cluster answers 530 with this true.
    #[serde(default)]
    removed_from_cluster: bool,
    /// Vault 1.19+, standbys: false when the standby's heartbeats to the active node
    /// fail (474).
    #[serde(default)]
    ha_connection_healthy: Option<bool>,
}

impl HealthBody {
    /// Whether the server can replicate at all: Vault Enterprise only. Older Enterprise
    /// servers have no `enterprise` field but mark their version (`1.9.3+ent`,
    /// `0.11.0+prem`); OpenBao (`2.7.2`) and Vault Community (`1.15.0`) do not. With
    /// neither field the modes are taken as reported.
    fn can_replicate(&self) -> bool {
        match (self.enterprise, self.version.as_deref()) {
            (Some(enterprise), _) => enterprise,
            (None, Some(version)) => version.contains('+'),
            (None, None) => true,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct LeaderBody {
    #[serde(default = "yes")]
    ha_enabled: bool,
    #[serde(default)]
    is_self: bool,
    #[serde(default)]
    performance_standby: bool,
    #[serde(default)]
    leader_address: String,
    #[serde(default)]
    leader_cluster_address: String,
}

/// A client for one cluster's nodes (one TLS root store per cluster).
#[derive(Clone)]
pub struct VaultClient {
    http: reqwest::Client,
    timeout: Duration,
    connect_timeout: Duration,
}

impl VaultClient {
    /// `timeout` bounds a whole request (connect, headers and body); `connect_timeout`
    /// bounds the TCP connect alone, and is much shorter: a connect inside a region
    /// completes in milliseconds or never (a dead host's packets vanish).
    /// `tls`: the cluster's TLS settings (`vault::tls::client_config`).
    pub fn new(
        timeout: Duration,
        connect_timeout: Duration,
        tls: rustls::ClientConfig,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(connect_timeout)
            // Node addresses are configured; a redirect would poll some other node.
            .redirect(reqwest::redirect::Policy::none())
            // Never go through an HTTP proxy from the environment: nodes are reached
            // directly, and a proxy would answer for itself.
            .no_proxy()
            .pool_max_idle_per_host(1)
            .user_agent(concat!("vault-locator/", env!("CARGO_PKG_VERSION")))
            .use_preconfigured_tls(tls)
            .build()?;
        Ok(Self {
            http,
            timeout,
            connect_timeout,
        })
    }

    /// `/v1/sys/health`: the node's own state and its cluster's replication modes.
    pub async fn health(&self, node: &Url) -> Result<Health, PollError> {
        let url = format!(
            "{}/v1/sys/health?{HEALTH_QUERY}",
            node.as_str().trim_end_matches('/')
        );
        let (status, body) = self.get(&url).await?;
        parse_health(status, &body)
    }

    /// `/v1/sys/leader`: who leads, as the node sees it, and whether that is itself.
    pub async fn leader(&self, node: &Url) -> Result<Option<LeaderReport>, PollError> {
        let url = format!("{}/v1/sys/leader", node.as_str().trim_end_matches('/'));
        let (status, body) = self.get(&url).await?;
        parse_leader(status, &body)
    }

    /// Any other GET of a node (`path` from `/v1/...`), its status and body read by
    /// `parse` (the replication status: `stream::parse`).
    pub async fn get_path<T>(
        &self,
        node: &Url,
        path: &str,
        parse: impl FnOnce(u16, &[u8]) -> Result<T, PollError>,
    ) -> Result<T, PollError> {
        let url = format!("{}{path}", node.as_str().trim_end_matches('/'));
        let (status, body) = self.get(&url).await?;
        parse(status, &body)
    }

    async fn get(&self, url: &str) -> Result<(u16, Vec<u8>), PollError> {
        let (timeout, connect_timeout) = (self.timeout, self.connect_timeout);
        let classify = move |e: reqwest::Error| {
            if e.is_connect() && e.is_timeout() {
                PollError::Connect(format!(
                    "no connection within {}",
                    humantime::format_duration(connect_timeout)
                ))
            } else if e.is_timeout() {
                PollError::Timeout(timeout)
            } else if let Some(why) = super::tls::tls_failure(&e) {
                PollError::Tls(why)
            } else if e.is_connect() {
                PollError::Connect(root_cause(&e))
            } else {
                PollError::Body(root_cause(&e))
            }
        };
        let mut resp = self.http.get(url).send().await.map_err(classify)?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(PollError::Body(format!("larger than {MAX_BODY} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }
}

/// Reads a `/v1/sys/health` answer (status code and body).
pub fn parse_health(status: u16, body: &[u8]) -> Result<Health, PollError> {
    if !matches!(status, 200 | 429 | 472 | 473 | 474 | 501 | 503 | 530) {
        return Err(PollError::Status(status));
    }
    let h: HealthBody = serde_json::from_slice(body).map_err(|e| PollError::Body(e.to_string()))?;
    let can_replicate = h.can_replicate();
    let mode = |m: &Option<String>| match m.as_deref() {
        None => Mode::Unknown,
        Some(_) if !can_replicate => Mode::Unavailable,
        Some(m) => Mode::parse(m),
    };
    let replication = Modes {
        perf: mode(&h.replication_performance_mode),
        dr: mode(&h.replication_dr_mode),
    };
    // Vault's own precedence (`http/sys_health.go`): uninitialised, removed, sealed,
    // HA-unhealthy standby, DR secondary, perf standby, standby, active.
    let state = if !h.initialized {
        Role::Uninitialized
    } else if h.removed_from_cluster || status == 530 {
        Role::Removed
    } else if h.sealed {
        Role::Sealed
    } else if h.standby && (h.ha_connection_healthy == Some(false) || status == 474) {
        Role::StandbyHaUnhealthy
    } else if h.performance_standby || status == 473 {
        Role::PerfStandby
    } else if h.standby {
        Role::Standby
    } else {
        Role::Active
    };
    Ok(Health { state, replication })
}

/// Reads a `/v1/sys/leader` answer; `Ok(None)` when the node cannot say.
pub fn parse_leader(status: u16, body: &[u8]) -> Result<Option<LeaderReport>, PollError> {
    match status {
        200 => {}
        // Sealed or uninitialized nodes cannot say who leads.
        503 | 501 => return Ok(None),
        other => return Err(PollError::Status(other)),
    }
    let l: LeaderBody = serde_json::from_slice(body).map_err(|e| PollError::Body(e.to_string()))?;
    Ok(Some(LeaderReport {
        ha_enabled: l.ha_enabled,
        is_self: l.is_self,
        performance_standby: l.performance_standby,
        leader_address: l.leader_address,
        leader_cluster_address: l.leader_cluster_address,
    }))
}

/// reqwest's Display stops at "error sending request"; the cause is what helps.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_codes_and_bodies() {
        let body = |standby: bool| {
            format!(r#"{{"initialized":true,"sealed":false,"standby":{standby}}}"#).into_bytes()
        };
        let state = |status, body: &[u8]| parse_health(status, body).map(|h| h.state);
        assert_eq!(state(200, &body(false)), Ok(Role::Active));
        assert_eq!(state(429, &body(true)), Ok(Role::Standby));
        assert_eq!(state(473, &body(true)), Ok(Role::PerfStandby));
        assert_eq!(
            state(503, br#"{"initialized":true,"sealed":true,"standby":true}"#),
            Ok(Role::Sealed)
        );
        assert_eq!(state(500, &body(false)), Err(PollError::Status(500)));
        // Vault 1.19+: a standby that lost its active node, a node removed from raft.
        assert_eq!(
            state(
                474,
                br#"{"initialized":true,"sealed":false,"standby":true,"ha_connection_healthy":false}"#
            ),
            Ok(Role::StandbyHaUnhealthy)
        );
        assert_eq!(
            state(
                429,
                br#"{"initialized":true,"sealed":false,"standby":true,"ha_connection_healthy":true}"#
            ),
            Ok(Role::Standby)
        );
        assert_eq!(
            state(
                530,
                br#"{"initialized":true,"sealed":false,"standby":true,"removed_from_cluster":true}"#
            ),
            Ok(Role::Removed)
        );
        // The codes are asked for, so a node that answers them is read by its code too.
        assert!(HEALTH_QUERY.contains("removedcode=530"));
        assert!(HEALTH_QUERY.contains("haunhealthycode=474"));
        assert!(matches!(
            parse_health(200, br#"{"initialized":"yes","sealed":false,"standby":false}"#),
            Err(PollError::Body(e)) if e.contains("invalid type")
        ));
    }

    #[test]
    fn replication_modes_are_read_and_a_missing_field_is_unknown() {
        use Mode::*;
        let modes = |code, fields: &str| {
            let body = format!(r#"{{"initialized":true,"sealed":false,"standby":false{fields}}}"#);
            let h = parse_health(code, body.as_bytes()).unwrap();
            (h.replication.perf, h.replication.dr)
        };
        let both = |perf: &str, dr: &str| {
            format!(r#","replication_performance_mode":"{perf}","replication_dr_mode":"{dr}""#)
        };
        assert_eq!(
            modes(200, &both("primary", "secondary")),
            (Primary, Secondary)
        );
        // What OpenBao 2.7 sends: both fields, "disabled".
        assert_eq!(
            modes(429, &both("disabled", "disabled")),
            (Disabled, Disabled)
        );
        assert_eq!(modes(200, ""), (Unknown, Unknown));
        assert_eq!(Modes::default().perf, Unknown);
        assert_eq!(modes(200, &both("PRIMARY", "made-up")), (Primary, Unknown));
        // A mode of the wrong type is a bad body, as any wrong type is.
        assert!(parse_health(
            200,
            br#"{"initialized":true,"sealed":false,"standby":false,"replication_dr_mode":7}"#
        )
        .is_err());
    }

    #[test]
    fn leader_answers_with_and_without_ha() {
        let l = parse_leader(200, br#"{"ha_enabled":false}"#)
            .unwrap()
            .unwrap();
        assert!(!l.ha_enabled);
        let l = parse_leader(
            200,
            br#"{"ha_enabled":true,"is_self":true,"leader_address":"http://a:8200","leader_cluster_address":"https://a:8201"}"#,
        )
        .unwrap()
        .unwrap();
        assert!(l.ha_enabled);
        assert_eq!(l.leader_address, "http://a:8200");
        // A body without the field (older servers, stand-ins) is an HA node.
        assert!(parse_leader(200, b"{}").unwrap().unwrap().ha_enabled);
        assert_eq!(parse_leader(503, b"{\"errors\":[]}"), Ok(None));
        assert_eq!(parse_leader(404, b""), Err(PollError::Status(404)));
    }
}
