//! `berth.v1.EventService`: what happens in the cluster, as a stream
//! (`berth events`), derived from an etcd watch on berth's prefix with the
//! previous values, so a removal still names what was removed. Each stream
//! is its own etcd watch starting at the revision its `since` maps to
//! ([`clock`]); repair actions arrive the same way, as puts of one key
//! (`repair::Repair::announce`), so every replica sees every event.
//! docs/events.md says what each event means.
pub mod clock;
pub mod decode;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use berth_proto::v1 as pb;
use berth_proto::v1::event_service_server::EventService;
use etcd_client::{EventType, WatchOptions};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use self::clock::{Clock, Unmapped, now_nanos};
use self::decode::{Change, Decoder, Event};
use crate::error::ApiError;
use crate::store::Store;
use crate::store::records::NetworkRecord;

/// Filter keys and, for `type`, the values allowed.
pub const FILTER_KEYS: [&str; 5] = ["type", "action", "network", "node", "sandbox"];
pub const TYPES: [&str; 4] = ["network", "sandbox", "node", "repair"];
/// Filters one stream may carry.
const MAX_FILTERS: usize = 64;
/// Events buffered per stream before a slow client holds the watch up.
const BUFFER: usize = 256;

/// Docker's filter rule: values of one key ORed, different keys ANDed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, BTreeSet<String>>);

impl Filters {
    pub fn parse(filters: &[pb::EventFilter]) -> Result<Self, ApiError> {
        if filters.len() > MAX_FILTERS {
            return Err(berth_core::Invalid::new(
                "filters",
                format!("{} filters, at most {MAX_FILTERS}", filters.len()),
            )
            .into());
        }
        let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in filters {
            let key = f.key.trim();
            if !FILTER_KEYS.contains(&key) {
                return Err(berth_core::Invalid::new(
                    "filter",
                    format!("unknown key {:?}; use one of {}", f.key, FILTER_KEYS.join(", ")),
                )
                .into());
            }
            if f.value.is_empty() || f.value.len() > 256 {
                return Err(berth_core::Invalid::new(
                    "filter",
                    format!("{key}= needs a value of 1-256 bytes"),
                )
                .into());
            }
            if key == "type" && !TYPES.contains(&f.value.as_str()) {
                return Err(berth_core::Invalid::new(
                    "filter",
                    format!("type={:?}: use one of {}", f.value, TYPES.join(", ")),
                )
                .into());
            }
            map.entry(key.to_string()).or_default().insert(f.value.clone());
        }
        Ok(Self(map))
    }

    pub fn matches(&self, e: &Event) -> bool {
        self.0.iter().all(|(key, values)| {
            values.iter().any(|v| match key.as_str() {
                "type" => e.kind == v,
                "action" => &e.action == v,
                "node" => &e.node == v,
                "network" => {
                    &e.network == v
                        || (e.kind == "network" && e.id.starts_with(v.as_str()))
                        || e.attributes
                            .get("network_id")
                            .is_some_and(|id| id.starts_with(v.as_str()))
                        || e.attributes
                            .get("networks")
                            .is_some_and(|ns| ns.split(',').any(|n| n == v))
                }
                "sandbox" => {
                    matches!(e.kind, "sandbox" | "repair")
                        && (&e.name == v
                            || e.attributes.get("sandbox") == Some(v)
                            || (!e.id.is_empty() && e.id.starts_with(v.as_str())))
                }
                _ => false,
            })
        })
    }
}

pub struct EventApi {
    pub store: Store,
    pub clock: Arc<Clock>,
}

fn to_pb(e: Event) -> pb::Event {
    pb::Event {
        r#type: e.kind.to_string(),
        action: e.action,
        id: e.id,
        name: e.name,
        node: e.node,
        network: e.network,
        time_unix_nanos: e.time_nanos,
        revision: e.revision,
        attributes: e.attributes.into_iter().collect(),
    }
}

fn rfc3339(nanos: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos.into())
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| nanos.to_string())
}

/// etcd's words for a revision it no longer has.
fn compacted(e: &etcd_client::Error) -> bool {
    e.to_string().contains("compacted")
}

/// `rev`: etcd's compaction revision if it said, else where --since begins.
fn compacted_error(rev: i64, known: bool) -> ApiError {
    let at = if known {
        format!("up to revision {rev}")
    } else {
        format!("past revision {rev}, where --since begins")
    };
    ApiError::OutOfRange(format!(
        "etcd has compacted its history {at}: events that old are gone; use a later --since"
    ))
}

#[tonic::async_trait]
impl EventService for EventApi {
    type WatchStream = ReceiverStream<Result<pb::Event, Status>>;

    async fn watch(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = req.into_inner();
        let filters = Filters::parse(&r.filters)?;
        let now = now_nanos();
        if r.since_unix_nanos < 0 || r.until_unix_nanos < 0 {
            return Err(
                ApiError::from(berth_core::Invalid::new("since/until", "must not be negative")).into(),
            );
        }
        let (since, until) = (
            (r.since_unix_nanos > 0).then_some(r.since_unix_nanos),
            (r.until_unix_nanos > 0).then_some(r.until_unix_nanos),
        );
        if let (Some(s), Some(u)) = (since, until)
            && u < s
        {
            return Err(ApiError::from(berth_core::Invalid::new("until", "is before --since")).into());
        }
        if since.is_some_and(|s| s > now) {
            return Err(ApiError::from(berth_core::Invalid::new("since", "is in the future")).into());
        }
        let start = match since.map(|s| self.clock.start_for(s)) {
            None => None,
            Some(Ok(rev)) => Some(rev),
            Some(Err(Unmapped::NotStarted)) => {
                return Err(ApiError::Unavailable(
                    "this API server has not read etcd's revision yet; try again".into(),
                )
                .into());
            }
            Some(Err(Unmapped::TooOld(oldest))) => {
                return Err(ApiError::OutOfRange(format!(
                    "--since {}: this API server knows the cluster's history only from {} on \
                     (its revision clock starts when it starts and keeps the last {} revisions)",
                    rfc3339(since.unwrap_or_default()),
                    rfc3339(oldest),
                    clock::CAPACITY
                ))
                .into());
            }
        };
        // Without --since: nothing before now, and the stream starts right
        // after the revision the network names were read at.
        let keys = &self.store.keys;
        let (nets, read_at) = match self
            .store
            .list_json_versioned::<NetworkRecord>(&keys.networks(), start.map(|s| s - 1))
            .await
        {
            Ok(x) => x,
            Err(ApiError::Unavailable(m)) if m.contains("compacted") => {
                return Err(compacted_error(start.unwrap_or_default(), false).into());
            }
            Err(e) => return Err(e.into()),
        };
        let start = start.unwrap_or(read_at + 1);
        let names: HashMap<String, String> = nets.into_iter().map(|n| (n.value.id, n.value.name)).collect();
        // With an --until already past, the stream ends after the last
        // change the clock saw by then (at once if that is before the start).
        let mut client = self.store.client();
        let end_rev = match until {
            Some(u) if u <= now => Some(self.clock.last_at(u).unwrap_or(0)),
            _ => None,
        };
        let opts = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(start);
        let stream = client.watch(keys.root(), Some(opts)).await.map_err(|e| {
            if compacted(&e) {
                compacted_error(start, false)
            } else {
                ApiError::from(e)
            }
        })?;
        let (tx, rx) = mpsc::channel(BUFFER);
        let decoder = Decoder::new(keys.root(), names);
        let clock = self.clock.clone();
        tokio::spawn(async move {
            let m = &crate::metrics::METRICS;
            m.event_watchers.inc();
            let job = Stream {
                tx,
                decoder,
                filters,
                clock,
                until,
                start,
                end_rev,
            };
            job.run(stream).await;
            m.event_watchers.dec();
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Where an event goes among those of one revision.
fn rank(e: &Event) -> u8 {
    match (e.kind, e.action.as_str()) {
        ("network", "create") | ("node", "register") => 0,
        ("sandbox", "create") => 1,
        ("sandbox", "connect") => 2,
        ("sandbox", "disconnect") => 4,
        ("sandbox", "remove") => 5,
        ("network", "remove") | ("node", "remove") => 6,
        _ => 3,
    }
}

struct Stream {
    tx: mpsc::Sender<Result<pb::Event, Status>>,
    decoder: Decoder,
    filters: Filters,
    clock: Arc<Clock>,
    until: Option<i64>,
    /// The first revision watched.
    start: i64,
    /// The stream ends after the change at this revision (an --until in the past).
    end_rev: Option<i64>,
}

impl Stream {
    async fn run(mut self, mut stream: etcd_client::WatchStream) {
        let deadline = self.until.map(|u| {
            let left = u.saturating_sub(now_nanos()).max(0) as u64;
            tokio::time::Instant::now() + Duration::from_nanos(left)
        });
        if self.end_rev.is_some_and(|end| end < self.start) {
            return;
        }
        loop {
            tokio::select! {
                _ = self.tx.closed() => return,
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)),
                    if deadline.is_some() && self.end_rev.is_none() => return,
                msg = stream.message() => {
                    let resp = match msg {
                        Ok(Some(resp)) => resp,
                        Ok(None) => {
                            let _ = self.tx.send(Err(Status::unavailable("the etcd watch ended"))).await;
                            return;
                        }
                        Err(e) => {
                            let _ = self.tx.send(Err(Status::from(ApiError::from(e)))).await;
                            return;
                        }
                    };
                    if resp.compact_revision() > 0 {
                        let _ = self.tx.send(Err(compacted_error(resp.compact_revision(), true).into())).await;
                        return;
                    }
                    if resp.canceled() {
                        let reason = format!("the etcd watch was cancelled: {}", resp.cancel_reason());
                        let _ = self.tx.send(Err(Status::unavailable(reason))).await;
                        return;
                    }
                    tracing::debug!(
                        events = resp.events().len(),
                        created = resp.created(),
                        revision = resp.header().map_or(0, |h| h.revision()),
                        end = ?self.end_rev,
                        "events: watch response"
                    );
                    if !self.forward(&resp).await {
                        return;
                    }
                    let last = resp.events().iter().filter_map(|e| e.kv()).map(|kv| kv.mod_revision()).max();
                    if let (Some(end), Some(last)) = (self.end_rev, last)
                        && last >= end
                    {
                        return;
                    }
                }
            }
        }
    }

    /// Sends the response's events that pass the filters; false when the
    /// stream is over (the client left, or an event is past --until).
    async fn forward(&mut self, resp: &etcd_client::WatchResponse) -> bool {
        let now = now_nanos();
        let mut events = Vec::new();
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let prev = ev.prev_kv().map(|p| p.value());
            let change = match ev.event_type() {
                EventType::Put => Change::Put {
                    value: kv.value(),
                    prev,
                    first: kv.version() == 1,
                },
                EventType::Delete => Change::Delete { prev },
            };
            let key = String::from_utf8_lossy(kv.key());
            let rev = kv.mod_revision();
            // A change the clock has not seen yet happens now; recording it
            // gives every stream (and later replays) the same time.
            let t = self.clock.time_of(rev).unwrap_or_else(|| {
                self.clock.record(rev, now);
                now
            });
            for mut e in self.decoder.decode(&key, change, rev) {
                e.time_nanos = t;
                events.push(e);
            }
        }
        // One transaction, in the order things happen to the objects: a
        // create before its connects, disconnects before the removal.
        events.sort_by_key(|e| (e.revision, rank(e)));
        for e in events {
            if self.until.is_some_and(|u| e.time_nanos > u) {
                return false;
            }
            if !self.filters.matches(&e) {
                continue;
            }
            if self.tx.send(Ok(to_pb(e))).await.is_err() {
                return false;
            }
            crate::metrics::METRICS.events_sent.inc();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(k: &str, v: &str) -> pb::EventFilter {
        pb::EventFilter {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn filters_or_within_and_across() {
        let e = Event {
            kind: "sandbox",
            action: "create".into(),
            id: "abc123".into(),
            name: "web".into(),
            node: "node1".into(),
            network: "mynet".into(),
            ..Default::default()
        };
        let ok = |fs: &[pb::EventFilter]| Filters::parse(fs).unwrap().matches(&e);
        assert!(ok(&[]));
        assert!(ok(&[f("type", "network"), f("type", "sandbox")]));
        assert!(!ok(&[f("type", "network")]));
        assert!(ok(&[f("type", "sandbox"), f("node", "node1")]));
        assert!(!ok(&[f("type", "sandbox"), f("node", "node2")]));
        assert!(ok(&[f("network", "mynet"), f("sandbox", "abc")]));
        assert!(!ok(&[f("sandbox", "db")]));
        let err = Filters::parse(&[f("colour", "red")]).unwrap_err().to_string();
        assert!(err.contains("unknown key \"colour\""), "{err}");
        assert!(Filters::parse(&[f("type", "container")]).is_err());
        assert!(Filters::parse(&[f("node", "")]).is_err());
    }
}
