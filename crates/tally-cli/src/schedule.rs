//! The in-process weekly schedule of `tally serve`: catch up missed weeks at
//! start, then summarize the previous week at every scheduled time, retrying
//! failures with backoff.

use std::sync::Arc;
use std::time::Duration;

use tally_core::summary::{SummaryOptions, WeeklySchedule, catch_up, retry_delay, summarize_week};
use tally_core::{Clock, RecordStore, SummarySink, SystemClock, Timestamp};

use crate::progress::CliProgress;

/// Attempts per scheduled run before waiting for the next one (whose
/// catch-up picks the week up again).
const ATTEMPTS: u32 = 6;

pub fn spawn(
    store: Arc<dyn RecordStore>,
    sink: Arc<dyn SummarySink>,
    schedule: WeeklySchedule,
    options: SummaryOptions,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let clock = SystemClock;
        with_retries("catch-up", || async {
            catch_up(store.as_ref(), sink.as_ref(), &clock, &options, &CliProgress::new(0, true)).await.map(|r| r.len())
        })
        .await;
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
                summarize_week(store.as_ref(), sink.as_ref(), &clock, week, &options, &CliProgress::new(1, true))
                    .await?;
                // Also pick up any older week a failed run left behind.
                catch_up(store.as_ref(), sink.as_ref(), &clock, &options, &CliProgress::new(0, true))
                    .await
                    .map(|r| r.len() + 1)
            })
            .await;
        }
    })
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::from_millis(u64::try_from(at.as_millis() - now.as_millis()).unwrap_or(0))
}

async fn with_retries<F, Fut, E>(what: &str, mut run: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<usize, E>>,
    E: std::error::Error,
{
    for attempt in 0..ATTEMPTS {
        match run().await {
            Ok(weeks) => {
                if weeks > 0 {
                    tracing::info!(weeks, "{what} done");
                }
                return;
            }
            Err(e) => {
                let delay = retry_delay(attempt);
                tracing::error!(error = %e, cause = ?std::error::Error::source(&e), attempt = attempt + 1, retry_in_s = delay.as_secs(), "{what} failed; will retry");
                tokio::time::sleep(delay).await;
            }
        }
    }
    tracing::error!(
        "{what} kept failing; giving up until the next scheduled run (check the data directory and bucket)"
    );
}
