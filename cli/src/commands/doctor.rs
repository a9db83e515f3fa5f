//! `berth doctor [SANDBOX [TARGET]]`: every node's differences between
//! desired and observed state, or the hops of a path with the first broken
//! one marked. Exits 1 when something is broken or differs.

use anyhow::Result;
use berth_proto::v1::diagnostics_service_client::DiagnosticsServiceClient;
use berth_proto::v1::{DoctorRequest, DoctorResponse, Hop, HopState, NodeDiagnosis};
use serde::Serialize;
use tonic::transport::Channel;

use crate::args::{DoctorArgs, OutputFormat};
use crate::{output, status_error};

pub async fn run(channel: Channel, out: OutputFormat, args: DoctorArgs) -> Result<i32> {
    let resp = DiagnosticsServiceClient::new(channel)
        .doctor(DoctorRequest {
            sandbox: args.sandbox.clone().unwrap_or_default(),
            target: args.target.clone().unwrap_or_default(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if args.sandbox.is_none() {
        nodes(out, &resp.nodes)
    } else {
        path(out, &resp)
    }
}

fn state_word(h: &Hop) -> &'static str {
    match HopState::try_from(h.state).unwrap_or(HopState::Unspecified) {
        HopState::Ok => "ok",
        HopState::Broken => "BROKEN",
        HopState::Skipped => "skipped",
        HopState::Unspecified => "?",
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct HopView<'a> {
    node: &'a str,
    hop: &'a str,
    state: &'static str,
    detail: &'a str,
    first_broken: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PathView<'a> {
    path: &'a str,
    hops: Vec<HopView<'a>>,
    /// The first broken hop, as the table's last line says it (empty: none).
    broken: String,
}

/// `NODE: HOP: DETAIL` of the first broken hop.
fn first_broken(hops: &[Hop]) -> Option<(usize, String)> {
    let (i, h) = hops
        .iter()
        .enumerate()
        .find(|(_, h)| h.state == HopState::Broken as i32)?;
    let at = if h.node.is_empty() {
        String::new()
    } else {
        format!(" on {}", h.node)
    };
    Some((i, format!("{}{at}: {}", h.name, h.detail)))
}

fn path(out: OutputFormat, resp: &DoctorResponse) -> Result<i32> {
    let first = first_broken(&resp.hops);
    match out {
        OutputFormat::Json => {
            let hops = resp
                .hops
                .iter()
                .enumerate()
                .map(|(i, h)| HopView {
                    node: &h.node,
                    hop: &h.name,
                    state: state_word(h),
                    detail: &h.detail,
                    first_broken: first.as_ref().is_some_and(|(f, _)| *f == i),
                })
                .collect();
            output::print_json(&PathView {
                path: &resp.path,
                hops,
                broken: first.as_ref().map(|(_, w)| w.clone()).unwrap_or_default(),
            })?;
        }
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = resp
                .hops
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let mark = if first.as_ref().is_some_and(|(f, _)| *f == i) {
                        "=>"
                    } else {
                        ""
                    };
                    vec![
                        mark.to_string(),
                        h.name.clone(),
                        if h.node.is_empty() {
                            "-".into()
                        } else {
                            h.node.clone()
                        },
                        state_word(h).to_string(),
                        h.detail.clone(),
                    ]
                })
                .collect();
            output::print(&format!("path: {}", resp.path))?;
            output::print(&output::render_table(
                &["", "HOP", "NODE", "STATE", "DETAIL"],
                &rows,
            ))?;
            match &first {
                Some((_, words)) => output::print(&format!("first broken hop: {words}"))?,
                None => output::print("no broken hop")?,
            }
        }
    }
    Ok(i32::from(first.is_some()))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NodeView<'a> {
    node: &'a str,
    ready: bool,
    reachable: bool,
    synced: bool,
    error: &'a str,
    differences: Vec<DifferenceView<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DifferenceView<'a> {
    object: &'a str,
    sandbox: &'a str,
    change: &'a str,
}

fn node_state(n: &NodeDiagnosis) -> &'static str {
    if !n.reachable {
        "unreachable"
    } else if !n.synced {
        "not synced"
    } else if n.differences.is_empty() {
        "converged"
    } else {
        "differs"
    }
}

fn nodes(out: OutputFormat, nodes: &[NodeDiagnosis]) -> Result<i32> {
    let bad = nodes
        .iter()
        .any(|n| !n.reachable || !n.synced || !n.differences.is_empty());
    match out {
        OutputFormat::Json => {
            let docs: Vec<NodeView> = nodes
                .iter()
                .map(|n| NodeView {
                    node: &n.node,
                    ready: n.ready,
                    reachable: n.reachable,
                    synced: n.synced,
                    error: &n.error,
                    differences: n
                        .differences
                        .iter()
                        .map(|d| DifferenceView {
                            object: &d.object,
                            sandbox: &d.sandbox,
                            change: &d.change,
                        })
                        .collect(),
                })
                .collect();
            output::print_json(&docs)?;
        }
        OutputFormat::Table => {
            let mut rows = Vec::new();
            for n in nodes {
                let state = node_state(n).to_string();
                if !n.reachable {
                    rows.push(vec![
                        n.node.clone(),
                        state,
                        "-".into(),
                        "-".into(),
                        n.error.clone(),
                    ]);
                } else if n.differences.is_empty() {
                    let what = if n.synced {
                        "observed state matches the desired state"
                    } else {
                        "the agent has not had its desired state since it started"
                    };
                    rows.push(vec![n.node.clone(), state, "-".into(), "-".into(), what.into()]);
                } else {
                    for d in &n.differences {
                        rows.push(vec![
                            n.node.clone(),
                            state.clone(),
                            d.object.clone(),
                            if d.sandbox.is_empty() {
                                "-".into()
                            } else {
                                d.sandbox.clone()
                            },
                            d.change.clone(),
                        ]);
                    }
                }
            }
            output::print(&output::render_table(
                &["NODE", "STATE", "OBJECT", "SANDBOX", "DIFFERENCE"],
                &rows,
            ))?;
        }
    }
    Ok(i32::from(bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(name: &str, state: HopState) -> Hop {
        Hop {
            node: "node1".into(),
            name: name.into(),
            state: state as i32,
            detail: "why".into(),
        }
    }

    #[test]
    fn the_first_broken_hop_is_named() {
        let hops = [
            hop("a", HopState::Ok),
            hop("b", HopState::Skipped),
            hop("c", HopState::Broken),
            hop("d", HopState::Broken),
        ];
        assert_eq!(first_broken(&hops), Some((2, "c on node1: why".to_string())));
        assert_eq!(first_broken(&hops[..2]), None);
    }
}
