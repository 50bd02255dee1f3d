//! [`Notifier`] on an SNS topic: how `tally-weekly` announces a week's report
//! (the template's topic, to which the `ReportEmail` parameter subscribes an
//! e-mail address).
//!
//! One `Publish` per notification, with a one-line `Subject` (what e-mail
//! subscribers see as the subject) and the plain-text digest as the
//! `Message`, which already holds the signed link to the report's page.
//!
//! Errors are all [final](NotifyError::Final): the SDK has already retried
//! throttling, 5xx and network errors with its standard retry policy, and
//! tally does not retry the same request again on top of it.

use async_trait::async_trait;
use aws_sdk_sns::Client;
use aws_sdk_sns::error::ProvideErrorMetadata;
use tally_core::ports::{Notifier, NotifyError};
use tally_core::summary::Notification;
use tracing::instrument;

/// SNS's limit on a subject's length.
pub const MAX_SUBJECT_CHARS: usize = 100;

/// Publishes notifications to one SNS topic.
#[derive(Debug, Clone)]
pub struct SnsNotifier {
    client: Client,
    topic_arn: String,
}

impl SnsNotifier {
    pub fn new(client: Client, topic_arn: impl Into<String>) -> Self {
        Self { client, topic_arn: topic_arn.into() }
    }

    pub fn topic_arn(&self) -> &str {
        &self.topic_arn
    }
}

/// `subject` as SNS accepts it: printable ASCII only (anything else becomes
/// `?`), no line breaks, at most [`MAX_SUBJECT_CHARS`], never empty.
pub fn sns_subject(subject: &str) -> String {
    let clean: String = subject
        .chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
        .take(MAX_SUBJECT_CHARS)
        .collect();
    let clean = clean.trim();
    if clean.is_empty() { "tally report".to_owned() } else { clean.to_owned() }
}

#[async_trait]
impl Notifier for SnsNotifier {
    fn name(&self) -> &'static str {
        "sns"
    }

    #[instrument(skip_all, fields(topic = %self.topic_arn, week = %notification.week))]
    async fn deliver(&self, notification: &Notification) -> Result<(), NotifyError> {
        let result = self
            .client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(sns_subject(&notification.subject()))
            .message(&notification.text)
            .send()
            .await;
        match result {
            Ok(out) => {
                tracing::debug!(message_id = out.message_id().unwrap_or_default(), "published to SNS");
                Ok(())
            }
            Err(e) => {
                let code = e.code().unwrap_or("no error code").to_owned();
                let message = format!(
                    "SNS Publish to {} failed ({code}) after the SDK's retries; check TALLY_REPORT_TOPIC_ARN and that \
                     the function's role may sns:Publish to that topic",
                    self.topic_arn
                );
                tracing::debug!(error = %tally_core::error_chain(&e), "SNS Publish failed");
                Err(NotifyError::final_(message, Some(Box::new(e))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_short_printable_ascii() {
        assert_eq!(sns_subject("tally report 2026-W47: 1,000 records"), "tally report 2026-W47: 1,000 records");
        assert_eq!(sns_subject("a\nb\té"), "a?b??");
        assert_eq!(sns_subject(&"x".repeat(300)).len(), MAX_SUBJECT_CHARS);
        assert_eq!(sns_subject(" \n "), "?");
        assert_eq!(sns_subject(""), "tally report");
    }
}
