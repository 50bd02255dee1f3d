//! Crash test (issue 6): concurrent singles and batches against the real
//! server, `kill -9` mid-load, restart, and every acknowledged (201) record
//! must be there byte for byte, with `PRAGMA integrity_check` = ok. Repeated
//! on the same data directory: 3 times normally, 10 with `TALLY_TEST_FULL=1`.

mod common;
mod loadgen;
mod rawhttp;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{KEY, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_load_loses_no_acknowledged_record() {
    let full = std::env::var("TALLY_TEST_FULL").is_ok_and(|v| v == "1");
    let rounds = if full { 10 } else { 3 };
    let dir = tempfile::tempdir().unwrap();
    let acked = Arc::new(loadgen::Acked::default());
    for round in 0..rounds {
        // GIVEN a server under load from 16 writers
        let server = tokio::task::block_in_place(|| Server::start(dir.path(), &[]));
        let stop = Arc::new(AtomicBool::new(false));
        let before = acked.len();
        let workers = loadgen::spawn(&server.base, KEY, 16, &format!("r{round}"), stop.clone(), acked.clone());
        // WHEN it is killed with SIGKILL at an arbitrary moment: after a number of
        // acknowledged records that differs from round to round
        acked.wait_for(before + 2_000 + 1_777 * round % 5_000, Duration::from_secs(60)).await;
        tokio::task::block_in_place(|| server.kill9());
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.await.unwrap();
        }
        assert!(acked.len() > before, "round {round}: nothing was acknowledged before the kill");
        // THEN after a restart every acknowledged record is there, unchanged
        let server = tokio::task::block_in_place(|| Server::start(dir.path(), &[]));
        let lost = loadgen::missing(dir.path(), &acked);
        assert!(
            lost.is_empty(),
            "round {round}: {} acknowledged records lost or altered, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        assert_eq!(rawhttp::integrity_check(dir.path()), "ok", "round {round}");
        // AND they read back over HTTP (a sample)
        let http = common::client();
        let sample: Vec<(String, String)> =
            acked.records.lock().unwrap().iter().rev().take(20).map(|(k, v)| (k.clone(), v.clone())).collect();
        for (id, data) in sample {
            let r = http.get(server.url(&format!("/records/{id}"))).header("x-api-key", KEY).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert!(r.text().await.unwrap().ends_with(&format!("\"data\":{data}}}")), "{id}");
        }
        assert!(acked.unexpected().is_empty(), "round {round}: unexpected statuses {:?}", acked.unexpected());
        eprintln!(
            "crash round {round}: {} records acknowledged so far, {} stored, outcomes {:?}",
            acked.len(),
            rawhttp::count_records(dir.path()),
            acked.outcomes.lock().unwrap()
        );
        tokio::task::block_in_place(|| server.kill9());
    }
}
