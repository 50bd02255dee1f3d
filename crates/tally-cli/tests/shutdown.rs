//! Graceful shutdown under load (issue 6): SIGTERM while 16 writers post
//! singles and batches; the server finishes in-flight requests, exits 0, and
//! every acknowledged record is stored byte for byte.

mod common;
mod loadgen;
mod rawhttp;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{KEY, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_mid_load_exits_0_and_loses_no_acknowledged_record() {
    let full = std::env::var("TALLY_TEST_FULL").is_ok_and(|v| v == "1");
    let rounds = if full { 5 } else { 1 };
    let dir = tempfile::tempdir().unwrap();
    let acked = Arc::new(loadgen::Acked::default());
    for round in 0..rounds {
        let mut server = tokio::task::block_in_place(|| Server::start(dir.path(), &[]));
        let stop = Arc::new(AtomicBool::new(false));
        let before = acked.len();
        let workers = loadgen::spawn(&server.base, KEY, 16, &format!("t{round}"), stop.clone(), acked.clone());
        // WHEN SIGTERM arrives mid-load (once this round has a few thousand records acknowledged)
        acked.wait_for(before + 3_000, Duration::from_secs(60)).await;
        let status = tokio::task::block_in_place(|| server.terminate());
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.await.unwrap();
        }
        // THEN it exits 0, answered only 201s (or closed connections), and lost nothing
        assert!(status.success(), "round {round}: exit status {status}");
        assert!(acked.len() > before, "round {round}: nothing acknowledged");
        assert!(acked.unexpected().is_empty(), "round {round}: unexpected statuses {:?}", acked.unexpected());
        let lost = loadgen::missing(dir.path(), &acked);
        assert!(
            lost.is_empty(),
            "round {round}: {} acknowledged records lost, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        assert_eq!(rawhttp::integrity_check(dir.path()), "ok");
        let logs = server.log_text();
        assert!(logs.contains("stopped"), "no clean stop in the logs:\n{logs}");
        eprintln!(
            "shutdown round {round}: {} acknowledged, outcomes {:?}",
            acked.len(),
            acked.outcomes.lock().unwrap()
        );
    }
}
