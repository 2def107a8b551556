//! The replication vocabulary: a node's or cluster's modes as `/v1/sys/health` reports
//! them, and the two kinds of replication with their virtual cluster labels. A leaf:
//! the client parses into it, the view stores it, the config checks labels against it,
//! and `replication` decides with it.

use std::fmt;

/// A replication mode as `/v1/sys/health` reports it (`replication_performance_mode`,
/// `replication_dr_mode`). In `/status` as [`Mode::as_str`] writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Disabled,
    Primary,
    Secondary,
    Bootstrapping,
    /// The server has no replication (OpenBao, Vault Community), whatever the field says:
    /// an OpenBao 2.7 HA active node reports `replication_performance_mode: "primary"`.
    Unavailable,
    /// The field is missing, unrecognised, or nobody could say.
    #[default]
    Unknown,
}

impl Mode {
    /// Every value, for metric labels.
    pub const ALL: [Mode; 6] = [
        Mode::Disabled,
        Mode::Primary,
        Mode::Secondary,
        Mode::Bootstrapping,
        Mode::Unavailable,
        Mode::Unknown,
    ];

    pub fn parse(s: &str) -> Mode {
        match s.trim().to_ascii_lowercase().as_str() {
            "disabled" => Mode::Disabled,
            "primary" => Mode::Primary,
            "secondary" => Mode::Secondary,
            "bootstrapping" => Mode::Bootstrapping,
            _ => Mode::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Disabled => "disabled",
            Mode::Primary => "primary",
            Mode::Secondary => "secondary",
            Mode::Bootstrapping => "bootstrapping",
            Mode::Unavailable => "unavailable",
            Mode::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Both replication modes of one node or cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Modes {
    pub perf: Mode,
    pub dr: Mode,
}

impl Modes {
    pub fn of(&self, kind: Kind) -> Mode {
        match kind {
            Kind::Perf => self.perf,
            Kind::Dr => self.dr,
        }
    }

    /// Whether a cluster with these modes is the primary of `kind`. A DR secondary
    /// (or one being made one) is never a performance primary, whatever its performance
    /// mode says: it mirrors its DR primary's (Vault 1.5.4+prem answered
    /// `replication_dr_mode: "secondary"` beside `replication_performance_mode:
    /// "primary"`, DataDog/integrations-core#7819). Once promoted, it is.
    pub fn is_primary(&self, kind: Kind) -> bool {
        match kind {
            Kind::Perf => {
                self.perf == Mode::Primary
                    && !matches!(self.dr, Mode::Secondary | Mode::Bootstrapping)
            }
            Kind::Dr => self.dr == Mode::Primary,
        }
    }

    /// Whether these modes can change while the server runs: it replicates (Vault
    /// Enterprise). `Unavailable` (OpenBao, Vault Community) and `Unknown` (a server
    /// older than replication) stay what they are until the server is replaced.
    pub fn can_change(&self) -> bool {
        let real = |m: Mode| !matches!(m, Mode::Unavailable | Mode::Unknown);
        real(self.perf) || real(self.dr)
    }
}

/// The two kinds of replication, each with its virtual cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Perf,
    Dr,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Perf, Kind::Dr];

    /// The virtual cluster's name: a cluster label in DNS, a `[[proxy]] cluster`.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Perf => "perf-primary",
            Kind::Dr => "dr-primary",
        }
    }

    /// The metric label and the `--is-primary` argument.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Perf => "perf",
            Kind::Dr => "dr",
        }
    }

    /// How log lines and /status name the kind ("performance", "DR").
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Perf => "performance",
            Kind::Dr => "DR",
        }
    }

    pub fn from_label(label: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.label() == label)
    }
}
