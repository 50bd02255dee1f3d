//! [`RecordLifecycle`] on the table: restoring exported records, erasing one
//! record, and deleting a whole week (staged items and batch markers
//! included).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::ReturnValue;
use futures::{StreamExt, TryStreamExt};
use tally_core::ports::{RecordLifecycle, RecordStore, RestoreOutcome, StoreError};
use tally_core::{IsoWeek, Record, RecordId, Timestamp};
use tracing::instrument;

use super::DynamoDbRecordStore;
use super::codec::{classify, s};
use super::layout::{SHARDS, WEEKS_PK, day_pk, record_pk, week_bounds};
use super::write::{BATCH_CONCURRENCY, BATCH_LIMIT};
use crate::batch::Marker;

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
