//! Reading records back: one by id, or a time range in pages (with an opaque
//! cursor) or as one stream.
//!
//! # Ranges and cursors
//! A range is `from <= received_at < to` (or one ISO week). Pages follow id
//! order, which is arrival order. A cursor names the last id returned and the
//! range it belongs to, so the next page starts right after it (keyset
//! pagination: nothing is skipped or repeated when records arrive between
//! pages). A record becomes part of a range read only once it is older than
//! the *settle* window (the store timeout): a request still committing when a
//! page is read may carry an id below that page's last id, and without the
//! window its record would be skipped by the next page.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::clock::{Clock, Timestamp};
use crate::id::RecordId;
use crate::ports::{RecordPages, RecordStore, StoreError};
use crate::record::Record;
use crate::week::IsoWeek;

/// Records per page when the request names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit`.
pub const MAX_LIMIT: usize = 1000;
/// The longest range one paged read may cover.
pub const MAX_PAGED_DAYS: i64 = 31;
/// The longest range one streamed read may cover (a year and a week).
pub const MAX_STREAMED_DAYS: i64 = 372;
/// Records per store page when streaming.
const STREAM_PAGE: usize = 1000;

/// The query parameters of a range read, as the caller received them: the
/// use case validates them, so every driver (HTTP, CLI) refuses the same
/// input with the same words.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub week: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// How the range will be read: one page, or everything as a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    Paged,
    Streamed,
}

/// A validated time range: `from <= received_at < to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Timestamp,
    pub to: Timestamp,
}

impl TimeRange {
    pub fn week(week: IsoWeek) -> Self {
        Self { from: week.start(), to: week.end() }
    }

    fn ids(self) -> (RecordId, RecordId) {
        (RecordId::lower_bound(self.from), RecordId::lower_bound(self.to))
    }
}

/// One page of a range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub records: Vec<Record>,
    /// The cursor of the next page, `None` when this page ends the range.
    pub next: Option<String>,
}

/// Why a read was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A parameter is missing, malformed or out of bounds (the caller's fault).
    #[error("{parameter}: {message}")]
    Invalid { parameter: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(parameter: &'static str, message: impl Into<String>) -> ReadError {
    ReadError::Invalid { parameter, message: message.into() }
}

/// Reads records back through a [`RecordStore`].
#[derive(Debug, Clone)]
pub struct RecordReader {
    store: Arc<dyn RecordStore>,
    clock: Arc<dyn Clock>,
    settle: Duration,
}

impl RecordReader {
    /// `settle`: how long a request may take to commit (the store timeout);
    /// range reads end that long before now.
    pub fn new(store: Arc<dyn RecordStore>, clock: Arc<dyn Clock>, settle: Duration) -> Self {
        Self { store, clock, settle }
    }

    /// One record by id.
    pub async fn get(&self, id: RecordId) -> Result<Option<Record>, StoreError> {
        self.store.get(id).await
    }

    /// Validates `params` for `mode`: the range, the limit and the cursor.
    pub fn parse(&self, params: &RangeParams, mode: ReadMode) -> Result<Query, ReadError> {
        let range = parse_range(params, mode)?;
        let limit = match params.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(s) => s.parse::<usize>().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
                invalid("limit", format!("must be a whole number from 1 to {MAX_LIMIT}, not {:?}", clip(s)))
            })?,
        };
        if mode == ReadMode::Streamed && params.limit.is_some() {
            return Err(invalid("limit", "a streamed read returns the whole range; leave out limit (and cursor)"));
        }
        let after = match params.cursor.as_deref() {
            None => None,
            Some(_) if mode == ReadMode::Streamed => {
                return Err(invalid("cursor", "a streamed read returns the whole range; leave out cursor"));
            }
            Some(c) => Some(Cursor::decode(c, range)?),
        };
        Ok(Query { range, limit, after })
    }

    /// One page of `query`.
    pub async fn page(&self, query: &Query) -> Result<Page, ReadError> {
        let (from, to) = self.settled(query.range);
        let from = match query.after {
            Some(last) => last.next(),
            None => from,
        };
        let mut pages = self.store.scan_range(from, to, query.limit + 1);
        let mut records = Vec::with_capacity(query.limit + 1);
        while records.len() <= query.limit {
            match pages.next().await {
                Some(page) => records.extend(page?),
                None => break,
            }
        }
        let next = (records.len() > query.limit).then(|| {
            records.truncate(query.limit);
            Cursor { range: query.range, last: records[query.limit - 1].id }.encode()
        });
        Ok(Page { records, next })
    }

    /// Every record of `range` (up to the settle window), page by page, in
    /// bounded memory.
    pub fn stream(&self, range: TimeRange) -> RecordPages<'_> {
        let (from, to) = self.settled(range);
        self.store.scan_range(from, to, STREAM_PAGE)
    }

    /// The id bounds of `range`, its end pulled back to `now - settle`.
    fn settled(&self, range: TimeRange) -> (RecordId, RecordId) {
        let horizon = Timestamp::from_millis(
            self.clock.now().as_millis().saturating_sub(i64::try_from(self.settle.as_millis()).unwrap_or(i64::MAX)),
        );
        let (from, to) = TimeRange { from: range.from, to: range.to.min(horizon) }.ids();
        (from, to.max(from))
    }
}

/// A page of records as NDJSON: one export line (`{"id","received_at","data"}`,
/// the format of `records.ndjson.gz`) per record, each ending in a newline.
pub fn ndjson(records: &[Record]) -> String {
    let mut out = String::with_capacity(records.iter().map(|r| r.data.len() + 80).sum());
    for r in records {
        r.write_checked_export_line(&mut out);
        out.push('\n');
    }
    out
}

/// A validated range read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    pub range: TimeRange,
    pub limit: usize,
    /// The last id of the previous page.
    pub after: Option<RecordId>,
}

fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

fn parse_time(parameter: &'static str, s: &str) -> Result<Timestamp, ReadError> {
    Timestamp::parse_rfc3339(s).ok_or_else(|| {
        invalid(parameter, format!("{:?} is not an RFC 3339 time such as 2026-11-23T00:00:00Z", clip(s)))
    })
}

fn parse_range(params: &RangeParams, mode: ReadMode) -> Result<TimeRange, ReadError> {
    let range = match (&params.week, &params.from, &params.to) {
        (Some(week), None, None) => TimeRange::week(IsoWeek::parse(week).map_err(|e| invalid("week", e.to_string()))?),
        (Some(_), _, _) => return Err(invalid("week", "give either week or from and to, not both")),
        (None, Some(from), Some(to)) => TimeRange { from: parse_time("from", from)?, to: parse_time("to", to)? },
        (None, None, _) => return Err(invalid("from", "give the range: from and to (RFC 3339), or week (YYYY-Www)")),
        (None, Some(_), None) => return Err(invalid("to", "give the end of the range too (RFC 3339)")),
    };
    if range.from > range.to {
        return Err(invalid("from", "from is after to; the range is from <= received_at < to"));
    }
    let max_days = match mode {
        ReadMode::Paged => MAX_PAGED_DAYS,
        ReadMode::Streamed => MAX_STREAMED_DAYS,
    };
    if range.to.as_millis() - range.from.as_millis() > max_days * 86_400_000 {
        let how = match mode {
            ReadMode::Paged => {
                "; read longer ranges as several, or stream them (Accept: application/x-ndjson, up to 372 days)"
            }
            ReadMode::Streamed => "; read longer ranges as several",
        };
        return Err(invalid("to", format!("the range is longer than {max_days} days{how}")));
    }
    Ok(range)
}

/// Where the next page starts: the last id returned, bound to its range so a
/// cursor cannot be replayed against another query. Encoded as hex with a
/// check value, so a cursor tally did not issue (mistyped, truncated, edited)
/// is refused rather than misread. It is not a secret: it only names a
/// position in data the caller may read anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    range: TimeRange,
    last: RecordId,
}

const CURSOR_VERSION: u8 = 1;
const CURSOR_BYTES: usize = 1 + 8 + 8 + 16 + 4;

impl Cursor {
    fn check(payload: &[u8]) -> [u8; 4] {
        let digest = Sha256::new().chain_update(b"tally-cursor").chain_update(payload).finalize();
        [digest[0], digest[1], digest[2], digest[3]]
    }

    fn encode(self) -> String {
        let mut b = Vec::with_capacity(CURSOR_BYTES);
        b.push(CURSOR_VERSION);
        b.extend_from_slice(&self.range.from.as_millis().to_be_bytes());
        b.extend_from_slice(&self.range.to.as_millis().to_be_bytes());
        b.extend_from_slice(&self.last.to_bytes());
        let check = Self::check(&b);
        b.extend_from_slice(&check);
        hex::encode(b)
    }

    fn decode(s: &str, range: TimeRange) -> Result<RecordId, ReadError> {
        let not_ours = || {
            invalid("cursor", "this is not a cursor tally issued; use the `next` value of the previous page as it was")
        };
        let b = hex::decode(s).map_err(|_| not_ours())?;
        if b.len() != CURSOR_BYTES
            || b[0] != CURSOR_VERSION
            || Self::check(&b[..CURSOR_BYTES - 4]) != b[CURSOR_BYTES - 4..]
        {
            return Err(not_ours());
        }
        let i64_at = |at: usize| i64::from_be_bytes(b[at..at + 8].try_into().unwrap_or_default());
        let cursor = Cursor {
            range: TimeRange { from: Timestamp::from_millis(i64_at(1)), to: Timestamp::from_millis(i64_at(9)) },
            last: RecordId::from_bytes(b[17..33].try_into().unwrap_or_default()),
        };
        if cursor.range != range {
            return Err(invalid(
                "cursor",
                "this cursor belongs to another range; send the same from/to (or week) as for the first page",
            ));
        }
        Ok(cursor.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FixedClock, MemoryRecordStore};

    const T0: i64 = 1_795_939_200_000; // 2026-11-29T08:00:00Z

    fn params(from: &str, to: &str) -> RangeParams {
        RangeParams { from: Some(from.into()), to: Some(to.into()), ..RangeParams::default() }
    }

    fn reader(store: Arc<MemoryRecordStore>, now: i64) -> RecordReader {
        RecordReader::new(store, Arc::new(FixedClock::at(Timestamp::from_millis(now))), Duration::from_secs(10))
    }

    async fn seed(store: &MemoryRecordStore, n: usize) -> Vec<Record> {
        use crate::ports::RecordStore;
        let records: Vec<Record> = (0..n)
            .map(|i| {
                let at = Timestamp::from_millis(T0 + (i as i64 % 7) * 1000);
                Record { id: RecordId::generate(at), received_at: at, data: format!("{{\"i\":{i}}}") }
            })
            .collect();
        store.insert(&records, None).await.unwrap();
        let mut sorted = records;
        sorted.sort_by_key(|r| r.id);
        sorted
    }

    #[tokio::test]
    async fn cursors_walk_the_range_without_gaps_or_repeats() {
        let store = Arc::new(MemoryRecordStore::default());
        let all = seed(&store, 250).await;
        let reader = reader(store.clone(), T0 + 60_000);
        let mut p = params("2026-11-29T00:00:00Z", "2026-11-30T00:00:00Z");
        p.limit = Some("100".into());
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = reader.page(&reader.parse(&p, ReadMode::Paged).unwrap()).await.unwrap();
            pages += 1;
            // New records arriving between pages, after the last one read, do not disturb the walk.
            seed(&store, 3).await;
            seen.extend(page.records.iter().map(|r| r.id));
            match page.next {
                Some(next) => p.cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        let expected: Vec<RecordId> = all.iter().map(|r| r.id).collect();
        let mut deduped = seen.clone();
        deduped.dedup();
        assert_eq!(deduped.len(), seen.len(), "a record was repeated");
        assert!(expected.iter().all(|id| seen.contains(id)), "a record was skipped");
    }

    #[tokio::test]
    async fn the_settle_window_hides_records_still_committing() {
        let store = Arc::new(MemoryRecordStore::default());
        seed(&store, 7).await; // received T0 .. T0+6s
        let reader = reader(store, T0 + 13_500); // horizon T0 + 3.5 s
        let q = reader.parse(&params("2026-11-29T00:00:00Z", "2026-11-30T00:00:00Z"), ReadMode::Paged).unwrap();
        let page = reader.page(&q).await.unwrap();
        assert_eq!(page.records.len(), 4);
        assert!(page.records.iter().all(|r| r.received_at.as_millis() < T0 + 3_500));
        assert_eq!(page.next, None);
    }

    #[test]
    fn bad_parameters_name_themselves() {
        let reader = reader(Arc::new(MemoryRecordStore::default()), T0);
        let refused = |p: RangeParams, mode| match reader.parse(&p, mode) {
            Err(ReadError::Invalid { parameter, .. }) => parameter,
            other => panic!("{p:?} was not refused: {other:?}"),
        };
        let ok = params("2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z");
        assert_eq!(refused(RangeParams { limit: Some("0".into()), ..ok.clone() }, ReadMode::Paged), "limit");
        assert_eq!(refused(RangeParams { limit: Some("1001".into()), ..ok.clone() }, ReadMode::Paged), "limit");
        assert_eq!(refused(RangeParams { limit: Some("ten".into()), ..ok.clone() }, ReadMode::Paged), "limit");
        assert_eq!(refused(params("yesterday", "2026-11-02T00:00:00Z"), ReadMode::Paged), "from");
        assert_eq!(refused(params("2026-11-03T00:00:00Z", "2026-11-02T00:00:00Z"), ReadMode::Paged), "from");
        assert_eq!(refused(params("2026-10-01T00:00:00Z", "2026-11-02T00:00:00Z"), ReadMode::Paged), "to");
        assert!(reader.parse(&params("2026-10-01T00:00:00Z", "2026-11-02T00:00:00Z"), ReadMode::Streamed).is_ok());
        assert_eq!(
            refused(RangeParams { week: Some("2026-W99".into()), ..RangeParams::default() }, ReadMode::Paged),
            "week"
        );
        assert_eq!(refused(RangeParams { week: Some("2026-W47".into()), ..ok.clone() }, ReadMode::Paged), "week");
        assert_eq!(refused(RangeParams::default(), ReadMode::Paged), "from");
        assert_eq!(refused(RangeParams { cursor: Some("00ff".into()), ..ok.clone() }, ReadMode::Paged), "cursor");
        assert_eq!(refused(RangeParams { cursor: Some("not hex".into()), ..ok.clone() }, ReadMode::Paged), "cursor");
        assert!(reader.parse(&RangeParams { limit: Some("1000".into()), ..ok.clone() }, ReadMode::Paged).is_ok());
    }

    #[test]
    fn a_cursor_is_refused_when_edited_or_used_for_another_range() {
        let range = TimeRange { from: Timestamp::from_millis(T0), to: Timestamp::from_millis(T0 + 1000) };
        let c = Cursor { range, last: RecordId::lower_bound(Timestamp::from_millis(T0 + 5)) }.encode();
        assert_eq!(Cursor::decode(&c, range).unwrap(), RecordId::lower_bound(Timestamp::from_millis(T0 + 5)));
        let mut edited = c.clone().into_bytes();
        edited[40] = if edited[40] == b'0' { b'1' } else { b'0' };
        assert!(Cursor::decode(std::str::from_utf8(&edited).unwrap(), range).is_err());
        let other = TimeRange { to: Timestamp::from_millis(T0 + 2000), ..range };
        assert!(Cursor::decode(&c, other).is_err());
    }
}
