//! The weekly run fanned out: the steps of the Step Functions state machine
//! (`statemachine/weekly.asl.json`) that EventBridge Scheduler starts. Each
//! step is one invocation of `tally-weekly` with a payload tagged `"tally"`:
//!
//! 1. `{"tally":"plan","input":<execution input>}`: which weeks to build
//!    (the same as a direct invocation: `{}` is the previous week plus
//!    catch-up and leftover refresh requests, or `{"week"}`, `{"from","to"}`)
//!    and, for each, the payloads of its shares and of its merge. The number
//!    of shares per week is `TALLY_WEEKLY_PARTS` (1–28, default 7: a day
//!    each).
//! 2. `{"tally":"part","week":"2026-W47","part":"3/7"}`, all shares of a
//!    week at once (a Map state, concurrency capped by the template): each
//!    writes its canonical parts' states beside the week's objects
//!    ([`tally_core::summary::fanout::summarize_part`]). No lease: shares only
//!    read the store and write their own state objects.
//! 3. `{"tally":"merge","week":…,"announce":…,"refresh":…,"started_ms":…}`,
//!    one week after another: under the week's lease, sweeps abandoned
//!    batches, merges the 28 states into the four objects and the manifest
//!    (the bytes a single invocation would write), deletes the states,
//!    deletes a handled refresh request and announces the week.
//! 4. `{"tally":"finish","weeks":[<merge outputs>],"more":false}`: the
//!    retention's prune and the run's metric line, as after a
//!    single-invocation run. With `"more":true` (the plan left weeks over its
//!    bound, [`MAX_WEEKS_PER_RUN`](tally_core::summary::plan::MAX_WEEKS_PER_RUN))
//!    the state machine then starts its next execution with
//!    `{"catch_up":true}`, which plans the next weeks without the previous
//!    week again: a catch-up of any length is a chain of bounded executions.
//!
//! A step that fails returns an error; the state machine retries it, then
//! fails the execution with no manifest written for a week whose merge did
//! not complete. Every step converges when run again.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tally_core::summary::fanout::summarize_part;
use tally_core::summary::{NoProgress, PARTS, Trigger};
use tally_core::{IsoWeek, Timestamp};

use crate::weekly::{WeekDone, WeekPruned, WeeklyDeps, WeeklyError, WeeklyOutput, WeeklyRequest, emf_line, plan_weeks};

/// Most shares a week may be cut into: one per canonical part.
pub const MAX_SHARES: u8 = PARTS;

/// One step's payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "tally", rename_all = "lowercase", deny_unknown_fields)]
pub enum Step {
    Plan {
        #[serde(default)]
        input: Value,
    },
    Part {
        week: IsoWeek,
        /// `"k/n"`: share `k` of `n`.
        part: String,
    },
    Merge(MergeStep),
    Finish {
        #[serde(default)]
        weeks: Vec<MergeDone>,
        /// The plan left weeks for a next execution (`Plan::more`): Finish
        /// passes it on, and the state machine then starts that execution.
        #[serde(default)]
        more: bool,
    },
}

/// What the merge of one week is asked to do besides merging.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MergeStep {
    pub week: IsoWeek,
    /// Announce the week to the notifiers (the schedule's and operators'
    /// weeks; not a rewrite after an erasure).
    #[serde(default)]
    pub announce: bool,
    /// Delete the week's refresh request once merged.
    #[serde(default)]
    pub refresh: bool,
    /// When the plan ran, before any share read the store: the lease records
    /// it, so a refresh request made after it still gets its own rewrite.
    pub started_ms: i64,
}

/// The plan's output: the Map states iterate over `weeks` and their `parts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub weeks: Vec<PlannedWeek>,
    /// More weeks need a summary than one execution builds: after Finish the
    /// state machine starts the next execution with `{"catch_up":true}`.
    pub more: bool,
    /// How many weeks were left for the next execution.
    pub deferred: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedWeek {
    pub week: IsoWeek,
    /// The payloads of the week's shares (`Step::Part`).
    pub parts: Vec<Step>,
    /// The payload of its merge (`Step::Merge`).
    pub merge: Step,
}

/// A share's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartDone {
    pub week: IsoWeek,
    pub part: String,
    pub records: u64,
}

/// A merge's output, and what the finish step reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeDone {
    pub week: IsoWeek,
    pub records: u64,
    pub manifest: String,
    #[serde(default)]
    pub notifications_failed: usize,
}

/// Whether `payload` is a step of the state machine (tagged `"tally"`).
pub fn is_step(payload: &Value) -> bool {
    payload.get("tally").is_some()
}

/// Runs one step. `function` names the function in the metric line.
pub async fn handle_step(deps: &WeeklyDeps, payload: Value, function: &str) -> Result<Value, WeeklyError> {
    let step: Step = serde_json::from_value(payload).map_err(|e| {
        WeeklyError::BadRequest(format!(
            "{e}; expected a step of the weekly state machine: {{\"tally\":\"plan\",\"input\":{{}}}}, \
             {{\"tally\":\"part\",\"week\":\"2026-W47\",\"part\":\"3/7\"}}, {{\"tally\":\"merge\",\"week\":\"2026-W47\",\
             \"started_ms\":0}} or {{\"tally\":\"finish\",\"weeks\":[],\"more\":false}}"
        ))
    })?;
    let out = match step {
        Step::Plan { input } => to_value(&plan(deps, input).await?),
        Step::Part { week, part } => to_value(&part_step(deps, week, &part).await?),
        Step::Merge(merge) => to_value(&merge_step(deps, &merge).await?),
        Step::Finish { weeks, more } => to_value(&FinishDone { output: finish(deps, weeks, function).await, more }),
    };
    Ok(out)
}

fn to_value(v: &impl Serialize) -> Value {
    // Plain structs of strings and numbers always serialize.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Step 1: the weeks, and each one's share and merge payloads.
pub async fn plan(deps: &WeeklyDeps, input: Value) -> Result<Plan, WeeklyError> {
    let request = WeeklyRequest::from_event(input)?;
    let started_ms = deps.clock.now().as_millis();
    let planned = plan_weeks(deps, &request).await?;
    let n = deps.shares;
    let weeks = planned
        .weeks
        .iter()
        .map(|&week| PlannedWeek {
            week,
            parts: (1..=n).map(|k| Step::Part { week, part: format!("{k}/{n}") }).collect(),
            merge: Step::Merge(MergeStep {
                week,
                announce: planned.announced.contains(&week),
                refresh: planned.requested.contains(&week),
                started_ms,
            }),
        })
        .collect();
    Ok(Plan { weeks, more: planned.more(), deferred: planned.deferred.len() })
}

/// Finish's output: the run's, and whether the state machine continues.
#[derive(Debug, Serialize)]
pub struct FinishDone {
    #[serde(flatten)]
    pub output: WeeklyOutput,
    pub more: bool,
}

/// Parses `"k/n"` with `1 <= k <= n <= 28`.
pub fn parse_share(s: &str) -> Result<(u8, u8), WeeklyError> {
    let parsed =
        s.split_once('/').and_then(|(k, n)| Some((k.trim().parse::<u8>().ok()?, n.trim().parse::<u8>().ok()?)));
    match parsed {
        Some((k, n)) if 1 <= k && k <= n && n <= MAX_SHARES => Ok((k, n)),
        _ => Err(WeeklyError::BadRequest(format!(
            "\"part\" is {s:?}; expected \"k/n\" with 1 <= k <= n <= {MAX_SHARES}, e.g. \"3/7\""
        ))),
    }
}

/// Step 2: one share of a week.
async fn part_step(deps: &WeeklyDeps, week: IsoWeek, share: &str) -> Result<PartDone, WeeklyError> {
    let (k, n) = parse_share(share)?;
    let started = Instant::now();
    let written =
        summarize_part(deps.store.as_ref(), deps.sink.as_ref(), week, (k, n), &deps.options, &NoProgress).await?;
    tracing::info!(%week, share, records = written.records, duration_ms = started.elapsed().as_millis() as u64, "share written");
    Ok(PartDone { week, part: share.to_owned(), records: written.records })
}

/// Step 3: one week's merge, under its lease ([`Weekly::merge`](tally_core::summary::Weekly::merge)).
async fn merge_step(deps: &WeeklyDeps, merge: &MergeStep) -> Result<MergeDone, WeeklyError> {
    let week = merge.week;
    let trigger = if merge.announce { Trigger::Scheduled } else { Trigger::Refresh };
    let plan_started = Timestamp::from_millis(merge.started_ms);
    let ran = deps.weekly().merge(week, plan_started, trigger, merge.refresh).await?;
    let done = MergeDone::from(WeekDone::from(&ran));
    tracing::info!(%week, records = done.records, "week merged");
    Ok(done)
}

impl From<WeekDone> for MergeDone {
    fn from(w: WeekDone) -> Self {
        Self { week: w.week, records: w.records, manifest: w.manifest, notifications_failed: w.notifications_failed }
    }
}

/// Step 4: the retention and the run's metric line.
async fn finish(deps: &WeeklyDeps, weeks: Vec<MergeDone>, function: &str) -> WeeklyOutput {
    let records = weeks.iter().map(|w| w.records).sum();
    let notifications_failed = weeks.iter().map(|w| w.notifications_failed).sum();
    // The execution's duration is Step Functions' to report; this line
    // counts what it wrote, like a single invocation's.
    println!("{}", emf_line(function, records, weeks.len(), 0, false, Timestamp::now()));
    let report = deps.prune_after_run().await;
    tracing::info!(weeks = weeks.len(), records, "weekly run finished");
    WeeklyOutput {
        weeks: weeks
            .into_iter()
            .map(|w| WeekDone {
                week: w.week,
                records: w.records,
                manifest: w.manifest,
                notifications_failed: w.notifications_failed,
            })
            .collect(),
        records,
        duration_ms: 0,
        pruned: report.pruned.into_iter().map(|(week, records)| WeekPruned { week, records }).collect(),
        kept_unsummarized: report.unsummarized,
        covered: Vec::new(),
        notifications_failed,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_k_of_n_within_the_canonical_parts() {
        assert_eq!(parse_share("3/7").unwrap(), (3, 7));
        assert_eq!(parse_share("1/1").unwrap(), (1, 1));
        assert_eq!(parse_share("28/28").unwrap(), (28, 28));
        for bad in ["0/7", "8/7", "1/29", "3", "a/b", "", "3/7/1", "-1/7"] {
            let err = parse_share(bad).unwrap_err().to_string();
            assert!(err.contains("expected \"k/n\""), "{bad}: {err}");
        }
    }

    #[test]
    fn steps_parse_from_the_state_machines_payloads() {
        let w = IsoWeek::parse("2026-W47").unwrap();
        let step: Step = serde_json::from_value(serde_json::json!({"tally": "plan", "input": {}})).unwrap();
        assert_eq!(step, Step::Plan { input: serde_json::json!({}) });
        let step: Step =
            serde_json::from_value(serde_json::json!({"tally": "part", "week": "2026-W47", "part": "2/7"})).unwrap();
        assert_eq!(step, Step::Part { week: w, part: "2/7".into() });
        let merge = serde_json::json!({"tally": "merge", "week": "2026-W47", "announce": true, "started_ms": 5});
        let Step::Merge(m) = serde_json::from_value(merge).unwrap() else { panic!("not a merge") };
        assert!(m.announce && !m.refresh && m.started_ms == 5);
        // A payload round-trips: the plan writes what the steps read.
        let part = Step::Part { week: w, part: "1/1".into() };
        assert_eq!(serde_json::from_value::<Step>(serde_json::to_value(&part).unwrap()).unwrap(), part);
        for bad in [
            serde_json::json!({"tally": "shred"}),
            serde_json::json!({"tally": "part", "week": "2026-W47"}),
            serde_json::json!({"tally": "merge", "week": "2026-W47", "started_ms": 0, "extra": 1}),
        ] {
            assert!(serde_json::from_value::<Step>(bad.clone()).is_err(), "{bad}");
        }
    }
}
