//! Reads: partition queries (one page, or every key), consistent batch
//! reads, and the range scan that merges a day's 16 shards by id. Staged
//! records show only once their batch committed ([`crate::batch`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_dynamodb::types::KeysAndAttributes;
use futures::StreamExt;
use tally_core::ports::{RecordPages, StoreError};
use tally_core::retry::retry;
use tally_core::{Record, RecordId};
use time::Date;
use tracing::Instrument;

use super::DynamoDbRecordStore;
use super::codec::{Item, classify, get_s, parse_record, s};
use super::layout::{SHARDS, day_pk, record_pk};
use super::write::{Leftover, lock};
use crate::batch::{BATCH_ATTR, Marker, batch_of, now_micros};

/// BatchGetItem's limit.
const GET_LIMIT: usize = 100;

impl DynamoDbRecordStore {
    /// One page of one day-shard partition, sort keys from `bounds.0` to
    /// `bounds.1` inclusive, staged items with their batch.
    pub(super) async fn query_page(
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

    /// The visible stored versions of `ids` (consistent reads, BatchGetItem
    /// of up to [`GET_LIMIT`], unprocessed keys re-sent with backoff); staged
    /// records of batches that did not commit count as absent.
    pub(super) async fn stored(&self, ids: &[RecordId]) -> Result<HashMap<RecordId, Record>, StoreError> {
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
    pub(super) async fn sort_keys(
        &self,
        pk: &str,
        bounds: Option<&(String, String)>,
    ) -> Result<Vec<String>, StoreError> {
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

    /// The pages of [`RecordStore::scan_range`](tally_core::RecordStore::scan_range).
    pub(super) fn scan_pages(&self, from: RecordId, to: RecordId, page_size: usize) -> RecordPages<'_> {
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
