//! [`WeekRefresh`] in process: the queue between `tally serve`'s erasures
//! and its refresher task.
//!
//! A request is two things: a message on a channel, which wakes the
//! refresher (so a week asked for again while its rewrite runs is rewritten
//! again), and an entry in the set [`pending`](WeekRefresh::pending) lists
//! until the run that rewrote the week withdraws it ([`done`](WeekRefresh::done)).
//!
//! - [`durable`] keeps that set in the records' SQLite file (table
//!   `refresh_requests`): a request is committed (`synchronous=FULL`) before
//!   the erasure answers, and a `tally serve` started after a crash or a
//!   stop finds the weeks still to rewrite and queues them first. This is
//!   what `tally serve` uses.
//! - [`channel`] keeps it in memory (tests, and `--store dynamodb`, whose
//!   scheduled runs also take the pending weeks into account).
//!
//! One gap remains in both: a request made while its week's rewrite runs
//! is withdrawn with that rewrite (the port's contract) and only its channel
//! message asks for the second rewrite; a crash in between loses it. The
//! erasure that made it asked once before its delete too, so the week was
//! pending when that rewrite began — the window is the rewrite's own time.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rusqlite::params;
use tally_core::ports::{SinkError, StoreError, WeekRefresh};
use tally_core::{IsoWeek, Timestamp};
use tokio::sync::mpsc;

use crate::SqliteRecordStore;

/// The requesting side of the queue; cheap to clone.
#[derive(Debug, Clone)]
pub struct ChannelWeekRefresh {
    wake: mpsc::UnboundedSender<IsoWeek>,
    pending: Pending,
}

/// The refresher's side of the queue: one message per request. It holds no
/// sender, so [`recv`](Self::recv) ends once every [`ChannelWeekRefresh`]
/// is dropped.
#[derive(Debug)]
pub struct RefreshInbox {
    rx: mpsc::UnboundedReceiver<IsoWeek>,
}

impl RefreshInbox {
    /// The next week asked for; `None` once no requester is left.
    pub async fn recv(&mut self) -> Option<IsoWeek> {
        self.rx.recv().await
    }
}

/// Where the pending set lives.
#[derive(Debug, Clone)]
enum Pending {
    Memory(Arc<Mutex<BTreeSet<IsoWeek>>>),
    Stored(Arc<SqliteRecordStore>),
}

/// A queue whose pending set lives in memory: the [`WeekRefresh`] to hand
/// to erasures, and the inbox the refresher drains.
pub fn channel() -> (ChannelWeekRefresh, RefreshInbox) {
    let (wake, rx) = mpsc::unbounded_channel();
    (ChannelWeekRefresh { wake, pending: Pending::Memory(Arc::default()) }, RefreshInbox { rx })
}

/// A queue whose pending set lives in `store`'s file; the weeks already
/// pending there (asked for before a crash or a stop) are the inbox's
/// first messages.
pub async fn durable(store: Arc<SqliteRecordStore>) -> Result<(ChannelWeekRefresh, RefreshInbox), StoreError> {
    let (wake, rx) = mpsc::unbounded_channel();
    let queue = ChannelWeekRefresh { wake, pending: Pending::Stored(store) };
    for week in queue.pending.list().await? {
        tracing::info!(%week, "a rewrite asked for before the last stop is still pending; queued");
        // The receiver is in hand: this send cannot fail.
        let _ = queue.wake.send(week);
    }
    Ok((queue, RefreshInbox { rx }))
}

fn to_sink(e: StoreError) -> SinkError {
    SinkError::Unavailable {
        message: format!("cannot keep the week's refresh request: {e}"),
        source: Some(Box::new(e)),
    }
}

impl Pending {
    fn memory(set: &Mutex<BTreeSet<IsoWeek>>) -> std::sync::MutexGuard<'_, BTreeSet<IsoWeek>> {
        set.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn insert(&self, week: IsoWeek) -> Result<(), StoreError> {
        match self {
            Self::Memory(set) => {
                Self::memory(set).insert(week);
                Ok(())
            }
            Self::Stored(store) => {
                let now = Timestamp::now().as_millis();
                store
                    .write("could not record the week's refresh request", move |conn| {
                        conn.prepare_cached(
                            "INSERT INTO refresh_requests (week, requested_at) VALUES (?1, ?2)
                             ON CONFLICT (week) DO NOTHING",
                        )?
                        .execute(params![week.to_string(), now])
                        .map(drop)
                    })
                    .await
            }
        }
    }

    async fn list(&self) -> Result<Vec<IsoWeek>, StoreError> {
        match self {
            Self::Memory(set) => Ok(Self::memory(set).iter().copied().collect()),
            Self::Stored(store) => {
                let weeks: Vec<String> = store
                    .read(|conn| {
                        conn.prepare_cached("SELECT week FROM refresh_requests ORDER BY week")?
                            .query_map([], |r| r.get(0))?
                            .collect()
                    })
                    .await?;
                // A row this code did not write is left alone, not fatal.
                Ok(weeks.iter().filter_map(|w| IsoWeek::parse(w).ok()).collect())
            }
        }
    }

    async fn remove(&self, week: IsoWeek) -> Result<(), StoreError> {
        match self {
            Self::Memory(set) => {
                Self::memory(set).remove(&week);
                Ok(())
            }
            Self::Stored(store) => {
                store
                    .write("could not withdraw the week's refresh request", move |conn| {
                        conn.prepare_cached("DELETE FROM refresh_requests WHERE week = ?1")?
                            .execute([week.to_string()])
                            .map(drop)
                    })
                    .await
            }
        }
    }
}

#[async_trait]
impl WeekRefresh for ChannelWeekRefresh {
    /// Returns once the request is kept (committed, for [`durable`]). Fails
    /// when it cannot be kept, or when the refresher has stopped; the week
    /// then stays pending (it does need a rewrite) and the error says how to
    /// do it.
    async fn request(&self, week: IsoWeek) -> Result<(), SinkError> {
        self.pending.insert(week).await.map_err(to_sink)?;
        self.wake.send(week).map_err(|_| SinkError::Unavailable {
            message: format!("the summary refresher has stopped; run `tally summarize --week {week}`"),
            source: None,
        })
    }

    async fn pending(&self) -> Result<Vec<IsoWeek>, SinkError> {
        self.pending.list().await.map_err(to_sink)
    }

    async fn done(&self, week: IsoWeek) -> Result<(), SinkError> {
        self.pending.remove(week).await.map_err(to_sink)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::SqliteOptions;

    fn store(dir: &tempfile::TempDir) -> Arc<SqliteRecordStore> {
        Arc::new(SqliteRecordStore::open(dir.path().join("tally.db"), SqliteOptions::default()).unwrap())
    }

    #[tokio::test]
    async fn channel_refresh_meets_the_refresh_contract() {
        let (refresh, _rx) = channel();
        tally_core::testing::refresh_contract(&refresh).await;
    }

    #[tokio::test]
    async fn durable_refresh_meets_the_refresh_contract() {
        let dir = tempfile::tempdir().unwrap();
        let (refresh, _rx) = durable(store(&dir)).await.unwrap();
        tally_core::testing::refresh_contract(&refresh).await;
    }

    #[tokio::test]
    async fn every_request_wakes_the_refresher_and_its_done_withdraws_the_week() {
        for durable_queue in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (refresh, mut inbox) = if durable_queue { durable(store(&dir)).await.unwrap() } else { channel() };
            let week = IsoWeek::parse("2026-W47").unwrap();
            refresh.request(week).await.unwrap();
            refresh.request(week).await.unwrap();
            assert_eq!((inbox.recv().await, inbox.recv().await), (Some(week), Some(week)));
            assert_eq!(refresh.pending().await.unwrap(), vec![week]);
            refresh.done(week).await.unwrap();
            assert_eq!(refresh.pending().await.unwrap(), Vec::<IsoWeek>::new());
            // The inbox ends with the last requester.
            drop(refresh);
            assert_eq!(inbox.recv().await, None);
        }
    }

    #[tokio::test]
    async fn a_durable_request_outlives_the_process_and_is_the_next_inbox_first_message() {
        let dir = tempfile::tempdir().unwrap();
        let (w47, w48) = (IsoWeek::parse("2026-W47").unwrap(), IsoWeek::parse("2026-W48").unwrap());
        {
            // GIVEN two weeks asked for, one of them rewritten, and the server stopped
            let (refresh, inbox) = durable(store(&dir)).await.unwrap();
            refresh.request(w48).await.unwrap();
            refresh.request(w47).await.unwrap();
            refresh.done(w48).await.unwrap();
            drop((refresh, inbox));
        }
        // WHEN the data directory is opened again
        let (refresh, mut inbox) = durable(store(&dir)).await.unwrap();
        // THEN the week not rewritten is still pending, and waits in the inbox
        assert_eq!(refresh.pending().await.unwrap(), vec![w47]);
        assert_eq!(inbox.recv().await, Some(w47));
        // AND nothing else does
        refresh.request(w48).await.unwrap();
        assert_eq!(inbox.recv().await, Some(w48));
    }

    #[tokio::test]
    async fn a_request_to_a_stopped_refresher_fails_saying_what_to_run_and_stays_pending() {
        let (refresh, rx) = channel();
        drop(rx);
        let week = IsoWeek::parse("2026-W47").unwrap();
        let err = refresh.request(week).await.unwrap_err();
        assert!(matches!(err, SinkError::Unavailable { .. }), "{err:?}");
        assert!(err.to_string().contains("tally summarize --week 2026-W47"), "{err}");
        assert_eq!(refresh.pending().await.unwrap(), vec![week]);
    }
}
