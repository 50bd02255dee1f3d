//! The `tally-weekly` function: the weekly summary, invoked by EventBridge
//! Scheduler (or by hand with a week or a range), and the rewrite of one week
//! after an erasure, invoked by the creation of its refresh request object
//! (`summaries/<week>/refresh.request`, written by the API function).
//!
//! Every week is written under its lease (the [`WeekLock`] port, a
//! [`DynamoDbWeekLease`](tally_aws::DynamoDbWeekLease)): runs of one week
//! never interleave, whichever invocations (or `tally --store dynamodb`
//! processes) they come from, and every write of a run first checks that
//! its lease still holds (`tally_core::summary::locked`).
//!
//! Each week a scheduled or operator run writes is announced to the
//! configured notifiers (webhook, SNS topic) right after its manifest
//! ([`announce`]); a failed delivery is logged and counted in
//! [`WeeklyOutput::notifications_failed`], never failing the run. Rewrites
//! for refresh requests (after an erasure) are not announced, neither from
//! their own event nor when the schedule picks up a leftover request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tally_aws::{DynamoDbRecordStore, S3SummarySink, S3WeekRefresh};
pub use tally_core::error_chain;
use tally_core::lifecycle::PruneReport;
use tally_core::ports::{Notifier, StoreError, WeekLock};
use tally_core::retry::RetryPolicy;
use tally_core::summary::fanout::FanOutError;
use tally_core::summary::locked::{LockError, LockSettings, OnBusy};
/// Most weeks one run builds: a range may span no more, and the schedule's
/// catch-up continues in the next run beyond it.
pub use tally_core::summary::plan::MAX_WEEKS_PER_RUN;
use tally_core::summary::{
    NoProgress, Ran, RefreshRequest as CoreRefresh, Request, SummarizeError, SummaryOptions, WeekReport, Weekly,
    WeeklyError as CoreError, WeeklySettings,
};
use tally_core::{Clock, IsoWeek, RecordId, RecordLifecycle, SummarySink, SystemClock, Timestamp};

use crate::s3_event::{self, S3Event};

/// What the function accepts, for the error of any other event.
const EXPECTED: &str = "expected {} (the schedule: the previous week and catch-up), {\"week\":\"2026-W47\"}, \
     {\"from\":\"2026-W40\",\"to\":\"2026-W47\"}, an EventBridge envelope whose detail is one of those, or \
     an S3 ObjectCreated event (notification or EventBridge) for summaries/<week>/refresh.request in the summary bucket";

/// An event the weekly function understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeeklyEvent {
    /// From the schedule or an operator.
    Build(WeeklyRequest),
    /// Refresh requests were created: rewrite these weeks (one per week).
    Refresh(Vec<RefreshRequest>),
    /// S3 checking a new notification: nothing to do.
    S3Test,
}

/// "Rewrite `week`": its request object was created at `requested_at`,
/// after the erasure that asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshRequest {
    pub week: IsoWeek,
    pub requested_at: Timestamp,
}

impl WeeklyEvent {
    /// Parses the payload; an S3 event must name a refresh request of
    /// `refresh`'s bucket and prefix.
    pub fn parse(event: Value, refresh: &S3WeekRefresh) -> Result<Self, WeeklyError> {
        let objects = match s3_event::parse(&event) {
            Ok(None) => return WeeklyRequest::from_event(event).map(Self::Build),
            Ok(Some(S3Event::Test)) => return Ok(Self::S3Test),
            Ok(Some(S3Event::Created(objects))) => objects,
            Err(e) => return Err(WeeklyError::BadRequest(format!("{e}; {EXPECTED}"))),
        };
        let mut requests: Vec<RefreshRequest> = Vec::new();
        for object in objects {
            let week = refresh.week_of(&object.key).filter(|_| object.bucket == refresh.bucket());
            let Some(week) = week else {
                return Err(WeeklyError::BadRequest(format!(
                    "object {:?} in bucket {:?} is not a refresh request (expected {} in {:?}); \
                     check the notification's filter",
                    object.key,
                    object.bucket,
                    refresh.key_pattern(),
                    refresh.bucket(),
                )));
            };
            // Several requests of one week: the latest covers the others.
            match requests.iter_mut().find(|r| r.week == week) {
                Some(r) => r.requested_at = r.requested_at.max(object.at),
                None => requests.push(RefreshRequest { week, requested_at: object.at }),
            }
        }
        requests.sort_by_key(|r| r.week);
        Ok(Self::Refresh(requests))
    }
}

/// What the weekly function was asked to do. The schedule sends `{}` (the
/// previous ISO week, plus any earlier week with records but no summary);
/// an operator can send `{"week":"2026-W47"}` or
/// `{"from":"2026-W40","to":"2026-W47"}` to (re)build given weeks.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeeklyRequest {
    #[serde(default)]
    pub week: Option<IsoWeek>,
    #[serde(default)]
    pub from: Option<IsoWeek>,
    #[serde(default)]
    pub to: Option<IsoWeek>,
    /// `{"catch_up":true}`: the continuation of a catch-up that had more
    /// weeks than one run builds ([`MAX_WEEKS_PER_RUN`](tally_core::summary::plan::MAX_WEEKS_PER_RUN)):
    /// the missed weeks and refresh requests, without the previous week again.
    #[serde(default)]
    pub catch_up: bool,
    /// Set by Step Functions when an execution starts the next one: only
    /// links the executions in the console.
    #[serde(default, rename = "AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID")]
    pub started_by: Option<String>,
}

impl WeeklyRequest {
    /// Accepts the bare input (`{}`, `null`, `{"week":..}`, `{"from":..,"to":..}`)
    /// or an EventBridge event envelope whose `detail` holds it.
    pub fn from_event(event: Value) -> Result<Self, WeeklyError> {
        let input = match event {
            Value::Object(mut map) if map.contains_key("detail-type") => map.remove("detail").unwrap_or(Value::Null),
            other => other,
        };
        if input.is_null() {
            return Ok(Self::default());
        }
        serde_json::from_value(input).map_err(|e| WeeklyError::BadRequest(format!("{e}; {EXPECTED}")))
    }

    /// The weeks to build, ascending; `None` means "the previous week and catch up".
    pub fn weeks(&self) -> Result<Option<Vec<IsoWeek>>, WeeklyError> {
        if self.catch_up && (self.week.is_some() || self.from.is_some() || self.to.is_some()) {
            return Err(WeeklyError::BadRequest(
                "\"catch_up\" continues the schedule's catch-up and takes no \"week\", \"from\" or \"to\"".into(),
            ));
        }
        match (self.week, self.from, self.to) {
            (None, None, None) => Ok(None),
            (Some(week), None, None) => Ok(Some(vec![week])),
            (None, Some(from), Some(to)) if from <= to => {
                let weeks: Vec<IsoWeek> = IsoWeek::range(from, to).take(MAX_WEEKS_PER_RUN + 1).collect();
                if weeks.len() > MAX_WEEKS_PER_RUN {
                    return Err(WeeklyError::BadRequest(format!(
                        "{from}..{to} spans more than {MAX_WEEKS_PER_RUN} weeks; invoke once per smaller range"
                    )));
                }
                Ok(Some(weeks))
            }
            (None, Some(from), Some(to)) => {
                Err(WeeklyError::BadRequest(format!("\"from\" ({from}) is after \"to\" ({to})")))
            }
            _ => Err(WeeklyError::BadRequest(
                "send {}, {\"week\":\"2026-W47\"} or {\"from\":\"2026-W40\",\"to\":\"2026-W47\"}".into(),
            )),
        }
    }
}

/// Why a weekly run failed. The function then returns an error, so Lambda
/// retries it and finally sends the event to the dead-letter queue.
#[derive(Debug, thiserror::Error)]
pub enum WeeklyError {
    #[error("invalid weekly event: {0}")]
    BadRequest(String),
    #[error(transparent)]
    Summarize(#[from] SummarizeError),
    #[error("could not take the lease of {week}")]
    Lease {
        week: IsoWeek,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    FanOut(#[from] FanOutError),
    #[error("another run kept writing {week} for {waited_s} s; Lambda retries this event later")]
    Busy { week: IsoWeek, waited_s: u64 },
    /// The run lost its lease, panicked or was cancelled.
    #[error(transparent)]
    Run(CoreError),
}

impl From<CoreError> for WeeklyError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Summarize(e) => Self::Summarize(e),
            CoreError::Merge(e) => Self::FanOut(e),
            CoreError::Lock(LockError::Busy { week, waited_s, .. }) => Self::Busy { week, waited_s },
            CoreError::Lock(LockError::Store { week, source }) => Self::Lease { week, source },
            e @ CoreError::TooManyWeeks { .. } => Self::BadRequest(e.to_string()),
            e => Self::Run(e),
        }
    }
}

impl From<WeeklyError> for Diagnostic {
    fn from(e: WeeklyError) -> Self {
        let error_type = match &e {
            WeeklyError::BadRequest(_) => "tally.BadRequest",
            WeeklyError::Summarize(_) => "tally.SummarizeFailed",
            WeeklyError::FanOut(_) => "tally.FanOutFailed",
            WeeklyError::Lease { .. } => "tally.LeaseFailed",
            WeeklyError::Busy { .. } => "tally.Busy",
            WeeklyError::Run(_) => "tally.RunFailed",
        };
        Diagnostic { error_type: error_type.into(), error_message: error_chain(&e) }
    }
}

/// Shares per week by default: one day each.
pub const DEFAULT_SHARES: u8 = 7;

/// How long a run may hold a week's lease: longer than the function's
/// 15-minute timeout, so a lease outlives only a run that surely died.
pub const LEASE_HOLD: Duration = Duration::from_secs(16 * 60);
/// How long a run waits for another run of the same week before failing
/// (Lambda then retries the event later).
pub const LEASE_WAIT: Duration = Duration::from_secs(5 * 60);
/// A refresh request is covered by a completed run that started this long
/// after it: EventBridge times are whole seconds, and clocks differ a little.
pub const COVER_MARGIN: Duration = Duration::from_secs(5);

/// What the weekly function needs; built once per cold start.
#[derive(Debug, Clone)]
pub struct WeeklyDeps {
    pub store: Arc<dyn RecordLifecycle>,
    pub sink: Arc<dyn SummarySink>,
    pub clock: Arc<dyn Clock>,
    pub options: SummaryOptions,
    /// `None`: records are kept forever (`TALLY_RETENTION_WEEKS` unset).
    pub retention: Option<Retention>,
    /// One run per week at a time, across invocations: the
    /// [`DynamoDbWeekLease`](tally_aws::DynamoDbWeekLease) of the table.
    pub lease: Arc<dyn WeekLock>,
    /// The refresh requests beside the summaries.
    pub refresh: S3WeekRefresh,
    /// [`LEASE_HOLD`] and [`LEASE_WAIT`]; tests shorten them.
    pub lease_hold: Duration,
    pub lease_wait: Duration,
    /// Told about each week a scheduled or operator run writes (none by default).
    pub notifiers: Vec<Arc<dyn Notifier>>,
    /// [`RetryPolicy::NOTIFICATION`]; tests shorten it.
    pub notify_policy: RetryPolicy,
    /// Shares per week when the state machine fans the run out
    /// (`TALLY_WEEKLY_PARTS`, 1–28).
    pub shares: u8,
    /// Most weeks one run builds: [`MAX_WEEKS_PER_RUN`], which Step
    /// Functions' limits were measured against; tests lower it.
    pub max_weeks: usize,
}

impl WeeklyDeps {
    pub fn new(store: Arc<DynamoDbRecordStore>, sink: S3SummarySink) -> Self {
        Self {
            lease: Arc::new(store.week_lease()),
            refresh: S3WeekRefresh::new(&sink),
            store,
            sink: Arc::new(sink),
            clock: Arc::new(SystemClock),
            options: SummaryOptions::default(),
            retention: None,
            lease_hold: LEASE_HOLD,
            lease_wait: LEASE_WAIT,
            notifiers: Vec::new(),
            notify_policy: RetryPolicy::NOTIFICATION,
            shares: DEFAULT_SHARES,
            max_weeks: MAX_WEEKS_PER_RUN,
        }
    }

    /// The weekly run (tally-core's one use case) over these ports: leases
    /// of [`LEASE_HOLD`], never renewed (the function's timeout is shorter),
    /// waited for up to [`LEASE_WAIT`].
    pub fn weekly(&self) -> Weekly {
        self.weekly_over(self.store.clone())
    }

    fn weekly_over(&self, store: Arc<dyn RecordLifecycle>) -> Weekly {
        let settings = WeeklySettings {
            options: self.options.clone(),
            lock: LockSettings { ttl: self.lease_hold, on_busy: OnBusy::Wait(self.lease_wait) },
            renew: false,
            max_weeks: self.max_weeks,
            retention_weeks: self.retention.as_ref().map(|r| r.keep_weeks),
            notify_policy: self.notify_policy,
            cover_margin: COVER_MARGIN,
        };
        let identity = format!("tally-weekly {}", RecordId::generate(self.clock.now()));
        Weekly::new(store, self.sink.clone(), self.lease.clone(), self.clock.clone(), settings, identity)
            .with_notifiers(self.notifiers.clone())
            .with_refresh(Arc::new(self.refresh.clone()))
    }

    /// The retention after a run, over [`Retention::store`].
    pub(crate) async fn prune_after_run(&self) -> PruneReport {
        match &self.retention {
            Some(retention) => self.weekly_over(retention.store.clone()).prune_after_run().await,
            None => PruneReport::default(),
        }
    }
}

/// Retention on AWS: after each successful run, the records of summarized
/// weeks that ended more than `keep_weeks` weeks ago are deleted
/// ([`tally_core::lifecycle::prune`]); their summaries stay in the bucket.
#[derive(Debug, Clone)]
pub struct Retention {
    /// The same table as [`WeeklyDeps::store`], as the lifecycle port.
    pub store: Arc<dyn RecordLifecycle>,
    pub keep_weeks: u32,
}

/// The function's result (also logged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeeklyOutput {
    pub weeks: Vec<WeekDone>,
    pub records: u64,
    pub duration_ms: u64,
    /// Weeks whose records the retention deleted after the run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<WeekPruned>,
    /// Weeks past the retention whose records were kept for lack of a summary.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept_unsummarized: Vec<IsoWeek>,
    /// Refresh requests with nothing left to do: a run that started after
    /// them had rewritten the week, or the retention had deleted its records.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub covered: Vec<IsoWeek>,
    /// Notifier deliveries that failed after their retries (each logged);
    /// the weeks' summaries are written all the same.
    #[serde(skip_serializing_if = "is_zero")]
    pub notifications_failed: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeekPruned {
    pub week: IsoWeek,
    pub records: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeekDone {
    pub week: IsoWeek,
    pub records: u64,
    pub manifest: String,
    /// Notifiers that did not take the week's announcement.
    #[serde(skip)]
    pub notifications_failed: usize,
}

impl From<&WeekReport> for WeekDone {
    fn from(r: &WeekReport) -> Self {
        Self { week: r.week, records: r.records, manifest: r.manifest.key.clone(), notifications_failed: 0 }
    }
}

impl From<&Ran> for WeekDone {
    fn from(ran: &Ran) -> Self {
        Self { notifications_failed: ran.announced.failed, ..Self::from(&ran.report) }
    }
}

/// The `tally-weekly` handler: parses the event, builds the weeks, prunes
/// (after a scheduled or operator run), prints one CloudWatch EMF metric line
/// (success or not) and returns the result.
pub async fn handle_weekly(deps: &WeeklyDeps, event: LambdaEvent<Value>) -> Result<WeeklyOutput, WeeklyError> {
    let function = event.context.env_config.function_name.clone();
    let started = Instant::now();
    let mut done = Vec::new();
    let mut covered = Vec::new();
    let mut notifications_failed = 0;
    let result = match WeeklyEvent::parse(event.payload, &deps.refresh) {
        Ok(WeeklyEvent::Build(request)) => {
            let result = run_weekly(deps, &request, &mut done).await;
            notifications_failed = done.iter().map(|w| w.notifications_failed).sum();
            result.map(|()| true)
        }
        Ok(WeeklyEvent::Refresh(requests)) => {
            refresh_weeks(deps, &requests, &mut done, &mut covered).await.map(|()| false)
        }
        Ok(WeeklyEvent::S3Test) => {
            tracing::info!("S3 test event (a notification was set up): nothing to do");
            Ok(false)
        }
        Err(e) => Err(e),
    };
    let records = done.iter().map(|w| w.records).sum();
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    println!("{}", emf_line(&function, records, done.len(), duration_ms, result.is_err(), Timestamp::now()));
    match result {
        Ok(prune_now) => {
            tracing::info!(weeks = done.len(), records, duration_ms, covered = covered.len(), "weekly summary done");
            let report = if prune_now { deps.prune_after_run().await } else { PruneReport::default() };
            Ok(WeeklyOutput {
                weeks: done,
                records,
                duration_ms,
                pruned: report.pruned.into_iter().map(|(week, records)| WeekPruned { week, records }).collect(),
                kept_unsummarized: report.unsummarized,
                covered,
                notifications_failed,
            })
        }
        Err(e) => {
            tracing::error!(error = %error_chain(&e), weeks_done = done.len(), "weekly summary failed");
            Err(e)
        }
    }
}

/// Builds the requested weeks in order, recording each one done in `done`
/// (the weekly run: [`Weekly::run`]). The schedule's run (`{}`) also
/// rewrites the weeks whose refresh request is still in the bucket (its
/// event failed for good or never came). Every planned week is attempted;
/// the first failure then fails the invocation (Lambda retries it).
pub async fn run_weekly(
    deps: &WeeklyDeps,
    request: &WeeklyRequest,
    done: &mut Vec<WeekDone>,
) -> Result<(), WeeklyError> {
    let outcome = deps.weekly().run(&core_request(deps, request)?, Arc::new(NoProgress)).await?;
    done.extend(outcome.ran.iter().map(WeekDone::from));
    match outcome.failed.into_iter().next() {
        Some((_, _, e)) => Err(e.into()),
        None => Ok(()),
    }
}

/// `request` as the weekly run's [`Request`].
pub(crate) fn core_request(deps: &WeeklyDeps, request: &WeeklyRequest) -> Result<Request, WeeklyError> {
    Ok(match request.weeks()? {
        Some(weeks) => Request::Weeks(weeks),
        None if request.catch_up => Request::CatchUp,
        None => Request::Scheduled(IsoWeek::last_complete(deps.clock.now())),
    })
}

/// The weeks a run builds, ascending, which of them it announces and whose
/// refresh request it deletes, and those left to the next run.
pub use tally_core::summary::plan::RunPlan as PlannedWeeks;

/// Which weeks `request` builds ([`Weekly::plan`]): the given ones, or for
/// the schedule (`{}`) the previous week, earlier weeks with records but no
/// summary, and weeks whose refresh request is still in the bucket — at most
/// [`MAX_WEEKS_PER_RUN`](tally_core::summary::plan::MAX_WEEKS_PER_RUN).
/// Shared by the single invocation and the state machine's plan step.
pub async fn plan_weeks(deps: &WeeklyDeps, request: &WeeklyRequest) -> Result<PlannedWeeks, WeeklyError> {
    Ok(deps.weekly().plan(&core_request(deps, request)?).await?)
}

/// Rewrites each requested week ([`Weekly::refresh`]): unless a run that
/// started after its request has completed since, or the retention deleted
/// its records; withdraws each request object afterwards.
pub async fn refresh_weeks(
    deps: &WeeklyDeps,
    requests: &[RefreshRequest],
    done: &mut Vec<WeekDone>,
    covered: &mut Vec<IsoWeek>,
) -> Result<(), WeeklyError> {
    let requests: Vec<CoreRefresh> =
        requests.iter().map(|r| CoreRefresh { week: r.week, requested_at: r.requested_at }).collect();
    let outcome = deps.weekly().refresh(&requests, &NoProgress).await?;
    done.extend(outcome.ran.iter().map(WeekDone::from));
    covered.extend(outcome.covered);
    Ok(())
}

/// How the weekly function polls a week's lease held by another run:
/// 200 ms doubling to 5 s, as many attempts as fit in `wait` (every run
/// polls so: `tally_core::summary::locked`).
pub use tally_core::summary::locked::wait_policy as lease_polling;

/// One CloudWatch Embedded Metric Format line: namespace `tally`, dimension
/// `FunctionName`, metrics `RecordsSummarized`, `WeeksSummarized`,
/// `DurationMs` and `Failed` (0 or 1).
pub fn emf_line(function: &str, records: u64, weeks: usize, duration_ms: u64, failed: bool, now: Timestamp) -> String {
    serde_json::json!({
        "_aws": {
            "Timestamp": now.as_millis(),
            "CloudWatchMetrics": [{
                "Namespace": "tally",
                "Dimensions": [["FunctionName"]],
                "Metrics": [
                    {"Name": "RecordsSummarized", "Unit": "Count"},
                    {"Name": "WeeksSummarized", "Unit": "Count"},
                    {"Name": "DurationMs", "Unit": "Milliseconds"},
                    {"Name": "Failed", "Unit": "Count"}
                ]
            }]
        },
        "FunctionName": function,
        "RecordsSummarized": records,
        "WeeksSummarized": weeks,
        "DurationMs": duration_ms,
        "Failed": u8::from(failed),
    })
    .to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_is_polled_for_as_long_as_the_wait_allows() {
        let p = lease_polling(LEASE_WAIT);
        assert!(p.worst_case_wait() <= LEASE_WAIT, "{:?}", p.worst_case_wait());
        assert!(p.worst_case_wait() > LEASE_WAIT - p.max_delay, "{:?}", p.worst_case_wait());
        assert_eq!(p.delay(1), Some(Duration::from_millis(200)));
        // 200 ms fits in half a second, 200 + 400 ms does not: two attempts.
        assert_eq!(lease_polling(Duration::from_millis(500)).max_attempts, 2);
        assert_eq!(lease_polling(Duration::ZERO).max_attempts, 1);
    }

    fn req(v: Value) -> Result<Option<Vec<IsoWeek>>, WeeklyError> {
        WeeklyRequest::from_event(v)?.weeks()
    }

    fn w(s: &str) -> IsoWeek {
        IsoWeek::parse(s).unwrap()
    }

    #[test]
    fn weekly_events() {
        assert_eq!(req(serde_json::json!({})).unwrap(), None);
        assert_eq!(req(Value::Null).unwrap(), None);
        assert_eq!(req(serde_json::json!({"week": "2026-W47"})).unwrap(), Some(vec![w("2026-W47")]));
        assert_eq!(
            req(serde_json::json!({"from": "2026-W52", "to": "2027-W02"})).unwrap(),
            Some(vec![w("2026-W52"), w("2026-W53"), w("2027-W01"), w("2027-W02")])
        );
        let envelope = serde_json::json!({"detail-type": "Scheduled Event", "source": "aws.scheduler", "detail": {}});
        assert_eq!(req(envelope).unwrap(), None);
        for bad in [
            serde_json::json!({"week": "2026-47"}),
            serde_json::json!({"wek": "2026-W47"}),
            serde_json::json!({"from": "2026-W47"}),
            serde_json::json!({"from": "2026-W47", "to": "2026-W40"}),
            serde_json::json!({"week": "2026-W47", "from": "2026-W40", "to": "2026-W47"}),
            serde_json::json!({"from": "2020-W01", "to": "2026-W01"}),
            serde_json::json!([1]),
        ] {
            assert!(matches!(req(bad.clone()), Err(WeeklyError::BadRequest(_))), "{bad}");
        }
    }

    #[test]
    fn emf_line_is_one_json_object_with_the_metrics() {
        let line = emf_line("fn", 42, 1, 1500, false, Timestamp::from_millis(1_795_939_200_000));
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["RecordsSummarized"], 42);
        assert_eq!(v["DurationMs"], 1500);
        assert_eq!(v["Failed"], 0);
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], "tally");
        assert_eq!(v["_aws"]["Timestamp"], 1_795_939_200_000_i64);
    }
}
