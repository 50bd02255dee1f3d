//! The weekly summary: statistics, report, export and schedule.
//!
//! # Layout
//! - [`Aggregator`] (`aggregate`): streaming, mergeable statistics over a week's
//!   records, scanned straight from their raw JSON text (`scan`), with small
//!   sketches for what cannot be exact in bounded memory: KLL quantiles
//!   (`kll`), HyperLogLog distinct counts (`hll`), Misra–Gries top values
//!   (`stats`).
//! - [`Summary`] (`model`): `summary.json`, schema 4.
//! - [`compare`] (`compare`): the findings against the previous week.
//! - [`render_html`], [`render_index`] (`html`): the report site — each week's
//!   `summary.html` and the bucket's `summaries/index.html` (askama templates).
//! - [`summarize_week`] and friends (`service`): the one code path used by
//!   `tally summarize`, the in-process schedule and the weekly Lambda: read
//!   the week page by page, write `records.ndjson.gz`, `summary.json`,
//!   `summary.html`, then `manifest.json` last through the [`SummarySink`](crate::SummarySink) port.
//! - [`Part`], [`PartState`], [`WeekFold`] (`state`): a week cut into 28
//!   canonical parts whose states fold in one fixed order, so threads,
//!   `--part K/N` runs merged with `--merge`, and Lambdas all give the same
//!   bytes (the design and the state format are in that module's docs).
//! - [`notify`]: after a run, announce the week's report to the configured
//!   [`Notifier`](crate::ports::Notifier)s; [`Notification`] (`notification`)
//!   is the message, `{"week","records","warnings","findings","report","text"}`.
//! - [`locked_run`] and [`WeekRun`] (`locked`): a run under its week's
//!   [`WeekLock`](crate::ports::WeekLock), fenced and renewed, so two runs of
//!   one week never interleave, whichever triggers start them.
//! - [`WeeklySchedule`] (`schedule`): when the next run is due (pure logic; the
//!   binaries own the loop).

mod aggregate;
mod compare;
pub mod fanout;
mod fmt;
mod hll;
mod html;
mod kll;
pub mod locked;
mod model;
mod notification;
pub mod notify;
pub mod plan;
mod scan;
mod schedule;
mod service;
mod state;
mod stats;
pub mod weekly;

pub use aggregate::{
    Aggregator, MergeError, PartRecount, RecountMismatch, SEGMENT_VALUES_EXACT, SEGMENTS_LISTED, SEGMENTS_TRACKED,
    SegmentRecount,
};
pub use compare::{InvalidThresholds, MIN_EXPECTED, Thresholds, Z_SIGNIFICANT, compare};
pub use html::{IndexWeek, Nav, TREND_FIELDS, TREND_WEEKS, render_html, render_index};
pub use locked::{LockError, LockSettings, LockedError, OnBusy, RunError, WeekRun, locked_run};
pub use model::{
    ArraySummary, BooleanSummary, Comparison, DayCount, FieldSummary, Finding, FindingKind, Histogram, Limits,
    NumberSummary, OTHER_PATH, SCHEMA_VERSION, Segment, Segments, Severity, StringSummary, Summary, TopValue,
    TypeCounts,
};
pub use notification::{DIGEST_WARNINGS, Notification, PreviousWeek};
pub use schedule::{DEFAULT_SCHEDULE, InvalidSchedule, WeeklySchedule};
pub use service::{
    INDEX_HTML, MANIFEST_JSON, Manifest, NoProgress, PartSource, Progress, RECORDS_NDJSON_GZ, SUMMARY_HTML,
    SUMMARY_JSON, SummarizeError, WeekReport, catch_up, ensure_not_pruned, is_summarized, pending_weeks, read_summary,
    summarize_merged, summarize_parts, summarize_week, summarize_weeks, write_index,
};
pub use state::{
    PARTS, Part, PartHeader, PartState, STATE_FORMAT, StateError, StateOptions, WeekFold, check_header, check_parts,
    read_header,
};
pub use weekly::{
    Ran, RefreshOutcome, RefreshRequest, Request, RunOutcome, Trigger, Weekly, WeeklyError, WeeklySettings, in_task,
};

/// How a summary is computed and written. The defaults are the issue's.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryOptions {
    /// Deepest nested-object level reported as its own path (top level is 1).
    pub max_depth: u8,
    /// Paths tracked individually; values at further paths go to `_other`.
    pub max_paths: usize,
    /// Top values reported per string field.
    pub top_values: usize,
    /// Distinct values per string field counted exactly before switching to
    /// sketches (HyperLogLog for distinct, Misra–Gries for top values).
    pub exact_distinct_limit: usize,
    /// Records per store page: the unit of memory for the run.
    pub page_size: usize,
    /// gzip level (0–9) for `records.ndjson.gz`. The default, 1, compresses
    /// typical records ~4.4x at ~1.8x the speed of level 3 (6.6x) and ~3.7x
    /// that of level 6 (7.3x): the export is an archive for other tools,
    /// where the extra bytes cost cents, while gzip was the longest stage of
    /// a run and is billed as Lambda time (docs/BENCHMARKS.md).
    pub gzip_level: u32,
    /// Compressed bytes buffered before a chunk is handed to the upload.
    pub upload_chunk_bytes: usize,
    /// When the findings against the previous week fire.
    pub thresholds: Thresholds,
    /// A top-level field whose string values also get a summary each
    /// (`--segment-by`); `None` for no segments.
    pub segment_by: Option<String>,
    /// Canonical parts read, aggregated and compressed at once, each with
    /// threads of its own (`--threads`; default [`available_threads`]).
    /// Changes no output byte; memory grows with it (one part aggregator, a
    /// few pages and a compressed chunk or two of a part waiting for its
    /// turn, per thread), not with the size of the week.
    pub threads: usize,
    /// `Some(now)`: a partial run of a week that has not ended, as of `now`
    /// (`tally summarize --partial`): its manifest says `"partial": true`,
    /// days not yet over raise no `quiet_day`, and the scheduled run after
    /// the week ends replaces it. `None`: the week must have ended, or the
    /// run is refused ([`SummarizeError::NotEnded`]).
    pub partial_until: Option<crate::clock::Timestamp>,
}

/// The default for [`SummaryOptions::threads`]: half the cores this process
/// may use, rounded up (1 on 1 or 2 cores, 2 on 3 or 4, ...).
///
/// One part in flight is already three threads (its store reader, its scan
/// thread, its gzip thread) that keep about 1.65 cores busy between them, so
/// a part per core only adds switching: on 2 cores, 1M records, `--threads 2`
/// took the same wall time as `--threads 1` (1.57 s against 1.58 s, six
/// alternated runs) for 9 % more CPU (2.84 against 2.61 CPU-seconds) and
/// 14 MB more memory (docs/BENCHMARKS.md, issue 25).
pub fn available_threads() -> usize {
    parts_in_flight(std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
}

/// Parts in flight for `cores` cores: one per two cores, at least one.
fn parts_in_flight(cores: usize) -> usize {
    cores.div_ceil(2).max(1)
}

impl SummaryOptions {
    /// These options for a rewrite of `week` at `now` (after an erasure or an
    /// import): a week not yet over can only hold a `--partial` summary, and
    /// its rewrite stays partial.
    pub fn for_rewrite(&self, week: crate::week::IsoWeek, now: crate::clock::Timestamp) -> Self {
        Self { partial_until: (week.end() > now).then_some(now), ..self.clone() }
    }
}

impl Default for SummaryOptions {
    fn default() -> Self {
        Self {
            max_depth: 4,
            max_paths: 1000,
            top_values: 10,
            exact_distinct_limit: 10_000,
            page_size: 1000,
            gzip_level: 1,
            upload_chunk_bytes: 1 << 20,
            thresholds: Thresholds::default(),
            segment_by: None,
            threads: available_threads(),
            partial_until: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parts_in_flight;

    #[test]
    fn the_default_thread_count_gives_each_part_in_flight_two_cores() {
        let by_cores: Vec<usize> = (0..=8).map(parts_in_flight).collect();
        assert_eq!(by_cores, [1, 1, 1, 2, 2, 3, 3, 4, 4]);
    }
}
