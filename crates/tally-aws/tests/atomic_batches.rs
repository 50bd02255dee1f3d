//! Batches larger than one transaction are all or nothing too: failures
//! injected at each chunk, a writer killed between chunks, a reader running
//! through the commit, idempotent retries — against moto, through an HTTP
//! fault proxy (`common/fault_proxy.rs`). Run with
//! `./scripts/with-moto cargo test -p tally-aws` (fails loudly without moto).

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use common::fault_proxy::{Fault, FaultProxy, Gate};
use futures::StreamExt;
use tally_aws::batch::ABANDONED_AFTER;
use tally_aws::testing::{fresh_config, moto_endpoint};
use tally_aws::{AwsConfig, DynamoDbRecordStore, RetryPolicy};
use tally_core::idempotency::IdempotencyKey;
use tally_core::ports::{InsertOutcome, RecordStore, StoreError};
use tally_core::summary::{NoProgress, SummaryOptions, summarize_week};
use tally_core::testing::{FixedClock, MemorySummarySink, collect_week};
use tally_core::{
    BodyFormat, IdempotencyEntry, IngestError, IngestResponse, IngestService, IsoWeek, Limits, Record, RecordId,
    Timestamp,
};

/// 130 records: over the 100 of one transaction, six BatchWriteItem chunks.
const SMALL: usize = 130;

struct Env {
    store: Arc<DynamoDbRecordStore>,
    proxy: FaultProxy,
    config: AwsConfig,
    raw: aws_sdk_dynamodb::Client,
}

async fn env() -> Env {
    let config = fresh_config().await;
    let proxy = FaultProxy::start(moto_endpoint()).await;
    let store = DynamoDbRecordStore::new(proxy.dynamodb_client(), config.table.clone()).with_retry(RetryPolicy {
        max_attempts: 3,
        base: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        jitter: true,
    });
    let raw = tally_aws::dynamodb_client(&tally_aws::sdk_config(&config).await, None);
    Env { store: Arc::new(store), proxy, config, raw }
}

fn batch(at: Timestamp, n: usize) -> Vec<Record> {
    let base = rand::random::<u128>();
    (0..n)
        .map(|i| Record { id: RecordId::sequence(at, base, i), received_at: at, data: format!(r#"{{"i":{i}}}"#) })
        .collect()
}

fn sorted(records: &[Record]) -> Vec<Record> {
    let mut records = records.to_vec();
    records.sort_by_key(|r| r.id);
    records
}

/// What the table holds, read around the store: record items without and
/// with a `batch`, and the batch markers' states.
#[derive(Debug, Default, PartialEq, Eq)]
struct Contents {
    plain: usize,
    staged: usize,
    markers: Vec<String>,
}

async fn contents(env: &Env) -> Contents {
    let mut out = Contents::default();
    let mut start = None;
    loop {
        let page = env
            .raw
            .scan()
            .table_name(&env.config.table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items() {
            let pk = item["pk"].as_s().unwrap();
            if pk.starts_with("D#") {
                if item.contains_key("batch") { out.staged += 1 } else { out.plain += 1 }
            } else if pk.starts_with("B#") {
                out.markers.push(item["state"].as_s().unwrap().clone());
            }
        }
        start = page.last_evaluated_key.filter(|k| !k.is_empty());
        if start.is_none() {
            out.markers.sort();
            return out;
        }
    }
}

/// Waits until the table holds `staged` staged items (the writer's other
/// chunks have landed), failing after 30 s.
async fn until_staged(env: &Env, staged: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = contents(env).await.staged;
        if now == staged {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{now} staged items, expected {staged}");
        // Polls a condition (the writer's other chunks landing), not a guess of how long they take.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn summarized(store: &dyn RecordStore, week: IsoWeek) -> u64 {
    let sink = MemorySummarySink::default();
    // The week may be the current one: a run as of its end (a partial run
    // would count the same records).
    let clock = FixedClock::at(week.end());
    summarize_week(store, &sink, &clock, week, &SummaryOptions::default(), &NoProgress).await.unwrap().records
}

async fn visible(store: &dyn RecordStore, records: &[Record]) -> usize {
    let mut n = 0;
    for r in records {
        n += usize::from(store.get(r.id).await.unwrap().is_some());
    }
    n
}

fn after_abandonment() -> Timestamp {
    let later = ABANDONED_AFTER + Duration::from_secs(60);
    Timestamp::from_millis(Timestamp::now().as_millis() + i64::try_from(later.as_millis()).unwrap())
}

#[tokio::test]
async fn a_failure_at_any_chunk_leaves_none_of_the_batch_visible() {
    let env = env().await;
    let at = Timestamp::now();
    let week = IsoWeek::containing(at);
    let mut failed = Vec::new();
    for k in 0..SMALL.div_ceil(25) {
        // GIVEN DynamoDB fails every attempt at chunk k of a batch
        let records = batch(at, SMALL);
        let hits = env.proxy.inject("BatchWriteItem", records[k * 25].id.to_string(), Fault::server_error());
        // WHEN the batch is inserted THEN it is refused as unavailable (503)
        let err = env.store.insert(&records, None).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "chunk {k}: {err:?}");
        assert!(hits.load(std::sync::atomic::Ordering::SeqCst) >= 1, "chunk {k} was never sent");
        env.proxy.clear();
        // AND none of its records can be read back
        assert_eq!(visible(env.store.as_ref(), &records).await, 0, "failure at chunk {k}");
        failed.extend(records);
    }
    // AND none shows in a range read or in the week's summary
    assert_eq!(collect_week(env.store.as_ref(), week, 50).await, vec![]);
    assert_eq!(summarized(env.store.as_ref(), week).await, 0);
    let before = contents(&env).await;
    assert!(before.staged > 0, "the failed chunks left staged items behind: {before:?}");
    assert_eq!(before.markers, vec!["aborted"; 6], "each writer aborted its own batch");

    // WHEN a later batch succeeds THEN only its records show, never the failed ones
    let ok = batch(at, SMALL);
    assert_eq!(env.store.insert(&ok, None).await.unwrap(), InsertOutcome::Inserted);
    assert_eq!(collect_week(env.store.as_ref(), week, 50).await, sorted(&ok));
    assert_eq!(visible(env.store.as_ref(), &failed).await, 0);
    assert_eq!(summarized(env.store.as_ref(), week).await, SMALL as u64);

    // AND the sweep deletes every staged item of the failed batches, and only those
    let report = env.store.sweep_week(week, after_abandonment()).await.unwrap();
    assert_eq!(report.deleted as usize, before.staged);
    assert_eq!(report.aborted, 0, "already aborted by their writers");
    let after = contents(&env).await;
    assert_eq!((after.plain, after.staged), (0, SMALL), "{after:?}");
    assert_eq!(collect_week(env.store.as_ref(), week, 50).await, sorted(&ok));
}

#[tokio::test]
async fn a_writer_killed_between_chunks_leaves_nothing_visible_and_the_sweep_leaves_nothing() {
    let env = env().await;
    let at = Timestamp::now();
    let week = IsoWeek::containing(at);
    // GIVEN a 1000-record batch whose chunk 20 (of 40) never gets an answer
    let records = batch(at, 1000);
    let gate = Gate::new();
    env.proxy.inject("BatchWriteItem", records[20 * 25].id.to_string(), Fault::Hold(gate.clone()));
    let writer = tokio::spawn({
        let (store, records) = (env.store.clone(), records.clone());
        async move { store.insert(&records, None).await }
    });
    gate.reached().await;
    until_staged(&env, 39 * 25).await;
    // WHEN the writer is killed there, with 39 chunks written
    writer.abort();
    assert!(writer.await.unwrap_err().is_cancelled());

    // THEN no record is visible: by id, in a range read, in the summary
    assert_eq!(visible(env.store.as_ref(), &records).await, 0);
    assert_eq!(collect_week(env.store.as_ref(), week, 100).await, vec![]);
    assert_eq!(summarized(env.store.as_ref(), week).await, 0);
    // AND a sweep leaves a batch that may still be in flight alone
    let report = env.store.sweep_week(week, Timestamp::now()).await.unwrap();
    assert_eq!((report.in_flight, report.aborted, report.deleted), (1, 0, 0));
    // BUT once it is abandoned, aborts it and deletes every staged item
    let report = env.store.sweep_week(week, after_abandonment()).await.unwrap();
    assert_eq!((report.aborted, report.deleted), (1, 39 * 25));
    assert_eq!(contents(&env).await, Contents { plain: 0, staged: 0, markers: vec!["aborted".into()] });
    assert_eq!(visible(env.store.as_ref(), &records).await, 0);
}

#[tokio::test]
async fn a_reader_running_during_the_commit_sees_the_whole_batch_or_none_of_it() {
    let env = env().await;
    let at = Timestamp::now();
    let week = IsoWeek::containing(at);
    // GIVEN 30 records stored earlier, one by one
    let earlier: Vec<Record> = (0..30i64)
        .map(|i| {
            let t = Timestamp::from_millis(at.as_millis() - 1000 + i);
            Record { id: RecordId::generate(t), received_at: t, data: format!(r#"{{"early":{i}}}"#) }
        })
        .collect();
    for r in &earlier {
        env.store.insert(std::slice::from_ref(r), None).await.unwrap();
    }
    // AND a batch being written, held at its chunk 3 with every other chunk staged
    let records = batch(at, SMALL);
    let gate = Gate::new();
    env.proxy.inject("BatchWriteItem", records[3 * 25].id.to_string(), Fault::Hold(gate.clone()));
    let writer = tokio::spawn({
        let (store, records) = (env.store.clone(), records.clone());
        async move { store.insert(&records, None).await }
    });
    gate.reached().await;
    until_staged(&env, SMALL - 25).await;
    assert_eq!(env.store.get(records[0].id).await.unwrap(), None, "staged, not visible");
    assert_eq!(collect_week(env.store.as_ref(), week, 10).await, earlier);

    // WHEN a reader has read its first page, and the batch then commits
    let mut pages = env.store.scan_week(week, 10);
    let mut seen = pages.next().await.unwrap().unwrap();
    gate.open();
    assert_eq!(writer.await.unwrap().unwrap(), InsertOutcome::Inserted);
    while let Some(page) = pages.next().await {
        seen.extend(page.unwrap());
    }
    // THEN that reader saw none of the batch (it started before the commit)
    let ids: BTreeSet<RecordId> = records.iter().map(|r| r.id).collect();
    assert_eq!(seen.iter().filter(|r| ids.contains(&r.id)).count(), 0);
    assert_eq!(seen, earlier);
    // AND a reader that starts after the commit sees all of it
    let mut everything = earlier.clone();
    everything.extend(records.iter().cloned());
    assert_eq!(collect_week(env.store.as_ref(), week, 10).await, sorted(&everything));
    assert_eq!(visible(env.store.as_ref(), &records).await, SMALL);
}

fn key(k: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey::parse(k.as_bytes()).unwrap())
}

fn ingest(store: Arc<DynamoDbRecordStore>, at: Timestamp) -> IngestService {
    IngestService::new(store, Arc::new(FixedClock::at(at)), Limits::default())
}

fn ndjson(n: usize) -> Vec<u8> {
    (0..n).map(|i| format!("{{\"n\":{i}}}\n")).collect::<String>().into_bytes()
}

/// The request body carries record 60's data as `"{\"n\":60}"`.
const RECORD_60: &str = r#"\"n\":60}"#;

fn ids_of(response: &IngestResponse) -> Vec<RecordId> {
    match response {
        IngestResponse::Batch { ids, .. } => ids.clone(),
        IngestResponse::Single { id, .. } => vec![*id],
    }
}

async fn assert_exactly(env: &Env, week: IsoWeek, ids: &[RecordId]) {
    let stored: Vec<RecordId> = collect_week(env.store.as_ref(), week, 50).await.iter().map(|r| r.id).collect();
    let mut expected = ids.to_vec();
    expected.sort();
    assert_eq!(stored, expected);
}

#[tokio::test]
async fn an_idempotent_batch_that_failed_converges_on_one_copy_when_retried() {
    let env = env().await;
    let t = Timestamp::now();
    let week = IsoWeek::containing(t);
    let body = ndjson(SMALL);
    // GIVEN a keyed request that failed at the chunk holding record 60
    env.proxy.inject("BatchWriteItem", RECORD_60, Fault::server_error());
    let err = ingest(env.store.clone(), t).ingest(&body, BodyFormat::NdJson, key("big")).await.unwrap_err();
    assert!(matches!(err, IngestError::Store(StoreError::Unavailable { .. })), "{err:?}");
    env.proxy.clear();
    assert_eq!(collect_week(env.store.as_ref(), week, 50).await, vec![]);

    // WHEN the client retries with the same key and body
    let retry = ingest(env.store.clone(), Timestamp::from_millis(t.as_millis() + 1000))
        .ingest(&body, BodyFormat::NdJson, key("big"))
        .await
        .unwrap();
    // THEN exactly one copy is stored, the one the answer names
    assert_exactly(&env, week, &ids_of(&retry.response)).await;
    // AND a further retry replays that answer without writing
    let again = ingest(env.store.clone(), Timestamp::from_millis(t.as_millis() + 2000))
        .ingest(&body, BodyFormat::NdJson, key("big"))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.body, retry.body);
    // AND after the sweep only that copy is left in the table
    env.store.sweep_week(week, after_abandonment()).await.unwrap();
    let left = contents(&env).await;
    assert_eq!((left.plain, left.staged), (0, SMALL), "{left:?}");
    assert_exactly(&env, week, &ids_of(&retry.response)).await;
}

#[tokio::test]
async fn an_idempotent_batch_whose_writer_was_killed_converges_on_one_copy_when_retried() {
    let env = env().await;
    let t = Timestamp::now();
    let week = IsoWeek::containing(t);
    let body = ndjson(SMALL);
    // GIVEN a keyed request whose writer was killed with the chunk of record 60 in flight
    let gate = Gate::new();
    env.proxy.inject("BatchWriteItem", RECORD_60, Fault::Hold(gate.clone()));
    let writer = tokio::spawn({
        let (service, body) = (ingest(env.store.clone(), t), body.clone());
        async move { service.ingest(&body, BodyFormat::NdJson, key("killed")).await }
    });
    gate.reached().await;
    until_staged(&env, SMALL - 25).await;
    writer.abort();
    assert!(writer.await.unwrap_err().is_cancelled());
    env.proxy.clear();
    assert_eq!(collect_week(env.store.as_ref(), week, 50).await, vec![]);

    // WHEN the client retries at once with the same key and body
    let retry = ingest(env.store.clone(), Timestamp::from_millis(t.as_millis() + 500))
        .ingest(&body, BodyFormat::NdJson, key("killed"))
        .await
        .unwrap();
    // THEN the retry finished the first attempt's batch: its answer, its ids, one copy
    assert!(retry.replayed);
    let ids = ids_of(&retry.response);
    assert_eq!(ids.len(), SMALL);
    assert!(ids.iter().all(|id| id.timestamp() == t), "the first attempt's ids");
    assert_exactly(&env, week, &ids).await;
    env.store.sweep_week(week, after_abandonment()).await.unwrap();
    let left = contents(&env).await;
    assert_eq!((left.plain, left.staged, left.markers.clone()), (0, SMALL, vec!["committed".into()]), "{left:?}");
}

#[tokio::test]
async fn a_taken_key_is_told_by_the_cancellation_reason_of_the_transaction() {
    let env = env().await;
    let now = Timestamp::now();
    let entry = IdempotencyEntry {
        key: IdempotencyKey::parse(b"taken").unwrap(),
        fingerprint: tally_core::Fingerprint::of("json", b"[1,2,3]"),
        received_at: now,
        status: 201,
        response: r#"{"count":3,"ids":[]}"#.into(),
        expires_at: Timestamp::from_millis(now.as_millis() + tally_core::idempotency::RETENTION_MS),
    };
    let records = batch(now, 3);
    assert_eq!(env.store.insert(&records, Some(&entry)).await.unwrap(), InsertOutcome::Inserted);
    // WHEN the same key comes again, with other records and another body
    let other = IdempotencyEntry { fingerprint: tally_core::Fingerprint::of("json", b"[4]"), ..entry.clone() };
    let outcome = env.store.insert(&batch(now, 3), Some(&other)).await.unwrap();
    // THEN moto cancels the transaction with ConditionalCheckFailed on the key, and the stored entry comes back
    assert_eq!(outcome, InsertOutcome::KeyExists(entry));
    assert_eq!(collect_week(env.store.as_ref(), IsoWeek::containing(now), 10).await, sorted(&records));
    // The raw cancellation, for the record: one reason per item, the key's first.
    let err = env
        .raw
        .transact_write_items()
        .transact_items(
            aws_sdk_dynamodb::types::TransactWriteItem::builder()
                .put(
                    aws_sdk_dynamodb::types::Put::builder()
                        .table_name(&env.config.table)
                        .item("pk", AttributeValue::S("I#taken".into()))
                        .item("sk", AttributeValue::S("I".into()))
                        .condition_expression("attribute_not_exists(pk)")
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    let Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(
        c,
    )) = err.as_service_error()
    else {
        panic!("{err:?}")
    };
    assert_eq!(
        tally_aws::dynamo::cancellation(c.cancellation_reasons()),
        tally_aws::dynamo::Cancellation::ConditionFailed(vec![0])
    );
}

#[tokio::test]
async fn a_batch_that_outlasts_the_commit_window_is_cancelled_not_committed() {
    let env = env().await;
    let at = Timestamp::now();
    // GIVEN a store whose batches must commit at once (a commit window of zero)
    let store = DynamoDbRecordStore::new(env.proxy.dynamodb_client(), env.config.table.clone())
        .with_commit_window(Duration::ZERO);
    let records = batch(at, SMALL);
    // WHEN a batch takes any time at all THEN it is refused, and aborted for good
    let err = store.insert(&records, None).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert_eq!(visible(&store, &records).await, 0);
    assert_eq!(collect_week(&store, IsoWeek::containing(at), 50).await, vec![]);
    let left = contents(&env).await;
    assert_eq!((left.staged, left.markers), (SMALL, vec!["aborted".to_owned()]));
}

#[tokio::test]
async fn lifecycle_operations_see_only_committed_batches() {
    use tally_core::ports::{RecordLifecycle, RestoreOutcome};
    let env = env().await;
    let at = Timestamp::now();
    let week = IsoWeek::containing(at);
    // GIVEN a committed staged batch
    let committed = batch(at, SMALL);
    env.store.insert(&committed, None).await.unwrap();
    // AND a batch whose writer was killed with its chunk 1 in flight
    let killed = batch(at, SMALL);
    let gate = Gate::new();
    env.proxy.inject("BatchWriteItem", killed[25].id.to_string(), Fault::Hold(gate.clone()));
    let writer = tokio::spawn({
        let (store, records) = (env.store.clone(), killed.clone());
        async move { store.insert(&records, None).await }
    });
    gate.reached().await;
    until_staged(&env, 2 * SMALL - 25).await;
    writer.abort();
    assert!(writer.await.unwrap_err().is_cancelled());

    // THEN erasing a record of the uncommitted batch finds nothing, and leaves its item alone
    assert!(!env.store.delete(killed[0].id).await.unwrap());
    assert_eq!(contents(&env).await.staged, 2 * SMALL - 25);
    // AND erasing a record of the committed batch erases it
    assert!(env.store.delete(committed[0].id).await.unwrap());
    assert_eq!(env.store.get(committed[0].id).await.unwrap(), None);
    // AND restoring a record over an uncommitted staged item writes it (absent, not a conflict)
    let restored = Record { data: r#"{"restored":true}"#.into(), ..killed[0].clone() };
    let outcome = env.store.restore(std::slice::from_ref(&restored)).await.unwrap();
    assert_eq!(outcome, RestoreOutcome::Restored { inserted: 1, present: 0 });
    assert_eq!(env.store.get(restored.id).await.unwrap(), Some(restored.clone()));
    // AND restoring committed records finds them present
    let outcome = env.store.restore(&committed[1..]).await.unwrap();
    assert_eq!(outcome, RestoreOutcome::Restored { inserted: 0, present: SMALL - 1 });
    // AND the sweep of the abandoned batch keeps the restored record
    let report = env.store.sweep_week(week, after_abandonment()).await.unwrap();
    assert_eq!((report.aborted, report.deleted), (1, SMALL as u64 - 25 - 1));
    assert_eq!(env.store.get(restored.id).await.unwrap(), Some(restored));

    // WHEN the retention deletes the week THEN it counts the visible records
    // and removes every item, the committed batch's marker included
    assert_eq!(env.store.delete_week(week).await.unwrap(), SMALL as u64);
    assert_eq!(contents(&env).await, Contents { plain: 0, staged: 0, markers: vec!["aborted".into()] });
}
