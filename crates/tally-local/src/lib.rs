//! tally's embedded adapters — the default, local side of the hexagon.
//!
//! - [`SqliteRecordStore`]: records in one SQLite file (WAL, `synchronous=FULL`,
//!   group commit).
//! - [`DirSummarySink`]: a folder standing in for the S3 bucket.
//! - [`ChannelWeekRefresh`]: the in-process queue of weeks to rewrite after
//!   erasures, drained by `tally serve`'s refresher.
//! - [`SqliteWeekLock`]: one run per week at a time, in the records' file.
//!
//! Only this crate depends on `rusqlite`; it knows nothing of HTTP or AWS.

pub mod dir;
pub mod lock;
pub mod refresh;
pub mod sqlite;

pub use dir::DirSummarySink;
pub use lock::SqliteWeekLock;
pub use refresh::ChannelWeekRefresh;
#[cfg(feature = "fault-injection")]
pub use sqlite::CommitHook;
pub use sqlite::{SqliteOptions, SqliteRecordStore};
