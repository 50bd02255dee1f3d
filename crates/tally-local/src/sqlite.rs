//! [`RecordStore`] on one SQLite file, with group commit.
//!
//! # Layout
//! ```sql
//! records     (seq INTEGER PRIMARY KEY, id BLOB UNIQUE, received_at INTEGER, data TEXT)
//! idempotency (key TEXT PRIMARY KEY, fingerprint BLOB, received_at, status, response, expires_at)
//! weeks       (week TEXT PRIMARY KEY)   -- "2026-W47": weeks holding records
//! week_locks  (week TEXT PRIMARY KEY, holder, token, expires_at, done_from)
//!                                       -- one run per week: see crate::lock
//! refresh_requests (week TEXT PRIMARY KEY, requested_at)
//!                                       -- weeks to rewrite after erasures: see crate::refresh
//! ```
//! `id` is the ULID's 16 big-endian bytes, so byte order is time order and a
//! week is the id range `[lower_bound(start), lower_bound(end))` on the
//! unique index — a week scan reads that week only.
//!
//! # Durability and throughput
//! The database runs in WAL mode with `synchronous=FULL`: a commit returns
//! only after the WAL is fsynced. One writer thread owns the write connection.
//! Requests queue on a channel; the writer takes everything queued (up to
//! `max_group` requests), applies each inside its own SAVEPOINT (so one
//! failing request cannot affect the others), commits once, and only then
//! answers every request of the group. Concurrent requests therefore share one
//! fsync instead of paying one each, without weakening durability.
//! Reads use a small pool of separate connections, which WAL lets run
//! alongside the writer.
//!
//! # Callers that stop waiting
//! A request whose caller left is not stored behind its back, and a caller
//! told "not stored" is never wrong: before a group's transaction the writer
//! *claims* each request (skipping those abandoned or withdrawn), and a
//! caller whose time limit passes ([`RecordStore::insert_until`]) withdraws
//! its request if it is still queued, or else waits for the commit under way
//! and gives its real answer. Claim and withdrawal are one atomic swap each,
//! so exactly one of them wins.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering::{AcqRel, Acquire};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use futures::future::Either;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tally_core::idempotency::Fingerprint;
use tally_core::ports::{GiveUp, InsertOutcome, RecordLifecycle, RecordPages, RecordStore, RestoreOutcome, StoreError};
use tally_core::{IdempotencyEntry, IdempotencyKey, IsoWeek, Record, RecordId, Timestamp};
use tokio::sync::{mpsc, oneshot};

/// Tuning knobs; the defaults suit a laptop or a small VM.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Most requests committed together in one transaction.
    pub max_group: usize,
    /// How long a connection waits on a lock before giving up.
    pub busy_timeout: Duration,
    /// How often expired idempotency keys are purged.
    pub purge_every: Duration,
    /// Tests only (feature `fault-injection`): called on the writer thread
    /// with a group's size once its requests are claimed and before its
    /// transaction starts — the fault point between "too late to withdraw"
    /// and "committed". It may block, holding the writer there.
    #[cfg(feature = "fault-injection")]
    pub after_claim: Option<CommitHook>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            max_group: 512,
            busy_timeout: Duration::from_secs(5),
            purge_every: Duration::from_secs(600),
            #[cfg(feature = "fault-injection")]
            after_claim: None,
        }
    }
}

/// See [`SqliteOptions::after_claim`].
#[cfg(feature = "fault-injection")]
#[derive(Clone)]
pub struct CommitHook(pub Arc<dyn Fn(usize) + Send + Sync>);

#[cfg(feature = "fault-injection")]
impl std::fmt::Debug for CommitHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitHook")
    }
}

/// Why the database could not be opened; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the database {path}: {source}; check that the data directory exists and is writable")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the database {path} is not writable ({source}); check the data directory's permissions and free disk space"
    )]
    NotWritable {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot start the database writer thread: {0}")]
    Thread(#[source] std::io::Error),
}

struct WriteJob {
    records: Vec<Record>,
    entry: Option<IdempotencyEntry>,
    reply: oneshot::Sender<Result<InsertOutcome, StoreError>>,
    /// Who decides the job's fate: the writer claims it for a commit, or its
    /// caller withdraws it; whoever swaps [`QUEUED`] first wins.
    claim: Arc<AtomicU8>,
}

/// Waiting in the queue: the caller may still withdraw it.
const QUEUED: u8 = 0;
/// In a group being committed: it will be stored unless the commit fails.
const CLAIMED: u8 = 1;
/// Withdrawn by a caller that gave up: never stored.
const WITHDRAWN: u8 = 2;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What the writer thread does: inserts are group-committed; the data
/// lifecycle's writes (restore, erasure, retention) each run in a short
/// transaction of their own between groups.
enum Job {
    Insert(WriteJob),
    Restore {
        records: Vec<Record>,
        reply: Reply<RestoreOutcome>,
    },
    Delete {
        id: RecordId,
        reply: Reply<bool>,
    },
    /// Deletes up to `limit` records of `[from, to)`, returns how many.
    DeleteChunk {
        from: [u8; 16],
        to: [u8; 16],
        limit: i64,
        reply: Reply<u64>,
    },
    /// Drops `week` from `weeks` if it holds no record any more.
    ForgetWeek {
        week: IsoWeek,
        from: [u8; 16],
        to: [u8; 16],
        reply: Reply<()>,
    },
    /// Returns up to `pages` free pages to the file system; answers whether free pages remain.
    Vacuum {
        pages: u32,
        reply: Reply<bool>,
    },
    /// Any other short write (the week locks): runs on the writer's
    /// connection between groups and answers on its own channel.
    Exec(Box<dyn FnOnce(&mut Connection) + Send>),
}

/// Records in an SQLite file. Cheap to share behind an `Arc`.
pub struct SqliteRecordStore {
    path: PathBuf,
    writer: Option<mpsc::UnboundedSender<Job>>,
    writer_thread: Option<JoinHandle<()>>,
    readers: Arc<ReaderPool>,
}

impl std::fmt::Debug for SqliteRecordStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteRecordStore").field("path", &self.path).finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    id BLOB NOT NULL UNIQUE,
    received_at INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    fingerprint BLOB NOT NULL,
    received_at INTEGER NOT NULL,
    status INTEGER NOT NULL,
    response TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_expiry ON idempotency (expires_at);
CREATE TABLE IF NOT EXISTS weeks (week TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS week_locks (
    week TEXT PRIMARY KEY,
    holder TEXT,
    token INTEGER NOT NULL,
    expires_at INTEGER,
    done_from INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refresh_requests (
    week TEXT PRIMARY KEY,
    requested_at INTEGER NOT NULL
) WITHOUT ROWID;
PRAGMA user_version = 1;
";

impl SqliteRecordStore {
    /// Opens (creating if needed) the database at `path`, and proves it is
    /// writable before returning, so a read-only or full disk fails at start-up.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, OpenError> {
        let path = path.as_ref().to_path_buf();
        let open_err = |source| OpenError::Open { path: path.clone(), source };
        let conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(options.busy_timeout).map_err(open_err)?;
        let writable = |conn: &Connection| -> rusqlite::Result<()> {
            // A new file frees the pages of deleted weeks back to the file
            // system step by step (`PRAGMA incremental_vacuum`). This must be
            // set before the first table exists; a file from tally 0.1 keeps
            // auto_vacuum off and reuses freed pages for new records instead.
            let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
            if tables == 0 {
                conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
            }
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.execute_batch(SCHEMA)?;
            conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
        };
        writable(&conn).map_err(|source| OpenError::NotWritable { path: path.clone(), source })?;

        let readers =
            Arc::new(ReaderPool { path: path.clone(), busy_timeout: options.busy_timeout, idle: Mutex::default() });
        let (tx, rx) = mpsc::unbounded_channel();
        let writer_thread = std::thread::Builder::new()
            .name("tally-sqlite-writer".into())
            .spawn(move || Writer { conn, options, last_purge: Instant::now() }.run(rx))
            .map_err(OpenError::Thread)?;
        Ok(Self { path, writer: Some(tx), writer_thread: Some(writer_thread), readers })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of stored records (tests and diagnostics; a full index count).
    pub async fn count(&self) -> Result<u64, StoreError> {
        self.readers
            .run(|c| c.query_row("SELECT count(*) FROM records", [], |r| r.get::<_, i64>(0)).map(|n| n as u64))
            .await
    }

    /// `PRAGMA integrity_check`: `Ok(())` when SQLite reports "ok".
    pub async fn integrity_check(&self) -> Result<(), StoreError> {
        let verdict: String = self.readers.run(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get(0))).await?;
        if verdict == "ok" {
            Ok(())
        } else {
            Err(StoreError::Internal { message: format!("integrity check failed: {verdict}"), source: None })
        }
    }
}

impl Drop for SqliteRecordStore {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish queued work and exit.
        self.writer.take();
        if let Some(t) = self.writer_thread.take() {
            let _ = t.join();
        }
    }
}

fn classify(context: &str, e: rusqlite::Error) -> StoreError {
    let transient = matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DiskFull
                | ErrorCode::ReadOnly
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory
                | ErrorCode::PermissionDenied
        )
    );
    if transient {
        StoreError::unavailable(format!("{context}: {e}"), e)
    } else {
        StoreError::internal(context.to_owned(), e)
    }
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable {
        message: "the database writer has stopped".into(),
        retry_after: Duration::from_secs(5),
        source: None,
    }
}

struct Writer {
    conn: Connection,
    options: SqliteOptions,
    last_purge: Instant,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        while let Some(first) = rx.blocking_recv() {
            let (mut group, mut other) = match first {
                Job::Insert(job) => (vec![job], None),
                job => (Vec::new(), Some(job)),
            };
            while other.is_none() && group.len() < self.options.max_group {
                match rx.try_recv() {
                    Ok(Job::Insert(job)) => group.push(job),
                    Ok(job) => other = Some(job),
                    Err(_) => break,
                }
            }
            if !group.is_empty() {
                self.commit_group(group);
            }
            if let Some(job) = other {
                self.lifecycle(job);
            }
            if self.last_purge.elapsed() >= self.options.purge_every {
                self.last_purge = Instant::now();
                let now = Timestamp::now().as_millis();
                if let Err(e) = self.conn.execute("DELETE FROM idempotency WHERE expires_at <= ?1", [now]) {
                    tracing::warn!(error = %tally_core::error_chain(&e), "could not purge expired idempotency keys; will retry later");
                }
            }
        }
    }

    fn commit_group(&mut self, mut group: Vec<WriteJob>) {
        // A request that stopped waiting (timed out, client gone) was not
        // acknowledged and never will be: do not store it behind its back.
        // Claiming the others settles the race with a caller giving up right
        // now: from here on its `insert_until` waits for this commit's answer
        // instead of reporting a failure (see `insert_until`).
        group.retain(|job| {
            !job.reply.is_closed() && job.claim.compare_exchange(QUEUED, CLAIMED, AcqRel, Acquire).is_ok()
        });
        if group.is_empty() {
            return;
        }
        #[cfg(feature = "fault-injection")]
        if let Some(CommitHook(hook)) = &self.options.after_claim {
            hook(group.len());
        }
        let started = Instant::now();
        let size = group.len();
        let mut outcomes: Vec<Result<InsertOutcome, StoreError>> = Vec::with_capacity(size);
        let committed = (|| -> rusqlite::Result<()> {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // One savepoint per request, so a failing request never spoils
            // its group. The statements are prepared once and cached (a
            // `Savepoint` would parse its SQL again for every request).
            let sql = |stmt: &str| -> rusqlite::Result<()> { tx.prepare_cached(stmt)?.execute([]).map(drop) };
            for job in &group {
                sql("SAVEPOINT request")?;
                match apply(&tx, job) {
                    Ok(outcome) => {
                        sql("RELEASE request")?;
                        outcomes.push(Ok(outcome));
                    }
                    Err(e) => {
                        sql("ROLLBACK TO request")?;
                        sql("RELEASE request")?;
                        outcomes.push(Err(classify("could not store the records", e)));
                    }
                }
            }
            tx.commit()
        })();
        if let Err(e) = committed {
            tracing::error!(error = %tally_core::error_chain(&e), requests = size, "group commit failed; answering 503");
            let unavailable = |_| Err(classify("could not commit to the database", clone_err(&e)));
            outcomes = (0..size).map(unavailable).collect();
        }
        tracing::trace!(requests = size, elapsed_us = started.elapsed().as_micros() as u64, "group committed");
        for (job, outcome) in group.into_iter().zip(outcomes) {
            let _ = job.reply.send(outcome);
        }
    }
}

impl Writer {
    /// One lifecycle job in its own transaction. A job whose caller stopped
    /// waiting is dropped, as an abandoned insert is.
    fn lifecycle(&mut self, job: Job) {
        fn answer<T>(reply: Reply<T>, context: &str, result: rusqlite::Result<T>) {
            let _ = reply.send(result.map_err(|e| classify(context, e)));
        }
        match job {
            Job::Insert(job) => self.commit_group(vec![job]),
            Job::Restore { records, reply } if !reply.is_closed() => {
                answer(reply, "could not restore the records", restore(&mut self.conn, &records))
            }
            Job::Delete { id, reply } if !reply.is_closed() => {
                let deleted = self
                    .conn
                    .prepare_cached("DELETE FROM records WHERE id = ?1")
                    .and_then(|mut st| st.execute([&id.to_bytes()[..]]));
                answer(reply, "could not delete the record", deleted.map(|n| n > 0));
            }
            Job::DeleteChunk { from, to, limit, reply } if !reply.is_closed() => {
                let deleted = self
                    .conn
                    .prepare_cached(
                        "DELETE FROM records WHERE id IN
                         (SELECT id FROM records WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT ?3)",
                    )
                    .and_then(|mut st| st.execute(params![&from[..], &to[..], limit]));
                answer(reply, "could not delete the week's records", deleted.map(|n| n as u64));
            }
            Job::ForgetWeek { week, from, to, reply } if !reply.is_closed() => {
                let forgot = self.conn.execute(
                    "DELETE FROM weeks WHERE week = ?1
                     AND NOT EXISTS (SELECT 1 FROM records WHERE id >= ?2 AND id < ?3)",
                    params![week.to_string(), &from[..], &to[..]],
                );
                answer(reply, "could not update the list of weeks", forgot.map(drop));
            }
            Job::Vacuum { pages, reply } if !reply.is_closed() => {
                let vacuumed = (|| -> rusqlite::Result<bool> {
                    let mode: i64 = self.conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
                    if mode != 2 {
                        return Ok(false); // not INCREMENTAL: freed pages are reused, not returned
                    }
                    self.conn.execute_batch(&format!("PRAGMA incremental_vacuum({pages})"))?;
                    let free: i64 = self.conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
                    Ok(free > 0)
                })();
                answer(reply, "could not reclaim free space", vacuumed);
            }
            Job::Exec(job) => job(&mut self.conn),
            _ => {} // the caller stopped waiting
        }
    }
}

/// Restores `records` under their own ids in one transaction: all of them
/// (skipping identical ones already stored), or none if an id is stored with
/// other content.
fn restore(conn: &mut Connection, records: &[Record]) -> rusqlite::Result<RestoreOutcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut inserted = 0;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO records (id, received_at, data) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO NOTHING",
        )?;
        let mut existing = tx.prepare_cached("SELECT received_at, data FROM records WHERE id = ?1")?;
        let mut mark_week = tx.prepare_cached("INSERT OR IGNORE INTO weeks (week) VALUES (?1)")?;
        let mut last_week = None;
        for r in records {
            let id = r.id.to_bytes();
            if insert.execute(params![&id[..], r.received_at.as_millis(), r.data])? == 1 {
                inserted += 1;
                let week = IsoWeek::containing(r.received_at);
                if last_week != Some(week) {
                    mark_week.execute([week.to_string()])?;
                    last_week = Some(week);
                }
                continue;
            }
            let (at, data): (i64, String) = existing.query_row([&id[..]], |row| Ok((row.get(0)?, row.get(1)?)))?;
            if at != r.received_at.as_millis() || data != r.data {
                // Dropping the transaction rolls it back: nothing of this call is stored.
                return Ok(RestoreOutcome::Conflict(r.id));
            }
        }
    }
    tx.commit()?;
    Ok(RestoreOutcome::Restored { inserted, present: records.len() - inserted })
}

fn clone_err(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(f, m) => rusqlite::Error::SqliteFailure(*f, m.clone()),
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

/// One request inside its savepoint.
fn apply(tx: &Connection, job: &WriteJob) -> rusqlite::Result<InsertOutcome> {
    if let Some(entry) = &job.entry {
        if let Some(existing) = live_entry(tx, &entry.key, Timestamp::now())? {
            return Ok(InsertOutcome::KeyExists(existing));
        }
        tx.prepare_cached(
            "INSERT OR REPLACE INTO idempotency (key, fingerprint, received_at, status, response, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            entry.key.as_str(),
            &entry.fingerprint.0[..],
            entry.received_at.as_millis(),
            entry.status,
            entry.response,
            entry.expires_at.as_millis()
        ])?;
    }
    let mut insert = tx.prepare_cached("INSERT INTO records (id, received_at, data) VALUES (?1, ?2, ?3)")?;
    let mut last_week = None;
    for r in &job.records {
        insert.execute(params![&r.id.to_bytes()[..], r.received_at.as_millis(), r.data])?;
        let week = IsoWeek::containing(r.received_at);
        if last_week != Some(week) {
            tx.prepare_cached("INSERT OR IGNORE INTO weeks (week) VALUES (?1)")?.execute([week.to_string()])?;
            last_week = Some(week);
        }
    }
    Ok(InsertOutcome::Inserted)
}

fn live_entry(conn: &Connection, key: &IdempotencyKey, now: Timestamp) -> rusqlite::Result<Option<IdempotencyEntry>> {
    conn.prepare_cached(
        "SELECT fingerprint, received_at, status, response, expires_at FROM idempotency
         WHERE key = ?1 AND expires_at > ?2",
    )?
    .query_row(params![key.as_str(), now.as_millis()], |row| {
        let fp: Vec<u8> = row.get(0)?;
        Ok(IdempotencyEntry {
            key: key.clone(),
            fingerprint: Fingerprint(fp.try_into().unwrap_or([0; 32])),
            received_at: Timestamp::from_millis(row.get(1)?),
            status: row.get(2)?,
            response: row.get(3)?,
            expires_at: Timestamp::from_millis(row.get(4)?),
        })
    })
    .optional()
}

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    // The id is read in place (no `Vec` per row); `data` is copied once,
    // into the record's own `String`.
    let id: [u8; 16] = row.get_ref(0)?.as_blob()?.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, "record id is not 16 bytes".into())
    })?;
    Ok(Record { id: RecordId::from_bytes(id), received_at: Timestamp::from_millis(row.get(1)?), data: row.get(2)? })
}

/// Read connections, opened on demand and kept for reuse.
struct ReaderPool {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    fn checkout(&self) -> rusqlite::Result<Connection> {
        if let Some(c) = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop() {
            return Ok(c);
        }
        let c = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        c.busy_timeout(self.busy_timeout)?;
        c.pragma_update(None, "query_only", true)?;
        // No `mmap_size`: file pages mapped into the process count in its
        // resident set (a week's scan would hold the whole file: 131 MB
        // instead of 36 MB at 300k records) for no measurable CPU gain; a
        // larger `cache_size` likewise (+15 MB). See docs/BENCHMARKS.md.
        Ok(c)
    }

    fn checkin(&self, c: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < 16 {
            idle.push(c);
        }
    }

    /// Runs a read on a pooled connection on the blocking thread pool.
    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let conn = pool.checkout().map_err(|e| classify("could not open a read connection", e))?;
            let out = f(&conn).map_err(|e| classify("could not read from the database", e));
            pool.checkin(conn);
            out
        })
        .await
        .map_err(|e| StoreError::internal("a database read task failed", e))?
    }
}

#[async_trait]
impl RecordStore for SqliteRecordStore {
    async fn insert(
        &self,
        records: &[Record],
        idempotency: Option<&IdempotencyEntry>,
    ) -> Result<InsertOutcome, StoreError> {
        let (answer, _claim) = self.enqueue(records, idempotency)?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// Gives up only while the job is queued: withdrawn then, it is never
    /// stored. Once the writer has claimed it for a group, the commit is
    /// under way and its answer, success or not, is the one to give.
    async fn insert_until(
        &self,
        records: &[Record],
        idempotency: Option<&IdempotencyEntry>,
        give_up: GiveUp<'_>,
    ) -> Result<InsertOutcome, StoreError> {
        let (mut answer, claim) = self.enqueue(records, idempotency)?;
        if let Either::Left((outcome, _)) = futures::future::select(&mut answer, give_up).await {
            return outcome.map_err(|_| writer_gone())?;
        }
        if claim.compare_exchange(QUEUED, WITHDRAWN, AcqRel, Acquire).is_ok() {
            return Err(StoreError::gave_up());
        }
        tracing::debug!("the caller's time limit passed while its records were being committed; awaiting the commit");
        answer.await.map_err(|_| writer_gone())?
    }

    async fn idempotency_entry(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyEntry>, StoreError> {
        let key = key.clone();
        self.readers.run(move |c| live_entry(c, &key, Timestamp::now())).await
    }

    async fn get(&self, id: RecordId) -> Result<Option<Record>, StoreError> {
        self.readers
            .run(move |c| {
                c.prepare_cached("SELECT id, received_at, data FROM records WHERE id = ?1")?
                    .query_row([&id.to_bytes()[..]], row_to_record)
                    .optional()
            })
            .await
    }

    fn scan_range(&self, from: RecordId, to: RecordId, page_size: usize) -> RecordPages<'_> {
        let hi = to.to_bytes();
        let start = from.to_bytes();
        let limit = page_size.max(1) as i64;
        // State: the last id returned (exclusive lower bound), or None when done.
        let first: Option<(Vec<u8>, bool)> = Some((start.to_vec(), true));
        futures::stream::unfold(first, move |state| async move {
            let (after, inclusive) = state?;
            let page = self
                .readers
                .run(move |c| {
                    let sql = if inclusive {
                        "SELECT id, received_at, data FROM records WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT ?3"
                    } else {
                        "SELECT id, received_at, data FROM records WHERE id > ?1 AND id < ?2 ORDER BY id LIMIT ?3"
                    };
                    let mut stmt = c.prepare_cached(sql)?;
                    let mut rows = stmt.query(params![after, &hi[..], limit])?;
                    // Sized for a full page up front: no regrowth while it fills.
                    let mut page = Vec::with_capacity(limit.min(4096) as usize);
                    while let Some(row) = rows.next()? {
                        page.push(row_to_record(row)?);
                    }
                    Ok(page)
                })
                .await;
            match page {
                Ok(page) if page.is_empty() => None,
                Ok(page) => {
                    let next = (page.len() as i64 == limit)
                        .then(|| page.last().map(|r| (r.id.to_bytes().to_vec(), false)))
                        .flatten();
                    Some((Ok(page), next))
                }
                Err(e) => Some((Err(e), None)),
            }
        })
        .boxed()
    }

    async fn weeks(&self) -> Result<Vec<IsoWeek>, StoreError> {
        let names: Vec<String> = self
            .readers
            .run(|c| {
                let mut stmt = c.prepare_cached("SELECT week FROM weeks ORDER BY week")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect()
            })
            .await?;
        Ok(names.iter().filter_map(|w| IsoWeek::parse(w).ok()).collect())
    }
}

impl SqliteRecordStore {
    /// Queues an insert for the writer: its answer, and its claim.
    #[allow(clippy::type_complexity)]
    fn enqueue(
        &self,
        records: &[Record],
        idempotency: Option<&IdempotencyEntry>,
    ) -> Result<(oneshot::Receiver<Result<InsertOutcome, StoreError>>, Arc<AtomicU8>), StoreError> {
        let (reply, answer) = oneshot::channel();
        let claim = Arc::new(AtomicU8::new(QUEUED));
        let job = WriteJob { records: records.to_vec(), entry: idempotency.cloned(), reply, claim: claim.clone() };
        self.writer.as_ref().ok_or_else(writer_gone)?.send(Job::Insert(job)).map_err(|_| writer_gone())?;
        Ok((answer, claim))
    }

    /// Runs `f` on the writer's connection, between groups, and waits for
    /// its answer. A caller that stopped waiting before its turn came is
    /// not run (as an abandoned insert is not stored).
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        context: &'static str,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.lifecycle(|reply: Reply<T>| {
            Job::Exec(Box::new(move |conn| {
                if !reply.is_closed() {
                    let _ = reply.send(f(conn).map_err(|e| classify(context, e)));
                }
            }))
        })
        .await
    }

    /// Runs `f` on a read connection (which sees every committed write).
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.readers.run(f).await
    }

    /// Sends a lifecycle job to the writer and waits for its answer.
    async fn lifecycle<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer.as_ref().ok_or_else(writer_gone)?.send(job(reply)).map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }
}

/// Records deleted per transaction when a week goes: each step holds the
/// write lock for a few milliseconds, so ingest is never held up for long.
const DELETE_CHUNK: i64 = 2000;
/// Pages (4 KiB) returned to the file system per step after a week went.
const VACUUM_PAGES: u32 = 256;

#[async_trait]
impl RecordLifecycle for SqliteRecordStore {
    async fn restore(&self, records: &[Record]) -> Result<RestoreOutcome, StoreError> {
        let records = records.to_vec();
        self.lifecycle(|reply| Job::Restore { records, reply }).await
    }

    async fn delete(&self, id: RecordId) -> Result<bool, StoreError> {
        self.lifecycle(|reply| Job::Delete { id, reply }).await
    }

    async fn delete_week(&self, week: IsoWeek) -> Result<u64, StoreError> {
        let (from, to) = (RecordId::lower_bound(week.start()).to_bytes(), RecordId::lower_bound(week.end()).to_bytes());
        let mut deleted = 0;
        loop {
            let n = self.lifecycle(|reply| Job::DeleteChunk { from, to, limit: DELETE_CHUNK, reply }).await?;
            deleted += n;
            if n == 0 {
                break;
            }
        }
        self.lifecycle(|reply| Job::ForgetWeek { week, from, to, reply }).await?;
        while self.lifecycle(|reply| Job::Vacuum { pages: VACUUM_PAGES, reply }).await? {}
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::testing::{collect_week, lifecycle_contract, store_contract};

    fn open(dir: &tempfile::TempDir) -> SqliteRecordStore {
        SqliteRecordStore::open(dir.path().join("tally.db"), SqliteOptions::default()).unwrap()
    }

    #[tokio::test]
    async fn sqlite_store_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        store_contract(&open(&dir)).await;
    }

    #[tokio::test]
    async fn sqlite_store_meets_the_lifecycle_contract() {
        let dir = tempfile::tempdir().unwrap();
        lifecycle_contract(&open(&dir)).await;
    }

    #[tokio::test]
    async fn a_deleted_week_gives_its_space_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let week = IsoWeek::parse("2026-W30").unwrap();
        let big = "x".repeat(4000);
        let records: Vec<Record> = (0..2000)
            .map(|i| {
                let at = Timestamp::from_millis(week.start().as_millis() + i);
                Record { id: RecordId::generate(at), received_at: at, data: format!("{{\"pad\":\"{big}\"}}") }
            })
            .collect();
        store.restore(&records).await.unwrap();
        let pages = || -> i64 {
            let c = Connection::open(dir.path().join("tally.db")).unwrap();
            c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap()
        };
        let full = pages();
        assert_eq!(store.delete_week(week).await.unwrap(), 2000);
        let after = pages();
        assert!(after * 10 < full, "{full} pages before, {after} after: the space was not reclaimed");
    }

    #[tokio::test]
    async fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let at = Timestamp::now();
        let r = Record { id: RecordId::generate(at), received_at: at, data: r#"{"kept":true}"#.into() };
        {
            let store = open(&dir);
            store.insert(std::slice::from_ref(&r), None).await.unwrap();
        }
        let store = open(&dir);
        assert_eq!(store.get(r.id).await.unwrap(), Some(r));
        store.integrity_check().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_inserts_are_grouped_and_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(&dir));
        let week = IsoWeek::containing(Timestamp::now());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let at = Timestamp::now();
                    let r = Record { id: RecordId::generate(at), received_at: at, data: format!("{{\"i\":{i}}}") };
                    store.insert(&[r], None).await.unwrap()
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), InsertOutcome::Inserted);
        }
        assert_eq!(store.count().await.unwrap(), 200);
        // Records could straddle a week boundary in a rare run; count both weeks.
        let n = collect_week(store.as_ref(), week, 64).await.len()
            + collect_week(store.as_ref(), week.next(), 64).await.len();
        assert_eq!(n, 200);
    }

    #[tokio::test]
    async fn a_failing_request_does_not_spoil_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(&dir));
        let at = Timestamp::now();
        let r = Record { id: RecordId::generate(at), received_at: at, data: "{}".into() };
        store.insert(std::slice::from_ref(&r), None).await.unwrap();
        // Re-inserting the same id violates the unique index: that request fails alone.
        let other = Record { id: RecordId::generate(at), received_at: at, data: "{\"b\":1}".into() };
        let failing = [other.clone(), r.clone()];
        let fine = [Record { id: RecordId::generate(at), ..r.clone() }];
        let (a, b) = tokio::join!(store.insert(&failing, None), store.insert(&fine, None));
        assert!(a.is_err());
        assert_eq!(b.unwrap(), InsertOutcome::Inserted);
        assert_eq!(store.get(other.id).await.unwrap(), None, "a failed batch must leave nothing behind");
        assert_eq!(store.count().await.unwrap(), 2);
    }
}
