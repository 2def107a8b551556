//! DNS: Consul-compatible answers for the vault service, static records, forwarding.
//!
//! | file | its one job |
//! |---|---|
//! | `server` | binds UDP and TCP, runs the receive loops and hickory's TCP server |
//! | `udp` | the UDP receive loop: decode, answer (or reuse a cached answer), send |
//! | `handler` | request policy (opcode, class, EDNS, REFUSED outside the zone) and hickory glue |
//! | `zone` | what the zone answers: the vault service from the views, static records |
//! | `names` | parsing Consul names; building `.addr` targets |
//! | `cache` | encoded answers reused until a view or the clock changes them |
//! | `forward` | the upstream forwarder for names outside the zone |
//! | `metrics` | per-query metric handles |

pub mod cache;
pub mod forward;
pub mod handler;
pub(crate) mod metrics;
pub mod names;
pub mod server;
pub mod udp;
pub mod zone;
