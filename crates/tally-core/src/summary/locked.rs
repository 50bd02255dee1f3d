//! A week's run under its [`WeekLock`]: how every trigger of a weekly run —
//! `tally serve`'s schedule and refresher, `tally summarize` (and
//! `--merge`), `tally import`'s re-summarize, the weekly Lambda — keeps two
//! runs of one week from interleaving.
//!
//! # The race it closes
//! Two runs of one week, unlocked: run A removes the manifest, writes the
//! export; run B (started later, after an erasure) writes its export and
//! commits; A writes its `summary.json` and commits a manifest listing
//! objects B has overwritten — hashes that match no object — or A's export,
//! read before the erasure, lands last and brings the record back.
//!
//! # What a locked run does
//! 1. [`acquire`] takes the week's lock: if another run holds it, it waits
//!    (polling with backoff, [`wait_policy`], up to [`OnBusy::Wait`]'s bound,
//!    logging who holds it) or skips the week ([`OnBusy::Skip`], logged).
//! 2. [`WeekRun::run`] runs the job with the sink wrapped so that every write
//!    (`begin_week`, each object, the upload's `finish`, the manifest, the
//!    index, a deletion) first [checks](WeekLock::check) that the lease is
//!    still held: a run that outlived its lease (paused, partitioned, its
//!    renewals failing) writes nothing more and fails with
//!    [`RunError::Lost`]. Meanwhile the lease is renewed every third of its
//!    ttl, so a slow run keeps it and only a dead one loses it.
//! 3. [`WeekRun::release`] gives it back, recording when the run started if
//!    it completed (`done_from`: the refresh coalescing of the weekly Lambda).
//!
//! The check and the write are two steps, so a holder that stalls between
//! them for longer than what is left of its lease (a third of the ttl at
//! least, while renewals succeed) could still write once; the ttl is chosen
//! far above any such stall. A run that panics stops renewing: its lease
//! expires after its ttl, like a dead process's.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::clock::{Clock, Timestamp};
use crate::ports::{Acquired, ObjectInfo, ObjectUpload, SinkError, StoreError, SummarySink, WeekLease, WeekLock};
use crate::retry::{RetryPolicy, retry};
use crate::week::IsoWeek;

/// What a run does when another run holds its week.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBusy {
    /// Wait up to this long for it, then fail with [`LockError::Busy`].
    Wait(Duration),
    /// Leave the week alone (logged): the run holding it writes it.
    Skip,
}

/// How a run holds its week's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockSettings {
    /// How long a lease lasts unless renewed: a dead holder's week is free
    /// again after this. Renewed every third of it while the run lives.
    pub ttl: Duration,
    pub on_busy: OnBusy,
}

impl LockSettings {
    /// The local runs' (`tally serve`, `tally summarize`, `tally import`): a
    /// crashed process frees its week within a minute; a run waits up to
    /// 10 minutes for another one (a backfill, a big week) to finish.
    pub const LOCAL: Self = Self { ttl: Duration::from_secs(60), on_busy: OnBusy::Wait(Duration::from_secs(600)) };

    /// [`LOCAL`](Self::LOCAL), skipping a week another run is writing.
    pub const LOCAL_SKIP: Self = Self { on_busy: OnBusy::Skip, ..Self::LOCAL };
}

/// Why a run did not get its week's lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{week} is still being written by {holder} after waiting {waited_s} s for it; run again once it is done")]
    Busy { week: IsoWeek, holder: String, waited_s: u64 },
    #[error("could not take the lock of {week}")]
    Store {
        week: IsoWeek,
        #[source]
        source: StoreError,
    },
}

/// Why a run under the lock failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError<E: std::error::Error + 'static> {
    /// The job failed while the lease was held.
    #[error(transparent)]
    Failed(E),
    /// The lease was lost (it expired, or another run took the week) and a
    /// write was refused: nothing after it was written, and the run did not
    /// commit. The run holding the week now writes it.
    #[error(
        "the run of {week} lost its lock before it committed (it expired, or another run took the week); it wrote nothing more"
    )]
    Lost {
        week: IsoWeek,
        #[source]
        source: E,
    },
}

impl<E: std::error::Error + 'static> RunError<E> {
    /// The job's own error, whichever way the run failed.
    pub fn into_inner(self) -> E {
        match self {
            Self::Failed(e) | Self::Lost { source: e, .. } => e,
        }
    }
}

/// Why [`locked_run`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LockedError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Run(RunError<E>),
}

impl<E: std::error::Error + 'static> From<RunError<E>> for LockedError<E> {
    fn from(e: RunError<E>) -> Self {
        Self::Run(e)
    }
}

/// How a run polls a week held by another: 200 ms doubling to 5 s, as many
/// attempts as fit in `wait`.
pub fn wait_policy(wait: Duration) -> RetryPolicy {
    let mut policy = RetryPolicy {
        max_attempts: 1,
        base: Duration::from_millis(200),
        max_delay: Duration::from_secs(5),
        jitter: false,
    };
    while (RetryPolicy { max_attempts: policy.max_attempts + 1, ..policy }).worst_case_wait() <= wait {
        policy.max_attempts += 1;
    }
    policy
}

/// Takes `week`'s lock for `holder` (a name for messages, e.g.
/// `tally summarize (pid 4242)`), waiting or skipping as `settings` say.
/// `None`: skipped ([`OnBusy::Skip`]) because another run holds it.
pub async fn acquire(
    lock: &dyn WeekLock,
    clock: &dyn Clock,
    week: IsoWeek,
    holder: &str,
    settings: &LockSettings,
) -> Result<Option<WeekLease>, LockError> {
    /// Why one attempt did not take the lock.
    enum NotTaken {
        Held(String),
        Failed(StoreError),
    }
    let wait = match settings.on_busy {
        OnBusy::Wait(wait) => wait,
        OnBusy::Skip => Duration::ZERO,
    };
    let waiting = tokio::time::Instant::now();
    let mut told: Option<String> = None;
    let taken = retry(
        &wait_policy(wait),
        || async {
            match lock.try_acquire(week, holder, clock.now(), settings.ttl).await {
                Ok(Acquired::Taken(lease)) => Ok(lease),
                Ok(Acquired::Held { holder, .. }) => Err(NotTaken::Held(holder)),
                Err(e) => Err(NotTaken::Failed(e)),
            }
        },
        |e| matches!(e, NotTaken::Held(_)),
        |e, attempt| {
            // Said once per holder, not at every poll.
            if let (NotTaken::Held(other), Some(_)) = (e, attempt.next_in) {
                if told.as_ref() != Some(other) {
                    let wait_s = wait.as_secs();
                    tracing::info!(%week, holder = %other, wait_s, "{week} is being written by {other}; waiting up to {wait_s} s for it to finish");
                    told = Some(other.clone());
                }
            }
        },
    )
    .await;
    match taken {
        Ok(lease) => Ok(Some(lease)),
        Err(NotTaken::Held(other)) if settings.on_busy == OnBusy::Skip => {
            tracing::info!(%week, holder = %other, "{week} is being written by {other}: this run leaves it to that one");
            Ok(None)
        }
        Err(NotTaken::Held(other)) => {
            Err(LockError::Busy { week, holder: other, waited_s: waiting.elapsed().as_secs() })
        }
        Err(NotTaken::Failed(source)) => Err(LockError::Store { week, source }),
    }
}

/// A lease this run holds, and what it needs to renew, check and release it.
#[derive(Debug)]
pub struct WeekRun {
    lock: Arc<dyn WeekLock>,
    clock: Arc<dyn Clock>,
    lease: WeekLease,
    ttl: Duration,
    renew: bool,
}

impl WeekRun {
    /// [`acquire`]s the week's lock; `None` when skipped.
    pub async fn acquire(
        lock: Arc<dyn WeekLock>,
        clock: Arc<dyn Clock>,
        week: IsoWeek,
        holder: &str,
        settings: &LockSettings,
    ) -> Result<Option<Self>, LockError> {
        let lease = acquire(lock.as_ref(), clock.as_ref(), week, holder, settings).await?;
        Ok(lease.map(|lease| Self::new(lock, clock, lease, settings.ttl)))
    }

    /// A run holding `lease`, taken with `ttl`.
    pub fn new(lock: Arc<dyn WeekLock>, clock: Arc<dyn Clock>, lease: WeekLease, ttl: Duration) -> Self {
        Self { lock, clock, lease, ttl, renew: true }
    }

    /// Never renews the lease: for a run whose process cannot outlive its
    /// ttl (a Lambda function whose timeout is shorter), where renewing
    /// would only keep a killed run's week locked for longer.
    pub fn without_renewal(self) -> Self {
        Self { renew: false, ..self }
    }

    pub fn lease(&self) -> &WeekLease {
        &self.lease
    }

    /// Runs `job` with `sink` fenced by the lease (every write first checks
    /// it is still held), renewing the lease every third of its ttl until
    /// the job ends (unless [`without_renewal`](Self::without_renewal)).
    /// Does not release it.
    pub async fn run<T, E, Fut>(
        &mut self,
        sink: Arc<dyn SummarySink>,
        job: impl FnOnce(Arc<dyn SummarySink>) -> Fut,
    ) -> Result<T, RunError<E>>
    where
        E: std::error::Error + 'static,
        Fut: Future<Output = Result<T, E>>,
    {
        let week = self.lease.week;
        let fence = Arc::new(Fence {
            lock: self.lock.clone(),
            clock: self.clock.clone(),
            lease: self.lease.clone(),
            lost: AtomicBool::new(false),
        });
        let fenced = Arc::new(FencedSink { inner: sink, fence: fence.clone() });
        let every = (self.ttl / 3).max(Duration::from_millis(10));
        let job = job(fenced);
        tokio::pin!(job);
        let mut next = tokio::time::Instant::now() + every;
        let result = loop {
            tokio::select! {
                out = &mut job => break out,
                () = tokio::time::sleep_until(next), if self.renew => {
                    next = tokio::time::Instant::now() + every;
                    if fence.lost.load(Ordering::SeqCst) {
                        continue;
                    }
                    match self.lock.renew(&mut self.lease, self.clock.now(), self.ttl).await {
                        Ok(true) => {}
                        Ok(false) => {
                            fence.lost.store(true, Ordering::SeqCst);
                            tracing::warn!(%week, holder = %self.lease.holder, "this run's lock of {week} expired or was taken by another run; it will not write the week");
                        }
                        Err(e) => tracing::warn!(%week, error = %crate::error_chain(&e), "could not renew the lock of {week}; trying again"),
                    }
                }
            }
        };
        match result {
            Ok(out) => Ok(out),
            Err(source) if fence.lost.load(Ordering::SeqCst) => Err(RunError::Lost { week, source }),
            Err(e) => Err(RunError::Failed(e)),
        }
    }

    /// Gives the lease back, with `done_from` when the run completed (see
    /// [`WeekLock::release`]). A failure is logged only: the lease expires
    /// on its own after its ttl.
    pub async fn release(self, done_from: Option<Timestamp>) {
        let week = self.lease.week;
        match self.lock.release(self.lease, done_from, self.clock.now()).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(%week, "the lock of {week} expired and was taken by another run before this one released it")
            }
            Err(e) => {
                tracing::warn!(%week, error = %crate::error_chain(&e), "could not release the lock of {week}; it expires on its own")
            }
        }
    }
}

/// Takes `week`'s lock, runs `job` under it ([`WeekRun::run`]) and releases
/// it, recording the run's start as `done_from` when it succeeded. `None`:
/// the week was skipped ([`OnBusy::Skip`]) because another run holds it.
///
/// ```no_run
/// # async fn f(store: &dyn tally_core::RecordStore, sink: std::sync::Arc<dyn tally_core::SummarySink>,
/// #   lock: std::sync::Arc<dyn tally_core::ports::WeekLock>, week: tally_core::IsoWeek) {
/// use std::sync::Arc;
/// use tally_core::summary::{LockSettings, NoProgress, SummaryOptions, locked_run, summarize_week};
/// let options = SummaryOptions::default();
/// let clock = Arc::new(tally_core::SystemClock);
/// let report = locked_run(lock, clock.clone(), sink, week, "tally summarize (pid 42)", &LockSettings::LOCAL,
///     |sink| async move { summarize_week(store, sink.as_ref(), clock.as_ref(), week, &options, &NoProgress).await }).await;
/// # }
/// ```
pub async fn locked_run<T, E, Fut>(
    lock: Arc<dyn WeekLock>,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn SummarySink>,
    week: IsoWeek,
    holder: &str,
    settings: &LockSettings,
    job: impl FnOnce(Arc<dyn SummarySink>) -> Fut,
) -> Result<Option<T>, LockedError<E>>
where
    E: std::error::Error + 'static,
    Fut: Future<Output = Result<T, E>>,
{
    let Some(mut run) = WeekRun::acquire(lock, clock.clone(), week, holder, settings).await? else {
        return Ok(None);
    };
    // A run covers what was committed before it started reading, i.e. once
    // it holds the week (waiting for the lock is not part of it).
    let started = clock.now();
    let result = run.run(sink, job).await;
    run.release(result.as_ref().ok().map(|_| started)).await;
    Ok(Some(result?))
}

/// The lease a [`FencedSink`] checks before each write.
#[derive(Debug)]
struct Fence {
    lock: Arc<dyn WeekLock>,
    clock: Arc<dyn Clock>,
    lease: WeekLease,
    /// Set once the lease is known lost (a failed check or renewal): later
    /// writes are refused without asking the lock again.
    lost: AtomicBool,
}

impl Fence {
    async fn check(&self, what: &str) -> Result<(), SinkError> {
        let week = self.lease.week;
        if !self.lost.load(Ordering::SeqCst) {
            match self.lock.check(&self.lease, self.clock.now()).await {
                Ok(true) => return Ok(()),
                Ok(false) => self.lost.store(true, Ordering::SeqCst),
                Err(e) => {
                    return Err(SinkError::Unavailable {
                        message: format!("could not check the lock of {week} before writing {what}"),
                        source: Some(Box::new(e)),
                    });
                }
            }
        }
        Err(SinkError::Internal {
            message: format!(
                "refused to write {what}: this run's lock of {week} (token {}) expired or was taken by another run",
                self.lease.token
            ),
            source: None,
        })
    }
}

/// A sink that checks the run's lease before every write.
#[derive(Debug)]
struct FencedSink {
    inner: Arc<dyn SummarySink>,
    fence: Arc<Fence>,
}

#[async_trait]
impl SummarySink for FencedSink {
    async fn begin_week(&self, week: IsoWeek) -> Result<(), SinkError> {
        self.fence.check("the start of the week's run").await?;
        self.inner.begin_week(week).await
    }

    async fn put_object(
        &self,
        week: IsoWeek,
        name: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<ObjectInfo, SinkError> {
        self.fence.check(name).await?;
        self.inner.put_object(week, name, content_type, body).await
    }

    async fn open_object(
        &self,
        week: IsoWeek,
        name: &str,
        content_type: &str,
    ) -> Result<Box<dyn ObjectUpload>, SinkError> {
        // Nothing is visible before `finish`, which is checked.
        let inner = self.inner.open_object(week, name, content_type).await?;
        Ok(Box::new(FencedUpload { inner, fence: self.fence.clone(), name: name.to_owned() }))
    }

    async fn commit_week(&self, week: IsoWeek, manifest: Bytes) -> Result<ObjectInfo, SinkError> {
        self.fence.check("the manifest").await?;
        self.inner.commit_week(week, manifest).await
    }

    async fn read_object(&self, week: IsoWeek, name: &str) -> Result<Option<Bytes>, SinkError> {
        self.inner.read_object(week, name).await
    }

    async fn delete_object(&self, week: IsoWeek, name: &str) -> Result<(), SinkError> {
        self.fence.check(name).await?;
        self.inner.delete_object(week, name).await
    }

    async fn list_weeks(&self) -> Result<Vec<IsoWeek>, SinkError> {
        self.inner.list_weeks().await
    }

    async fn put_index(&self, name: &str, content_type: &str, body: Bytes) -> Result<ObjectInfo, SinkError> {
        self.fence.check(name).await?;
        self.inner.put_index(name, content_type, body).await
    }

    async fn share_link(&self, week: IsoWeek, name: &str) -> Result<String, SinkError> {
        self.inner.share_link(week, name).await
    }
}

struct FencedUpload {
    inner: Box<dyn ObjectUpload>,
    fence: Arc<Fence>,
    name: String,
}

#[async_trait]
impl ObjectUpload for FencedUpload {
    async fn write(&mut self, chunk: Bytes) -> Result<(), SinkError> {
        self.inner.write(chunk).await
    }

    async fn finish(self: Box<Self>) -> Result<ObjectInfo, SinkError> {
        if let Err(e) = self.fence.check(&self.name).await {
            let _ = self.inner.abort().await;
            return Err(e);
        }
        self.inner.finish().await
    }

    async fn abort(self: Box<Self>) -> Result<(), SinkError> {
        self.inner.abort().await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::Notify;

    use super::*;
    use crate::testing::{MemorySummarySink, MemoryWeekLock, TokioClock};

    fn week() -> IsoWeek {
        IsoWeek::parse("2026-W47").unwrap()
    }

    fn t0() -> Timestamp {
        Timestamp::from_millis(week().end().as_millis() + 3_600_000)
    }

    /// A lock that tells when it turned a run away because the week was held.
    #[derive(Debug, Default)]
    struct Observed {
        inner: MemoryWeekLock,
        held: Notify,
        turned_away: AtomicUsize,
    }

    #[async_trait]
    impl WeekLock for Observed {
        async fn try_acquire(
            &self,
            week: IsoWeek,
            holder: &str,
            now: Timestamp,
            ttl: Duration,
        ) -> Result<Acquired, StoreError> {
            let acquired = self.inner.try_acquire(week, holder, now, ttl).await;
            if matches!(acquired, Ok(Acquired::Held { .. })) {
                self.turned_away.fetch_add(1, Ordering::SeqCst);
                self.held.notify_one();
            }
            acquired
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

    /// A run's writes: its summary and a manifest naming it.
    async fn write_week(sink: &dyn SummarySink, run: &str) -> Result<(), SinkError> {
        sink.put_object(week(), "summary.json", "application/json", Bytes::from(run.to_owned())).await?;
        sink.commit_week(week(), Bytes::from(run.to_owned())).await?;
        Ok(())
    }

    async fn object(sink: &MemorySummarySink, name: &str) -> Option<String> {
        sink.read_object(week(), name).await.unwrap().map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_run_of_a_week_waits_for_the_first_and_then_runs() {
        let lock = Arc::new(Observed::default());
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(t0()));
        let sink = Arc::new(MemorySummarySink::default());
        let (a_started, go_on) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        // GIVEN run A holds the week and is paused after its begin_week
        let a = tokio::spawn({
            let (lock, clock, sink) = (lock.clone(), clock.clone(), sink.clone());
            let (a_started, go_on) = (a_started.clone(), go_on.clone());
            async move {
                locked_run(lock, clock, sink, week(), "run-a", &LockSettings::LOCAL, move |sink| async move {
                    sink.begin_week(week()).await?;
                    a_started.notify_one();
                    go_on.notified().await;
                    write_week(sink.as_ref(), "a").await
                })
                .await
            }
        });
        a_started.notified().await;
        // WHEN run B of the same week starts
        let b = tokio::spawn({
            let (lock, clock, sink) = (lock.clone(), clock.clone(), sink.clone());
            async move {
                locked_run(lock, clock, sink, week(), "run-b", &LockSettings::LOCAL, |sink| async move {
                    sink.begin_week(week()).await?;
                    write_week(sink.as_ref(), "b").await
                })
                .await
            }
        });
        // THEN B is turned away while A holds the week, and writes nothing
        lock.held.notified().await;
        assert_eq!(object(&sink, "summary.json").await, None);
        lock.held.notified().await;
        assert_eq!(lock.turned_away.load(Ordering::SeqCst), 2, "B polls again, and is turned away again");
        assert!(!b.is_finished());
        // AND once A completes, B runs after it
        let a_done = clock.now();
        go_on.notify_one();
        assert_eq!(a.await.unwrap().unwrap(), Some(()));
        assert_eq!(b.await.unwrap().unwrap(), Some(()));
        assert_eq!(object(&sink, "summary.json").await.as_deref(), Some("b"));
        assert_eq!(object(&sink, MANIFEST).await.as_deref(), Some("b"));
        // AND the lock remembers that a run which started after A completed
        let probe = lock.try_acquire(week(), "probe", clock.now(), Duration::from_secs(1)).await.unwrap();
        let Acquired::Taken(probe) = probe else { panic!("the lock is free after both runs: {probe:?}") };
        assert!(probe.done_from.is_some_and(|from| from >= a_done), "{probe:?}");
    }

    const MANIFEST: &str = "manifest.json";

    #[tokio::test(start_paused = true)]
    async fn a_run_kept_waiting_past_its_bound_fails_naming_the_holder() {
        let lock = Arc::new(MemoryWeekLock::default());
        let clock = Arc::new(TokioClock::starting_at(t0()));
        let sink = Arc::new(MemorySummarySink::default());
        lock.try_acquire(week(), "tally summarize (pid 7)", t0(), Duration::from_secs(3600)).await.unwrap();
        let settings = LockSettings { ttl: Duration::from_secs(60), on_busy: OnBusy::Wait(Duration::from_secs(30)) };
        let flag = AtomicBool::new(false);
        let ran = &flag;
        let result = locked_run(lock.clone(), clock, sink.clone(), week(), "run-b", &settings, |sink| async move {
            ran.store(true, Ordering::SeqCst);
            write_week(sink.as_ref(), "b").await
        })
        .await;
        let Err(LockedError::Lock(LockError::Busy { holder, waited_s, .. })) = result else {
            panic!("expected Busy, got {result:?}")
        };
        assert_eq!(holder, "tally summarize (pid 7)");
        assert!((20..=30).contains(&waited_s), "waited {waited_s} s");
        assert!(!ran.load(Ordering::SeqCst));
        assert!(sink.keys().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_may_skip_leaves_a_held_week_alone() {
        let lock = Arc::new(MemoryWeekLock::default());
        let clock = Arc::new(TokioClock::starting_at(t0()));
        let sink = Arc::new(MemorySummarySink::default());
        lock.try_acquire(week(), "run-a", t0(), Duration::from_secs(60)).await.unwrap();
        let result =
            locked_run(lock, clock, sink.clone(), week(), "run-b", &LockSettings::LOCAL_SKIP, |sink| async move {
                write_week(sink.as_ref(), "b").await
            })
            .await
            .unwrap();
        assert_eq!(result, None);
        assert!(sink.keys().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_run_keeps_its_lease_by_renewing_it() {
        let lock = Arc::new(MemoryWeekLock::default());
        let clock = Arc::new(TokioClock::starting_at(t0()));
        let sink = Arc::new(MemorySummarySink::default());
        let settings = LockSettings { ttl: Duration::from_secs(60), on_busy: OnBusy::Skip };
        // WHEN a run takes 5 ttls, and another run tries the week in the middle
        let other = tokio::spawn({
            let (lock, clock) = (lock.clone(), clock.clone());
            async move {
                tokio::time::sleep(Duration::from_secs(170)).await;
                lock.try_acquire(week(), "run-b", clock.now(), Duration::from_secs(60)).await.unwrap()
            }
        });
        let result =
            locked_run(lock.clone(), clock.clone(), sink.clone(), week(), "run-a", &settings, |sink| async move {
                sink.begin_week(week()).await?;
                tokio::time::sleep(Duration::from_secs(300)).await;
                write_week(sink.as_ref(), "a").await
            })
            .await;
        // THEN the other was turned away, and the slow run committed
        assert!(matches!(other.await.unwrap(), Acquired::Held { ref holder, .. } if holder == "run-a"));
        assert_eq!(result.unwrap(), Some(()));
        assert_eq!(object(&sink, MANIFEST).await.as_deref(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_outlived_its_lease_writes_nothing_more() {
        let lock = Arc::new(MemoryWeekLock::default());
        let clock = Arc::new(TokioClock::starting_at(t0()));
        let sink = Arc::new(MemorySummarySink::default());
        let (a_started, go_on) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        // GIVEN run A holds the week, paused after its export was opened
        let a = tokio::spawn({
            let (lock, clock, sink) = (lock.clone(), clock.clone(), sink.clone());
            let (a_started, go_on) = (a_started.clone(), go_on.clone());
            async move {
                locked_run(lock, clock, sink, week(), "run-a", &LockSettings::LOCAL, move |sink| async move {
                    sink.begin_week(week()).await?;
                    let mut upload = sink.open_object(week(), "records.ndjson.gz", "application/gzip").await?;
                    upload.write(Bytes::from_static(b"a's records")).await?;
                    a_started.notify_one();
                    go_on.notified().await;
                    upload.finish().await?;
                    write_week(sink.as_ref(), "a").await
                })
                .await
            }
        });
        a_started.notified().await;
        // WHEN A stalls past its ttl (no renewal gets through), and run B
        // takes the expired week and commits it
        let ttl = LockSettings::LOCAL.ttl;
        let stale = clock.now().as_millis() + 2 * i64::try_from(ttl.as_millis()).unwrap();
        let b = lock.try_acquire(week(), "run-b", Timestamp::from_millis(stale), ttl).await.unwrap();
        let Acquired::Taken(b) = b else { panic!("A's lease should have expired: {b:?}") };
        sink.put_object(week(), "records.ndjson.gz", "application/gzip", Bytes::from_static(b"b's records"))
            .await
            .unwrap();
        write_week(sink.as_ref(), "b").await.unwrap();
        go_on.notify_one();
        // THEN A's next write is refused: it fails as Lost, and B's week stands whole
        let err = a.await.unwrap().unwrap_err();
        assert!(matches!(err, LockedError::Run(RunError::Lost { .. })), "{err:?}");
        assert!(
            crate::error_chain(&err).contains("expired or was taken by another run"),
            "{}",
            crate::error_chain(&err)
        );
        assert_eq!(object(&sink, "records.ndjson.gz").await.as_deref(), Some("b's records"));
        assert_eq!(object(&sink, MANIFEST).await.as_deref(), Some("b"));
        // AND A's release left B's lease alone
        assert!(lock.check(&b, Timestamp::from_millis(stale)).await.unwrap());
    }

    #[tokio::test]
    async fn a_failed_run_releases_the_week_without_recording_a_completion() {
        let lock = Arc::new(MemoryWeekLock::default());
        let clock = Arc::new(crate::testing::FixedClock::at(t0()));
        let sink = Arc::new(MemorySummarySink::default());
        let failing = locked_run(
            lock.clone(),
            clock.clone(),
            sink.clone(),
            week(),
            "run-a",
            &LockSettings::LOCAL,
            |_| async move { Err::<(), _>(SinkError::Internal { message: "boom".into(), source: None }) },
        )
        .await;
        assert!(matches!(failing, Err(LockedError::Run(RunError::Failed(_)))), "{failing:?}");
        let next = lock.try_acquire(week(), "run-b", t0(), Duration::from_secs(1)).await.unwrap();
        assert!(matches!(next, Acquired::Taken(WeekLease { done_from: None, .. })), "{next:?}");
    }

    #[test]
    fn the_lock_is_polled_for_as_long_as_the_wait_allows() {
        let wait = Duration::from_secs(300);
        let p = wait_policy(wait);
        assert!(p.worst_case_wait() <= wait, "{:?}", p.worst_case_wait());
        assert!(p.worst_case_wait() > wait - p.max_delay, "{:?}", p.worst_case_wait());
        assert_eq!(p.delay(1), Some(Duration::from_millis(200)));
        assert_eq!(wait_policy(Duration::from_millis(500)).max_attempts, 2);
        assert_eq!(wait_policy(Duration::ZERO).max_attempts, 1);
    }
}
