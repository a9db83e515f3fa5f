//! Where the time of a sandbox create goes, from timestamps alone: the
//! bench's wall clock around each sequential CreateSandbox call, and the
//! microsecond timestamps of berth-api's and the agent's own info-level log
//! lines for that sandbox (same machine, same clock). Best effort: a sample
//! whose lines are missing (other log level, reworded messages) is skipped.
use std::time::SystemTime;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::lab::Lab;
use crate::results::Step;
use crate::stats::Series;
use crate::util::ms;

/// Removes ANSI colour sequences.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The timestamp that starts a tracing-subscriber line.
pub fn line_time(line: &str) -> Option<SystemTime> {
    let clean = strip_ansi(line);
    let tok = clean.split_whitespace().next()?;
    OffsetDateTime::parse(tok, &Rfc3339).ok().map(SystemTime::from)
}

/// Time of the last line containing `needle`.
pub fn last_line_time(log: &str, needle: &str) -> Option<SystemTime> {
    log.lines().rev().find(|l| l.contains(needle)).and_then(line_time)
}

/// Whether `line` names sandbox `name` exactly (`sandbox=NAME` then a non-name character).
/// The agent records the span field as a quoted string (`sandbox="NAME"`).
fn names_sandbox(line: &str, name: &str) -> bool {
    if line.contains(&format!("sandbox=\"{name}\"")) {
        return true;
    }
    let pat = format!("sandbox={name}");
    line.match_indices(&pat).any(|(i, _)| {
        line[i + pat.len()..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    })
}

fn step(name: &str, v: Vec<f64>) -> Step {
    Step {
        step: name.into(),
        series: Series::new(name, v),
    }
}

/// One timed call of the bench: which sandbox (name and id), sent and answered (wall clock).
#[derive(Debug, Clone)]
pub struct Mark {
    pub name: String,
    pub id: String,
    pub sent: SystemTime,
    pub got: SystemTime,
}

/// Whose log a checkpoint is read from.
#[derive(Debug, Clone, Copy)]
enum Src {
    Api,
    Agent,
}

/// A log line that ends a step: in `src`'s log, containing `needle`, naming the sandbox by name
/// (or by id: the agent's remove span carries only the id).
struct Checkpoint {
    label: &'static str,
    src: Src,
    needle: &'static str,
    by_id: bool,
}

fn timed_lines(log: &str) -> Vec<(String, SystemTime)> {
    log.lines()
        .filter_map(|l| {
            let clean = strip_ansi(l);
            let t = line_time(&clean)?;
            Some((clean, t))
        })
        .collect()
}

/// The first line at or after `from` that names the sandbox and contains `needle`.
fn find(
    lines: &[(String, SystemTime)],
    from: SystemTime,
    key: &str,
    by_id: bool,
    needle: &str,
) -> Option<SystemTime> {
    lines
        .iter()
        .filter(|(_, t)| *t >= from)
        .find(|(l, _)| {
            l.contains(needle)
                && if by_id {
                    l.contains(key)
                } else {
                    names_sandbox(l, key)
                }
        })
        .map(|(_, t)| *t)
}

fn between(a: SystemTime, b: SystemTime) -> Option<f64> {
    b.duration_since(a).ok().map(ms)
}

/// Splits each call into steps ending at the checkpoints found for it (a
/// checkpoint missing for a call folds its time into the next step), then
/// the reply and the total. Steps nobody reached are left out; empty when
/// the logs have none of the lines (e.g. a log level above info).
fn breakdown(lab: &Lab, marks: &[Mark], checkpoints: &[Checkpoint], reply: &'static str) -> Vec<Step> {
    let api = timed_lines(&lab.api_log());
    let agent = timed_lines(&lab.agent_log(1));
    let mut steps: Vec<Vec<f64>> = vec![Vec::new(); checkpoints.len() + 2];
    for m in marks {
        // Log clocks have microseconds; allow for the bench's own rounding.
        let from = m.sent - std::time::Duration::from_millis(1);
        let mut last = m.sent;
        let mut found = 0;
        for (k, c) in checkpoints.iter().enumerate() {
            let lines = match c.src {
                Src::Api => &api,
                Src::Agent => &agent,
            };
            let key = if c.by_id { &m.id } else { &m.name };
            if let Some(t) = find(lines, from, key, c.by_id, c.needle).filter(|t| *t <= m.got)
                && let Some(d) = between(last, t)
            {
                steps[k].push(d);
                last = t;
                found += 1;
            }
        }
        if found == 0 {
            continue;
        }
        if let (Some(r), Some(total)) = (between(last, m.got), between(m.sent, m.got)) {
            steps[checkpoints.len()].push(r);
            steps[checkpoints.len() + 1].push(total);
        }
    }
    if steps[checkpoints.len()].is_empty() {
        return Vec::new();
    }
    let labels = checkpoints
        .iter()
        .map(|c| c.label)
        .chain([reply, "total at the client"]);
    labels
        .zip(steps)
        .filter(|(_, v)| !v.is_empty())
        .map(|(l, v)| step(l, v))
        .collect()
}

/// Steps of a sequential CreateSandbox.
pub fn create_breakdown(lab: &Lab, marks: &[Mark]) -> Vec<Step> {
    let cp = |label, src, needle| Checkpoint {
        label,
        src,
        needle,
        by_id: false,
    };
    breakdown(
        lab,
        marks,
        &[
            cp(
                "client → berth-api \"sandbox recorded\" (validation, lookups, one etcd txn)",
                Src::Api,
                "sandbox recorded",
            ),
            cp(
                "→ agent \"created netns\" (gRPC hop, bridge and rules check, namespace)",
                Src::Agent,
                "created netns",
            ),
            cp(
                "→ agent \"created veth pair\" (netlink socket in the sandbox, link list, RTM_NEWLINK)",
                Src::Agent,
                "created veth pair",
            ),
            cp(
                "→ agent \"endpoint realised\" (peer up, address, default route)",
                Src::Agent,
                "endpoint realised",
            ),
        ],
        "→ reply at the client (port flag, /etc/netns files, state file, rules, both replies)",
    )
}

/// Steps of a sequential RemoveSandbox.
pub fn remove_breakdown(lab: &Lab, marks: &[Mark]) -> Vec<Step> {
    let cp = |label, src, needle| Checkpoint {
        label,
        src,
        needle,
        by_id: true,
    };
    breakdown(
        lab,
        marks,
        &[
            cp(
                "client → agent \"deleted netns\" (API lookups, gRPC hop, unmount + unlink)",
                Src::Agent,
                "deleted netns",
            ),
            cp(
                "→ agent \"removed leftover host veth\" (RTM_DELLINK of the host end)",
                Src::Agent,
                "removed leftover host veth",
            ),
            cp(
                "→ agent \"sandbox removed\" (bridge sweep, rules, state file)",
                Src::Agent,
                "sandbox removed",
            ),
            Checkpoint {
                label: "→ berth-api \"sandbox removed\" (agent reply, records deleted in etcd)",
                src: Src::Api,
                needle: "sandbox removed",
                by_id: false,
            },
        ],
        "→ reply at the client",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tracing_lines() {
        let line = "\u{1b}[2m2025-03-01T10:00:00.123456Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \
                    ensure_sandbox{node=node1 sandbox=c12}: berth_agent: created netns";
        let t = line_time(line).expect("time");
        let base = line_time("2025-03-01T10:00:00Z x").expect("time");
        assert_eq!(t.duration_since(base).unwrap().as_micros(), 123_456);
        assert!(names_sandbox(line, "c12"));
        assert!(!names_sandbox(line, "c1"));
        assert!(names_sandbox("x{node=node1 sandbox=\"c1\"}: y", "c1"));
    }
}
