//! Partial summaries: canonical parts, part states and their fold.
//!
//! # Why canonical parts
//! The report must be byte-identical however a week is cut up — one run, N
//! threads, `--part K/N` files merged in any order, or (later) Lambda
//! invocations. Merging sketches in arbitrary order cannot promise that: KLL
//! compaction, Misra–Gries reductions past the exact limit, the path cap's
//! first-come interning and floating-point sums all depend on the order of
//! merges. So the order is fixed instead: a week is always cut into the same
//! [`PARTS`] canonical parts, each part is aggregated alone in id order, and
//! the week is always the fold of the part states in part order
//! ([`WeekFold`]). Who computed which part, in what grouping and order, is
//! then invisible in the output by construction; the plain run is the same
//! fold, so it gives the same bytes too.
//!
//! Compared with one aggregator fed the whole week (tally ≤ 0.2), counts,
//! sums of integers, min/max, exact distinct counts and exact top values are
//! equal; quantiles, histograms, HyperLogLog estimates and top values past
//! the exact limit stay within the sketches' documented bounds; means and
//! deviations may differ in the last bits. Only past the path cap (more than
//! `max_paths` paths) can a path land in `_other` in a part when it would not
//! in one pass. Segments are exact for any cut up to
//! [`SEGMENT_VALUES_EXACT`](super::SEGMENT_VALUES_EXACT) values: counts add
//! up, and statistics a part could not keep whole are recomputed by a second
//! pass over the week ([`SegmentRecount`](super::SegmentRecount)).
//!
//! # Canonical layout
//! 28 parts: part `p` holds the records received from `start + 6h·p` up to
//! `start + 6h·(p+1)`, where `start` is the week's Monday 00:00 UTC — day
//! `p / 4` of the week, hours `6·(p % 4)` to `6·(p % 4) + 6`. As id ranges
//! ([`Part::range`]) they tile the week's range with no gap or overlap. A
//! run holds at most a few part aggregators at once (one per thread plus
//! the fold); days × 6-hour blocks keep parts small enough to spread over
//! threads or Lambdas, and few enough that a fold is cheap.
//!
//! # State format (version 2)
//! One part state is self-delimiting, so a state file is any number of them
//! back to back (`tally summarize --part K/N --state-out FILE` writes its
//! parts in order), and one S3 object can hold one:
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic `TALLYPRT` |
//! | 2 | format version, u16 little-endian (2; version 1, tally 0.3, kept 32 segment summaries per part and is refused) |
//! | 4 | header length `H`, u32 little-endian |
//! | `H` | header, postcard: week (`2026-W47`), part, parts per week (28), tally version, the options that shape the output, records, state length, export length, SHA-256 of state and export |
//! | state length | the aggregator's contents, postcard: counters, per-hour counts, the path trie (parents first), per-field stats with their KLL levels, HyperLogLog registers, top-value counts sorted by value, segment states (records per value sorted by value, then the aggregators kept, by value) |
//! | export length | the part's `records.ndjson.gz` gzip member (empty for a part without records) |
//!
//! Why postcard: a small, maintained serde format with a written, stable wire
//! specification (varint integers, so the many small counts stay small;
//! floats as their exact 8 bytes, so a state round-trips bit for bit). The
//! header carries the lengths so a merge can index many files by reading
//! headers only, then load one part at a time.
//!
//! Decoding checks the magic, the format version, the checksum and the
//! sketches' invariants, and refuses states of another week, another part
//! count or other options ([`StateOptions`]) with an error that says what to
//! do.

use std::fmt;
use std::io::Read;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::SummaryOptions;
use super::aggregate::{Aggregator, AggregatorState};
use crate::RecordId;
use crate::clock::Timestamp;
use crate::week::IsoWeek;

/// Canonical parts per week: 7 days × four 6-hour blocks.
pub const PARTS: u8 = 28;
const PART_MS: i64 = 6 * 3_600_000;
const MAGIC: &[u8; 8] = b"TALLYPRT";
/// The state format this tally writes and reads.
pub const STATE_FORMAT: u16 = 2;
/// Magic, format, header length.
const PREFIX: usize = 8 + 2 + 4;
/// A header is a few hundred bytes; anything larger is not one.
const MAX_HEADER: u32 = 64 * 1024;

/// One canonical part of a week, `0..PARTS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Part(u8);

impl Part {
    pub fn new(index: u8) -> Option<Self> {
        (index < PARTS).then_some(Self(index))
    }

    pub fn index(self) -> u8 {
        self.0
    }

    /// Every part of a week, in canonical order.
    pub fn all() -> impl Iterator<Item = Part> {
        (0..PARTS).map(Part)
    }

    /// The parts that `--part k/n` computes: the `k`-th (1-based) of `n`
    /// contiguous, near-equal runs of parts. `None` unless `1 <= k <= n <= PARTS`.
    pub fn assigned(k: u8, n: u8) -> Option<impl Iterator<Item = Part>> {
        if n == 0 || n > PARTS || k == 0 || k > n {
            return None;
        }
        let bound = |i: u8| (u32::from(PARTS) * u32::from(i) / u32::from(n)) as u8;
        Some((bound(k - 1)..bound(k)).map(Part))
    }

    /// When the part starts and ends (exclusive) in `week`.
    pub fn times(self, week: IsoWeek) -> (Timestamp, Timestamp) {
        let start = week.start().as_millis() + PART_MS * i64::from(self.0);
        let end = if self.0 + 1 == PARTS { week.end().as_millis() } else { start + PART_MS };
        (Timestamp::from_millis(start), Timestamp::from_millis(end))
    }

    /// Its records' ids: `from <= id < to`.
    pub fn range(self, week: IsoWeek) -> (RecordId, RecordId) {
        let (start, end) = self.times(week);
        (RecordId::lower_bound(start), RecordId::lower_bound(end))
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let day = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][usize::from(self.0 / 4)];
        let hour = 6 * (self.0 % 4);
        write!(f, "part {} ({day} {hour:02}:00–{:02}:00 UTC)", self.0, hour + 6)
    }
}

/// The options that shape a part's state or export: states made with other
/// values cannot be merged into the same report. (Thresholds, page and
/// chunk sizes and threads do not change a part and are not checked.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateOptions {
    pub max_depth: u8,
    pub max_paths: u64,
    pub top_values: u64,
    pub exact_distinct_limit: u64,
    pub segment_by: Option<String>,
    pub gzip_level: u32,
}

impl StateOptions {
    pub fn of(o: &SummaryOptions) -> Self {
        Self {
            max_depth: o.max_depth,
            max_paths: o.max_paths as u64,
            top_values: o.top_values as u64,
            exact_distinct_limit: o.exact_distinct_limit as u64,
            segment_by: o.segment_by.clone(),
            gzip_level: o.gzip_level.min(9),
        }
    }

    /// `name a → b` for each option that differs.
    fn differences(&self, other: &Self) -> String {
        let mut out = Vec::new();
        let mut diff = |name: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{name} {a} here, {b} in the state"));
            }
        };
        diff("max_depth", self.max_depth.to_string(), other.max_depth.to_string());
        diff("max_paths", self.max_paths.to_string(), other.max_paths.to_string());
        diff("top_values", self.top_values.to_string(), other.top_values.to_string());
        diff("exact_distinct_limit", self.exact_distinct_limit.to_string(), other.exact_distinct_limit.to_string());
        diff("--segment-by", format!("{:?}", self.segment_by), format!("{:?}", other.segment_by));
        diff("--gzip-level", self.gzip_level.to_string(), other.gzip_level.to_string());
        out.join(", ")
    }
}

/// What a part state says about itself; readable without its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartHeader {
    pub week: IsoWeek,
    pub part: Part,
    pub parts: u8,
    pub tally_version: String,
    pub options: StateOptions,
    pub records: u64,
    pub state_len: u64,
    pub export_len: u64,
    checksum: [u8; 32],
    /// Bytes of the prefix and header (set when read, not stored).
    #[serde(skip)]
    header_len: u64,
}

impl PartHeader {
    /// Bytes of the whole part state, header included.
    pub fn total_len(&self) -> u64 {
        self.header_len + self.state_len + self.export_len
    }

    /// Bytes after the header: what to skip to reach the next state.
    pub fn body_len(&self) -> u64 {
        self.state_len + self.export_len
    }
}

/// Why part states cannot be read or merged. Every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "this is not a tally part state (it does not start with TALLYPRT); pass files written by `tally summarize --part K/N --state-out FILE`"
    )]
    NotAState,
    #[error(
        "this part state has format version {found}, but this tally (version {}) reads version {STATE_FORMAT}; make the part states again with this tally",
        crate::VERSION
    )]
    Format { found: u16 },
    #[error("the part state is damaged ({0}); make it again with `tally summarize --part K/N --state-out FILE`")]
    Corrupt(String),
    #[error("{part} of the states is of week {found}, not {expected}; pass only states made with `--week {expected}`")]
    WrongWeek { expected: IsoWeek, found: IsoWeek, part: Part },
    #[error(
        "{part} of {week} was made with other summary options ({differences}); make the parts again with the same options as the merge"
    )]
    Options { week: IsoWeek, part: Part, differences: String },
    #[error(
        "{} of {week} {} missing from the states: {}; run `tally summarize --week {week} --part K/N --state-out FILE` for the K that covers {} and pass that file too",
        if parts.len() == 1 { "1 part".to_owned() } else { format!("{} parts", parts.len()) },
        if parts.len() == 1 { "is" } else { "are" },
        parts.iter().map(Part::to_string).collect::<Vec<_>>().join(", "),
        if parts.len() == 1 { "it" } else { "them" }
    )]
    Missing { week: IsoWeek, parts: Vec<Part> },
    #[error("{part} of {week} is in more than one state; pass each part once (one set of `--part K/N` files of one N)")]
    Duplicate { week: IsoWeek, part: Part },
    #[error("parts of {week} must be folded in order: expected {expected}, got {got}")]
    OutOfOrder { week: IsoWeek, expected: Part, got: Part },
    #[error("could not read the part state: {0}; check the file")]
    Io(#[from] std::io::Error),
}

/// One canonical part's aggregated records and export: state bytes in,
/// state bytes out, for `--part`/`--merge`, threads and Lambdas alike.
#[derive(Debug)]
pub struct PartState {
    pub week: IsoWeek,
    pub part: Part,
    aggregator: Aggregator,
    /// The part's `records.ndjson.gz` member (empty without records).
    pub export: Vec<u8>,
}

impl PartState {
    pub(crate) fn new(week: IsoWeek, part: Part, aggregator: Aggregator, export: Vec<u8>) -> Self {
        Self { week, part, aggregator, export }
    }

    pub fn records(&self) -> u64 {
        self.aggregator.records()
    }

    pub(crate) fn into_aggregator(self) -> Aggregator {
        self.aggregator
    }

    /// Encodes the state (format in the module docs). `options` are those
    /// the part was aggregated with.
    pub fn to_bytes(self, options: &SummaryOptions) -> Vec<u8> {
        let records = self.aggregator.records();
        // postcard into a Vec cannot fail for these types (no maps with
        // non-string keys, no unsized sequences).
        let state = postcard::to_stdvec(&self.aggregator.into_state()).unwrap_or_default();
        let mut hasher = Sha256::new();
        hasher.update(&state);
        hasher.update(&self.export);
        let header = PartHeader {
            week: self.week,
            part: self.part,
            parts: PARTS,
            tally_version: crate::VERSION.to_owned(),
            options: StateOptions::of(options),
            records,
            state_len: state.len() as u64,
            export_len: self.export.len() as u64,
            checksum: hasher.finalize().into(),
            header_len: 0,
        };
        let header = postcard::to_stdvec(&header).unwrap_or_default();
        let mut out = Vec::with_capacity(PREFIX + header.len() + state.len() + self.export.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&STATE_FORMAT.to_le_bytes());
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&state);
        out.extend_from_slice(&self.export);
        out
    }

    /// Decodes one part state made for `week` with `options` (the whole of
    /// `bytes`, as [`PartHeader::total_len`] gives).
    pub fn from_bytes(bytes: &[u8], week: IsoWeek, options: &SummaryOptions) -> Result<Self, StateError> {
        let mut reader = bytes;
        let header = read_header(&mut reader)?.ok_or(StateError::NotAState)?;
        check_header(&header, week, options)?;
        if reader.len() as u64 != header.body_len() {
            return Err(StateError::Corrupt(format!(
                "{} bytes after the header, {} expected",
                reader.len(),
                header.body_len()
            )));
        }
        let (state, export) = reader.split_at(header.state_len as usize);
        let mut hasher = Sha256::new();
        hasher.update(state);
        hasher.update(export);
        if <[u8; 32]>::from(hasher.finalize()) != header.checksum {
            return Err(StateError::Corrupt("checksum mismatch".into()));
        }
        let state: AggregatorState =
            postcard::from_bytes(state).map_err(|e| StateError::Corrupt(format!("state of {}: {e}", header.part)))?;
        let aggregator = Aggregator::from_state(week, options, state)
            .map_err(|e| StateError::Corrupt(format!("state of {}: {e}", header.part)))?;
        if aggregator.records() != header.records {
            return Err(StateError::Corrupt(format!("{} holds other records than its header says", header.part)));
        }
        Ok(Self { week, part: header.part, aggregator, export: export.to_vec() })
    }
}

/// Reads one part state's header, leaving `r` at its body; `None` at a
/// clean end of input (between states).
pub fn read_header(r: &mut impl Read) -> Result<Option<PartHeader>, StateError> {
    let mut prefix = [0u8; PREFIX];
    let mut got = 0;
    while got < PREFIX {
        match r.read(&mut prefix[got..])? {
            0 => break,
            n => got += n,
        }
    }
    let magic = got.min(MAGIC.len());
    if got == 0 {
        return Ok(None);
    } else if prefix[..magic] != MAGIC[..magic] {
        return Err(StateError::NotAState);
    } else if got < PREFIX {
        return Err(StateError::Corrupt("it ends inside a header".into()));
    }
    let format = u16::from_le_bytes([prefix[8], prefix[9]]);
    if format != STATE_FORMAT {
        return Err(StateError::Format { found: format });
    }
    let len = u32::from_le_bytes([prefix[10], prefix[11], prefix[12], prefix[13]]);
    if len > MAX_HEADER {
        return Err(StateError::Corrupt(format!("a header of {len} bytes")));
    }
    let mut header = vec![0u8; len as usize];
    r.read_exact(&mut header).map_err(|_| StateError::Corrupt("it ends inside a header".into()))?;
    let mut header: PartHeader =
        postcard::from_bytes(&header).map_err(|e| StateError::Corrupt(format!("header: {e}")))?;
    header.header_len = (PREFIX + len as usize) as u64;
    if header.parts != PARTS || header.part.0 >= PARTS {
        return Err(StateError::Corrupt(format!(
            "part {} of {} per week; this tally cuts a week into {PARTS}",
            header.part.0, header.parts
        )));
    }
    Ok(Some(header))
}

/// Refuses a state of another week or made with other options.
pub fn check_header(header: &PartHeader, week: IsoWeek, options: &SummaryOptions) -> Result<(), StateError> {
    if header.week != week {
        return Err(StateError::WrongWeek { expected: week, found: header.week, part: header.part });
    }
    let mine = StateOptions::of(options);
    if header.options != mine {
        return Err(StateError::Options { week, part: header.part, differences: mine.differences(&header.options) });
    }
    Ok(())
}

/// Checks that `headers` are of `week` and `options` and hold every
/// canonical part exactly once: what a merge needs before it writes anything.
pub fn check_parts<'a>(
    week: IsoWeek,
    options: &SummaryOptions,
    headers: impl IntoIterator<Item = &'a PartHeader>,
) -> Result<(), StateError> {
    let mut seen = [false; PARTS as usize];
    for h in headers {
        check_header(h, week, options)?;
        let slot = &mut seen[usize::from(h.part.0)];
        if *slot {
            return Err(StateError::Duplicate { week, part: h.part });
        }
        *slot = true;
    }
    let missing: Vec<Part> = Part::all().filter(|p| !seen[usize::from(p.0)]).collect();
    if missing.is_empty() { Ok(()) } else { Err(StateError::Missing { week, parts: missing }) }
}

/// The week's aggregator as the fold of its part aggregators in canonical
/// order — the one way a week's statistics are computed.
#[derive(Debug)]
pub struct WeekFold {
    week: IsoWeek,
    next: u8,
    acc: Option<Aggregator>,
}

impl WeekFold {
    pub fn new(week: IsoWeek) -> Self {
        Self { week, next: 0, acc: None }
    }

    /// The next part to push.
    pub fn next_part(&self) -> Option<Part> {
        Part::new(self.next)
    }

    pub(crate) fn push(&mut self, part: Part, aggregator: Aggregator) -> Result<(), StateError> {
        if Some(part) != self.next_part() {
            return match self.next_part() {
                Some(expected) => Err(StateError::OutOfOrder { week: self.week, expected, got: part }),
                None => Err(StateError::Duplicate { week: self.week, part }),
            };
        }
        if aggregator.week() != self.week {
            return Err(StateError::WrongWeek { expected: self.week, found: aggregator.week(), part });
        }
        match &mut self.acc {
            None => self.acc = Some(aggregator),
            // Same week, checked above.
            Some(acc) => acc.merge(aggregator).map_err(|e| StateError::Corrupt(e.to_string()))?,
        }
        self.next += 1;
        Ok(())
    }

    /// The week's aggregator, once every part is in.
    pub(crate) fn finish(self) -> Result<Aggregator, StateError> {
        if self.next != PARTS {
            return Err(StateError::Missing { week: self.week, parts: (self.next..PARTS).map(Part).collect() });
        }
        self.acc.ok_or(StateError::Missing { week: self.week, parts: Part::all().collect() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_tile_the_week() {
        let week = IsoWeek::parse("2026-W47").unwrap();
        let mut at = RecordId::lower_bound(week.start());
        for p in Part::all() {
            let (from, to) = p.range(week);
            assert_eq!(from, at, "{p}");
            assert!(from < to);
            at = to;
        }
        assert_eq!(at, RecordId::lower_bound(week.end()));
        assert_eq!(Part::new(5).unwrap().to_string(), "part 5 (Tue 06:00–12:00 UTC)");
        assert_eq!(Part::new(PARTS), None);
    }

    #[test]
    fn assignments_cover_every_part_once() {
        for n in 1..=PARTS {
            let all: Vec<Part> = (1..=n).flat_map(|k| Part::assigned(k, n).unwrap()).collect();
            assert_eq!(all, Part::all().collect::<Vec<_>>(), "n = {n}");
        }
        assert!(Part::assigned(0, 3).is_none());
        assert!(Part::assigned(4, 3).is_none());
        assert!(Part::assigned(1, PARTS + 1).is_none());
    }
}
