//! tally's domain — the centre of the hexagon.
//!
//! # Layout
//! - [`id`], [`time`](mod@crate::clock), [`week`]: the value types every record carries.
//! - [`validate`]: turns a request body into raw, validated record texts (lossless).
//! - [`ports`]: the traits adapters implement ([`RecordStore`], [`SummarySink`],
//!   [`Notifier`](ports::Notifier), [`WeekLock`](ports::WeekLock)).
//! - [`ingest`]: the service that turns a body into durable records, with idempotency.
//! - [`firehose`]: Amazon Data Firehose HTTP endpoint deliveries, stored through [`ingest`].
//! - [`lifecycle`]: reading back, import and restore, retention and erasure.
//! - [`report_link`]: signed, expiring links to the report site;
//!   [`report_site`]: its pages as tally serves them.
//! - [`retry`]: the one backoff-and-retry mechanism every crate uses.
//!
//! This crate must not depend on HTTP, AWS or SQLite crates: it is what the
//! local server, the Lambda functions and every adapter share.

pub mod clock;
pub mod firehose;
pub mod id;
pub mod idempotency;
pub mod ingest;
pub mod lifecycle;
pub mod ports;
pub mod record;
pub mod report_link;
pub mod report_site;
pub mod retry;
pub mod summary;
pub mod validate;
pub mod week;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(feature = "fault-injection")]
pub mod fault;

pub use clock::{Clock, SystemClock, Timestamp};
pub use id::RecordId;
pub use idempotency::{Fingerprint, IdempotencyEntry, IdempotencyKey};
pub use ingest::{IngestError, IngestReceipt, IngestResponse, IngestService};
pub use ports::{InsertOutcome, RecordLifecycle, RecordPages, RecordStore, RestoreOutcome, StoreError, SummarySink};
pub use record::Record;
pub use summary::{Aggregator, Summary, SummaryOptions, WeekReport, summarize_week};
pub use validate::{BodyFormat, Limits, ValidationError};
pub use week::IsoWeek;

/// `error: cause: cause` — an error with its whole `source()` chain, for
/// logs and messages: the one way every crate writes an error into a log
/// line (AWS SDK errors included: an `SdkError`'s sources are the service
/// error and, for network trouble, the connector's and the OS's errors).
///
/// A cause whose text the chain already ends with is written once: the AWS
/// SDK's operation errors display their inner exception and also return it
/// as their source, and some errors quote their source in their message.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The version of tally, reported by `/health` and written into summary manifests.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
mod tests {
    use std::fmt;

    /// An error with a message and an optional source, like the SDK's.
    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn error_chain_writes_every_cause_once() {
        let io = E("Connection refused (os error 111)", None);
        let chain = E("DynamoDB Query failed", Some(Box::new(E("dispatch failure", Some(Box::new(io))))));
        assert_eq!(
            super::error_chain(&chain),
            "DynamoDB Query failed: dispatch failure: Connection refused (os error 111)"
        );
        // The SDK's operation error displays its exception and returns it as its source.
        let exception = E("ResourceNotFoundException: no table", None);
        let operation = E("ResourceNotFoundException: no table", Some(Box::new(exception)));
        let sdk = E("service error", Some(Box::new(operation)));
        assert_eq!(super::error_chain(&sdk), "service error: ResourceNotFoundException: no table");
        // A message that already quotes its source.
        let quoted = E("could not store: disk full", Some(Box::new(E("disk full", None))));
        assert_eq!(super::error_chain(&quoted), "could not store: disk full");
    }
}
