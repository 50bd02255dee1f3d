//! The AWS adapters against a real emulator. Run with
//! `./scripts/with-moto cargo test -p tally-aws` (fails loudly without moto).

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tally_aws::testing::{fresh_adapters, fresh_config};
use tally_aws::{DynamoDbRecordStore, S3SummarySink, S3WeekRefresh, SecretsManagerLinkSecret, dynamo::SHARDS};
use tally_core::idempotency::IdempotencyKey;
use tally_core::ports::{Acquired, InsertOutcome, RecordStore, SummarySink, WeekLock, WeekRefresh};
use tally_core::testing::{
    FixedClock, MemoryRecordStore, collect_week, lifecycle_contract, lock_contract, store_contract,
};
use tally_core::{BodyFormat, IngestError, IngestService, IsoWeek, Limits, Record, RecordId, Timestamp};

async fn store() -> DynamoDbRecordStore {
    fresh_adapters().await.0
}

fn record(at_ms: i64, data: String) -> Record {
    let at = Timestamp::from_millis(at_ms);
    Record { id: RecordId::generate(at), received_at: at, data }
}

async fn raw_clients(config: &tally_aws::AwsConfig) -> (aws_sdk_dynamodb::Client, aws_sdk_s3::Client) {
    let sdk = tally_aws::sdk_config(config).await;
    (tally_aws::dynamodb_client(&sdk, None), tally_aws::s3_client(&sdk, true))
}

#[tokio::test]
async fn dynamodb_store_meets_the_store_contract() {
    store_contract(&store().await).await;
}

#[tokio::test]
async fn dynamodb_store_meets_the_lifecycle_contract() {
    lifecycle_contract(&store().await).await;
}

#[tokio::test]
async fn a_batch_of_1000_is_written_in_chunks_and_reads_back_in_order() {
    let store = store().await;
    let week = IsoWeek::parse("2026-W47").unwrap();
    // GIVEN 1000 records spread over the week (more than 40 BatchWriteItem chunks)
    let step = (week.end().as_millis() - week.start().as_millis()) / 1000;
    let batch: Vec<Record> =
        (0..1000).map(|i| record(week.start().as_millis() + i * step, format!(r#"{{"i":{i}}}"#))).collect();
    // WHEN inserted as one batch
    assert_eq!(store.insert(&batch, None).await.unwrap(), InsertOutcome::Inserted);
    // THEN every record is there, and the week reads back in id order
    for r in batch.iter().step_by(97) {
        assert_eq!(store.get(r.id).await.unwrap().as_ref(), Some(r));
    }
    let mut expected = batch.clone();
    expected.sort_by_key(|r| r.id);
    assert_eq!(collect_week(&store, week, 128).await, expected);
    assert_eq!(store.weeks().await.unwrap(), vec![week]);
}

#[tokio::test]
async fn a_batch_of_up_to_100_is_all_or_nothing() {
    let store = store().await;
    let at = Timestamp::now();
    // GIVEN a batch DynamoDB must refuse: its last item repeats the first one's key
    let mut batch: Vec<Record> = (0..60)
        .map(|i| Record { id: RecordId::sequence(at, 7, i), received_at: at, data: format!("{{\"i\":{i}}}") })
        .collect();
    batch.push(batch[0].clone());
    // WHEN it is inserted THEN it fails and none of its records were stored
    assert!(store.insert(&batch, None).await.is_err());
    for r in &batch[..60] {
        assert_eq!(store.get(r.id).await.unwrap(), None, "record {} of a failed batch was stored", r.id);
    }
    // AND the same batch without the duplicate is stored whole
    batch.pop();
    assert_eq!(store.insert(&batch, None).await.unwrap(), InsertOutcome::Inserted);
    for r in &batch {
        assert_eq!(store.get(r.id).await.unwrap().as_ref(), Some(r));
    }
}

#[tokio::test]
async fn a_week_scan_merges_all_shards_of_all_seven_days_in_id_order() {
    let store = store().await;
    let week = IsoWeek::parse("2026-W20").unwrap();
    // GIVEN records in every (day, shard) partition of the week, several per millisecond
    let mut records = Vec::new();
    for (d, day) in week.days().into_iter().enumerate() {
        let day_start = tally_core::week::date_start(day).as_millis();
        let mut shards = BTreeSet::new();
        let mut i = 0i64;
        while shards.len() < usize::from(SHARDS) || i < 40 {
            // Clustered timestamps make ids within one ms differ only in their random part.
            let r = record(day_start + (i * 7_919_000) % 86_400_000 + (i % 3), format!(r#"{{"d":{d},"i":{i}}}"#));
            shards.insert(r.id.shard(SHARDS));
            records.push(r);
            i += 1;
        }
    }
    // AND records just outside the week
    let before = record(week.start().as_millis() - 1, r#"{"out":"before"}"#.into());
    let after = record(week.end().as_millis(), r#"{"out":"after"}"#.into());
    store.insert(&records, None).await.unwrap();
    store.insert(&[before.clone(), after.clone()], None).await.unwrap();

    // WHEN the week is scanned in small pages
    let scanned = collect_week(&store, week, 10).await;

    // THEN it is exactly the week's records, in id order
    records.sort_by_key(|r| r.id);
    assert_eq!(scanned.len(), records.len());
    assert_eq!(scanned, records);
    assert_eq!(collect_week(&store, week.previous(), 10).await, vec![before]);
    assert_eq!(collect_week(&store, week.next(), 10).await, vec![after]);
    assert_eq!(store.weeks().await.unwrap(), vec![week.previous(), week, week.next()]);
}

fn ingest(store: Arc<dyn RecordStore>, at_ms: i64) -> IngestService {
    IngestService::new(store, Arc::new(FixedClock::at(Timestamp::from_millis(at_ms))), Limits::default())
}

fn key(k: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey::parse(k.as_bytes()).unwrap())
}

#[tokio::test]
async fn idempotent_requests_replay_and_conflict() {
    let store: Arc<dyn RecordStore> = Arc::new(store().await);
    // Keys expire 24 h after `received_at`, so these requests happen now.
    let t = Timestamp::now().as_millis();
    let body = br#"[{"a":1},{"a":2},{"a":3}]"#;
    let first = ingest(store.clone(), t).ingest(body, BodyFormat::Json, key("k-1")).await.unwrap();
    // A retry an hour later is answered from the stored response and writes nothing.
    let again = ingest(store.clone(), t + 3_600_000).ingest(body, BodyFormat::Json, key("k-1")).await.unwrap();
    assert!(!first.replayed && again.replayed);
    assert_eq!(first.body, again.body);
    assert_eq!(collect_week(store.as_ref(), IsoWeek::containing(Timestamp::from_millis(t)), 100).await.len(), 3);
    // Same key, other body: conflict.
    let err = ingest(store.clone(), t).ingest(br#"[{"a":1}]"#, BodyFormat::Json, key("k-1")).await.unwrap_err();
    assert!(matches!(err, IngestError::IdempotencyConflict), "{err:?}");
    // A single record with a key.
    let one = ingest(store.clone(), t).ingest(br#"{"x":1}"#, BodyFormat::Json, key("k-2")).await.unwrap();
    let id = one.response.location_id().unwrap();
    assert_eq!(store.get(id).await.unwrap().unwrap().data, r#"{"x":1}"#);
}

#[tokio::test]
async fn an_idempotent_batch_interrupted_half_way_converges_on_retry() {
    let config = fresh_config().await;
    let (dynamo, _) = raw_clients(&config).await;
    let store: Arc<dyn RecordStore> = Arc::new(DynamoDbRecordStore::new(dynamo.clone(), config.table.clone()));
    // Keys expire 24 h after `received_at`, so these requests happen now.
    let t1 = Timestamp::now().as_millis() - 10_000;
    let week = IsoWeek::containing(Timestamp::from_millis(t1));
    let body = b"{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n";

    // GIVEN what the first attempt would have produced (the same service on a memory store)
    let memory = Arc::new(MemoryRecordStore::default());
    let original = ingest(memory.clone(), t1).ingest(body, BodyFormat::NdJson, key("half")).await.unwrap();
    let entry = memory.idempotency_entry(&key("half").unwrap()).await.unwrap().unwrap();
    let records = collect_week(memory.as_ref(), week, 100).await;
    assert_eq!(records.len(), 3);
    // AND a DynamoDB table where that attempt claimed the key but wrote one record of three
    let first = records.iter().find(|r| r.id == entry.record_id(0)).unwrap();
    store.insert(std::slice::from_ref(first), Some(&entry)).await.unwrap();
    dynamo
        .update_item()
        .table_name(&config.table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S("I#half".into()))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("I".into()))
        .update_expression("SET complete = :f")
        .expression_attribute_values(":f", aws_sdk_dynamodb::types::AttributeValue::Bool(false))
        .send()
        .await
        .unwrap();
    // An unfinished entry is not offered for replay.
    assert_eq!(store.idempotency_entry(&key("half").unwrap()).await.unwrap(), None);

    // WHEN the client retries two seconds later
    let retry = ingest(store.clone(), t1 + 2000).ingest(body, BodyFormat::NdJson, key("half")).await.unwrap();

    // THEN it gets the original answer, and exactly the original records are stored
    assert!(retry.replayed);
    assert_eq!(retry.body, original.body);
    assert_eq!(collect_week(store.as_ref(), week, 100).await, records);
    assert_eq!(store.idempotency_entry(&key("half").unwrap()).await.unwrap(), Some(entry));
    // AND a further retry replays without writing
    let again = ingest(store.clone(), t1 + 9000).ingest(body, BodyFormat::NdJson, key("half")).await.unwrap();
    assert_eq!(again.body, original.body);
    assert_eq!(collect_week(store.as_ref(), week, 100).await.len(), 3);
}

fn week() -> IsoWeek {
    IsoWeek::parse("2026-W47").unwrap()
}

#[tokio::test]
async fn s3_sink_meets_the_sink_contract() {
    let config = fresh_config().await;
    let (_, s3) = raw_clients(&config).await;
    // Small parts, so the contract's streamed uploads go multipart (and its aborts abort one).
    let sink = S3SummarySink::new(s3.clone(), config.bucket.clone(), None).with_part_size(32 * 1024);
    tally_core::testing::sink_contract(&sink).await;
    // The aborted and dropped uploads left no multipart upload behind (the drop aborts in the background).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while multipart_uploads(&s3, &config.bucket).await > 0 {
        assert!(std::time::Instant::now() < deadline, "a multipart upload of the contract was never aborted");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn s3_week_refresh_meets_the_refresh_contract() {
    let (_, sink, _) = fresh_adapters().await;
    tally_core::testing::refresh_contract(&S3WeekRefresh::new(&sink)).await;
    // Requests are not summaries: no week was listed as complete on the way.
    assert_eq!(sink.list_weeks().await.unwrap(), vec![]);
}

#[tokio::test]
async fn secrets_manager_link_secret_meets_the_secret_contract() {
    let config = fresh_config().await;
    let arn = tally_aws::testing::create_link_secret(&config).await;
    let client = tally_aws::secrets_manager_client(&tally_aws::sdk_config(&config).await);
    // Two functions' adapters (the API checks links, the weekly run signs them) read one secret.
    let (api, weekly) =
        (SecretsManagerLinkSecret::new(client.clone(), arn.clone()), SecretsManagerLinkSecret::new(client, arn));
    tally_core::testing::link_secret_contract(&api, &weekly).await;
}

#[tokio::test]
async fn a_missing_or_short_link_secret_says_what_to_fix() {
    use tally_core::ports::{LinkSecretStore, SecretError};
    let config = fresh_config().await;
    let client = tally_aws::secrets_manager_client(&tally_aws::sdk_config(&config).await);
    let missing = SecretsManagerLinkSecret::new(client.clone(), "no-such-secret").load().await.unwrap_err();
    assert!(matches!(missing, SecretError::Invalid { .. }), "{missing:?}");
    assert!(missing.to_string().contains("no-such-secret") && missing.to_string().contains("ReportLinkSecret"));
    let name = tally_aws::testing::unique_name("short");
    client.create_secret().name(&name).secret_string("too short").send().await.unwrap();
    let short = SecretsManagerLinkSecret::new(client, name).load().await.unwrap_err();
    assert!(matches!(short, SecretError::Invalid { .. }), "{short:?}");
}

#[tokio::test]
async fn s3_sink_honours_its_prefix() {
    let config = fresh_config().await;
    let (_, s3) = raw_clients(&config).await;
    let sink = S3SummarySink::new(s3.clone(), config.bucket.clone(), Some("team/a".into()));
    let info = sink.commit_week(week(), Bytes::from_static(b"{}")).await.unwrap();
    assert_eq!(info.key, "team/a/summaries/2026-W47/manifest.json");
    assert_eq!(sink.list_weeks().await.unwrap(), vec![week()]);
    assert_eq!(S3SummarySink::new(s3, config.bucket.clone(), None).list_weeks().await.unwrap(), vec![]);
    // The site's index sits beside the week folders and is not a week.
    let info = sink.put_index("index.html", "text/html; charset=utf-8", Bytes::from_static(b"<p>")).await.unwrap();
    assert_eq!(info.key, "team/a/summaries/index.html");
    assert_eq!(sink.list_weeks().await.unwrap(), vec![week()]);
}

#[tokio::test]
async fn a_week_refresh_request_is_an_empty_object_beside_the_summary() {
    let config = fresh_config().await;
    let (_, s3) = raw_clients(&config).await;
    for prefix in [None, Some("team/a")] {
        let sink = S3SummarySink::new(s3.clone(), config.bucket.clone(), prefix.map(Into::into));
        let refresh = S3WeekRefresh::new(&sink);
        let expected =
            format!("{}summaries/2026-W47/refresh.request", prefix.map(|p| format!("{p}/")).unwrap_or_default());
        // WHEN a refresh of the week is requested
        refresh.request(week()).await.unwrap();
        // THEN the object appears under that key, empty, and names the week
        let object = s3.get_object().bucket(&config.bucket).key(&expected).send().await.unwrap();
        assert_eq!(object.content_length(), Some(0));
        assert_eq!(refresh.key(week()), expected);
        assert_eq!(refresh.key_pattern(), expected.replace("2026-W47", "<week>"));
        assert_eq!(refresh.week_of(&expected), Some(week()));
        // Requesting again while one is pending is fine (another event).
        refresh.request(week()).await.unwrap();
        refresh.request(week().previous()).await.unwrap();
        assert_eq!(refresh.pending().await.unwrap(), vec![week().previous(), week()]);
        // The week is not "summarized" by a request: no manifest.
        assert_eq!(sink.list_weeks().await.unwrap(), vec![]);
        // Done: the object goes.
        refresh.done(week()).await.unwrap();
        refresh.done(week().previous()).await.unwrap();
        assert!(s3.head_object().bucket(&config.bucket).key(&expected).send().await.is_err());
        assert_eq!(refresh.pending().await.unwrap(), vec![]);
    }
}

#[tokio::test]
async fn only_refresh_request_keys_name_a_week() {
    let config = fresh_config().await;
    let (_, s3) = raw_clients(&config).await;
    let plain = S3WeekRefresh::new(&S3SummarySink::new(s3.clone(), config.bucket.clone(), None));
    let prefixed = S3WeekRefresh::new(&S3SummarySink::new(s3, config.bucket.clone(), Some("p".into())));
    assert_eq!(plain.week_of("summaries/2026-W47/refresh.request"), Some(week()));
    assert_eq!(prefixed.week_of("p/summaries/2026-W47/refresh.request"), Some(week()));
    for other in [
        "p/summaries/2026-W47/refresh.request",
        "summaries/2026-W47/manifest.json",
        "summaries/2026-W47/summary.json",
        "summaries/2026-W47/records.ndjson.gz",
        "summaries/2026-W47/x/refresh.request",
        "summaries/2026-W47refresh.request",
        "summaries/2026-47/refresh.request",
        "summaries/refresh.request",
        "refresh.request",
    ] {
        assert_eq!(plain.week_of(other), None, "{other}");
    }
    assert_eq!(prefixed.week_of("summaries/2026-W47/refresh.request"), None);
}

#[tokio::test]
async fn dynamodb_lease_meets_the_lock_contract() {
    // Each handle is a client of its own on the same table: another
    // invocation, or a `tally --store dynamodb` process.
    let config = fresh_config().await;
    lock_contract(|| {
        let config = config.clone();
        async move {
            let (store, _) = tally_aws::connect(&config).await.expect("connect to moto");
            Arc::new(store.week_lease()) as Arc<dyn WeekLock>
        }
    })
    .await;
    // Lease items never show up as records or weeks.
    let (store, _) = tally_aws::connect(&config).await.unwrap();
    assert_eq!(store.weeks().await.unwrap(), vec![]);
    assert!(collect_week(&store, IsoWeek::parse("2026-W20").unwrap(), 100).await.is_empty());
}

#[tokio::test]
async fn a_lease_item_from_before_the_fencing_token_is_taken_over_with_token_1() {
    // GIVEN the item a 0.3 weekly function left: owner and until expired, no fence
    let config = fresh_config().await;
    let (ddb, _) = raw_clients(&config).await;
    let w = week();
    let item = |k: &str, v: &str| (k.to_owned(), aws_sdk_dynamodb::types::AttributeValue::S(v.to_owned()));
    let num = |k: &str, v: i64| (k.to_owned(), aws_sdk_dynamodb::types::AttributeValue::N(v.to_string()));
    ddb.put_item()
        .table_name(&config.table)
        .set_item(Some(
            [
                item("pk", &format!("L#{w}")),
                item("sk", "L"),
                item("owner", "old-run"),
                num("until", 1_000),
                num("done_from", 500),
            ]
            .into_iter()
            .collect(),
        ))
        .send()
        .await
        .unwrap();
    let (store, _) = tally_aws::connect(&config).await.unwrap();
    let lock = store.week_lease();
    // WHEN a run takes it, THEN its token is 1 and done_from is kept
    let now = Timestamp::from_millis(2_000);
    let Acquired::Taken(lease) = lock.try_acquire(w, "new-run", now, std::time::Duration::from_secs(60)).await.unwrap()
    else {
        panic!("an expired lease is free")
    };
    assert_eq!((lease.token, lease.done_from), (1, Some(Timestamp::from_millis(500))));
    assert!(lock.check(&lease, now).await.unwrap());
    assert!(lock.release(lease, None, now).await.unwrap());
}

/// Deterministic incompressible-ish bytes.
fn payload(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Sha256::digest(b"seed");
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(block);
    }
    out.truncate(len);
    out
}

async fn multipart_uploads(s3: &aws_sdk_s3::Client, bucket: &str) -> usize {
    s3.list_multipart_uploads().bucket(bucket).send().await.unwrap().uploads().len()
}

async fn object_count(s3: &aws_sdk_s3::Client, bucket: &str) -> usize {
    s3.list_objects_v2().bucket(bucket).send().await.unwrap().contents().len()
}

#[tokio::test]
async fn a_large_object_is_uploaded_in_parts() {
    let config = fresh_config().await;
    let (_, s3) = raw_clients(&config).await;
    let sink = S3SummarySink::new(s3.clone(), config.bucket.clone(), None).with_part_size(64 * 1024);
    let data = payload(300 * 1024 + 17);
    let mut upload = sink.open_object(week(), "records.ndjson.gz", "application/gzip").await.unwrap();
    for chunk in data.chunks(10_000) {
        upload.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let info = upload.finish().await.unwrap();
    assert_eq!(info.bytes, data.len() as u64);
    assert_eq!(info.sha256, hex::encode(Sha256::digest(&data)));
    assert_eq!(sink.read_object(week(), "records.ndjson.gz").await.unwrap().as_deref(), Some(&data[..]));
    // Five parts: a multipart ETag ends in "-<parts>".
    let head = s3.head_object().bucket(&config.bucket).key(&info.key).send().await.unwrap();
    assert!(head.e_tag().unwrap_or_default().trim_matches('"').ends_with("-5"), "{:?}", head.e_tag());
    assert_eq!(head.content_type(), Some("application/gzip"));
    assert_eq!(multipart_uploads(&s3, &config.bucket).await, 0);
}

#[tokio::test]
async fn a_small_streamed_object_is_one_put() {
    let (_, sink, _) = fresh_adapters().await;
    let mut upload = sink.open_object(week(), "records.ndjson.gz", "application/gzip").await.unwrap();
    upload.write(Bytes::from_static(b"abc")).await.unwrap();
    upload.write(Bytes::from_static(b"def")).await.unwrap();
    let info = upload.finish().await.unwrap();
    assert_eq!(info.sha256, hex::encode(Sha256::digest(b"abcdef")));
    assert_eq!(sink.read_object(week(), "records.ndjson.gz").await.unwrap().as_deref(), Some(&b"abcdef"[..]));
    // An empty stream is a valid, empty object.
    let empty = sink.open_object(week(), "empty.gz", "application/gzip").await.unwrap();
    assert_eq!(empty.finish().await.unwrap().bytes, 0);
}

#[tokio::test]
async fn an_aborted_or_dropped_upload_leaves_nothing() {
    let config = fresh_config().await;
    let (_, s3) = raw_clients(&config).await;
    let sink = S3SummarySink::new(s3.clone(), config.bucket.clone(), None).with_part_size(32 * 1024);
    // Aborted after three parts were uploaded.
    let mut upload = sink.open_object(week(), "records.ndjson.gz", "application/gzip").await.unwrap();
    upload.write(Bytes::from(payload(100 * 1024))).await.unwrap();
    assert_eq!(multipart_uploads(&s3, &config.bucket).await, 1);
    upload.abort().await.unwrap();
    assert_eq!(multipart_uploads(&s3, &config.bucket).await, 0);
    assert_eq!(object_count(&s3, &config.bucket).await, 0);
    // Dropped without finishing: aborted in the background.
    let mut upload = sink.open_object(week(), "records.ndjson.gz", "application/gzip").await.unwrap();
    upload.write(Bytes::from(payload(100 * 1024))).await.unwrap();
    drop(upload);
    for _ in 0..50 {
        if multipart_uploads(&s3, &config.bucket).await == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(multipart_uploads(&s3, &config.bucket).await, 0);
    assert_eq!(object_count(&s3, &config.bucket).await, 0);
}

#[tokio::test]
async fn a_failing_upload_leaves_no_partial_object_and_no_manifest() {
    let config = fresh_config().await;
    let (_, s3) = raw_clients(&config).await;
    let sink = S3SummarySink::new(s3.clone(), config.bucket.clone(), None).with_part_size(32 * 1024);
    let w = week();
    // GIVEN a complete earlier run of the week
    sink.put_object(w, "records.ndjson.gz", "application/gzip", Bytes::from_static(b"old")).await.unwrap();
    sink.commit_week(w, Bytes::from_static(b"{}")).await.unwrap();
    // WHEN a rerun starts, and its upload fails half-way (the upload vanishes under it)
    sink.begin_week(w).await.unwrap();
    let mut upload = sink.open_object(w, "records.ndjson.gz", "application/gzip").await.unwrap();
    upload.write(Bytes::from(payload(70 * 1024))).await.unwrap();
    let uploads = s3.list_multipart_uploads().bucket(&config.bucket).send().await.unwrap();
    let u = &uploads.uploads()[0];
    s3.abort_multipart_upload()
        .bucket(&config.bucket)
        .key(u.key().unwrap())
        .upload_id(u.upload_id().unwrap())
        .send()
        .await
        .unwrap();
    let failed = async {
        upload.write(Bytes::from(payload(70 * 1024))).await?;
        upload.finish().await
    };
    assert!(failed.await.is_err());
    // THEN the week has no manifest, no pending upload, and the new object never appeared
    assert_eq!(sink.list_weeks().await.unwrap(), vec![]);
    assert_eq!(sink.read_object(w, "manifest.json").await.unwrap(), None);
    assert_eq!(multipart_uploads(&s3, &config.bucket).await, 0);
    assert_eq!(sink.read_object(w, "records.ndjson.gz").await.unwrap().as_deref(), Some(&b"old"[..]));
}

#[tokio::test]
async fn a_missing_table_is_an_internal_error_not_a_hang() {
    let mut config = fresh_config().await;
    config.table = "no-such-table".into();
    let (store, _) = tally_aws::connect(&config).await.unwrap();
    let err = store.get(RecordId::generate(Timestamp::now())).await.unwrap_err();
    assert!(matches!(err, tally_core::StoreError::Internal { .. }), "{err:?}");
}

#[tokio::test]
async fn an_expired_idempotency_key_is_forgotten_and_can_be_claimed_again() {
    let store = store().await;
    let now = Timestamp::now().as_millis();
    let key = IdempotencyKey::parse(b"old-key").unwrap();
    let mut entry = tally_core::IdempotencyEntry {
        key: key.clone(),
        fingerprint: tally_core::Fingerprint::of("json", b"{}"),
        received_at: Timestamp::from_millis(now - 2 * tally_core::idempotency::RETENTION_MS),
        status: 201,
        response: r#"{"count":0,"ids":[]}"#.into(),
        expires_at: Timestamp::from_millis(now - tally_core::idempotency::RETENTION_MS),
    };
    let r = record(now, r#"{"a":1}"#.into());
    // GIVEN an expired entry that DynamoDB's TTL sweeper has not deleted yet
    assert_eq!(store.insert(std::slice::from_ref(&r), Some(&entry)).await.unwrap(), InsertOutcome::Inserted);
    assert_eq!(store.idempotency_entry(&key).await.unwrap(), None);
    // WHEN the key is used again THEN it is claimed afresh
    entry.fingerprint = tally_core::Fingerprint::of("json", b"[]");
    entry.received_at = Timestamp::from_millis(now);
    entry.expires_at = Timestamp::from_millis(now + tally_core::idempotency::RETENTION_MS);
    assert_eq!(store.insert(std::slice::from_ref(&r), Some(&entry)).await.unwrap(), InsertOutcome::Inserted);
    assert_eq!(store.idempotency_entry(&key).await.unwrap(), Some(entry));
}

#[tokio::test]
async fn the_index_is_read_back_under_the_prefix_beside_the_weeks() {
    let config = fresh_config().await;
    let (_, s3) = raw_clients(&config).await;
    let sink = S3SummarySink::new(s3.clone(), config.bucket.clone(), Some("team".into()));
    let body = Bytes::from_static(b"<!doctype html><p>every week</p>");
    let info = sink.put_index("index.html", "text/html; charset=utf-8", body.clone()).await.unwrap();
    assert_eq!(info.key, "team/summaries/index.html");
    assert_eq!(sink.read_index("index.html").await.unwrap(), Some(body));
    // Another prefix is another site.
    let other = S3SummarySink::new(s3, config.bucket.clone(), Some("other".into()));
    assert_eq!(other.read_index("index.html").await.unwrap(), None);
}

/// An HTTP endpoint subscribed to an SNS topic on moto, which posts each
/// published message to it (as SNS does, JSON in a text/plain body).
async fn sns_subscriber(
    sns: &aws_sdk_sns::Client,
    topic: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<serde_json::Value> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/sns",
        axum::routing::post(move |body: String| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(serde_json::from_str::<serde_json::Value>(&body).unwrap());
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    sns.subscribe().topic_arn(topic).protocol("http").endpoint(format!("http://{addr}/sns")).send().await.unwrap();
    rx
}

#[tokio::test]
async fn sns_notifier_meets_the_notifier_contract() {
    let config = fresh_config().await;
    let sns = tally_aws::sns_client(&tally_aws::sdk_config(&config).await);
    let topic = sns.create_topic().name(tally_aws::testing::unique_name("tally-reports")).send().await.unwrap();
    let topic = topic.topic_arn.unwrap();
    // What the subscribed endpoint received: each message's text.
    let mut messages = sns_subscriber(&sns, &topic).await;
    let (tx, mut texts) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(m) = messages.recv().await {
            let _ = tx.send(m["Message"].as_str().unwrap_or_default().to_owned());
        }
    });
    let notifier = tally_aws::SnsNotifier::new(sns.clone(), topic.clone());
    let missing = tally_aws::SnsNotifier::new(sns, format!("{topic}-missing"));
    tally_core::testing::notifier_contract(&notifier, &mut texts, &missing).await;
}

#[tokio::test]
async fn sns_publishes_the_digest_with_a_short_subject() {
    use tally_core::ports::Notifier;
    use tally_core::summary::{Comparison, Finding, FindingKind, Notification, Severity};

    let config = fresh_config().await;
    let sns = tally_aws::sns_client(&tally_aws::sdk_config(&config).await);
    let name = tally_aws::testing::unique_name("tally-reports");
    let topic = sns.create_topic().name(name).send().await.unwrap().topic_arn.unwrap();
    let mut received = sns_subscriber(&sns, &topic).await;

    let comparison = Comparison {
        previous_week: week().previous(),
        findings: vec![Finding {
            kind: FindingKind::FieldRemoved,
            path: Some("user.email".into()),
            severity: Severity::Warn,
            previous: 1.0.into(),
            current: 0.0.into(),
            message: "user.email was in every record last week and in none this week.".into(),
            segments: Vec::new(),
            folded: false,
        }],
    };
    let n = Notification::new(week(), 1234, Some(&comparison), Some(1200), "https://example.com/report".into());
    let notifier = tally_aws::SnsNotifier::new(sns.clone(), topic.clone());
    notifier.deliver(&n).await.unwrap();

    // moto posts to subscribers during Publish; the wait is for the channel only.
    let message = tokio::time::timeout(std::time::Duration::from_secs(10), received.recv()).await.unwrap().unwrap();
    assert_eq!(message["Type"], "Notification");
    assert_eq!(message["TopicArn"], topic.as_str());
    assert_eq!(message["Subject"], "tally report 2026-W47: 1,234 records, 1 warning");
    assert_eq!(message["Message"], n.text.as_str());
    assert!(n.text.contains("https://example.com/report") && n.text.contains("user.email"), "{}", n.text);
    assert!(received.try_recv().is_err(), "one Publish, one message");

    // A topic that does not exist: a final error naming it (the SDK has retried what it retries).
    let missing = format!("{}-missing", topic);
    let err = tally_aws::SnsNotifier::new(sns, missing.clone()).deliver(&n).await.unwrap_err();
    assert!(!err.is_retryable());
    assert!(err.to_string().contains(&missing) && err.to_string().contains("TALLY_REPORT_TOPIC_ARN"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_before_during_or_after_a_run_is_never_undone_on_dynamodb_and_s3() {
    // The weekly run over the table, its lease and the bucket (moto): the
    // run paused after its reader passed the record, the erasure's rewrite
    // waiting for the lease.
    let (store, sink, _) = tally_aws::testing::fresh_adapters().await;
    let store = Arc::new(store);
    let lock = Arc::new(store.week_lease());
    tally_core::testing::erasure::erasure_scenario(store, Arc::new(sink), lock).await;
}
