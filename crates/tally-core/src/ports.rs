//! Ports: the traits the domain needs from the outside world.
//!
//! Adapters implement them — SQLite and a directory locally (`tally-local`),
//! DynamoDB and S3 in AWS (`tally-aws`), memory in tests ([`crate::testing`]).
//! Every adapter must pass the same contract tests.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::clock::Timestamp;
use crate::id::RecordId;
use crate::idempotency::{IdempotencyEntry, IdempotencyKey};
use crate::record::Record;
use crate::summary::Notification;
use crate::week::IsoWeek;

/// A boxed error from an adapter's underlying library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store operation failed. Neither variant is the client's fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not commit or answer now (busy, throttled, disk full,
    /// read-only, timed out); the client should retry after `retry_after`.
    #[error("the record store is unavailable: {message}")]
    Unavailable {
        message: String,
        retry_after: Duration,
        #[source]
        source: Option<BoxError>,
    },
    /// Anything else: a bug, corrupt data, a misconfiguration.
    #[error("record store failure: {message}")]
    Internal {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
}

impl StoreError {
    pub fn unavailable(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Unavailable { message: message.into(), retry_after: Duration::from_secs(1), source: Some(source.into()) }
    }

    pub fn internal(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Internal { message: message.into(), source: Some(source.into()) }
    }

    /// What [`RecordStore::insert_until`] answers when its caller gave up
    /// before the write started committing.
    pub fn gave_up() -> Self {
        Self::Unavailable {
            message: "no answer within the caller's time limit; the write was withdrawn before it was committed".into(),
            retry_after: Duration::from_secs(1),
            source: None,
        }
    }
}

/// Completes when a caller stops waiting (its time limit is up): see
/// [`RecordStore::insert_until`].
pub type GiveUp<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// What [`RecordStore::insert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Every record is durable.
    Inserted,
    /// The idempotency key was already taken: nothing new was written, and
    /// this is the entry stored with it (which may carry another fingerprint).
    KeyExists(IdempotencyEntry),
}

/// Pages of one week's records in `(received_at, id)` order — which, since an
/// id's timestamp is its `received_at`, is id order.
pub type RecordPages<'a> = BoxStream<'a, Result<Vec<Record>, StoreError>>;

/// Durable storage for records and idempotency keys.
#[async_trait]
pub trait RecordStore: Send + Sync + std::fmt::Debug {
    /// Stores `records` all-or-nothing and returns only once they are durable.
    ///
    /// With `idempotency`, the key is claimed in the same commit: if the key
    /// already exists (and has not expired), nothing is written and the
    /// existing entry is returned. A retried idempotent request carries the
    /// same deterministic ids ([`RecordId::deterministic`]), so an adapter
    /// that cannot commit atomically converges by rewriting the same items.
    async fn insert(
        &self,
        records: &[Record],
        idempotency: Option<&IdempotencyEntry>,
    ) -> Result<InsertOutcome, StoreError>;

    /// [`insert`](Self::insert) for a caller with a time limit, which
    /// `give_up` completes. An error then always means that nothing of the
    /// call is stored, ever, so the caller may say so (an HTTP 503):
    /// - `give_up` completing before the write has started committing
    ///   withdraws it: nothing is written, and the answer is
    ///   [`StoreError::gave_up`];
    /// - once the write is committing, `give_up` is ignored and the answer is
    ///   the commit's, however long it takes: a caller never reports as
    ///   failed a write that is stored.
    ///
    /// The default races [`insert`](Self::insert) against `give_up` and drops
    /// it when `give_up` wins: right only for an adapter whose insert, once
    /// dropped, stores nothing (memory: it completes on its first poll; a
    /// decorator forwarding to an adapter that overrides this method must
    /// override it too). The SQLite store overrides it.
    async fn insert_until(
        &self,
        records: &[Record],
        idempotency: Option<&IdempotencyEntry>,
        give_up: GiveUp<'_>,
    ) -> Result<InsertOutcome, StoreError> {
        match futures::future::select(self.insert(records, idempotency), give_up).await {
            futures::future::Either::Left((outcome, _)) => outcome,
            futures::future::Either::Right(((), _)) => Err(StoreError::gave_up()),
        }
    }

    /// The entry stored for `key`, if it exists and has not expired.
    async fn idempotency_entry(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyEntry>, StoreError>;

    /// One record by id.
    async fn get(&self, id: RecordId) -> Result<Option<Record>, StoreError>;

    /// Streams the records with `from <= id < to`, touching no data outside
    /// that range's days, in pages of at most `page_size`, ordered by id.
    /// Memory use must not grow with the size of the range.
    fn scan_range(&self, from: RecordId, to: RecordId, page_size: usize) -> RecordPages<'_>;

    /// [`scan_range`](Self::scan_range) over the ids of `week`.
    fn scan_week(&self, week: IsoWeek, page_size: usize) -> RecordPages<'_> {
        self.scan_range(RecordId::lower_bound(week.start()), RecordId::lower_bound(week.end()), page_size)
    }

    /// Weeks that hold at least one record, ascending. Used to catch up
    /// missed summaries on start-up.
    async fn weeks(&self) -> Result<Vec<IsoWeek>, StoreError>;
}

/// What [`RecordLifecycle::restore`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreOutcome {
    /// `inserted` records were written; `present` were already stored with
    /// the same `received_at` and data, and were left alone.
    Restored { inserted: usize, present: usize },
    /// This id is stored with other content: nothing of the call was written.
    Conflict(RecordId),
}

/// The data lifecycle beyond ingest: restoring records under their own ids,
/// erasing one record, deleting a week (retention). A separate port from
/// [`RecordStore`] because only the stores (not every decorator or test
/// double of the ingest path) need it.
#[async_trait]
pub trait RecordLifecycle: RecordStore {
    /// Stores `records` with their own ids and `received_at` (an import or a
    /// restore from an export). Ids already stored with the same
    /// `received_at` and data are skipped, so restoring twice adds nothing.
    /// Conflicts are checked before anything is written: if an id is stored
    /// with other content, nothing is written and that id is returned.
    /// The writes of one call need not be atomic: after an error some may be
    /// stored, and calling again with the same records converges.
    async fn restore(&self, records: &[Record]) -> Result<RestoreOutcome, StoreError>;

    /// Erases one record; `false` when no record had that id.
    async fn delete(&self, id: RecordId) -> Result<bool, StoreError>;

    /// Deletes every record of `week` and its entry in [`RecordStore::weeks`];
    /// returns how many records went. It may work in several steps so that
    /// ingest is never blocked for long: after an error a prefix of the week
    /// may be gone, and calling again finishes the job.
    async fn delete_week(&self, week: IsoWeek) -> Result<u64, StoreError>;

    /// Clears what writes that never committed left in `week` (as of `now`)
    /// before a run reads it — on DynamoDB, the staged items of a batch
    /// abandoned mid-way; returns how many items went. Readers already
    /// ignore such items: this only frees their storage. Stores whose writes
    /// are atomic have nothing to clear.
    async fn clear_abandoned(&self, week: IsoWeek, now: crate::clock::Timestamp) -> Result<u64, StoreError> {
        let _ = (week, now);
        Ok(0)
    }
}

/// Asks for a week's summary to be rewritten soon (after an erasure changed
/// its records), and remembers the request until the rewrite is done:
/// locally a queue the server's refresher drains, on AWS an object whose
/// creation starts the weekly function. `testing::refresh_contract`
/// (feature `testing`) is the behaviour every adapter shows.
#[async_trait]
pub trait WeekRefresh: Send + Sync + std::fmt::Debug {
    /// Asks for `week` to be rewritten. Returns once the request is durable
    /// (or queued), not when the summary is rewritten. A week asked for
    /// again before it is done is still one pending request (and may be
    /// rewritten once).
    async fn request(&self, week: IsoWeek) -> Result<(), SinkError>;

    /// Weeks asked for and not yet [`done`](Self::done), ascending, each once.
    async fn pending(&self) -> Result<Vec<IsoWeek>, SinkError>;

    /// Withdraws `week`'s request once the week is rewritten; nothing
    /// happens when it has none. A request made while that rewrite ran is
    /// withdrawn with it: what keeps such a request from being lost is the
    /// trigger each request makes (the S3 object's event, the local queue's
    /// message), not `pending`.
    async fn done(&self, week: IsoWeek) -> Result<(), SinkError>;
}

/// Why a sink operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("the summary bucket is unavailable: {message}")]
    Unavailable {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    #[error("summary bucket failure: {message}")]
    Internal {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
}

impl SinkError {
    pub fn internal(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Internal { message: message.into(), source: Some(source.into()) }
    }
}

/// An object written to the bucket, as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectInfo {
    /// Full key, e.g. `summaries/2026-W47/summary.json`.
    pub key: String,
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the object's bytes.
    pub sha256: String,
}

/// Checks that `name` is an object name a [`SummarySink`] accepts: one path
/// component of ASCII letters, digits, `.`, `-` and `_` that does not start
/// with `.` (the folder sink's temp files do). Every adapter refuses any
/// other name with [`SinkError::Internal`] before touching anything: object
/// names are chosen by tally, so a bad one is a bug, and refusing it keeps a
/// key from escaping its week (`..`, `/`) or colliding with a temp file.
pub fn check_object_name(name: &str) -> Result<(), SinkError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(SinkError::Internal { message: format!("invalid object name {name:?}"), source: None })
    }
}

/// Where weekly summaries go: a folder locally, an S3 bucket in AWS. Objects
/// of week `W` live under `summaries/W/`.
///
/// A run calls [`begin_week`](Self::begin_week), writes its objects, then
/// [`commit_week`](Self::commit_week) with the manifest. Readers trust only
/// weeks with a manifest; a failed run leaves none and no partial object.
///
/// Object names (`name`) must pass [`check_object_name`]; every method
/// taking one refuses any other. `testing::sink_contract` (feature `testing`) is the
/// behaviour every adapter shows.
#[async_trait]
pub trait SummarySink: Send + Sync + std::fmt::Debug {
    /// Marks the week as being (re)written: removes its manifest, if any.
    async fn begin_week(&self, week: IsoWeek) -> Result<(), SinkError>;

    /// Writes a whole object; it appears complete or not at all.
    async fn put_object(
        &self,
        week: IsoWeek,
        name: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<ObjectInfo, SinkError>;

    /// Starts a streamed upload of a large object.
    async fn open_object(
        &self,
        week: IsoWeek,
        name: &str,
        content_type: &str,
    ) -> Result<Box<dyn ObjectUpload>, SinkError>;

    /// Writes `manifest.json`, last: the week is then complete.
    async fn commit_week(&self, week: IsoWeek, manifest: Bytes) -> Result<ObjectInfo, SinkError>;

    /// Reads an object of a week, `None` if absent.
    async fn read_object(&self, week: IsoWeek, name: &str) -> Result<Option<Bytes>, SinkError>;

    /// Deletes an object of a week; deleting an absent object succeeds.
    /// (The fan-out's part states, once merged.)
    async fn delete_object(&self, week: IsoWeek, name: &str) -> Result<(), SinkError>;

    /// Weeks with a manifest, ascending.
    async fn list_weeks(&self) -> Result<Vec<IsoWeek>, SinkError>;

    /// Writes `name` beside the week folders (`summaries/index.html`),
    /// atomically replacing the old object.
    async fn put_index(&self, name: &str, content_type: &str, body: Bytes) -> Result<ObjectInfo, SinkError>;

    /// Where a person opens object `name` of `week` (the report a
    /// notification points to): locally the file's absolute path; on S3 a
    /// pre-signed HTTPS `GET` URL that is valid for 7 days (SigV4's longest).
    ///
    /// A pre-signed URL is only as good as the credentials that signed it:
    /// one signed with temporary credentials — a Lambda function's role,
    /// an SSO or assumed-role session — stops working when those credentials
    /// expire, which is usually hours, not 7 days.
    /// Makes no request; does not check that the object exists.
    async fn share_link(&self, week: IsoWeek, name: &str) -> Result<String, SinkError>;
}

/// A streamed object upload: nothing is visible until [`finish`](Self::finish);
/// [`abort`](Self::abort) (or an error) leaves nothing behind.
#[async_trait]
pub trait ObjectUpload: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<(), SinkError>;
    async fn finish(self: Box<Self>) -> Result<ObjectInfo, SinkError>;
    async fn abort(self: Box<Self>) -> Result<(), SinkError>;
}

/// Why a notification was not delivered, and whether another attempt may
/// succeed. The message never holds a secret (a webhook URL's path or
/// token, a signing key) nor the notification's body.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Worth another attempt: network trouble, a timeout, the receiver busy
    /// or failing (HTTP 429, 5xx), throttling.
    #[error("{message}")]
    Retryable {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// Another attempt would get the same answer: the receiver refused the
    /// message (HTTP 4xx), the topic does not exist, access is denied.
    #[error("{message}")]
    Final {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
}

impl NotifyError {
    pub fn retryable(message: impl Into<String>, source: Option<BoxError>) -> Self {
        Self::Retryable { message: message.into(), source }
    }

    pub fn final_(message: impl Into<String>, source: Option<BoxError>) -> Self {
        Self::Final { message: message.into(), source }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable { .. })
    }
}

/// Tells someone that a week's report is written: a webhook locally and on
/// AWS, an SNS topic (e-mail) on AWS. [`crate::summary::notify::announce`]
/// calls every configured notifier after each weekly run and owns the
/// retries, so `deliver` makes one attempt (bounded in time) and says
/// whether another is worth it.
#[async_trait]
pub trait Notifier: Send + Sync + std::fmt::Debug {
    /// A short name for logs, e.g. `webhook` or `sns`.
    fn name(&self) -> &'static str;

    /// One delivery attempt.
    async fn deliver(&self, notification: &Notification) -> Result<(), NotifyError>;
}

/// One week's lock, as [`WeekLock::try_acquire`] hands it to the run that
/// took it. The run passes it back to [`renew`](WeekLock::renew),
/// [`check`](WeekLock::check) and [`release`](WeekLock::release).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeekLease {
    pub week: IsoWeek,
    /// Who holds it, for messages: e.g. `tally summarize (pid 4242)`.
    pub holder: String,
    /// The fencing token: greater than the token of every earlier lease of
    /// the week, so a lease is current only while the lock still carries it.
    pub token: u64,
    /// Held until then (inclusive), unless renewed.
    pub until: Timestamp,
    /// When the last run of the week that completed started (the
    /// `done_from` of an earlier [`release`](WeekLock::release)), if the
    /// lock remembers one: a run triggered by a request made before that
    /// time has nothing left to do.
    pub done_from: Option<Timestamp>,
}

/// What [`WeekLock::try_acquire`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The lock was free (or its holder's time was up): it is this run's now.
    Taken(WeekLease),
    /// Another run holds the week until `until`.
    Held { holder: String, until: Timestamp },
}

/// Mutual exclusion of the runs of one week, across tasks, processes and
/// machines: SQLite in the records' own database file (processes on one
/// machine), a DynamoDB item beside the records (every Lambda invocation and
/// `tally --store dynamodb`), memory in tests.
///
/// - **Exclusion**: while a lease is held (`now <= until`), `try_acquire`
///   of its week answers [`Acquired::Held`], whoever asks.
/// - **Expiry**: a holder that dies stops renewing; once `now > until`
///   anyone may take the week.
/// - **Fencing**: every `try_acquire` that succeeds gets a token greater
///   than all before it for that week. [`check`](Self::check) and
///   [`renew`](Self::renew) succeed only while the lock still carries the
///   lease's token and has not expired, so a holder that outlived its lease
///   learns so before it writes (the summary's sink is wrapped to check
///   before every write, see `summary::locked`).
/// - **Release** frees the week at once, and with `done_from` records when
///   the run that completed started; a lease lost meanwhile changes nothing.
///
/// Times are passed in, never read from a clock, so the contract
/// (`testing::lock_contract`) can move them; every adapter compares them
/// with what it stored, nothing else.
#[async_trait]
pub trait WeekLock: Send + Sync + std::fmt::Debug {
    /// Takes `week`'s lock until `now + ttl` if it is free or expired.
    async fn try_acquire(
        &self,
        week: IsoWeek,
        holder: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Acquired, StoreError>;

    /// Extends a held lease to `now + ttl` (updating `lease.until`);
    /// `false`, changing nothing, when it was lost: expired, or taken since.
    async fn renew(&self, lease: &mut WeekLease, now: Timestamp, ttl: Duration) -> Result<bool, StoreError>;

    /// Whether `lease` is still held at `now`: the lock carries its token
    /// and has not expired.
    async fn check(&self, lease: &WeekLease, now: Timestamp) -> Result<bool, StoreError>;

    /// Gives the lease back; with `done_from` (the run completed), records
    /// when that run started. `false` when another run has taken the week
    /// since: its lock is left alone (and `done_from` not recorded). A
    /// lease that expired but was not taken is released as if it had not.
    async fn release(&self, lease: WeekLease, done_from: Option<Timestamp>, now: Timestamp)
    -> Result<bool, StoreError>;
}
