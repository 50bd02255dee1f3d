//! tally's aggregator on an NDJSON file of `{"id","received_at","data"}` lines
//! (the `records.ndjson.gz` format, uncompressed), for the side-by-side with
//! DuckDB in `bench/`. Streams the file in blocks of lines to one aggregator
//! per thread, merges them, and writes `summary.json`. Memory is bounded by
//! the blocks in flight, whatever the file's size.
//!
//! Run with `cargo run --release -p tally-core --example aggregate_ndjson --
//! FILE WEEK [THREADS] [SUMMARY_OUT]`. Prints records/s, the aggregator
//! threads' CPU time (records per CPU-second is the per-core rate, whatever
//! else runs on the machine) and peak RSS (Linux).

use std::io::BufRead;
use std::sync::mpsc;
use std::time::Instant;

use serde::Deserialize;
use serde_json::value::RawValue;
use tally_core::summary::{Aggregator, SummaryOptions};
use tally_core::{IsoWeek, Record, RecordId, Timestamp};

#[derive(Deserialize)]
struct Line<'a> {
    id: &'a str,
    received_at: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
}

const BLOCK: usize = 4096;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: aggregate_ndjson FILE WEEK [THREADS] [SUMMARY_OUT]")?;
    let week = IsoWeek::parse(&args.next().ok_or("WEEK missing")?)?;
    let threads: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2).max(1);
    let summary_out = args.next();
    let options = SummaryOptions::default();
    let start = Instant::now();

    let file = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&path)?);
    let (mut total, mut agg, mut agg_cpu) = (0u64, None::<Aggregator>, 0.0f64);
    std::thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
        let mut senders = Vec::new();
        let mut workers = Vec::new();
        for _ in 0..threads {
            let (tx, rx) = mpsc::sync_channel::<Vec<String>>(2);
            senders.push(tx);
            let options = &options;
            workers.push(s.spawn(move || -> Result<(Aggregator, f64), String> {
                let cpu_start = thread_cpu_secs();
                let mut agg = Aggregator::new(week, options);
                let mut rec = Record {
                    id: RecordId::from_bytes([0; 16]),
                    received_at: Timestamp::from_millis(0),
                    data: String::new(),
                };
                for block in rx {
                    for line in &block {
                        let l: Line<'_> = serde_json::from_str(line).map_err(|e| format!("bad line: {e}"))?;
                        rec.id = RecordId::parse(l.id).map_err(|e| e.to_string())?;
                        rec.received_at = Timestamp::parse_rfc3339(l.received_at).ok_or("bad received_at")?;
                        rec.data.clear();
                        rec.data.push_str(l.data.get());
                        agg.push(&rec);
                    }
                }
                Ok((agg, thread_cpu_secs() - cpu_start))
            }));
        }
        // Round-robin blocks of lines to the workers; the bounded channels keep
        // at most 3 blocks per worker in memory.
        let mut block = Vec::with_capacity(BLOCK);
        let mut next = 0;
        for line in file.lines() {
            block.push(line?);
            total += 1;
            if block.len() == BLOCK {
                senders[next % threads].send(std::mem::replace(&mut block, Vec::with_capacity(BLOCK)))?;
                next += 1;
            }
        }
        if !block.is_empty() {
            senders[next % threads].send(block)?;
        }
        drop(senders);
        for w in workers {
            let (part, cpu) = w.join().map_err(|_| "worker panicked")??;
            agg_cpu += cpu;
            match agg.as_mut() {
                Some(a) => a.merge(part)?,
                None => agg = Some(part),
            }
        }
        Ok(())
    })?;
    let summary = agg.ok_or("no worker")?.finish();
    let json = summary.to_json()?;
    if let Some(out) = summary_out {
        std::fs::write(out, &json)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let hwm = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM")).map(|l| l.trim_start_matches("VmHWM:").trim().to_owned())
        })
        .unwrap_or_else(|| "n/a".into());
    println!(
        "records={total} secs={secs:.3} records_per_s={:.0} threads={threads} peak_rss={hwm} \
         agg_cpu_secs={agg_cpu:.3} records_per_cpu_s={:.0}",
        total as f64 / secs,
        total as f64 / agg_cpu.max(1e-9)
    );
    Ok(())
}

/// CPU time of the calling thread (Linux; 0 elsewhere): the aggregator's own
/// cost, not inflated by other processes competing for the cores.
fn thread_cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e9)
}
