//! The data lifecycle routes in-process: `GET /records` (pages, cursors,
//! NDJSON, bad parameters) and `DELETE /records/{id}` (who may erase, what
//! happens to the week's summary).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tally_core::summary::{NoProgress, SummaryOptions, summarize_week};
use tally_core::testing::{FixedClock, MemoryRecordStore, MemorySummarySink, RecordedRefresh};
use tally_core::{IngestService, IsoWeek, Limits, Record, RecordId, RecordStore, SystemClock, Timestamp};
use tally_http::{Admin, AppState, Auth, Erasure, HttpOptions, router};
use tower::ServiceExt;

const KEY: &str = "api-key-123";
const ADMIN: &str = "admin-key-456";

struct App {
    router: Router,
    store: Arc<MemoryRecordStore>,
    sink: Arc<MemorySummarySink>,
    refresh: Arc<RecordedRefresh>,
}

fn app(erasure: bool) -> App {
    let store = Arc::new(MemoryRecordStore::default());
    let sink = Arc::new(MemorySummarySink::default());
    let refresh = Arc::new(RecordedRefresh::default());
    let ingest = IngestService::new(store.clone(), Arc::new(SystemClock), Limits::default());
    let mut state = AppState::new(ingest, sink.clone(), Auth::key(KEY));
    if erasure {
        state = state.with_erasure(Erasure::new(store.clone(), refresh.clone(), Admin::Key(Auth::key(ADMIN))));
    }
    App { router: router(state, HttpOptions::default()), store, sink, refresh }
}

async fn send(app: &App, req: Request<Body>) -> (StatusCode, String, String) {
    let res = app.router.clone().oneshot(req).await.unwrap();
    let ct = res.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let status = res.status();
    let body = String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    (status, ct, body)
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).header("x-api-key", KEY).body(Body::empty()).unwrap()
}

fn delete(id: &str, key: Option<&str>) -> Request<Body> {
    let mut r = Request::delete(format!("/records/{id}"));
    if let Some(key) = key {
        r = r.header("x-api-key", key);
    }
    r.body(Body::empty()).unwrap()
}

/// 250 records over a day long past (so past the settle window), stored as sent.
async fn seed(store: &MemoryRecordStore) -> Vec<Record> {
    let day = 1_790_553_600_000; // 2026-09-28T00:00:00Z
    let mut records: Vec<Record> = (0..250)
        .map(|i| {
            let at = Timestamp::from_millis(day + i * 60_000);
            Record { id: RecordId::generate(at), received_at: at, data: format!(r#"{{"i":{i},"big":1e400}}"#) }
        })
        .collect();
    store.insert(&records, None).await.unwrap();
    records.sort_by_key(|r| r.id);
    records
}

#[tokio::test]
async fn pages_follow_their_cursor_to_the_end_of_the_range() {
    let app = app(false);
    let records = seed(&app.store).await;
    let mut path = "/records?from=2026-09-28T00:00:00Z&to=2026-09-29T00:00:00Z&limit=100".to_owned();
    let mut ids = Vec::new();
    let mut pages = 0;
    loop {
        let (status, ct, body) = send(&app, get(&path)).await;
        assert_eq!((status, ct.as_str()), (StatusCode::OK, "application/json"), "{body}");
        assert!(body.contains(r#""big":1e400"#), "data is embedded as sent: {body}");
        let page: Value = serde_json::from_str(&body.replace("1e400", "0")).unwrap();
        ids.extend(page["records"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        pages += 1;
        match page["next"].as_str() {
            Some(next) => {
                path = format!("/records?from=2026-09-28T00:00:00Z&to=2026-09-29T00:00:00Z&limit=100&cursor={next}")
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(ids, records.iter().map(|r| r.id.to_string()).collect::<Vec<_>>());
    // The same by week, default limit 100.
    let (_, _, body) = send(&app, get("/records?week=2026-W40")).await;
    let page: Value = serde_json::from_str(&body.replace("1e400", "0")).unwrap();
    assert_eq!(page["records"].as_array().unwrap().len(), 100);
}

#[tokio::test]
async fn ndjson_streams_the_whole_range_as_export_lines() {
    let app = app(false);
    let records = seed(&app.store).await;
    let req = Request::get("/records?week=2026-W40")
        .header("x-api-key", KEY)
        .header(header::ACCEPT, "application/x-ndjson")
        .body(Body::empty())
        .unwrap();
    let (status, ct, body) = send(&app, req).await;
    assert_eq!((status, ct.as_str()), (StatusCode::OK, "application/x-ndjson"));
    let expected: String = records.iter().map(|r| r.to_json() + "\n").collect();
    assert_eq!(body, expected);
}

#[tokio::test]
async fn bad_parameters_are_400_problems_naming_the_parameter() {
    let app = app(false);
    for (query, parameter) in [
        ("from=2026-09-28T00:00:00Z&to=2026-09-29T00:00:00Z&limit=0", "limit"),
        ("from=2026-09-28T00:00:00Z&to=2026-09-29T00:00:00Z&limit=1001", "limit"),
        ("from=2026-09-28T00:00:00Z&to=2026-09-29T00:00:00Z&cursor=abc", "cursor"),
        ("from=2026-09-29T00:00:00Z&to=2026-09-28T00:00:00Z", "from"),
        ("from=2026-01-01T00:00:00Z&to=2026-09-28T00:00:00Z", "to"),
        ("from=yesterday&to=2026-09-28T00:00:00Z", "from"),
        ("week=2026-W99", "week"),
        ("", "from"),
    ] {
        let (status, ct, body) = send(&app, get(&format!("/records?{query}"))).await;
        assert_eq!((status, ct.as_str()), (StatusCode::BAD_REQUEST, "application/problem+json"), "{query}: {body}");
        let p: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(p["parameter"], parameter, "{query}: {p}");
        assert_eq!(p["type"], "/problems/invalid-parameter");
    }
    let (status, _, _) = send(&app, Request::get("/records?week=2026-W40").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "range reads need the API key");
}

#[tokio::test]
async fn only_the_admin_key_erases_and_a_summarized_week_is_rewritten() {
    let app = app(true);
    let records = seed(&app.store).await;
    let week = IsoWeek::parse("2026-W40").unwrap();
    let clock = FixedClock::at(week.end());
    summarize_week(app.store.as_ref(), app.sink.as_ref(), &clock, week, &SummaryOptions::default(), &NoProgress)
        .await
        .unwrap();
    let id = records[7].id.to_string();

    assert_eq!(send(&app, delete(&id, None)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&app, delete(&id, Some(KEY))).await.0, StatusCode::FORBIDDEN, "the API key cannot erase");
    assert_eq!(send(&app, delete("not-an-id", Some(ADMIN))).await.0, StatusCode::BAD_REQUEST);
    assert!(app.store.get(records[7].id).await.unwrap().is_some(), "refused erasures erase nothing");

    let (status, _, body) = send(&app, delete(&id, Some(ADMIN))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let erased: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(erased, serde_json::json!({"id": id, "week": "2026-W40", "summary": "regenerating"}));
    // Asked before the delete (the retention leaves the week alone) and after it.
    assert_eq!(app.refresh.weeks(), vec![week, week]);
    assert_eq!(send(&app, get(&format!("/records/{id}"))).await.0, StatusCode::NOT_FOUND);
    assert_eq!(send(&app, delete(&id, Some(ADMIN))).await.0, StatusCode::NOT_FOUND);

    // A record of an ended week with no manifest (never summarized, or a run
    // under way that may have read it): rewritten all the same.
    let at = Timestamp::from_millis(week.end().as_millis() + 1000);
    let later = Record { id: RecordId::generate(at), received_at: at, data: "{}".into() };
    app.store.insert(std::slice::from_ref(&later), None).await.unwrap();
    let (_, _, body) = send(&app, delete(&later.id.to_string(), Some(ADMIN))).await;
    assert!(body.contains(r#""summary":"regenerating""#), "{body}");
    assert_eq!(app.refresh.weeks(), vec![week, week, week.next(), week.next()]);

    // A record of the week under way: no summary to rewrite ("none"); the
    // rewrite is asked for all the same, in case a `--partial` run of the
    // week is under way (it finds nothing to do otherwise).
    let now = Timestamp::now();
    let current = Record { id: RecordId::generate(now), received_at: now, data: "{}".into() };
    app.store.insert(std::slice::from_ref(&current), None).await.unwrap();
    let (_, _, body) = send(&app, delete(&current.id.to_string(), Some(ADMIN))).await;
    assert!(body.contains(r#""summary":"none""#), "{body}");
    assert_eq!(app.refresh.weeks().len(), 6);
}

#[tokio::test]
async fn without_an_admin_key_erasure_is_off_and_says_how_to_turn_it_on() {
    let app = app(false);
    let records = seed(&app.store).await;
    let (status, ct, body) = send(&app, delete(&records[0].id.to_string(), Some(KEY))).await;
    assert_eq!((status, ct.as_str()), (StatusCode::FORBIDDEN, "application/problem+json"));
    assert!(body.contains("TALLY_ADMIN_KEY"), "{body}");
    assert!(app.store.get(records[0].id).await.unwrap().is_some());
}
