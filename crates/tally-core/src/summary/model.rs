//! `summary.json`, schema 4: the types, and their deterministic encoding.
//!
//! Schema 2 is additive over schema 1: every schema-1 key keeps its name and
//! meaning; it adds `comparison` (findings against the previous summarized
//! week), `segments` (per-value summaries of one top-level field) and each
//! number field's `quantiles` (the sketch state the `distribution` finding
//! compares). Schema 3 is additive over schema 2: segments are exact
//! whatever the parts (tally ≤ 0.3 could lose the records of values first
//! seen after 32 others), and `segments.max_unlisted_records` appears when
//! the listed values may not be the most frequent (past 10,000 values).
//! Schema 4 is additive over schema 3: a segment finding that says what
//! the week's finding of the same kind and path says (same direction) is
//! marked `"folded": true`, and that week finding lists the segments in
//! `segments`; the report shows the week's finding once instead of once per
//! segment, and every finding stays in `comparison.findings`. Messages carry
//! the numbers before and after and a p-value (their wording is not a
//! schema).
//!
//! Determinism: fields are sorted by path, top values by count then value,
//! floats are printed by serde_json's shortest round-trip formatting, and
//! nothing time-dependent is included (`generated_at` lives in the manifest).
//! Non-finite results (a variance that overflowed) are written as `null`.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::week::IsoWeek;

/// The current `summary.json` schema version.
pub const SCHEMA_VERSION: u32 = 4;

/// Path under which fields beyond the tracked-path cap are counted together.
pub const OTHER_PATH: &str = "_other";

/// One week's statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub schema: u32,
    pub week: IsoWeek,
    /// Monday 00:00 UTC, inclusive.
    pub start: Timestamp,
    /// Next Monday 00:00 UTC, exclusive.
    pub end: Timestamp,
    pub records: u64,
    /// Total size of the records' JSON text, in bytes.
    pub bytes: u64,
    /// Records whose text could not be scanned as a JSON object (expected 0:
    /// records are validated on ingest). They are counted in `records` only.
    pub unparsable_records: u64,
    /// Monday first, 7 entries, zeros included.
    pub per_day: Vec<DayCount>,
    /// 168 entries: hour 0 is Monday 00:00–01:00 UTC.
    pub per_hour: Vec<u64>,
    pub limits: Limits,
    /// Every tracked path, sorted by path, then `_other` if anything overflowed.
    pub fields: Vec<FieldSummary>,
    /// Schema 2: what changed since the latest earlier summarized week;
    /// `null` when there is none.
    #[serde(default)]
    pub comparison: Option<Comparison>,
    /// Schema 2: per-value summaries of the `--segment-by` field; `null`
    /// when not segmented.
    #[serde(default)]
    pub segments: Option<Segments>,
}

/// The week against the latest earlier week that has a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub previous_week: IsoWeek,
    /// Sorted by (kind, path); deterministic.
    pub findings: Vec<Finding>,
}

impl Comparison {
    /// The findings the report lists: all but the segment findings folded
    /// into the week's (schema 4), in `findings`' order.
    pub fn listed(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| !f.folded)
    }

    /// Listed findings of severity `warn`: the warnings the report shows.
    pub fn warnings(&self) -> usize {
        self.listed().filter(|f| f.severity == Severity::Warn).count()
    }
}

/// One thing that changed, in a sentence a person understands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// The field path (`a.b`, segment findings prefixed `kind=orders:`), or
    /// `null` for week-level findings.
    pub path: Option<String>,
    pub severity: Severity,
    pub previous: serde_json::Value,
    pub current: serde_json::Value,
    pub message: String,
    /// Schema 4, on week findings: the segments (`kind=order`) whose finding
    /// of the same kind and path went the same way, folded into this one
    /// (its message ends by naming them). Absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<String>,
    /// Schema 4, on segment findings: `true` when the week's finding of the
    /// same kind and path says the same (it lists this segment in its
    /// `segments`), so the report shows only that one. Absent when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub folded: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The finding kinds, serialized as exactly these strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    Volume,
    FieldAdded,
    FieldRemoved,
    TypeChanged,
    NullRate,
    Distribution,
    TopValues,
    QuietDay,
}

impl FindingKind {
    pub const ALL: [FindingKind; 8] = [
        Self::Volume,
        Self::FieldAdded,
        Self::FieldRemoved,
        Self::TypeChanged,
        Self::NullRate,
        Self::Distribution,
        Self::TopValues,
        Self::QuietDay,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Volume => "volume",
            Self::FieldAdded => "field_added",
            Self::FieldRemoved => "field_removed",
            Self::TypeChanged => "type_changed",
            Self::NullRate => "null_rate",
            Self::Distribution => "distribution",
            Self::TopValues => "top_values",
            Self::QuietDay => "quiet_day",
        }
    }
}

impl std::fmt::Display for FindingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warn,
}

/// Per-value summaries of one top-level string field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segments {
    /// The top-level field segmented by.
    pub by: String,
    /// The most frequent values (at most 20), by records then value. Their
    /// `records` and `fields` are exact: the statistics of a week holding
    /// only that value's records (values compared on their first 256
    /// bytes, as top values are).
    pub values: Vec<Segment>,
    /// Records in no listed segment: other values, and records without the
    /// field or with a non-string value there.
    pub other_records: u64,
    /// Schema 3: absent while the field has at most 10,000 distinct values
    /// (then the listed values are exactly the most frequent). Past that,
    /// the list is chosen from a Misra–Gries estimate: present when a value
    /// not listed may have this many records — as many as or more than the
    /// last one listed — so the list may miss a value that belongs in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unlisted_records: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub value: String,
    pub records: u64,
    /// Same shape as the top-level `fields`.
    pub fields: Vec<FieldSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCount {
    /// `YYYY-MM-DD`.
    pub date: String,
    pub records: u64,
}

/// The limits the summary was computed with, so readers can interpret it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_depth: u8,
    pub max_paths: usize,
    pub top_values: usize,
    pub exact_distinct_limit: usize,
}

/// Statistics of one field path, e.g. `user.address.city`. Keys containing
/// `.` or `\` are escaped with a backslash (`a\.b` is the key `"a.b"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldSummary {
    pub path: String,
    /// Values seen at this path (once per record for a tracked path).
    pub present: u64,
    pub null: u64,
    pub types: TypeCounts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<NumberSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<StringSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boolean: Option<BooleanSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array: Option<ArraySummary>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TypeCounts {
    pub object: u64,
    pub array: u64,
    pub string: u64,
    pub number: u64,
    pub boolean: u64,
    pub null: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumberSummary {
    /// All numbers, including `out_of_range`.
    pub count: u64,
    /// Numbers too large for an f64 (`1e400`): counted, left out of the rest.
    pub out_of_range: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    /// Population standard deviation.
    pub stddev: Option<f64>,
    /// From a KLL sketch: rank error ≤ 1%.
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<Histogram>,
    /// Schema 2: the values at ranks 0, 1/40, 2/40 … 1 (41 values, from the
    /// KLL sketch): enough to compare two weeks' distributions (the
    /// `distribution` finding's Kolmogorov–Smirnov distance) to within
    /// 2.5 % + the sketch error. Empty when no finite number was seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quantiles: Vec<f64>,
}

/// Equal-width bins from `min` to `max` (approximate, from the sketch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub min: f64,
    pub max: f64,
    pub counts: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StringSummary {
    pub count: u64,
    /// Exact when `distinct_exact`, else a HyperLogLog estimate (≤ 2% error).
    pub distinct: u64,
    pub distinct_exact: bool,
    /// In Unicode scalar values.
    pub min_length: u64,
    pub max_length: u64,
    /// Most frequent values, by count then value. Values are compared on
    /// their first 256 bytes.
    pub top: Vec<TopValue>,
    /// When false, each count may be up to `top_max_error` below the truth.
    pub top_exact: bool,
    pub top_max_error: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopValue {
    pub value: String,
    pub count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BooleanSummary {
    #[serde(rename = "true")]
    pub true_count: u64,
    #[serde(rename = "false")]
    pub false_count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArraySummary {
    pub count: u64,
    pub min_length: u64,
    pub max_length: u64,
    pub mean_length: f64,
}

impl Summary {
    /// The bytes of `summary.json`: pretty-printed, newline-terminated, and
    /// identical for identical input.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = serde_json::to_vec_pretty(self)?;
        out.push(b'\n');
        Ok(out)
    }

    /// A field by path.
    pub fn field(&self, path: &str) -> Option<&FieldSummary> {
        self.fields.iter().find(|f| f.path == path)
    }
}
