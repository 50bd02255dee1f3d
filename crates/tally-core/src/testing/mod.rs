//! Test support shared by every crate's tests (feature `testing`): an
//! in-memory [`RecordStore`], [`SummarySink`] and [`WeekRefresh`], a fixed
//! clock, and the contract every adapter of a port must pass (the store's
//! here, the others' in [`contract`]); the memory week lock and its contract
//! (`lock`); store and sink decorators that inject faults (`hooked`).

pub mod contract;
pub mod erasure;
pub mod fuzz;
mod hooked;
mod lock;

pub use hooked::{HookedScans, HookedSink, ScanHook, SinkHook};

pub use lock::{MemoryWeekLock, TokioClock, lock_contract};

pub use contract::{link_secret_contract, notifier_contract, refresh_contract, sink_contract};

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use async_trait::async_trait;
use futures::StreamExt;

use crate::clock::{Clock, Timestamp};
use crate::id::RecordId;
use crate::idempotency::{Fingerprint, IdempotencyEntry, IdempotencyKey, RETENTION_MS};
use crate::ports::{
    InsertOutcome, ObjectInfo, ObjectUpload, RecordLifecycle, RecordPages, RecordStore, RestoreOutcome, SinkError,
    StoreError, SummarySink, WeekRefresh, check_object_name,
};
use crate::record::Record;
use crate::week::IsoWeek;

/// A clock tests can set and advance.
#[derive(Debug, Default)]
pub struct FixedClock(AtomicI64);

impl FixedClock {
    pub fn at(t: Timestamp) -> Self {
        Self(AtomicI64::new(t.as_millis()))
    }

    pub fn set(&self, t: Timestamp) {
        self.0.store(t.as_millis(), Ordering::SeqCst);
    }

    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::SeqCst))
    }
}

#[derive(Debug, Default)]
struct Inner {
    records: BTreeMap<RecordId, Record>,
    keys: HashMap<String, IdempotencyEntry>,
    /// Week markers, as the SQLite `weeks` table and DynamoDB's `W` items:
    /// set by every write, removed only by `delete_week` (the retention), so
    /// erasing every record of a week keeps it known.
    weeks: std::collections::BTreeSet<IsoWeek>,
}

/// A [`RecordStore`] in memory: the reference the other adapters are held to.
#[derive(Debug, Default)]
pub struct MemoryRecordStore {
    inner: Mutex<Inner>,
    hide_keys_on_lookup: AtomicBool,
}

impl MemoryRecordStore {
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes [`RecordStore::idempotency_entry`] report nothing, to exercise
    /// the race where a key is claimed between lookup and insert.
    pub fn forget_lookups(&self, on: bool) {
        self.hide_keys_on_lookup.store(on, Ordering::SeqCst);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl RecordStore for MemoryRecordStore {
    async fn insert(
        &self,
        records: &[Record],
        idempotency: Option<&IdempotencyEntry>,
    ) -> Result<InsertOutcome, StoreError> {
        let mut inner = self.lock();
        if let Some(entry) = idempotency {
            if let Some(existing) = inner.keys.get(entry.key.as_str()) {
                return Ok(InsertOutcome::KeyExists(existing.clone()));
            }
            inner.keys.insert(entry.key.as_str().to_owned(), entry.clone());
        }
        for r in records {
            inner.weeks.insert(IsoWeek::containing(r.id.timestamp()));
            inner.records.insert(r.id, r.clone());
        }
        Ok(InsertOutcome::Inserted)
    }

    async fn idempotency_entry(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyEntry>, StoreError> {
        if self.hide_keys_on_lookup.load(Ordering::SeqCst) {
            return Ok(None);
        }
        Ok(self.lock().keys.get(key.as_str()).cloned())
    }

    async fn get(&self, id: RecordId) -> Result<Option<Record>, StoreError> {
        Ok(self.lock().records.get(&id).cloned())
    }

    fn scan_range(&self, from: RecordId, to: RecordId, page_size: usize) -> RecordPages<'_> {
        let all: Vec<Record> =
            if from < to { self.lock().records.range(from..to).map(|(_, r)| r.clone()).collect() } else { Vec::new() };
        let pages: Vec<Result<Vec<Record>, StoreError>> =
            all.chunks(page_size.max(1)).map(|c| Ok(c.to_vec())).collect();
        futures::stream::iter(pages).boxed()
    }

    async fn weeks(&self) -> Result<Vec<IsoWeek>, StoreError> {
        Ok(self.lock().weeks.iter().copied().collect())
    }
}

#[async_trait]
impl RecordLifecycle for MemoryRecordStore {
    async fn restore(&self, records: &[Record]) -> Result<RestoreOutcome, StoreError> {
        let mut inner = self.lock();
        if let Some(r) = records.iter().find(|r| inner.records.get(&r.id).is_some_and(|old| old != *r)) {
            return Ok(RestoreOutcome::Conflict(r.id));
        }
        let before = inner.records.len();
        for r in records {
            inner.weeks.insert(IsoWeek::containing(r.id.timestamp()));
            inner.records.entry(r.id).or_insert_with(|| r.clone());
        }
        let inserted = inner.records.len() - before;
        Ok(RestoreOutcome::Restored { inserted, present: records.len() - inserted })
    }

    async fn delete(&self, id: RecordId) -> Result<bool, StoreError> {
        Ok(self.lock().records.remove(&id).is_some())
    }

    async fn delete_week(&self, week: IsoWeek) -> Result<u64, StoreError> {
        let (lo, hi) = (RecordId::lower_bound(week.start()), RecordId::lower_bound(week.end()));
        let mut inner = self.lock();
        let doomed: Vec<RecordId> = inner.records.range(lo..hi).map(|(id, _)| *id).collect();
        for id in &doomed {
            inner.records.remove(id);
        }
        inner.weeks.remove(&week);
        Ok(doomed.len() as u64)
    }
}

/// A [`SummarySink`] in memory, keyed by full object key. It refuses the
/// object names the folder and S3 sinks refuse ([`check_object_name`]), so
/// a test on it fails where production would.
#[derive(Debug, Default)]
pub struct MemorySummarySink {
    objects: std::sync::Arc<Mutex<BTreeMap<String, bytes::Bytes>>>,
}

impl MemorySummarySink {
    fn key(week: IsoWeek, name: &str) -> Result<String, SinkError> {
        check_object_name(name)?;
        Ok(format!("summaries/{week}/{name}"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, bytes::Bytes>> {
        self.objects.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// All object keys, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn put(objects: &Mutex<BTreeMap<String, bytes::Bytes>>, key: String, body: bytes::Bytes) -> ObjectInfo {
        use sha2::Digest;
        let info =
            ObjectInfo { key: key.clone(), bytes: body.len() as u64, sha256: hex::encode(sha2::Sha256::digest(&body)) };
        objects.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, body);
        info
    }
}

struct MemoryUpload {
    objects: std::sync::Arc<Mutex<BTreeMap<String, bytes::Bytes>>>,
    key: String,
    buf: Vec<u8>,
}

#[async_trait]
impl ObjectUpload for MemoryUpload {
    async fn write(&mut self, chunk: bytes::Bytes) -> Result<(), SinkError> {
        self.buf.extend_from_slice(&chunk);
        Ok(())
    }
    async fn finish(self: Box<Self>) -> Result<ObjectInfo, SinkError> {
        Ok(MemorySummarySink::put(&self.objects, self.key, self.buf.into()))
    }
    async fn abort(self: Box<Self>) -> Result<(), SinkError> {
        Ok(())
    }
}

#[async_trait]
impl SummarySink for MemorySummarySink {
    async fn begin_week(&self, week: IsoWeek) -> Result<(), SinkError> {
        self.lock().remove(&Self::key(week, "manifest.json")?);
        Ok(())
    }
    async fn put_object(
        &self,
        week: IsoWeek,
        name: &str,
        _ct: &str,
        body: bytes::Bytes,
    ) -> Result<ObjectInfo, SinkError> {
        Ok(Self::put(&self.objects, Self::key(week, name)?, body))
    }
    async fn put_index(&self, name: &str, _ct: &str, body: bytes::Bytes) -> Result<ObjectInfo, SinkError> {
        check_object_name(name)?;
        Ok(Self::put(&self.objects, format!("summaries/{name}"), body))
    }
    async fn open_object(&self, week: IsoWeek, name: &str, _ct: &str) -> Result<Box<dyn ObjectUpload>, SinkError> {
        Ok(Box::new(MemoryUpload { objects: self.objects.clone(), key: Self::key(week, name)?, buf: Vec::new() }))
    }
    async fn commit_week(&self, week: IsoWeek, manifest: bytes::Bytes) -> Result<ObjectInfo, SinkError> {
        Ok(Self::put(&self.objects, Self::key(week, "manifest.json")?, manifest))
    }
    async fn read_object(&self, week: IsoWeek, name: &str) -> Result<Option<bytes::Bytes>, SinkError> {
        let key = Self::key(week, name)?;
        Ok(self.lock().get(&key).cloned())
    }
    async fn delete_object(&self, week: IsoWeek, name: &str) -> Result<(), SinkError> {
        let key = Self::key(week, name)?;
        self.lock().remove(&key);
        Ok(())
    }
    async fn list_weeks(&self) -> Result<Vec<IsoWeek>, SinkError> {
        Ok(self
            .lock()
            .keys()
            .filter_map(|k| k.strip_prefix("summaries/")?.strip_suffix("/manifest.json"))
            .filter_map(|w| IsoWeek::parse(w).ok())
            .collect())
    }
    async fn read_index(&self, name: &str) -> Result<Option<bytes::Bytes>, SinkError> {
        check_object_name(name)?;
        Ok(self.lock().get(&format!("summaries/{name}")).cloned())
    }
}

/// A [`LinkSecretStore`](crate::ports::LinkSecretStore) holding a fixed secret.
#[derive(Debug, Clone)]
pub struct MemoryLinkSecret(String);

impl MemoryLinkSecret {
    /// `text` must be at least 32 bytes, or every load fails.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }
}

#[async_trait]
impl crate::ports::LinkSecretStore for MemoryLinkSecret {
    async fn load(&self) -> Result<crate::report_link::LinkSecret, crate::ports::SecretError> {
        crate::report_link::LinkSecret::from_text(&self.0)
    }
}

/// Collects a week's records from a store, checking page sizes on the way.
pub async fn collect_week(store: &dyn RecordStore, week: IsoWeek, page_size: usize) -> Vec<Record> {
    let mut out = Vec::new();
    let mut pages = store.scan_week(week, page_size);
    while let Some(page) = pages.next().await {
        let page = page.expect("scan_week page");
        assert!(page.len() <= page_size, "page of {} exceeds {page_size}", page.len());
        out.extend(page);
    }
    out
}

fn record(at: Timestamp, data: &str) -> Record {
    Record { id: RecordId::generate(at), received_at: at, data: data.to_owned() }
}

/// The behaviour every [`RecordStore`] must show. Call it with an empty store.
pub async fn store_contract(store: &dyn RecordStore) {
    let week = IsoWeek::parse("2026-W20").expect("week");
    let other = week.next();
    let t0 = week.start();

    // GIVEN records in two weeks, including the first and last instants of the week
    let edge_first = record(t0, r#"{"edge":"first"}"#);
    let edge_last = record(Timestamp::from_millis(week.end().as_millis() - 1), r#"{"edge":"last"}"#);
    let lossless = record(
        Timestamp::from_millis(t0.as_millis() + 1000),
        r#"{"z":1.0,"a":1e400,"big":123456789012345678901234567890,"u":"é\u00e9 😀","n":null,"arr":[1,{"x":[]}]}"#,
    );
    let next_week = record(other.start(), r#"{"week":"next"}"#);
    let mut batch: Vec<Record> = (0..25)
        .map(|i| record(Timestamp::from_millis(t0.as_millis() + 5000 + i), &format!(r#"{{"i":{i}}}"#)))
        .collect();
    batch.push(lossless.clone());
    assert_eq!(store.insert(&batch, None).await.expect("insert batch"), InsertOutcome::Inserted);
    for r in [&edge_first, &edge_last, &next_week] {
        assert_eq!(store.insert(std::slice::from_ref(r), None).await.expect("insert"), InsertOutcome::Inserted);
    }

    // THEN each reads back exactly as stored
    assert_eq!(store.get(lossless.id).await.expect("get").as_ref(), Some(&lossless));
    assert_eq!(store.get(RecordId::generate(t0)).await.expect("get unknown"), None);

    // AND a week scan returns that week only, in id order, in bounded pages
    let scanned = collect_week(store, week, 7).await;
    let mut expected: Vec<Record> = batch.iter().chain([&edge_first, &edge_last]).cloned().collect();
    expected.sort_by_key(|r| r.id);
    assert_eq!(scanned, expected);
    assert_eq!(collect_week(store, other, 100).await, vec![next_week.clone()]);
    assert!(collect_week(store, week.previous(), 100).await.is_empty());
    let weeks = store.weeks().await.expect("weeks");
    assert!(weeks.contains(&week) && weeks.contains(&other) && !weeks.contains(&week.previous()));
    assert!(weeks.windows(2).all(|w| w[0] < w[1]), "weeks not ascending: {weeks:?}");

    // AND an idempotency key is claimed once; a second claim writes nothing
    let key = IdempotencyKey::parse(b"contract-key").expect("key");
    let entry = IdempotencyEntry {
        key: key.clone(),
        fingerprint: Fingerprint::of("json", b"{}"),
        received_at: t0,
        status: 201,
        response: r#"{"count":1,"ids":[]}"#.into(),
        expires_at: Timestamp::from_millis(Timestamp::now().as_millis() + RETENTION_MS),
    };
    assert_eq!(store.idempotency_entry(&key).await.expect("lookup"), None);
    let keyed = record(Timestamp::from_millis(t0.as_millis() + 9000), r#"{"keyed":1}"#);
    assert_eq!(store.insert(std::slice::from_ref(&keyed), Some(&entry)).await.expect("claim"), InsertOutcome::Inserted);
    assert_eq!(store.idempotency_entry(&key).await.expect("lookup").as_ref(), Some(&entry));
    let dup = record(Timestamp::from_millis(t0.as_millis() + 9001), r#"{"keyed":2}"#);
    let mut other_entry = entry.clone();
    other_entry.fingerprint = Fingerprint::of("json", b"[]");
    assert_eq!(
        store.insert(std::slice::from_ref(&dup), Some(&other_entry)).await.expect("second claim"),
        InsertOutcome::KeyExists(entry.clone())
    );
    assert_eq!(store.get(dup.id).await.expect("get"), None);
    assert_eq!(store.get(keyed.id).await.expect("get").as_ref(), Some(&keyed));
}

/// Collects the records of `[from, to)`, checking page sizes on the way.
pub async fn collect_range(store: &dyn RecordStore, from: RecordId, to: RecordId, page_size: usize) -> Vec<Record> {
    let mut out = Vec::new();
    let mut pages = store.scan_range(from, to, page_size);
    while let Some(page) = pages.next().await {
        let page = page.expect("scan_range page");
        assert!(page.len() <= page_size, "page of {} exceeds {page_size}", page.len());
        out.extend(page);
    }
    out
}

/// The behaviour every [`RecordLifecycle`] must show. Call it with an empty store.
pub async fn lifecycle_contract(store: &dyn RecordLifecycle) {
    let week = IsoWeek::parse("2026-W30").expect("week");
    let next = week.next();
    let at = |ms: i64| Timestamp::from_millis(week.start().as_millis() + ms);
    const DAY: i64 = 86_400_000;

    // GIVEN records on three days of a week and one in the next week, restored under their own ids
    let mut records: Vec<Record> = (0..30)
        .map(|i| record(at((i % 3) * DAY + i * 1000), &format!(r#"{{"i":{i},"x":1.0}}"#)))
        .chain([record(next.start(), r#"{"week":"next"}"#)])
        .collect();
    records.sort_by_key(|r| r.id);
    let outcome = store.restore(&records).await.expect("restore");
    assert_eq!(outcome, RestoreOutcome::Restored { inserted: 31, present: 0 });
    for r in &records {
        assert_eq!(store.get(r.id).await.expect("get").as_ref(), Some(r), "restored records keep id, time and data");
    }
    assert!(store.weeks().await.expect("weeks").contains(&week), "a restore marks its weeks");

    // THEN restoring again adds nothing
    let again = store.restore(&records).await.expect("restore again");
    assert_eq!(again, RestoreOutcome::Restored { inserted: 0, present: 31 });

    // AND a conflicting id refuses the whole call, writing nothing
    let fresh = record(at(5), r#"{"fresh":true}"#);
    let changed = Record { data: r#"{"i":0,"x":2.0}"#.into(), ..records[3].clone() };
    let refused = store.restore(&[fresh.clone(), changed.clone()]).await.expect("restore with conflict");
    assert_eq!(refused, RestoreOutcome::Conflict(changed.id));
    assert_eq!(store.get(fresh.id).await.expect("get"), None, "nothing of a refused restore is stored");
    assert_eq!(store.get(changed.id).await.expect("get").as_ref(), Some(&records[3]));

    // AND a range read spans days, honours both bounds and pages in id order
    let (lo, hi) = (records[4].id, records[20].id);
    let ranged = collect_range(store, lo, hi, 4).await;
    assert_eq!(ranged, records[4..20].to_vec());
    assert!(collect_range(store, hi, lo, 4).await.is_empty(), "an empty range reads nothing");

    // AND erasure deletes exactly one record, once
    assert!(store.delete(records[0].id).await.expect("delete"));
    assert_eq!(store.get(records[0].id).await.expect("get"), None);
    assert!(!store.delete(records[0].id).await.expect("delete again"));

    // AND deleting a week leaves the other weeks whole and forgets the week
    let deleted = store.delete_week(week).await.expect("delete week");
    assert_eq!(deleted, 29);
    assert!(collect_week(store, week, 100).await.is_empty());
    assert_eq!(collect_week(store, next, 100).await.len(), 1);
    let weeks = store.weeks().await.expect("weeks");
    assert!(!weeks.contains(&week) && weeks.contains(&next), "{weeks:?}");
    assert_eq!(store.delete_week(week).await.expect("delete week again"), 0);
}

/// A [`WeekRefresh`] in memory that also records every week asked for, in
/// order (tests check which erasures asked for a rewrite).
#[derive(Debug, Default)]
pub struct RecordedRefresh(Mutex<RefreshLog>);

#[derive(Debug, Default)]
struct RefreshLog {
    asked: Vec<IsoWeek>,
    pending: std::collections::BTreeSet<IsoWeek>,
}

impl RecordedRefresh {
    /// The weeks asked for so far, in order, repeats included.
    pub fn weeks(&self) -> Vec<IsoWeek> {
        self.lock().asked.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RefreshLog> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl WeekRefresh for RecordedRefresh {
    async fn request(&self, week: IsoWeek) -> Result<(), SinkError> {
        let mut log = self.lock();
        log.asked.push(week);
        log.pending.insert(week);
        Ok(())
    }

    async fn pending(&self) -> Result<Vec<IsoWeek>, SinkError> {
        Ok(self.lock().pending.iter().copied().collect())
    }

    async fn done(&self, week: IsoWeek) -> Result<(), SinkError> {
        self.lock().pending.remove(&week);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_meets_the_lifecycle_contract() {
        lifecycle_contract(&MemoryRecordStore::default()).await;
    }

    #[tokio::test]
    async fn memory_store_meets_the_contract() {
        store_contract(&MemoryRecordStore::default()).await;
    }

    #[tokio::test]
    async fn memory_sink_meets_the_sink_contract() {
        sink_contract(&MemorySummarySink::default()).await;
    }

    #[tokio::test]
    async fn recorded_refresh_meets_the_refresh_contract() {
        refresh_contract(&RecordedRefresh::default()).await;
    }
}
