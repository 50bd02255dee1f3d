//! Batches too large for one `TransactWriteItems`: staged items under a
//! batch marker, committed by one conditional write.
//!
//! DynamoDB commits at most 100 items atomically. A larger batch is written
//! with `BatchWriteItem` as *staged* items — ordinary record items plus
//! `batch = <batch id>` — and then made visible all at once by writing its
//! **marker**:
//!
//! ```text
//! staged record  pk = D#2026-11-23#07  sk = 01KAQ6ZP4W...  data, received_at, batch = 01KAQ6ZP3B...
//! batch marker   pk = B#01KAQ6ZP3B...  sk = B           state = "committed", at = <epoch µs>, first, last
//!                                                        state = "aborted",   at, expires_at (TTL, 30 days)
//! ```
//! - **Commit** is one PutItem of the marker on `attribute_not_exists(pk)`
//!   (with an `Idempotency-Key`: one `TransactWriteItems` of the marker and
//!   the completed key, so the key is never complete without the records nor
//!   the records visible without the key).
//! - **Abort** is the same conditional put with `state = aborted`. Whoever
//!   writes the marker first decides the batch's fate, once: a writer that
//!   fails (or finds it took longer than the commit window) aborts; the
//!   weekly sweep aborts batches older than [`ABANDONED_AFTER`] that never
//!   committed (a writer that was killed). A commit that fails for any reason
//!   is *settled* by an abort: if the abort finds the batch committed (the
//!   commit did land), the write succeeded after all.
//! - **Readers** treat a staged item as a record only if its batch's marker
//!   says committed: `get` reads the marker; a range scan reads each batch's
//!   marker once (cached for the scan) and also requires the commit to be
//!   older than the scan's start, so a scan that runs while a batch commits
//!   sees either all of it or none of it (every item of a batch is written
//!   before its commit, so a batch committed before the scan started is
//!   complete when the scan passes it).
//! - **Cleanup.** [`DynamoDbRecordStore::sweep_week`] (run by the weekly
//!   function before it summarizes a week) deletes the staged items of
//!   aborted batches, aborting first those that never committed and are
//!   older than [`ABANDONED_AFTER`]. Deletes are conditional on the item's
//!   `batch`, so a record restored over a staged item stays.
//!
//! Staged items are never rewritten after the commit: a committed marker
//! stays as long as its batch's records (deleted by `delete_week` with the
//! week, when the batch lies within it), so nothing can make a committed
//! record expire, and a record costs one write (1 WRU per KB).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, PutRequest, ReturnValuesOnConditionCheckFailure, TransactWriteItem, WriteRequest,
};
use futures::{StreamExt, TryStreamExt};
use tally_core::idempotency::IdempotencyEntry;
use tally_core::ports::StoreError;
use tally_core::{IsoWeek, Record, RecordId, Timestamp};
use tracing::instrument;

use crate::DynamoDbRecordStore;
use crate::dynamo::{
    BATCH_CONCURRENCY, BATCH_LIMIT, Item, SHARDS, TxnFailure, classify, day_pk, entry_item, get_n, get_s, millis, n,
    record_item, s, week_bounds,
};

/// The attribute that makes a record item staged: the id of its batch.
pub(crate) const BATCH_ATTR: &str = "batch";
const MARKER_SK: &str = "B";
const COMMITTED: &str = "committed";
const ABORTED: &str = "aborted";
/// How long an aborted marker is kept (then DynamoDB's TTL drops it): far
/// longer than any writer of its batch can live, so none can commit it later.
const KEEP_ABORTED: Duration = Duration::from_secs(30 * 86_400);

/// A batch whose marker is still absent this long after it started is
/// abandoned (its writer was killed): no writer commits later than the
/// commit window after the start, and a Lambda lives 15 minutes at most.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(20 * 60);

/// The partition key of a batch's marker: `B#<batch id>`.
pub fn marker_pk(batch: RecordId) -> String {
    format!("B#{batch}")
}

/// What a batch's marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    /// Visible since `at` (epoch µs, the committer's clock).
    Committed {
        at: i64,
    },
    Aborted,
}

impl Marker {
    /// Whether the batch's records are visible to a reader that started at
    /// `as_of` (epoch µs); `i64::MAX` for point reads.
    pub(crate) fn visible_as_of(marker: Option<Self>, as_of: i64) -> bool {
        matches!(marker, Some(Self::Committed { at }) if at <= as_of)
    }
}

/// Microseconds since the epoch: commit times are compared with a scan's
/// start, and milliseconds would tie too often.
pub(crate) fn now_micros() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

/// How an abort ended: the marker now says one or the other, for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    Aborted,
    Committed,
}

/// The batch id of a staged item, if it is staged.
pub(crate) fn batch_of(item: &Item) -> Result<Option<RecordId>, StoreError> {
    match item.get(BATCH_ATTR) {
        None => Ok(None),
        Some(_) => RecordId::parse(get_s(item, BATCH_ATTR)?)
            .map(Some)
            .map_err(|e| StoreError::internal("a staged record's batch is not a ULID", e)),
    }
}

fn parse_marker(item: &Item) -> Result<Marker, StoreError> {
    match get_s(item, "state")? {
        COMMITTED => Ok(Marker::Committed { at: get_n(item, "at")? }),
        _ => Ok(Marker::Aborted),
    }
}

fn marker_key(batch: RecordId) -> [(String, AttributeValue); 2] {
    [("pk".to_owned(), s(marker_pk(batch))), ("sk".to_owned(), s(MARKER_SK))]
}

/// What [`DynamoDbRecordStore::sweep_week`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Batches this sweep found abandoned and aborted.
    pub aborted: usize,
    /// Staged items of aborted batches it deleted.
    pub deleted: u64,
    /// Uncommitted batches younger than [`ABANDONED_AFTER`], left alone.
    pub in_flight: usize,
}

impl DynamoDbRecordStore {
    /// Writes `records` staged under `batch`, then commits the batch (with
    /// `entry`, completing that idempotency key in the same transaction). On
    /// any failure the batch is aborted, so none of its records ever shows.
    pub(crate) async fn write_staged(
        &self,
        records: &[Record],
        batch: RecordId,
        entry: Option<&IdempotencyEntry>,
    ) -> Result<(), StoreError> {
        let writes: Vec<_> = records.chunks(BATCH_LIMIT).map(|chunk| self.write_staged_chunk(chunk, batch)).collect();
        let written = futures::stream::iter(writes).buffer_unordered(BATCH_CONCURRENCY).try_collect::<()>().await;
        if let Err(e) = written {
            self.abort_after_failure(batch).await;
            return Err(e);
        }
        // Readers stop their ranges at "now - store timeout": a batch that
        // committed later than that after its records were stamped could
        // appear behind a paging reader's cursor. Records stamped just before
        // the write (an ingest) count from their stamp; older ones (a caller
        // storing past records) from the start of the write.
        let window = millis(self.commit_window);
        let started = batch.timestamp().as_millis();
        let stamped = records.iter().map(|r| r.received_at.as_millis()).min().unwrap_or(started);
        let from = if (started.saturating_sub(window)..=started).contains(&stamped) { stamped } else { started };
        let deadline = from.saturating_add(window);
        if Timestamp::now().as_millis() >= deadline {
            self.abort_after_failure(batch).await;
            return Err(StoreError::Unavailable {
                message: format!(
                    "writing the batch took longer than {:?}, so it was cancelled; retry the request",
                    self.commit_window
                ),
                retry_after: Duration::from_secs(1),
                source: None,
            });
        }
        let (first, last) = match (records.iter().map(|r| r.id).min(), records.iter().map(|r| r.id).max()) {
            (Some(first), Some(last)) => (first, last),
            _ => return Ok(()),
        };
        let committed = self.commit(batch, first, last, entry).await;
        match committed {
            Ok(()) => Ok(()),
            // The commit may have landed even though its answer was lost: the
            // abort tells, and either way the marker is then settled for good.
            Err(e) => match self.abort(batch).await {
                Ok(Settled::Committed) => Ok(()),
                Ok(Settled::Aborted) | Err(_) => Err(e),
            },
        }
    }

    async fn write_staged_chunk(&self, chunk: &[Record], batch: RecordId) -> Result<(), StoreError> {
        let requests: Vec<WriteRequest> = chunk
            .iter()
            .map(|r| {
                let mut item = record_item(r);
                item.insert(BATCH_ATTR.to_owned(), s(batch.to_string()));
                PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map(|put| WriteRequest::builder().put_request(put).build())
                    .map_err(|e| StoreError::internal("could not build a DynamoDB put request", e))
            })
            .collect::<Result<_, _>>()?;
        self.send_batch(requests).await
    }

    async fn commit(
        &self,
        batch: RecordId,
        first: RecordId,
        last: RecordId,
        entry: Option<&IdempotencyEntry>,
    ) -> Result<(), StoreError> {
        let mut marker: Item = marker_key(batch).into_iter().collect();
        marker.insert("state".into(), s(COMMITTED));
        marker.insert("at".into(), n(now_micros()));
        marker.insert("first".into(), s(first.to_string()));
        marker.insert("last".into(), s(last.to_string()));
        let Some(entry) = entry else {
            self.client()
                .put_item()
                .table_name(self.table())
                .set_item(Some(marker))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await
                .map_err(|e| classify("PutItem (commit batch)", e))?;
            return Ok(());
        };
        let build = |put: aws_sdk_dynamodb::types::builders::PutBuilder| {
            put.table_name(self.table())
                .build()
                .map(|put| TransactWriteItem::builder().put(put).build())
                .map_err(|e| StoreError::internal("could not build a DynamoDB transaction item", e))
        };
        let items = vec![
            build(Put::builder().set_item(Some(marker)).condition_expression("attribute_not_exists(pk)"))?,
            // The key this request claimed, still incomplete and still ours.
            build(
                Put::builder()
                    .set_item(Some(entry_item(entry, true)))
                    .condition_expression("#complete = :false AND received_at = :received")
                    .expression_attribute_names("#complete", "complete")
                    .expression_attribute_values(":false", AttributeValue::Bool(false))
                    .expression_attribute_values(":received", n(entry.received_at.as_millis())),
            )?,
        ];
        self.transact(items).await.map_err(|e| match e {
            TxnFailure::ConditionFailed(_) => StoreError::Unavailable {
                message: "the batch was cancelled, or its idempotency key taken over, before it committed".into(),
                retry_after: Duration::from_secs(1),
                source: None,
            },
            TxnFailure::Store(e) => e,
        })
    }

    /// Aborts `batch` unless it is committed; returns which it is now.
    pub(crate) async fn abort(&self, batch: RecordId) -> Result<Settled, StoreError> {
        let now_s = Timestamp::now().as_millis().div_euclid(1000);
        let mut marker: Item = marker_key(batch).into_iter().collect();
        marker.insert("state".into(), s(ABORTED));
        marker.insert("at".into(), n(now_micros()));
        marker.insert("expires_at".into(), n(now_s.saturating_add(millis(KEEP_ABORTED) / 1000)));
        let result = self
            .client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(marker))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Settled::Aborted),
            Err(SdkError::ServiceError(e)) if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) => {
                let old = match e.into_err() {
                    PutItemError::ConditionalCheckFailedException(c) => c.item.map(|item| parse_marker(&item)),
                    _ => None,
                };
                // Emulators may not return the old item; read it.
                let old = match old {
                    Some(marker) => Some(marker?),
                    None => self.marker(batch).await?,
                };
                Ok(match old {
                    Some(Marker::Committed { .. }) => Settled::Committed,
                    _ => Settled::Aborted,
                })
            }
            Err(e) => Err(classify("PutItem (abort batch)", e)),
        }
    }

    /// Best effort after a failed write: if the abort fails too, the batch
    /// stays uncommitted (invisible) until the sweep aborts it.
    async fn abort_after_failure(&self, batch: RecordId) {
        if let Err(e) = self.abort(batch).await {
            tracing::warn!(%batch, error = %tally_core::error_chain(&e), "could not abort a failed batch; the weekly sweep will");
        }
    }

    /// The marker of `batch`, if it has one (consistent read).
    pub(crate) async fn marker(&self, batch: RecordId) -> Result<Option<Marker>, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .set_key(Some(marker_key(batch).into_iter().collect()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem (batch marker)", e))?;
        out.item.as_ref().map(parse_marker).transpose()
    }

    /// The markers of `batches` (consistent reads, a few at a time).
    pub(crate) async fn markers(
        &self,
        batches: impl IntoIterator<Item = RecordId>,
    ) -> Result<HashMap<RecordId, Option<Marker>>, StoreError> {
        futures::stream::iter(
            batches.into_iter().map(|b| async move { Ok::<_, StoreError>((b, self.marker(b).await?)) }),
        )
        .buffer_unordered(BATCH_CONCURRENCY)
        .try_collect()
        .await
    }

    /// The committed marker's id range of `batch`, to tell whether the batch
    /// lies within one week.
    pub(crate) async fn marker_range(&self, batch: RecordId) -> Result<Option<(RecordId, RecordId)>, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .set_key(Some(marker_key(batch).into_iter().collect()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem (batch marker)", e))?;
        let Some(item) = out.item else { return Ok(None) };
        let (Some(first), Some(last)) = (item.get("first"), item.get("last")) else { return Ok(None) };
        let parse = |v: &AttributeValue| v.as_s().ok().and_then(|v| RecordId::parse(v).ok());
        Ok(parse(first).zip(parse(last)))
    }

    pub(crate) async fn delete_marker(&self, batch: RecordId) -> Result<(), StoreError> {
        self.client()
            .delete_item()
            .table_name(self.table())
            .set_key(Some(marker_key(batch).into_iter().collect()))
            .send()
            .await
            .map_err(|e| classify("DeleteItem (batch marker)", e))?;
        Ok(())
    }

    /// Cleans up the staged items of `week` that will never be visible: those
    /// of aborted batches, and of batches that never committed and started
    /// more than [`ABANDONED_AFTER`] before `now` (aborted first, so their
    /// writer can no longer commit them). Committed batches and batches still
    /// in flight are left alone. Safe to run concurrently with ingest and with
    /// itself; the weekly function runs it under the week's lease before
    /// summarizing the week.
    #[instrument(skip_all, fields(table = %self.table(), week = %week))]
    pub async fn sweep_week(&self, week: IsoWeek, now: Timestamp) -> Result<SweepReport, StoreError> {
        let bounds = week_bounds(week);
        let mut staged: HashMap<RecordId, Vec<(String, String)>> = HashMap::new();
        for day in week.days() {
            for shard in 0..SHARDS {
                let pk = day_pk(day, shard);
                for (sk, batch) in self.partition_keys(&pk, &bounds, true).await? {
                    if let Some(batch) = batch {
                        staged.entry(batch).or_default().push((pk.clone(), sk));
                    }
                }
            }
        }
        let mut report = SweepReport::default();
        let markers = self.markers(staged.keys().copied()).await?;
        let abandoned_before = now.as_millis().saturating_sub(millis(ABANDONED_AFTER));
        for (batch, keys) in staged {
            let settled = match markers.get(&batch).copied().flatten() {
                Some(Marker::Committed { .. }) => continue,
                Some(Marker::Aborted) => Settled::Aborted,
                None if batch.timestamp().as_millis() < abandoned_before => {
                    let settled = self.abort(batch).await?;
                    if settled == Settled::Aborted {
                        tracing::info!(%batch, items = keys.len(), "aborted an abandoned batch");
                        report.aborted += 1;
                    }
                    settled
                }
                None => {
                    report.in_flight += 1;
                    continue;
                }
            };
            if settled == Settled::Aborted {
                report.deleted += self.delete_staged(batch, keys).await?;
            }
        }
        Ok(report)
    }

    /// Deletes these staged items of `batch`, each only if it still belongs
    /// to that batch (a restore may have replaced it with a record).
    async fn delete_staged(&self, batch: RecordId, keys: Vec<(String, String)>) -> Result<u64, StoreError> {
        let deletes = keys.into_iter().map(|(pk, sk)| async move {
            let result = self
                .client()
                .delete_item()
                .table_name(self.table())
                .key("pk", s(pk))
                .key("sk", s(sk))
                .condition_expression("#batch = :batch")
                .expression_attribute_names("#batch", BATCH_ATTR)
                .expression_attribute_values(":batch", s(batch.to_string()))
                .send()
                .await;
            match result {
                Ok(_) => Ok(1),
                Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(0),
                Err(e) => Err(classify("DeleteItem (staged record)", e)),
            }
        });
        futures::stream::iter(deletes)
            .buffer_unordered(BATCH_CONCURRENCY * 2)
            .try_fold(0, |a, b| async move { Ok(a + b) })
            .await
    }
}
