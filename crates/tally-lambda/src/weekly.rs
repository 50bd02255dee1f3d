//! The `tally-weekly` function: the weekly summary, invoked by EventBridge
//! Scheduler (or by hand with a week or a range).

use std::sync::Arc;
use std::time::Instant;

use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tally_core::lifecycle::{PruneReport, prune};
use tally_core::summary::{SummarizeError, SummaryOptions, WeekReport, pending_weeks, summarize_week};
use tally_core::{Clock, IsoWeek, RecordLifecycle, RecordStore, SummarySink, SystemClock, Timestamp};

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
}

/// Most weeks one invocation may be asked to build (its timeout is 15 min).
pub const MAX_WEEKS_PER_RUN: usize = 60;

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
        serde_json::from_value(input).map_err(|e| WeeklyError::BadRequest(e.to_string()))
    }

    /// The weeks to build, ascending; `None` means "the previous week and catch up".
    pub fn weeks(&self) -> Result<Option<Vec<IsoWeek>>, WeeklyError> {
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
}

impl From<WeeklyError> for Diagnostic {
    fn from(e: WeeklyError) -> Self {
        let error_type = match &e {
            WeeklyError::BadRequest(_) => "tally.BadRequest",
            WeeklyError::Summarize(_) => "tally.SummarizeFailed",
        };
        Diagnostic { error_type: error_type.into(), error_message: error_chain(&e) }
    }
}

/// `error: cause: cause`, for logs and the Lambda error message.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// What the weekly function needs; built once per cold start.
#[derive(Debug, Clone)]
pub struct WeeklyDeps {
    pub store: Arc<dyn RecordStore>,
    pub sink: Arc<dyn SummarySink>,
    pub clock: Arc<dyn Clock>,
    pub options: SummaryOptions,
    /// `None`: records are kept forever (`TALLY_RETENTION_WEEKS` unset).
    pub retention: Option<Retention>,
}

impl WeeklyDeps {
    pub fn new(store: Arc<dyn RecordStore>, sink: Arc<dyn SummarySink>) -> Self {
        Self { store, sink, clock: Arc::new(SystemClock), options: SummaryOptions::default(), retention: None }
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
}

impl From<&WeekReport> for WeekDone {
    fn from(r: &WeekReport) -> Self {
        Self { week: r.week, records: r.records, manifest: r.manifest.key.clone() }
    }
}

/// The `tally-weekly` handler: parses the event, builds the weeks, prints one
/// CloudWatch EMF metric line (success or not) and returns the result.
pub async fn handle_weekly(deps: &WeeklyDeps, event: LambdaEvent<Value>) -> Result<WeeklyOutput, WeeklyError> {
    let function = event.context.env_config.function_name.clone();
    let started = Instant::now();
    let mut done = Vec::new();
    let result = match WeeklyRequest::from_event(event.payload) {
        Ok(request) => run_weekly(deps, &request, &mut done).await,
        Err(e) => Err(e),
    };
    let records = done.iter().map(|w| w.records).sum();
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    println!("{}", emf_line(&function, records, done.len(), duration_ms, result.is_err(), Timestamp::now()));
    match result {
        Ok(()) => {
            tracing::info!(weeks = done.len(), records, duration_ms, "weekly summary done");
            let report = match &deps.retention {
                Some(retention) => prune_after_run(retention, deps.sink.as_ref(), deps.clock.now()).await,
                None => PruneReport::default(),
            };
            Ok(WeeklyOutput {
                weeks: done,
                records,
                duration_ms,
                pruned: report.pruned.into_iter().map(|(week, records)| WeekPruned { week, records }).collect(),
                kept_unsummarized: report.unsummarized,
            })
        }
        Err(e) => {
            tracing::error!(error = %error_chain(&e), weeks_done = done.len(), "weekly summary failed");
            Err(e)
        }
    }
}

/// Deletes what the retention allows. A failure is logged and does not fail
/// the run (its summaries are written): the next run prunes again, and
/// `delete_week` resumes where a failed one stopped.
async fn prune_after_run(retention: &Retention, sink: &dyn SummarySink, now: Timestamp) -> PruneReport {
    let keep_weeks = retention.keep_weeks;
    match prune(retention.store.as_ref(), sink, now, keep_weeks).await {
        Ok(report) => {
            for (week, records) in &report.pruned {
                tracing::info!(%week, records, keep_weeks, "retention: deleted the week's records (its summary stays)");
            }
            for week in &report.unsummarized {
                tracing::warn!(
                    %week,
                    keep_weeks,
                    "retention: the week is past the retention but has no summary, so its records are kept; \
                     invoke the function with {{\"week\":\"{week}\"}} to summarize it"
                );
            }
            report
        }
        Err(e) => {
            tracing::error!(error = %error_chain(&e), keep_weeks, "retention: pruning failed; the next run tries again");
            PruneReport::default()
        }
    }
}

/// Builds the requested weeks in order, recording each one done in `done`.
pub async fn run_weekly(
    deps: &WeeklyDeps,
    request: &WeeklyRequest,
    done: &mut Vec<WeekDone>,
) -> Result<(), WeeklyError> {
    let weeks = match request.weeks()? {
        Some(weeks) => weeks,
        None => {
            let now = deps.clock.now();
            let mut weeks = pending_weeks(deps.store.as_ref(), deps.sink.as_ref(), now).await?;
            // Rebuild the previous week even when it already has a summary or
            // no records: the schedule promises that week, and reruns converge.
            weeks.push(IsoWeek::last_complete(now));
            weeks.sort_unstable();
            weeks.dedup();
            weeks
        }
    };
    for week in weeks {
        let report = summarize_week(
            deps.store.as_ref(),
            deps.sink.as_ref(),
            deps.clock.as_ref(),
            week,
            &deps.options,
            &tally_core::summary::NoProgress,
        )
        .await?;
        done.push(WeekDone::from(&report));
    }
    Ok(())
}

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
