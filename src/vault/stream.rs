//! What a replicating cluster's active node says of its replication streams:
//! `/v1/sys/replication/status` (both kinds) or, on a DR secondary,
//! `/v1/sys/replication/dr/status`. Vault Enterprise serves both without a token
//! (`PathsSpecial.Unauthenticated` in `vault/logical_system.go`; the API docs,
//! `website/content/api-docs/system/replication/index.mdx` and `replication-dr.mdx`:
//! "This is an unauthenticated endpoint").
//!
//! A leaf of types and parsing: the watcher asks (every `STATUS_EVERY`, see
//! `watcher`), the view carries the latest answer, and `replication` judges the streams
//! of the whole set from every cluster's answer.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer};

use super::client::PollError;
use super::modes::{Kind, Mode};

/// How often a replicating cluster's active node is asked for its streams: the stream
/// changes in seconds to minutes (a heartbeat every few seconds, merkle syncs in
/// minutes), and every agent of every region asks every replicating cluster, so this
/// costs one request per cluster per agent every 10 s (docs/leader.md, "What polling costs").
pub const STATUS_EVERY: Duration = Duration::from_secs(10);

/// One kind's stream as a cluster's active node describes it. Fields a mode does not
/// send stay empty (a primary has no `state`, a secondary no `secondaries`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stream {
    pub mode: Mode,
    /// The replication set's id: the same on a primary and its secondaries (the two
    /// examples in `replication-dr.mdx` share it), so clusters that share it belong to
    /// one replication set of this kind, and two primaries that share it are a split
    /// brain. Re-enabling replication changes it.
    pub cluster_id: String,
    /// A secondary's: `stream-wals` (healthy), `merkle-diff` / `merkle-sync` (catching
    /// up), `idle` (not replicating). A primary answers `running` or nothing.
    pub state: String,
    /// A secondary's connection to its primary (`ready`, `transient_failure`, ...).
    pub connection_state: String,
    /// A primary's newest WAL index (`last_performance_wal` / `last_dr_wal` where the
    /// primary sends them, else `last_wal`).
    pub last_wal: Option<u64>,
    /// A secondary's newest WAL index received from its primary.
    pub last_remote_wal: Option<u64>,
    /// A secondary's: the address it was given at activation. It stays as set; Vault
    /// dials it again when every known address fails.
    pub primary_cluster_addr: String,
    /// A secondary's: the primary's nodes, learnt from heartbeats (follows failovers).
    pub known_primary_cluster_addrs: Vec<String>,
    /// A secondary's id, as its primary lists it (`secondaries[].node_id`).
    pub secondary_id: String,
    /// A primary's view of each secondary.
    pub secondaries: Vec<Secondary>,
}

/// One secondary as its primary lists it (`secondaries[]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Secondary {
    pub node_id: String,
    pub api_address: String,
    pub cluster_address: String,
    /// `connected` or `disconnected`.
    pub connection_status: String,
    pub last_heartbeat: Option<SystemTime>,
    pub clock_skew_ms: Option<i64>,
    pub canary_age_ms: Option<i64>,
}

impl Stream {
    /// A secondary that is streaming WALs from its primary.
    pub fn streaming(&self) -> bool {
        self.state == "stream-wals" && matches!(self.connection_state.as_str(), "" | "ready")
    }
}

/// Both kinds' streams of one cluster, as its active node answered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Streams {
    pub perf: Stream,
    pub dr: Stream,
}

impl Streams {
    pub fn of(&self, kind: Kind) -> &Stream {
        match kind {
            Kind::Perf => &self.perf,
            Kind::Dr => &self.dr,
        }
    }
}

/// What a cluster's status endpoint has said, as the view carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamReport {
    /// The node asked last (the active node's configured URL).
    pub node: String,
    /// The latest answer read, kept when a later ask fails: a replication set's id
    /// does not change while it runs, and a stream's state is shown with its age.
    pub streams: Option<Streams>,
    /// Wall-clock time `streams` was read.
    pub read_at: Option<SystemTime>,
    /// Why the latest ask failed, if it did.
    pub error: Option<PollError>,
}

impl StreamReport {
    /// The report after an ask of `node` that gave `answer`, following `previous`.
    pub fn next(
        previous: Option<&StreamReport>,
        node: String,
        answer: Result<Streams, PollError>,
        at: SystemTime,
    ) -> Self {
        match answer {
            Ok(streams) => Self {
                node,
                streams: Some(streams),
                read_at: Some(at),
                error: None,
            },
            Err(e) => Self {
                node,
                streams: previous.and_then(|p| p.streams.clone()),
                read_at: previous.and_then(|p| p.read_at),
                error: Some(e),
            },
        }
    }
}

/// Which endpoint to ask a cluster whose DR mode is `dr`: a DR secondary serves
/// only its own DR status (it refuses most of `sys/`); every other node the combined one.
pub fn path(dr: Mode) -> &'static str {
    if dr == Mode::Secondary {
        "/v1/sys/replication/dr/status"
    } else {
        "/v1/sys/replication/status"
    }
}

/// Reads an answer of [`path`]: `{"data": {"dr": {..}, "performance": {..}}}` for the
/// combined endpoint, `{"data": {..}}` for the DR one.
pub fn parse(path: &str, status: u16, body: &[u8]) -> Result<Streams, PollError> {
    if status != 200 {
        return Err(PollError::Status(status));
    }
    let bad = |e: serde_json::Error| PollError::Body(e.to_string());
    if path.ends_with("/dr/status") {
        let b: Wrapped<StreamBody> = serde_json::from_slice(body).map_err(bad)?;
        return Ok(Streams {
            perf: Stream::default(),
            dr: b.data.into_stream(Kind::Dr),
        });
    }
    let b: Wrapped<BothBody> = serde_json::from_slice(body).map_err(bad)?;
    Ok(Streams {
        perf: b.data.performance.into_stream(Kind::Perf),
        dr: b.data.dr.into_stream(Kind::Dr),
    })
}

#[derive(Deserialize)]
struct Wrapped<T> {
    data: T,
}

#[derive(Deserialize)]
struct BothBody {
    #[serde(default)]
    dr: StreamBody,
    #[serde(default)]
    performance: StreamBody,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StreamBody {
    mode: String,
    cluster_id: String,
    state: String,
    connection_state: String,
    last_wal: Option<u64>,
    last_performance_wal: Option<u64>,
    last_dr_wal: Option<u64>,
    last_remote_wal: Option<u64>,
    primary_cluster_addr: String,
    known_primary_cluster_addrs: Option<Vec<String>>,
    secondary_id: String,
    secondaries: Option<Vec<SecondaryBody>>,
}

impl StreamBody {
    fn into_stream(self, kind: Kind) -> Stream {
        let own_wal = match kind {
            Kind::Perf => self.last_performance_wal,
            Kind::Dr => self.last_dr_wal,
        };
        Stream {
            mode: Mode::parse(&self.mode),
            cluster_id: self.cluster_id,
            state: self.state,
            connection_state: self.connection_state,
            last_wal: own_wal.or(self.last_wal),
            last_remote_wal: self.last_remote_wal,
            primary_cluster_addr: self.primary_cluster_addr,
            known_primary_cluster_addrs: self.known_primary_cluster_addrs.unwrap_or_default(),
            secondary_id: self.secondary_id,
            secondaries: self
                .secondaries
                .unwrap_or_default()
                .into_iter()
                .map(SecondaryBody::into_secondary)
                .collect(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SecondaryBody {
    node_id: String,
    api_address: String,
    cluster_address: String,
    connection_status: String,
    last_heartbeat: String,
    // Strings on a primary's secondaries ("0", "660"), numbers elsewhere: either.
    #[serde(deserialize_with = "number_or_string")]
    clock_skew_ms: Option<i64>,
    #[serde(deserialize_with = "number_or_string")]
    replication_primary_canary_age_ms: Option<i64>,
}

impl SecondaryBody {
    fn into_secondary(self) -> Secondary {
        Secondary {
            last_heartbeat: rfc3339(&self.last_heartbeat),
            node_id: self.node_id,
            api_address: self.api_address,
            cluster_address: self.cluster_address,
            connection_status: self.connection_status,
            clock_skew_ms: self.clock_skew_ms,
            canary_age_ms: self.replication_primary_canary_age_ms,
        }
    }
}

/// `"660"`, `660` or absent; anything else is absent (a field we only show).
fn number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// Vault writes heartbeats with the primary's UTC offset (`2024-03-04T10:05:56-05:00`).
fn rfc3339(s: &str) -> Option<SystemTime> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()?;
    Some(SystemTime::from(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The primary's answer in `replication/index.mdx` (performance), with the DR side
    /// of `replication-dr.mdx`'s primary.
    const PRIMARY: &str = r#"{"data":{"dr":{"cluster_id":"d4095d41-3aee-8791-c421-9bc7f88f7c3e",
        "known_secondaries":["3"],"last_wal":241,"merkle_root":"5679","mode":"primary",
        "secondaries":[{"api_address":"https://127.0.0.1:49264","cluster_address":"https://127.0.0.1:49267",
        "connection_status":"connected","last_heartbeat":"2020-06-10T15:40:47-07:00","node_id":"3"}]},
        "performance":{"mode":"primary","state":"running","cluster_id":"c1","last_wal":223,
        "last_performance_wal":220,"known_secondaries":["cd04"],"merkle_root":"x","primary_cluster_addr":"",
        "secondaries":[{"node_id":"cd04","api_address":"https://127.0.0.1:49158",
        "cluster_address":"https://127.0.0.1:49160","connection_status":"connected",
        "last_heartbeat":"2024-03-04T10:05:56-05:00","last_heartbeat_duration_ms":"1",
        "clock_skew_ms":"0","replication_primary_canary_age_ms":"660"}]}}}"#;

    /// The secondary's answer in `replication-dr.mdx`.
    const DR_SECONDARY: &str = r#"{"data":{"cluster_id":"d4095d41-3aee-8791-c421-9bc7f88f7c3e",
        "known_primary_cluster_addrs":["https://127.0.0.1:8201"],"last_remote_wal":241,
        "merkle_root":"5679","mode":"secondary","primaries":[{"api_address":"https://127.0.0.1:49244",
        "cluster_address":"https://127.0.0.1:8201","connection_status":"connected",
        "last_heartbeat":"2020-06-10T15:40:46-07:00"}],"primary_cluster_addr":"https://127.0.0.1:8201",
        "secondary_id":"3","state":"stream-wals"}}"#;

    #[test]
    fn a_primarys_answer_is_read_with_its_secondaries() {
        let s = parse("/v1/sys/replication/status", 200, PRIMARY.as_bytes()).unwrap();
        assert_eq!(s.perf.mode, Mode::Primary);
        assert_eq!(s.perf.last_wal, Some(220), "last_performance_wal wins");
        assert_eq!(s.dr.last_wal, Some(241));
        let sec = &s.perf.secondaries[0];
        assert_eq!(sec.node_id, "cd04");
        assert_eq!(sec.canary_age_ms, Some(660));
        assert_eq!(sec.clock_skew_ms, Some(0));
        // 10:05:56 at UTC-5 is 15:05:56 UTC.
        assert_eq!(
            sec.last_heartbeat,
            Some(humantime::parse_rfc3339("2024-03-04T15:05:56Z").unwrap())
        );
        assert_eq!(s.dr.secondaries[0].node_id, "3");
        assert!(!s.perf.streaming(), "a primary streams nothing itself");
    }

    #[test]
    fn a_dr_secondarys_own_endpoint_is_read_as_its_dr_stream() {
        let path = path(Mode::Secondary);
        assert_eq!(path, "/v1/sys/replication/dr/status");
        let s = parse(path, 200, DR_SECONDARY.as_bytes()).unwrap();
        assert_eq!(s.dr.mode, Mode::Secondary);
        assert_eq!(s.perf.mode, Mode::Unknown, "not asked");
        assert!(s.dr.streaming());
        assert_eq!(s.dr.secondary_id, "3");
        assert_eq!(s.dr.known_primary_cluster_addrs, ["https://127.0.0.1:8201"]);
        let mut idle = s.dr.clone();
        idle.state = "idle".into();
        assert!(!idle.streaming());
    }

    #[test]
    fn disabled_errors_and_garbage() {
        let s = parse(
            "/v1/sys/replication/status",
            200,
            br#"{"data":{"dr":{"mode":"disabled"},"performance":{"mode":"disabled"}}}"#,
        )
        .unwrap();
        assert_eq!((s.perf.mode, s.dr.mode), (Mode::Disabled, Mode::Disabled));
        assert_eq!(
            parse("/v1/sys/replication/status", 404, b"{}"),
            Err(PollError::Status(404))
        );
        assert!(matches!(
            parse("/v1/sys/replication/status", 200, b"<html>"),
            Err(PollError::Body(_))
        ));
        // A heartbeat we cannot read is no heartbeat, not an error.
        assert_eq!(rfc3339("yesterday"), None);
    }
}
