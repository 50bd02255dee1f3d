//! The in-process weekly schedule of `tally serve`: wiring only. At start it
//! asks the weekly run ([`Weekly`], in `tally-core`) for a catch-up, then at
//! every scheduled time for the scheduled run, retrying failed weeks with
//! backoff, then for the retention. Beside it, the refresher hands the
//! weeks an erasure changed to [`Weekly::refresh`]. Planning, the week
//! lock, announcing and pruning are the weekly run's; this module only
//! sleeps, retries and logs.
//!
//! Each week runs in a task of its own ([`Weekly::isolated`]): an error or a
//! panic fails that run (logged with its week and cause, and counted),
//! never the schedule or the refresher.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tally_core::Timestamp;
use tally_core::retry::{RetryPolicy, retry};
use tally_core::summary::{RefreshRequest, Request, Weekly, WeeklyError, WeeklySchedule, in_task};
use tally_local::refresh::RefreshInbox;
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
}

impl Default for Timing {
    fn default() -> Self {
        Self { retry: RetryPolicy::SCHEDULED_RUN, gather: REFRESH_GATHER }
    }
}

/// The weekly run as the schedule and the refresher drive it. Cheap to clone.
#[derive(Clone)]
pub struct Runs(Arc<RunsInner>);

struct RunsInner {
    weekly: Weekly,
    timing: Timing,
    /// Runs (attempts) that failed since start, for the failure log lines.
    failed: AtomicU64,
}

impl std::fmt::Debug for Runs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runs").field("failed", &self.failed()).finish_non_exhaustive()
    }
}

impl Runs {
    pub fn new(weekly: Weekly, timing: Timing) -> Self {
        Self(Arc::new(RunsInner { weekly, timing, failed: AtomicU64::new(0) }))
    }

    /// How many runs failed since start.
    pub fn failed(&self) -> u64 {
        self.0.failed.load(Ordering::SeqCst)
    }

    fn progress(total: u64) -> Arc<dyn tally_core::summary::Progress> {
        Arc::new(CliProgress::new(total, true))
    }

    /// Runs `request` (and, while weeks are left over, catch-ups after it);
    /// each failed week is retried alone with [`Timing::retry`].
    async fn request(&self, what: &str, request: Request) {
        let mut request = request;
        loop {
            let weekly = &self.0.weekly;
            let planned = self.with_retries(what, || weekly.run(&request, Self::progress(0))).await;
            let Some(outcome) = planned else { return };
            if !outcome.ran.is_empty() {
                let records: u64 = outcome.ran.iter().map(|r| r.report.records).sum();
                tracing::info!(weeks = outcome.ran.len(), records, "{what} done");
            }
            for (week, trigger, _) in outcome.failed {
                // Already logged by the run; counted here, then retried alone.
                self.0.failed.fetch_add(1, Ordering::SeqCst);
                let retried = self
                    .with_retries(what, || async move { weekly.isolated(week, trigger, Self::progress(1)).await })
                    .await;
                if retried.is_none() {
                    tracing::error!(%week, "{what}: {week} kept failing; the next scheduled run's catch-up tries again");
                }
            }
            if outcome.deferred.is_empty() {
                return;
            }
            request = Request::CatchUp;
        }
    }

    /// Runs `run` with the retry policy ([`RetryPolicy::SCHEDULED_RUN`]).
    /// Every failed attempt is logged and counted; `None` when the attempts
    /// are used up.
    async fn with_retries<T, F, Fut>(&self, what: &str, run: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, WeeklyError>>,
    {
        let result = retry(&self.0.timing.retry, run, |_| true, |e, attempt| {
            let failed_runs = self.0.failed.fetch_add(1, Ordering::SeqCst) + 1;
            let retry_in_s = attempt.next_in.map(|d| d.as_secs());
            let week = e.week().map(|w| w.to_string());
            tracing::error!(error = %tally_core::error_chain(e), week, attempt = attempt.number, ?retry_in_s, failed_runs, "{what} failed");
        })
        .await;
        result.ok()
    }
}

pub fn spawn(runs: Runs, schedule: WeeklySchedule) -> JoinHandle<()> {
    tokio::spawn(async move {
        runs.request("catch-up", Request::CatchUp).await;
        loop {
            let now = runs.0.weekly.clock().now();
            let Some(next) = schedule.next_after(now) else {
                tracing::warn!(%schedule, "the schedule never fires again; weekly summaries are off");
                return;
            };
            let week = WeeklySchedule::week_for_run(next);
            tracing::info!(next_run = %next, %week, "next weekly summary scheduled");
            tokio::time::sleep(until(now, next)).await;
            // The week, the leftover refresh requests, the missed weeks.
            runs.request("weekly summary", Request::Scheduled(week)).await;
            runs.0.weekly.prune_after_run().await;
        }
    })
}

/// Rewrites the summaries of weeks asked for (after erasures), gathering the
/// requests of [`REFRESH_GATHER`] first, through [`Weekly::refresh`] (which
/// withdraws each week's request once it is rewritten).
pub fn spawn_refresher(runs: Runs, mut inbox: RefreshInbox) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(first) = inbox.recv().await {
            // When each week was last asked for: a run that started after
            // that covers it.
            let clock = runs.0.weekly.clock().clone();
            let mut weeks = BTreeMap::from([(first, clock.now())]);
            let gather = tokio::time::sleep(runs.0.timing.gather);
            tokio::pin!(gather);
            loop {
                tokio::select! {
                    Some(week) = inbox.recv() => { weeks.insert(week, clock.now()); }
                    () = &mut gather => break,
                }
            }
            for (week, requested_at) in weeks {
                let request = [RefreshRequest { week, requested_at }];
                let weekly = &runs.0.weekly;
                let done =
                    runs.with_retries("summary refresh", || async { refresh_isolated(weekly, request[0]).await }).await;
                if done.is_none() {
                    tracing::error!(%week, "the rewrite of {week} kept failing; run `tally summarize --week {week}`");
                }
            }
        }
    })
}

/// [`Weekly::refresh`] of one request in a task of its own (a panic fails
/// only that rewrite).
async fn refresh_isolated(weekly: &Weekly, request: RefreshRequest) -> Result<(), WeeklyError> {
    let weekly = weekly.clone();
    in_task(request.week, async move { weekly.refresh(&[request], &CliProgress::new(1, true)).await.map(drop) }).await
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::from_millis(u64::try_from(at.as_millis() - now.as_millis()).unwrap_or(0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use futures::StreamExt;
    use sha2::Digest;
    use tally_core::ports::WeekLock;
    use tally_core::ports::WeekRefresh;
    use tally_core::ports::{Acquired, RecordPages, StoreError, WeekLease};
    use tally_core::summary::{MANIFEST_JSON, Manifest, NoProgress, SummaryOptions, Trigger, WeeklySettings};
    use tally_core::testing::{
        FixedClock, HookedScans, HookedSink, MemoryRecordStore, MemorySummarySink, MemoryWeekLock, ScanHook, SinkHook,
        TokioClock,
    };
    use tally_core::{Clock, IsoWeek, RecordLifecycle, SummarySink};
    use tally_core::{Record, RecordId, RecordStore};
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
    type PanicsOn = HookedScans<PanicOnWeek>;

    #[derive(Debug, Default)]
    struct PanicOnWeek {
        week: Mutex<Option<IsoWeek>>,
    }

    impl ScanHook for PanicOnWeek {
        fn scan<'a>(
            &'a self,
            inner: &'a dyn RecordStore,
            from: RecordId,
            to: RecordId,
            page_size: usize,
        ) -> RecordPages<'a> {
            let doomed = *self.week.lock().unwrap();
            match doomed.filter(|w| from >= RecordId::lower_bound(w.start()) && to <= RecordId::lower_bound(w.end())) {
                Some(week) => {
                    futures::stream::once(async move { panic!("injected panic while reading {week}") }).boxed()
                }
                None => inner.scan_range(from, to, page_size),
            }
        }
    }

    /// A memory sink that reports each commit and can hold the first run at
    /// its `begin_week` until told to go on.
    type TestSink = HookedSink<CommitsAndGate>;

    #[derive(Debug, Default)]
    struct CommitsAndGate {
        committed: Mutex<Option<mpsc::UnboundedSender<IsoWeek>>>,
        /// `(entered, go_on)`, taken by the first `begin_week`.
        gate: Mutex<Option<(Arc<Notify>, Arc<Notify>)>>,
    }

    #[async_trait]
    impl SinkHook for CommitsAndGate {
        async fn before_begin(&self, _week: IsoWeek) {
            let gate = self.gate.lock().unwrap().take();
            if let Some((entered, go_on)) = gate {
                entered.notify_one();
                go_on.notified().await;
            }
        }
        fn committed(&self, week: IsoWeek) {
            if let Some(tx) = self.committed.lock().unwrap().as_ref() {
                let _ = tx.send(week);
            }
        }
    }

    /// A memory sink whose first run waits at `gate`, if any, at its start.
    fn test_sink(gate: Option<(Arc<Notify>, Arc<Notify>)>) -> TestSink {
        let hook = CommitsAndGate { gate: Mutex::new(gate), ..CommitsAndGate::default() };
        HookedSink::new(Arc::new(MemorySummarySink::default()), hook)
    }

    /// The weeks `sink` commits, from now on.
    fn commits(sink: &TestSink) -> mpsc::UnboundedReceiver<IsoWeek> {
        let (tx, rx) = mpsc::unbounded_channel();
        *sink.hook().committed.lock().unwrap() = Some(tx);
        rx
    }

    /// Whether `week`'s manifest lists exactly its objects' sizes and hashes.
    async fn manifest_matches(sink: &dyn SummarySink, week: IsoWeek) -> bool {
        let manifest = sink.read_object(week, MANIFEST_JSON).await.unwrap().expect("a manifest");
        let manifest: Manifest = serde_json::from_slice(&manifest).unwrap();
        for object in &manifest.objects {
            let name = object.key.rsplit('/').next().unwrap();
            let Some(body) = sink.read_object(week, name).await.unwrap() else { return false };
            if body.len() as u64 != object.bytes || hex::encode(sha2::Sha256::digest(&body)) != object.sha256 {
                return false;
            }
        }
        !manifest.objects.is_empty()
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

    fn weekly(
        store: Arc<dyn RecordLifecycle>,
        sink: Arc<dyn SummarySink>,
        lock: Arc<dyn WeekLock>,
        clock: Arc<dyn Clock>,
    ) -> Weekly {
        Weekly::new(store, sink, lock, clock, WeeklySettings::local(options(), None), "test")
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_panics_fails_alone_and_the_next_scheduled_run_still_happens() {
        // GIVEN records in W47 and W48, and a bug that panics any run reading W47
        let store = Arc::new(PanicsOn::new(Arc::new(MemoryRecordStore::default()), PanicOnWeek::default()));
        records_in(store.as_ref(), w47()).await;
        records_in(store.as_ref(), w47().next()).await;
        *store.hook().week.lock().unwrap() = Some(w47());
        let sink = Arc::new(test_sink(None));
        let mut committed = commits(&sink);
        // AND the server started late on the Sunday of W47 (nothing to catch up)
        let clock = TokioClock::starting_at(Timestamp::from_millis(w47().end().as_millis() - 3_600_000));
        let timing =
            Timing { retry: RetryPolicy { max_attempts: 2, ..RetryPolicy::SCHEDULED_RUN }, ..Timing::default() };
        let runs = Runs::new(weekly(store, sink.clone(), Arc::new(MemoryWeekLock::default()), Arc::new(clock)), timing);
        let mut schedule = spawn(runs.clone(), WeeklySchedule::default());
        // WHEN the Monday run of W47 panics (each attempt)
        // THEN the schedule lives on: the next Monday's run writes W48.
        // (No timeout: the summary's threads are real, and paused time
        // would race to any deadline while they work.)
        let week = tokio::select! {
            week = committed.recv() => week.unwrap(),
            end = &mut schedule => panic!("the schedule stopped: {end:?}"),
        };
        assert_eq!(week, w47().next());
        assert!(manifest_matches(sink.as_ref(), w47().next()).await);
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
        let sink = Arc::new(test_sink(Some((entered.clone(), go_on.clone()))));
        let mut committed = commits(&sink);
        let lock = Arc::new(Observed::default());
        let clock = Arc::new(FixedClock::at(Timestamp::from_millis(w47().end().as_millis() + 3_600_000)));
        let timing = Timing {
            retry: RetryPolicy { max_attempts: 1, ..RetryPolicy::SCHEDULED_RUN },
            gather: Duration::from_millis(1),
        };
        let (queue, inbox) = tally_local::refresh::channel();
        let weekly = weekly(store, sink.clone(), lock.clone(), clock).with_refresh(Arc::new(queue.clone()));
        let runs = Runs::new(weekly.clone(), timing);
        // GIVEN the schedule's run of W47 holds the week, paused at its start
        let scheduled = tokio::spawn(async move { weekly.week(w47(), Trigger::Scheduled, &NoProgress).await });
        entered.notified().await;
        // WHEN an erasure asks for W47 to be rewritten
        let refresher = spawn_refresher(runs.clone(), inbox);
        queue.request(w47()).await.unwrap();
        // THEN the refresher finds the week held and waits, writing nothing
        lock.held.notified().await;
        assert!(committed.try_recv().is_err());
        // AND once the schedule's run goes on, it commits first, then the refresher rewrites the week
        go_on.notify_one();
        assert!(scheduled.await.unwrap().unwrap().is_some());
        assert_eq!(committed.recv().await, Some(w47()));
        assert_eq!(committed.recv().await, Some(w47()));
        let takers = lock.takers.lock().unwrap().clone();
        assert_eq!(takers.len(), 2, "{takers:?}");
        assert!(
            takers[0].starts_with("scheduled run") && takers[1].starts_with("refresh after an erasure"),
            "{takers:?}"
        );
        assert!(manifest_matches(sink.as_ref(), w47()).await, "the manifest's hashes match its objects");
        assert_eq!(runs.failed(), 0);
        refresher.abort();
    }
}
