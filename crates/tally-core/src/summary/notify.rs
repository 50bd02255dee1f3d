//! Announcing a week's report: after a weekly run has written a week's
//! manifest, tell the configured [`Notifier`]s (a webhook, an SNS topic).
//!
//! # Design
//! - **After the commit, outside it.** The callers (`tally summarize`, the
//!   schedule of `tally serve`, the weekly Lambda) call [`announce`] with
//!   the [`WeekReport`] of a run that succeeded. A delivery that fails is
//!   logged, with what to do next, and counted in [`Announced`]; it never
//!   fails the run nor touches the summary, which is already durable.
//! - **One delivery per week per manifest.** Each successful run announces
//!   its week once; retries stop at the first success, and a run that
//!   writes no manifest announces nothing. A rerun of the week writes a new
//!   manifest and so sends again — by design, since the report changed.
//!   (The refresh after an erasure or import is not announced: callers
//!   simply do not call [`announce`] there.)
//! - **Retries** use [`crate::retry`] with the caller's policy
//!   ([`RetryPolicy::NOTIFICATION`] in production: 5 attempts over 2.5 min),
//!   and only for errors a notifier marks [retryable](NotifyError::is_retryable).
//!   Notifiers are tried concurrently, so a dead webhook does not delay the
//!   e-mail.
//! - **The link** opens the week's page on the report site that tally
//!   serves (`<public URL>/reports/<week>/?exp=…&sig=…`), signed by
//!   [`ReportLinks`] and valid for its validity (30 days by default): the
//!   same link works locally (`tally serve`, `--public-url`) and on AWS (the
//!   API's URL). The digest's "change vs the previous week" reads that
//!   week's manifest (one small object). If either fails the notification
//!   still goes out: with the page's address unsigned (its 403 page says how
//!   to get a fresh link) or without the change.

use std::sync::Arc;

use super::notification::Notification;
use super::service::{MANIFEST_JSON, Manifest, WeekReport};
use crate::clock::Timestamp;
use crate::ports::{Notifier, NotifyError, SummarySink};
use crate::report_link::ReportLinks;
use crate::retry::{RetryPolicy, retry};
use crate::week::IsoWeek;

/// How the deliveries of one week went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Announced {
    /// Notifiers that accepted the notification.
    pub delivered: usize,
    /// Notifiers that did not, after the policy's retries (each logged).
    pub failed: usize,
}

/// Builds `report`'s [`Notification`] at `now` (its link is valid from
/// then) and delivers it to every notifier, retrying retryable failures per
/// `policy`. Never fails: see the module docs.
pub async fn announce(
    notifiers: &[Arc<dyn Notifier>],
    sink: &dyn SummarySink,
    links: &ReportLinks,
    report: &WeekReport,
    now: Timestamp,
    policy: &RetryPolicy,
) -> Announced {
    if notifiers.is_empty() {
        return Announced::default();
    }
    let notification = notification(sink, links, report, now).await;
    let outcomes =
        futures::future::join_all(notifiers.iter().map(|n| deliver(n.as_ref(), &notification, policy))).await;
    let delivered = outcomes.iter().filter(|ok| **ok).count();
    Announced { delivered, failed: outcomes.len() - delivered }
}

/// The notification of `report` sent at `now`: its signed link, and the
/// previous week's count.
pub async fn notification(
    sink: &dyn SummarySink,
    links: &ReportLinks,
    report: &WeekReport,
    now: Timestamp,
) -> Notification {
    let week = report.week;
    let link = match links.week(week, now).await {
        Ok(link) => link,
        Err(e) => {
            // The address still leads a person to the page that says how to
            // get a working link.
            tracing::warn!(%week, error = %crate::error_chain(&e), "could not sign the report's link; the notification carries its unsigned address (run `tally report-link --week {week}` for a working one)");
            links.week_url(week)
        }
    };
    let comparison = report.comparison.as_ref();
    let previous_records = match comparison {
        Some(c) => previous_records(sink, c.previous_week).await,
        None => None,
    };
    Notification::new(week, report.records, comparison, previous_records, link)
}

/// The record count in `week`'s manifest, if it can be read.
async fn previous_records(sink: &dyn SummarySink, week: IsoWeek) -> Option<u64> {
    let bytes = match sink.read_object(week, MANIFEST_JSON).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return None, // rewritten meanwhile; the digest names the week alone
        Err(e) => {
            tracing::warn!(%week, error = %crate::error_chain(&e), "could not read the previous week's manifest; the notification leaves out the change in records");
            return None;
        }
    };
    serde_json::from_slice::<Manifest>(&bytes).ok().map(|m| m.records)
}

/// Delivers to one notifier with retries; `true` when it was accepted.
async fn deliver(notifier: &dyn Notifier, notification: &Notification, policy: &RetryPolicy) -> bool {
    let (name, week) = (notifier.name(), notification.week);
    let mut attempts = 0;
    let result = retry(
        policy,
        || {
            attempts += 1;
            notifier.deliver(notification)
        },
        NotifyError::is_retryable,
        |e, attempt| {
            if let Some(next) = attempt.next_in {
                tracing::warn!(notifier = name, %week, attempt = attempt.number, retry_in_s = next.as_secs_f64(), error = %crate::error_chain(e), "report notification failed; retrying");
            }
        },
    )
    .await;
    match result {
        Ok(()) => {
            tracing::info!(notifier = name, %week, attempts, "report notification delivered");
            true
        }
        Err(e) => {
            let next = if e.is_retryable() {
                "the receiver kept failing or could not be reached; check that it is up"
            } else {
                "the receiver refused it; check its address and settings (and its logs)"
            };
            tracing::error!(
                notifier = name,
                %week,
                attempts,
                error = %crate::error_chain(&e),
                "the report of {week} was not delivered ({next}). The summary itself is written; to send again, \
                 rerun the week's summary (`tally summarize --week {week}`, or invoke the weekly function with \
                 {{\"week\":\"{week}\"}})"
            );
            false
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::ports::ObjectInfo;
    use crate::ports::{LinkSecretStore, SecretError};
    use crate::report_link::{LinkSecret, LinkSigner, PublicUrl};
    use crate::summary::{Comparison, Finding, FindingKind, Severity};
    use crate::testing::{MemoryLinkSecret, MemorySummarySink};

    fn links() -> ReportLinks {
        let signer = LinkSigner::new(Arc::new(MemoryLinkSecret::new("s".repeat(32))));
        ReportLinks::new(signer, PublicUrl::parse("https://tally.example.com/Prod/").unwrap(), 30)
    }

    /// Answers with the scripted results in turn (then `Ok`), recording
    /// every notification it was given.
    #[derive(Debug, Default)]
    struct Scripted {
        answers: Mutex<Vec<Result<(), NotifyError>>>,
        seen: Mutex<Vec<Notification>>,
    }

    impl Scripted {
        fn new(answers: Vec<Result<(), NotifyError>>) -> Arc<Self> {
            Arc::new(Self { answers: Mutex::new(answers.into_iter().rev().collect()), seen: Mutex::default() })
        }
        fn calls(&self) -> usize {
            self.seen.lock().unwrap().len()
        }
    }

    #[async_trait]
    impl Notifier for Scripted {
        fn name(&self) -> &'static str {
            "scripted"
        }
        async fn deliver(&self, n: &Notification) -> Result<(), NotifyError> {
            self.seen.lock().unwrap().push(n.clone());
            self.answers.lock().unwrap().pop().unwrap_or(Ok(()))
        }
    }

    fn busy() -> Result<(), NotifyError> {
        Err(NotifyError::retryable("503", None))
    }

    fn week(s: &str) -> IsoWeek {
        IsoWeek::parse(s).unwrap()
    }

    fn report(comparison: Option<Comparison>) -> WeekReport {
        let info = |name: &str| ObjectInfo { key: format!("summaries/2026-W47/{name}"), bytes: 1, sha256: "00".into() };
        WeekReport {
            week: week("2026-W47"),
            records: 150,
            bytes: 1000,
            objects: vec![info("summary.html")],
            manifest: info("manifest.json"),
            comparison,
        }
    }

    async fn sink_with_previous_week(records: u64) -> MemorySummarySink {
        let sink = MemorySummarySink::default();
        let manifest = Manifest {
            schema: 2,
            week: week("2026-W46"),
            records,
            tally_version: "test".into(),
            generated_at: week("2026-W47").start(),
            objects: Vec::new(),
            warnings: Some(0),
            partial: None,
        };
        sink.commit_week(week("2026-W46"), Bytes::from(serde_json::to_vec(&manifest).unwrap())).await.unwrap();
        sink
    }

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 5,
        base: Duration::from_secs(10),
        max_delay: Duration::from_secs(120),
        jitter: false,
    };

    #[tokio::test(start_paused = true)]
    async fn retryable_failures_are_retried_until_delivered_once() {
        let sink = sink_with_previous_week(100).await;
        let flaky = Scripted::new(vec![busy(), busy()]);
        let steady = Scripted::new(vec![]);
        let notifiers: Vec<Arc<dyn Notifier>> = vec![flaky.clone(), steady.clone()];
        let comparison = Comparison {
            previous_week: week("2026-W46"),
            findings: vec![Finding {
                kind: FindingKind::Volume,
                path: None,
                severity: Severity::Warn,
                previous: 100.into(),
                current: 150.into(),
                message: "Records rose by 50%.".into(),
                segments: Vec::new(),
                folded: false,
            }],
        };
        let started = tokio::time::Instant::now();
        let announced =
            announce(&notifiers, &sink, &links(), &report(Some(comparison)), Timestamp::now(), &POLICY).await;
        assert_eq!(announced, Announced { delivered: 2, failed: 0 });
        assert_eq!((flaky.calls(), steady.calls()), (3, 1), "retried until success, then no duplicate");
        assert_eq!(started.elapsed(), Duration::from_secs(10 + 20), "the policy's backoff");
        let n = steady.seen.lock().unwrap()[0].clone();
        let (url, token) = n.report.split_once("?exp=").unwrap();
        assert_eq!(url, "https://tally.example.com/Prod/reports/2026-W47/");
        let (exp, sig) = token.split_once("&sig=").unwrap();
        let signer = LinkSigner::new(Arc::new(MemoryLinkSecret::new("s".repeat(32))));
        let checked = signer.check(Some(exp), Some(sig), Timestamp::now()).await.unwrap().unwrap();
        let days = (checked.expires().as_millis() - Timestamp::now().as_millis()) as f64 / 86_400_000.0;
        assert!((29.9..=30.0).contains(&days), "valid 30 days: {days}");
        assert_eq!((n.records, n.warnings, n.findings.len()), (150, 1, 1));
        assert!(
            n.text.starts_with("tally report for 2026-W47: 150 records (+50% vs 2026-W46: 100). 1 warning:"),
            "{}",
            n.text
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_final_error_is_not_retried_and_exhausted_retries_count_as_failed() {
        let sink = MemorySummarySink::default();
        let refused = Scripted::new(vec![Err(NotifyError::final_("400", None))]);
        let down = Scripted::new((0..10).map(|_| busy()).collect());
        let notifiers: Vec<Arc<dyn Notifier>> = vec![refused.clone(), down.clone()];
        let announced = announce(&notifiers, &sink, &links(), &report(None), Timestamp::now(), &POLICY).await;
        assert_eq!(announced, Announced { delivered: 0, failed: 2 });
        assert_eq!((refused.calls(), down.calls()), (1, POLICY.max_attempts as usize));
        assert!(down.seen.lock().unwrap()[0].text.contains("no earlier week"));
    }

    #[tokio::test]
    async fn without_notifiers_nothing_is_read_or_sent() {
        // A sink whose every call panics proves announce does not touch it.
        #[derive(Debug)]
        struct Untouchable;
        #[async_trait]
        impl SummarySink for Untouchable {
            async fn begin_week(&self, _: IsoWeek) -> Result<(), crate::ports::SinkError> {
                unreachable!()
            }
            async fn put_object(
                &self,
                _: IsoWeek,
                _: &str,
                _: &str,
                _: Bytes,
            ) -> Result<ObjectInfo, crate::ports::SinkError> {
                unreachable!()
            }
            async fn open_object(
                &self,
                _: IsoWeek,
                _: &str,
                _: &str,
            ) -> Result<Box<dyn crate::ports::ObjectUpload>, crate::ports::SinkError> {
                unreachable!()
            }
            async fn commit_week(&self, _: IsoWeek, _: Bytes) -> Result<ObjectInfo, crate::ports::SinkError> {
                unreachable!()
            }
            async fn put_index(&self, _: &str, _: &str, _: Bytes) -> Result<ObjectInfo, crate::ports::SinkError> {
                unreachable!()
            }
            async fn read_object(&self, _: IsoWeek, _: &str) -> Result<Option<Bytes>, crate::ports::SinkError> {
                unreachable!()
            }
            async fn delete_object(&self, _: IsoWeek, _: &str) -> Result<(), crate::ports::SinkError> {
                unreachable!()
            }
            async fn list_weeks(&self) -> Result<Vec<IsoWeek>, crate::ports::SinkError> {
                unreachable!()
            }
            async fn read_index(&self, _: &str) -> Result<Option<Bytes>, crate::ports::SinkError> {
                unreachable!()
            }
        }
        assert_eq!(
            announce(&[], &Untouchable, &links(), &report(None), Timestamp::now(), &POLICY).await,
            Announced::default()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_link_that_cannot_be_signed_still_names_the_page() {
        #[derive(Debug)]
        struct Down;
        #[async_trait]
        impl LinkSecretStore for Down {
            async fn load(&self) -> Result<LinkSecret, SecretError> {
                Err(SecretError::Unavailable { message: "down".into(), source: None })
            }
        }
        let links = ReportLinks::new(LinkSigner::new(Arc::new(Down)), PublicUrl::parse("http://h:1").unwrap(), 30);
        let steady = Scripted::new(vec![]);
        let notifiers: Vec<Arc<dyn Notifier>> = vec![steady.clone()];
        let announced =
            announce(&notifiers, &MemorySummarySink::default(), &links, &report(None), Timestamp::now(), &POLICY).await;
        assert_eq!(announced, Announced { delivered: 1, failed: 0 });
        assert_eq!(steady.seen.lock().unwrap()[0].report, "http://h:1/reports/2026-W47/");
    }
}
