//! tally's embedded adapters — the default, local side of the hexagon.
//!
//! - [`SqliteRecordStore`]: records in one SQLite file (WAL, `synchronous=FULL`,
//!   group commit).
//! - [`DirSummarySink`]: a folder standing in for the S3 bucket.
//! - [`SqliteWeekLock`]: one run per week at a time, in the records' file.
//!
//! Only this crate depends on `rusqlite`; it knows nothing of HTTP or AWS.

pub mod dir;
pub mod lock;
pub mod sqlite;

pub use dir::DirSummarySink;
pub use lock::SqliteWeekLock;
pub use sqlite::{SqliteOptions, SqliteRecordStore};
