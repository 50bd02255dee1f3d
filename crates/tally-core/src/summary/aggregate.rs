//! The streaming, mergeable aggregator.
//!
//! Memory is bounded by the number of tracked paths (capped by
//! [`SummaryOptions::max_paths`]) times the per-field sketch sizes; it does not
//! grow with the number of records. Per record the hot path allocates nothing
//! once a field's paths and values have been seen: keys are looked up in a
//! per-object trie of interned path nodes, and strings are borrowed from the
//! record text.

use std::collections::{BTreeMap, HashMap};

use foldhash::fast::FixedState;
use serde::{Deserialize, Serialize};

use super::SummaryOptions;
use super::model::{
    ArraySummary, BooleanSummary, DayCount, FieldSummary, Histogram, Limits, NumberSummary, OTHER_PATH, SCHEMA_VERSION,
    StringSummary, Summary, TopValue, TypeCounts,
};
use super::model::{Segment, Segments};
use super::scan::{Cursor, Malformed, Scan, top_level_string};
use super::stats::{FieldStats, HeavyHitters, JsonType, top_key};
use crate::record::Record;
use crate::week::IsoWeek;

const HOUR_MS: i64 = 3_600_000;
const HOURS: usize = 7 * 24;
/// Keys longer than this are not tracked as paths of their own (`_other`):
/// they would make the interned-path memory depend on record contents.
const MAX_KEY_BYTES: usize = 256;
/// Bins of the per-field number histogram.
const HISTOGRAM_BINS: usize = 20;
/// `NumberSummary::quantiles` holds the values at ranks `i / QUANTILE_STEPS`.
pub(crate) const QUANTILE_STEPS: usize = 40;

/// Member positions per object whose last-seen key is remembered.
const MAX_REMEMBERED_POSITIONS: usize = 64;
/// Slot of the root object (not a field).
const ROOT: u32 = 0;
/// Slot standing for "some path past the cap": its children are `OTHER` too.
const OTHER: u32 = u32::MAX;

/// Segment values listed in `summary.json` (the most frequent ones).
pub const SEGMENTS_LISTED: usize = 20;
/// Distinct segment values whose records are counted exactly, whatever the
/// split into parts and the order of merges (counts stay exact up to a
/// quarter more, see [`HeavyHitters`]); past that, a Misra–Gries summary
/// picks the listed values, whose counts are then recounted.
pub const SEGMENT_VALUES_EXACT: usize = 10_000;
/// Segment aggregators a state holds at most (a part's, or a fold's): a
/// part gives one to each of its first 32 values, a fold keeps those that
/// still hold every record of their value, the most frequent first.
/// Listed values without one are recounted in a second pass
/// ([`SegmentRecount`]). This cap is what keeps memory bounded when the
/// field has many values.
pub const SEGMENTS_TRACKED: usize = 32;
/// Per-segment caps (tighter than the week's: there are up to
/// [`SEGMENTS_TRACKED`] of them): paths tracked and exact distinct values.
const SEGMENT_MAX_PATHS: usize = 200;
const SEGMENT_EXACT_DISTINCT: usize = 1000;

/// The segment field: records per value, and aggregators of a few values.
///
/// # Why counts and aggregators are apart
/// tally ≤ 0.3 gave each 6-hour part aggregators for its first 32 values and
/// merged only values the fold had room for: a value first seen after 32
/// others lost its records, so counts depended on where the parts were cut.
/// Now every value's records are counted in `counts`, exact up to
/// [`SEGMENT_VALUES_EXACT`] values, and merges add counts — exact for any
/// split and order. Statistics need a whole aggregator per value, which
/// does not fit in bounded memory for thousands of values: a state keeps
/// aggregators only while each holds *every* record of its value
/// (invariant: its records equal the value's count), and a listed value
/// without one is aggregated again from the week's records by
/// [`SegmentRecount`], part by part in canonical order — so a segment's
/// `fields` are always those of a week holding only that value's records,
/// whether it was recounted or not.
#[derive(Debug, Clone)]
struct SegmentState {
    /// The top-level key segmented by.
    by: String,
    options: SummaryOptions,
    /// Records per value (keyed by its first 256 bytes, as top values are).
    counts: HeavyHitters,
    /// At most [`SEGMENTS_TRACKED`] values, each with every one of its
    /// records (none once `counts` is no longer exact: that could not be
    /// checked).
    tracked: BTreeMap<Box<str>, Aggregator>,
    key_buf: String,
    value_buf: String,
}

/// A segment state's contents, in a part state.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SegmentsState {
    counts: HeavyHitters,
    /// Sorted by value.
    tracked: Vec<(String, AggregatorState)>,
}

fn segment_options(week_options: &SummaryOptions) -> SummaryOptions {
    SummaryOptions {
        max_paths: week_options.max_paths.min(SEGMENT_MAX_PATHS),
        exact_distinct_limit: week_options.exact_distinct_limit.min(SEGMENT_EXACT_DISTINCT),
        segment_by: None,
        ..week_options.clone()
    }
}

impl SegmentState {
    fn new(by: &str, week_options: &SummaryOptions) -> Self {
        Self {
            by: by.to_owned(),
            options: segment_options(week_options),
            counts: HeavyHitters::new(SEGMENT_VALUES_EXACT),
            tracked: BTreeMap::new(),
            key_buf: String::new(),
            value_buf: String::new(),
        }
    }

    fn push(&mut self, week: IsoWeek, record: &Record) {
        let mut key_buf = std::mem::take(&mut self.key_buf);
        let mut value_buf = std::mem::take(&mut self.value_buf);
        if let Some(value) = top_level_string(&record.data, &self.by, &mut key_buf, &mut value_buf) {
            let key = top_key(value);
            // A value's first record here, while every value is counted.
            let first = self.counts.is_exact() && self.counts.count(key) == 0;
            if self.counts.add(key, 1) {
                self.reduce();
            }
            if let Some(agg) = self.tracked.get_mut(key) {
                agg.push(record);
            } else if first && self.counts.is_exact() && self.tracked.len() < SEGMENTS_TRACKED {
                let mut agg = Aggregator::new(week, &self.options);
                agg.push(record);
                self.tracked.insert(key.into(), agg);
            }
        }
        self.key_buf = key_buf;
        self.value_buf = value_buf;
    }

    /// Past the exact limit: counts become lower bounds, and whether an
    /// aggregator holds all of its value's records can no longer be told.
    fn reduce(&mut self) {
        self.counts.reduce();
        self.tracked.clear();
    }

    fn merge(&mut self, other: SegmentState) {
        let SegmentState { counts: theirs, tracked: their_tracked, .. } = other;
        let mut kept = BTreeMap::new();
        if self.counts.is_exact() && theirs.is_exact() {
            // An aggregator stays whole if the other side has no record of
            // its value that no aggregator holds.
            let mut mine = std::mem::take(&mut self.tracked);
            for (value, agg) in their_tracked {
                match mine.remove(&value) {
                    Some(mut m) => {
                        // Same week by construction.
                        let _ = m.merge(agg);
                        kept.insert(value, m);
                    }
                    None if self.counts.count(&value) == 0 => {
                        kept.insert(value, agg);
                    }
                    None => {}
                }
            }
            for (value, agg) in mine {
                if theirs.count(&value) == 0 {
                    kept.insert(value, agg);
                }
            }
        }
        if self.counts.merge(&theirs) {
            self.counts.reduce();
        }
        if !self.counts.is_exact() {
            kept.clear();
        }
        if kept.len() > SEGMENTS_TRACKED {
            let mut by_count: Vec<(u64, Box<str>)> = kept.keys().map(|v| (self.counts.count(v), v.clone())).collect();
            by_count.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            for (_, value) in by_count.into_iter().skip(SEGMENTS_TRACKED) {
                kept.remove(&value);
            }
        }
        self.tracked = kept;
    }

    fn into_state(self) -> SegmentsState {
        SegmentsState {
            counts: self.counts,
            tracked: self.tracked.into_iter().map(|(value, agg)| (value.into(), agg.into_state())).collect(),
        }
    }

    fn restore(&mut self, week: IsoWeek, state: SegmentsState) -> Result<(), String> {
        state.counts.check()?;
        if state.counts.exact_limit() != SEGMENT_VALUES_EXACT {
            return Err(format!("segment values counted exactly up to {}", state.counts.exact_limit()));
        }
        if state.tracked.len() > SEGMENTS_TRACKED {
            return Err(format!("{} segments, more than the {SEGMENTS_TRACKED} tracked", state.tracked.len()));
        }
        if !state.counts.is_exact() && !state.tracked.is_empty() {
            return Err("segment aggregators past the exact limit".into());
        }
        self.counts = state.counts;
        for (value, state) in state.tracked {
            let agg = Aggregator::from_state(week, &self.options, state)?;
            if agg.records() != self.counts.count(&value) {
                return Err(format!(
                    "segment {value:?} holds {} records of {}",
                    agg.records(),
                    self.counts.count(&value)
                ));
            }
            if self.tracked.insert(value.clone().into(), agg).is_some() {
                return Err(format!("segment {value:?} twice"));
            }
        }
        Ok(())
    }

    /// The values the listing is chosen from, with their counts: the
    /// [`SEGMENTS_LISTED`] most frequent while counts are exact, else the
    /// [`SEGMENTS_TRACKED`] most frequent by the Misra–Gries estimate (each
    /// recounted, then the most frequent listed).
    fn candidates(&self) -> Vec<(&str, u64)> {
        self.counts.top(if self.counts.is_exact() { SEGMENTS_LISTED } else { SEGMENTS_TRACKED })
    }

    fn finish(mut self, records: u64) -> Segments {
        let exact = self.counts.is_exact();
        let candidates: Vec<(String, u64)> =
            self.candidates().into_iter().map(|(value, count)| (value.to_owned(), count)).collect();
        let mut values: Vec<Segment> = candidates
            .into_iter()
            .map(|(value, count)| match self.tracked.remove(value.as_str()) {
                Some(agg) => {
                    let summary = agg.finish();
                    Segment { value, records: summary.records, fields: summary.fields }
                }
                // Not recounted (an aggregator used without `SegmentRecount`).
                None => Segment { value, records: count, fields: Vec::new() },
            })
            .collect();
        values.sort_by(|a, b| b.records.cmp(&a.records).then_with(|| a.value.cmp(&b.value)));
        let mut max_unlisted_records = None;
        if !exact {
            // A candidate not listed has at most the last listed one's
            // records (both recounted); any other value at most its estimate
            // plus the summary's error.
            let others = self.counts.top(SEGMENTS_TRACKED + 1).get(SEGMENTS_TRACKED).map_or(0, |&(_, c)| c)
                + self.counts.max_error();
            let last = values.get(SEGMENTS_LISTED.min(values.len()).saturating_sub(1)).map_or(0, |s| s.records);
            if others >= last {
                let next = values.get(SEGMENTS_LISTED).map_or(0, |s| s.records);
                max_unlisted_records = Some(others.max(next));
            }
        }
        values.truncate(SEGMENTS_LISTED);
        let listed: u64 = values.iter().map(|s| s.records).sum();
        Segments { by: self.by, values, other_records: records.saturating_sub(listed), max_unlisted_records }
    }
}

/// The second pass over a week's records for listed segments whose
/// statistics no aggregator kept whole (more than [`SEGMENTS_TRACKED`]
/// values in a part or a fold), or whose counts are estimates (more than
/// [`SEGMENT_VALUES_EXACT`] values). The caller feeds each canonical part's
/// records ([`part`](Self::part), [`PartRecount::push`]) and hands the parts
/// back in canonical order ([`add_part`](Self::add_part)), then applies
/// the result ([`Aggregator::apply_segment_recount`]). Memory: one
/// aggregator per recounted value (at most [`SEGMENTS_TRACKED`]) for the
/// fold and one per value for the part in hand.
///
/// ```
/// use tally_core::summary::{Aggregator, SummaryOptions};
/// use tally_core::{IsoWeek, Record, RecordId};
///
/// let week = IsoWeek::parse("2026-W47").unwrap();
/// let options = SummaryOptions { segment_by: Some("user".into()), ..SummaryOptions::default() };
/// let at = week.start();
/// // 40 users, one record each, then a second record of user 39: more values
/// // than a part keeps aggregators for.
/// let records: Vec<Record> = (0..40)
///     .chain([39])
///     .map(|u| Record { id: RecordId::generate(at), received_at: at, data: format!(r#"{{"user":"u{u}","n":{u}}}"#) })
///     .collect();
/// let mut agg = Aggregator::new(week, &options);
/// records.iter().for_each(|r| { agg.push(r); });
/// let mut recount = agg.segment_recount().expect("u39 is listed, and has no aggregator");
/// let mut part = recount.part();
/// records.iter().for_each(|r| part.push(r));
/// recount.add_part(part);
/// agg.apply_segment_recount(recount).unwrap();
/// let top = &agg.finish().segments.unwrap().values[0];
/// assert_eq!((top.value.as_str(), top.records), ("u39", 2));
/// assert_eq!(top.fields.iter().find(|f| f.path == "n").unwrap().present, 2);
/// ```
#[derive(Debug)]
pub struct SegmentRecount {
    week: IsoWeek,
    by: String,
    options: SummaryOptions,
    /// The values recounted, with the fold of their part aggregators so far.
    folded: BTreeMap<Box<str>, Option<Aggregator>>,
}

/// One part's records of the values a [`SegmentRecount`] recounts.
#[derive(Debug)]
pub struct PartRecount {
    week: IsoWeek,
    by: String,
    options: SummaryOptions,
    aggregators: BTreeMap<Box<str>, Option<Aggregator>>,
    key_buf: String,
    value_buf: String,
}

/// A recount that does not match the first pass: the records changed in
/// between (a record added or erased while the week was summarized).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "segment {value:?} has {recounted} records on the second read of the week, {counted} on the first: the week's records changed while it was summarized"
)]
pub struct RecountMismatch {
    pub value: String,
    pub counted: u64,
    pub recounted: u64,
}

impl SegmentRecount {
    /// The values recounted, sorted.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.folded.keys().map(|k| &**k)
    }

    /// An empty recount of the next part.
    pub fn part(&self) -> PartRecount {
        PartRecount {
            week: self.week,
            by: self.by.clone(),
            options: self.options.clone(),
            aggregators: self.folded.keys().map(|k| (k.clone(), None)).collect(),
            key_buf: String::new(),
            value_buf: String::new(),
        }
    }

    /// Folds in the next part (parts in canonical order, as the first pass).
    pub fn add_part(&mut self, part: PartRecount) {
        for (value, agg) in part.aggregators {
            let (Some(agg), Some(slot)) = (agg, self.folded.get_mut(&value)) else { continue };
            match slot {
                // Same week by construction.
                Some(acc) => drop(acc.merge(agg)),
                None => *slot = Some(agg),
            }
        }
    }
}

impl PartRecount {
    /// Whether a record with text `data` is of a recounted value: a caller
    /// reading records from text may build only those.
    pub fn wants(&mut self, data: &str) -> bool {
        top_level_string(data, &self.by, &mut self.key_buf, &mut self.value_buf)
            .is_some_and(|value| self.aggregators.contains_key(top_key(value)))
    }

    /// Feeds one record of the part (in id order, as the first pass).
    pub fn push(&mut self, record: &Record) {
        let Some(value) = top_level_string(&record.data, &self.by, &mut self.key_buf, &mut self.value_buf) else {
            return;
        };
        if let Some(slot) = self.aggregators.get_mut(top_key(value)) {
            slot.get_or_insert_with(|| Aggregator::new(self.week, &self.options)).push(record);
        }
    }
}

/// Aggregators of different weeks cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot merge the summary of {other} into that of {week}")]
pub struct MergeError {
    pub week: IsoWeek,
    pub other: IsoWeek,
}

#[derive(Debug, Clone)]
struct Node {
    key: Box<str>,
    parent: u32,
    children: HashMap<Box<str>, u32, FixedState>,
    /// The child seen at each member position last time: records of one
    /// source repeat their key order, so most lookups are one string compare
    /// instead of a hash and probe.
    order: Vec<u32>,
    stats: FieldStats,
}

/// `a == b` for the position cache's check. Keys are mostly a few bytes,
/// where a call to `memcmp` costs more than the compare (4.5 % of the
/// aggregator's instructions on the bench's records): up to 16 bytes, two
/// overlapping loads from each end cover every byte.
#[inline]
fn same_key(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word4 = |s: &[u8], i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    let word8 = |s: &[u8], i: usize| {
        u64::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3], s[i + 4], s[i + 5], s[i + 6], s[i + 7]])
    };
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=8 => word4(a, 0) == word4(b, 0) && word4(a, n - 4) == word4(b, n - 4),
        9..=16 => word8(a, 0) == word8(b, 0) && word8(a, n - 8) == word8(b, n - 8),
        _ => a == b,
    }
}

/// Interned field paths: a trie whose node ids are the path slots.
#[derive(Debug, Clone)]
struct PathTable {
    nodes: Vec<Node>,
    other: FieldStats,
    max_paths: usize,
}

impl PathTable {
    fn new(max_paths: usize) -> Self {
        let root = Node {
            key: "".into(),
            parent: ROOT,
            children: HashMap::default(),
            order: Vec::new(),
            stats: FieldStats::default(),
        };
        Self { nodes: vec![root], other: FieldStats::default(), max_paths }
    }

    /// The slot of `key` under `parent`, interning it while under the cap.
    #[inline]
    fn child(&mut self, parent: u32, key: &str) -> u32 {
        if parent == OTHER {
            return OTHER;
        }
        if let Some(&id) = self.nodes[parent as usize].children.get(key) {
            return id;
        }
        if self.nodes.len() > self.max_paths || key.len() > MAX_KEY_BYTES {
            return OTHER;
        }
        let id = self.nodes.len() as u32;
        self.nodes.push(Node {
            key: key.into(),
            parent,
            children: HashMap::default(),
            order: Vec::new(),
            stats: FieldStats::default(),
        });
        self.nodes[parent as usize].children.insert(key.into(), id);
        id
    }

    /// [`child`](Self::child) for the `index`-th member of an object, trying
    /// the child seen at that position last time first.
    #[inline]
    fn child_at(&mut self, parent: u32, index: usize, key: &str) -> u32 {
        if parent == OTHER {
            return OTHER;
        }
        if let Some(&c) = self.nodes[parent as usize].order.get(index) {
            if c != OTHER && same_key(&self.nodes[c as usize].key, key) {
                return c;
            }
        }
        let c = self.child(parent, key);
        if index < MAX_REMEMBERED_POSITIONS {
            let order = &mut self.nodes[parent as usize].order;
            if order.len() <= index {
                order.resize(index + 1, OTHER);
            }
            order[index] = c;
        }
        c
    }

    #[inline]
    fn stats(&mut self, slot: u32) -> &mut FieldStats {
        if slot == OTHER { &mut self.other } else { &mut self.nodes[slot as usize].stats }
    }

    /// The dotted path of a node, with `.` and `\` in keys escaped.
    fn path(&self, mut id: u32) -> String {
        let mut keys = Vec::new();
        while id != ROOT {
            let node = &self.nodes[id as usize];
            keys.push(&*node.key);
            id = node.parent;
        }
        let mut out = String::new();
        for (i, key) in keys.iter().rev().enumerate() {
            if i > 0 {
                out.push('.');
            }
            for c in key.chars() {
                if matches!(c, '.' | '\\') {
                    out.push('\\');
                }
                out.push(c);
            }
        }
        out
    }
}

/// An [`Aggregator`]'s contents, as stored in a part state (`state`):
/// everything its outputs and merges depend on, and none of its caches
/// (the trie's child maps and remembered key orders are rebuilt).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AggregatorState {
    records: u64,
    bytes: u64,
    unparsable: u64,
    per_hour: Vec<u64>,
    /// The path nodes after the root, in id order: parents come first.
    nodes: Vec<NodeState>,
    other: FieldStats,
    /// Records per segment value and the aggregators kept.
    segments: Option<SegmentsState>,
}

#[derive(Debug, Serialize, Deserialize)]
struct NodeState {
    key: Box<str>,
    parent: u32,
    stats: FieldStats,
}

/// Reused decode buffers for keys and string values with escapes.
#[derive(Debug, Clone, Default)]
struct Buffers {
    key: String,
    value: String,
}

/// Accumulates one week's statistics, record by record.
///
/// ```
/// use tally_core::summary::{Aggregator, SummaryOptions};
/// use tally_core::{IsoWeek, Record, RecordId};
///
/// let week = IsoWeek::parse("2026-W47").unwrap();
/// let at = week.start();
/// let mut agg = Aggregator::new(week, &SummaryOptions::default());
/// agg.push(&Record { id: RecordId::generate(at), received_at: at, data: r#"{"n":1}"#.into() });
/// let summary = agg.finish();
/// assert_eq!(summary.records, 1);
/// assert_eq!(summary.field("n").unwrap().types.number, 1);
/// ```
#[derive(Debug, Clone)]
pub struct Aggregator {
    week: IsoWeek,
    start_ms: i64,
    options: SummaryOptions,
    records: u64,
    bytes: u64,
    unparsable: u64,
    per_hour: [u64; HOURS],
    paths: PathTable,
    buffers: Buffers,
    segments: Option<Box<SegmentState>>,
}

impl Aggregator {
    pub fn new(week: IsoWeek, options: &SummaryOptions) -> Self {
        Self {
            week,
            start_ms: week.start().as_millis(),
            options: options.clone(),
            records: 0,
            bytes: 0,
            unparsable: 0,
            per_hour: [0; HOURS],
            paths: PathTable::new(options.max_paths),
            buffers: Buffers::default(),
            segments: options.segment_by.as_deref().map(|by| Box::new(SegmentState::new(by, options))),
        }
    }

    pub fn week(&self) -> IsoWeek {
        self.week
    }

    /// Records pushed so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Adds one record. Never fails: a record that cannot be scanned is
    /// counted as unparsable, and `false` says so (the weekly export uses it
    /// instead of parsing every record a second time).
    pub fn push(&mut self, record: &Record) -> bool {
        self.records += 1;
        self.bytes += record.data.len() as u64;
        let offset = record.received_at.as_millis() - self.start_ms;
        if let Some(slot) = usize::try_from(offset / HOUR_MS).ok().filter(|&h| offset >= 0 && h < HOURS) {
            self.per_hour[slot] += 1;
        }
        let parsed = self.scan(&record.data).is_ok();
        if !parsed {
            self.unparsable += 1;
        }
        // Every record whose text starts an object with the field as a
        // string counts in that segment, unparsable or not (as in the
        // week): what a recount from the export sees too.
        if let Some(segments) = &mut self.segments {
            segments.push(self.week, record);
        }
        parsed
    }

    fn scan(&mut self, text: &str) -> Scan<()> {
        let mut cur = Cursor::new(text);
        cur.expect(b'{')?;
        let mut walk = Walk {
            paths: &mut self.paths,
            buffers: &mut self.buffers,
            max_depth: self.options.max_depth,
            exact_limit: self.options.exact_distinct_limit,
        };
        walk.object(&mut cur, ROOT, 0)?;
        // One object and nothing after it but whitespace.
        cur.ws();
        if cur.peek().is_some() { Err(Malformed) } else { Ok(()) }
    }

    /// The contents, for a part state.
    pub(crate) fn into_state(self) -> AggregatorState {
        AggregatorState {
            records: self.records,
            bytes: self.bytes,
            unparsable: self.unparsable,
            per_hour: self.per_hour.to_vec(),
            nodes: self
                .paths
                .nodes
                .into_iter()
                .skip(1)
                .map(|n| NodeState { key: n.key, parent: n.parent, stats: n.stats })
                .collect(),
            other: self.paths.other,
            segments: self.segments.map(|s| s.into_state()),
        }
    }

    /// An aggregator holding `state` (made with the same `options`: the
    /// caller checks). Errors name what is inconsistent.
    pub(crate) fn from_state(week: IsoWeek, options: &SummaryOptions, state: AggregatorState) -> Result<Self, String> {
        let mut agg = Self::new(week, options);
        agg.records = state.records;
        agg.bytes = state.bytes;
        agg.unparsable = state.unparsable;
        agg.per_hour =
            state.per_hour.try_into().map_err(|v: Vec<u64>| format!("{} hourly counts, not {HOURS}", v.len()))?;
        if state.nodes.len() > options.max_paths {
            return Err(format!("{} paths, more than the {} tracked", state.nodes.len(), options.max_paths));
        }
        for (i, node) in state.nodes.into_iter().enumerate() {
            let id = i as u32 + 1;
            if node.parent >= id {
                return Err(format!("path node {id} has parent {} (parents come first)", node.parent));
            }
            let siblings = &mut agg.paths.nodes[node.parent as usize].children;
            if siblings.insert(node.key.clone(), id).is_some() {
                return Err(format!("key {:?} twice under one parent", node.key));
            }
            agg.paths.nodes.push(Node {
                key: node.key,
                parent: node.parent,
                children: HashMap::default(),
                order: Vec::new(),
                stats: node.stats,
            });
        }
        agg.paths.other = state.other;
        match (&mut agg.segments, state.segments) {
            (Some(mine), Some(segments)) => mine.restore(week, segments)?,
            (None, None) => {}
            (Some(_), None) => return Err("no segments, but segment_by is set".into()),
            (None, Some(_)) => return Err("segments, but segment_by is not set".into()),
        }
        Ok(agg)
    }

    /// Folds in an aggregator of the same week fed other records. Paths new
    /// to `self` are interned while under the cap, else counted as `_other`.
    pub fn merge(&mut self, other: Aggregator) -> Result<(), MergeError> {
        if other.week != self.week {
            return Err(MergeError { week: self.week, other: other.week });
        }
        self.records += other.records;
        self.bytes += other.bytes;
        self.unparsable += other.unparsable;
        for (a, b) in self.per_hour.iter_mut().zip(other.per_hour) {
            *a += b;
        }
        // Node ids grow parent-first, so each parent is mapped before its children.
        let mut map = vec![ROOT; other.paths.nodes.len()];
        for (id, node) in other.paths.nodes.iter().enumerate().skip(1) {
            let parent = map[node.parent as usize];
            let slot = self.paths.child(parent, &node.key);
            map[id] = slot;
            self.paths.stats(slot).merge(&node.stats);
        }
        self.paths.other.merge(&other.paths.other);
        match (&mut self.segments, other.segments) {
            (Some(mine), Some(theirs)) => mine.merge(*theirs),
            (None, Some(theirs)) => self.segments = Some(theirs),
            _ => {}
        }
        Ok(())
    }

    /// The second pass the listed segments need, if any: `None` without
    /// `segment_by`, or when every listed value's aggregator holds all of
    /// its records. See [`SegmentRecount`].
    pub fn segment_recount(&self) -> Option<SegmentRecount> {
        let s = self.segments.as_deref()?;
        let folded: BTreeMap<Box<str>, Option<Aggregator>> = s
            .candidates()
            .into_iter()
            .filter(|(value, _)| !s.tracked.contains_key(*value))
            .map(|(value, _)| (value.into(), None))
            .collect();
        (!folded.is_empty()).then(|| SegmentRecount {
            week: self.week,
            by: s.by.clone(),
            options: s.options.clone(),
            folded,
        })
    }

    /// Gives the recounted values their aggregators. Refused when a count
    /// disagrees with the first pass (exactly, or past the exact limit
    /// beyond the estimate's error): the records were not the same.
    pub fn apply_segment_recount(&mut self, recount: SegmentRecount) -> Result<(), RecountMismatch> {
        let Some(s) = self.segments.as_deref_mut() else { return Ok(()) };
        let mut found = Vec::new();
        for (value, agg) in recount.folded {
            let recounted = agg.as_ref().map_or(0, Aggregator::records);
            let counted = s.counts.count(&value);
            let fits = if s.counts.is_exact() {
                recounted == counted
            } else {
                counted <= recounted && recounted <= counted + s.counts.max_error()
            };
            if !fits {
                return Err(RecountMismatch { value: value.into(), counted, recounted });
            }
            found.extend(agg.map(|agg| (value, agg)));
        }
        s.tracked.extend(found);
        Ok(())
    }

    /// The week's summary. With `segment_by`, a listed segment whose
    /// records no aggregator kept whole (see [`SegmentRecount`]) has its
    /// count but empty `fields` until a recount is applied.
    pub fn finish(self) -> Summary {
        let o = &self.options;
        let per_day = self
            .week
            .days()
            .iter()
            .enumerate()
            .map(|(i, d)| DayCount { date: d.to_string(), records: self.per_hour[i * 24..(i + 1) * 24].iter().sum() })
            .collect();
        let mut fields: Vec<FieldSummary> = (1..self.paths.nodes.len())
            .map(|id| field_summary(self.paths.path(id as u32), &self.paths.nodes[id].stats, o.top_values))
            .collect();
        fields.sort_by(|a, b| a.path.cmp(&b.path));
        if self.paths.other.present() > 0 {
            fields.push(field_summary(OTHER_PATH.to_owned(), &self.paths.other, o.top_values));
        }
        Summary {
            schema: SCHEMA_VERSION,
            week: self.week,
            start: self.week.start(),
            end: self.week.end(),
            records: self.records,
            bytes: self.bytes,
            unparsable_records: self.unparsable,
            per_day,
            per_hour: self.per_hour.to_vec(),
            limits: Limits {
                max_depth: o.max_depth,
                max_paths: o.max_paths,
                top_values: o.top_values,
                exact_distinct_limit: o.exact_distinct_limit,
            },
            fields,
            comparison: None,
            segments: self.segments.map(|s| s.finish(self.records)),
        }
    }
}

/// The recursive walk, borrowing the aggregator's parts separately so a
/// decoded key or value can be held while its path's stats are updated.
struct Walk<'s> {
    paths: &'s mut PathTable,
    buffers: &'s mut Buffers,
    max_depth: u8,
    exact_limit: usize,
}

impl Walk<'_> {
    /// After `{`: the members of an object at `depth` (the root is 0).
    fn object(&mut self, cur: &mut Cursor<'_>, parent: u32, depth: u8) -> Scan<()> {
        cur.ws();
        if cur.peek() == Some(b'}') {
            cur.pos += 1;
            return Ok(());
        }
        for index in 0.. {
            cur.ws();
            if cur.peek() != Some(b'"') {
                return Err(Malformed);
            }
            let key = cur.string(&mut self.buffers.key)?;
            let slot = self.paths.child_at(parent, index, key);
            cur.expect(b':')?;
            cur.ws();
            self.value(cur, slot, depth + 1)?;
            match cur.next_token_byte()? {
                b',' => {}
                b'}' => return Ok(()),
                _ => return Err(Malformed),
            }
        }
        Err(Malformed)
    }

    #[inline]
    fn value(&mut self, cur: &mut Cursor<'_>, slot: u32, depth: u8) -> Scan<()> {
        match cur.peek().ok_or(Malformed)? {
            b'{' => {
                self.paths.stats(slot).count(JsonType::Object);
                if depth < self.max_depth {
                    cur.pos += 1;
                    self.object(cur, slot, depth)
                } else {
                    cur.skip_container()
                }
            }
            b'[' => {
                let len = cur.array_len()?;
                self.paths.stats(slot).array(len);
                Ok(())
            }
            b'"' => {
                let s = cur.string(&mut self.buffers.value)?;
                self.paths.stats(slot).string(s, self.exact_limit);
                Ok(())
            }
            b't' => {
                cur.literal(b"true")?;
                self.paths.stats(slot).boolean(true);
                Ok(())
            }
            b'f' => {
                cur.literal(b"false")?;
                self.paths.stats(slot).boolean(false);
                Ok(())
            }
            b'n' => {
                cur.literal(b"null")?;
                self.paths.stats(slot).count(JsonType::Null);
                Ok(())
            }
            _ => {
                let token = cur.number()?;
                self.paths.stats(slot).number(token);
                Ok(())
            }
        }
    }
}

/// The values at ranks `0, 1/QUANTILE_STEPS, … 1`; the ends are the exact
/// min and max rather than the sketch's.
fn quantiles(n: &super::stats::NumberStats) -> Vec<f64> {
    let ranks: Vec<f64> = (0..=QUANTILE_STEPS).map(|i| i as f64 / QUANTILE_STEPS as f64).collect();
    let mut q = n.sketch.quantiles(&ranks);
    if let Some(first) = q.first_mut() {
        *first = n.min;
    }
    if let Some(last) = q.last_mut() {
        *last = n.max;
    }
    q
}

fn field_summary(path: String, s: &FieldStats, top_values: usize) -> FieldSummary {
    let t = &s.types;
    let types = TypeCounts {
        object: t[JsonType::Object as usize],
        array: t[JsonType::Array as usize],
        string: t[JsonType::String as usize],
        number: t[JsonType::Number as usize],
        boolean: t[JsonType::Boolean as usize],
        null: t[JsonType::Null as usize],
    };
    let finite = |x: f64| Some(x).filter(|x| x.is_finite());
    let number = s.number.as_ref().map(|n| {
        let has = n.n > 0;
        NumberSummary {
            count: n.n + n.out_of_range,
            out_of_range: n.out_of_range,
            min: has.then_some(n.min),
            max: has.then_some(n.max),
            mean: n.mean().and_then(finite),
            stddev: n.stddev().and_then(finite),
            p50: n.sketch.quantile(0.5),
            p90: n.sketch.quantile(0.9),
            p99: n.sketch.quantile(0.99),
            histogram: has.then(|| Histogram {
                min: n.min,
                max: n.max,
                counts: n.sketch.histogram(n.min, n.max, if n.min < n.max { HISTOGRAM_BINS } else { 1 }),
            }),
            quantiles: if has { quantiles(n) } else { Vec::new() },
        }
    });
    let string = s.string.as_ref().map(|st| StringSummary {
        count: st.n,
        distinct: st.distinct(),
        distinct_exact: st.is_exact(),
        min_length: if st.n > 0 { st.min_len } else { 0 },
        max_length: st.max_len,
        top: st.top(top_values).into_iter().map(|(v, c)| TopValue { value: v.to_owned(), count: c }).collect(),
        top_exact: st.is_exact(),
        top_max_error: st.max_error(),
    });
    let booleans = types.boolean;
    let boolean = (booleans > 0).then(|| BooleanSummary { true_count: s.trues, false_count: booleans - s.trues });
    let array = s.array.filter(|a| a.n > 0).map(|a| ArraySummary {
        count: a.n,
        min_length: a.min,
        max_length: a.max,
        mean_length: a.sum as f64 / a.n as f64,
    });
    FieldSummary { path, present: s.present(), null: types.null, types, number, string, boolean, array }
}

#[cfg(test)]
mod tests {
    use super::same_key;

    #[test]
    fn same_key_agrees_with_eq_for_every_length_and_differing_byte() {
        for n in 0..40 {
            let a: String = (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            assert!(same_key(&a, &a.clone()), "{a:?}");
            assert!(!same_key(&a, &format!("{a}x")), "{a:?} vs a longer key");
            for at in 0..n {
                let mut b = a.clone().into_bytes();
                b[at] = b'_';
                let b = String::from_utf8(b).unwrap();
                assert_eq!(same_key(&a, &b), a == b, "{a:?} vs {b:?}");
            }
        }
        assert!(!same_key("é", "è") && same_key("ünï", "ünï"));
    }
}
