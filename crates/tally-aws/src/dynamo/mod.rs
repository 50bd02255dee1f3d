//! [`RecordStore`] on one DynamoDB table (`pk` S HASH, `sk` S RANGE, TTL on `expires_at`).
//!
//! # Item layout
//! ```text
//! record       pk = D#2026-11-23#07   sk = 01KAQ6ZP4W...   data = "<JSON text as sent>"   received_at = 1763884800123
//! week marker  pk = W                 sk = 2026-W48
//! idempotency  pk = I#<key>           sk = I               fingerprint, received_at, status, response,
//!                                                          expires_at (epoch s, TTL), expires_at_ms, complete
//! week lease   pk = L#2026-W47        sk = L               owner, until, fence, done_from, expires_at (see [`crate::lease`])
//! batch marker pk = B#<batch id>      sk = B               state, at, first, last (see [`crate::batch`])
//! staged record: a record item with `batch = <batch id>`, visible once its marker says committed
//! ```
//! A record's partition is its UTC day plus one of [`SHARDS`] shards picked by
//! hashing the id, so writes spread over 16 partitions per day and
//! `GET /records/{id}` is one GetItem: the ULID gives the day, its hash the shard.
//! Reading a week queries its 7 × 16 partitions and merges them by id; the
//! sort key is the ULID text, whose byte order is the id order.
//!
//! `weeks()` queries the `W` partition: each insert first puts the marker of
//! its week(s) (an idempotent overwrite, cached per process so a warm Lambda
//! writes it once per week), so no Scan is ever needed.
//!
//! # Atomic batches, of any size
//! A batch that fits one `TransactWriteItems` (with its idempotency key, if
//! any: at most [`TRANSACT_LIMIT`] items and [`TRANSACT_MAX_BYTES`]) is one
//! transaction: all or nothing. A single record without a key is one PutItem.
//! A larger batch is written as staged items and made visible by one
//! conditional write of its batch marker ([`crate::batch`]): all or nothing
//! too, for every reader, whatever fails or is killed half-way.
//!
//! # Idempotent batches
//! In a transaction the key's entry is put (complete) with the records, on
//! condition that the key is free (or expired): a taken key cancels the
//! transaction, told apart from throttling or conflicts by its
//! cancellation reasons, and the entry stored is returned.
//!
//! A staged batch claims its key first (conditional put, `complete = false`),
//! then writes its records staged under a batch id derived from the entry,
//! then commits the marker and completes the entry in one transaction. An
//! incomplete entry is invisible to [`RecordStore::idempotency_entry`], so a
//! retry of a request that failed goes on to `insert` and finds the entry with
//! its own fingerprint: while the first attempt may still commit (its marker
//! is not aborted and it started less than the commit window ago) the retry
//! rewrites the same records under their original ids
//! ([`IdempotencyEntry::record_id`]) and the same batch, so both converge on
//! one copy; otherwise it aborts the first attempt's batch, takes the key
//! over (a conditional put) and writes its own records. Either way exactly one
//! copy becomes visible, and a 201 only once it has.
//!
//! # Modules
//! - `layout`: the key scheme (partitions, sort keys, week markers).
//! - `codec`: items to and from records and idempotency entries; SDK errors
//!   to [`StoreError`].
//! - `write`: TransactWriteItems and BatchWriteItem with tally's retries.
//! - `insert`: [`RecordStore::insert`]: plain, transacted and staged batches,
//!   idempotency keys claimed, completed and taken over.
//! - `read`: point reads, batch reads, partition queries and the merged
//!   range scan.
//! - `lifecycle`: [`RecordLifecycle`](tally_core::RecordLifecycle): restore,
//!   delete, delete a week.

mod codec;
mod insert;
mod layout;
mod lifecycle;
mod read;
mod write;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use tally_core::idempotency::{IdempotencyEntry, IdempotencyKey};
use tally_core::ports::{InsertOutcome, RecordPages, RecordStore, StoreError};
use tally_core::retry::RetryPolicy;
use tally_core::{IsoWeek, Record, RecordId, Timestamp};
use tracing::instrument;

use crate::batch::{Marker, batch_of};
pub(crate) use codec::{Item, classify, entry_item, get_n, get_s, millis, n, record_item, s};
use codec::{parse_entry, parse_record};
use layout::WEEKS_PK;
pub use layout::{SHARDS, record_pk};
pub(crate) use layout::{day_pk, week_bounds};
use write::fits_transaction;
pub(crate) use write::{BATCH_CONCURRENCY, BATCH_LIMIT, TxnFailure};
pub use write::{Cancellation, TRANSACT_LIMIT, TRANSACT_MAX_BYTES, cancellation};

/// How long after it started a staged batch may still commit: the HTTP
/// layer's default store timeout, which is also how far behind "now" range
/// reads stop (so no batch commits behind a reader's cursor).
pub const COMMIT_WINDOW: Duration = Duration::from_secs(10);

/// tally's records and idempotency keys in a DynamoDB table.
#[derive(Debug)]
pub struct DynamoDbRecordStore {
    client: Client,
    table: String,
    retry: RetryPolicy,
    pub(crate) commit_window: Duration,
    /// Weeks whose marker this process has already written.
    marked: Mutex<HashSet<IsoWeek>>,
}

impl DynamoDbRecordStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            retry: RetryPolicy::default(),
            commit_window: COMMIT_WINDOW,
            marked: Mutex::default(),
        }
    }

    /// Overrides how long unprocessed batch items, unread keys and cancelled
    /// transactions are retried (what the SDK's own retries do not cover).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Overrides [`COMMIT_WINDOW`]; keep it at most the store timeout of the
    /// HTTP layer in front.
    pub fn with_commit_window(mut self, window: Duration) -> Self {
        self.commit_window = window;
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    fn marked(&self) -> std::sync::MutexGuard<'_, HashSet<IsoWeek>> {
        self.marked.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl RecordStore for DynamoDbRecordStore {
    #[instrument(skip_all, fields(table = %self.table, records = records.len(), idempotent = idempotency.is_some()))]
    async fn insert(
        &self,
        records: &[Record],
        idempotency: Option<&IdempotencyEntry>,
    ) -> Result<InsertOutcome, StoreError> {
        let Some(entry) = idempotency else {
            self.write_records(records).await?;
            return Ok(InsertOutcome::Inserted);
        };
        if fits_transaction(records, 1, entry.response.len() + 256) {
            self.insert_transacted(records, entry).await
        } else {
            self.insert_staged(records, entry).await
        }
    }

    #[instrument(skip_all, fields(table = %self.table))]
    async fn idempotency_entry(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyEntry>, StoreError> {
        let Some(item) = self.get_entry_item(key).await? else { return Ok(None) };
        let (entry, complete) = parse_entry(key, &item)?;
        // Incomplete entries stay hidden so that a retry reaches `insert` and finishes the write.
        Ok((complete && entry.expires_at > Timestamp::now()).then_some(entry))
    }

    /// One GetItem; a staged record also reads its batch's marker and is
    /// there only if the batch committed.
    #[instrument(skip_all, fields(table = %self.table, id = %id))]
    async fn get(&self, id: RecordId) -> Result<Option<Record>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(record_pk(id)))
            .key("sk", s(id.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem", e))?;
        let Some(item) = out.item else { return Ok(None) };
        let record = parse_record(&item)?;
        match batch_of(&item)? {
            None => Ok(Some(record)),
            Some(batch) => Ok(Marker::visible_as_of(self.marker(batch).await?, i64::MAX).then_some(record)),
        }
    }

    fn scan_range(&self, from: RecordId, to: RecordId, page_size: usize) -> RecordPages<'_> {
        self.scan_pages(from, to, page_size)
    }

    #[instrument(skip_all, fields(table = %self.table))]
    async fn weeks(&self) -> Result<Vec<IsoWeek>, StoreError> {
        let mut weeks = self
            .sort_keys(WEEKS_PK)
            .await?
            .iter()
            .map(|sk| IsoWeek::parse(sk).map_err(|e| StoreError::internal("a week marker is not an ISO week", e)))
            .collect::<Result<Vec<_>, _>>()?;
        weeks.sort();
        weeks.dedup();
        Ok(weeks)
    }
}
