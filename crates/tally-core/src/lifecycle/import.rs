//! `tally import`: NDJSON lines in, records stored under ids that make a
//! rerun add nothing.
//!
//! Two kinds of line, told apart line by line:
//! - **export lines** — exactly the keys `id`, `received_at`, `data`, as
//!   `records.ndjson.gz` and `tally export` write them — are restored with
//!   their own id and `received_at` (a restore);
//! - **plain records** — any other JSON object — get `received_at` from
//!   [`ImportOptions::time_field`] (or a fixed time, or now) and an id whose
//!   timestamp is that time and whose random part is derived from the line's
//!   content and number, so importing the same file twice, or resuming an
//!   interrupted import, stores each line once.
//!
//! Every record passes the same validation and limits as the API. The first
//! bad line stops the import with its number; the lines before it are stored
//! (a rerun skips them). Lines go to the store in batches of
//! [`BATCH_RECORDS`], one batch in the store while the next is parsed: the
//! store's writes and the parsing overlap (on this 2-core machine, a 1M-line
//! restore into SQLite went from 135k to 215k records/s; bench/import).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::clock::{Clock, Timestamp};
use crate::id::RecordId;
use crate::ports::{RecordLifecycle, RestoreOutcome, StoreError};
use crate::record::Record;
use crate::validate::{BodyFormat, Limits, Parsed, parse_body};
use crate::week::IsoWeek;

/// Records per call to [`RecordLifecycle::restore`].
pub const BATCH_RECORDS: usize = 5000;
/// Numbers below this are epoch seconds, above it milliseconds (10^11 s is
/// the year 5138; 10^11 ms is March 1973).
const SECONDS_BELOW: f64 = 1e11;
/// The latest time an id can carry and a week can name: 9999-12-31T23:59:59.999Z.
const LATEST_MS: i64 = 253_402_300_799_999;

/// How plain records get their `received_at`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Dotted path of a field holding the time (RFC 3339 string, or epoch
    /// seconds or milliseconds as a number), e.g. `ts` or `meta.sent_at`.
    pub time_field: Option<String>,
    /// The time of every plain record without `time_field`. With neither,
    /// the time the import started: a rerun then gives new ids.
    pub received_at: Option<Timestamp>,
    /// Validate only; store nothing.
    pub dry_run: bool,
}

/// What an import did, so far or in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Lines read, blank ones included.
    pub lines: u64,
    /// Records stored by this import.
    pub imported: u64,
    /// Records that were already stored identically (a rerun).
    pub present: u64,
    /// Valid records seen (in a dry run: what would be imported or skipped).
    pub valid: u64,
    /// Weeks that gained records: their summaries, if any, are stale.
    pub changed_weeks: BTreeSet<IsoWeek>,
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("line {line}: {message}")]
    Line { line: u64, message: String },
    #[error(
        "line {line}: record {id} is already stored with other content; \
         an export line must not change a stored record (erase it first, or fix the line)"
    )]
    Conflict { line: u64, id: RecordId },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One import: feed it lines with [`line`](Self::line), then [`finish`](Self::finish).
#[derive(Debug)]
pub struct Importer {
    store: Arc<dyn RecordLifecycle>,
    limits: Limits,
    options: ImportOptions,
    started_at: Timestamp,
    time_path: Vec<String>,
    /// The batch being parsed, and the line number of each of its records.
    records: Vec<Record>,
    lines: Vec<u64>,
    /// The batch the store is writing.
    in_flight: Option<InFlight>,
    report: ImportReport,
}

/// A batch handed to the store, with its line numbers.
#[derive(Debug)]
struct InFlight {
    lines: Vec<u64>,
    task: tokio::task::JoinHandle<(Vec<Record>, Result<RestoreOutcome, StoreError>)>,
}

/// The shape of an export line; anything else is a plain record.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportLine<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    received_at: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

impl Importer {
    pub fn new(store: Arc<dyn RecordLifecycle>, clock: &dyn Clock, limits: Limits, options: ImportOptions) -> Self {
        let time_path = options.time_field.iter().flat_map(|p| p.split('.')).map(str::to_owned).collect();
        Self {
            store,
            limits,
            options,
            started_at: clock.now(),
            time_path,
            records: Vec::with_capacity(BATCH_RECORDS),
            lines: Vec::with_capacity(BATCH_RECORDS),
            in_flight: None,
            report: ImportReport::default(),
        }
    }

    pub fn report(&self) -> &ImportReport {
        &self.report
    }

    /// Takes line `number` (1-based; without its newline). A bad line stores
    /// what came before it and stops the import.
    pub async fn line(&mut self, number: u64, bytes: &[u8]) -> Result<(), ImportError> {
        self.report.lines += 1;
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let record = match self.parse(number, bytes) {
            Ok(record) => record,
            Err(message) => {
                self.dispatch().await?;
                self.settle().await?;
                return Err(ImportError::Line { line: number, message });
            }
        };
        self.report.valid += 1;
        if !self.options.dry_run {
            self.records.push(record);
            self.lines.push(number);
            if self.records.len() >= BATCH_RECORDS {
                self.dispatch().await?;
            }
        }
        Ok(())
    }

    /// Stores the last batch and returns the totals.
    pub async fn finish(mut self) -> Result<ImportReport, ImportError> {
        self.dispatch().await?;
        self.settle().await?;
        Ok(self.report)
    }

    /// Hands the parsed batch to the store, once the previous one is settled
    /// (so a conflict there stops the import before this batch is written).
    async fn dispatch(&mut self) -> Result<(), ImportError> {
        self.settle().await?;
        if self.records.is_empty() {
            return Ok(());
        }
        let records = std::mem::replace(&mut self.records, Vec::with_capacity(BATCH_RECORDS));
        let lines = std::mem::replace(&mut self.lines, Vec::with_capacity(BATCH_RECORDS));
        let store = self.store.clone();
        let task = tokio::spawn(async move {
            let outcome = store.restore(&records).await;
            (records, outcome)
        });
        self.in_flight = Some(InFlight { lines, task });
        Ok(())
    }

    /// Waits for the batch in the store and counts it; on a conflict, stores
    /// the lines before the conflicting one and stops there.
    async fn settle(&mut self) -> Result<(), ImportError> {
        let Some(InFlight { lines, task }) = self.in_flight.take() else { return Ok(()) };
        let (records, outcome) =
            task.await.map_err(|e| StoreError::internal("an import batch's store task failed", e))?;
        let line_of = |id: RecordId| records.iter().position(|r| r.id == id).map_or(0, |at| lines[at]);
        match outcome? {
            RestoreOutcome::Restored { inserted, present } => {
                self.count(&records, inserted, present);
                Ok(())
            }
            RestoreOutcome::Conflict(id) => {
                let at = records.iter().position(|r| r.id == id).unwrap_or(0);
                if at > 0 {
                    match self.store.restore(&records[..at]).await? {
                        RestoreOutcome::Restored { inserted, present } => self.count(&records[..at], inserted, present),
                        RestoreOutcome::Conflict(other) => {
                            return Err(ImportError::Conflict { line: line_of(other), id: other });
                        }
                    }
                }
                Err(ImportError::Conflict { line: line_of(id), id })
            }
        }
    }

    fn count(&mut self, records: &[Record], inserted: usize, present: usize) {
        self.report.imported += inserted as u64;
        self.report.present += present as u64;
        if inserted > 0 {
            self.report.changed_weeks.extend(records.iter().map(|r| IsoWeek::containing(r.received_at)));
        }
    }

    fn parse(&self, number: u64, line: &[u8]) -> Result<Record, String> {
        if let Ok(export) = serde_json::from_slice::<ExportLine<'_>>(line) {
            return self.export_line(&export);
        }
        let data = self.object(line)?;
        let received_at = match (self.time_path.is_empty(), self.options.received_at) {
            (false, _) => self.time_of(data)?,
            (true, Some(at)) => at,
            (true, None) => self.started_at,
        };
        let trimmed = data.trim_matches(crate::validate::is_json_ws);
        Ok(Record {
            id: RecordId::deterministic(received_at, trimmed.as_bytes(), number as usize),
            received_at,
            data: trimmed.to_owned(),
        })
    }

    fn export_line(&self, line: &ExportLine<'_>) -> Result<Record, String> {
        let id = RecordId::parse(&line.id).map_err(|e| format!("export line: {e}"))?;
        let received_at = Timestamp::parse_rfc3339(&line.received_at)
            .ok_or_else(|| format!("export line: received_at {:?} is not an RFC 3339 time", clip(&line.received_at)))?;
        if id.timestamp() != received_at {
            return Err(format!(
                "export line: id {id} was not given at received_at {} (an id's time is its received_at); \
                 the line was edited or is not from tally",
                received_at.to_rfc3339()
            ));
        }
        let data = self.object(line.data.get().as_bytes()).map_err(|e| format!("export line's data: {e}"))?;
        Ok(Record { id, received_at, data: data.to_owned() })
    }

    /// The line (or an export line's `data`) as one valid record, within the API's limits.
    fn object<'a>(&self, bytes: &'a [u8]) -> Result<&'a str, String> {
        match parse_body(bytes, BodyFormat::Json, &self.limits) {
            Ok(Parsed::Single(data)) => Ok(data),
            Ok(Parsed::Batch(_)) => Err("an array; each line must hold one JSON object".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn time_of(&self, data: &str) -> Result<Timestamp, String> {
        let path = self.options.time_field.as_deref().unwrap_or_default();
        // Walk down raw values: a record may hold numbers such as 1e400 that
        // a `serde_json::Value` cannot, anywhere outside the time field.
        let mut raw: &RawValue = serde_json::from_str(data).map_err(|e| e.to_string())?;
        for key in &self.time_path {
            let object: Option<HashMap<String, &RawValue>> = serde_json::from_str(raw.get()).ok();
            match object.and_then(|o| o.get(key).copied()) {
                Some(inner) => raw = inner,
                None => {
                    return Err(format!(
                        "time field {path} is missing; every line needs it (or leave out --time-field)"
                    ));
                }
            }
        }
        let found: Option<serde_json::Value> = serde_json::from_str(raw.get()).ok();
        let at = match found {
            Some(serde_json::Value::String(s)) => Timestamp::parse_rfc3339(&s)
                .ok_or_else(|| format!("time field {path}: {:?} is not an RFC 3339 time", clip(&s)))?,
            Some(serde_json::Value::Number(n)) => {
                let x = n.as_f64().ok_or_else(|| format!("time field {path}: {n} is not a number of seconds"))?;
                let ms = if x.abs() < SECONDS_BELOW { x * 1000.0 } else { x };
                Timestamp::from_millis(ms.round() as i64)
            }
            Some(other) => {
                return Err(format!(
                    "time field {path} is {other}; expected an RFC 3339 string or epoch seconds/milliseconds"
                ));
            }
            None => {
                return Err(format!("time field {path} is missing; every line needs it (or leave out --time-field)"));
            }
        };
        if !(0..=LATEST_MS).contains(&at.as_millis()) {
            return Err(format!("time field {path}: {} is outside 1970-01-01 to 9999-12-31", at.as_millis()));
        }
        Ok(at)
    }
}

fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::ports::RecordStore;
    use crate::testing::{FixedClock, MemoryRecordStore};

    const NOW: i64 = 1_795_939_200_000; // 2026-11-29T08:00:00Z

    fn importer(store: &Arc<MemoryRecordStore>, options: ImportOptions) -> Importer {
        Importer::new(store.clone(), &FixedClock::at(Timestamp::from_millis(NOW)), Limits::default(), options)
    }

    async fn run(
        store: &Arc<MemoryRecordStore>,
        options: ImportOptions,
        text: &str,
    ) -> Result<ImportReport, ImportError> {
        let mut imp = importer(store, options);
        for (i, line) in text.split('\n').enumerate() {
            imp.line(i as u64 + 1, line.as_bytes()).await?;
        }
        imp.finish().await
    }

    fn by_time_field() -> ImportOptions {
        ImportOptions { time_field: Some("meta.ts".into()), ..ImportOptions::default() }
    }

    #[tokio::test]
    async fn plain_lines_get_their_time_and_a_rerun_adds_nothing() {
        let store = Arc::new(MemoryRecordStore::default());
        let text = "{\"meta\":{\"ts\":\"2026-11-23T10:00:00Z\"},\"n\":1}\n\
                    {\"meta\":{\"ts\":1795392000},\"n\":2}\n\
                    \n\
                    {\"meta\":{\"ts\":1795392000123},\"n\":3}\n\
                    {\"meta\":{\"ts\":1795392000},\"n\":2}";
        let first = run(&store, by_time_field(), text).await.unwrap();
        assert_eq!((first.lines, first.valid, first.imported, first.present), (5, 4, 4, 0));
        assert_eq!(store.len(), 4, "two equal lines are two records");
        let again = run(&store, by_time_field(), text).await.unwrap();
        assert_eq!((again.imported, again.present), (0, 4));
        assert!(again.changed_weeks.is_empty());
        let times: BTreeSet<i64> = store
            .scan_range(RecordId::from_bytes([0; 16]), RecordId::from_bytes([0xff; 16]), 100)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .flat_map(Result::unwrap)
            .map(|r| {
                assert_eq!(r.id.timestamp(), r.received_at);
                r.received_at.as_millis()
            })
            .collect();
        assert_eq!(times, BTreeSet::from([1_795_392_000_000, 1_795_392_000_123, 1_795_428_000_000]));
    }

    #[tokio::test]
    async fn export_lines_are_restored_as_they_were() {
        let store = Arc::new(MemoryRecordStore::default());
        let at = Timestamp::from_millis(1_795_392_000_000);
        let original = Record { id: RecordId::generate(at), received_at: at, data: r#"{"b":1.0,"a":1e400}"#.into() };
        let line = original.to_json();
        let report = run(&store, ImportOptions::default(), &line).await.unwrap();
        assert_eq!(report.imported, 1);
        assert_eq!(store.get(original.id).await.unwrap(), Some(original.clone()));
        // The same id with other content is refused, naming the line.
        let edited = line.replace("1.0", "2.0");
        let err = run(&store, ImportOptions::default(), &format!("{{\"x\":1}}\n{edited}")).await.unwrap_err();
        assert!(matches!(err, ImportError::Conflict { line: 2, id } if id == original.id), "{err}");
        assert_eq!(store.len(), 2, "the line before the conflict is stored");
    }

    #[tokio::test]
    async fn a_bad_line_stops_the_import_after_storing_the_lines_before_it() {
        let store = Arc::new(MemoryRecordStore::default());
        let text = "{\"meta\":{\"ts\":1795392000},\"n\":1}\n{\"meta\":{\"ts\":1795392000},\"n\":2}\n[1,2]\n{\"n\":4}";
        let err = run(&store, by_time_field(), text).await.unwrap_err();
        assert!(matches!(err, ImportError::Line { line: 3, .. }), "{err}");
        assert_eq!(store.len(), 2);
        for (text, needle) in [
            ("{\"n\":1}", "time field meta.ts is missing"),
            ("{\"meta\":{\"ts\":true}}", "is true"),
            ("{\"meta\":{\"ts\":\"monday\"}}", "not an RFC 3339 time"),
            ("{\"meta\":{\"ts\":-5}}", "outside 1970"),
            ("{\"a\":1,\"a\":2,\"meta\":{\"ts\":0}}", "repeats the key"),
            ("not json", "line 1"),
        ] {
            let err = run(&store, by_time_field(), text).await.unwrap_err();
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
        let forged = r#"{"id":"01KAQ6ZP4W0000000000000000","received_at":"2026-01-01T00:00:00Z","data":{}}"#;
        let err = run(&store, ImportOptions::default(), forged).await.unwrap_err();
        assert!(err.to_string().contains("was not given at received_at"), "{err}");
    }

    #[tokio::test]
    async fn a_conflict_in_a_later_batch_stops_there_with_every_line_before_it_stored() {
        let store = Arc::new(MemoryRecordStore::default());
        let at = |i: i64| Timestamp::from_millis(1_795_392_000_000 + i);
        let records: Vec<Record> = (0..12_000)
            .map(|i| Record {
                id: RecordId::deterministic(at(i), b"x", 0),
                received_at: at(i),
                data: format!("{{\"i\":{i}}}"),
            })
            .collect();
        // Line 7001 (in the second batch) is already stored with other content.
        let clash = Record { data: "{\"other\":true}".into(), ..records[7000].clone() };
        store.restore(std::slice::from_ref(&clash)).await.unwrap();
        let text: Vec<String> = records.iter().map(Record::to_json).collect();
        let err = run(&store, ImportOptions::default(), &text.join("\n")).await.unwrap_err();
        assert!(matches!(err, ImportError::Conflict { line: 7001, .. }), "{err}");
        assert_eq!(store.len(), 7001, "the 7000 lines before it and the clashing record");
        assert!(store.get(records[6999].id).await.unwrap().is_some());
        assert!(store.get(records[7001].id).await.unwrap().is_none(), "nothing after the conflict");
    }

    #[tokio::test]
    async fn a_dry_run_validates_and_stores_nothing() {
        let store = Arc::new(MemoryRecordStore::default());
        let options = ImportOptions { dry_run: true, ..by_time_field() };
        let report = run(&store, options.clone(), "{\"meta\":{\"ts\":0}}\n{\"meta\":{\"ts\":1}}").await.unwrap();
        assert_eq!((report.valid, report.imported, store.len()), (2, 0, 0));
        assert!(run(&store, options, "{\"meta\":{\"ts\":0}}\n{").await.is_err());
    }

    #[tokio::test]
    async fn without_a_time_field_every_line_gets_the_fixed_time() {
        let store = Arc::new(MemoryRecordStore::default());
        let at = Timestamp::from_millis(1_700_000_000_000);
        let options = ImportOptions { received_at: Some(at), ..ImportOptions::default() };
        run(&store, options.clone(), "{\"a\":1}\n{\"a\":2}").await.unwrap();
        let again = run(&store, options, "{\"a\":1}\n{\"a\":2}").await.unwrap();
        assert_eq!((again.imported, again.present, store.len()), (0, 2, 2));
    }
}
