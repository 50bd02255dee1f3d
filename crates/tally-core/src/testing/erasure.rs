//! "An erased record never comes back", as one scenario every storage
//! (memory; SQLite with the folder and its lock; DynamoDB and S3 on moto)
//! runs: an erasure before, during and after a run of its week, each
//! interleaving forced — the run is paused right after its reader passed
//! the record, the erasure lands, and the rewrite it asked for is started
//! while the paused run still holds the week.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use sha2::Digest;
use tokio::sync::Notify;

use super::{FixedClock, HookedScans, RecordedRefresh, ScanHook};
use crate::RecordId;
use crate::clock::{Clock, Timestamp};
use crate::lifecycle::erase;
use crate::ports::{
    Acquired, RecordLifecycle, RecordPages, RecordStore, StoreError, SummarySink, WeekLease, WeekLock, WeekRefresh,
};
use crate::record::Record;
use crate::summary::{
    LockSettings, MANIFEST_JSON, Manifest, NoProgress, OnBusy, RECORDS_NDJSON_GZ, RefreshRequest, SummaryOptions,
    Trigger, Weekly, WeeklySettings,
};
use crate::week::IsoWeek;

/// A store whose next scan, once armed, pauses after its last page — the
/// reader has passed every record it returned — until released.
pub type PausingStore = HookedScans<PauseAfterRead>;

/// The [`ScanHook`] of a [`PausingStore`].
#[derive(Debug, Default)]
pub struct PauseAfterRead {
    gate: Mutex<Option<Gate>>,
}

/// `entered`: the scan reached the pause; `go_on`: let it finish.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    pub entered: Arc<Notify>,
    pub go_on: Arc<Notify>,
}

impl PauseAfterRead {
    /// Pauses the next scan that returns records, after its last page.
    pub fn arm(&self) -> Gate {
        let gate = Gate::default();
        *self.gate.lock().unwrap_or_else(PoisonError::into_inner) = Some(gate.clone());
        gate
    }
}

impl ScanHook for PauseAfterRead {
    fn scan<'a>(
        &'a self,
        inner: &'a dyn RecordStore,
        from: RecordId,
        to: RecordId,
        page_size: usize,
    ) -> RecordPages<'a> {
        // Pause only after a scan that read records: the record passed.
        let read_any = Arc::new(AtomicBool::new(false));
        let seen = read_any.clone();
        let pages = inner.scan_range(from, to, page_size).inspect(move |page| {
            if page.as_ref().is_ok_and(|p| !p.is_empty()) {
                seen.store(true, Ordering::SeqCst);
            }
        });
        let paused = futures::stream::once(async move {
            if read_any.load(Ordering::SeqCst) {
                let gate = self.gate.lock().unwrap_or_else(PoisonError::into_inner).take();
                if let Some(gate) = gate {
                    gate.entered.notify_one();
                    gate.go_on.notified().await;
                }
            }
            None
        });
        pages.map(Some).chain(paused).filter_map(futures::future::ready).boxed()
    }
}

/// A lock that says when a run found its week held by another.
#[derive(Debug)]
struct ObservedLock {
    inner: Arc<dyn WeekLock>,
    held: Notify,
}

#[async_trait]
impl WeekLock for ObservedLock {
    async fn try_acquire(
        &self,
        week: IsoWeek,
        holder: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Acquired, StoreError> {
        let acquired = self.inner.try_acquire(week, holder, now, ttl).await?;
        if matches!(acquired, Acquired::Held { .. }) {
            self.held.notify_one();
        }
        Ok(acquired)
    }
    async fn renew(&self, lease: &mut WeekLease, now: Timestamp, ttl: Duration) -> Result<bool, StoreError> {
        self.inner.renew(lease, now, ttl).await
    }
    async fn check(&self, lease: &WeekLease, now: Timestamp) -> Result<bool, StoreError> {
        self.inner.check(lease, now).await
    }
    async fn release(
        &self,
        lease: WeekLease,
        done_from: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.inner.release(lease, done_from, now).await
    }
}

/// The record ids in `week`'s export, after checking that its manifest
/// lists exactly its objects' sizes and hashes. `None`: no manifest.
pub async fn exported_ids(sink: &dyn SummarySink, week: IsoWeek) -> Option<Vec<String>> {
    let manifest = sink.read_object(week, MANIFEST_JSON).await.expect("read the manifest")?;
    let manifest: Manifest = serde_json::from_slice(&manifest).expect("a manifest");
    for object in &manifest.objects {
        let name = object.key.rsplit('/').next().expect("a name");
        let body = sink.read_object(week, name).await.expect("read an object").expect("a listed object exists");
        assert_eq!(body.len() as u64, object.bytes, "{} size", object.key);
        assert_eq!(hex::encode(sha2::Sha256::digest(&body)), object.sha256, "{} hash", object.key);
    }
    let export = sink.read_object(week, RECORDS_NDJSON_GZ).await.expect("read the export").expect("an export");
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(export.as_ref()).read_to_string(&mut text).expect("gzip");
    Some(
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["id"].as_str().expect("id").to_owned())
            .collect(),
    )
}

/// Drains the refresh queue as the refresher (or the S3 event) would.
pub async fn drain(weekly: &Weekly, refresh: &dyn WeekRefresh, now: Timestamp) {
    let requests: Vec<RefreshRequest> = refresh
        .pending()
        .await
        .expect("pending requests")
        .into_iter()
        .map(|week| RefreshRequest { week, requested_at: now })
        .collect();
    weekly.refresh(&requests, &NoProgress).await.expect("the rewrites");
    assert!(refresh.pending().await.expect("pending").is_empty(), "every request withdrawn");
}

fn record(week: IsoWeek, n: i64) -> Record {
    let at = Timestamp::from_millis(week.start().as_millis() + 3_600_000 * (n + 1));
    Record { id: RecordId::generate(at), received_at: at, data: format!(r#"{{"n":{n}}}"#) }
}

/// The scenario: one week, erasures before, during and after its runs; no
/// export ever keeps an erased record once the queue is drained, and every
/// manifest matches its objects.
pub async fn erasure_scenario(store: Arc<dyn RecordLifecycle>, sink: Arc<dyn SummarySink>, lock: Arc<dyn WeekLock>) {
    let week = IsoWeek::parse("2026-W47").expect("week");
    let now = Timestamp::from_millis(week.end().as_millis() + 3_600_000);
    let clock: Arc<dyn Clock> = Arc::new(FixedClock::at(now));
    let paused = Arc::new(PausingStore::new(store, PauseAfterRead::default()));
    let refresh = Arc::new(RecordedRefresh::default());
    let settings = WeeklySettings {
        // A short ttl, renewed: the paused run keeps the week while the
        // rewrite polls for it.
        lock: LockSettings { ttl: Duration::from_secs(30), on_busy: OnBusy::Wait(Duration::from_secs(60)) },
        ..WeeklySettings::local(SummaryOptions { threads: 1, ..SummaryOptions::default() }, None)
    };
    let lock = Arc::new(ObservedLock { inner: lock, held: Notify::new() });
    let weekly = Weekly::new(paused.clone(), sink.clone(), lock.clone(), clock, settings, "erasure scenario")
        .with_refresh(refresh.clone());
    let records: Vec<Record> = (0..6).map(|n| record(week, n)).collect();
    paused.restore(&records).await.expect("restore");
    let id = |n: usize| records[n].id.to_string();

    // BEFORE a run: erased, then the scheduled run (which takes the request).
    erase(paused.as_ref(), sink.as_ref(), refresh.as_ref(), now, records[0].id).await.expect("erase").expect("found");
    weekly.week(week, Trigger::Scheduled, &NoProgress).await.expect("run").expect("not skipped");
    drain(&weekly, refresh.as_ref(), now).await;
    let ids = exported_ids(sink.as_ref(), week).await.expect("summarized");
    assert!(!ids.contains(&id(0)) && ids.contains(&id(1)), "before: {ids:?}");

    // DURING a run: paused after its reader passed every record; the record
    // is erased; the rewrite starts at once and must wait for the week.
    let gate = paused.hook().arm();
    let run = tokio::spawn({
        let weekly = weekly.clone();
        async move { weekly.week(week, Trigger::Scheduled, &NoProgress).await }
    });
    gate.entered.notified().await;
    erase(paused.as_ref(), sink.as_ref(), refresh.as_ref(), now, records[1].id).await.expect("erase").expect("found");
    let rewrite = tokio::spawn({
        let (weekly, refresh) = (weekly.clone(), refresh.clone());
        async move { drain(&weekly, refresh.as_ref(), now).await }
    });
    // The rewrite found the week held by the paused run: it waits.
    lock.held.notified().await;
    assert!(!rewrite.is_finished(), "the rewrite waits for the run holding the week");
    gate.go_on.notify_one();
    run.await.expect("run task").expect("run").expect("not skipped");
    rewrite.await.expect("rewrite task");
    let ids = exported_ids(sink.as_ref(), week).await.expect("summarized");
    assert!(!ids.contains(&id(1)) && ids.contains(&id(2)), "during: {ids:?}");

    // AFTER a run: the week is rewritten without the record.
    erase(paused.as_ref(), sink.as_ref(), refresh.as_ref(), now, records[2].id).await.expect("erase").expect("found");
    drain(&weekly, refresh.as_ref(), now).await;
    let ids = exported_ids(sink.as_ref(), week).await.expect("summarized");
    assert!(!ids.contains(&id(2)) && ids.contains(&id(3)), "after: {ids:?}");
    assert_eq!(ids.len(), 3, "{ids:?}");
}
