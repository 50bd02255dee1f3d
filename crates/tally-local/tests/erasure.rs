//! "An erased record never comes back" on the local adapters: the SQLite
//! store, its week lock (in the same file) and the folder bucket, through
//! the weekly run — an erasure before, during (the run paused after its
//! reader passed the record) and after a run of its week.

use std::sync::Arc;

use tally_core::testing::erasure::erasure_scenario;
use tally_local::{DirSummarySink, SqliteOptions, SqliteRecordStore, SqliteWeekLock};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_before_during_or_after_a_run_is_never_undone_on_sqlite_and_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteRecordStore::open(dir.path().join("tally.db"), SqliteOptions::default()).unwrap());
    let lock = Arc::new(SqliteWeekLock::new(store.clone()));
    erasure_scenario(store, Arc::new(DirSummarySink::new(dir.path().join("summaries"))), lock).await;
}
