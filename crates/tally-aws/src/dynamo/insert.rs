//! Inserting a batch: one PutItem, one transaction, or staged under a
//! marker ([`crate::batch`]); with an idempotency key, the key claimed,
//! completed and — after an abandoned attempt — taken over (see the
//! [module docs](super), "Idempotent batches").

use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem};
use tally_core::idempotency::{IdempotencyEntry, IdempotencyKey};
use tally_core::ports::{InsertOutcome, StoreError};
use tally_core::{IsoWeek, Record, RecordId, Timestamp};

use super::DynamoDbRecordStore;
use super::codec::{Item, classify, entry_item, n, parse_entry, record_item, s};
use super::layout::{KEY_SK, WEEKS_PK, key_pk};
use super::write::{TxnFailure, fits_transaction};
use crate::batch::{Marker, Settled};

impl DynamoDbRecordStore {
    /// Puts the `W` marker of every week of `records` not yet marked by this process.
    pub(super) async fn mark_weeks(&self, records: &[Record]) -> Result<(), StoreError> {
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
    pub(super) async fn write_records(&self, records: &[Record]) -> Result<(), StoreError> {
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

    /// Claims `entry.key` (as incomplete). `Ok(None)` if claimed, else the
    /// entry already in the table and whether it is complete.
    pub(super) async fn claim(&self, entry: &IdempotencyEntry) -> Result<Option<(IdempotencyEntry, bool)>, StoreError> {
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
    pub(super) async fn take_over(&self, old: &IdempotencyEntry, new: &IdempotencyEntry) -> Result<(), StoreError> {
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

    pub(super) async fn get_entry_item(&self, key: &IdempotencyKey) -> Result<Option<Item>, StoreError> {
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
    pub(super) async fn insert_transacted(
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
    pub(super) async fn insert_staged(
        &self,
        records: &[Record],
        entry: &IdempotencyEntry,
    ) -> Result<InsertOutcome, StoreError> {
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
