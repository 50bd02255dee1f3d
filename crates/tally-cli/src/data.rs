//! `tally export`, `tally import` and `tally prune`: the data lifecycle from
//! the command line. The use cases are in `tally_core::lifecycle`; this
//! module opens files, shows progress and prints what happened.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tally_core::lifecycle::{
    ImportError, ImportOptions, ImportReport, Importer, RangeParams, ReadMode, RecordReader, ndjson,
};
use tally_core::summary::{SummaryOptions, Trigger};
use tally_core::{IsoWeek, Limits, SystemClock, Timestamp};

use crate::Storage;
use crate::progress::CliProgress;

/// A progress bar on a terminal, nothing otherwise (the summary line says it all).
fn bar(len: Option<u64>, template: &str) -> Option<ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let bar = len.map_or_else(ProgressBar::new_spinner, ProgressBar::new);
        bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    })
}

/// `tally export`: the records of a range as NDJSON export lines, to a file
/// (gzip when it ends in `.gz`, zstd when `.zst`; written to `FILE.partial` and renamed when
/// complete) or to stdout.
pub async fn export(storage: &Storage, params: RangeParams, out: &Path, settle: Duration) -> anyhow::Result<()> {
    let reader = RecordReader::new(storage.store.clone(), Arc::new(SystemClock), settle);
    let query = reader.parse(&params, ReadMode::Streamed).map_err(|e| anyhow::anyhow!("{e}"))?;
    let to_stdout = out == Path::new("-");
    let partial = PathBuf::from(format!("{}.partial", out.display()));
    let mut sink = if to_stdout {
        ExportWriter::Plain(Box::new(std::io::stdout().lock()))
    } else {
        let file = File::create(&partial).with_context(|| {
            format!("cannot create {}; check the directory exists and is writable", partial.display())
        })?;
        ExportWriter::for_path(out, std::io::BufWriter::new(file)).context("cannot start the zstd stream")?
    };
    let progress = bar(None, "{spinner} [{elapsed_precise}] {pos} records exported");
    let mut pages = reader.stream(query.range);
    let mut records = 0u64;
    while let Some(page) = pages.next().await {
        let page = page.context("reading the store failed; nothing is lost — run the same command again")?;
        records += page.len() as u64;
        sink.write_all(ndjson(&page).as_bytes()).context("writing the export failed")?;
        if let Some(bar) = &progress {
            bar.set_position(records);
        }
    }
    // Ends the gzip or zstd stream: its errors are the export's.
    sink.finish().context("writing the export failed")?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if !to_stdout {
        std::fs::rename(&partial, out)
            .with_context(|| format!("cannot rename {} to {}", partial.display(), out.display()))?;
        eprintln!("exported {records} records to {}", out.display());
    }
    Ok(())
}

/// Where `tally export` writes: plain, gzip (`.gz`, level 1 as the weekly
/// export) or zstd (`.zst`, level 3: zstd's default), each finished
/// explicitly so that a failed final write fails the export.
enum ExportWriter {
    Plain(Box<dyn Write>),
    Gzip(flate2::write::GzEncoder<std::io::BufWriter<File>>),
    Zstd(zstd::Encoder<'static, std::io::BufWriter<File>>),
}

impl ExportWriter {
    fn for_path(path: &Path, file: std::io::BufWriter<File>) -> std::io::Result<Self> {
        Ok(match path.extension().and_then(|e| e.to_str()) {
            Some("gz") => Self::Gzip(flate2::write::GzEncoder::new(file, flate2::Compression::fast())),
            Some("zst") => Self::Zstd(zstd::Encoder::new(file, zstd::DEFAULT_COMPRESSION_LEVEL)?),
            _ => Self::Plain(Box::new(file)),
        })
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Plain(w) => w.write_all(bytes),
            Self::Gzip(w) => w.write_all(bytes),
            Self::Zstd(w) => w.write_all(bytes),
        }
    }

    fn finish(self) -> std::io::Result<()> {
        match self {
            Self::Plain(mut w) => w.flush(),
            Self::Gzip(w) => w.finish()?.flush(),
            Self::Zstd(w) => w.finish()?.flush(),
        }
    }
}

/// Counts the bytes read from a file, for the progress bar.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Lines per message from the reading thread.
const LINES_PER_CHUNK: usize = 2048;

/// Reads `path` (`-` is stdin; `.gz` and `.zst` are decompressed) line by line on a
/// blocking thread, handing chunks of lines to the async side.
fn read_lines(
    path: &Path,
    read: Arc<AtomicU64>,
) -> anyhow::Result<tokio::sync::mpsc::Receiver<std::io::Result<Vec<Vec<u8>>>>> {
    let raw: Box<dyn Read + Send> = if path == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(File::open(path).with_context(|| format!("cannot open {}; check the path", path.display()))?)
    };
    let counted = Counting { inner: raw, read };
    let source: Box<dyn Read + Send> = match path.extension().and_then(|e| e.to_str()) {
        Some("gz") => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(counted))),
        // Every frame, concatenated ones included (as `zstd -d` reads them).
        Some("zst") => Box::new(
            zstd::Decoder::new(counted).with_context(|| format!("cannot start reading {} as zstd", path.display()))?,
        ),
        _ => Box::new(counted),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::Builder::new().name("tally-import-read".into()).spawn(move || {
        let mut reader = BufReader::with_capacity(1 << 20, source);
        loop {
            let mut chunk = Vec::with_capacity(LINES_PER_CHUNK);
            while chunk.len() < LINES_PER_CHUNK {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) => break,
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        chunk.push(line);
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
            let done = chunk.len() < LINES_PER_CHUNK;
            if (!chunk.is_empty() && tx.blocking_send(Ok(chunk)).is_err()) || done {
                return;
            }
        }
    })?;
    Ok(rx)
}

/// `tally import FILE...`: each file's lines into the store, then the weeks
/// that gained records and already had a summary are summarized again.
pub async fn import(
    storage: &Storage,
    files: &[PathBuf],
    options: ImportOptions,
    limits: Limits,
    summary: &SummaryOptions,
) -> anyhow::Result<()> {
    let dry_run = options.dry_run;
    let mut total = ImportReport::default();
    for path in files {
        let size = std::fs::metadata(path).ok().map(|m| m.len()).filter(|_| path != Path::new("-"));
        let read = Arc::new(AtomicU64::new(0));
        let mut lines = read_lines(path, read.clone())?;
        let progress = bar(size, "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}");
        let mut importer = Importer::new(storage.store.clone(), &SystemClock, limits, options.clone());
        let mut number = 0u64;
        let name = path.display();
        let stopped = |e: ImportError, report: &ImportReport| {
            let kept = if dry_run {
                String::new()
            } else {
                format!("; the {} records before it are stored", report.imported + report.present)
            };
            anyhow::anyhow!(
                "{name}: {e}{kept} — fix the line and run the same command again (stored lines are skipped)"
            )
        };
        while let Some(chunk) = lines.recv().await {
            let chunk = chunk.with_context(|| format!("cannot read {name}"))?;
            for line in chunk {
                number += 1;
                if let Err(e) = importer.line(number, &line).await {
                    if let Some(bar) = &progress {
                        bar.abandon();
                    }
                    return Err(stopped(e, importer.report()));
                }
            }
            if let Some(bar) = &progress {
                bar.set_position(read.load(Ordering::Relaxed));
                bar.set_message(format!("{} lines", importer.report().lines));
            }
        }
        let report = importer.finish().await.map_err(|e| stopped(e, &ImportReport::default()))?;
        if let Some(bar) = progress {
            bar.finish_and_clear();
        }
        if dry_run {
            eprintln!("{name}: {} lines, {} valid records; dry run, nothing stored", report.lines, report.valid);
        } else {
            eprintln!(
                "{name}: imported {}, already present {}, lines {}",
                report.imported, report.present, report.lines
            );
        }
        total.imported += report.imported;
        total.present += report.present;
        total.changed_weeks.extend(report.changed_weeks);
    }
    if files.len() > 1 && !dry_run {
        eprintln!("in all: imported {}, already present {}", total.imported, total.present);
    }
    if options.time_field.is_none() && options.received_at.is_none() && total.imported > 0 {
        eprintln!(
            "note: these records were given the import time; importing the same file again would add them again \
             (use --time-field or --received-at for reruns that add nothing)"
        );
    }
    resummarize(storage, &total.changed_weeks, summary).await
}

/// Summarizes again the weeks of `changed` that already have a summary.
async fn resummarize(
    storage: &Storage,
    changed: &std::collections::BTreeSet<IsoWeek>,
    summary: &SummaryOptions,
) -> anyhow::Result<()> {
    if changed.is_empty() {
        return Ok(());
    }
    let summarized = storage.sink.list_weeks().await.context("cannot list the summarized weeks")?;
    let stale: Vec<IsoWeek> = changed.iter().copied().filter(|w| summarized.binary_search(w).is_ok()).collect();
    if stale.is_empty() {
        return Ok(());
    }
    eprintln!("summarizing again {} week(s) that gained records: {}", stale.len(), join(&stale));
    let progress = CliProgress::new(stale.len() as u64, false);
    // Each week under its lock, as any run of the week; not announced.
    let weekly = crate::weekly(storage, summary.clone(), None, "tally import");
    let mut result = Ok(());
    for week in stale {
        if let Err(e) = weekly.week(week, Trigger::Import, &progress).await {
            result = Err(e);
            break;
        }
    }
    progress.finish();
    result.context("the records are imported, but summarizing their weeks again failed; run `tally summarize --week W` for each week above")?;
    Ok(())
}

fn join(weeks: &[IsoWeek]) -> String {
    weeks.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// `tally prune`: deletes the records of summarized weeks past the retention.
pub async fn prune_now(storage: &Storage, keep_weeks: u32) -> anyhow::Result<()> {
    // Each week under its lock: a run of it finishes first.
    let report = crate::weekly(storage, SummaryOptions::default(), Some(keep_weeks), "tally prune")
        .prune(keep_weeks)
        .await
        .context("pruning stopped; run the same command again to finish")?;
    for (week, records) in &report.pruned {
        println!("{week}  {records:>10} records deleted (its summary stays)");
    }
    if report.pruned.is_empty() {
        println!("nothing to prune: no summarized week ended more than {keep_weeks} weeks ago");
    }
    if !report.unsummarized.is_empty() {
        eprintln!(
            "kept {} week(s) older than the retention because they have no summary: {} — run `tally summarize` for them",
            report.unsummarized.len(),
            join(&report.unsummarized)
        );
    }
    Ok(())
}

/// `--received-at` as a time.
pub fn parse_time(flag: &str, value: &str) -> anyhow::Result<Timestamp> {
    match Timestamp::parse_rfc3339(value) {
        Some(t) => Ok(t),
        None => bail!("--{flag} {value:?} is not an RFC 3339 time such as 2026-11-23T00:00:00Z"),
    }
}
