//! Shared test support: a real OpenBao cluster, the agent binary, a DNS client and
//! mock Vault nodes for inputs a real server cannot produce.
// Every part is used by some module of the one test binary, so no dead_code allowance.

pub mod agent;
pub mod config;
pub mod dns;
pub mod mock;
pub mod netlab;
pub mod openbao;
pub mod proxy;
pub mod tls;

/// A file of this repository (a unit, an example config), as text.
pub fn repo_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The first line of systemd unit `path` (in this repository) that starts with `key=`,
/// without the key.
pub fn unit_line(path: &str, key: &str) -> String {
    let unit = repo_file(path);
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='));
    line.unwrap_or_else(|| panic!("no {key}= in {path}"))
        .to_string()
}

/// A socket address written in a test (panics on a typo).
pub fn addr(s: &str) -> std::net::SocketAddr {
    s.parse().unwrap()
}

/// `GET url` without any proxy from the environment, within 2 s: the status code and the
/// body as JSON (`Null` when it is not JSON), or None when no answer came.
pub async fn get_json(url: &str) -> Option<(u16, serde_json::Value)> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .no_proxy()
        .build()
        .unwrap();
    let resp = http.get(url).send().await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.ok()?;
    Some((status, serde_json::from_slice(&body).unwrap_or_default()))
}
