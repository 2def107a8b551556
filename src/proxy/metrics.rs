//! The proxy's metrics, resolved once per listener side: the per-connection path only
//! increments handles it already holds.

use std::collections::HashMap;
use std::sync::Mutex;

use super::config::Side;
use crate::telemetry;

/// Metric handles resolved once per listener. A `counter!` with labels hashes its key
/// (and here cloned the cluster name and ALPN string) on every call: several times per
/// connection, a visible share of the per-connection CPU.
pub(super) struct ProxyMetrics {
    pub active: metrics::Gauge,
    pub connect_duration: metrics::Histogram,
    pub bytes_up: metrics::Counter,
    pub bytes_down: metrics::Counter,
    /// Connections closed because the leader (or the primary) moved.
    pub cut_over: metrics::Counter,
    /// `proxy_connections_total{result="forwarded"}` by ALPN label index: the one
    /// result every good connection records, so it is not looked up each time.
    pub forwarded: Vec<metrics::Counter>,
    /// `proxy_connections_total` for the other results, by (ALPN label index or None
    /// for "-", result). Both sets are bounded (route table labels; result kinds).
    connections: Mutex<HashMap<(Option<usize>, &'static str), metrics::Counter>>,
    cluster: String,
    side: &'static str,
    labels: Vec<String>,
}

impl ProxyMetrics {
    pub fn new(cluster: &str, side: Side, labels: &[String]) -> Self {
        let side = side.as_str();
        Self {
            active: metrics::gauge!(telemetry::PROXY_ACTIVE, "cluster" => cluster.to_string(), "side" => side),
            connect_duration: metrics::histogram!(telemetry::PROXY_CONNECT_DURATION, "cluster" => cluster.to_string(), "side" => side),
            bytes_up: metrics::counter!(telemetry::PROXY_BYTES, "direction" => "client_to_server", "side" => side),
            bytes_down: metrics::counter!(telemetry::PROXY_BYTES, "direction" => "server_to_client", "side" => side),
            cut_over: metrics::counter!(telemetry::PROXY_CUT_OVER, "cluster" => cluster.to_string(), "side" => side),
            forwarded: labels
                .iter()
                .map(|alpn| connections_counter(cluster, side, alpn, "forwarded"))
                .collect(),
            connections: Mutex::default(),
            cluster: cluster.to_string(),
            side,
            labels: labels.to_vec(),
        }
    }

    pub fn connection(&self, label: Option<usize>, result: &'static str) {
        let mut map = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((label, result))
            .or_insert_with(|| {
                let alpn = label.map_or("-", |i| self.labels[i].as_str());
                connections_counter(&self.cluster, self.side, alpn, result)
            })
            .increment(1);
    }
}

/// The `proxy_connections_total` series of one (cluster, side, ALPN label, result).
fn connections_counter(
    cluster: &str,
    side: &'static str,
    alpn: &str,
    result: &'static str,
) -> metrics::Counter {
    metrics::counter!(
        telemetry::PROXY_CONNECTIONS,
        "cluster" => cluster.to_string(),
        "side" => side,
        "alpn" => alpn.to_string(),
        "result" => result
    )
}

/// One connection in `proxy_active_connections` for as long as its task lives, however
/// it ends: done, dropped at the drain deadline, or unwound by a panic.
pub(super) struct OpenConnection(metrics::Gauge);

impl OpenConnection {
    pub fn count(gauge: &metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
