//! Write primitives with tally's retries on top of the SDK's: one
//! `TransactWriteItems` (cancellations classified by their reasons, the
//! transient ones retried) and one `BatchWriteItem` (unprocessed items
//! re-sent), plus chunked puts and deletes built on it.

use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{CancellationReason, DeleteRequest, PutRequest, TransactWriteItem, WriteRequest};
use futures::{StreamExt, TryStreamExt};
use tally_core::Record;
use tally_core::ports::StoreError;
use tally_core::retry::retry;

use super::DynamoDbRecordStore;
use super::codec::{classify, record_item, s};

/// BatchWriteItem's limit.
pub(crate) const BATCH_LIMIT: usize = 25;
/// TransactWriteItems' item limit: batches up to this size (idempotency key
/// included) commit in one transaction; larger ones are staged.
pub const TRANSACT_LIMIT: usize = 100;
/// TransactWriteItems' 4 MB request limit, with room for keys and attribute names.
pub const TRANSACT_MAX_BYTES: usize = 3 * 1024 * 1024;
/// Chunks of a batch written concurrently.
pub(crate) const BATCH_CONCURRENCY: usize = 8;

/// Whether `records` (plus `extra` items of at most `extra_bytes`) fit one transaction.
pub(super) fn fits_transaction(records: &[Record], extra: usize, extra_bytes: usize) -> bool {
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

impl DynamoDbRecordStore {
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
                    tracing::debug!(attempt = attempt.number, next_in = ?attempt.next_in, code = ?e.code(), error = %tally_core::error_chain(e), "transaction cancelled; retrying");
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

    /// Deletes the items with these keys, in BatchWriteItem chunks.
    pub(super) async fn delete_items(&self, keys: Vec<(String, String)>) -> Result<(), StoreError> {
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
    pub(super) async fn write_chunk(&self, chunk: &[Record]) -> Result<(), StoreError> {
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

/// What one BatchWriteItem attempt left undone.
pub(super) enum Leftover {
    /// DynamoDB accepted the request but left this many items unprocessed.
    Unprocessed(usize),
    /// The request failed (after the SDK's own retries).
    Failed(StoreError),
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
