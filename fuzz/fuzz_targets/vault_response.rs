//! `/v1/sys/health` and `/v1/sys/leader` answers as a node sends them: any status code
//! and body must give a state, a report or an error, never a panic. The first two bytes
//! are the status code, the rest the body (fed to both parsers).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_locator::vault::client::{parse_health, parse_leader};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let status = u16::from_be_bytes([data[0], data[1]]) % 1000;
    let body = &data[2..];
    let _ = parse_health(status, body);
    if let Ok(Some(report)) = parse_leader(status, body) {
        // What the watcher does next with a report: trim and parse the address.
        let _ = url::Url::parse(report.leader_address.trim());
    }
});
