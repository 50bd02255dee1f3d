//! The summarize service end to end over the in-memory store and an
//! in-memory sink with failure injection: outputs, determinism, empty weeks,
//! failures that must leave no manifest, reruns, catch-up.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tally_core::ports::{ObjectInfo, ObjectUpload, RecordPages, SinkError, StoreError};
use tally_core::summary::{
    MANIFEST_JSON, Manifest, NoProgress, Progress, RECORDS_NDJSON_GZ, SUMMARY_HTML, SUMMARY_JSON, SummarizeError,
    catch_up, pending_weeks, summarize_week, summarize_weeks,
};
use tally_core::testing::{FixedClock, MemoryRecordStore};
use tally_core::{
    IdempotencyEntry, IdempotencyKey, InsertOutcome, IsoWeek, Record, RecordId, RecordStore, SummaryOptions,
    SummarySink, Timestamp,
};

fn week() -> IsoWeek {
    IsoWeek::parse("2026-W47").unwrap()
}

/// A bucket in memory. `fail_on` makes writes of that object name fail.
#[derive(Debug, Default)]
struct MemorySink {
    objects: Mutex<BTreeMap<String, Bytes>>,
    fail_on: Mutex<Option<&'static str>>,
}

impl MemorySink {
    fn failing_on(name: &'static str) -> Self {
        Self { fail_on: Mutex::new(Some(name)), ..Self::default() }
    }
    fn heal(&self) {
        *self.fail_on.lock().unwrap() = None;
    }
    fn check(&self, name: &str) -> Result<(), SinkError> {
        match *self.fail_on.lock().unwrap() {
            Some(n) if n == name => {
                Err(SinkError::Unavailable { message: format!("injected failure on {name}"), source: None })
            }
            _ => Ok(()),
        }
    }
    fn get(&self, week: IsoWeek, name: &str) -> Option<Bytes> {
        self.objects.lock().unwrap().get(&key(week, name)).cloned()
    }
    fn keys(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().cloned().collect()
    }
    fn store(&self, week: IsoWeek, name: &str, body: Bytes) -> ObjectInfo {
        let info =
            ObjectInfo { key: key(week, name), bytes: body.len() as u64, sha256: hex::encode(Sha256::digest(&body)) };
        self.objects.lock().unwrap().insert(key(week, name), body);
        info
    }
}

fn key(week: IsoWeek, name: &str) -> String {
    format!("summaries/{week}/{name}")
}

struct MemoryUpload<'a> {
    sink: &'a MemorySink,
    week: IsoWeek,
    name: String,
    buf: Vec<u8>,
}

#[async_trait]
impl ObjectUpload for MemoryUpload<'static> {
    async fn write(&mut self, chunk: Bytes) -> Result<(), SinkError> {
        self.sink.check(&self.name)?;
        self.buf.extend_from_slice(&chunk);
        Ok(())
    }
    async fn finish(self: Box<Self>) -> Result<ObjectInfo, SinkError> {
        self.sink.check(&self.name)?;
        Ok(self.sink.store(self.week, &self.name, Bytes::from(self.buf)))
    }
    async fn abort(self: Box<Self>) -> Result<(), SinkError> {
        Ok(())
    }
}

#[async_trait]
impl SummarySink for &'static MemorySink {
    async fn begin_week(&self, week: IsoWeek) -> Result<(), SinkError> {
        self.objects.lock().unwrap().remove(&key(week, MANIFEST_JSON));
        Ok(())
    }
    async fn put_object(&self, week: IsoWeek, name: &str, _: &str, body: Bytes) -> Result<ObjectInfo, SinkError> {
        self.check(name)?;
        Ok(self.store(week, name, body))
    }
    async fn open_object(&self, week: IsoWeek, name: &str, _: &str) -> Result<Box<dyn ObjectUpload>, SinkError> {
        Ok(Box::new(MemoryUpload { sink: self, week, name: name.to_owned(), buf: Vec::new() }))
    }
    async fn commit_week(&self, week: IsoWeek, manifest: Bytes) -> Result<ObjectInfo, SinkError> {
        self.check(MANIFEST_JSON)?;
        Ok(self.store(week, MANIFEST_JSON, manifest))
    }
    async fn read_object(&self, week: IsoWeek, name: &str) -> Result<Option<Bytes>, SinkError> {
        Ok(self.get(week, name))
    }
    async fn delete_object(&self, week: IsoWeek, name: &str) -> Result<(), SinkError> {
        self.objects.lock().unwrap().remove(&key(week, name));
        Ok(())
    }
    async fn list_weeks(&self) -> Result<Vec<IsoWeek>, SinkError> {
        let keys = self.keys();
        let mut weeks: Vec<IsoWeek> = keys
            .iter()
            .filter(|k| k.ends_with(MANIFEST_JSON))
            .filter_map(|k| IsoWeek::parse(k.split('/').nth(1)?).ok())
            .collect();
        weeks.sort();
        Ok(weeks)
    }
    async fn put_index(&self, name: &str, _: &str, body: Bytes) -> Result<ObjectInfo, SinkError> {
        self.check(name)?;
        let info = ObjectInfo {
            key: format!("summaries/{name}"),
            bytes: body.len() as u64,
            sha256: hex::encode(Sha256::digest(&body)),
        };
        self.objects.lock().unwrap().insert(info.key.clone(), body);
        Ok(info)
    }
    async fn read_index(&self, name: &str) -> Result<Option<Bytes>, SinkError> {
        self.check(name)?;
        Ok(self.objects.lock().unwrap().get(&format!("summaries/{name}")).cloned())
    }
}

fn leak<T>(t: T) -> &'static T {
    Box::leak(Box::new(t))
}

/// Wraps a store; its scans fail after `good_pages` pages.
#[derive(Debug)]
/// Fails every page after the first `good_pages` it served, over all scans
/// (a run reads each canonical part with a scan of its own).
struct FlakyStore {
    inner: MemoryRecordStore,
    good_pages: usize,
    served: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl RecordStore for FlakyStore {
    async fn insert(&self, r: &[Record], i: Option<&IdempotencyEntry>) -> Result<InsertOutcome, StoreError> {
        self.inner.insert(r, i).await
    }
    async fn idempotency_entry(&self, k: &IdempotencyKey) -> Result<Option<IdempotencyEntry>, StoreError> {
        self.inner.idempotency_entry(k).await
    }
    async fn get(&self, id: RecordId) -> Result<Option<Record>, StoreError> {
        self.inner.get(id).await
    }
    fn scan_range(&self, from: RecordId, to: RecordId, page_size: usize) -> RecordPages<'_> {
        let good = self.good_pages;
        let served = &self.served;
        self.inner
            .scan_range(from, to, page_size)
            .map(move |page| {
                if served.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < good {
                    page
                } else {
                    Err(StoreError::Internal { message: "injected read failure".into(), source: None })
                }
            })
            .boxed()
    }
    async fn weeks(&self) -> Result<Vec<IsoWeek>, StoreError> {
        self.inner.weeks().await
    }
}

async fn store_with(records: &[Record]) -> MemoryRecordStore {
    let store = MemoryRecordStore::default();
    store.insert(records, None).await.unwrap();
    store
}

fn small_chunks() -> SummaryOptions {
    // Small pages and upload chunks, so a week spans many of each.
    SummaryOptions { page_size: 50, upload_chunk_bytes: 512, ..SummaryOptions::default() }
}

fn clock() -> FixedClock {
    FixedClock::at(Timestamp::parse_rfc3339("2026-11-23T00:05:00Z").unwrap())
}

fn gunzip(b: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::MultiGzDecoder::new(b).read_to_string(&mut out).unwrap();
    out
}

#[tokio::test]
async fn a_week_produces_four_objects_with_a_manifest_of_their_hashes() {
    let records = common::records(week(), 400, 1, |r| common::rich_value(r).text());
    let store = store_with(&records).await;
    let sink = leak(MemorySink::default());

    let report = summarize_week(&store, &sink, &clock(), week(), &small_chunks(), &NoProgress).await.unwrap();

    assert_eq!(report.records, 400);
    let manifest: Manifest = serde_json::from_slice(&sink.get(week(), MANIFEST_JSON).unwrap()).unwrap();
    assert_eq!(manifest.records, 400);
    assert_eq!(manifest.week, week());
    assert_eq!(manifest.tally_version, tally_core::VERSION);
    assert_eq!(manifest.generated_at.to_rfc3339(), "2026-11-23T00:05:00.000Z");
    let names: Vec<&str> = manifest.objects.iter().map(|o| o.key.rsplit('/').next().unwrap()).collect();
    assert_eq!(names, vec![RECORDS_NDJSON_GZ, SUMMARY_HTML, SUMMARY_JSON]);
    for o in &manifest.objects {
        let body = sink.objects.lock().unwrap()[&o.key].clone();
        assert_eq!(o.bytes, body.len() as u64, "{}", o.key);
        assert_eq!(o.sha256, hex::encode(Sha256::digest(&body)), "{}", o.key);
    }
    assert_eq!(report.objects, manifest.objects);

    // the export is every record of the week, one `{"id","received_at","data"}` per line, in order
    let ndjson = gunzip(&sink.get(week(), RECORDS_NDJSON_GZ).unwrap());
    let expected: String = records.iter().map(|r| r.to_json() + "\n").collect();
    assert_eq!(ndjson, expected);

    let summary: serde_json::Value = serde_json::from_slice(&sink.get(week(), SUMMARY_JSON).unwrap()).unwrap();
    assert_eq!(summary["schema"], 4);
    assert_eq!(summary["comparison"], serde_json::Value::Null, "no earlier week: nothing to compare with");
    assert_eq!(summary["records"], 400);
    assert_eq!(summary["per_day"].as_array().unwrap().len(), 7);
    assert_eq!(summary["per_hour"].as_array().unwrap().len(), 168);
}

#[tokio::test]
async fn the_export_has_one_valid_line_per_record_even_for_pretty_printed_or_corrupt_data() {
    let mut records = common::records(week(), 300, 3, |r| {
        format!(r#"{{"user":"u{}","ms":{},"tags":["a","b"]}}"#, r.below(50), r.below(1000))
    });
    // Sent pretty-printed (stored verbatim, newlines and all), and one the
    // store hands back corrupted: neither may break the NDJSON framing.
    records[10].data = "{\n  \"pretty\": [1,\r\n 2],\n  \"s\": \"a\\nb\"\n}".into();
    records[200].data = "{\"truncated\": [1, 2".into();
    let store = store_with(&records).await;
    let sink = leak(MemorySink::default());

    summarize_week(&store, &sink, &clock(), week(), &small_chunks(), &NoProgress).await.unwrap();

    let ndjson = gunzip(&sink.get(week(), RECORDS_NDJSON_GZ).unwrap());
    let lines: Vec<serde_json::Value> = ndjson.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), records.len());
    for (line, record) in lines.iter().zip(&records) {
        assert_eq!(line["id"], record.id.to_string());
    }
    assert_eq!(lines[10]["data"], serde_json::json!({"pretty": [1, 2], "s": "a\nb"}));
    assert_eq!(lines[200]["data"], "{\"truncated\": [1, 2", "corrupt data is kept, as a string");
    assert_eq!(lines[11], serde_json::from_str::<serde_json::Value>(&records[11].to_json()).unwrap());

    let summary: serde_json::Value = serde_json::from_slice(&sink.get(week(), SUMMARY_JSON).unwrap()).unwrap();
    assert_eq!(summary["records"], 300);
    assert_eq!(summary["unparsable_records"], 1);
}

#[tokio::test]
async fn reruns_write_byte_identical_outputs() {
    let records = common::records(week(), 700, 2, |r| common::rich_value(r).text());
    let store = store_with(&records).await;
    let (a, b) = (leak(MemorySink::default()), leak(MemorySink::default()));
    summarize_week(&store, &a, &clock(), week(), &small_chunks(), &NoProgress).await.unwrap();
    let later = clock();
    later.advance_ms(86_400_000);
    summarize_week(&store, &b, &later, week(), &small_chunks(), &NoProgress).await.unwrap();
    for name in [SUMMARY_JSON, SUMMARY_HTML, RECORDS_NDJSON_GZ] {
        assert_eq!(a.get(week(), name), b.get(week(), name), "{name} differs between runs");
    }
    assert_ne!(a.get(week(), MANIFEST_JSON), b.get(week(), MANIFEST_JSON), "generated_at should differ");
}

#[tokio::test]
async fn an_empty_week_still_produces_all_four_objects() {
    let sink = leak(MemorySink::default());
    let report = summarize_week(&MemoryRecordStore::default(), &sink, &clock(), week(), &small_chunks(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(report.records, 0);
    for name in [SUMMARY_JSON, SUMMARY_HTML, RECORDS_NDJSON_GZ, MANIFEST_JSON] {
        assert!(sink.get(week(), name).is_some(), "{name} missing");
    }
    assert_eq!(gunzip(&sink.get(week(), RECORDS_NDJSON_GZ).unwrap()), "");
    let summary: serde_json::Value = serde_json::from_slice(&sink.get(week(), SUMMARY_JSON).unwrap()).unwrap();
    assert_eq!(summary["records"], 0);
    assert_eq!(summary["fields"], serde_json::json!([]));
    assert!(summary["per_hour"].as_array().unwrap().iter().all(|h| h == 0));
    assert_eq!(sink.list_weeks().await.unwrap(), vec![week()]);
}

#[tokio::test]
async fn a_store_failing_mid_week_leaves_no_manifest_and_no_export_then_a_rerun_converges() {
    let records = common::records(week(), 300, 3, |r| common::rich_value(r).text());
    let reference = leak(MemorySink::default());
    summarize_week(&store_with(&records).await, &reference, &clock(), week(), &small_chunks(), &NoProgress)
        .await
        .unwrap();

    // GIVEN a previous complete run, and a store that fails on its third page
    let sink = leak(MemorySink::default());
    let flaky = FlakyStore { inner: store_with(&records).await, good_pages: 2, served: Default::default() };
    summarize_week(&flaky.inner, &sink, &clock(), week(), &small_chunks(), &NoProgress).await.unwrap();
    sink.objects.lock().unwrap().remove(&key(week(), RECORDS_NDJSON_GZ));

    // WHEN a rerun fails mid-scan
    let err = summarize_week(&flaky, &sink, &clock(), week(), &small_chunks(), &NoProgress).await.unwrap_err();

    // THEN the error names the week and step, no manifest remains, and no partial export was written
    assert!(matches!(err, SummarizeError::ReadRecords { week: w, .. } if w == week()), "{err:?}");
    assert!(std::error::Error::source(&err).is_some());
    assert!(sink.get(week(), MANIFEST_JSON).is_none());
    assert!(sink.get(week(), RECORDS_NDJSON_GZ).is_none());
    assert!(sink.list_weeks().await.unwrap().is_empty());

    // AND a rerun with a healthy store converges on the same bytes
    summarize_week(&flaky.inner, &sink, &clock(), week(), &small_chunks(), &NoProgress).await.unwrap();
    for name in [SUMMARY_JSON, SUMMARY_HTML, RECORDS_NDJSON_GZ, MANIFEST_JSON] {
        assert_eq!(sink.get(week(), name), reference.get(week(), name), "{name}");
    }
}

#[tokio::test]
async fn a_failing_write_of_any_object_leaves_the_week_uncommitted() {
    let records = common::records(week(), 120, 4, |r| common::rich_value(r).text());
    let store = store_with(&records).await;
    for name in [RECORDS_NDJSON_GZ, SUMMARY_JSON, SUMMARY_HTML, MANIFEST_JSON] {
        let sink = leak(MemorySink::failing_on(name));
        let err = summarize_week(&store, &sink, &clock(), week(), &small_chunks(), &NoProgress).await.unwrap_err();
        assert!(matches!(&err, SummarizeError::Write { object, .. } if *object == name), "{name}: {err:?}");
        assert!(err.to_string().contains(name) && err.to_string().contains("2026-W47"), "{err}");
        assert!(sink.get(week(), MANIFEST_JSON).is_none(), "{name}: manifest written");
        assert!(sink.list_weeks().await.unwrap().is_empty());
        sink.heal();
        summarize_week(&store, &sink, &clock(), week(), &small_chunks(), &NoProgress).await.unwrap();
        assert_eq!(sink.list_weeks().await.unwrap(), vec![week()]);
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Progress for Recorder {
    fn week_started(&self, week: IsoWeek) {
        self.0.lock().unwrap().push(format!("start {week}"));
    }
    fn records_read(&self, week: IsoWeek, records: u64) {
        self.0.lock().unwrap().push(format!("read {week} {records}"));
    }
    fn week_finished(&self, report: &tally_core::WeekReport) {
        self.0.lock().unwrap().push(format!("done {} {}", report.week, report.records));
    }
    fn week_failed(&self, week: IsoWeek, _: &SummarizeError) {
        self.0.lock().unwrap().push(format!("failed {week}"));
    }
}

#[tokio::test]
async fn catch_up_summarizes_past_weeks_without_a_manifest_and_reports_progress() {
    let (w1, w2, w3) = (week().previous().previous(), week().previous(), week());
    let mut records = common::records(w1, 30, 5, |r| common::rich_value(r).text());
    records.extend(common::records(w2, 120, 6, |r| common::rich_value(r).text()));
    records.extend(common::records(w3, 10, 7, |r| common::rich_value(r).text()));
    let store = store_with(&records).await;
    let sink = leak(MemorySink::default());
    let now = FixedClock::at(Timestamp::from_millis(w3.start().as_millis() + 3_600_000)); // during w3

    // GIVEN w1 already summarized
    summarize_week(&store, &sink, &now, w1, &small_chunks(), &NoProgress).await.unwrap();
    assert_eq!(pending_weeks(&store, &sink, now.now_ts()).await.unwrap(), vec![w2]);

    // WHEN catching up: only w2 (w3 is the current week, not over yet)
    let progress = Recorder::default();
    let reports = catch_up(&store, &sink, &now, &small_chunks(), &progress).await.unwrap();
    assert_eq!(reports.iter().map(|r| (r.week, r.records)).collect::<Vec<_>>(), vec![(w2, 120)]);
    assert_eq!(sink.list_weeks().await.unwrap(), vec![w1, w2]);
    let log = progress.0.lock().unwrap().clone();
    assert_eq!(log.first().unwrap(), &format!("start {w2}"));
    assert_eq!(log.last().unwrap(), &format!("done {w2} 120"));
    let read: Vec<u64> =
        log.iter().filter_map(|l| l.strip_prefix(&format!("read {w2} "))).map(|n| n.parse().unwrap()).collect();
    assert!(read.len() > 2 && read.is_sorted() && read.last() == Some(&120), "{log:?}");

    // AND nothing is pending afterwards; a backfill over a range reruns them all
    assert!(pending_weeks(&store, &sink, now.now_ts()).await.unwrap().is_empty());
    // (w3 has not ended: a partial run of it, as `--partial` makes.)
    let partial = SummaryOptions { partial_until: Some(now.now_ts()), ..small_chunks() };
    let all = summarize_weeks(&store, &sink, &now, IsoWeek::range(w1, w3), &partial, &NoProgress).await.unwrap();
    assert_eq!(all.iter().map(|r| r.records).collect::<Vec<_>>(), vec![30, 120, 10]);
}

trait NowTs {
    fn now_ts(&self) -> Timestamp;
}
impl NowTs for FixedClock {
    fn now_ts(&self) -> Timestamp {
        tally_core::Clock::now(self)
    }
}

#[tokio::test]
async fn a_pruned_week_is_refused_and_its_summary_kept_but_an_empty_or_erased_week_reruns() {
    use tally_core::RecordLifecycle;
    use tally_core::summary::ensure_not_pruned;
    let records = common::records(week(), 30, 1, |r| common::rich_value(r).text());
    let store = store_with(&records).await;
    let sink = leak(MemorySink::default());
    summarize_week(&store, &sink, &clock(), week(), &small_chunks(), &NoProgress).await.unwrap();
    let keys_before: Vec<(String, Bytes)> = sink.objects.lock().unwrap().clone().into_iter().collect();

    // Erasing every record keeps the week known: a rerun is a rewrite, allowed.
    for r in &records[..29] {
        store.delete(r.id).await.unwrap();
    }
    ensure_not_pruned(&store, &sink, week()).await.unwrap();

    // The retention deletes the week: a rerun would write an empty summary.
    store.delete_week(week()).await.unwrap();
    let err = summarize_week(&store, &sink, &clock(), week(), &small_chunks(), &NoProgress).await.unwrap_err();
    assert!(matches!(err, SummarizeError::Pruned { week: w, records: 30 } if w == week()), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("was pruned") && message.contains("tally import"), "{message}");
    let keys_after: Vec<(String, Bytes)> = sink.objects.lock().unwrap().clone().into_iter().collect();
    assert_eq!(keys_after, keys_before, "nothing of the summary changed, the manifest included");

    // A week summarized empty has nothing to lose: it may run again.
    let other = week().previous();
    summarize_week(&store, &sink, &clock(), other, &small_chunks(), &NoProgress).await.unwrap();
    summarize_week(&store, &sink, &clock(), other, &small_chunks(), &NoProgress).await.unwrap();
}
