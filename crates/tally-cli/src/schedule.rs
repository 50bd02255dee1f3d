//! The in-process weekly schedule of `tally serve`: catch up missed weeks at
//! start, then summarize the previous week at every scheduled time, retrying
//! failures with backoff, and prune what the retention allows after each run.
//! Every week the schedule or its catch-up writes is announced to the
//! notifiers (`--notify-url`) right after its manifest. Beside it, the
//! refresher rewrites the summary of a week an erasure changed — silently:
//! a rewrite after an erasure is not a new weekly report.
//!
//! Every run holds its week's lock (`tally_core::summary::locked_run`), so
//! the schedule, the refresher and any `tally summarize` or `tally import`
//! on the same data never write one week at once. Each run is a task of its
//! own: an error or a panic fails that run (logged with its week and cause,
//! and counted), never the schedule or the refresher.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tally_core::lifecycle::prune;
use tally_core::ports::{Notifier, WeekLock};
use tally_core::retry::{RetryPolicy, retry};
use tally_core::summary::notify::announce;
use tally_core::summary::{
    LockSettings, LockedError, SummarizeError, SummaryOptions, WeeklySchedule, locked_run, pending_weeks,
    summarize_week,
};
use tally_core::{Clock, IsoWeek, RecordLifecycle, SummarySink, Timestamp};
use tally_local::ChannelWeekRefresh;
use tokio::task::JoinHandle;

use crate::progress::CliProgress;

/// How long the refresher gathers requests before it runs: a burst of
/// erasures in one week rewrites that week once, well within a minute.
const REFRESH_GATHER: Duration = Duration::from_secs(5);

/// The waits of the schedule and the refresher; tests shorten them.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A failed run's retries ([`RetryPolicy::SCHEDULED_RUN`]).
    pub retry: RetryPolicy,
    /// [`REFRESH_GATHER`].
    pub gather: Duration,
    /// The week lock's ttl, and how long a run waits for another run of its
    /// week ([`LockSettings::LOCAL`]); the catch-up skips such a week.
    pub lock: LockSettings,
}

impl Default for Timing {
    fn default() -> Self {
        Self { retry: RetryPolicy::SCHEDULED_RUN, gather: REFRESH_GATHER, lock: LockSettings::LOCAL }
    }
}

/// Why one run failed. Each names its week.
#[derive(Debug, thiserror::Error)]
pub enum RunFailed {
    #[error(transparent)]
    Run(#[from] LockedError<SummarizeError>),
    #[error(transparent)]
    Plan(#[from] SummarizeError),
    #[error("the run of {week} panicked: {message}")]
    Panicked { week: IsoWeek, message: String },
    #[error("the run of {week} was cancelled")]
    Cancelled { week: IsoWeek },
}

/// What started a run: its name in the lock's messages, whether it waits
/// for another run of the week, whether it is announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The schedule's week: waits, announced.
    Scheduled,
    /// A week the catch-up found without a summary: skipped while another
    /// run writes it (that run commits it), announced.
    CatchUp,
    /// A rewrite after an erasure: waits (the run in progress may have read
    /// the record before it went), not announced.
    Refresh,
}

impl Trigger {
    fn holder(self) -> String {
        let what = match self {
            Self::Scheduled => "tally serve schedule",
            Self::CatchUp => "tally serve catch-up",
            Self::Refresh => "tally serve refresher",
        };
        crate::holder(what)
    }
}

/// Everything the schedule's and the refresher's runs need. Cheap to clone.
#[derive(Clone)]
pub struct Runs(Arc<RunsInner>);

struct RunsInner {
    store: Arc<dyn RecordLifecycle>,
    sink: Arc<dyn SummarySink>,
    lock: Arc<dyn WeekLock>,
    clock: Arc<dyn Clock>,
    options: SummaryOptions,
    notifiers: Vec<Arc<dyn Notifier>>,
    timing: Timing,
    /// Runs (attempts) that failed since start, for the failure log lines.
    failed: AtomicU64,
}

impl std::fmt::Debug for Runs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runs").field("failed", &self.failed()).finish_non_exhaustive()
    }
}

/// Aborts a run's task when whoever waits for it stops waiting (the
/// server shutting down aborts the schedule): no run outlives its trigger.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(s) => *s,
        Err(panic) => panic.downcast_ref::<&str>().map_or_else(|| "(no message)".to_owned(), |s| (*s).to_owned()),
    }
}

impl Runs {
    pub fn new(
        store: Arc<dyn RecordLifecycle>,
        sink: Arc<dyn SummarySink>,
        lock: Arc<dyn WeekLock>,
        clock: Arc<dyn Clock>,
        options: SummaryOptions,
        notifiers: Vec<Arc<dyn Notifier>>,
    ) -> Self {
        Self(Arc::new(RunsInner {
            store,
            sink,
            lock,
            clock,
            options,
            notifiers,
            timing: Timing::default(),
            failed: AtomicU64::new(0),
        }))
    }

    /// The same runs with other waits (tests).
    #[cfg(test)]
    fn with_timing(self, timing: Timing) -> Self {
        let inner = Arc::try_unwrap(self.0).unwrap_or_else(|_| panic!("with_timing before sharing the runs"));
        Self(Arc::new(RunsInner { timing, ..inner }))
    }

    /// How many runs failed since start.
    pub fn failed(&self) -> u64 {
        self.0.failed.load(Ordering::SeqCst)
    }

    /// Runs `week` in a task of its own, under its lock: a panic inside is
    /// this run's failure. `false` when skipped (another run writes it).
    async fn week(&self, week: IsoWeek, trigger: Trigger, total: u64) -> Result<bool, RunFailed> {
        let runs = self.clone();
        let mut task = AbortOnDrop(tokio::spawn(async move { runs.week_in_task(week, trigger, total).await }));
        match (&mut task.0).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(RunFailed::Panicked { week, message: panic_message(e.into_panic()) }),
            Err(_) => Err(RunFailed::Cancelled { week }),
        }
    }

    async fn week_in_task(&self, week: IsoWeek, trigger: Trigger, total: u64) -> Result<bool, RunFailed> {
        let r = &self.0;
        let settings = match trigger {
            Trigger::CatchUp => LockSettings { on_busy: tally_core::summary::OnBusy::Skip, ..r.timing.lock },
            Trigger::Scheduled | Trigger::Refresh => r.timing.lock,
        };
        let progress = CliProgress::new(total, true);
        // A rewrite after an erasure may run before the week ends (a
        // partial summary, rewritten as such).
        let options = match trigger {
            Trigger::Refresh => r.options.for_rewrite(week, r.clock.now()),
            Trigger::Scheduled | Trigger::CatchUp => r.options.clone(),
        };
        let (store, clock, options, progress_ref) = (r.store.as_ref(), r.clock.as_ref(), &options, &progress);
        let holder = trigger.holder();
        let run =
            locked_run(r.lock.clone(), r.clock.clone(), r.sink.clone(), week, &holder, &settings, |sink| async move {
                summarize_week(store, sink.as_ref(), clock, week, options, progress_ref).await
            });
        let Some(report) = run.await? else { return Ok(false) };
        if trigger != Trigger::Refresh {
            // Announced right after its manifest; a failed delivery is logged only.
            announce(&r.notifiers, r.sink.as_ref(), &report, &RetryPolicy::NOTIFICATION).await;
        }
        Ok(true)
    }

    /// Summarizes every week with records but no summary, oldest first (as
    /// `tally_core::summary::catch_up`), announcing each as it is written:
    /// a failure part-way keeps the announcements of the weeks before it.
    async fn catch_up(&self) -> Result<usize, RunFailed> {
        let weeks = pending_weeks(self.0.store.as_ref(), self.0.sink.as_ref(), self.0.clock.now()).await?;
        let mut written = 0;
        for week in &weeks {
            written += usize::from(self.week(*week, Trigger::CatchUp, 0).await?);
        }
        Ok(written)
    }

    /// Runs `run` with the retry policy ([`RetryPolicy::SCHEDULED_RUN`]);
    /// when the attempts are used up, the next scheduled run's catch-up
    /// picks the week up again. Every failed attempt is logged and counted.
    async fn with_retries<F, Fut>(&self, what: &str, run: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<usize, RunFailed>>,
    {
        let result = retry(&self.0.timing.retry, run, |_| true, |e, attempt| {
            let failed_runs = self.0.failed.fetch_add(1, Ordering::SeqCst) + 1;
            let retry_in_s = attempt.next_in.map(|d| d.as_secs());
            let week = run_week(e).map(|w| w.to_string());
            tracing::error!(error = %tally_core::error_chain(e), week, attempt = attempt.number, ?retry_in_s, failed_runs, "{what} failed");
        })
        .await;
        match result {
            Ok(weeks) if weeks > 0 => tracing::info!(weeks, "{what} done"),
            Ok(_) => {}
            Err(_) => tracing::error!(
                "{what} kept failing; giving up until the next scheduled run (check the data directory and bucket)"
            ),
        }
    }
}

/// The week a failed run concerns, if it names one.
fn run_week(e: &RunFailed) -> Option<IsoWeek> {
    use tally_core::summary::{LockError, RunError};
    match e {
        RunFailed::Panicked { week, .. } | RunFailed::Cancelled { week } => Some(*week),
        RunFailed::Plan(e) => e.week(),
        RunFailed::Run(LockedError::Lock(LockError::Busy { week, .. } | LockError::Store { week, .. })) => Some(*week),
        RunFailed::Run(LockedError::Run(RunError::Lost { week, .. })) => Some(*week),
        RunFailed::Run(LockedError::Run(RunError::Failed(e))) => e.week(),
    }
}

pub fn spawn(runs: Runs, schedule: WeeklySchedule, retention_weeks: Option<u32>) -> JoinHandle<()> {
    tokio::spawn(async move {
        runs.with_retries("catch-up", || runs.catch_up()).await;
        loop {
            let now = runs.0.clock.now();
            let Some(next) = schedule.next_after(now) else {
                tracing::warn!(%schedule, "the schedule never fires again; weekly summaries are off");
                return;
            };
            let week = WeeklySchedule::week_for_run(next);
            tracing::info!(next_run = %next, %week, "next weekly summary scheduled");
            tokio::time::sleep(until(now, next)).await;
            runs.with_retries("weekly summary", || async {
                runs.week(week, Trigger::Scheduled, 1).await.map(usize::from)
            })
            .await;
            // Also pick up any older week a failed run left behind.
            runs.with_retries("catch-up", || runs.catch_up()).await;
            if let Some(keep) = retention_weeks {
                prune_old_weeks(&runs, keep).await;
            }
        }
    })
}

/// Deletes the records of summarized weeks past the retention; a failure
/// (or a panic) is logged and retried at the next run.
async fn prune_old_weeks(runs: &Runs, keep: u32) {
    let runs = runs.clone();
    let mut task = AbortOnDrop(tokio::spawn(async move {
        let r = &runs.0;
        prune(r.store.as_ref(), r.sink.as_ref(), r.clock.now(), keep).await
    }));
    match (&mut task.0).await {
        Ok(Ok(report)) => {
            for (week, records) in &report.pruned {
                tracing::info!(%week, records, retention_weeks = keep, "pruned the week's records (its summary stays)");
            }
            for week in &report.unsummarized {
                tracing::warn!(%week, "past the retention but not summarized: its records are kept until it is");
            }
        }
        Ok(Err(e)) => {
            tracing::error!(error = %tally_core::error_chain(&e), "pruning failed; the next weekly run tries again")
        }
        Err(e) => {
            tracing::error!(error = %tally_core::error_chain(&e), "pruning failed; the next weekly run tries again")
        }
    }
}

/// Rewrites the summaries of weeks asked for (after erasures), gathering the
/// requests of [`REFRESH_GATHER`] first, with the schedule's retries, and
/// withdraws each week's request once it is rewritten.
pub fn spawn_refresher(runs: Runs) -> (ChannelWeekRefresh, JoinHandle<()>) {
    let (queue, mut inbox) = tally_local::refresh::channel();
    let task = tokio::spawn(async move {
        while let Some(first) = inbox.recv().await {
            let mut weeks = BTreeSet::from([first]);
            let gather = tokio::time::sleep(runs.0.timing.gather);
            tokio::pin!(gather);
            loop {
                tokio::select! {
                    Some(week) = inbox.recv() => { weeks.insert(week); }
                    () = &mut gather => break,
                }
            }
            for week in weeks {
                runs.with_retries("summary refresh", || async {
                    let written = runs.week(week, Trigger::Refresh, 1).await?;
                    if written {
                        inbox.done(week);
                    }
                    Ok(usize::from(written))
                })
                .await;
            }
        }
    });
    (queue, task)
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::from_millis(u64::try_from(at.as_millis() - now.as_millis()).unwrap_or(0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use bytes::Bytes;
    use futures::StreamExt;
    use sha2::Digest;
    use tally_core::ports::WeekRefresh;
    use tally_core::ports::{
        Acquired, InsertOutcome, ObjectInfo, ObjectUpload, RecordPages, RestoreOutcome, SinkError, StoreError,
        WeekLease,
    };
    use tally_core::summary::{MANIFEST_JSON, Manifest};
    use tally_core::testing::{FixedClock, MemoryRecordStore, MemorySummarySink, MemoryWeekLock, TokioClock};
    use tally_core::{IdempotencyEntry, IdempotencyKey, Record, RecordId, RecordStore};
    use tokio::sync::{Notify, mpsc};

    use super::*;

    fn w47() -> IsoWeek {
        IsoWeek::parse("2026-W47").unwrap()
    }

    /// Records on two days of `week`.
    async fn records_in(store: &dyn RecordLifecycle, week: IsoWeek) {
        let records: Vec<Record> = (0..20)
            .map(|i| {
                let at = Timestamp::from_millis(week.start().as_millis() + (i % 2) * 86_400_000 + i * 1000);
                Record { id: RecordId::generate(at), received_at: at, data: format!(r#"{{"i":{i}}}"#) }
            })
            .collect();
        store.restore(&records).await.unwrap();
    }

    /// A store whose scans of one week panic: a bug in a run.
    #[derive(Debug, Default)]
    struct PanicsOn {
        inner: MemoryRecordStore,
        week: Mutex<Option<IsoWeek>>,
    }

    #[async_trait]
    impl RecordStore for PanicsOn {
        async fn insert(&self, r: &[Record], i: Option<&IdempotencyEntry>) -> Result<InsertOutcome, StoreError> {
            self.inner.insert(r, i).await
        }
        async fn idempotency_entry(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyEntry>, StoreError> {
            self.inner.idempotency_entry(key).await
        }
        async fn get(&self, id: RecordId) -> Result<Option<Record>, StoreError> {
            self.inner.get(id).await
        }
        fn scan_range(&self, from: RecordId, to: RecordId, page_size: usize) -> RecordPages<'_> {
            let doomed = *self.week.lock().unwrap();
            if let Some(week) =
                doomed.filter(|w| from >= RecordId::lower_bound(w.start()) && to <= RecordId::lower_bound(w.end()))
            {
                return futures::stream::once(async move { panic!("injected panic while reading {week}") }).boxed();
            }
            self.inner.scan_range(from, to, page_size)
        }
        async fn weeks(&self) -> Result<Vec<IsoWeek>, StoreError> {
            self.inner.weeks().await
        }
    }

    #[async_trait]
    impl RecordLifecycle for PanicsOn {
        async fn restore(&self, records: &[Record]) -> Result<RestoreOutcome, StoreError> {
            self.inner.restore(records).await
        }
        async fn delete(&self, id: RecordId) -> Result<bool, StoreError> {
            self.inner.delete(id).await
        }
        async fn delete_week(&self, week: IsoWeek) -> Result<u64, StoreError> {
            self.inner.delete_week(week).await
        }
    }

    /// A memory sink that reports each commit and can hold the first run at
    /// its `begin_week` until told to go on.
    #[derive(Debug, Default)]
    struct TestSink {
        inner: MemorySummarySink,
        committed: Mutex<Option<mpsc::UnboundedSender<IsoWeek>>>,
        /// `(entered, go_on)`, taken by the first `begin_week`.
        gate: Mutex<Option<(Arc<Notify>, Arc<Notify>)>>,
    }

    impl TestSink {
        fn commits(&self) -> mpsc::UnboundedReceiver<IsoWeek> {
            let (tx, rx) = mpsc::unbounded_channel();
            *self.committed.lock().unwrap() = Some(tx);
            rx
        }

        /// Whether `week`'s manifest lists exactly its objects' sizes and hashes.
        async fn manifest_matches(&self, week: IsoWeek) -> bool {
            let manifest = self.inner.read_object(week, MANIFEST_JSON).await.unwrap().expect("a manifest");
            let manifest: Manifest = serde_json::from_slice(&manifest).unwrap();
            for object in &manifest.objects {
                let name = object.key.rsplit('/').next().unwrap();
                let Some(body) = self.inner.read_object(week, name).await.unwrap() else { return false };
                if body.len() as u64 != object.bytes || hex::encode(sha2::Sha256::digest(&body)) != object.sha256 {
                    return false;
                }
            }
            !manifest.objects.is_empty()
        }
    }

    #[async_trait]
    impl SummarySink for TestSink {
        async fn begin_week(&self, week: IsoWeek) -> Result<(), SinkError> {
            let gate = self.gate.lock().unwrap().take();
            if let Some((entered, go_on)) = gate {
                entered.notify_one();
                go_on.notified().await;
            }
            self.inner.begin_week(week).await
        }
        async fn put_object(&self, w: IsoWeek, n: &str, ct: &str, b: Bytes) -> Result<ObjectInfo, SinkError> {
            self.inner.put_object(w, n, ct, b).await
        }
        async fn open_object(&self, w: IsoWeek, n: &str, ct: &str) -> Result<Box<dyn ObjectUpload>, SinkError> {
            self.inner.open_object(w, n, ct).await
        }
        async fn commit_week(&self, week: IsoWeek, manifest: Bytes) -> Result<ObjectInfo, SinkError> {
            let info = self.inner.commit_week(week, manifest).await?;
            if let Some(tx) = self.committed.lock().unwrap().as_ref() {
                let _ = tx.send(week);
            }
            Ok(info)
        }
        async fn read_object(&self, week: IsoWeek, name: &str) -> Result<Option<Bytes>, SinkError> {
            self.inner.read_object(week, name).await
        }
        async fn delete_object(&self, week: IsoWeek, name: &str) -> Result<(), SinkError> {
            self.inner.delete_object(week, name).await
        }
        async fn list_weeks(&self) -> Result<Vec<IsoWeek>, SinkError> {
            self.inner.list_weeks().await
        }
        async fn put_index(&self, name: &str, ct: &str, body: Bytes) -> Result<ObjectInfo, SinkError> {
            self.inner.put_index(name, ct, body).await
        }
        async fn share_link(&self, week: IsoWeek, name: &str) -> Result<String, SinkError> {
            self.inner.share_link(week, name).await
        }
    }

    /// A lock that tells who took it, in order, and when it turned a run away.
    #[derive(Debug, Default)]
    struct Observed {
        inner: MemoryWeekLock,
        takers: Mutex<Vec<String>>,
        held: Notify,
    }

    #[async_trait]
    impl WeekLock for Observed {
        async fn try_acquire(
            &self,
            w: IsoWeek,
            h: &str,
            now: Timestamp,
            ttl: Duration,
        ) -> Result<Acquired, StoreError> {
            let acquired = self.inner.try_acquire(w, h, now, ttl).await?;
            match &acquired {
                Acquired::Taken(_) => self.takers.lock().unwrap().push(h.to_owned()),
                Acquired::Held { .. } => self.held.notify_one(),
            }
            Ok(acquired)
        }
        async fn renew(&self, lease: &mut WeekLease, now: Timestamp, ttl: Duration) -> Result<bool, StoreError> {
            self.inner.renew(lease, now, ttl).await
        }
        async fn check(&self, lease: &WeekLease, now: Timestamp) -> Result<bool, StoreError> {
            self.inner.check(lease, now).await
        }
        async fn release(&self, l: WeekLease, d: Option<Timestamp>, now: Timestamp) -> Result<bool, StoreError> {
            self.inner.release(l, d, now).await
        }
    }

    fn options() -> SummaryOptions {
        SummaryOptions { threads: 1, ..SummaryOptions::default() }
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_panics_fails_alone_and_the_next_scheduled_run_still_happens() {
        // GIVEN records in W47 and W48, and a bug that panics any run reading W47
        let store = Arc::new(PanicsOn::default());
        records_in(store.as_ref(), w47()).await;
        records_in(store.as_ref(), w47().next()).await;
        *store.week.lock().unwrap() = Some(w47());
        let sink = Arc::new(TestSink::default());
        let mut committed = sink.commits();
        // AND the server started late on the Sunday of W47 (nothing to catch up)
        let clock = TokioClock::starting_at(Timestamp::from_millis(w47().end().as_millis() - 3_600_000));
        let timing =
            Timing { retry: RetryPolicy { max_attempts: 2, ..RetryPolicy::SCHEDULED_RUN }, ..Timing::default() };
        let runs =
            Runs::new(store, sink.clone(), Arc::new(MemoryWeekLock::default()), Arc::new(clock), options(), vec![])
                .with_timing(timing);
        let mut schedule = spawn(runs.clone(), WeeklySchedule::default(), None);
        // WHEN the Monday run of W47 panics (each attempt)
        // THEN the schedule lives on: the next Monday's run writes W48.
        // (No timeout: the summary's threads are real, and paused time
        // would race to any deadline while they work.)
        let week = tokio::select! {
            week = committed.recv() => week.unwrap(),
            end = &mut schedule => panic!("the schedule stopped: {end:?}"),
        };
        assert_eq!(week, w47().next());
        assert!(sink.manifest_matches(w47().next()).await);
        // AND W47's failures were counted, and left it without a manifest
        assert!(runs.failed() >= 2, "{} failed runs", runs.failed());
        assert_eq!(sink.list_weeks().await.unwrap(), vec![w47().next()]);
        schedule.abort();
    }

    #[tokio::test]
    async fn the_refresher_waits_for_the_schedules_run_of_the_same_week_then_rewrites_it() {
        let store = Arc::new(MemoryRecordStore::default());
        records_in(store.as_ref(), w47()).await;
        let (entered, go_on) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let sink =
            Arc::new(TestSink { gate: Mutex::new(Some((entered.clone(), go_on.clone()))), ..TestSink::default() });
        let mut committed = sink.commits();
        let lock = Arc::new(Observed::default());
        let clock = Arc::new(FixedClock::at(Timestamp::from_millis(w47().end().as_millis() + 3_600_000)));
        let timing = Timing {
            retry: RetryPolicy { max_attempts: 1, ..RetryPolicy::SCHEDULED_RUN },
            gather: Duration::from_millis(1),
            lock: LockSettings::LOCAL,
        };
        let runs = Runs::new(store, sink.clone(), lock.clone(), clock, options(), vec![]).with_timing(timing);
        // GIVEN the schedule's run of W47 holds the week, paused at its start
        let scheduled = tokio::spawn({
            let runs = runs.clone();
            async move { runs.week(w47(), Trigger::Scheduled, 1).await }
        });
        entered.notified().await;
        // WHEN an erasure asks for W47 to be rewritten
        let (queue, refresher) = spawn_refresher(runs.clone());
        queue.request(w47()).await.unwrap();
        // THEN the refresher finds the week held and waits, writing nothing
        lock.held.notified().await;
        assert!(committed.try_recv().is_err());
        // AND once the schedule's run goes on, it commits first, then the refresher rewrites the week
        go_on.notify_one();
        assert!(scheduled.await.unwrap().unwrap());
        assert_eq!(committed.recv().await, Some(w47()));
        assert_eq!(committed.recv().await, Some(w47()));
        let takers = lock.takers.lock().unwrap().clone();
        assert_eq!(takers.len(), 2, "{takers:?}");
        assert!(
            takers[0].starts_with("tally serve schedule") && takers[1].starts_with("tally serve refresher"),
            "{takers:?}"
        );
        assert!(sink.manifest_matches(w47()).await, "the manifest's hashes match its objects");
        assert_eq!(runs.failed(), 0);
        refresher.abort();
    }
}
