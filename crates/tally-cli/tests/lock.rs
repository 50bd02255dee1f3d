//! The week lock across processes (issue 22): two runs of one week on the
//! same data directory never interleave, whichever processes start them.
//!
//! This test process is one of them: it opens the data directory as any
//! `tally` command does and runs the week under its lock, held at a barrier
//! just before its manifest (every object of the week written). Meanwhile a
//! real `tally summarize --week` of the same week must say who holds it and
//! wait; once the first run commits and releases, it rewrites the week, and
//! the manifest left matches its objects.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tally_core::ports::{Acquired, WeekLock};
use tally_core::summary::{LockSettings, Manifest, NoProgress, SummaryOptions, locked_run, summarize_week};
use tally_core::testing::{HookedSink, SinkHook};
use tally_core::{IsoWeek, Record, RecordId, RecordLifecycle, SummarySink, SystemClock, Timestamp};
use tally_local::{DirSummarySink, SqliteOptions, SqliteRecordStore, SqliteWeekLock};
use tokio::sync::Notify;

const HOLDER: &str = "the lock test's own run";

/// A sink hook: the first manifest waits at a barrier.
#[derive(Debug)]
struct PauseFirstCommit {
    /// `(reached, go_on)`, taken by the first `commit_week`.
    gate: Mutex<Option<(Arc<Notify>, Arc<Notify>)>>,
}

#[async_trait]
impl SinkHook for PauseFirstCommit {
    async fn before_commit(&self, _week: IsoWeek) {
        let gate = self.gate.lock().unwrap().take();
        if let Some((reached, go_on)) = gate {
            reached.notify_one();
            go_on.notified().await;
        }
    }
}

/// The week's manifest, after checking that it lists exactly the sizes and
/// hashes of the files beside it.
fn verified_manifest(bucket: &Path, week: IsoWeek) -> Manifest {
    let dir = bucket.join("summaries").join(week.to_string());
    let manifest: Manifest = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest.objects.len(), 3, "{manifest:?}");
    for object in &manifest.objects {
        let body = std::fs::read(bucket.join(&object.key)).unwrap();
        assert_eq!(body.len() as u64, object.bytes, "{}", object.key);
        assert_eq!(hex::encode(Sha256::digest(&body)), object.sha256, "{} does not match the manifest", object.key);
    }
    manifest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tally_summarize_waits_for_another_process_run_of_the_week_then_rewrites_it() {
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, bucket) = (dir.path().to_owned(), dir.path().join("bucket"));
    let week = IsoWeek::parse("2026-W40").unwrap();
    // GIVEN a past week's records in the data directory
    let store = Arc::new(SqliteRecordStore::open(data_dir.join("tally.db"), SqliteOptions::default()).unwrap());
    let records: Vec<Record> = (0..50)
        .map(|i| {
            let at = Timestamp::from_millis(week.start().as_millis() + i * 3_600_000);
            Record { id: RecordId::generate(at), received_at: at, data: format!(r#"{{"n":{i}}}"#) }
        })
        .collect();
    store.restore(&records).await.unwrap();
    // AND a run of that week here, holding its lock, paused before its manifest
    let lock: Arc<dyn WeekLock> = Arc::new(SqliteWeekLock::new(store.clone()));
    let (reached, go_on) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let sink: Arc<dyn SummarySink> = Arc::new(HookedSink::new(
        Arc::new(DirSummarySink::new(&bucket)),
        PauseFirstCommit { gate: Mutex::new(Some((reached.clone(), go_on.clone()))) },
    ));
    let first = tokio::spawn({
        let (store, lock, sink) = (store.clone(), lock.clone(), sink.clone());
        async move {
            let options = SummaryOptions::default();
            let store = store.as_ref();
            locked_run(lock, Arc::new(SystemClock), sink, week, HOLDER, &LockSettings::LOCAL, |sink| async move {
                summarize_week(store, sink.as_ref(), &SystemClock, week, &options, &NoProgress).await
            })
            .await
        }
    });
    reached.notified().await;

    // WHEN `tally summarize` runs the same week on the same data directory
    let mut child = common::tally()
        .args(["--log-format", "json", "summarize", "--week", &week.to_string(), "--data-dir"])
        .arg(&data_dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tally summarize");
    let stderr = child.stderr.take().unwrap();
    let logs = Arc::new(Mutex::new(Vec::<String>::new()));
    let (waiting_tx, waiting) = std::sync::mpsc::channel();
    std::thread::spawn({
        let logs = logs.clone();
        move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(&format!("is being written by {HOLDER}")) {
                    let _ = waiting_tx.send(());
                }
                logs.lock().unwrap().push(line);
            }
        }
    });
    // THEN it says which run holds the week, and waits for it
    let said = tokio::task::block_in_place(|| waiting.recv_timeout(Duration::from_secs(60)));
    if said.is_err() {
        let _ = child.kill();
        panic!("tally summarize did not wait for the week's lock; its logs: {:?}", logs.lock().unwrap());
    }
    assert!(child.try_wait().unwrap().is_none(), "it waits, rather than giving up or running");
    assert!(!bucket.join("summaries").join(week.to_string()).join("manifest.json").exists());

    // AND once the first run commits and releases the week, it runs the week itself
    go_on.notify_one();
    let first = first.await.unwrap().expect("the first run commits").expect("it was not skipped");
    let first_manifest = verified_manifest(&bucket, week);
    let out = tokio::task::block_in_place(|| child.wait_with_output()).unwrap();
    assert!(out.status.success(), "tally summarize failed: {:?}", logs.lock().unwrap());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{week}          50 records")), "{out:?}");
    // AND the week's manifest is the second run's, and matches its objects
    let manifest = verified_manifest(&bucket, week);
    assert_eq!((first.records, manifest.records), (50, 50));
    assert!(manifest.generated_at > first_manifest.generated_at, "the second run's manifest came last");
    // AND the week's lock is free, remembering the second run's completion
    let probe = lock.try_acquire(week, "probe", Timestamp::now(), Duration::from_secs(1)).await.unwrap();
    let Acquired::Taken(probe) = probe else { panic!("the lock is left held: {probe:?}") };
    assert!(probe.done_from.is_some_and(|from| from >= first_manifest.generated_at), "{probe:?}");
}
