//! Domain types shared by berth-api, berth-agent and the CLI: validated names,
//! drivers and scopes, network options, and the IPv4 arithmetic of pools;
//! also the configuration-file layer, the logging setup and the mutual-TLS
//! helpers every binary shares, and the limits every request is held to
//! (`limits`).
pub mod config_file;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod names;
pub mod net;
pub mod net6;
pub mod options;
pub mod ports;
pub mod tls;

/// A request field that failed validation, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
