//! Vault/OpenBao: polling nodes and deciding what each cluster looks like.

mod announce;
pub mod client;
pub mod config;
pub mod feed;
pub mod heartbeat;
pub mod modes;
mod poll;
pub mod primaries;
mod probe;
pub mod replication;
pub mod role;
pub mod rules;
pub mod stream;
pub mod stream_health;
pub mod tls;
pub mod view;
pub mod watcher;
