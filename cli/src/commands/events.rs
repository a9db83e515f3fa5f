//! `berth events`: a live stream of what happens in the cluster, in the
//! shape of `docker events` (one line per event, or JSON lines with
//! `--output json`). A thin client: the API server watches etcd, maps
//! `--since` to history and filters; the CLI parses times and prints.
use std::collections::BTreeMap;

use anyhow::Result;
use berth_proto::v1::event_service_client::EventServiceClient;
use berth_proto::v1::{Event, EventFilter, WatchEventsRequest};
use clap::Args;
use serde::Serialize;
use tonic::transport::Channel;

use crate::args::{OutputFormat, parse_key_value};
use crate::{output, status_error};

/// `berth events`
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Show events since TIME: RFC 3339 (2026-05-01T10:00:00Z), Unix seconds (1714557600), or a duration ago (10m, 1h30m, 45s)
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<i64>,

    /// Stop at TIME (same forms as --since; a past TIME ends once history is shown)
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<i64>,

    /// Only events matching KEY=VALUE: type (network|sandbox|node|repair), action, network, node, sandbox; repeated keys are ORed, different keys ANDed
    #[arg(short, long = "filter", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub filter: Vec<(String, String)>,
}

/// Nanoseconds since the Unix epoch.
fn now_nanos() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64
}

/// A duration like `1h30m`, `10m`, `45s`, `500ms`, in nanoseconds.
fn parse_duration(s: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        if digits == 0 {
            return None;
        }
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let scale: f64 = match &rest[..unit_len] {
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86400e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add((n * scale) as i64)?;
    }
    Some(total)
}

/// `--since`/`--until`: RFC 3339, Unix seconds (with a fraction), or a
/// duration before now; as nanoseconds since the epoch.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(t.unix_timestamp_nanos() as i64);
    }
    if let Ok(secs) = s.parse::<i64>()
        && secs >= 0
    {
        return secs
            .checked_mul(1_000_000_000)
            .ok_or_else(|| format!("{s:?} is too far in the future"));
    }
    if let Ok(secs) = s.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Ok((secs * 1e9) as i64);
    }
    if let Some(ago) = parse_duration(s) {
        return Ok(now_nanos() - ago);
    }
    Err(format!(
        "{s:?} is not a time: use RFC 3339 (2026-05-01T10:00:00Z), Unix seconds, or a duration ago (10m, 1h30m)"
    ))
}

/// One event as `--output json` prints it (one line each), shaped like
/// `docker events --format '{{json .}}'`.
#[derive(Debug, Serialize)]
struct EventJson<'a> {
    #[serde(rename = "Type")]
    kind: &'a str,
    #[serde(rename = "Action")]
    action: &'a str,
    #[serde(rename = "Actor")]
    actor: Actor<'a>,
    #[serde(rename = "Node", skip_serializing_if = "str::is_empty")]
    node: &'a str,
    #[serde(rename = "Network", skip_serializing_if = "str::is_empty")]
    network: &'a str,
    time: i64,
    #[serde(rename = "timeNano")]
    time_nano: i64,
    #[serde(rename = "Revision")]
    revision: i64,
}

#[derive(Debug, Serialize)]
struct Actor<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    #[serde(rename = "Attributes")]
    attributes: BTreeMap<&'a str, &'a str>,
}

fn attributes(e: &Event) -> BTreeMap<&str, &str> {
    let mut a: BTreeMap<&str, &str> = e
        .attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for (k, v) in [("name", &e.name), ("node", &e.node), ("network", &e.network)] {
        if !v.is_empty() {
            a.insert(k, v);
        }
    }
    a
}

/// `2026-12-01T12:00:00.123456789Z sandbox create 3c1f… (name=web, network=bridge, node=node1)`
pub fn line(e: &Event) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(e.time_unix_nanos.into())
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| e.time_unix_nanos.to_string());
    let attrs: Vec<String> = attributes(e).iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut s = format!("{t} {} {}", e.r#type, e.action);
    if !e.id.is_empty() {
        s.push(' ');
        s.push_str(&e.id);
    }
    if !attrs.is_empty() {
        s.push_str(&format!(" ({})", attrs.join(", ")));
    }
    s
}

fn json_line(e: &Event) -> Result<String> {
    Ok(serde_json::to_string(&EventJson {
        kind: &e.r#type,
        action: &e.action,
        actor: Actor {
            id: &e.id,
            attributes: attributes(e),
        },
        node: &e.node,
        network: &e.network,
        time: e.time_unix_nanos.div_euclid(1_000_000_000),
        time_nano: e.time_unix_nanos,
        revision: e.revision,
    })?)
}

/// Streams events until `--until`, the server ends the stream, or the user stops it.
pub async fn run(channel: Channel, out: OutputFormat, args: EventsArgs) -> Result<i32> {
    let mut client = EventServiceClient::new(channel);
    let request = WatchEventsRequest {
        since_unix_nanos: args.since.unwrap_or(0),
        until_unix_nanos: args.until.unwrap_or(0),
        filters: args
            .filter
            .into_iter()
            .map(|(key, value)| EventFilter { key, value })
            .collect(),
    };
    let mut stream = client.watch(request).await.map_err(status_error)?.into_inner();
    while let Some(e) = stream.message().await.map_err(status_error)? {
        match out {
            OutputFormat::Table => output::print(&line(&e))?,
            OutputFormat::Json => output::print(&json_line(&e)?)?,
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Ok(1_000_000_000));
        assert_eq!(parse_time("1714557600"), Ok(1_714_557_600_000_000_000));
        assert_eq!(parse_time("1.5"), Ok(1_500_000_000));
        let ago = now_nanos() - parse_time("1h30m").unwrap();
        assert!((5_390_000_000_000..=5_400_000_000_000).contains(&ago), "{ago}");
        assert_eq!(parse_duration("10m"), Some(600_000_000_000));
        assert_eq!(parse_duration("500ms"), Some(500_000_000));
        for bad in ["", "yesterday", "10x", "m", "-5"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lines() {
        let e = Event {
            r#type: "sandbox".into(),
            action: "create".into(),
            id: "abc".into(),
            name: "web".into(),
            node: "node1".into(),
            network: "bridge".into(),
            time_unix_nanos: 1_000_000_001,
            revision: 9,
            attributes: [("mode".to_string(), "namespace".to_string())].into(),
        };
        assert_eq!(
            line(&e),
            "1970-01-01T00:00:01.000000001Z sandbox create abc (mode=namespace, name=web, network=bridge, node=node1)"
        );
        let j: serde_json::Value = serde_json::from_str(&json_line(&e).unwrap()).unwrap();
        assert_eq!(j["Type"], "sandbox");
        assert_eq!(j["Actor"]["Attributes"]["name"], "web");
        assert_eq!(j["time"], 1);
        assert_eq!(j["timeNano"], 1_000_000_001i64);
    }
}
