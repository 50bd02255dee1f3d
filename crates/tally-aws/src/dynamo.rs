//! [`RecordStore`] on one DynamoDB table (`pk` S HASH, `sk` S RANGE, TTL on `expires_at`).
//!
//! # Item layout
//! ```text
//! record       pk = D#2026-11-23#07   sk = 01KAQ6ZP4W...   data = "<JSON text as sent>"   received_at = 1763884800123
//! week marker  pk = W                 sk = 2026-W48
//! idempotency  pk = I#<key>           sk = I               fingerprint, received_at, status, response,
//!                                                          expires_at (epoch s, TTL), expires_at_ms, complete
//! week lease   pk = L#2026-W47        sk = L               owner, until, done_from, expires_at (see [`crate::lease`])
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
//! # Atomic batches
//! A batch of up to [`TRANSACT_LIMIT`] records (and under [`TRANSACT_MAX_BYTES`])
//! is one `TransactWriteItems`: all or nothing, as the HTTP contract promises.
//! DynamoDB cannot commit more items than that atomically; larger batches go
//! out as concurrent `BatchWriteItem` chunks, so if one of those fails after
//! retries, the chunks already written stay (the API role may not delete).
//! Clients sending batches over 100 records should send an `Idempotency-Key`
//! and retry on 503: the retry then converges as below.
//!
//! # Idempotent batches
//! With a key, the entry
//! is claimed first (conditional put, `complete = false`), then the records
//! are written, then the entry is marked `complete`. An incomplete entry is
//! invisible to [`RecordStore::idempotency_entry`], so a retry of a request
//! that failed half-way goes on to `insert`, finds the incomplete entry with
//! its own fingerprint, rewrites the records under their original ids
//! ([`IdempotencyEntry::record_id`]: same key, body and `received_at`) and
//! completes the entry: the request converges without duplicates, and a 201 is
//! only ever given once every record is stored.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, KeysAndAttributes, Put, PutRequest, ReturnValue,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, WriteRequest,
};
use futures::{StreamExt, TryStreamExt};
use tally_core::idempotency::{Fingerprint, IdempotencyEntry, IdempotencyKey};
use tally_core::ports::{InsertOutcome, RecordLifecycle, RecordPages, RecordStore, RestoreOutcome, StoreError};
use tally_core::{IsoWeek, Record, RecordId, Timestamp};
use time::Date;
use tracing::{Instrument, instrument};

use tally_core::retry::RetryPolicy;

/// Shards per day. Changing it orphans existing data: it is part of the key.
pub const SHARDS: u16 = 16;
/// BatchWriteItem's limit.
const BATCH_LIMIT: usize = 25;
/// TransactWriteItems' item limit: batches up to this size commit atomically.
pub const TRANSACT_LIMIT: usize = 100;
/// TransactWriteItems' 4 MB request limit, with room for keys and attribute names.
pub const TRANSACT_MAX_BYTES: usize = 3 * 1024 * 1024;
/// Chunks of a batch written concurrently.
const BATCH_CONCURRENCY: usize = 8;
const WEEKS_PK: &str = "W";
const KEY_SK: &str = "I";

type Item = HashMap<String, AttributeValue>;

/// The partition key of a record: `D#<UTC day>#<shard>`.
pub fn record_pk(id: RecordId) -> String {
    day_pk(id.timestamp().to_datetime().date(), id.shard(SHARDS))
}

fn day_pk(day: Date, shard: u16) -> String {
    format!("D#{:04}-{:02}-{:02}#{shard:02}", day.year(), u8::from(day.month()), day.day())
}

fn key_pk(key: &IdempotencyKey) -> String {
    format!("I#{}", key.as_str())
}

/// tally's records and idempotency keys in a DynamoDB table.
#[derive(Debug)]
pub struct DynamoDbRecordStore {
    client: Client,
    table: String,
    retry: RetryPolicy,
    /// Weeks whose marker this process has already written.
    marked: Mutex<HashSet<IsoWeek>>,
}

impl DynamoDbRecordStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into(), retry: RetryPolicy::default(), marked: Mutex::default() }
    }

    /// Overrides how long unprocessed batch items are retried.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
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
        let bytes: usize = records.iter().map(|r| r.data.len() + 64).sum();
        if records.len() <= TRANSACT_LIMIT && bytes <= TRANSACT_MAX_BYTES {
            return self.write_transaction(records).await;
        }
        // Futures are lazy: building them all up front costs nothing, and
        // sidesteps a higher-ranked lifetime error with a closure in `map`.
        let writes: Vec<_> = records.chunks(BATCH_LIMIT).map(|chunk| self.write_chunk(chunk)).collect();
        futures::stream::iter(writes).buffer_unordered(BATCH_CONCURRENCY).try_collect::<()>().await
    }

    /// All of `records` in one TransactWriteItems, retried with backoff while
    /// DynamoDB throttles or cancels it for a conflicting transaction.
    async fn write_transaction(&self, records: &[Record]) -> Result<(), StoreError> {
        let items: Vec<TransactWriteItem> = records
            .iter()
            .map(|r| {
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(record_item(r)))
                    .build()
                    .map(|put| TransactWriteItem::builder().put(put).build())
                    .map_err(|e| StoreError::internal("could not build a DynamoDB transaction item", e))
            })
            .collect::<Result<_, _>>()?;
        let mut attempt = 0;
        loop {
            let sent = self.client.transact_write_items().set_transact_items(Some(items.clone())).send().await;
            let err = match sent {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let retryable = matches!(
                err.code(),
                Some("TransactionConflictException" | "ThrottlingException" | "ProvisionedThroughputExceededException")
            ) || (err.code() == Some("TransactionCanceledException")
                && err.message().is_some_and(|m| m.contains("Conflict") || m.contains("Throttl")));
            if !retryable {
                return Err(classify("TransactWriteItems", err));
            }
            attempt += 1;
            let Some(delay) = self.retry.delay(attempt) else {
                tracing::warn!(attempt, code = ?err.code(), "TransactWriteItems still throttled; giving up");
                return Err(StoreError::Unavailable {
                    message: format!("DynamoDB kept cancelling the batch's transaction after {attempt} attempts"),
                    retry_after: Duration::from_secs(1),
                    source: Some(Box::new(err)),
                });
            };
            tracing::debug!(attempt, ?delay, code = ?err.code(), "retrying TransactWriteItems");
            tokio::time::sleep(delay).await;
        }
    }

    /// One BatchWriteItem of puts (see [`send_batch`](Self::send_batch)).
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

    /// One BatchWriteItem (puts or deletes, at most [`BATCH_LIMIT`]),
    /// re-sending `UnprocessedItems` with backoff until they are all written
    /// or the retry policy gives up.
    async fn send_batch(&self, mut requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        let mut attempt = 0;
        loop {
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.table, requests)
                .send()
                .await
                .map_err(|e| classify("BatchWriteItem", e))?;
            requests = out.unprocessed_items.and_then(|mut m| m.remove(&self.table)).unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
            attempt += 1;
            let Some(delay) = self.retry.delay(attempt) else {
                tracing::warn!(unprocessed = requests.len(), attempt, "BatchWriteItem still throttled; giving up");
                return Err(StoreError::Unavailable {
                    message: format!(
                        "DynamoDB left {} items unprocessed after {attempt} attempts (throughput exceeded)",
                        requests.len()
                    ),
                    retry_after: Duration::from_secs(1),
                    source: None,
                });
            };
            tracing::debug!(unprocessed = requests.len(), attempt, ?delay, "retrying unprocessed items");
            tokio::time::sleep(delay).await;
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
                    None => Err(StoreError::Unavailable {
                        message: "an idempotency key vanished while it was being claimed".into(),
                        retry_after: Duration::from_secs(1),
                        source: None,
                    }),
                }
            }
            Err(e) => Err(classify("PutItem (idempotency key)", e)),
        }
    }

    /// Marks `entry` complete. A whole PutItem rather than an UpdateItem:
    /// the API function's role allows only PutItem, GetItem and BatchWriteItem.
    async fn complete(&self, entry: &IdempotencyEntry) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(entry_item(entry, true)))
            .send()
            .await
            .map_err(|e| classify("PutItem (complete idempotency key)", e))?;
        Ok(())
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

    /// One page of one day-shard partition, sort keys from `bounds.0` to `bounds.1` inclusive.
    async fn query_page(
        &self,
        pk: &str,
        bounds: &(String, String),
        start: Option<Item>,
        limit: usize,
    ) -> Result<(Vec<Record>, Option<Item>), StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":lo", s(bounds.0.clone()))
            .expression_attribute_values(":hi", s(bounds.1.clone()))
            .projection_expression("sk, #d, received_at")
            .expression_attribute_names("#d", "data")
            .consistent_read(true)
            .limit(i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| classify("Query", e))?;
        let records = out.items.unwrap_or_default().iter().map(parse_record).collect::<Result<_, _>>()?;
        Ok((records, out.last_evaluated_key.filter(|k| !k.is_empty())))
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
        match self.claim(entry).await? {
            None => {
                self.write_records(records).await?;
                self.complete(entry).await?;
                Ok(InsertOutcome::Inserted)
            }
            Some((existing, true)) => Ok(InsertOutcome::KeyExists(existing)),
            Some((existing, false)) if existing.fingerprint != entry.fingerprint => {
                Ok(InsertOutcome::KeyExists(existing))
            }
            Some((existing, false)) => {
                // An earlier attempt of this very request claimed the key but did
                // not finish (or is still running): write its records under the
                // original ids and `received_at`, so both attempts converge.
                tracing::info!("completing an interrupted idempotent request");
                let rebased: Vec<Record> = records
                    .iter()
                    .enumerate()
                    .map(|(i, r)| Record {
                        id: existing.record_id(i),
                        received_at: existing.received_at,
                        data: r.data.clone(),
                    })
                    .collect();
                self.write_records(&rebased).await?;
                self.complete(&existing).await?;
                Ok(InsertOutcome::KeyExists(existing))
            }
        }
    }

    #[instrument(skip_all, fields(table = %self.table))]
    async fn idempotency_entry(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyEntry>, StoreError> {
        let Some(item) = self.get_entry_item(key).await? else { return Ok(None) };
        let (entry, complete) = parse_entry(key, &item)?;
        // Incomplete entries stay hidden so that a retry reaches `insert` and finishes the write.
        Ok((complete && entry.expires_at > Timestamp::now()).then_some(entry))
    }

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
        out.item.as_ref().map(parse_record).transpose()
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
        let scan = RangeScan { store: self, days, bounds, shards: Vec::new(), page_size: page_size.max(1) };
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
    /// The stored versions of `ids` (consistent reads, BatchGetItem of up to
    /// [`GET_LIMIT`], unprocessed keys re-sent with backoff).
    async fn stored(&self, ids: &[RecordId]) -> Result<HashMap<RecordId, Record>, StoreError> {
        let mut found = HashMap::new();
        for chunk in ids.chunks(GET_LIMIT) {
            let keys: Vec<Item> = chunk
                .iter()
                .map(|id| HashMap::from([("pk".into(), s(record_pk(*id))), ("sk".into(), s(id.to_string()))]))
                .collect();
            let mut request = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .projection_expression("sk, #d, received_at")
                    .expression_attribute_names("#d", "data")
                    .build()
                    .map_err(|e| StoreError::internal("could not build a DynamoDB BatchGetItem request", e))?,
            );
            let mut attempt = 0;
            while let Some(keys) = request.take() {
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, keys)
                    .send()
                    .await
                    .map_err(|e| classify("BatchGetItem", e))?;
                for item in out.responses.and_then(|mut m| m.remove(&self.table)).unwrap_or_default() {
                    let record = parse_record(&item)?;
                    found.insert(record.id, record);
                }
                request = out.unprocessed_keys.and_then(|mut m| m.remove(&self.table));
                if request.is_some() {
                    attempt += 1;
                    let delay = self.retry.delay(attempt).ok_or_else(|| StoreError::Unavailable {
                        message: format!("DynamoDB left keys unread after {attempt} BatchGetItem attempts"),
                        retry_after: Duration::from_secs(1),
                        source: None,
                    })?;
                    tokio::time::sleep(delay).await;
                }
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
}

#[async_trait]
impl RecordLifecycle for DynamoDbRecordStore {
    /// Reads the batch's ids first (BatchGetItem) so a conflict writes
    /// nothing, then writes the missing records with BatchWriteItem, 25 at a
    /// time with retries; not atomic across chunks (a rerun converges).
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

    #[instrument(skip_all, fields(table = %self.table, id = %id))]
    async fn delete(&self, id: RecordId) -> Result<bool, StoreError> {
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
    /// them with BatchWriteItem, then the week's marker.
    #[instrument(skip_all, fields(table = %self.table, week = %week))]
    async fn delete_week(&self, week: IsoWeek) -> Result<u64, StoreError> {
        let (from, to) = (RecordId::lower_bound(week.start()), RecordId::lower_bound(week.end()));
        let bounds = (from.to_string(), to.previous().unwrap_or(from).to_string());
        let mut deleted = 0;
        for day in week.days() {
            for shard in 0..SHARDS {
                let pk = day_pk(day, shard);
                let keys = self.sort_keys(&pk, Some(&bounds)).await?;
                deleted += keys.len() as u64;
                self.delete_items(keys.into_iter().map(|sk| (pk.clone(), sk)).collect()).await?;
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
                // A query page may come back empty yet not be the last one:
                // fetch again rather than take the partition as exhausted.
                None if self.shards.iter().any(ShardCursor::needs_page) => continue,
                // Every shard of the day is exhausted.
                None => self.shards.clear(),
            }
        }
        Ok((!page.is_empty()).then_some(page))
    }

    /// Fetches, in parallel, the next page of every shard whose buffer ran dry.
    async fn refill(&mut self) -> Result<(), StoreError> {
        if !self.shards.iter().any(ShardCursor::needs_page) {
            return Ok(());
        }
        let store = self.store;
        let limit = self.page_size;
        let bounds = &self.bounds;
        let fetches = self.shards.iter_mut().filter(|c| c.needs_page()).map(|c| async move {
            let start = c.next.take().flatten();
            let (records, next) = store.query_page(&c.pk, bounds, start, limit).await?;
            c.buf.extend(records);
            c.next = next.map(Some);
            Ok::<(), StoreError>(())
        });
        futures::future::try_join_all(fetches).await?;
        Ok(())
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn record_item(r: &Record) -> Item {
    HashMap::from([
        ("pk".to_owned(), s(record_pk(r.id))),
        ("sk".to_owned(), s(r.id.to_string())),
        ("data".to_owned(), s(r.data.clone())),
        ("received_at".to_owned(), n(r.received_at.as_millis())),
    ])
}

fn entry_item(e: &IdempotencyEntry, complete: bool) -> Item {
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

fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str).ok_or_else(|| corrupt(name))
}

fn get_n(item: &Item, name: &str) -> Result<i64, StoreError> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).ok_or_else(|| corrupt(name))
}

fn parse_record(item: &Item) -> Result<Record, StoreError> {
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
