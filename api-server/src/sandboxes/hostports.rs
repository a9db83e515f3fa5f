//! Host ports berth chooses (`-p PORT`, `-P`): a port of berth-api's
//! `--ephemeral-ports` range (default Linux's 32768–60999) that the node
//! does not publish on any address, is not reserved and is not another
//! port of the same request. The choice is only a proposal: the create's
//! one transaction guards it like an explicit host port (nothing under
//! `ports/<node>/<proto>/<port>/`), so two concurrent creates that propose
//! the same port cannot both commit; the loser proposes again.
use std::collections::BTreeSet;
use std::str::FromStr;

use berth_core::ports::{PortMapping, Proto};
use rand::Rng;

use super::Sandboxes;
use crate::error::{ApiError, Result};
use crate::store::records::NodeRecord;

pub const DEFAULT_EPHEMERAL_PORTS: &str = "32768-60999";

/// `--ephemeral-ports START-END`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EphemeralPorts {
    pub start: u16,
    pub end: u16,
}

impl Default for EphemeralPorts {
    fn default() -> Self {
        DEFAULT_EPHEMERAL_PORTS.parse().expect("default range")
    }
}

impl FromStr for EphemeralPorts {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not START-END (ports 1-65535, START <= END)");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (start, end): (u16, u16) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        if start == 0 || start > end {
            return Err(bad());
        }
        Ok(Self { start, end })
    }
}

impl std::fmt::Display for EphemeralPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// Picks one free port for each of `auto` from `range`, starting at a random
/// place (so concurrent creates rarely propose the same) and going up.
pub fn pick(
    range: EphemeralPorts,
    auto: &[PortMapping],
    taken: &dyn Fn(Proto, u16) -> bool,
    start: u16,
) -> Option<Vec<PortMapping>> {
    let len = u32::from(range.end - range.start) + 1;
    let mut chosen: BTreeSet<(Proto, u16)> = BTreeSet::new();
    let mut out = Vec::new();
    for a in auto {
        let found = (0..len)
            .map(|i| range.start + ((u32::from(start) + i) % len) as u16)
            .find(|p| !taken(a.proto, *p) && !chosen.contains(&(a.proto, *p)))?;
        chosen.insert((a.proto, found));
        out.push(PortMapping {
            host_port: found,
            ..*a
        });
    }
    Some(out)
}

impl Sandboxes {
    pub fn with_ephemeral_ports(mut self, range: EphemeralPorts) -> Self {
        self.ephemeral = range;
        self
    }

    /// Host ports for `auto` (host port 0) on `node`, none clashing with
    /// what the node publishes, `explicit` or the reserved ports.
    pub(super) async fn choose_host_ports(
        &self,
        node: &NodeRecord,
        explicit: &[PortMapping],
        auto: &[PortMapping],
    ) -> Result<Vec<PortMapping>> {
        if auto.is_empty() {
            return Ok(Vec::new());
        }
        let keys = &self.store.keys;
        let mut used: BTreeSet<(Proto, u16)> = explicit.iter().map(|p| (p.proto, p.host_port)).collect();
        for proto in auto.iter().map(|p| p.proto).collect::<BTreeSet<_>>() {
            let prefix = keys.ports_of(&node.name, proto);
            for k in self.store.list_keys(&prefix).await? {
                if let Some(port) = k
                    .strip_prefix(&prefix)
                    .and_then(|rest| rest.split('/').next())
                    .and_then(|p| p.parse::<u16>().ok())
                {
                    used.insert((proto, port));
                }
            }
        }
        let range = self.ephemeral;
        let reserved = |proto: Proto, port: u16| {
            self.reserved
                .check(
                    node,
                    &[PortMapping {
                        host_ip: None,
                        host_port: port,
                        container_port: port,
                        proto,
                    }],
                )
                .is_err()
        };
        let taken = |proto: Proto, port: u16| used.contains(&(proto, port)) || reserved(proto, port);
        let start = rand::rng().random_range(0..=(range.end - range.start));
        pick(range, auto, &taken, start).ok_or_else(|| {
            ApiError::Exhausted(format!(
                "no free host port left in {range} (berth-api's --ephemeral-ports) on {} for {} port(s)",
                node.name,
                auto.len()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto(n: usize, proto: Proto) -> Vec<PortMapping> {
        (0..n)
            .map(|i| PortMapping {
                host_ip: None,
                host_port: 0,
                container_port: 80 + i as u16,
                proto,
            })
            .collect()
    }

    #[test]
    fn ranges_parse() {
        assert_eq!(
            EphemeralPorts::default(),
            EphemeralPorts {
                start: 32768,
                end: 60999
            }
        );
        assert!("5-4".parse::<EphemeralPorts>().is_err());
        assert!("0-4".parse::<EphemeralPorts>().is_err());
        assert!("7".parse::<EphemeralPorts>().is_err());
        assert_eq!("7-7".parse::<EphemeralPorts>().unwrap().to_string(), "7-7");
    }

    #[test]
    fn picks_skip_taken_wrap_and_run_out() {
        let r = EphemeralPorts { start: 100, end: 103 };
        let taken = |_: Proto, p: u16| p == 102;
        let got = pick(r, &auto(3, Proto::Tcp), &taken, 1).unwrap();
        let ports: Vec<u16> = got.iter().map(|p| p.host_port).collect();
        assert_eq!(ports, [101, 103, 100]);
        assert_eq!(got[1].container_port, 81);
        assert!(pick(r, &auto(4, Proto::Tcp), &taken, 0).is_none());
        // Another protocol is another space.
        let mut both = auto(1, Proto::Tcp);
        both.extend(auto(1, Proto::Udp));
        let got = pick(r, &both, &|_, _| false, 0).unwrap();
        assert_eq!((got[0].host_port, got[1].host_port), (100, 100));
    }
}
