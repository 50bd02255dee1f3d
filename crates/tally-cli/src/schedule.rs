//! The in-process weekly schedule of `tally serve`: catch up missed weeks at
//! start, then summarize the previous week at every scheduled time, retrying
//! failures with backoff, and prune what the retention allows after each run.
//! Every week the schedule or its catch-up writes is announced to the
//! notifiers (`--notify-url`) right after its manifest. Beside it, the
//! refresher rewrites the summary of a week an erasure changed — silently:
//! a rewrite after an erasure is not a new weekly report.

use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeSet;

use tally_core::lifecycle::prune;
use tally_core::ports::Notifier;
use tally_core::report_link::ReportLinks;
use tally_core::retry::{RetryPolicy, retry};
use tally_core::summary::notify::announce;
use tally_core::summary::{SummarizeError, SummaryOptions, WeeklySchedule, pending_weeks, summarize_week};
use tally_core::{Clock, IsoWeek, RecordLifecycle, SummarySink, SystemClock, Timestamp};
use tally_local::ChannelWeekRefresh;

use crate::progress::CliProgress;

pub fn spawn(
    store: Arc<dyn RecordLifecycle>,
    sink: Arc<dyn SummarySink>,
    schedule: WeeklySchedule,
    options: SummaryOptions,
    retention_weeks: Option<u32>,
    notifiers: Vec<Arc<dyn Notifier>>,
    links: ReportLinks,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let clock = SystemClock;
        let run = WeeklyRun { sink: sink.as_ref(), options: &options, notifiers: &notifiers, links: &links };
        with_retries("catch-up", || async { run.catch_up(store.as_ref()).await }).await;
        loop {
            let now = clock.now();
            let Some(next) = schedule.next_after(now) else {
                tracing::warn!(%schedule, "the schedule never fires again; weekly summaries are off");
                return;
            };
            let week = WeeklySchedule::week_for_run(next);
            tracing::info!(next_run = %next, %week, "next weekly summary scheduled");
            tokio::time::sleep(until(now, next)).await;
            with_retries("weekly summary", || async {
                run.week(store.as_ref(), week, 1).await?;
                // Also pick up any older week a failed run left behind.
                run.catch_up(store.as_ref()).await.map(|n| n + 1)
            })
            .await;
            if let Some(keep) = retention_weeks {
                prune_old_weeks(store.as_ref(), sink.as_ref(), keep).await;
            }
        }
    })
}

/// The schedule's runs: each week written is announced.
struct WeeklyRun<'a> {
    sink: &'a dyn SummarySink,
    options: &'a SummaryOptions,
    notifiers: &'a [Arc<dyn Notifier>],
    links: &'a ReportLinks,
}

impl WeeklyRun<'_> {
    /// Summarizes `week`, then announces it (never failing for that).
    async fn week(&self, store: &dyn RecordLifecycle, week: IsoWeek, total: u64) -> Result<(), SummarizeError> {
        let progress = CliProgress::new(total, true);
        let report = summarize_week(store, self.sink, &SystemClock, week, self.options, &progress).await?;
        announce(self.notifiers, self.sink, self.links, &report, Timestamp::now(), &RetryPolicy::NOTIFICATION).await;
        Ok(())
    }

    /// Summarizes every week with records but no summary, oldest first (as
    /// `tally_core::summary::catch_up`), announcing each as it is written:
    /// a failure part-way keeps the announcements of the weeks before it.
    async fn catch_up(&self, store: &dyn RecordLifecycle) -> Result<usize, SummarizeError> {
        let weeks = pending_weeks(store, self.sink, SystemClock.now()).await?;
        for week in &weeks {
            self.week(store, *week, 0).await?;
        }
        Ok(weeks.len())
    }
}

/// Deletes the records of summarized weeks past the retention; a failure is
/// logged and retried at the next run.
async fn prune_old_weeks(store: &dyn RecordLifecycle, sink: &dyn SummarySink, keep: u32) {
    match prune(store, sink, SystemClock.now(), keep).await {
        Ok(report) => {
            for (week, records) in &report.pruned {
                tracing::info!(%week, records, retention_weeks = keep, "pruned the week's records (its summary stays)");
            }
            for week in &report.unsummarized {
                tracing::warn!(%week, "past the retention but not summarized: its records are kept until it is");
            }
        }
        Err(e) => tracing::error!(error = %e, "pruning failed; the next weekly run tries again"),
    }
}

/// How long the refresher gathers requests before it runs: a burst of
/// erasures in one week rewrites that week once, well within a minute.
const REFRESH_GATHER: Duration = Duration::from_secs(5);

/// Rewrites the summaries of weeks asked for (after erasures), gathering the
/// requests of [`REFRESH_GATHER`] first, with the schedule's retries, and
/// withdraws each week's request once it is rewritten.
pub fn spawn_refresher(
    store: Arc<dyn RecordLifecycle>,
    sink: Arc<dyn SummarySink>,
    options: SummaryOptions,
) -> (ChannelWeekRefresh, tokio::task::JoinHandle<()>) {
    let (queue, mut inbox) = tally_local::refresh::channel();
    let task = tokio::spawn(async move {
        while let Some(first) = inbox.recv().await {
            let mut weeks: BTreeSet<IsoWeek> = BTreeSet::from([first]);
            let gather = tokio::time::sleep(REFRESH_GATHER);
            tokio::pin!(gather);
            loop {
                tokio::select! {
                    Some(week) = inbox.recv() => { weeks.insert(week); }
                    () = &mut gather => break,
                }
            }
            for week in weeks {
                let options = options.for_rewrite(week, Timestamp::now());
                with_retries("summary refresh", || async {
                    summarize_week(
                        store.as_ref(),
                        sink.as_ref(),
                        &SystemClock,
                        week,
                        &options,
                        &CliProgress::new(1, true),
                    )
                    .await?;
                    inbox.done(week);
                    Ok::<_, SummarizeError>(1)
                })
                .await;
            }
        }
    });
    (queue, task)
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::from_millis(u64::try_from(at.as_millis() - now.as_millis()).unwrap_or(0))
}

/// Runs `run` with [`RetryPolicy::SCHEDULED_RUN`]; when the attempts are
/// used up, the next scheduled run's catch-up picks the week up again.
async fn with_retries<F, Fut, E>(what: &str, run: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<usize, E>>,
    E: std::error::Error,
{
    let result = retry(&RetryPolicy::SCHEDULED_RUN, run, |_| true, |e, attempt| {
        let retry_in_s = attempt.next_in.map(|d| d.as_secs());
        tracing::error!(error = %e, cause = ?std::error::Error::source(e), attempt = attempt.number, ?retry_in_s, "{what} failed");
    })
    .await;
    match result {
        Ok(weeks) if weeks > 0 => tracing::info!(weeks, "{what} done"),
        Ok(_) => {}
        Err(_) => tracing::error!(
            "{what} kept failing; giving up until the next scheduled run (check the data directory and bucket)"
        ),
    }
}
