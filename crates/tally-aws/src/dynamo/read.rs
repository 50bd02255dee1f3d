//! Reads: partition queries (page by page, or every key), consistent batch
//! reads, and the range scan that merges a day's 16 shards by id. Staged
//! records show only once their batch committed ([`crate::batch`]).
//!
//! Queries page through the SDK's paginators (`into_paginator`), which send
//! each page with the client's retry and timeout settings, exactly as
//! `send()` does. The range scan keeps one lazy paginator per shard and
//! polls it only when that shard's buffer runs dry, so it holds at most one
//! page per shard. (BatchGetItem has no paginator: its unprocessed keys are
//! re-sent through `tally_core::retry`, like BatchWriteItem's.)

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::KeysAndAttributes;
use futures::StreamExt;
use futures::stream::BoxStream;
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
    /// A consistent Query of partition `pk`, of the sort keys within
    /// `bounds` (inclusive) if given: what every read below starts from.
    /// Each adds its projection (and filter) and pages it.
    fn partition_query(&self, pk: &str, bounds: Option<&(String, String)>) -> QueryFluentBuilder {
        let query =
            self.client.query().table_name(&self.table).expression_attribute_values(":pk", s(pk)).consistent_read(true);
        match bounds {
            Some((lo, hi)) => query
                .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                .expression_attribute_values(":lo", s(lo.clone()))
                .expression_attribute_values(":hi", s(hi.clone())),
            None => query.key_condition_expression("pk = :pk"),
        }
    }

    /// The pages of one day-shard partition, sort keys from `bounds.0` to
    /// `bounds.1` inclusive, staged items with their batch, at most `limit`
    /// items a page. Lazy: each page is queried when the stream is polled
    /// for it, never ahead.
    fn query_pages(&self, pk: &str, bounds: &(String, String), limit: usize) -> ShardPages {
        let mut pages = self
            .partition_query(pk, Some(bounds))
            .projection_expression("sk, #d, received_at, #b")
            .expression_attribute_names("#d", "data")
            .expression_attribute_names("#b", BATCH_ATTR)
            .limit(i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000))
            .into_paginator()
            .send();
        futures::stream::poll_fn(move |cx| pages.poll_next(cx))
            .map(|page| {
                let out = page.map_err(|e| classify("Query", e))?;
                out.items
                    .unwrap_or_default()
                    .iter()
                    .map(|item| Ok((parse_record(item)?, batch_of(item)?)))
                    .collect::<Result<_, StoreError>>()
            })
            .boxed()
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

    /// Every sort key of partition `pk` (the week markers).
    pub(super) async fn sort_keys(&self, pk: &str) -> Result<Vec<String>, StoreError> {
        let mut items = self.partition_query(pk, None).projection_expression("sk").into_paginator().items().send();
        let mut keys = Vec::new();
        while let Some(item) = items.try_next().await.map_err(|e| classify("Query (sort keys)", e))? {
            keys.push(get_s(&item, "sk")?.to_owned());
        }
        Ok(keys)
    }

    /// The record keys of day-shard partition `pk` within `bounds`, with the
    /// batch of each staged one; with `staged_only`, only the staged ones.
    pub(crate) async fn partition_keys(
        &self,
        pk: &str,
        bounds: &(String, String),
        staged_only: bool,
    ) -> Result<Vec<(String, Option<RecordId>)>, StoreError> {
        let mut query = self
            .partition_query(pk, Some(bounds))
            .projection_expression("sk, #b")
            .expression_attribute_names("#b", BATCH_ATTR);
        if staged_only {
            query = query.filter_expression("attribute_exists(#b)");
        }
        let mut items = query.into_paginator().items().send();
        let mut keys = Vec::new();
        while let Some(item) = items.try_next().await.map_err(|e| classify("Query (record keys)", e))? {
            keys.push((get_s(&item, "sk")?.to_owned(), batch_of(&item)?));
        }
        Ok(keys)
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

/// A day-shard partition's query pages, parsed (see `query_pages`).
type ShardPages = BoxStream<'static, Result<Vec<(Record, Option<RecordId>)>, StoreError>>;

struct ShardCursor {
    /// The partition's remaining pages; `None` once it is exhausted.
    pages: Option<ShardPages>,
    buf: VecDeque<Record>,
}

impl ShardCursor {
    fn needs_page(&self) -> bool {
        self.buf.is_empty() && self.pages.is_some()
    }
}

impl RangeScan<'_> {
    async fn next_page(&mut self) -> Result<Option<Vec<Record>>, StoreError> {
        let mut page = Vec::with_capacity(self.page_size);
        while page.len() < self.page_size {
            if self.shards.is_empty() {
                let Some(day) = self.days.pop_front() else { break };
                let (bounds, limit) = (&self.bounds, self.page_size);
                self.shards = (0..SHARDS)
                    .map(|shard| ShardCursor {
                        pages: Some(self.store.query_pages(&day_pk(day, shard), bounds, limit)),
                        buf: VecDeque::new(),
                    })
                    .collect();
            }
            self.refill().await?;
            // A page may come back empty, or hold only invisible staged
            // items, yet not be its partition's last: that shard's next
            // record may be the smallest of all, so the merge waits until
            // every shard has a head or has ended.
            if self.shards.iter().any(ShardCursor::needs_page) {
                continue;
            }
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
        let fetches = self.shards.iter_mut().enumerate().filter(|(_, c)| c.needs_page()).map(|(i, c)| async move {
            let page = match c.pages.as_mut() {
                Some(pages) => pages.next().await,
                None => None,
            };
            if page.is_none() {
                // The paginator has sent the partition's last page.
                c.pages = None;
            }
            Ok::<_, StoreError>((i, page.transpose()?.unwrap_or_default()))
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
