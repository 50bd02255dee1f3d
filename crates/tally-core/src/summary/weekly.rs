//! The weekly run — tally's reason to exist — as one use case, whatever
//! starts it: `tally serve`'s schedule, its catch-up and its erasure
//! refresher, `tally summarize` (also `--merge`), `tally import`'s
//! re-summarize, `tally prune`, the weekly Lambda's single invocation and
//! every step of its state machine. Each of those builds one [`Weekly`]
//! from its ports and [`WeeklySettings`] and calls it; none plans, locks,
//! announces or prunes on its own.
//!
//! ```text
//!   trigger ──► plan ──► for each week: lock ─► clear abandoned writes ─► summarize (or merge shares)
//!                                         └─► release(done_from) ─► withdraw its refresh request ─► announce
//!           └─► prune (each expired week under its lock)
//! ```
//!
//! # Guarantees
//! - **One run of a week at a time**, across tasks and processes: every run
//!   holds the week's [`WeekLock`]; every write checks the lease first
//!   ([`WeekRun`]), so a run that outlived its lease commits nothing.
//! - **An erasure is never undone.** `erase()` asks for a rewrite of every
//!   ended week it touches. A rewrite ([`Weekly::refresh`]) waits for the
//!   week's lock, so it runs after any run that may have read the record
//!   before it went; it is skipped only when a run that *started after the
//!   request* has completed since (the lock's `done_from`). A merge of
//!   shares read before such a run completed is not committed: the week is
//!   summarized again from the store ([`Weekly::merge`]).
//! - **A pruned week is never summarized again**, and pruning a week waits
//!   for the run holding it.
//! - **Announcing never fails a run** ([`announce`]); only scheduled,
//!   catch-up and operator runs announce — a rewrite after an erasure or an
//!   import is not a new weekly report.

use std::sync::Arc;
use std::time::Duration;

use super::SummaryOptions;
use super::fanout::{FanOutError, merge_parts, part_object};
use super::locked::{LockError, LockSettings, OnBusy, RunError, WeekRun, acquire};
use super::notify::{Announced, announce};
use super::plan::{MAX_WEEKS_PER_RUN, RunPlan, plan_scheduled};
use super::service::{
    MANIFEST_JSON, NoProgress, PartSource, Progress, SummarizeError, WeekReport, ensure_not_pruned, pending_weeks,
    summarize_merged, summarize_week,
};
use super::state::Part;
use crate::clock::{Clock, Timestamp};
use crate::lifecycle::retention::{PruneError, PruneReport, expired};
use crate::ports::{Notifier, RecordLifecycle, SummarySink, WeekLease, WeekLock, WeekRefresh};
use crate::retry::RetryPolicy;
use crate::week::IsoWeek;

/// How weekly runs behave: the one settings struct of the weekly run,
/// filled by each binary from its flags or environment.
#[derive(Debug, Clone)]
pub struct WeeklySettings {
    pub options: SummaryOptions,
    /// How long a lease lasts and how long a run waits for another run of
    /// its week. A catch-up run never waits: it skips a week being written.
    pub lock: LockSettings,
    /// Whether a run renews its lease while it lasts. Off where the process
    /// cannot outlive the lease (a Lambda function whose timeout is
    /// shorter), so a killed run's week is not kept locked longer.
    pub renew: bool,
    /// Most weeks one run builds ([`MAX_WEEKS_PER_RUN`]).
    pub max_weeks: usize,
    /// `Some(n)`: after a scheduled or operator run, the records of
    /// summarized weeks that ended more than `n` weeks ago are deleted.
    pub retention_weeks: Option<u32>,
    /// Retries of each notifier's delivery.
    pub notify_policy: RetryPolicy,
    /// A refresh request is covered by a completed run that started this
    /// long after it (clocks and event times are coarse).
    pub cover_margin: Duration,
}

impl WeeklySettings {
    /// Runs on one machine: renewed leases of [`LockSettings::LOCAL`].
    pub fn local(options: SummaryOptions, retention_weeks: Option<u32>) -> Self {
        Self {
            options,
            lock: LockSettings::LOCAL,
            renew: true,
            max_weeks: MAX_WEEKS_PER_RUN,
            retention_weeks,
            notify_policy: RetryPolicy::NOTIFICATION,
            cover_margin: Duration::ZERO,
        }
    }
}

/// What started a run of one week: how it holds the lock, which options it
/// uses, whether it is announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The week the schedule owes: waits for the lock, announced.
    Scheduled,
    /// A week found without a summary: skipped while another run writes it
    /// (that run commits it), announced.
    CatchUp,
    /// An operator's `tally summarize` or a `{"week"}` invocation: waits,
    /// announced. `partial`: the week may not have ended yet.
    Operator { partial: bool },
    /// A rewrite after an erasure: waits (the run in progress may have read
    /// the record before it went), not announced; withdraws the request.
    Refresh,
    /// A rewrite after an import added records: waits, not announced.
    Import,
}

impl Trigger {
    /// The name a lock's holder and the logs give this run.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled run",
            Self::CatchUp => "catch-up",
            Self::Operator { .. } => "summarize",
            Self::Refresh => "refresh after an erasure",
            Self::Import => "re-summarize after an import",
        }
    }

    fn announced(self) -> bool {
        matches!(self, Self::Scheduled | Self::CatchUp | Self::Operator { .. })
    }

    fn lock(self, settings: &LockSettings) -> LockSettings {
        match self {
            Self::CatchUp => LockSettings { on_busy: OnBusy::Skip, ..*settings },
            _ => *settings,
        }
    }
}

/// What a run is asked to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The schedule fired for `week` (the last complete one): that week,
    /// the weeks with a pending refresh request, and the missed weeks.
    Scheduled(IsoWeek),
    /// A catch-up without a scheduled week (start-up, or the continuation
    /// of a run that had more weeks than it builds).
    CatchUp,
    /// Given weeks (an operator's), ascending, at most
    /// [`WeeklySettings::max_weeks`].
    Weeks(Vec<IsoWeek>),
}

/// "Rewrite `week`", asked at `requested_at` (after an erasure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshRequest {
    pub week: IsoWeek,
    pub requested_at: Timestamp,
}

/// One week a run wrote.
#[derive(Debug, Clone)]
pub struct Ran {
    pub report: WeekReport,
    /// How its announcement went (nothing when not announced).
    pub announced: Announced,
}

/// What [`Weekly::run`] did.
#[derive(Debug, Default)]
pub struct RunOutcome {
    pub ran: Vec<Ran>,
    /// Weeks another run was writing (catch-up only): that run commits them.
    pub skipped: Vec<IsoWeek>,
    /// Weeks that need a run but did not fit: the next run's.
    pub deferred: Vec<IsoWeek>,
    /// Weeks whose run failed (each logged), with what started them: the
    /// caller retries them or leaves them to the next run's catch-up.
    pub failed: Vec<(IsoWeek, Trigger, WeeklyError)>,
}

/// What [`Weekly::refresh`] did.
#[derive(Debug, Clone, Default)]
pub struct RefreshOutcome {
    pub ran: Vec<Ran>,
    /// Requests with nothing left to do: a run that started after them had
    /// rewritten the week, or the retention had deleted its records.
    pub covered: Vec<IsoWeek>,
}

/// Why a run failed. Each names its week where it has one.
#[derive(Debug, thiserror::Error)]
pub enum WeeklyError {
    /// Planning or the run itself.
    #[error(transparent)]
    Summarize(#[from] SummarizeError),
    /// A merge of a fanned-out run.
    #[error(transparent)]
    Merge(#[from] FanOutError),
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The run lost its lease before it committed: it wrote nothing more.
    #[error(
        "the run of {week} lost its lock before it committed (it expired, or another run took the week); it wrote nothing more"
    )]
    Lost {
        week: IsoWeek,
        #[source]
        source: Box<WeeklyError>,
    },
    #[error("{given} weeks were asked for, more than the {most} one run builds; ask for fewer at a time")]
    TooManyWeeks { given: usize, most: usize },
    #[error("pruning stopped")]
    Prune(#[from] PruneError),
    /// A bug: the run of the week panicked. Only that run failed.
    #[error("the run of {week} panicked: {message}")]
    Panicked { week: IsoWeek, message: String },
    #[error("the run of {week} was cancelled")]
    Cancelled { week: IsoWeek },
}

impl WeeklyError {
    /// The week the failure concerns, if it names one.
    pub fn week(&self) -> Option<IsoWeek> {
        match self {
            Self::Summarize(e) => e.week(),
            Self::Merge(e) => e.week(),
            Self::Lock(LockError::Busy { week, .. } | LockError::Store { week, .. }) | Self::Lost { week, .. } => {
                Some(*week)
            }
            Self::Prune(PruneError::Delete { week, .. }) | Self::Panicked { week, .. } | Self::Cancelled { week } => {
                Some(*week)
            }
            Self::TooManyWeeks { .. } | Self::Prune(_) => None,
        }
    }
}

impl<E: Into<WeeklyError> + std::error::Error + 'static> From<RunError<E>> for WeeklyError {
    fn from(e: RunError<E>) -> Self {
        match e {
            RunError::Failed(e) => e.into(),
            RunError::Lost { week, source } => Self::Lost { week, source: Box::new(source.into()) },
        }
    }
}

/// The weekly run over one set of ports. Cheap to clone.
#[derive(Clone)]
pub struct Weekly {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn RecordLifecycle>,
    sink: Arc<dyn SummarySink>,
    lock: Arc<dyn WeekLock>,
    clock: Arc<dyn Clock>,
    refresh: Option<Arc<dyn WeekRefresh>>,
    notifiers: Vec<Arc<dyn Notifier>>,
    settings: WeeklySettings,
    /// Who runs, for the lock's holder: e.g. `pid 4242`.
    identity: String,
}

impl std::fmt::Debug for Weekly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weekly").field("identity", &self.inner.identity).finish_non_exhaustive()
    }
}

impl Weekly {
    /// Runs over these ports, announcing to no one and without refresh
    /// requests until [`with_notifiers`](Self::with_notifiers) and
    /// [`with_refresh`](Self::with_refresh) say otherwise.
    pub fn new(
        store: Arc<dyn RecordLifecycle>,
        sink: Arc<dyn SummarySink>,
        lock: Arc<dyn WeekLock>,
        clock: Arc<dyn Clock>,
        settings: WeeklySettings,
        identity: impl Into<String>,
    ) -> Self {
        let inner = Inner {
            store,
            sink,
            lock,
            clock,
            refresh: None,
            notifiers: Vec::new(),
            settings,
            identity: identity.into(),
        };
        Self { inner: Arc::new(inner) }
    }

    fn with_inner(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(shared) => Inner {
                store: shared.store.clone(),
                sink: shared.sink.clone(),
                lock: shared.lock.clone(),
                clock: shared.clock.clone(),
                refresh: shared.refresh.clone(),
                notifiers: shared.notifiers.clone(),
                settings: shared.settings.clone(),
                identity: shared.identity.clone(),
            },
        };
        f(&mut inner);
        Self { inner: Arc::new(inner) }
    }

    /// Announces the weeks it writes (scheduled, catch-up, operator runs).
    pub fn with_notifiers(self, notifiers: Vec<Arc<dyn Notifier>>) -> Self {
        self.with_inner(|i| i.notifiers = notifiers)
    }

    /// Takes pending refresh requests into scheduled runs and withdraws
    /// each request once its week is rewritten.
    pub fn with_refresh(self, refresh: Arc<dyn WeekRefresh>) -> Self {
        self.with_inner(|i| i.refresh = Some(refresh))
    }

    pub fn settings(&self) -> &WeeklySettings {
        &self.inner.settings
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    pub fn sink(&self) -> &Arc<dyn SummarySink> {
        &self.inner.sink
    }

    pub fn store(&self) -> &Arc<dyn RecordLifecycle> {
        &self.inner.store
    }

    fn holder(&self, trigger: Trigger) -> String {
        format!("{} ({})", trigger.name(), self.inner.identity)
    }

    /// Which weeks `request` builds, ascending, which are announced and
    /// whose refresh request is withdrawn, and what is left to the next run.
    pub async fn plan(&self, request: &Request) -> Result<RunPlan, WeeklyError> {
        let i = &self.inner;
        let most = i.settings.max_weeks.max(1);
        let (scheduled, catch_up) = match request {
            Request::Weeks(weeks) if weeks.len() > most => {
                return Err(WeeklyError::TooManyWeeks { given: weeks.len(), most });
            }
            Request::Weeks(weeks) => {
                let mut weeks = weeks.clone();
                weeks.sort_unstable();
                weeks.dedup();
                return Ok(RunPlan { announced: weeks.clone(), weeks, ..RunPlan::default() });
            }
            Request::Scheduled(week) => (Some(*week), true),
            Request::CatchUp => (None, true),
        };
        let now = i.clock.now();
        let pending = if catch_up { pending_weeks(i.store.as_ref(), i.sink.as_ref(), now).await? } else { Vec::new() };
        let requested = match &i.refresh {
            Some(refresh) => refresh.pending().await.unwrap_or_else(|e| {
                tracing::warn!(error = %crate::error_chain(&e), "could not list leftover refresh requests; the next run tries again");
                Vec::new()
            }),
            None => Vec::new(),
        };
        // The schedule's week is rebuilt even when it has a summary or no
        // records (reruns converge) — unless the retention already pruned it
        // (a retention of 0 weeks prunes it right after its run): its
        // summary then stands, and a rerun of the schedule does not fail.
        let mut scheduled = scheduled;
        if let Some(week) = scheduled {
            match ensure_not_pruned(i.store.as_ref(), i.sink.as_ref(), week).await {
                Err(SummarizeError::Pruned { .. }) => {
                    tracing::info!(%week, "the scheduled week is summarized and pruned already: its summary stands");
                    scheduled = None;
                }
                other => other?,
            }
        }
        let plan = plan_scheduled(scheduled, &requested, &pending, most);
        if plan.more() {
            tracing::warn!(
                weeks = plan.weeks.len(),
                deferred = plan.deferred.len(),
                first_deferred = %plan.deferred[0],
                "more weeks need a summary than one run builds; the rest are left to the next run"
            );
        }
        Ok(plan)
    }

    /// Plans `request` and runs each week in turn, oldest first, each in a
    /// task of its own: an error or a panic fails that week only (logged,
    /// and listed in [`RunOutcome::failed`]), and the next week still runs.
    /// Does not prune ([`prune_after_run`](Self::prune_after_run)).
    pub async fn run(&self, request: &Request, progress: Arc<dyn Progress>) -> Result<RunOutcome, WeeklyError> {
        let plan = self.plan(request).await?;
        let mut outcome = RunOutcome { deferred: plan.deferred.clone(), ..RunOutcome::default() };
        for &week in &plan.weeks {
            let trigger = match request {
                Request::Weeks(_) => Trigger::Operator { partial: false },
                Request::Scheduled(w) if *w == week => Trigger::Scheduled,
                _ if plan.requested.contains(&week) => Trigger::Refresh,
                _ => Trigger::CatchUp,
            };
            match self.isolated(week, trigger, progress.clone()).await {
                Ok(Some(ran)) => outcome.ran.push(ran),
                Ok(None) => outcome.skipped.push(week),
                Err(e) => {
                    tracing::error!(%week, trigger = trigger.name(), error = %crate::error_chain(&e), "the run of the week failed");
                    outcome.failed.push((week, trigger, e));
                    continue;
                }
            }
            // A scheduled week with a pending request answers it too.
            if plan.requested.contains(&week) && trigger != Trigger::Refresh {
                self.withdraw(week).await;
            }
        }
        Ok(outcome)
    }

    /// [`week`](Self::week) in a task of its own ([`in_task`]).
    pub async fn isolated(
        &self,
        week: IsoWeek,
        trigger: Trigger,
        progress: Arc<dyn Progress>,
    ) -> Result<Option<Ran>, WeeklyError> {
        let weekly = self.clone();
        in_task(week, async move { weekly.week(week, trigger, progress.as_ref()).await }).await
    }

    /// Runs `week` for `trigger` under its lock: clears writes that never
    /// committed, summarizes it from the store, releases the lock (with the
    /// run's start as `done_from` when it completed), withdraws its refresh
    /// request (a rewrite), announces it (scheduled, catch-up, operator).
    /// `None`: skipped, another run is writing it (catch-up only).
    pub async fn week(
        &self,
        week: IsoWeek,
        trigger: Trigger,
        progress: &dyn Progress,
    ) -> Result<Option<Ran>, WeeklyError> {
        let Some(run) = self.acquire(week, trigger).await? else { return Ok(None) };
        let ran = self.summarize_held(run, trigger, progress).await?;
        Ok(Some(ran))
    }

    async fn acquire(&self, week: IsoWeek, trigger: Trigger) -> Result<Option<WeekRun>, LockError> {
        let i = &self.inner;
        let settings = trigger.lock(&i.settings.lock);
        let lease = acquire(i.lock.as_ref(), i.clock.as_ref(), week, &self.holder(trigger), &settings).await?;
        Ok(lease.map(|lease| self.held(lease)))
    }

    fn held(&self, lease: WeekLease) -> WeekRun {
        let i = &self.inner;
        let run = WeekRun::new(i.lock.clone(), i.clock.clone(), lease, i.settings.lock.ttl);
        if i.settings.renew { run } else { run.without_renewal() }
    }

    fn options(&self, week: IsoWeek, trigger: Trigger) -> SummaryOptions {
        let i = &self.inner;
        let now = i.clock.now();
        match trigger {
            Trigger::Refresh | Trigger::Import => i.settings.options.for_rewrite(week, now),
            Trigger::Operator { partial: true } => {
                SummaryOptions { partial_until: Some(now), ..i.settings.options.clone() }
            }
            Trigger::Scheduled | Trigger::CatchUp | Trigger::Operator { partial: false } => i.settings.options.clone(),
        }
    }

    async fn summarize_held(
        &self,
        mut run: WeekRun,
        trigger: Trigger,
        progress: &dyn Progress,
    ) -> Result<Ran, WeeklyError> {
        let i = &self.inner;
        let week = run.lease().week;
        // A run covers what was committed before it started reading, i.e.
        // once it holds the week (waiting for the lock is not part of it).
        let started = i.clock.now();
        self.clear_abandoned(week, started).await;
        let options = self.options(week, trigger);
        let (store, clock, options_ref) = (i.store.as_ref(), i.clock.as_ref(), &options);
        let result = run
            .run(i.sink.clone(), |sink| async move {
                summarize_week(store, sink.as_ref(), clock, week, options_ref, progress).await
            })
            .await;
        run.release(result.as_ref().ok().map(|_| started)).await;
        let report = result?;
        Ok(self.after(report, trigger).await)
    }

    /// What follows a committed week: its request withdrawn, its announcement.
    async fn after(&self, report: WeekReport, trigger: Trigger) -> Ran {
        if trigger == Trigger::Refresh {
            self.withdraw(report.week).await;
        }
        let announced = if trigger.announced() {
            let i = &self.inner;
            announce(&i.notifiers, i.sink.as_ref(), &report, &i.settings.notify_policy).await
        } else {
            Announced::default()
        };
        Ran { report, announced }
    }

    /// Withdraws `week`'s refresh request. A failure only leaves it for the
    /// next scheduled run, which rewrites the week once more.
    async fn withdraw(&self, week: IsoWeek) {
        if let Some(refresh) = &self.inner.refresh {
            if let Err(e) = refresh.done(week).await {
                tracing::warn!(%week, error = %crate::error_chain(&e), "could not withdraw the week's refresh request; the next scheduled run rewrites it again");
            }
        }
    }

    /// Clears what writes that never committed left in `week` (logged only:
    /// readers ignore them, and the next run of the week clears again).
    async fn clear_abandoned(&self, week: IsoWeek, now: Timestamp) {
        match self.inner.store.clear_abandoned(week, now).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(%week, deleted, "cleared the items of writes that never committed"),
            Err(e) => {
                tracing::warn!(%week, error = %crate::error_chain(&e), "could not clear abandoned writes; the next run of the week tries again")
            }
        }
    }

    /// Rewrites each requested week after an erasure, unless a run that
    /// started after the request has completed since (a burst of erasures
    /// then costs one or two rewrites, not one each), or the retention has
    /// deleted its records (its summary stands). Withdraws each request.
    pub async fn refresh(
        &self,
        requests: &[RefreshRequest],
        progress: &dyn Progress,
    ) -> Result<RefreshOutcome, WeeklyError> {
        let i = &self.inner;
        let margin = i64::try_from(i.settings.cover_margin.as_millis()).unwrap_or(i64::MAX);
        let mut outcome = RefreshOutcome::default();
        for request in requests {
            let week = request.week;
            let Some(run) = self.acquire(week, Trigger::Refresh).await? else { continue };
            let covered_by =
                run.lease().done_from.filter(|from| from.as_millis() > request.requested_at.as_millis() + margin);
            if let Some(from) = covered_by {
                tracing::info!(%week, requested_at = %request.requested_at, run_started = %from, "the week was rewritten after this request: nothing to do");
                run.release(None).await;
                outcome.covered.push(week);
                self.withdraw(week).await;
            } else if week.end() > i.clock.now() && !self.summarized(week).await? {
                // An erasure in a week not yet over, with no partial summary
                // (under the lock: no partial run is under way either).
                run.release(None).await;
                outcome.covered.push(week);
                self.withdraw(week).await;
            } else if !i.store.weeks().await.map_err(|source| SummarizeError::ListWeeks { source })?.contains(&week) {
                // The retention deleted the week's records since: rewriting
                // it would replace the summary it keeps with an empty one.
                tracing::warn!(%week, "the week's records were deleted by the retention; its summary is kept as it is");
                run.release(None).await;
                outcome.covered.push(week);
                self.withdraw(week).await;
            } else {
                outcome.ran.push(self.summarize_held(run, Trigger::Refresh, progress).await?);
            }
        }
        Ok(outcome)
    }

    /// Whether `week` has a pending refresh request (an unreadable queue
    /// counts as yes: the retention then leaves the week for later).
    async fn requested(&self, week: IsoWeek) -> bool {
        match &self.inner.refresh {
            Some(refresh) => refresh.pending().await.map_or(true, |weeks| weeks.contains(&week)),
            None => false,
        }
    }

    async fn summarized(&self, week: IsoWeek) -> Result<bool, WeeklyError> {
        let manifest = self.inner.sink.read_object(week, MANIFEST_JSON).await;
        Ok(manifest.map_err(|source| SummarizeError::ReadManifest { week, source })?.is_some())
    }

    /// Commits `week` from the part states its shares wrote to the sink,
    /// for a fanned-out run planned at `plan_started`. If a run of the week
    /// that started after the plan has completed since (typically the
    /// rewrite an erasure asked for), the shares may hold a record erased
    /// in between: they are discarded and the week summarized from the
    /// store instead. `trigger` says whether it is announced; `requested`,
    /// whether it answers a refresh request (withdrawn once committed).
    pub async fn merge(
        &self,
        week: IsoWeek,
        plan_started: Timestamp,
        trigger: Trigger,
        requested: bool,
    ) -> Result<Ran, WeeklyError> {
        let i = &self.inner;
        // Waits for the lock (a waiting run is never skipped).
        let Some(mut run) = self.acquire(week, Trigger::Scheduled).await? else {
            return Err(LockError::Busy { week, holder: "another run".to_owned(), waited_s: 0 }.into());
        };
        if run.lease().done_from.is_some_and(|from| from > plan_started) {
            tracing::warn!(%week, plan_started = %plan_started, "a newer run of the week completed after the shares read the store (an erasure's rewrite): summarizing the week again from the store instead of merging the shares' states");
            self.discard_part_states(week).await;
            let ran = self.summarize_held(run, trigger, &NoProgress).await?;
            if requested {
                self.withdraw(week).await;
            }
            return Ok(ran);
        }
        self.clear_abandoned(week, i.clock.now()).await;
        let (clock, options) = (i.clock.as_ref(), &i.settings.options);
        let result =
            run.run(i.sink.clone(), |sink| async move {
                merge_parts(sink.as_ref(), clock, week, options, &NoProgress).await
            })
            .await;
        // The shares read the store from the plan on: that is what it covers.
        run.release(result.as_ref().ok().map(|_| plan_started)).await;
        let report = result?;
        if requested {
            self.withdraw(week).await;
        }
        Ok(self.after(report, trigger).await)
    }

    /// Commits `week` from part states an operator computed elsewhere
    /// (`tally summarize --part`, then `--merge` of their files), under the
    /// week's lock, announced as an operator's run. When the shares read the
    /// store is unknown, so the run covers no refresh request (an erasure
    /// since asks for its own rewrite, which runs after this one).
    pub async fn merged(
        &self,
        week: IsoWeek,
        source: &mut dyn PartSource,
        progress: &dyn Progress,
    ) -> Result<Ran, WeeklyError> {
        let i = &self.inner;
        let trigger = Trigger::Operator { partial: false };
        let Some(mut run) = self.acquire(week, trigger).await? else {
            return Err(LockError::Busy { week, holder: "another run".to_owned(), waited_s: 0 }.into());
        };
        let (clock, options) = (i.clock.as_ref(), &i.settings.options);
        let result = run
            .run(i.sink.clone(), |sink| async move {
                summarize_merged(sink.as_ref(), clock, week, options, source, progress).await
            })
            .await;
        run.release(None).await;
        let report = result?;
        Ok(self.after(report, trigger).await)
    }

    /// Deletes `week`'s part states a merge will not use (a failed delete
    /// costs storage only: the next run of the week overwrites them).
    async fn discard_part_states(&self, week: IsoWeek) {
        for part in Part::all() {
            if let Err(e) = self.inner.sink.delete_object(week, &part_object(part)).await {
                tracing::warn!(%week, %part, error = %crate::error_chain(&e), "could not delete a stale part state");
            }
        }
    }

    /// Deletes the records of every summarized week that ended more than
    /// `keep_weeks` weeks ago, each under its lock (a run of the week
    /// finishes first; a week being written is left to the next prune).
    /// Weeks that old without a summary keep their records and are listed.
    pub async fn prune(&self, keep_weeks: u32) -> Result<PruneReport, WeeklyError> {
        let i = &self.inner;
        let now = i.clock.now();
        let summarized = i.sink.list_weeks().await.map_err(PruneError::from)?;
        let mut report = PruneReport::default();
        for week in i.store.weeks().await.map_err(PruneError::from)? {
            if !expired(week, now, keep_weeks) {
                continue;
            }
            if summarized.binary_search(&week).is_err() {
                report.unsummarized.push(week);
                continue;
            }
            let settings = LockSettings { on_busy: OnBusy::Skip, ..i.settings.lock };
            let holder = format!("retention ({})", i.identity);
            let Some(lease) = acquire(i.lock.as_ref(), i.clock.as_ref(), week, &holder, &settings).await? else {
                continue;
            };
            let run = self.held(lease);
            // A week an erasure asked to rewrite keeps its records until it
            // is rewritten: pruned first, its summary would keep the record.
            if self.requested(week).await {
                run.release(None).await;
                tracing::info!(%week, "retention: the week waits for its rewrite after an erasure; pruned by a later run");
                continue;
            }
            // Under the lock, the summary is still complete: a run that
            // started since has committed (or failed and left no manifest).
            let deleted = match i.sink.read_object(week, MANIFEST_JSON).await {
                Ok(Some(_)) => Ok(Some(i.store.delete_week(week).await)),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            run.release(None).await;
            match deleted.map_err(PruneError::from)? {
                Some(Ok(records)) => report.pruned.push((week, records)),
                Some(Err(source)) => return Err(PruneError::Delete { week, source }.into()),
                None => report.unsummarized.push(week),
            }
        }
        Ok(report)
    }

    /// [`prune`](Self::prune) with the settings' retention, logged: a
    /// failure never fails the run whose summaries are written (the next run
    /// prunes again, and `delete_week` resumes where a failed one stopped).
    pub async fn prune_after_run(&self) -> PruneReport {
        let Some(keep_weeks) = self.inner.settings.retention_weeks else { return PruneReport::default() };
        match self.prune(keep_weeks).await {
            Ok(report) => {
                for (week, records) in &report.pruned {
                    tracing::info!(%week, records, keep_weeks, "retention: deleted the week's records (its summary stays)");
                }
                for week in &report.unsummarized {
                    tracing::warn!(%week, keep_weeks, "retention: the week is past the retention but has no summary, so its records are kept; summarize it (tally summarize --week {week}, or invoke the weekly function with {{\"week\":\"{week}\"}})");
                }
                report
            }
            Err(e) => {
                tracing::error!(error = %crate::error_chain(&e), keep_weeks, "retention: pruning failed; the next run tries again");
                PruneReport::default()
            }
        }
    }
}

/// Runs `run` (of `week`) in a task of its own: a panic inside is this
/// run's failure ([`WeeklyError::Panicked`]), not its caller's; the task is
/// aborted if the caller stops waiting (a server shutting down), so no run
/// outlives its trigger.
pub async fn in_task<T: Send + 'static>(
    week: IsoWeek,
    run: impl Future<Output = Result<T, WeeklyError>> + Send + 'static,
) -> Result<T, WeeklyError> {
    struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut task = AbortOnDrop(tokio::spawn(run));
    match (&mut task.0).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => Err(WeeklyError::Panicked { week, message: panic_message(e.into_panic()) }),
        Err(_) => Err(WeeklyError::Cancelled { week }),
    }
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(s) => *s,
        Err(panic) => panic.downcast_ref::<&str>().map_or_else(|| "(no message)".to_owned(), |s| (*s).to_owned()),
    }
}
