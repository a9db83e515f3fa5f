//! The revision clock: when this replica saw each etcd revision under
//! berth's prefix, kept in memory as a bounded ring of (revision, time).
//! It maps `--since` to the revision a watch starts from, and gives every
//! event its time. It starts empty at process start (seeded with the
//! current revision) and, fed by its own watch on the prefix, records the
//! revision of every change there; it holds the last [`CAPACITY`] revisions it saw:
//! history before its oldest entry has no time here, so `--since` earlier
//! than that is refused with OUT_OF_RANGE.
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{GetOptions, WatchOptions};

use crate::store::Store;

/// How many revisions the ring keeps (16 bytes each).
pub const CAPACITY: usize = 100_000;

/// Nanoseconds since the Unix epoch.
pub fn now_nanos() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64
}

#[derive(Debug, Default)]
pub struct Clock {
    ring: Mutex<VecDeque<(i64, i64)>>,
    capacity: usize,
}

/// Why a time cannot be mapped to a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmapped {
    /// The clock has not read etcd yet.
    NotStarted,
    /// Older than the oldest entry (its time).
    TooOld(i64),
}

impl Clock {
    pub fn new(capacity: usize) -> Self {
        Self {
            ring: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, VecDeque<(i64, i64)>> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Revision `rev` was seen at `t` (older or equal revisions are ignored).
    pub fn record(&self, rev: i64, t: i64) {
        let mut ring = self.ring();
        if ring.back().is_some_and(|&(r, _)| r >= rev) {
            return;
        }
        ring.push_back((rev, t));
        while ring.len() > self.capacity {
            ring.pop_front();
        }
    }

    /// When revision `rev` was seen: the time of the first entry at or
    /// after it; `None` if the clock has not seen it yet (it is happening now).
    pub fn time_of(&self, rev: i64) -> Option<i64> {
        let ring = self.ring();
        let i = ring.partition_point(|&(r, _)| r < rev);
        ring.get(i).map(|&(_, t)| t)
    }

    /// The last revision seen at or before `t`, if the clock knows one.
    pub fn last_at(&self, t: i64) -> Option<i64> {
        let ring = self.ring();
        let i = ring.partition_point(|&(_, seen)| seen <= t);
        i.checked_sub(1).map(|i| ring[i].0)
    }

    /// The first revision to watch from for events at or after `since`.
    pub fn start_for(&self, since: i64) -> Result<i64, Unmapped> {
        let ring = self.ring();
        let Some(&(first_rev, first_t)) = ring.front() else {
            return Err(Unmapped::NotStarted);
        };
        if since < first_t {
            return Err(Unmapped::TooOld(first_t));
        }
        // Revisions seen before `since` happened before it.
        let i = ring.partition_point(|&(_, t)| t < since);
        Ok(match i {
            0 => first_rev + 1,
            i => ring[i - 1].0 + 1,
        })
    }

    /// Seeds the clock with etcd's current revision, then records every
    /// revision a watch on berth's prefix reports; reconnects after errors.
    /// Runs forever.
    pub async fn run(&self, store: Store) {
        let root = store.keys.root().to_string();
        let mut delay = Duration::from_millis(200);
        loop {
            let mut client = store.client();
            let start = match client
                .get(root.clone(), Some(GetOptions::new().with_count_only()))
                .await
            {
                Ok(r) => r.header().map_or(0, |h| h.revision()),
                Err(e) => {
                    tracing::debug!(error = %e, "event clock: etcd not reachable yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            self.record(start, now_nanos());
            let opts = WatchOptions::new()
                .with_prefix()
                .with_start_revision(start + 1)
                .with_progress_notify();
            let mut stream = match client.watch(root.clone(), Some(opts)).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "event clock: watch failed");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            delay = Duration::from_millis(200);
            loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        if resp.canceled() {
                            break;
                        }
                        // The revision of the change itself (the header's
                        // may include writes outside berth's prefix).
                        let last = resp
                            .events()
                            .iter()
                            .filter_map(|e| e.kv())
                            .map(|kv| kv.mod_revision())
                            .max();
                        if let Some(rev) = last {
                            self.record(rev, now_nanos());
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "event clock: watch ended");
                        break;
                    }
                }
            }
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_times_and_revisions() {
        let c = Clock::new(3);
        assert_eq!(c.start_for(5), Err(Unmapped::NotStarted));
        c.record(10, 100);
        c.record(12, 200);
        c.record(11, 250); // older: ignored
        c.record(15, 300);
        assert_eq!(c.start_for(99), Err(Unmapped::TooOld(100)));
        assert_eq!(c.start_for(100), Ok(11));
        assert_eq!(c.start_for(150), Ok(11));
        assert_eq!(c.start_for(200), Ok(11));
        assert_eq!(c.start_for(201), Ok(13));
        assert_eq!(c.start_for(999), Ok(16));
        assert_eq!(c.time_of(11), Some(200));
        assert_eq!(c.time_of(12), Some(200));
        assert_eq!(c.time_of(13), Some(300));
        assert_eq!(c.time_of(16), None);
        assert_eq!(c.last_at(99), None);
        assert_eq!(c.last_at(200), Some(12));
        assert_eq!(c.last_at(299), Some(12));
        assert_eq!(c.last_at(1000), Some(15));
        // Bounded: the oldest entry goes.
        c.record(20, 400);
        assert_eq!(c.start_for(150), Err(Unmapped::TooOld(200)));
    }
}
