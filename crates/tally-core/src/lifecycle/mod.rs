//! The data lifecycle after ingest: read back ([`read`]), import and restore
//! ([`import`]), retention ([`retention`]) and erasure ([`erase`]). Each is a
//! use case the HTTP API, the CLI and the Lambdas call alike.

pub mod erase;
pub mod import;
pub mod read;
pub mod retention;

pub use erase::{EraseError, Erased, SummaryState, erase};
pub use import::{ImportError, ImportOptions, ImportReport, Importer};
pub use read::{Page, Query, RangeParams, ReadError, ReadMode, RecordReader, TimeRange, ndjson};
pub use retention::{PruneError, PruneReport, prune};
