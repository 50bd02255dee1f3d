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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, DeleteRequest, KeysAndAttributes, Put, PutRequest, ReturnValue,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, WriteRequest,
};
use futures::{StreamExt, TryStreamExt};
use tally_core::idempotency::{Fingerprint, IdempotencyEntry, IdempotencyKey};
use tally_core::ports::{InsertOutcome, RecordLifecycle, RecordPages, RecordStore, RestoreOutcome, StoreError};
use tally_core::retry::{RetryPolicy, retry};
use tally_core::{IsoWeek, Record, RecordId, Timestamp};
use time::Date;
use tracing::{Instrument, instrument};

use crate::batch::{BATCH_ATTR, Marker, Settled, batch_of, now_micros};

/// Shards per day. Changing it orphans existing data: it is part of the key.
pub const SHARDS: u16 = 16;
/// BatchWriteItem's limit.
pub(crate) const BATCH_LIMIT: usize = 25;
/// TransactWriteItems' item limit: batches up to this size (idempotency key
/// included) commit in one transaction; larger ones are staged.
pub const TRANSACT_LIMIT: usize = 100;
/// TransactWriteItems' 4 MB request limit, with room for keys and attribute names.
pub const TRANSACT_MAX_BYTES: usize = 3 * 1024 * 1024;
/// Chunks of a batch written concurrently.
pub(crate) const BATCH_CONCURRENCY: usize = 8;
/// How long after it started a staged batch may still commit: the HTTP
/// layer's default store timeout, which is also how far behind "now" range
/// reads stop (so no batch commits behind a reader's cursor).
pub const COMMIT_WINDOW: Duration = Duration::from_secs(10);
const WEEKS_PK: &str = "W";
const KEY_SK: &str = "I";

pub(crate) type Item = HashMap<String, AttributeValue>;

/// The partition key of a record: `D#<UTC day>#<shard>`.
pub fn record_pk(id: RecordId) -> String {
    day_pk(id.timestamp().to_datetime().date(), id.shard(SHARDS))
}

pub(crate) fn day_pk(day: Date, shard: u16) -> String {
    format!("D#{:04}-{:02}-{:02}#{shard:02}", day.year(), u8::from(day.month()), day.day())
}

fn key_pk(key: &IdempotencyKey) -> String {
    format!("I#{}", key.as_str())
}

/// The sort-key bounds (both inclusive) of `week`'s records.
pub(crate) fn week_bounds(week: IsoWeek) -> (String, String) {
    let (from, to) = (RecordId::lower_bound(week.start()), RecordId::lower_bound(week.end()));
    (from.to_string(), to.previous().unwrap_or(from).to_string())
}

/// Whether `records` (plus `extra` items of at most `extra_bytes`) fit one transaction.
fn fits_transaction(records: &[Record], extra: usize, extra_bytes: usize) -> bool {
    let bytes: usize = records.iter().map(|r| r.data.len() + 64).sum::<usize>() + extra_bytes;
    records.len() + extra <= TRANSACT_LIMIT && bytes <= TRANSACT_MAX_BYTES
}

/// What a `TransactWriteItems` cancellation asks for, by its reasons' codes
/// (one per item, in request order; `None` for items that were fine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancellation {
    /// The conditions of these items (indices into the request) failed: a
    /// domain answer (e.g. the idempotency key is taken), not a fault.
    ConditionFailed(Vec<usize>),
    /// A conflicting transaction or throttling of an item: worth another try.
    /// The SDK does not retry cancellations, so the adapter does.
    Transient,
    /// Anything else (validation, item collection too large, no reasons):
    /// retrying would fail the same way.
    Fatal,
}

/// Classifies a cancellation by its reasons' codes — never by its message,
/// whose wording is not part of DynamoDB's API.
pub fn cancellation(reasons: &[CancellationReason]) -> Cancellation {
    let codes: Vec<&str> = reasons.iter().map(|r| r.code().unwrap_or("None")).collect();
    let failed: Vec<usize> =
        codes.iter().enumerate().filter(|(_, c)| **c == "ConditionalCheckFailed").map(|(i, _)| i).collect();
    if !failed.is_empty() {
        return Cancellation::ConditionFailed(failed);
    }
    let transient = |c: &str| {
        matches!(
            c,
            "TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded" | "RequestLimitExceeded"
        )
    };
    if codes.iter().all(|c| *c == "None" || transient(c)) && codes.iter().any(|c| transient(c)) {
        Cancellation::Transient
    } else {
        Cancellation::Fatal
    }
}

fn cancellation_of<R>(err: &SdkError<TransactWriteItemsError, R>) -> Option<Cancellation> {
    match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(c)) => Some(cancellation(c.cancellation_reasons())),
        _ => None,
    }
}

/// Why a transaction did not commit.
#[derive(Debug)]
pub(crate) enum TxnFailure {
    /// These items' conditions failed (indices into the request).
    ConditionFailed(Vec<usize>),
    /// Anything else, classified for the client.
    Store(StoreError),
}

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

    /// Puts the `W` marker of every week of `records` not yet marked by this process.
    async fn mark_weeks(&self, records: &[Record]) -> Result<(), StoreError> {
        let mut weeks: Vec<IsoWeek> = records.iter().map(|r| IsoWeek::containing(r.received_at)).collect();
        weeks.sort();
        weeks.dedup();
        weeks.retain(|w| !self.marked().contains(w));
        for week in weeks {
            self.client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(WEEKS_PK))
                .item("sk", s(week.to_string()))
                .send()
                .await
                .map_err(|e| classify("PutItem (week marker)", e))?;
            self.marked().insert(week);
        }
        Ok(())
    }

    /// Writes a batch without an idempotency key, all or nothing.
    async fn write_records(&self, records: &[Record]) -> Result<(), StoreError> {
        self.mark_weeks(records).await?;
        if let [record] = records {
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(record_item(record)))
                .send()
                .await
                .map_err(|e| classify("PutItem", e))?;
            return Ok(());
        }
        if fits_transaction(records, 0, 0) {
            let items = records.iter().map(|r| self.txn_put(record_item(r), None)).collect::<Result<_, _>>()?;
            return self.transact(items).await.map_err(|e| match e {
                TxnFailure::ConditionFailed(_) => StoreError::Internal {
                    message: "a transaction without conditions failed a condition".into(),
                    source: None,
                },
                TxnFailure::Store(e) => e,
            });
        }
        self.write_staged(records, RecordId::generate(Timestamp::now()), None).await
    }

    /// One transaction item: a put of `item`, under `condition` if given.
    fn txn_put(&self, item: Item, condition: Option<EntryCondition>) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder().table_name(&self.table).set_item(Some(item));
        let put = match condition {
            None => put,
            Some(EntryCondition::Free { now_s }) => put
                .condition_expression("attribute_not_exists(pk) OR expires_at < :now")
                .expression_attribute_values(":now", n(now_s)),
            Some(EntryCondition::Incomplete { received_at }) => put
                .condition_expression("#complete = :false AND received_at = :received")
                .expression_attribute_names("#complete", "complete")
                .expression_attribute_values(":false", AttributeValue::Bool(false))
                .expression_attribute_values(":received", n(received_at.as_millis())),
        };
        put.build()
            .map(|put| TransactWriteItem::builder().put(put).build())
            .map_err(|e| StoreError::internal("could not build a DynamoDB transaction item", e))
    }

    /// One TransactWriteItems. Throttling of the request itself is retried by
    /// the SDK; a cancellation whose reasons are conflicts or throttling of
    /// items (which the SDK does not retry) is retried here with backoff.
    pub(crate) async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), TxnFailure> {
        let sent = retry(
            &self.retry,
            || self.client.transact_write_items().set_transact_items(Some(items.clone())).send(),
            |e| cancellation_of(e) == Some(Cancellation::Transient),
            |e, attempt| {
                if attempt.next_in.is_some() {
                    tracing::debug!(attempt = attempt.number, next_in = ?attempt.next_in, code = ?e.code(), "transaction cancelled; retrying");
                }
            },
        )
        .await;
        let err = match sent {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        match cancellation_of(&err) {
            Some(Cancellation::ConditionFailed(items)) => Err(TxnFailure::ConditionFailed(items)),
            Some(Cancellation::Transient) => {
                tracing::warn!("DynamoDB kept cancelling a transaction (conflicts or throttling); giving up");
                Err(TxnFailure::Store(StoreError::Unavailable {
                    message: format!(
                        "DynamoDB kept cancelling the batch's transaction after {} attempts",
                        self.retry.max_attempts
                    ),
                    retry_after: Duration::from_secs(1),
                    source: Some(Box::new(err)),
                }))
            }
            Some(Cancellation::Fatal) | None => Err(TxnFailure::Store(classify("TransactWriteItems", err))),
        }
    }

    /// One BatchWriteItem (puts or deletes, at most [`BATCH_LIMIT`]),
    /// re-sending `UnprocessedItems` with backoff until they are all written
    /// or the retry policy gives up. Throttling of the whole request is
    /// retried by the SDK, not here.
    pub(crate) async fn send_batch(&self, requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        let pending = Mutex::new(requests);
        let pending = &pending;
        let sent = retry(
            &self.retry,
            || async move {
                let requests = std::mem::take(&mut *lock(pending));
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(|e| Leftover::Failed(classify("BatchWriteItem", e)))?;
                let left = out.unprocessed_items.and_then(|mut m| m.remove(&self.table)).unwrap_or_default();
                if left.is_empty() {
                    return Ok(());
                }
                let count = left.len();
                *lock(pending) = left;
                Err(Leftover::Unprocessed(count))
            },
            |e| matches!(e, Leftover::Unprocessed(_)),
            |e, attempt| {
                if let (Leftover::Unprocessed(count), Some(delay)) = (e, attempt.next_in) {
                    tracing::debug!(
                        unprocessed = count,
                        attempt = attempt.number,
                        ?delay,
                        "retrying unprocessed items"
                    );
                }
            },
        )
        .await;
        match sent {
            Ok(()) => Ok(()),
            Err(Leftover::Failed(e)) => Err(e),
            Err(Leftover::Unprocessed(count)) => {
                tracing::warn!(unprocessed = count, "BatchWriteItem still throttled; giving up");
                Err(StoreError::Unavailable {
                    message: format!(
                        "DynamoDB left {count} items unprocessed after {} attempts (throughput exceeded)",
                        self.retry.max_attempts
                    ),
                    retry_after: Duration::from_secs(1),
                    source: None,
                })
            }
        }
    }

    /// Claims `entry.key` (as incomplete). `Ok(None)` if claimed, else the
    /// entry already in the table and whether it is complete.
    async fn claim(&self, entry: &IdempotencyEntry) -> Result<Option<(IdempotencyEntry, bool)>, StoreError> {
        let now_s = Timestamp::now().as_millis().div_euclid(1000);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(entry_item(entry, false)))
            // TTL deletion lags by up to days: an expired entry counts as absent.
            .condition_expression("attribute_not_exists(pk) OR expires_at < :now")
            .expression_attribute_values(":now", n(now_s))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(None),
            Err(SdkError::ServiceError(e)) if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) => {
                let old = match e.into_err() {
                    PutItemError::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                };
                let old = match old {
                    Some(item) => Some(item),
                    // Emulators may not return the old item; read it.
                    None => self.get_entry_item(&entry.key).await?,
                };
                match old {
                    Some(item) => Ok(Some(parse_entry(&entry.key, &item)?)),
                    None => Err(vanished()),
                }
            }
            Err(e) => Err(classify("PutItem (idempotency key)", e)),
        }
    }

    /// Replaces `old` (incomplete, its batch aborted) with `new`, incomplete:
    /// the retry takes the key over.
    async fn take_over(&self, old: &IdempotencyEntry, new: &IdempotencyEntry) -> Result<(), StoreError> {
        let now_s = Timestamp::now().as_millis().div_euclid(1000);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(entry_item(new, false)))
            .condition_expression(
                "attribute_not_exists(pk) OR expires_at < :now OR (#complete = :false AND received_at = :received)",
            )
            .expression_attribute_names("#complete", "complete")
            .expression_attribute_values(":now", n(now_s))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":received", n(old.received_at.as_millis()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Err(StoreError::Unavailable {
                    message: "another attempt of this request took its idempotency key over first; retry".into(),
                    retry_after: Duration::from_secs(1),
                    source: None,
                })
            }
            Err(e) => Err(classify("PutItem (take an idempotency key over)", e)),
        }
    }

    async fn get_entry_item(&self, key: &IdempotencyKey) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(key_pk(key)))
            .key("sk", s(KEY_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem (idempotency key)", e))?;
        Ok(out.item)
    }

    /// A batch with a key that fits one transaction: the records and the
    /// completed entry, on condition that the key is free.
    async fn insert_transacted(
        &self,
        records: &[Record],
        entry: &IdempotencyEntry,
    ) -> Result<InsertOutcome, StoreError> {
        self.mark_weeks(records).await?;
        let now_s = Timestamp::now().as_millis().div_euclid(1000);
        let mut items = vec![self.txn_put(entry_item(entry, true), Some(EntryCondition::Free { now_s }))?];
        for r in records {
            items.push(self.txn_put(record_item(r), None)?);
        }
        match self.transact(items).await {
            Ok(()) => return Ok(InsertOutcome::Inserted),
            Err(TxnFailure::ConditionFailed(failed)) if failed == [0] => {}
            Err(TxnFailure::ConditionFailed(_)) => {
                return Err(StoreError::Internal {
                    message: "a record put without a condition failed one".into(),
                    source: None,
                });
            }
            Err(TxnFailure::Store(e)) => return Err(e),
        }
        // The key is taken.
        let item = self.get_entry_item(&entry.key).await?.ok_or_else(vanished)?;
        let (existing, complete) = parse_entry(&entry.key, &item)?;
        if complete || existing.fingerprint != entry.fingerprint {
            return Ok(InsertOutcome::KeyExists(existing));
        }
        // Incomplete with this very request's fingerprint: left by tally 0.1,
        // which claimed keys before writing. Finish it under its original ids.
        tracing::info!("completing an interrupted idempotent request");
        let rebased = rebase(records, &existing);
        let mut items = vec![self.txn_put(
            entry_item(&existing, true),
            Some(EntryCondition::Incomplete { received_at: existing.received_at }),
        )?];
        for r in &rebased {
            items.push(self.txn_put(record_item(r), None)?);
        }
        match self.transact(items).await {
            Ok(()) => Ok(InsertOutcome::KeyExists(existing)),
            Err(TxnFailure::ConditionFailed(_)) => Err(StoreError::Unavailable {
                message: "another attempt of this request completed or took over its idempotency key; retry".into(),
                retry_after: Duration::from_secs(1),
                source: None,
            }),
            Err(TxnFailure::Store(e)) => Err(e),
        }
    }

    /// A batch with a key too large for one transaction: claim, stage, commit.
    async fn insert_staged(&self, records: &[Record], entry: &IdempotencyEntry) -> Result<InsertOutcome, StoreError> {
        self.mark_weeks(records).await?;
        let existing = match self.claim(entry).await? {
            None => {
                self.write_staged(records, entry.record_id(0), Some(entry)).await?;
                return Ok(InsertOutcome::Inserted);
            }
            Some((existing, true)) => return Ok(InsertOutcome::KeyExists(existing)),
            Some((existing, false)) if existing.fingerprint != entry.fingerprint => {
                return Ok(InsertOutcome::KeyExists(existing));
            }
            Some((existing, false)) => existing,
        };
        // An earlier attempt of this very request claimed the key and did not
        // finish (or is still running).
        let batch = existing.record_id(0);
        let window = i64::try_from(self.commit_window.as_millis()).unwrap_or(i64::MAX);
        let may_commit = Timestamp::now().as_millis() < existing.received_at.as_millis().saturating_add(window);
        if may_commit && self.marker(batch).await? != Some(Marker::Aborted) {
            // It may still commit: write the same records into the same
            // batch, so whichever attempt commits, one copy shows.
            tracing::info!("completing an interrupted idempotent request");
            let rebased = rebase(records, &existing);
            self.mark_weeks(&rebased).await?;
            self.write_staged(&rebased, batch, Some(&existing)).await?;
            return Ok(InsertOutcome::KeyExists(existing));
        }
        // It never will: make sure of that, then take the key over.
        if self.abort(batch).await? == Settled::Committed {
            return Ok(InsertOutcome::KeyExists(existing));
        }
        tracing::info!("taking over the idempotency key of an abandoned attempt");
        self.take_over(&existing, entry).await?;
        self.write_staged(records, entry.record_id(0), Some(entry)).await?;
        Ok(InsertOutcome::Inserted)
    }

    /// One page of one day-shard partition, sort keys from `bounds.0` to
    /// `bounds.1` inclusive, staged items with their batch.
    async fn query_page(
        &self,
        pk: &str,
        bounds: &(String, String),
        start: Option<Item>,
        limit: usize,
    ) -> Result<(Vec<(Record, Option<RecordId>)>, Option<Item>), StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":lo", s(bounds.0.clone()))
            .expression_attribute_values(":hi", s(bounds.1.clone()))
            .projection_expression("sk, #d, received_at, #b")
            .expression_attribute_names("#d", "data")
            .expression_attribute_names("#b", BATCH_ATTR)
            .consistent_read(true)
            .limit(i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| classify("Query", e))?;
        let records = out
            .items
            .unwrap_or_default()
            .iter()
            .map(|item| Ok((parse_record(item)?, batch_of(item)?)))
            .collect::<Result<_, StoreError>>()?;
        Ok((records, out.last_evaluated_key.filter(|k| !k.is_empty())))
    }
}

/// The condition on an idempotency entry put in a transaction.
#[derive(Debug, Clone, Copy)]
enum EntryCondition {
    /// The key is free, or its entry expired.
    Free { now_s: i64 },
    /// The entry is still the incomplete one accepted at `received_at`.
    Incomplete { received_at: Timestamp },
}

/// `records` under the ids and `received_at` the original request gave them.
fn rebase(records: &[Record], existing: &IdempotencyEntry) -> Vec<Record> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| Record { id: existing.record_id(i), received_at: existing.received_at, data: r.data.clone() })
        .collect()
}

fn vanished() -> StoreError {
    StoreError::Unavailable {
        message: "an idempotency key vanished while it was being claimed; retry".into(),
        retry_after: Duration::from_secs(1),
        source: None,
    }
}

/// What one BatchWriteItem attempt left undone.
enum Leftover {
    /// DynamoDB accepted the request but left this many items unprocessed.
    Unprocessed(usize),
    /// The request failed (after the SDK's own retries).
    Failed(StoreError),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
        // Sort keys are ULID text, whose order is id order: the range is
        // `from ..= to - 1`, on every day partition from `from`'s day to that id's.
        let last = to.previous();
        let days: VecDeque<Date> = match last.filter(|last| from <= *last) {
            Some(last) => {
                let (first, last_day) = (from.timestamp().to_datetime().date(), last.timestamp().to_datetime().date());
                std::iter::successors(Some(first), |d| d.next_day().filter(|d| *d <= last_day)).collect()
            }
            None => VecDeque::new(),
        };
        let bounds = (from.to_string(), last.unwrap_or(from).to_string());
        let scan = RangeScan {
            store: self,
            days,
            bounds,
            shards: Vec::new(),
            page_size: page_size.max(1),
            as_of: now_micros(),
            batches: HashMap::new(),
        };
        let span = tracing::info_span!("scan_range", table = %self.table, from = %from, to = %to);
        futures::stream::unfold(Some(scan), move |state| {
            async move {
                let mut scan = state?;
                match scan.next_page().await {
                    Ok(Some(page)) => Some((Ok(page), Some(scan))),
                    Ok(None) => None,
                    // The stream ends after its first error.
                    Err(e) => Some((Err(e), None)),
                }
            }
            .instrument(span.clone())
        })
        .boxed()
    }

    #[instrument(skip_all, fields(table = %self.table))]
    async fn weeks(&self) -> Result<Vec<IsoWeek>, StoreError> {
        let mut weeks = self
            .sort_keys(WEEKS_PK, None)
            .await?
            .iter()
            .map(|sk| IsoWeek::parse(sk).map_err(|e| StoreError::internal("a week marker is not an ISO week", e)))
            .collect::<Result<Vec<_>, _>>()?;
        weeks.sort();
        weeks.dedup();
        Ok(weeks)
    }
}

/// BatchGetItem's limit.
const GET_LIMIT: usize = 100;

impl DynamoDbRecordStore {
    /// The visible stored versions of `ids` (consistent reads, BatchGetItem
    /// of up to [`GET_LIMIT`], unprocessed keys re-sent with backoff); staged
    /// records of batches that did not commit count as absent.
    async fn stored(&self, ids: &[RecordId]) -> Result<HashMap<RecordId, Record>, StoreError> {
        let mut found = HashMap::new();
        let mut staged: Vec<(Record, RecordId)> = Vec::new();
        for chunk in ids.chunks(GET_LIMIT) {
            let keys: Vec<Item> = chunk
                .iter()
                .map(|id| HashMap::from([("pk".into(), s(record_pk(*id))), ("sk".into(), s(id.to_string()))]))
                .collect();
            let request = KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .projection_expression("sk, #d, received_at, #b")
                .expression_attribute_names("#d", "data")
                .expression_attribute_names("#b", BATCH_ATTR)
                .build()
                .map_err(|e| StoreError::internal("could not build a DynamoDB BatchGetItem request", e))?;
            let pending = Mutex::new(Some(request));
            let pending = &pending;
            let items = Mutex::new(Vec::new());
            let items = &items;
            let read = retry(
                &self.retry,
                || async move {
                    let Some(keys) = lock(pending).take() else { return Ok(()) };
                    let out = self
                        .client
                        .batch_get_item()
                        .request_items(&self.table, keys)
                        .send()
                        .await
                        .map_err(|e| Leftover::Failed(classify("BatchGetItem", e)))?;
                    lock(items).extend(out.responses.and_then(|mut m| m.remove(&self.table)).unwrap_or_default());
                    let left = out.unprocessed_keys.and_then(|mut m| m.remove(&self.table));
                    let count = left.as_ref().map_or(0, |k| k.keys().len());
                    *lock(pending) = left;
                    if count == 0 { Ok(()) } else { Err(Leftover::Unprocessed(count)) }
                },
                |e| matches!(e, Leftover::Unprocessed(_)),
                |_, _| {},
            )
            .await;
            match read {
                Ok(()) => {}
                Err(Leftover::Failed(e)) => return Err(e),
                Err(Leftover::Unprocessed(count)) => {
                    return Err(StoreError::Unavailable {
                        message: format!(
                            "DynamoDB left {count} keys unread after {} BatchGetItem attempts",
                            self.retry.max_attempts
                        ),
                        retry_after: Duration::from_secs(1),
                        source: None,
                    });
                }
            }
            for item in std::mem::take(&mut *lock(items)) {
                let record = parse_record(&item)?;
                match batch_of(&item)? {
                    None => {
                        found.insert(record.id, record);
                    }
                    Some(batch) => staged.push((record, batch)),
                }
            }
        }
        let markers = self.markers(staged.iter().map(|(_, b)| *b).collect::<HashSet<_>>()).await?;
        for (record, batch) in staged {
            if Marker::visible_as_of(markers.get(&batch).copied().flatten(), i64::MAX) {
                found.insert(record.id, record);
            }
        }
        Ok(found)
    }

    /// Every sort key of partition `pk` — within `bounds` (both inclusive)
    /// if given — page by page: the week markers, or a day-shard's record ids.
    async fn sort_keys(&self, pk: &str, bounds: Option<&(String, String)>) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut start = None;
        loop {
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_values(":pk", s(pk))
                .projection_expression("sk")
                .consistent_read(true)
                .set_exclusive_start_key(start);
            let query = match bounds {
                Some((lo, hi)) => query
                    .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                    .expression_attribute_values(":lo", s(lo.clone()))
                    .expression_attribute_values(":hi", s(hi.clone())),
                None => query.key_condition_expression("pk = :pk"),
            };
            let out = query.send().await.map_err(|e| classify("Query (sort keys)", e))?;
            for item in out.items.unwrap_or_default() {
                keys.push(get_s(&item, "sk")?.to_owned());
            }
            start = out.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() {
                return Ok(keys);
            }
        }
    }

    /// The record keys of day-shard partition `pk` within `bounds`, with the
    /// batch of each staged one; with `staged_only`, only the staged ones.
    pub(crate) async fn partition_keys(
        &self,
        pk: &str,
        bounds: &(String, String),
        staged_only: bool,
    ) -> Result<Vec<(String, Option<RecordId>)>, StoreError> {
        let mut keys = Vec::new();
        let mut start = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                .expression_attribute_values(":pk", s(pk))
                .expression_attribute_values(":lo", s(bounds.0.clone()))
                .expression_attribute_values(":hi", s(bounds.1.clone()))
                .projection_expression("sk, #b")
                .expression_attribute_names("#b", BATCH_ATTR)
                .consistent_read(true)
                .set_exclusive_start_key(start);
            if staged_only {
                query = query.filter_expression("attribute_exists(#b)");
            }
            let out = query.send().await.map_err(|e| classify("Query (record keys)", e))?;
            for item in out.items.unwrap_or_default() {
                keys.push((get_s(&item, "sk")?.to_owned(), batch_of(&item)?));
            }
            start = out.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() {
                return Ok(keys);
            }
        }
    }

    /// Deletes the items with these keys, in BatchWriteItem chunks.
    async fn delete_items(&self, keys: Vec<(String, String)>) -> Result<(), StoreError> {
        let requests: Vec<WriteRequest> = keys
            .into_iter()
            .map(|(pk, sk)| {
                DeleteRequest::builder()
                    .key("pk", s(pk))
                    .key("sk", s(sk))
                    .build()
                    .map(|del| WriteRequest::builder().delete_request(del).build())
                    .map_err(|e| StoreError::internal("could not build a DynamoDB delete request", e))
            })
            .collect::<Result<_, _>>()?;
        let batches: Vec<_> = requests.chunks(BATCH_LIMIT).map(|chunk| self.send_batch(chunk.to_vec())).collect();
        futures::stream::iter(batches).buffer_unordered(BATCH_CONCURRENCY).try_collect::<()>().await
    }

    /// One BatchWriteItem of plain (committed) record puts.
    async fn write_chunk(&self, chunk: &[Record]) -> Result<(), StoreError> {
        let requests: Vec<WriteRequest> = chunk
            .iter()
            .map(|r| {
                PutRequest::builder()
                    .set_item(Some(record_item(r)))
                    .build()
                    .map(|put| WriteRequest::builder().put_request(put).build())
                    .map_err(|e| StoreError::internal("could not build a DynamoDB put request", e))
            })
            .collect::<Result<_, _>>()?;
        self.send_batch(requests).await
    }
}

#[async_trait]
impl RecordLifecycle for DynamoDbRecordStore {
    /// [`sweep_week`](DynamoDbRecordStore::sweep_week): the staged items of
    /// batches whose writer died before committing them.
    async fn clear_abandoned(&self, week: IsoWeek, now: Timestamp) -> Result<u64, StoreError> {
        let report = DynamoDbRecordStore::sweep_week(self, week, now).await?;
        if report.aborted > 0 {
            tracing::info!(%week, aborted = report.aborted, deleted = report.deleted, "aborted batches that never committed");
        }
        Ok(report.deleted)
    }

    /// Reads the batch's ids first (BatchGetItem) so a conflict writes
    /// nothing, then writes the missing records with BatchWriteItem, 25 at a
    /// time with retries; not atomic across chunks (a rerun converges). A
    /// staged record of a batch that never committed counts as missing and
    /// is replaced by the restored record (which the sweep then keeps).
    #[instrument(skip_all, fields(table = %self.table, records = records.len()))]
    async fn restore(&self, records: &[Record]) -> Result<RestoreOutcome, StoreError> {
        let ids: Vec<RecordId> = records.iter().map(|r| r.id).collect();
        let stored = self.stored(&ids).await?;
        if let Some(r) = records.iter().find(|r| stored.get(&r.id).is_some_and(|old| old != *r)) {
            return Ok(RestoreOutcome::Conflict(r.id));
        }
        let missing: Vec<Record> = records.iter().filter(|r| !stored.contains_key(&r.id)).cloned().collect();
        if !missing.is_empty() {
            self.mark_weeks(&missing).await?;
            let writes: Vec<_> = missing.chunks(BATCH_LIMIT).map(|chunk| self.write_chunk(chunk)).collect();
            futures::stream::iter(writes).buffer_unordered(BATCH_CONCURRENCY).try_collect::<()>().await?;
        }
        Ok(RestoreOutcome::Restored { inserted: missing.len(), present: records.len() - missing.len() })
    }

    /// Deletes a visible record. A staged record of a batch that has not
    /// committed is left alone (`false`): deleting it could make a batch
    /// still being written commit without it; the sweep removes it if its
    /// batch never commits.
    #[instrument(skip_all, fields(table = %self.table, id = %id))]
    async fn delete(&self, id: RecordId) -> Result<bool, StoreError> {
        if self.get(id).await?.is_none() {
            return Ok(false);
        }
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(record_pk(id)))
            .key("sk", s(id.to_string()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| classify("DeleteItem", e))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    /// Queries the keys of each of the week's 7 x 16 partitions and deletes
    /// them with BatchWriteItem (staged items included), then the markers of
    /// the committed batches that lay within the week, then the week's
    /// marker. Counts the records that were visible.
    #[instrument(skip_all, fields(table = %self.table, week = %week))]
    async fn delete_week(&self, week: IsoWeek) -> Result<u64, StoreError> {
        let bounds = week_bounds(week);
        let mut deleted = 0;
        let mut staged: HashMap<RecordId, u64> = HashMap::new();
        for day in week.days() {
            for shard in 0..SHARDS {
                let pk = day_pk(day, shard);
                let keys = self.partition_keys(&pk, &bounds, false).await?;
                for (_, batch) in &keys {
                    match batch {
                        None => deleted += 1,
                        Some(batch) => *staged.entry(*batch).or_default() += 1,
                    }
                }
                self.delete_items(keys.into_iter().map(|(sk, _)| (pk.clone(), sk)).collect()).await?;
            }
        }
        let markers = self.markers(staged.keys().copied()).await?;
        for (batch, count) in staged {
            if Marker::visible_as_of(markers.get(&batch).copied().flatten(), i64::MAX) {
                deleted += count;
            }
            // A batch reaching into another week keeps its marker for the
            // records there (aborted markers expire by TTL).
            let within = self.marker_range(batch).await?.is_some_and(|(first, last)| {
                IsoWeek::containing(first.timestamp()) == week && IsoWeek::containing(last.timestamp()) == week
            });
            if within {
                self.delete_marker(batch).await?;
            }
        }
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(WEEKS_PK))
            .key("sk", s(week.to_string()))
            .send()
            .await
            .map_err(|e| classify("DeleteItem (week marker)", e))?;
        self.marked().remove(&week);
        Ok(deleted)
    }
}

/// The state of a range scan: the days still to read and, for the current
/// day, one cursor per shard. At most `SHARDS` query pages are held at once.
struct RangeScan<'a> {
    store: &'a DynamoDbRecordStore,
    days: VecDeque<Date>,
    /// The sort-key bounds, both inclusive.
    bounds: (String, String),
    shards: Vec<ShardCursor>,
    page_size: usize,
    /// When the scan started (epoch µs): it shows the batches committed by then.
    as_of: i64,
    /// Whether each staged batch met so far is visible to this scan.
    batches: HashMap<RecordId, bool>,
}

struct ShardCursor {
    pk: String,
    buf: VecDeque<Record>,
    /// Where the next query page starts; `None` once the partition is exhausted.
    next: Option<Option<Item>>,
}

impl ShardCursor {
    fn needs_page(&self) -> bool {
        self.buf.is_empty() && self.next.is_some()
    }
}

impl RangeScan<'_> {
    async fn next_page(&mut self) -> Result<Option<Vec<Record>>, StoreError> {
        let mut page = Vec::with_capacity(self.page_size);
        while page.len() < self.page_size {
            if self.shards.is_empty() {
                let Some(day) = self.days.pop_front() else { break };
                self.shards = (0..SHARDS)
                    .map(|shard| ShardCursor { pk: day_pk(day, shard), buf: VecDeque::new(), next: Some(None) })
                    .collect();
            }
            self.refill().await?;
            // k-way merge: the smallest head among the day's shards.
            let best = self
                .shards
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.buf.front().map(|r| (r.id, i)))
                .min()
                .map(|(_, i)| i);
            match best.and_then(|i| self.shards[i].buf.pop_front()) {
                Some(record) => page.push(record),
                // A query page may come back empty (or hold only invisible
                // staged items) yet not be the last one: fetch again rather
                // than take the partition as exhausted.
                None if self.shards.iter().any(ShardCursor::needs_page) => continue,
                // Every shard of the day is exhausted.
                None => self.shards.clear(),
            }
        }
        Ok((!page.is_empty()).then_some(page))
    }

    /// Fetches, in parallel, the next page of every shard whose buffer ran
    /// dry, then keeps the records of batches visible to this scan.
    async fn refill(&mut self) -> Result<(), StoreError> {
        if !self.shards.iter().any(ShardCursor::needs_page) {
            return Ok(());
        }
        let store = self.store;
        let limit = self.page_size;
        let bounds = &self.bounds;
        let fetches = self.shards.iter_mut().enumerate().filter(|(_, c)| c.needs_page()).map(|(i, c)| async move {
            let start = c.next.take().flatten();
            let (records, next) = store.query_page(&c.pk, bounds, start, limit).await?;
            c.next = next.map(Some);
            Ok::<_, StoreError>((i, records))
        });
        let pages = futures::future::try_join_all(fetches).await?;
        let unknown: HashSet<RecordId> = pages
            .iter()
            .flat_map(|(_, p)| p.iter().filter_map(|(_, b)| *b))
            .filter(|b| !self.batches.contains_key(b))
            .collect();
        // Decided once per scan: a batch that commits while the scan runs
        // stays hidden from all of it.
        for (batch, marker) in self.store.markers(unknown).await? {
            self.batches.insert(batch, Marker::visible_as_of(marker, self.as_of));
        }
        for (i, records) in pages {
            let visible = records.into_iter().filter(|(_, b)| b.is_none_or(|b| self.batches.get(&b) == Some(&true)));
            self.shards[i].buf.extend(visible.map(|(r, _)| r));
        }
        Ok(())
    }
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn record_item(r: &Record) -> Item {
    HashMap::from([
        ("pk".to_owned(), s(record_pk(r.id))),
        ("sk".to_owned(), s(r.id.to_string())),
        ("data".to_owned(), s(r.data.clone())),
        ("received_at".to_owned(), n(r.received_at.as_millis())),
    ])
}

pub(crate) fn entry_item(e: &IdempotencyEntry, complete: bool) -> Item {
    // TTL wants epoch seconds; round up so the key lives at least as long as promised.
    let expires_s = (e.expires_at.as_millis() + 999).div_euclid(1000);
    HashMap::from([
        ("pk".to_owned(), s(key_pk(&e.key))),
        ("sk".to_owned(), s(KEY_SK)),
        ("fingerprint".to_owned(), s(e.fingerprint.to_hex())),
        ("received_at".to_owned(), n(e.received_at.as_millis())),
        ("status".to_owned(), n(i64::from(e.status))),
        ("response".to_owned(), s(e.response.clone())),
        ("expires_at".to_owned(), n(expires_s)),
        ("expires_at_ms".to_owned(), n(e.expires_at.as_millis())),
        ("complete".to_owned(), AttributeValue::Bool(complete)),
    ])
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Internal { message: format!("a DynamoDB item has a missing or malformed `{what}`"), source: None }
}

pub(crate) fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str).ok_or_else(|| corrupt(name))
}

pub(crate) fn get_n(item: &Item, name: &str) -> Result<i64, StoreError> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).ok_or_else(|| corrupt(name))
}

pub(crate) fn parse_record(item: &Item) -> Result<Record, StoreError> {
    let id = RecordId::parse(get_s(item, "sk")?)
        .map_err(|e| StoreError::internal("a record's sort key is not a ULID", e))?;
    Ok(Record {
        id,
        received_at: Timestamp::from_millis(get_n(item, "received_at")?),
        data: get_s(item, "data")?.to_owned(),
    })
}

/// The entry and its `complete` flag.
fn parse_entry(key: &IdempotencyKey, item: &Item) -> Result<(IdempotencyEntry, bool), StoreError> {
    let fingerprint = Fingerprint::from_hex(get_s(item, "fingerprint")?).ok_or_else(|| corrupt("fingerprint"))?;
    let entry = IdempotencyEntry {
        key: key.clone(),
        fingerprint,
        received_at: Timestamp::from_millis(get_n(item, "received_at")?),
        status: u16::try_from(get_n(item, "status")?).map_err(|_| corrupt("status"))?,
        response: get_s(item, "response")?.to_owned(),
        expires_at: Timestamp::from_millis(get_n(item, "expires_at_ms")?),
    };
    let complete = item.get("complete").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false);
    Ok((entry, complete))
}

/// Maps an SDK error: throttling, 5xx and network trouble are worth a retry
/// by the client (503); anything else is a bug or misconfiguration (500).
pub(crate) fn classify<E, R>(op: &'static str, err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = err.code().map(str::to_owned);
    let transient = crate::is_transient(&err);
    let message = format!("DynamoDB {op} failed ({})", code.as_deref().unwrap_or("no error code"));
    if transient { StoreError::unavailable(message, err) } else { StoreError::internal(message, err) }
}
