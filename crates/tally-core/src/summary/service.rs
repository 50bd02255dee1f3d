//! The summarize service: one week from the store to the bucket.
//!
//! Used unchanged by `tally summarize`, the schedule in `tally serve` and the
//! weekly Lambda. The week is read as its 28 canonical parts (`state`), up
//! to [`SummaryOptions::threads`] at once: each part's id range is read from
//! the store while a thread of its own aggregates the pages and formats their
//! export lines, and a second thread gzips those lines into the part's gzip
//! member (see [`aggregate_parts`]). The
//! parts are handed over in canonical order: the export is the members
//! concatenated (still one valid `.gz`), the statistics the fold of the part
//! aggregators — so the bytes are the same for every thread count, and the
//! same as `--part K/N` states merged by [`summarize_merged`]. The threads are
//! plain OS threads (the work is CPU-bound), joined without blocking the
//! caller's async runtime.
//!
//! # Commit protocol
//! 1. [`SummarySink::begin_week`] removes the manifest: from here on readers
//!    treat the week as not produced.
//! 2. `records.ndjson.gz` is streamed ([`SummarySink::open_object`]); on any
//!    error the upload is aborted, leaving nothing.
//! 3. `summary.json` and `summary.html` are put whole (atomic per object).
//! 4. `manifest.json` is written last ([`SummarySink::commit_week`]).
//!
//! A failure anywhere leaves no manifest; a rerun rewrites every object with
//! the same bytes and commits, so runs converge.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use flate2::{Compression, GzBuilder};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::SummaryOptions;
use super::aggregate::{Aggregator, PartRecount};
use super::compare::compare;
use super::html::{IndexWeek, Nav, TREND_WEEKS, render_html, render_index};
use super::model::{Comparison, Summary};
use super::state::{Part, PartState, StateError, WeekFold};
use crate::Record;
use crate::clock::{Clock, Timestamp};
use crate::ports::{BoxError, ObjectInfo, ObjectUpload, RecordStore, SinkError, StoreError, SummarySink};
use crate::week::IsoWeek;

pub const SUMMARY_JSON: &str = "summary.json";
pub const SUMMARY_HTML: &str = "summary.html";
pub const RECORDS_NDJSON_GZ: &str = "records.ndjson.gz";
pub const MANIFEST_JSON: &str = "manifest.json";
/// `summaries/index.html`: every summarized week, beside the week folders.
pub const INDEX_HTML: &str = "index.html";

/// Why a run failed. Each variant names the week and the step.
#[derive(Debug, thiserror::Error)]
pub enum SummarizeError {
    #[error("could not read the records of {week}")]
    ReadRecords {
        week: IsoWeek,
        #[source]
        source: StoreError,
    },
    #[error("could not list the weeks that have records")]
    ListWeeks {
        #[source]
        source: StoreError,
    },
    #[error("could not list the weeks already summarized")]
    ListSummaries {
        #[source]
        source: SinkError,
    },
    #[error("could not write {object} of {week}")]
    Write {
        week: IsoWeek,
        object: &'static str,
        #[source]
        source: SinkError,
    },
    #[error("the part states of {week} do not make a week")]
    State {
        week: IsoWeek,
        #[source]
        source: StateError,
    },
    /// The second read of the week's records for its segments' statistics
    /// failed, or did not match the first (see [`SegmentRecount`](super::SegmentRecount)).
    #[error(
        "could not read the records of {week} a second time for the statistics of its segments; nothing was committed: run the week again"
    )]
    Recount {
        week: IsoWeek,
        #[source]
        source: BoxError,
    },
    #[error("could not write the state of {part} of {week}")]
    PartState {
        week: IsoWeek,
        part: Part,
        #[source]
        source: BoxError,
    },
    #[error("could not encode {object} of {week}")]
    Encode {
        week: IsoWeek,
        object: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("could not read the manifest of {week}")]
    ReadManifest {
        week: IsoWeek,
        #[source]
        source: SinkError,
    },
    /// The retention deleted the week's records and kept its summary: a run
    /// would replace that summary with an empty one. See [`ensure_not_pruned`].
    #[error(
        "{week} was pruned: the retention deleted its records and kept its summary ({records} records), \
         so summarizing it again would replace that summary with an empty one; its export \
         ({week}/records.ndjson.gz) is the record of the week. To rebuild it anyway, restore the \
         records first: `tally import <that export>`, then run again"
    )]
    Pruned { week: IsoWeek, records: u64 },
    /// The week has not ended: a run now would mark it complete. See
    /// [`SummaryOptions::partial_until`](super::SummaryOptions::partial_until).
    #[error(
        "{week} has not ended: it ends at {ends} (Monday 00:00 UTC), and summarizing it now would mark an \
         unfinished week complete. Run it after that, or pass --partial to summarize what it holds so far \
         (marked partial; the scheduled run after the week ends replaces it)"
    )]
    NotEnded { week: IsoWeek, ends: String },
}

impl SummarizeError {
    /// The week the failure concerns, if any.
    pub fn week(&self) -> Option<IsoWeek> {
        match self {
            Self::ReadRecords { week, .. }
            | Self::Write { week, .. }
            | Self::Encode { week, .. }
            | Self::State { week, .. }
            | Self::Recount { week, .. }
            | Self::PartState { week, .. }
            | Self::ReadManifest { week, .. }
            | Self::Pruned { week, .. }
            | Self::NotEnded { week, .. } => Some(*week),
            Self::ListWeeks { .. } | Self::ListSummaries { .. } => None,
        }
    }
}

/// `manifest.json`: the commit marker, listing every object of the week.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u32,
    pub week: IsoWeek,
    pub records: u64,
    pub tally_version: String,
    pub generated_at: Timestamp,
    /// Sorted by key.
    pub objects: Vec<ObjectInfo>,
    /// Schema 2: the week's findings of severity `warn` (absent in
    /// manifests written before findings existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<u64>,
    /// `true` for a partial run of a week not yet over (`--partial`), which
    /// the scheduled run after the week ends replaces; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<bool>,
}

/// What a successful run wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct WeekReport {
    pub week: IsoWeek,
    pub records: u64,
    /// Bytes of record JSON summarized.
    pub bytes: u64,
    /// The objects listed in the manifest, sorted by key.
    pub objects: Vec<ObjectInfo>,
    pub manifest: ObjectInfo,
    /// What changed since the previous summarized week (`None` when there
    /// is none): what notifications announce.
    pub comparison: Option<Comparison>,
}

/// Hooks for progress display: an indicatif bar or log lines in the CLI, logs
/// in the Lambda. Every method defaults to doing nothing.
pub trait Progress: Send + Sync {
    fn week_started(&self, _week: IsoWeek) {}
    /// Called after each page with the records read so far this week.
    fn records_read(&self, _week: IsoWeek, _records: u64) {}
    fn week_finished(&self, _report: &WeekReport) {}
    fn week_failed(&self, _week: IsoWeek, _error: &SummarizeError) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Summarizes `week` into `sink`: `records.ndjson.gz`, `summary.json`,
/// `summary.html`, then `manifest.json` (see the module docs for the commit
/// protocol). `clock` supplies the manifest's `generated_at`, the only
/// output that differs between reruns.
///
/// ```no_run
/// # async fn run(store: &dyn tally_core::RecordStore, sink: &dyn tally_core::SummarySink) -> Result<(), Box<dyn std::error::Error>> {
/// use tally_core::summary::{summarize_week, NoProgress, SummaryOptions};
/// use tally_core::{IsoWeek, SystemClock};
/// let week = IsoWeek::parse("2026-W47")?;
/// let report = summarize_week(store, sink, &SystemClock, week, &SummaryOptions::default(), &NoProgress).await?;
/// println!("{}: {} records", report.week, report.records);
/// # Ok(()) }
/// ```
pub async fn summarize_week(
    store: &dyn RecordStore,
    sink: &dyn SummarySink,
    clock: &dyn Clock,
    week: IsoWeek,
    options: &SummaryOptions,
    progress: &dyn Progress,
) -> Result<WeekReport, SummarizeError> {
    progress.week_started(week);
    let result = run(store, sink, clock, week, options, progress).await;
    match &result {
        Ok(report) => progress.week_finished(report),
        Err(e) => progress.week_failed(week, e),
    }
    result
}

/// Aggregates `parts` of `week` (`tally summarize --part K/N`) on
/// `options.threads` threads and hands each part's encoded [`PartState`] to
/// `out`, in canonical order, one at a time. Writes nothing to any sink.
/// Returns the records read.
pub async fn summarize_parts(
    store: &dyn RecordStore,
    week: IsoWeek,
    options: &SummaryOptions,
    parts: impl IntoIterator<Item = Part>,
    progress: &dyn Progress,
    out: &mut (dyn FnMut(Part, Vec<u8>) -> Result<(), BoxError> + Send),
) -> Result<u64, SummarizeError> {
    let mut parts: Vec<Part> = parts.into_iter().collect();
    parts.sort_unstable();
    parts.dedup();
    let mut writer = StateWriter { week, options, export: Vec::new(), records: 0, out };
    aggregate_parts(store, week, options, parts, progress, &mut writer).await?;
    Ok(writer.records)
}

/// Where [`summarize_merged`] gets each part's state: files, S3 objects…
#[async_trait]
pub trait PartSource: Send {
    /// The state of `part` of the week (decoded with [`PartState::from_bytes`]).
    async fn load(&mut self, part: Part) -> Result<PartState, StateError>;
}

/// Writes `week`'s four objects and manifest from the states of its 28
/// parts, exactly as [`summarize_week`] would from the store: the same
/// bytes. Check the states with [`check_parts`](super::check_parts) first:
/// a state that turns out missing or bad here fails the run after the
/// manifest was removed (a rerun converges, as for any failed run).
pub async fn summarize_merged(
    sink: &dyn SummarySink,
    clock: &dyn Clock,
    week: IsoWeek,
    options: &SummaryOptions,
    source: &mut dyn PartSource,
    progress: &dyn Progress,
) -> Result<WeekReport, SummarizeError> {
    progress.week_started(week);
    let result = merge(sink, clock, week, options, source, progress).await;
    match &result {
        Ok(report) => progress.week_finished(report),
        Err(e) => progress.week_failed(week, e),
    }
    result
}

async fn merge(
    sink: &dyn SummarySink,
    clock: &dyn Clock,
    week: IsoWeek,
    options: &SummaryOptions,
    source: &mut dyn PartSource,
    progress: &dyn Progress,
) -> Result<WeekReport, SummarizeError> {
    ensure_ended(week, clock, options)?;
    let write_err = |object| move |source| SummarizeError::Write { week, object, source };
    sink.begin_week(week).await.map_err(write_err(MANIFEST_JSON))?;
    let mut upload =
        sink.open_object(week, RECORDS_NDJSON_GZ, "application/gzip").await.map_err(write_err(RECORDS_NDJSON_GZ))?;
    let mut writer = WeekWriter::new(week, upload.as_mut());
    let aggregated = match feed_states(week, source, progress, &mut writer).await {
        Ok(()) => writer.finish(options).await,
        Err(e) => Err(e),
    };
    let aggregated = match aggregated {
        Ok(aggregator) => recount_segments(week, aggregator, &mut StateRecords { week, source }).await,
        Err(e) => Err(e),
    };
    let aggregator = match aggregated {
        Ok(aggregator) => aggregator,
        Err(e) => {
            let _ = upload.abort().await;
            return Err(e);
        }
    };
    let records_info = upload.finish().await.map_err(write_err(RECORDS_NDJSON_GZ))?;
    publish(sink, clock, week, options, aggregator, records_info).await
}

/// Hands every part's state from `source` to `writer`, in canonical order.
async fn feed_states(
    week: IsoWeek,
    source: &mut dyn PartSource,
    progress: &dyn Progress,
    writer: &mut WeekWriter<'_>,
) -> Result<(), SummarizeError> {
    let mut records = 0;
    for part in Part::all() {
        let mut state = source.load(part).await.map_err(|source| SummarizeError::State { week, source })?;
        if state.part != part || state.week != week {
            let source = StateError::OutOfOrder { week, expected: part, got: state.part };
            return Err(SummarizeError::State { week, source });
        }
        records += state.records();
        let export = std::mem::take(&mut state.export);
        if !export.is_empty() {
            writer.chunk(part, export).await?;
        }
        writer.done(part, state.into_aggregator()).await?;
        progress.records_read(week, records);
    }
    Ok(())
}

/// Summarizes each week in order, stopping at the first failure (which names
/// its week). For backfills: `summarize_weeks(.., IsoWeek::range(from, to), ..)`.
pub async fn summarize_weeks(
    store: &dyn RecordStore,
    sink: &dyn SummarySink,
    clock: &dyn Clock,
    weeks: impl IntoIterator<Item = IsoWeek>,
    options: &SummaryOptions,
    progress: &dyn Progress,
) -> Result<Vec<WeekReport>, SummarizeError> {
    let mut reports = Vec::new();
    for week in weeks {
        reports.push(summarize_week(store, sink, clock, week, options, progress).await?);
    }
    Ok(reports)
}

/// True when `week`'s summary is complete: its manifest exists. Readers
/// trust a week's objects only then (a run in progress has removed it).
pub async fn is_summarized(sink: &dyn SummarySink, week: IsoWeek) -> Result<bool, SinkError> {
    Ok(sink.read_object(week, MANIFEST_JSON).await?.is_some())
}

/// Refuses ([`SummarizeError::Pruned`]) to summarize `week` again once the
/// retention pruned it: its manifest counts records, but the store no longer
/// knows the week (a week's marker goes only with `delete_week`; erasing
/// every record keeps it). Every run checks this before it removes anything,
/// whatever started it: the schedule, a refresh request, an operator's
/// `tally summarize`, a share of a fanned-out run. A week summarized empty,
/// or whose manifest is unreadable, may run again.
pub async fn ensure_not_pruned(
    store: &dyn RecordStore,
    sink: &dyn SummarySink,
    week: IsoWeek,
) -> Result<(), SummarizeError> {
    let manifest =
        sink.read_object(week, MANIFEST_JSON).await.map_err(|source| SummarizeError::ReadManifest { week, source })?;
    let records = match manifest.map(|bytes| serde_json::from_slice::<Manifest>(&bytes)) {
        Some(Ok(manifest)) if manifest.records > 0 => manifest.records,
        _ => return Ok(()),
    };
    let weeks = store.weeks().await.map_err(|source| SummarizeError::ListWeeks { source })?;
    if weeks.contains(&week) { Ok(()) } else { Err(SummarizeError::Pruned { week, records }) }
}

/// Refuses ([`SummarizeError::NotEnded`]) a run of a week that has not ended
/// by `clock`'s now, unless the options make it a partial run.
pub fn ensure_ended(week: IsoWeek, clock: &dyn Clock, options: &SummaryOptions) -> Result<(), SummarizeError> {
    if options.partial_until.is_none() && week.end() > clock.now() {
        return Err(SummarizeError::NotEnded { week, ends: week.end().to_rfc3339() });
    }
    Ok(())
}

/// `week`'s `summary.json`, if its summary is complete.
pub async fn read_summary(sink: &dyn SummarySink, week: IsoWeek) -> Result<Option<Bytes>, SinkError> {
    if !is_summarized(sink, week).await? {
        return Ok(None);
    }
    sink.read_object(week, SUMMARY_JSON).await
}

/// Weeks that hold records, ended before `now`'s week, and have no manifest:
/// the runs that were missed (or failed). Ascending.
pub async fn pending_weeks(
    store: &dyn RecordStore,
    sink: &dyn SummarySink,
    now: Timestamp,
) -> Result<Vec<IsoWeek>, SummarizeError> {
    let current = IsoWeek::containing(now);
    let done = sink.list_weeks().await.map_err(|source| SummarizeError::ListSummaries { source })?;
    let mut weeks = store.weeks().await.map_err(|source| SummarizeError::ListWeeks { source })?;
    weeks.retain(|w| *w < current && done.binary_search(w).is_err());
    weeks.sort_unstable();
    Ok(weeks)
}

/// Summarizes every [pending](pending_weeks) week, oldest first: what
/// `tally serve` does on start.
pub async fn catch_up(
    store: &dyn RecordStore,
    sink: &dyn SummarySink,
    clock: &dyn Clock,
    options: &SummaryOptions,
    progress: &dyn Progress,
) -> Result<Vec<WeekReport>, SummarizeError> {
    let weeks = pending_weeks(store, sink, clock.now()).await?;
    summarize_weeks(store, sink, clock, weeks, options, progress).await
}

async fn run(
    store: &dyn RecordStore,
    sink: &dyn SummarySink,
    clock: &dyn Clock,
    week: IsoWeek,
    options: &SummaryOptions,
    progress: &dyn Progress,
) -> Result<WeekReport, SummarizeError> {
    ensure_ended(week, clock, options)?;
    ensure_not_pruned(store, sink, week).await?;
    let write_err = |object| move |source| SummarizeError::Write { week, object, source };
    sink.begin_week(week).await.map_err(write_err(MANIFEST_JSON))?;
    let mut upload =
        sink.open_object(week, RECORDS_NDJSON_GZ, "application/gzip").await.map_err(write_err(RECORDS_NDJSON_GZ))?;
    let mut writer = WeekWriter::new(week, upload.as_mut());
    let parts = Part::all().collect();
    let aggregated = match aggregate_parts(store, week, options, parts, progress, &mut writer).await {
        Ok(()) => writer.finish(options).await,
        Err(e) => Err(e),
    };
    let aggregated = match aggregated {
        Ok(aggregator) => {
            let page_size = options.page_size.max(1);
            recount_segments(week, aggregator, &mut StoreRecords { store, week, page_size }).await
        }
        Err(e) => Err(e),
    };
    let aggregator = match aggregated {
        Ok(aggregator) => aggregator,
        Err(e) => {
            // The run has already failed; a failed abort cannot leave more
            // than the sink's own temp object, which it cleans up on drop.
            let _ = upload.abort().await;
            return Err(e);
        }
    };
    let records_info = upload.finish().await.map_err(write_err(RECORDS_NDJSON_GZ))?;
    publish(sink, clock, week, options, aggregator, records_info).await
}

/// Writes `summary.json`, `summary.html` and the manifest from the week's
/// aggregator, once `records.ndjson.gz` is written; then the index.
async fn publish(
    sink: &dyn SummarySink,
    clock: &dyn Clock,
    week: IsoWeek,
    options: &SummaryOptions,
    aggregator: Aggregator,
    records_info: ObjectInfo,
) -> Result<WeekReport, SummarizeError> {
    let write_err = |object| move |source| SummarizeError::Write { week, object, source };
    let encode_err = |object| move |source| SummarizeError::Encode { week, object, source };
    let mut summary = aggregator.finish();
    let done = sink.list_weeks().await.map_err(|source| SummarizeError::ListSummaries { source })?;
    let nav = Nav {
        previous: done.iter().rev().find(|w| **w < week).copied(),
        next: done.iter().find(|w| **w > week).copied(),
    };
    let previous = match nav.previous {
        Some(p) => load_summary(sink, week, p).await?,
        None => None,
    };
    summary.comparison = previous.as_ref().map(|p| compare(p, &summary, &options.thresholds));
    if let (Some(until), Some(comparison)) = (options.partial_until, summary.comparison.as_mut()) {
        // A partial run: a day not yet over is not quiet, only unfinished.
        let today = until.to_rfc3339();
        let today = today.get(..10).unwrap_or_default();
        comparison
            .findings
            .retain(|f| f.kind != super::FindingKind::QuietDay || f.current.as_str().is_some_and(|day| day < today));
    }
    let json =
        summary.to_json().map_err(|e| SummarizeError::Encode { week, object: SUMMARY_JSON, source: e.into() })?;
    let html = render_html(&summary, previous.as_ref(), nav);
    let json_info = sink
        .put_object(week, SUMMARY_JSON, "application/json", Bytes::from(json))
        .await
        .map_err(write_err(SUMMARY_JSON))?;
    let html_info = sink
        .put_object(week, SUMMARY_HTML, "text/html; charset=utf-8", Bytes::from(html))
        .await
        .map_err(write_err(SUMMARY_HTML))?;

    let mut objects = vec![records_info, json_info, html_info];
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    let manifest = Manifest {
        schema: super::SCHEMA_VERSION,
        week,
        records: summary.records,
        tally_version: crate::VERSION.to_owned(),
        generated_at: clock.now(),
        objects: objects.clone(),
        warnings: Some(summary.comparison.as_ref().map_or(0, |c| c.warnings() as u64)),
        partial: options.partial_until.map(|_| true),
    };
    let mut manifest_bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| encode_err(MANIFEST_JSON)(e.into()))?;
    manifest_bytes.push(b'\n');
    let manifest_info = sink.commit_week(week, Bytes::from(manifest_bytes)).await.map_err(write_err(MANIFEST_JSON))?;
    // The week is complete; the index is a convenience the next run rewrites.
    if let Err(e) = write_index(sink).await {
        tracing::warn!(%week, error = %crate::error_chain(&e), "could not rewrite summaries/index.html; the week's report is complete, and the next run rewrites the index");
    }
    Ok(WeekReport {
        week,
        records: summary.records,
        bytes: summary.bytes,
        objects,
        manifest: manifest_info,
        comparison: summary.comparison.clone(),
    })
}

/// The summary of `previous`, a week with a manifest. An unreadable one
/// (not tally's JSON) is skipped with a warning: it must not stop `week`'s
/// report, which then has no comparison.
async fn load_summary(
    sink: &dyn SummarySink,
    week: IsoWeek,
    previous: IsoWeek,
) -> Result<Option<Summary>, SummarizeError> {
    let Some(bytes) = read_summary(sink, previous).await.map_err(|source| SummarizeError::ListSummaries { source })?
    else {
        return Ok(None);
    };
    match serde_json::from_slice::<Summary>(&bytes) {
        Ok(summary) => Ok(Some(summary)),
        Err(e) => {
            tracing::warn!(%week, %previous, error = %crate::error_chain(&e), "the previous week's summary.json is unreadable; this week has no comparison (re-run `tally summarize --week {previous}` to rewrite it)");
            Ok(None)
        }
    }
}

/// Rewrites `summaries/index.html` from the bucket: every week's manifest
/// (records, warnings) and the summaries of the latest [`TREND_WEEKS`].
/// Weeks whose objects cannot be parsed are listed from what can be read.
pub async fn write_index(sink: &dyn SummarySink) -> Result<ObjectInfo, SinkError> {
    let weeks = sink.list_weeks().await?;
    let mut rows = Vec::with_capacity(weeks.len());
    for &week in &weeks {
        let manifest = sink.read_object(week, MANIFEST_JSON).await?;
        let Some(manifest) = manifest.and_then(|m| serde_json::from_slice::<Manifest>(&m).ok()) else { continue };
        rows.push(IndexWeek { week, records: manifest.records, warnings: manifest.warnings });
    }
    let mut recent = Vec::new();
    for &week in weeks.iter().rev().take(TREND_WEEKS) {
        if let Some(summary) = read_summary(sink, week).await?.and_then(|b| serde_json::from_slice::<Summary>(&b).ok())
        {
            recent.push(summary);
        }
    }
    let html = render_index(&rows, &recent);
    sink.put_index(INDEX_HTML, "text/html; charset=utf-8", Bytes::from(html)).await
}

/// How many pages may wait between a part's reader and its thread: enough
/// to keep the thread busy while the store reads ahead, few enough that
/// memory stays a few pages per part.
const PAGES_IN_FLIGHT: usize = 2;

/// Where the parts of [`aggregate_parts`] go, in canonical order: each
/// part's export chunks, then its aggregator.
#[async_trait]
trait PartOutput: Send {
    async fn chunk(&mut self, part: Part, bytes: Vec<u8>) -> Result<(), SummarizeError>;
    async fn done(&mut self, part: Part, aggregator: Aggregator) -> Result<(), SummarizeError>;
}

/// A week's run: the export streamed to the upload, the parts folded.
struct WeekWriter<'a> {
    week: IsoWeek,
    upload: &'a mut dyn ObjectUpload,
    fold: WeekFold,
    written: u64,
}

impl<'a> WeekWriter<'a> {
    fn new(week: IsoWeek, upload: &'a mut dyn ObjectUpload) -> Self {
        Self { week, upload, fold: WeekFold::new(week), written: 0 }
    }

    /// The week's aggregator, once every part is in. A week without records
    /// still gets a valid (empty) `.gz`: one empty member.
    async fn finish(self, options: &SummaryOptions) -> Result<Aggregator, SummarizeError> {
        let week = self.week;
        if self.written == 0 {
            let empty = GzBuilder::new()
                .write(Vec::new(), Compression::new(options.gzip_level.min(9)))
                .finish()
                .map_err(|source| SummarizeError::Encode { week, object: RECORDS_NDJSON_GZ, source })?;
            self.upload.write(Bytes::from(empty)).await.map_err(|source| SummarizeError::Write {
                week,
                object: RECORDS_NDJSON_GZ,
                source,
            })?;
        }
        self.fold.finish().map_err(|source| SummarizeError::State { week, source })
    }
}

#[async_trait]
impl PartOutput for WeekWriter<'_> {
    async fn chunk(&mut self, _part: Part, bytes: Vec<u8>) -> Result<(), SummarizeError> {
        self.written += bytes.len() as u64;
        let week = self.week;
        self.upload.write(Bytes::from(bytes)).await.map_err(|source| SummarizeError::Write {
            week,
            object: RECORDS_NDJSON_GZ,
            source,
        })
    }

    async fn done(&mut self, part: Part, aggregator: Aggregator) -> Result<(), SummarizeError> {
        self.fold.push(part, aggregator).map_err(|source| SummarizeError::State { week: self.week, source })
    }
}

/// `--part`: each part's state, encoded, handed to `out`.
struct StateWriter<'a> {
    week: IsoWeek,
    options: &'a SummaryOptions,
    export: Vec<u8>,
    records: u64,
    out: &'a mut (dyn FnMut(Part, Vec<u8>) -> Result<(), BoxError> + Send),
}

#[async_trait]
impl PartOutput for StateWriter<'_> {
    async fn chunk(&mut self, _part: Part, bytes: Vec<u8>) -> Result<(), SummarizeError> {
        self.export.extend_from_slice(&bytes);
        Ok(())
    }

    async fn done(&mut self, part: Part, aggregator: Aggregator) -> Result<(), SummarizeError> {
        self.records += aggregator.records();
        let export = std::mem::take(&mut self.export);
        let bytes = PartState::new(self.week, part, aggregator, export).to_bytes(self.options);
        (self.out)(part, bytes).map_err(|source| SummarizeError::PartState { week: self.week, part, source })
    }
}

/// One canonical part on its way: its gzip stage's chunks, and its two
/// threads.
struct PartRun {
    part: Part,
    chunks: mpsc::Receiver<Vec<u8>>,
    scan: Worker<Aggregator>,
    gzip: Worker<()>,
}

impl PartRun {
    /// The part's aggregator, once both of its threads have ended.
    async fn join(self) -> std::io::Result<Aggregator> {
        let aggregator = self.scan.join().await;
        let gzip = self.gzip.join().await;
        let aggregator = aggregator?;
        gzip?;
        Ok(aggregator)
    }
}

/// Reads, aggregates and compresses `parts` of `week`, up to
/// `options.threads` at once, and hands them to `output` in canonical order.
///
/// Each part in flight is a three-stage pipeline: a reader (a future here,
/// reading its id range from the store), a scan thread that folds each page
/// into the part's aggregator and formats its export lines, and a gzip
/// thread that compresses those lines into the part's own gzip member — so
/// even one part in flight keeps two cores busy, as the single pipeline of
/// 0.1 did. The oldest part streams its chunks straight to `output`; a part
/// ahead of it keeps at most [`CHUNKS_WAITING`] compressed chunks and then
/// waits for its turn, which is what bounds memory: at most `threads + 1`
/// parts, each one aggregator, a few pages and text blocks and a chunk or
/// two of compressed export, whatever the size of the week. `threads` parts
/// are read at once, and at most `threads + 1` are in flight.
async fn aggregate_parts(
    store: &dyn RecordStore,
    week: IsoWeek,
    options: &SummaryOptions,
    parts: Vec<Part>,
    progress: &dyn Progress,
    output: &mut dyn PartOutput,
) -> Result<(), SummarizeError> {
    let encode_err = |source| SummarizeError::Encode { week, object: RECORDS_NDJSON_GZ, source };
    let threads = options.threads.max(1);
    let read = AtomicU64::new(0);
    let mut pending = parts.into_iter();
    let mut queue: VecDeque<PartRun> = VecDeque::new();
    let mut reads = FuturesUnordered::new();
    loop {
        // `threads` parts are read at once; one more may start while the
        // oldest drains its last pages, so a part boundary leaves no core
        // idle.
        while reads.len() < threads && queue.len() <= threads {
            let Some(part) = pending.next() else { break };
            let (run, reader) = start_part(store, week, options, part, progress, &read).map_err(encode_err)?;
            queue.push_back(run);
            reads.push(reader);
        }
        let Some(head) = queue.front_mut() else { break };
        tokio::select! {
            biased;
            chunk = head.chunks.recv() => match chunk {
                Some(bytes) => output.chunk(head.part, bytes).await?,
                None => {
                    let head = queue.pop_front().expect("the head is in the queue");
                    let part = head.part;
                    let aggregator = head.join().await.map_err(encode_err)?;
                    output.done(part, aggregator).await?;
                }
            },
            Some(result) = reads.next(), if !reads.is_empty() => result?,
        }
    }
    while let Some(result) = reads.next().await {
        result?;
    }
    Ok(())
}

type Reader<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SummarizeError>> + Send + 'a>>;

/// Export text handed from a part's scan thread to its gzip thread at a
/// time: large enough that the hand-over costs nothing next to compressing
/// it, small enough that the two threads overlap.
const TEXT_BLOCK: usize = 128 << 10;

/// Text blocks that may wait for a part's gzip thread.
const TEXT_BLOCKS_IN_FLIGHT: usize = 2;

/// Compressed chunks (of [`SummaryOptions::upload_chunk_bytes`]) that may
/// wait for their turn, per part: a part ahead of the oldest stops (its gzip
/// thread blocks, then its scan thread and its reader) once it holds this
/// many and one more being filled, so memory stays the same whatever the
/// size of the week's parts; the oldest part's chunks wait for the upload
/// the same way. One is enough: a part's pipeline alone keeps two cores
/// busy (docs/BENCHMARKS.md, issue 25: 4M records 52-55 MB with 1 chunk,
/// 61-65 MB with 4, 58-67 MB unbounded).
const CHUNKS_WAITING: usize = 1;

/// Starts `part`'s scan and gzip threads and returns its reader, which the
/// caller polls.
fn start_part<'a>(
    store: &'a dyn RecordStore,
    week: IsoWeek,
    options: &SummaryOptions,
    part: Part,
    progress: &'a dyn Progress,
    read: &'a AtomicU64,
) -> std::io::Result<(PartRun, Reader<'a>)> {
    let (page_tx, mut page_rx) = mpsc::channel::<Page>(PAGES_IN_FLIGHT);
    let (text_tx, text_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(TEXT_BLOCKS_IN_FLIGHT);
    let (chunk_tx, chunks) = mpsc::channel::<Vec<u8>>(CHUNKS_WAITING);
    let (chunk, level) = (options.upload_chunk_bytes.max(1), options.gzip_level.min(9));
    let mut aggregator = Aggregator::new(week, options);
    let scan = Worker::spawn(&format!("tally-scan-{}", part.index()), move || {
        let mut line = String::new();
        let mut text = Vec::with_capacity(TEXT_BLOCK + TEXT_BLOCK / 4);
        'pages: while let Some(page) = page_rx.blocking_recv() {
            for record in &page {
                let is_json = aggregator.push(record);
                line.clear();
                record.write_export_line(&mut line, is_json);
                line.push('\n');
                text.extend_from_slice(line.as_bytes());
                if text.len() >= TEXT_BLOCK {
                    let full = std::mem::replace(&mut text, Vec::with_capacity(TEXT_BLOCK + TEXT_BLOCK / 4));
                    if text_tx.send(full).is_err() {
                        break 'pages; // the gzip thread stopped on an error, which its join reports
                    }
                }
            }
        }
        if !text.is_empty() {
            let _ = text_tx.send(text);
        }
        Ok(aggregator)
    })?;
    let gzip = Worker::spawn(&format!("tally-gzip-{}", part.index()), move || {
        // No file name and mtime 0 in the header: the same records give the
        // same bytes. A part without records writes no member at all.
        let mut gz = None;
        for block in text_rx {
            let gz = gz.get_or_insert_with(|| {
                GzBuilder::new().write(Vec::with_capacity(chunk + chunk / 8), Compression::new(level))
            });
            gz.write_all(&block)?;
            if gz.get_ref().len() >= chunk {
                let full = std::mem::replace(gz.get_mut(), Vec::with_capacity(chunk + chunk / 8));
                if chunk_tx.blocking_send(full).is_err() {
                    return Ok(()); // the run stopped on an error, which it reports
                }
            }
        }
        if let Some(gz) = gz {
            let rest = gz.finish()?;
            if !rest.is_empty() {
                let _ = chunk_tx.blocking_send(rest);
            }
        }
        Ok(())
    })?;
    let (from, to) = part.range(week);
    let page_size = options.page_size.max(1);
    let reader = async move {
        let mut pages = store.scan_range(from, to, page_size);
        while let Some(page) = pages.next().await {
            let page = page.map_err(|source| SummarizeError::ReadRecords { week, source })?;
            let n = page.len() as u64;
            // A send fails only when the thread has stopped on an error,
            // which its join reports.
            if page_tx.send(page).await.is_err() {
                break;
            }
            progress.records_read(week, read.fetch_add(n, Ordering::Relaxed) + n);
        }
        Ok(())
    };
    Ok((PartRun { part, chunks, scan, gzip }, Box::pin(reader)))
}

type Page = Vec<Record>;

/// The second pass of a week whose listed segments need one (see
/// [`SegmentRecount`]): each canonical part's records again, from `records`,
/// folded in canonical order like the first pass. A week whose segment field
/// has few values (at most 32 a part) needs none.
async fn recount_segments(
    week: IsoWeek,
    mut aggregator: Aggregator,
    records: &mut dyn PartRecords,
) -> Result<Aggregator, SummarizeError> {
    let Some(mut recount) = aggregator.segment_recount() else { return Ok(aggregator) };
    for part in Part::all() {
        recount.add_part(records.recount(part, recount.part()).await?);
    }
    aggregator.apply_segment_recount(recount).map_err(|e| SummarizeError::Recount { week, source: e.into() })?;
    Ok(aggregator)
}

/// Where [`recount_segments`] reads a canonical part's records again.
#[async_trait]
trait PartRecords: Send {
    /// Feeds the part's records, in id order, to `recount` on a thread of
    /// its own (the work is CPU-bound) and hands it back.
    async fn recount(&mut self, part: Part, recount: PartRecount) -> Result<PartRecount, SummarizeError>;
}

/// A plain run's second pass: the part's id range from the store again. A
/// record added or erased in between makes the counts disagree, which
/// fails the run (nothing is committed; a rerun converges).
struct StoreRecords<'a> {
    store: &'a dyn RecordStore,
    week: IsoWeek,
    page_size: usize,
}

#[async_trait]
impl PartRecords for StoreRecords<'_> {
    async fn recount(&mut self, part: Part, mut recount: PartRecount) -> Result<PartRecount, SummarizeError> {
        let week = self.week;
        let recount_err = |e: std::io::Error| SummarizeError::Recount { week, source: e.into() };
        let (page_tx, mut page_rx) = mpsc::channel::<Page>(PAGES_IN_FLIGHT);
        let worker = Worker::spawn(&format!("tally-recount-{}", part.index()), move || {
            while let Some(page) = page_rx.blocking_recv() {
                page.iter().for_each(|r| recount.push(r));
            }
            Ok(recount)
        })
        .map_err(recount_err)?;
        let (from, to) = part.range(week);
        let mut pages = self.store.scan_range(from, to, self.page_size);
        let mut read = Ok(());
        while let Some(page) = pages.next().await {
            match page {
                // A send fails only when the thread has stopped, which its join reports.
                Ok(page) => {
                    if page_tx.send(page).await.is_err() {
                        break;
                    }
                }
                Err(source) => {
                    read = Err(SummarizeError::ReadRecords { week, source });
                    break;
                }
            }
        }
        drop(page_tx);
        let recount = worker.join().await.map_err(recount_err)?;
        read.map(|()| recount)
    }
}

/// A merge's second pass: each part state's export, decompressed and read
/// back line by line ([`Record::read_export_line`]).
struct StateRecords<'a> {
    week: IsoWeek,
    source: &'a mut dyn PartSource,
}

#[async_trait]
impl PartRecords for StateRecords<'_> {
    async fn recount(&mut self, part: Part, mut recount: PartRecount) -> Result<PartRecount, SummarizeError> {
        let week = self.week;
        let state = self.source.load(part).await.map_err(|source| SummarizeError::State { week, source })?;
        if state.part != part || state.week != week {
            let source = StateError::OutOfOrder { week, expected: part, got: state.part };
            return Err(SummarizeError::State { week, source });
        }
        let export = state.export;
        if export.is_empty() {
            return Ok(recount);
        }
        let worker = Worker::spawn(&format!("tally-recount-{}", part.index()), move || {
            let mut lines = std::io::BufRead::lines(std::io::BufReader::new(MultiGzDecoder::new(&export[..])));
            lines.try_for_each(|line| {
                let line = line?;
                let not_tallys = || std::io::Error::other(format!("{part}: a line of its export is not tally's"));
                let line = Record::read_export_line(&line).ok_or_else(not_tallys)?;
                // Only the records of recounted values are built.
                if recount.wants(&line.data) {
                    recount.push(&line.to_record().ok_or_else(not_tallys)?);
                }
                Ok::<(), std::io::Error>(())
            })?;
            Ok(recount)
        })
        .map_err(|e| SummarizeError::Recount { week, source: e.into() })?;
        worker.join().await.map_err(|e| SummarizeError::Recount { week, source: e.into() })
    }
}

/// A named OS thread for CPU-bound work, joined without blocking the async
/// caller: the result comes back on a oneshot, and a panic is re-raised here.
struct Worker<T> {
    handle: std::thread::JoinHandle<()>,
    result: oneshot::Receiver<std::io::Result<T>>,
}

impl<T: Send + 'static> Worker<T> {
    fn spawn(name: &str, work: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> std::io::Result<Self> {
        let (tx, result) = oneshot::channel();
        let handle = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            let _ = tx.send(work());
        })?;
        Ok(Self { handle, result })
    }

    async fn join(self) -> std::io::Result<T> {
        let result = self.result.await;
        // The thread has sent its result or died: either way it has ended.
        if let Err(panic) = self.handle.join() {
            std::panic::resume_unwind(panic);
        }
        result.expect("a worker that did not panic sent its result")
    }
}
