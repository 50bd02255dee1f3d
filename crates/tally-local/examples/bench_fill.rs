//! Fills a tally SQLite store with generated ~250-byte varied nested records
//! (five record kinds, see `common::varied_event_text`) spread over one ISO
//! week, and optionally writes the same records as NDJSON (one
//! `{"id","received_at","data"}` line each, the `records.ndjson.gz` format)
//! for the aggregator-on-a-file and DuckDB comparisons. Bench-only.
//!
//! Run with `cargo run --release -p tally-local --example bench_fill --
//! DATA_DIR RECORDS [WEEK] [NDJSON_PATH]`; `tally summarize --data-dir DATA_DIR
//! --week WEEK` then reads the store as a user's would be read.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use tally_core::{IsoWeek, Record, RecordId, RecordStore, Timestamp};
use tally_local::{SqliteOptions, SqliteRecordStore};

#[path = "../../tally-core/tests/common/mod.rs"]
mod common;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: bench_fill DATA_DIR RECORDS [WEEK] [NDJSON]")?);
    let n: usize = args.next().ok_or("RECORDS missing")?.parse()?;
    let week = IsoWeek::parse(&args.next().unwrap_or_else(|| "2026-W47".into()))?;
    let ndjson = args.next().map(PathBuf::from);
    std::fs::create_dir_all(&dir)?;
    let store = SqliteRecordStore::open(dir.join("tally.db"), SqliteOptions::default())?;
    let mut out = ndjson.as_ref().map(std::fs::File::create).transpose()?.map(std::io::BufWriter::new);

    // Generated in chunks with distinct seeds so memory stays small at 4M;
    // chunk c covers the c-th slice of the week, so ids stay in time order.
    let start = Instant::now();
    let chunk = 100_000;
    let chunks = n.div_ceil(chunk).max(1) as i64;
    let week_ms = week.end().as_millis() - week.start().as_millis();
    let (mut bytes, mut line) = (0usize, String::new());
    for (c, first) in (0..n).step_by(chunk).enumerate() {
        let len = chunk.min(n - first);
        let slice = week.start().as_millis() + week_ms / chunks * c as i64;
        let records: Vec<Record> = common::records(week, len, 1000 + c as u64, common::varied_event_text)
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let at =
                    Timestamp::from_millis(slice + (r.received_at.as_millis() - week.start().as_millis()) / chunks);
                Record { id: RecordId::deterministic(at, &(c as u64).to_be_bytes(), i), received_at: at, data: r.data }
            })
            .collect();
        for batch in records.chunks(10_000) {
            store.insert(batch, None).await?;
        }
        if let Some(out) = out.as_mut() {
            for r in &records {
                line.clear();
                r.write_json(&mut line);
                line.push('\n');
                out.write_all(line.as_bytes())?;
            }
        }
        bytes += records.iter().map(|r| r.data.len()).sum::<usize>();
    }
    if let Some(mut out) = out {
        out.flush()?;
    }
    eprintln!(
        "{n} records ({:.0} bytes each on average) into {} in {:.1}s",
        bytes as f64 / n.max(1) as f64,
        dir.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
