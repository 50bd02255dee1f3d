//! Fault injection (issue 6): the real SQLite store and directory sink,
//! wrapped in `tally_core::fault` decorators (feature `fault-injection`,
//! test builds only), behind the real router, driven in-process.
//!
//! - Store errors and hangs give 503 with `Retry-After`, never a 201, and
//!   store nothing; under a mix of faults, the 201-acknowledged ids are
//!   exactly the stored ones.
//! - A summary run that fails at any step leaves no manifest and no partial
//!   object, and the rerun converges to the bytes of a clean run.
//! - A full disk (a 2 MiB tmpfs) and a read-only data directory: a clear
//!   error at start-up, 503 at run time, no corruption.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tally_core::fault::{Fault, FaultPlan, FaultySink, FaultyStore, Op};
use tally_core::summary::{MANIFEST_JSON, NoProgress, summarize_week};
use tally_core::testing::{FixedClock, MemorySummarySink};
use tally_core::{
    IngestService, IsoWeek, Limits, RecordLifecycle, RecordStore, SummaryOptions, SummarySink, SystemClock, Timestamp,
};
use tally_http::{AppState, Auth, HttpOptions, router};
use tally_local::{CommitHook, DirSummarySink, SqliteOptions, SqliteRecordStore};
use tower::ServiceExt;

const KEY: &str = "fault-key";

struct App {
    router: Router,
    store: Arc<SqliteRecordStore>,
    plan: FaultPlan,
    _dir: tempfile::TempDir,
}

fn app(store_timeout: Duration) -> App {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteRecordStore::open(dir.path().join("tally.db"), SqliteOptions::default()).unwrap());
    let plan = FaultPlan::new();
    let faulty: Arc<dyn RecordStore> = Arc::new(FaultyStore::new(store.clone(), plan.clone()));
    let ingest = IngestService::new(faulty, Arc::new(SystemClock), Limits::default());
    let sink: Arc<dyn SummarySink> = Arc::new(FaultySink::new(Arc::new(MemorySummarySink::default()), plan.clone()));
    let state = AppState::new(ingest, sink, Auth::key(KEY)).with_store_timeout(store_timeout);
    App { router: router(state, HttpOptions::default()), store, plan, _dir: dir }
}

/// Waits until the SQLite writer has dealt with every write queued so far
/// (committed it, or dropped it because its caller stopped waiting): its
/// queue is first in, first out, so once an empty restore queued now is
/// answered, every earlier insert is behind it.
async fn writer_drained(store: &SqliteRecordStore) {
    store.restore(&[]).await.unwrap();
}

struct Reply {
    status: StatusCode,
    retry_after: Option<u64>,
    content_type: Option<String>,
    body: Value,
}

async fn send(app: &App, req: Request<Body>) -> Reply {
    let res = app.router.clone().oneshot(req).await.unwrap();
    let header = |n: &str| res.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let retry_after = header("retry-after").and_then(|v| v.parse().ok());
    let content_type = header("content-type");
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Reply { status, retry_after, content_type, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
}

fn post(body: &str, key: Option<&str>) -> Request<Body> {
    let mut b = Request::post("/records").header("x-api-key", KEY).header("content-type", "application/json");
    if let Some(k) = key {
        b = b.header("idempotency-key", k);
    }
    b.body(Body::from(body.to_owned())).unwrap()
}

fn assert_503(r: &Reply, what: &str) {
    assert_503_of(r, what, "/problems/store-unavailable");
}

fn assert_503_of(r: &Reply, what: &str, kind: &str) {
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {}", r.body);
    assert_eq!(r.content_type.as_deref(), Some("application/problem+json"), "{what}");
    assert!(r.retry_after.is_some_and(|s| s >= 1), "{what}: Retry-After missing");
    assert_eq!(r.body["type"], kind, "{what}");
    assert!(r.body["detail"].as_str().unwrap_or_default().contains("Retry-After"), "{what}");
}

#[tokio::test]
async fn store_errors_give_503_with_retry_after_and_store_nothing() {
    let app = app(AppState::DEFAULT_STORE_TIMEOUT);
    for (op, body, key) in [
        (Op::Insert, r#"{"a":1}"#, None),
        (Op::Insert, r#"[{"a":1},{"a":2}]"#, Some("k-insert")),
        (Op::IdempotencyLookup, r#"{"a":1}"#, Some("k-lookup")),
    ] {
        app.plan.fail(op, Fault::Unavailable);
        let r = send(&app, post(body, key)).await;
        assert_503(&r, &format!("{op:?}"));
        app.plan.clear();
    }
    app.plan.fail(Op::Get, Fault::Unavailable);
    let r = send(
        &app,
        Request::get("/records/01JDQ7Z3V8M4W5X6Y7Z8A9B0C1").header("x-api-key", KEY).body(Body::empty()).unwrap(),
    )
    .await;
    assert_503(&r, "get");
    app.plan.clear();
    // A permanent store failure is a 500 with a generic detail — still never a 201.
    app.plan.fail(Op::Insert, Fault::Internal);
    let r = send(&app, post("{}", None)).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!r.body["detail"].as_str().unwrap_or_default().contains("injected"), "internals leak: {}", r.body);
    app.plan.clear();
    assert_eq!(app.store.count().await.unwrap(), 0);
    // AND once the store recovers, the same idempotent request succeeds once.
    let r = send(&app, post(r#"[{"a":1},{"a":2}]"#, Some("k-insert"))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(app.store.count().await.unwrap(), 2);
}

#[tokio::test]
async fn a_hanging_store_gives_503_not_408_and_stores_nothing_behind_the_clients_back() {
    // GIVEN a store whose inserts hang for 3 s, and a 300 ms store timeout
    let app = app(Duration::from_millis(300));
    app.plan.fail(Op::Insert, Fault::Delay(Duration::from_secs(3)));
    let started = std::time::Instant::now();
    let r = send(&app, post(r#"{"slow":1}"#, None)).await;
    // THEN the client gets 503 + Retry-After promptly
    assert_503(&r, "hanging insert");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    // AND the abandoned write never lands: not once its delay is over, nor once the writer drained its queue
    app.plan.clear();
    app.plan.settled().await;
    writer_drained(&app.store).await;
    assert_eq!(app.store.count().await.unwrap(), 0);
    // Reads that hang are 503 too.
    app.plan.fail(Op::Get, Fault::Delay(Duration::from_secs(3)));
    let r = send(
        &app,
        Request::get("/records/01JDQ7Z3V8M4W5X6Y7Z8A9B0C1").header("x-api-key", KEY).body(Body::empty()).unwrap(),
    )
    .await;
    assert_503(&r, "hanging get");
}

#[tokio::test]
async fn a_hanging_or_failing_summary_bucket_gives_503_not_408() {
    let app = app(Duration::from_millis(300));
    let get = |path: &str| Request::get(path).header("x-api-key", KEY).body(Body::empty()).unwrap();
    for fault in [Fault::Delay(Duration::from_secs(3)), Fault::Unavailable] {
        app.plan.fail(Op::SinkList, fault);
        app.plan.fail(Op::SinkRead, fault);
        let started = std::time::Instant::now();
        assert_503_of(&send(&app, get("/summaries")).await, "list summaries", "/problems/bucket-unavailable");
        assert_503_of(&send(&app, get("/summaries/2026-W47")).await, "read a summary", "/problems/bucket-unavailable");
        assert!(started.elapsed() < Duration::from_secs(2), "{fault:?} took {:?}", started.elapsed());
    }
    app.plan.clear();
    assert_eq!(send(&app, get("/summaries")).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_intermittent_faults_acknowledged_ids_are_exactly_the_stored_ones() {
    let app = Arc::new(app(Duration::from_millis(200)));
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        // Every 7th insert fails, every 11th hangs past the timeout.
        if i % 7 == 3 {
            app.plan.fail(Op::Insert, Fault::Unavailable);
        } else if i % 11 == 5 {
            app.plan.fail(Op::Insert, Fault::Delay(Duration::from_secs(1)));
        } else {
            app.plan.clear();
        }
        let body =
            if i % 3 == 0 { format!(r#"[{{"i":{i},"j":0}},{{"i":{i},"j":1}}]"#) } else { format!(r#"{{"i":{i}}}"#) };
        let r = send(&app, post(&body, None)).await;
        tasks.push((i, r));
    }
    // Every hanging insert is over, and the writer has dealt with every write that reached it.
    app.plan.clear();
    app.plan.settled().await;
    writer_drained(&app.store).await;
    let mut acked = BTreeSet::new();
    let (mut ok, mut refused) = (0, 0);
    for (i, r) in &tasks {
        match r.status.as_u16() {
            201 => {
                ok += 1;
                match &r.body["ids"] {
                    Value::Array(ids) => acked.extend(ids.iter().map(|v| v.as_str().unwrap().to_owned())),
                    _ => {
                        acked.insert(r.body["id"].as_str().unwrap().to_owned());
                    }
                }
            }
            503 => {
                refused += 1;
                assert!(r.retry_after.is_some(), "request {i}: 503 without Retry-After");
            }
            other => panic!("request {i}: unexpected {other}: {}", r.body),
        }
    }
    assert!(ok > 100 && refused > 30, "ok {ok}, refused {refused}");
    let stored: BTreeSet<String> = {
        let mut all = BTreeSet::new();
        for w in app.store.weeks().await.unwrap() {
            for r in tally_core::testing::collect_week(app.store.as_ref(), w, 500).await {
                all.insert(r.id.to_string());
            }
        }
        all
    };
    assert_eq!(stored, acked, "stored ids must be exactly the acknowledged ones");
    app.store.integrity_check().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_past_the_store_timeout_is_201_if_its_commit_had_started_else_503_with_nothing_stored() {
    // GIVEN a SQLite writer that stops after claiming its first group, until released
    let dir = tempfile::tempdir().unwrap();
    let (claimed_tx, mut claimed) = tokio::sync::mpsc::unbounded_channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(Some(release_rx));
    let hook = CommitHook(Arc::new(move |_group| {
        if let Some(rx) = release_rx.lock().unwrap().take() {
            let _ = claimed_tx.send(());
            let _ = rx.recv();
        }
    }));
    let options = SqliteOptions { after_claim: Some(hook), ..SqliteOptions::default() };
    let store = Arc::new(SqliteRecordStore::open(dir.path().join("tally.db"), options).unwrap());
    // (the fault plan injects nothing: it tells when a caller's time limit passed)
    let plan = FaultPlan::new();
    let faulty: Arc<dyn RecordStore> = Arc::new(FaultyStore::new(store.clone(), plan.clone()));
    let ingest = IngestService::new(faulty, Arc::new(SystemClock), Limits::default());
    let state = AppState::new(ingest, Arc::new(MemorySummarySink::default()), Auth::key(KEY))
        .with_store_timeout(Duration::from_millis(50));
    let app = App { router: router(state, HttpOptions::default()), store, plan, _dir: dir };
    let post_in_background = |body: &'static str| {
        let r = app.router.clone();
        tokio::spawn(async move {
            let res = r.oneshot(post(body, None)).await.unwrap();
            let status = res.status();
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        })
    };
    // AND request A's records claimed for a commit, request B's queued behind them
    let a = post_in_background(r#"{"a":1}"#);
    claimed.recv().await.unwrap();
    let b = post_in_background(r#"{"b":1}"#);
    // WHEN both outlive the store timeout before the commit happens
    app.plan.gave_up_at_least(2).await;
    release.send(()).unwrap();
    // THEN A, whose commit had started, gets its 201 and B, still queued, a 503
    let (a_status, a_body) = a.await.unwrap();
    assert_eq!(a_status, StatusCode::CREATED, "{a_body}");
    let (b_status, b_body) = b.await.unwrap();
    assert_eq!(b_status, StatusCode::SERVICE_UNAVAILABLE, "{b_body}");
    assert_eq!(b_body["type"], "/problems/store-unavailable");
    // AND exactly A's record is stored, now and after the writer has drained its queue
    writer_drained(&app.store).await;
    let a_id = tally_core::RecordId::parse(a_body["id"].as_str().unwrap()).unwrap();
    assert_eq!(app.store.get(a_id).await.unwrap().map(|r| r.data), Some(r#"{"a":1}"#.to_owned()));
    assert_eq!(app.store.count().await.unwrap(), 1, "B's record was stored behind its 503");
}

/// Objects in the sink directory: (relative path, bytes).
fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.push((p.strip_prefix(root).unwrap().display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[tokio::test]
async fn a_summary_that_fails_at_any_step_leaves_no_manifest_and_the_rerun_converges() {
    // GIVEN a week of records in SQLite (several pages and upload chunks)
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteRecordStore::open(dir.path().join("tally.db"), SqliteOptions::default()).unwrap());
    let week = IsoWeek::parse("2026-W20").unwrap();
    let records: Vec<tally_core::Record> = (0..1200)
        .map(|i| {
            let at = Timestamp::from_millis(week.start().as_millis() + i * 60_000);
            tally_core::Record {
                id: tally_core::RecordId::generate(at),
                received_at: at,
                data: format!(r#"{{"i":{i},"s":"v{}","f":{}.5}}"#, i % 37, i % 101),
            }
        })
        .collect();
    store.insert(&records, None).await.unwrap();
    let clock = FixedClock::at(Timestamp::from_millis(week.end().as_millis() + 3_600_000));
    let options = SummaryOptions { page_size: 200, upload_chunk_bytes: 4096, ..SummaryOptions::default() };

    // The reference: a clean run into its own folder.
    let clean_dir = tempfile::tempdir().unwrap();
    let clean = DirSummarySink::new(clean_dir.path());
    summarize_week(store.as_ref(), &clean, &clock, week, &options, &NoProgress).await.unwrap();
    let reference = tree(clean_dir.path());
    // The week's four objects and the bucket's index.html.
    assert_eq!(reference.len(), 5, "{:?}", reference.iter().map(|r| &r.0).collect::<Vec<_>>());

    let steps = [
        (Op::SinkBegin, 0),
        (Op::SinkOpen, 0),
        (Op::ScanPage, 3),
        (Op::UploadWrite, 1),
        (Op::UploadFinish, 0),
        (Op::SinkPut("summary.json"), 0),
        (Op::SinkPut("summary.html"), 0),
        (Op::SinkCommit, 0),
    ];
    for (op, nth) in steps {
        for fault in [Fault::Unavailable, Fault::Internal] {
            let out = tempfile::tempdir().unwrap();
            let plan = FaultPlan::new();
            let real: Arc<dyn SummarySink> = Arc::new(DirSummarySink::new(out.path()));
            let sink = FaultySink::new(real.clone(), plan.clone());
            let faulty_store = FaultyStore::new(store.clone(), plan.clone());
            // A previous complete run exists: the failed rerun must withdraw its manifest.
            summarize_week(store.as_ref(), real.as_ref(), &clock, week, &options, &NoProgress).await.unwrap();
            plan.fail_nth(op, nth, fault);
            let err = summarize_week(&faulty_store, &sink, &clock, week, &options, &NoProgress).await;
            assert!(err.is_err(), "{op:?}/{fault:?}: the run should fail");
            assert_eq!(plan.injected(), 1, "{op:?}: the fault was not reached");
            // THEN no manifest, no temp file, and every object left is whole
            let after = tree(out.path());
            if op == Op::SinkBegin {
                // Nothing was touched: the previous complete summary still stands.
                assert_eq!(after, reference, "a failed begin_week must change nothing");
                plan.clear();
                continue;
            }
            assert!(!after.iter().any(|(p, _)| p.ends_with(MANIFEST_JSON)), "{op:?}: manifest left behind");
            assert!(
                !after.iter().any(|(p, _)| p.ends_with(".tmp")),
                "{op:?}: temp file left: {after:?}",
                after = after.iter().map(|a| &a.0).collect::<Vec<_>>()
            );
            for (path, bytes) in &after {
                let whole = reference.iter().find(|(p, _)| p == path).map(|(_, b)| b);
                assert_eq!(whole, Some(bytes), "{op:?}: {path} is not a whole object of the clean run");
            }
            assert!(real.list_weeks().await.unwrap().is_empty(), "{op:?}: week listed as complete");
            // AND the rerun converges to the clean run, byte for byte
            plan.clear();
            summarize_week(&faulty_store, &sink, &clock, week, &options, &NoProgress).await.unwrap();
            assert_eq!(tree(out.path()), reference, "{op:?}/{fault:?}: rerun differs from the clean run");
        }
    }

    // A failed index.html write does not fail the week, whose manifest stands.
    let out = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new();
    let sink = FaultySink::new(Arc::new(DirSummarySink::new(out.path())), plan.clone());
    plan.fail_nth(Op::SinkPut("other"), 0, Fault::Unavailable);
    summarize_week(store.as_ref(), &sink, &clock, week, &options, &NoProgress).await.unwrap();
    assert_eq!(plan.injected(), 1, "the index write was not reached");
    let after = tree(out.path());
    assert!(after.iter().any(|(p, _)| p.ends_with(MANIFEST_JSON)));
    assert!(!after.iter().any(|(p, _)| p.ends_with("index.html")));
}

#[test]
fn a_read_only_data_dir_is_a_clear_error_at_start_up() {
    let Some(mnt) = TinyFs::mount("1m") else { return };
    std::fs::create_dir_all(mnt.path.join("data")).unwrap();
    mnt.remount_ro();
    let out = common::tally()
        .args(["serve", "--listen", "127.0.0.1:0", "--no-schedule", "--data-dir"])
        .arg(mnt.path.join("data"))
        .env_remove("TALLY_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not writable") || err.contains("cannot open"), "{err}");
    assert!(err.contains("permissions") || err.contains("writable"), "{err}");
}

#[tokio::test]
async fn a_full_disk_gives_503_at_run_time_and_no_corruption() {
    let Some(mnt) = TinyFs::mount("2m") else { return };
    let data = mnt.path.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let server = common::Server::start(&data, &[]);
    let http = common::client();
    let payload = format!(r#"{{"pad":"{}"}}"#, "x".repeat(60_000));
    let batch = format!("[{}]", [payload.as_str(); 8].join(","));
    let (mut acked, mut full) = (Vec::new(), 0);
    for _ in 0..200 {
        let r = http
            .post(server.url("/records"))
            .header("x-api-key", common::KEY)
            .header("content-type", "application/json")
            .body(batch.clone())
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            201 => acked.extend(
                r.json::<Value>().await.unwrap()["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned()),
            ),
            503 => {
                assert!(r.headers().contains_key("retry-after"));
                let p: Value = r.json().await.unwrap();
                assert_eq!(p["type"], "/problems/store-unavailable");
                full += 1;
                if full >= 3 {
                    break;
                }
            }
            s => panic!("unexpected {s}: {}", r.text().await.unwrap()),
        }
    }
    assert!(full >= 3, "the disk never filled");
    assert!(!acked.is_empty(), "nothing fit at all");
    // Health and reads still work on a full disk.
    let r =
        http.get(server.url(&format!("/records/{}", acked[0]))).header("x-api-key", common::KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    server.kill9();
    // THEN every acknowledged record is there and the file is sound
    let dir = tempfile::tempdir().unwrap();
    // Copy out (the tmpfs is full; SQLite may need room to recover the WAL).
    for f in ["tally.db", "tally.db-wal", "tally.db-shm"] {
        if data.join(f).exists() {
            std::fs::copy(data.join(f), dir.path().join(f)).unwrap();
        }
    }
    let store = SqliteRecordStore::open(dir.path().join("tally.db"), SqliteOptions::default()).unwrap();
    store.integrity_check().await.unwrap();
    assert_eq!(store.count().await.unwrap(), acked.len() as u64);
    for id in &acked {
        assert!(store.get(tally_core::RecordId::parse(id).unwrap()).await.unwrap().is_some(), "{id} lost");
    }
}

/// A tiny tmpfs, to fill up or make read-only. Needs root and `mount`;
/// where that is not possible the test says so and passes vacuously only
/// when `TALLY_TEST_NO_MOUNT=1` is set — otherwise it fails loudly.
struct TinyFs {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TinyFs {
    fn mount(size: &str) -> Option<TinyFs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var("TALLY_TEST_NO_MOUNT").is_ok_and(|v| v == "1"),
                "cannot mount a tmpfs (needs root); set TALLY_TEST_NO_MOUNT=1 to skip the disk-full tests"
            );
            eprintln!("SKIPPED: cannot mount a tmpfs here");
            return None;
        }
        Some(TinyFs { path: dir.path().to_owned(), _dir: dir })
    }

    fn remount_ro(&self) {
        let ok = std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remount read-only failed");
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[tokio::test]
async fn uploads_beyond_the_concurrency_limit_are_shed_with_503_and_retry_after() {
    // GIVEN one ingest slot, held by a request whose insert hangs
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteRecordStore::open(dir.path().join("tally.db"), SqliteOptions::default()).unwrap());
    let plan = FaultPlan::new();
    let faulty: Arc<dyn RecordStore> = Arc::new(FaultyStore::new(store.clone(), plan.clone()));
    let ingest = IngestService::new(faulty, Arc::new(SystemClock), Limits::default());
    let state =
        AppState::new(ingest, Arc::new(MemorySummarySink::default()), Auth::key(KEY)).with_ingest_concurrency(1);
    let app = App { router: router(state, HttpOptions::default()), store, plan, _dir: dir };
    app.plan.fail(Op::Insert, Fault::Delay(Duration::from_millis(800)));
    let first = tokio::spawn({
        let r = app.router.clone();
        async move { r.oneshot(post(r#"{"first":1}"#, None)).await.unwrap().status() }
    });
    // (It holds the slot once its insert has started hanging.)
    app.plan.injected_at_least(1).await;
    // WHEN another upload arrives, it is shed at once; reads are not
    let r = send(&app, post(r#"{"second":1}"#, None)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.body["type"], "/problems/overloaded");
    assert!(r.retry_after.is_some_and(|s| s >= 1));
    let health = send(&app, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(health.status, StatusCode::OK);
    // THEN the first completes, and the slot is free again
    assert_eq!(first.await.unwrap(), StatusCode::CREATED);
    app.plan.clear();
    assert_eq!(send(&app, post(r#"{"third":1}"#, None)).await.status, StatusCode::CREATED);
    assert_eq!(app.store.count().await.unwrap(), 2);
}
