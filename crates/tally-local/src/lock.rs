//! [`WeekLock`] in the records' own SQLite file: every process that opens
//! the data directory — `tally serve` (its schedule and its refresher),
//! `tally summarize`, `tally import` — takes a week's lock in the same
//! table, so their runs of one week never interleave.
//!
//! # Layout
//! ```sql
//! week_locks (week TEXT PRIMARY KEY,   -- "2026-W47"
//!             holder TEXT,             -- "tally summarize (pid 4242)"; NULL when free
//!             token INTEGER NOT NULL,  -- fencing token of the last lease taken: 1, 2, 3...
//!             expires_at INTEGER,      -- ms since the epoch, inclusive; NULL when free
//!             done_from INTEGER)       -- ms: when the last completed run started
//! ```
//! Taking a lock is one `BEGIN IMMEDIATE` transaction on the store's writer
//! connection (read the row; if free or expired, bump the token and write
//! the holder): SQLite's write lock serializes it with every other
//! process's. Renewing and releasing are single `UPDATE`s conditional on the
//! token; checking a lease is a read. Rows are tiny and one per week ever
//! run, so they are never deleted.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use tally_core::ports::{Acquired, StoreError, WeekLease, WeekLock};
use tally_core::{IsoWeek, Timestamp};

use crate::SqliteRecordStore;

/// Week locks in a [`SqliteRecordStore`]'s database (see the module docs).
#[derive(Debug, Clone)]
pub struct SqliteWeekLock {
    store: Arc<SqliteRecordStore>,
}

impl SqliteWeekLock {
    /// Locks in `store`'s file, taken through its writer. Holds the store
    /// open: drop this too before expecting its writer to stop.
    pub fn new(store: Arc<SqliteRecordStore>) -> Self {
        Self { store }
    }
}

fn after(now: Timestamp, ttl: Duration) -> i64 {
    now.as_millis().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

fn token(lease: &WeekLease) -> i64 {
    i64::try_from(lease.token).unwrap_or(i64::MAX)
}

#[async_trait]
impl WeekLock for SqliteWeekLock {
    async fn try_acquire(
        &self,
        week: IsoWeek,
        holder: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Acquired, StoreError> {
        let holder = holder.to_owned();
        let until = after(now, ttl);
        self.store
            .write("could not take the week's lock", move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let row: Option<(Option<String>, i64, Option<i64>, Option<i64>)> = tx
                    .prepare_cached("SELECT holder, token, expires_at, done_from FROM week_locks WHERE week = ?1")?
                    .query_row([week.to_string()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .optional()?;
                let (last_token, done_from) = match row {
                    Some((Some(other), _, Some(expires_at), _)) if now.as_millis() <= expires_at => {
                        return Ok(Acquired::Held { holder: other, until: Timestamp::from_millis(expires_at) });
                    }
                    Some((_, token, _, done_from)) => (token, done_from),
                    None => (0, None),
                };
                let token = last_token + 1;
                tx.prepare_cached(
                    "INSERT INTO week_locks (week, holder, token, expires_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (week) DO UPDATE
                     SET holder = excluded.holder, token = excluded.token, expires_at = excluded.expires_at",
                )?
                .execute(params![week.to_string(), holder, token, until])?;
                tx.commit()?;
                Ok(Acquired::Taken(WeekLease {
                    week,
                    holder,
                    token: u64::try_from(token).unwrap_or_default(),
                    until: Timestamp::from_millis(until),
                    done_from: done_from.map(Timestamp::from_millis),
                }))
            })
            .await
    }

    async fn renew(&self, lease: &mut WeekLease, now: Timestamp, ttl: Duration) -> Result<bool, StoreError> {
        let (week, token, until) = (lease.week.to_string(), token(lease), after(now, ttl));
        let renewed = self
            .store
            .write("could not renew the week's lock", move |conn| {
                conn.prepare_cached(
                    "UPDATE week_locks SET expires_at = ?3
                     WHERE week = ?1 AND token = ?2 AND holder IS NOT NULL AND expires_at >= ?4",
                )?
                .execute(params![week, token, until, now.as_millis()])
            })
            .await?;
        if renewed == 1 {
            lease.until = Timestamp::from_millis(until);
        }
        Ok(renewed == 1)
    }

    async fn check(&self, lease: &WeekLease, now: Timestamp) -> Result<bool, StoreError> {
        let (week, token) = (lease.week.to_string(), token(lease));
        self.store
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT 1 FROM week_locks
                     WHERE week = ?1 AND token = ?2 AND holder IS NOT NULL AND expires_at >= ?3",
                )?
                .query_row(params![week, token, now.as_millis()], |_| Ok(()))
                .optional()
                .map(|found| found.is_some())
            })
            .await
    }

    async fn release(
        &self,
        lease: WeekLease,
        done_from: Option<Timestamp>,
        _now: Timestamp,
    ) -> Result<bool, StoreError> {
        let (week, token) = (lease.week.to_string(), token(&lease));
        let released = self
            .store
            .write("could not release the week's lock", move |conn| {
                conn.prepare_cached(
                    "UPDATE week_locks SET holder = NULL, expires_at = NULL, done_from = coalesce(?3, done_from)
                     WHERE week = ?1 AND token = ?2 AND holder IS NOT NULL",
                )?
                .execute(params![week, token, done_from.map(Timestamp::as_millis)])
            })
            .await?;
        Ok(released == 1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::SqliteOptions;
    use tally_core::testing::lock_contract;

    fn open(path: &std::path::Path) -> Arc<SqliteRecordStore> {
        Arc::new(SqliteRecordStore::open(path, SqliteOptions::default()).unwrap())
    }

    #[tokio::test]
    async fn sqlite_lock_meets_the_lock_contract() {
        // Each handle opens the file anew: a process of its own, with its
        // own writer connection.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.db");
        lock_contract(|| {
            let path = path.clone();
            async move { Arc::new(SqliteWeekLock::new(open(&path))) as Arc<dyn WeekLock> }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn of_many_simultaneous_takers_on_separate_connections_one_gets_the_week() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.db");
        let week = IsoWeek::parse("2026-W47").unwrap();
        let now = Timestamp::from_millis(week.end().as_millis());
        for round in 0..5 {
            let locks: Vec<SqliteWeekLock> = (0..8).map(|_| SqliteWeekLock::new(open(&path))).collect();
            let barrier = Arc::new(tokio::sync::Barrier::new(locks.len()));
            let takers: Vec<_> = locks
                .into_iter()
                .enumerate()
                .map(|(i, lock)| {
                    let barrier = barrier.clone();
                    tokio::spawn(async move {
                        barrier.wait().await;
                        let taken = lock.try_acquire(week, &format!("run-{i}"), now, Duration::from_secs(60)).await;
                        (lock, taken.unwrap())
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for taker in takers {
                if let (lock, Acquired::Taken(lease)) = taker.await.unwrap() {
                    winners.push((lock, lease));
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: {} runs took the week", winners.len());
            let (lock, lease) = winners.pop().unwrap();
            assert_eq!(lease.token, round + 1);
            assert!(lock.release(lease, None, now).await.unwrap());
        }
    }
}
