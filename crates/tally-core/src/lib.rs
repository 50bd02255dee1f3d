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
/// logs and messages (every crate's one copy of this loop).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The version of tally, reported by `/health` and written into summary manifests.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
