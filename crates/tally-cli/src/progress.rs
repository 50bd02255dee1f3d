//! Progress display for summary runs: an indicatif bar on a terminal, plain
//! log lines otherwise (CI, systemd, redirected output).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tally_core::IsoWeek;
use tally_core::summary::{Progress, SummarizeError, WeekReport};

/// Reports per-week progress of a run over `weeks` weeks.
#[derive(Debug)]
pub struct CliProgress {
    bar: Option<ProgressBar>,
    /// Records read at the last log line, to log every `LOG_EVERY` records.
    logged: AtomicU64,
}

const LOG_EVERY: u64 = 100_000;

impl CliProgress {
    /// A bar when stderr is a terminal (and `quiet` is false), else log lines.
    pub fn new(weeks: u64, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(weeks);
            let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] week {pos}/{len} {wide_bar} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self { bar, logged: AtomicU64::new(0) }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Progress for CliProgress {
    fn week_started(&self, week: IsoWeek) {
        self.logged.store(0, Ordering::Relaxed);
        match &self.bar {
            Some(bar) => bar.set_message(format!("{week}: starting")),
            None => tracing::info!(%week, "summarizing"),
        }
    }

    fn records_read(&self, week: IsoWeek, records: u64) {
        match &self.bar {
            Some(bar) => bar.set_message(format!("{week}: {records} records")),
            None => {
                let last = self.logged.load(Ordering::Relaxed);
                if records >= last + LOG_EVERY {
                    self.logged.store(records, Ordering::Relaxed);
                    tracing::info!(%week, records, "reading records");
                }
            }
        }
    }

    fn week_finished(&self, report: &WeekReport) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            bar.println(format!("{}: {} records summarized", report.week, report.records));
        }
        tracing::info!(week = %report.week, records = report.records, bytes = report.bytes, "week summarized");
    }

    fn week_failed(&self, week: IsoWeek, error: &SummarizeError) {
        if let Some(bar) = &self.bar {
            bar.abandon_with_message(format!("{week}: failed"));
        }
        tracing::error!(%week, error = %tally_core::error_chain(error), "summary failed");
    }
}
