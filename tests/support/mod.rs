//! Shared test support: a real OpenBao cluster, the agent binary, a DNS client and
//! mock Vault nodes for inputs a real server cannot produce.
#![allow(dead_code)] // each test binary uses a different part

pub mod agent;
pub mod config;
pub mod dns;
pub mod mock;
pub mod netlab;
pub mod openbao;
pub mod tls;

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
