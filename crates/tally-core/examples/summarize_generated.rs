//! Summarizes generated records into a folder, for looking at the outputs and
//! for whole-run timing: `cargo run --release -p tally-core --features testing
//! --example summarize_generated -- OUT_DIR [RECORDS]`. Prints records/s and
//! peak RSS (Linux).

use std::path::PathBuf;
use std::time::Instant;

use tally_core::summary::{NoProgress, summarize_week};
use tally_core::testing::MemoryRecordStore;
use tally_core::{IsoWeek, RecordStore, SummaryOptions, SystemClock};

#[path = "../tests/common/mod.rs"]
mod common;

/// A bare folder sink for this example (the real one, with atomic writes, is
/// `tally_local::DirSummarySink`, which tally-core cannot depend on).
mod folder {
    use std::path::PathBuf;

    use async_trait::async_trait;
    use bytes::Bytes;
    use sha2::{Digest, Sha256};
    use tally_core::IsoWeek;
    use tally_core::ports::{ObjectInfo, ObjectUpload, SinkError, SummarySink};

    #[derive(Debug)]
    pub struct FolderSink(pub PathBuf);

    fn io(e: std::io::Error) -> SinkError {
        SinkError::internal("example sink", e)
    }

    impl FolderSink {
        fn path(&self, week: IsoWeek, name: &str) -> PathBuf {
            self.0.join("summaries").join(week.to_string()).join(name)
        }
        fn write(&self, week: IsoWeek, name: &str, body: &[u8]) -> Result<ObjectInfo, SinkError> {
            let path = self.path(week, name);
            std::fs::create_dir_all(path.parent().unwrap_or(&self.0)).map_err(io)?;
            std::fs::write(&path, body).map_err(io)?;
            Ok(ObjectInfo {
                key: format!("summaries/{week}/{name}"),
                bytes: body.len() as u64,
                sha256: hex::encode(Sha256::digest(body)),
            })
        }
    }

    struct Upload<'a>(&'a FolderSink, IsoWeek, String, Vec<u8>);

    #[async_trait]
    impl ObjectUpload for Upload<'static> {
        async fn write(&mut self, chunk: Bytes) -> Result<(), SinkError> {
            self.3.extend_from_slice(&chunk);
            Ok(())
        }
        async fn finish(self: Box<Self>) -> Result<ObjectInfo, SinkError> {
            self.0.write(self.1, &self.2, &self.3)
        }
        async fn abort(self: Box<Self>) -> Result<(), SinkError> {
            Ok(())
        }
    }

    #[async_trait]
    impl SummarySink for &'static FolderSink {
        async fn begin_week(&self, _: IsoWeek) -> Result<(), SinkError> {
            Ok(())
        }
        async fn put_object(&self, w: IsoWeek, n: &str, _: &str, b: Bytes) -> Result<ObjectInfo, SinkError> {
            self.write(w, n, &b)
        }
        async fn open_object(&self, w: IsoWeek, n: &str, _: &str) -> Result<Box<dyn ObjectUpload>, SinkError> {
            Ok(Box::new(Upload(self, w, n.to_owned(), Vec::new())))
        }
        async fn commit_week(&self, w: IsoWeek, m: Bytes) -> Result<ObjectInfo, SinkError> {
            self.write(w, "manifest.json", &m)
        }
        async fn read_object(&self, w: IsoWeek, n: &str) -> Result<Option<Bytes>, SinkError> {
            Ok(std::fs::read(self.path(w, n)).ok().map(Bytes::from))
        }
        async fn delete_object(&self, w: IsoWeek, n: &str) -> Result<(), SinkError> {
            match std::fs::remove_file(self.path(w, n)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
                _ => Ok(()),
            }
        }
        async fn list_weeks(&self) -> Result<Vec<IsoWeek>, SinkError> {
            Ok(Vec::new())
        }
        async fn put_index(&self, name: &str, _: &str, body: Bytes) -> Result<ObjectInfo, SinkError> {
            std::fs::create_dir_all(self.0.join("summaries")).map_err(io)?;
            std::fs::write(self.0.join("summaries").join(name), &body).map_err(io)?;
            Ok(ObjectInfo { key: name.to_owned(), bytes: body.len() as u64, sha256: String::new() })
        }
        async fn read_index(&self, n: &str) -> Result<Option<Bytes>, SinkError> {
            Ok(std::fs::read(self.0.join("summaries").join(n)).ok().map(Bytes::from))
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().unwrap_or_else(|| "summary-out".into()));
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(100_000);
    let week = IsoWeek::parse("2026-W47")?;
    let store = MemoryRecordStore::default();
    for chunk in common::records(week, n, 7, common::varied_event_text).chunks(10_000) {
        store.insert(chunk, None).await?;
    }
    // Where the time goes, step by step, on this machine.
    let records = tally_core::testing::collect_week(&store, week, 1000).await;
    let (t, cpu) = (Instant::now(), thread_cpu_secs());
    let mut agg = tally_core::Aggregator::new(week, &SummaryOptions::default());
    records.iter().for_each(|r| {
        agg.push(r);
    });
    drop(agg.finish());
    let cpu = thread_cpu_secs() - cpu;
    println!(
        "aggregator alone: {:.0} records/s wall, {:.0} records per CPU-second (one core)",
        n as f64 / t.elapsed().as_secs_f64(),
        n as f64 / cpu.max(1e-9)
    );
    let t = Instant::now();
    let mut line = String::new();
    let mut total = 0;
    for r in &records {
        line.clear();
        r.write_export_line(&mut line, true);
        total += line.len();
    }
    println!("write_json alone: {:.0} records/s", n as f64 / t.elapsed().as_secs_f64());
    for level in [1, 2, 3, 6] {
        let t = Instant::now();
        let mut gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::new(level));
        for r in &records {
            std::io::Write::write_all(&mut gz, r.data.as_bytes())?;
        }
        let gz_len = gz.finish()?.len();
        let rate = n as f64 / t.elapsed().as_secs_f64();
        println!("gzip level {level} alone: {rate:.0} records/s ({total} → {gz_len} bytes)");
    }
    drop(records);

    let sink: &'static folder::FolderSink = Box::leak(Box::new(folder::FolderSink(out.clone())));
    let start = Instant::now();
    let report = summarize_week(&store, &sink, &SystemClock, week, &SummaryOptions::default(), &NoProgress).await?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} records in {secs:.2}s: {:.0} records/s (whole run, incl. gzip)",
        report.records,
        report.records as f64 / secs
    );
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(line) = status.lines().find(|l| l.starts_with("VmHWM")) {
            println!("peak RSS (incl. the in-memory store): {}", line.trim_start_matches("VmHWM:").trim());
        }
    }
    println!("outputs in {}", out.join("summaries").join(week.to_string()).display());
    Ok(())
}

/// CPU time of the calling thread (Linux; 0 elsewhere), so the aggregator's
/// rate per core stays meaningful when other processes share the cores.
fn thread_cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e9)
}
