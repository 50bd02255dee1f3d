//! Throttling edge cases moto cannot produce: the SDK talks to canned HTTP
//! responses (`aws-smithy-http-client`'s test client), not to a fake service.
//! Everything else is tested against moto in `moto.rs`.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::test_util::infallible_client_fn;
use aws_smithy_types::retry::RetryConfig;
use tally_aws::{DynamoDbRecordStore, RetryPolicy};
use tally_core::ports::{InsertOutcome, RecordStore, StoreError};
use tally_core::{Record, RecordId, Timestamp};

const UNPROCESSED: &str = r#"{"UnprocessedItems":{"t":[{"PutRequest":{"Item":{"pk":{"S":"D#2026-11-23#01"},"sk":{"S":"01KAQ6ZP4W0000000000000000"},"data":{"S":"{}"},"received_at":{"N":"1"}}}}]}}"#;
const THROTTLED: &str =
    r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"slow down"}"#;
const INVALID: &str = r#"{"__type":"com.amazon.coral.validate#ValidationException","message":"bad"}"#;

#[derive(Default)]
struct Calls {
    batch: AtomicUsize,
    txn: AtomicUsize,
    put: AtomicUsize,
}

/// A store whose HTTP layer answers with `respond(operation, calls so far of it)`.
fn store(calls: Arc<Calls>, respond: fn(&str, usize) -> (u16, &'static str)) -> DynamoDbRecordStore {
    let http = infallible_client_fn(move |req: http::Request<aws_smithy_types::body::SdkBody>| {
        let target = req.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let op = target.rsplit('.').next().unwrap_or_default().to_owned();
        let counter = match op.as_str() {
            "BatchWriteItem" => &calls.batch,
            "TransactWriteItems" => &calls.txn,
            _ => &calls.put,
        };
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let (status, body) = respond(&op, n);
        http::Response::builder().status(status).body(body).unwrap()
    });
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .http_client(http)
        .retry_config(RetryConfig::standard().with_max_attempts(2).with_initial_backoff(Duration::from_millis(1)))
        .build();
    DynamoDbRecordStore::new(aws_sdk_dynamodb::Client::from_conf(config), "t").with_retry(RetryPolicy {
        max_attempts: 3,
        base: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
        jitter: true,
    })
}

fn records(n: usize) -> Vec<Record> {
    let at = Timestamp::from_millis(1_795_939_200_000);
    (0..n).map(|i| Record { id: RecordId::generate(at), received_at: at, data: format!(r#"{{"i":{i}}}"#) }).collect()
}

#[tokio::test]
async fn unprocessed_items_are_resent_until_written() {
    let calls = Arc::new(Calls::default());
    let store = store(calls.clone(), |op, n| match (op, n) {
        ("BatchWriteItem", 0) => (200, UNPROCESSED),
        ("BatchWriteItem", _) => (200, r#"{"UnprocessedItems":{}}"#),
        _ => (200, "{}"),
    });
    // Over TRANSACT_LIMIT records, so BatchWriteItem in 5 chunks; the first answer leaves one item over.
    assert_eq!(store.insert(&records(110), None).await.unwrap(), InsertOutcome::Inserted);
    assert_eq!(calls.batch.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn unprocessed_items_that_outlast_the_retries_are_unavailable_not_inserted() {
    let calls = Arc::new(Calls::default());
    let store = store(calls.clone(), |op, _| if op == "BatchWriteItem" { (200, UNPROCESSED) } else { (200, "{}") });
    // Five chunks of 25 written concurrently, three attempts each; the first
    // chunk to give up fails the insert and stops the others.
    let err = store.insert(&records(125), None).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let batches = calls.batch.load(Ordering::SeqCst);
    assert!((3..=15).contains(&batches), "{batches} BatchWriteItem calls");
}

/// A cancellation whose reasons (one per item) carry these codes, and whose
/// message says something else: only the reasons may decide.
fn cancelled(codes: &[&str], message: &str) -> &'static str {
    let reasons: Vec<String> = codes.iter().map(|c| format!(r#"{{"Code":"{c}"}}"#)).collect();
    let body = format!(
        r#"{{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","message":"{message}","CancellationReasons":[{}]}}"#,
        reasons.join(",")
    );
    Box::leak(body.into_boxed_str())
}

#[tokio::test]
async fn a_transaction_cancelled_for_throttled_items_is_retried_then_unavailable() {
    let calls = Arc::new(Calls::default());
    let store = store(calls.clone(), |op, _| match op {
        "TransactWriteItems" => (400, cancelled(&["None", "ThrottlingError"], "Transaction cancelled")),
        _ => (200, "{}"),
    });
    let err = store.insert(&records(2), None).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    // Our three attempts, each sent once: the SDK does not retry cancellations.
    assert_eq!(calls.txn.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_transaction_cancelled_by_a_conflict_is_retried_until_it_commits() {
    let calls = Arc::new(Calls::default());
    let store = store(calls.clone(), |op, n| match (op, n) {
        ("TransactWriteItems", 0) => (400, cancelled(&["TransactionConflict", "None"], "Transaction cancelled")),
        _ => (200, "{}"),
    });
    assert_eq!(store.insert(&records(2), None).await.unwrap(), InsertOutcome::Inserted);
    assert_eq!(calls.txn.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_cancellation_is_classified_by_its_reasons_not_by_its_message() {
    let calls = Arc::new(Calls::default());
    // The message names throttling and a conflict; the reasons say the request is invalid.
    let store = store(calls.clone(), |op, _| match op {
        "TransactWriteItems" => (
            400,
            cancelled(
                &["ValidationError", "None"],
                "Transaction cancelled, please refer cancellation reasons for specific reasons [ThrottlingError, TransactionConflict]",
            ),
        ),
        _ => (200, "{}"),
    });
    let err = store.insert(&records(2), None).await.unwrap_err();
    assert!(matches!(err, StoreError::Internal { .. }), "{err:?}");
    assert_eq!(calls.txn.load(Ordering::SeqCst), 1, "a validation error is not retried");
}

#[test]
fn cancellation_reasons_decide_what_a_cancellation_asks_for() {
    use aws_sdk_dynamodb::types::CancellationReason;
    use tally_aws::dynamo::{Cancellation, cancellation};
    let reasons =
        |codes: &[&str]| codes.iter().map(|c| CancellationReason::builder().code(*c).build()).collect::<Vec<_>>();
    assert_eq!(cancellation(&reasons(&["None", "ConditionalCheckFailed"])), Cancellation::ConditionFailed(vec![1]));
    // A failed condition is the answer even when another item also conflicted.
    assert_eq!(
        cancellation(&reasons(&["ConditionalCheckFailed", "TransactionConflict"])),
        Cancellation::ConditionFailed(vec![0])
    );
    assert_eq!(cancellation(&reasons(&["TransactionConflict", "None"])), Cancellation::Transient);
    assert_eq!(cancellation(&reasons(&["ProvisionedThroughputExceeded"])), Cancellation::Transient);
    assert_eq!(cancellation(&reasons(&["ThrottlingError", "ValidationError"])), Cancellation::Fatal);
    assert_eq!(cancellation(&reasons(&["ItemCollectionSizeLimitExceeded"])), Cancellation::Fatal);
    assert_eq!(cancellation(&[]), Cancellation::Fatal);
}

#[tokio::test]
async fn throttling_of_a_whole_transaction_is_retried_by_the_sdk_only() {
    let calls = Arc::new(Calls::default());
    let store = store(calls.clone(), |op, _| if op == "TransactWriteItems" { (400, THROTTLED) } else { (200, "{}") });
    let err = store.insert(&records(2), None).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    // The SDK's two attempts (max_attempts 2), and no loop of ours on top.
    assert_eq!(calls.txn.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn throttling_that_outlasts_the_sdk_retries_is_unavailable() {
    let calls = Arc::new(Calls::default());
    let store = store(calls.clone(), |_, _| (400, THROTTLED));
    let err = store.insert(&records(1), None).await.unwrap_err();
    let StoreError::Unavailable { retry_after, .. } = &err else { panic!("{err:?}") };
    assert!(*retry_after >= Duration::from_secs(1));
    // The SDK retried once (max_attempts 2) before giving up.
    assert_eq!(calls.put.load(Ordering::SeqCst), 2);
    let err = store.get(RecordId::generate(Timestamp::now())).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn a_rejected_request_is_internal_not_retried_by_clients() {
    let calls = Arc::new(Calls::default());
    let store = store(calls.clone(), |_, _| (400, INVALID));
    let err = store.insert(&records(1), None).await.unwrap_err();
    assert!(matches!(err, StoreError::Internal { .. }), "{err:?}");
}
