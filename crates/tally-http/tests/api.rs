//! The HTTP contract, exercised in-process with `oneshot` (no socket).
//! Every status code the contract names has a test here; the same contract
//! runs over a real socket in `tally-cli`'s tests.

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tally_core::ports::{InsertOutcome, RecordPages, RecordStore, StoreError, SummarySink};
use tally_core::testing::{MemoryRecordStore, MemorySummarySink};
use tally_core::{IdempotencyEntry, IdempotencyKey, IngestService, IsoWeek, Limits, Record, RecordId, SystemClock};
use tally_http::{AppState, Auth, HttpOptions, router};
use tower::ServiceExt;

const KEY: &str = "test-key-123";

struct App {
    router: Router,
    store: Arc<MemoryRecordStore>,
    sink: Arc<MemorySummarySink>,
}

fn app_with(limits: Limits) -> App {
    let store = Arc::new(MemoryRecordStore::default());
    let sink = Arc::new(MemorySummarySink::default());
    let ingest = IngestService::new(store.clone(), Arc::new(SystemClock), limits);
    let router = router(AppState::new(ingest, sink.clone(), Auth::key(KEY)), HttpOptions::default());
    App { router, store, sink }
}

fn app() -> App {
    app_with(Limits::default())
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an RFC 9457 problem with this status, returning its body.
    fn problem(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.header("content-type"), Some("application/problem+json"));
        let p = self.json();
        assert_eq!(p["status"], status);
        assert!(p["type"].as_str().is_some_and(|t| t.starts_with("/problems/")), "{p}");
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()), "{p}");
        assert!(p["detail"].as_str().is_some_and(|d| d.len() > 10), "{p}");
        p
    }
}

async fn send(app: &App, req: Request<Body>) -> Reply {
    let res = app.router.clone().oneshot(req).await.expect("router is infallible");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body").to_bytes().to_vec();
    Reply { status: parts.status, headers: parts.headers, body }
}

fn post(path: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path).header("x-api-key", KEY).header(header::CONTENT_TYPE, content_type).body(body.into()).unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).header("x-api-key", KEY).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn health_needs_no_key_and_reports_the_version() {
    let app = app();
    let r = send(&app, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}));
    assert!(r.header("x-request-id").is_some(), "request id is echoed");
}

#[tokio::test]
async fn a_single_record_is_created_and_read_back_losslessly() {
    let app = app();
    let data =
        r#"{"z":1.0,"a":1e400,"big":123456789012345678901234567890,"u":"é\u00e9 😀","nested":{"k":[1,2,{"x":null}]}}"#;
    let r = send(&app, post("/records", "application/json", data)).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    let id = body["id"].as_str().unwrap().to_owned();
    assert!(RecordId::parse(&id).is_ok());
    let received_at = body["received_at"].as_str().unwrap();
    assert_eq!(received_at.len(), "2026-11-25T15:32:06.123Z".len(), "{received_at}");
    assert!(received_at.ends_with('Z'));
    assert_eq!(r.header("location"), Some(format!("/records/{id}").as_str()));
    assert_eq!(r.header("content-type"), Some("application/json"));

    let g = send(&app, get(&format!("/records/{id}"))).await;
    assert_eq!(g.status, 200);
    let text = String::from_utf8(g.body).unwrap();
    assert_eq!(text, format!(r#"{{"id":"{id}","received_at":"{received_at}","data":{data}}}"#));
}

#[tokio::test]
async fn the_original_post_path_still_works() {
    let app = app();
    let r = send(&app, post("/post", "application/json", r#"{"message": "hello world"}"#)).await;
    assert_eq!(r.status, 201);
    assert_eq!(app.store.len(), 1);
}

#[tokio::test]
async fn batches_return_ids_in_input_order() {
    let app = app();
    let r = send(&app, post("/records", "application/json", r#"[{"i":0},{"i":1},{"i":2}]"#)).await;
    assert_eq!(r.status, 201);
    let body = r.json();
    assert_eq!(body["count"], 3);
    assert!(r.header("location").is_none());
    for (i, id) in body["ids"].as_array().unwrap().iter().enumerate() {
        let g = send(&app, get(&format!("/records/{}", id.as_str().unwrap()))).await;
        assert_eq!(g.json()["data"], json!({"i": i}));
    }
    let r = send(&app, post("/records", "application/x-ndjson", "{\"n\":1}\n\n{\"n\":2}\n")).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["count"], 2);
    assert_eq!(app.store.len(), 5);
}

#[tokio::test]
async fn a_bad_item_refuses_the_whole_batch() {
    let app = app();
    let r = send(&app, post("/records", "application/json", r#"[{"ok":1},{"ok":2},"nope"]"#)).await;
    let p = r.problem(422);
    assert_eq!(p["index"], 2);
    let r = send(&app, post("/records", "application/x-ndjson", "{\"ok\":1}\n\n{\"ok\":\n")).await;
    let p = r.problem(400);
    assert_eq!((p["index"].clone(), p["line"].clone()), (json!(1), json!(3)));
    assert_eq!(app.store.len(), 0);
}

#[tokio::test]
async fn malformed_json_is_400_with_line_and_column() {
    let app = app();
    let p = send(&app, post("/records", "application/json", "{\n  \"a\": }")).await.problem(400);
    assert_eq!((p["line"].clone(), p["column"].clone()), (json!(2), json!(8)));
    send(&app, post("/records", "application/json", "")).await.problem(400);
    send(&app, post("/records", "application/json", b"{\"a\":\"\xff\"}".to_vec())).await.problem(400);
    assert!(app.store.is_empty());
}

#[tokio::test]
async fn unacceptable_json_is_422() {
    let app = app_with(Limits { max_batch_records: 3, max_record_bytes: 100, ..Limits::default() });
    let deep = format!("{}1{}", "{\"a\":".repeat(33), "}".repeat(33));
    let big = format!(r#"[{{"a":"{}"}}]"#, "x".repeat(200));
    for body in ["42", "\"s\"", "null", "[1]", "[]", "[{},{},{},{}]", deep.as_str(), big.as_str(), r#"{"a":1,"a":2}"#] {
        send(&app, post("/records", "application/json", body.to_owned())).await.problem(422);
    }
    assert!(app.store.is_empty());
}

#[tokio::test]
async fn other_content_types_are_415() {
    let app = app();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin1",
    ] {
        send(&app, post("/records", ct, "{}")).await.problem(415);
    }
    let no_ct = Request::post("/records").header("x-api-key", KEY).body(Body::from("{}")).unwrap();
    send(&app, no_ct).await.problem(415);
    // A coding tally does not decode: 415, and the detail lists the ones it does.
    let br = send(&app, coded("/records", "br", b"{}".to_vec())).await.problem(415);
    assert!(br["detail"].as_str().unwrap().contains("gzip, zstd or deflate"), "{br}");
    assert!(app.store.is_empty());
    assert!(send(&app, post("/records", "application/json; charset=UTF-8", "{}")).await.status == 201);
}

fn coded(path: &str, coding: &str, body: Vec<u8>) -> Request<Body> {
    Request::post(path)
        .header("x-api-key", KEY)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CONTENT_ENCODING, coding)
        .body(Body::from(body))
        .unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn gzip_zstd_and_deflate_bodies_are_decoded_and_stored_as_sent_uncompressed() {
    use std::io::Write;
    let app = app();
    let ndjson = "{\"n\":1.0,\"s\":\"é\"}\n{\"n\":2}\n";
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(ndjson.as_bytes()).unwrap();
    let zlib = zlib.finish().unwrap();
    let bodies = [
        ("gzip", gzip(ndjson.as_bytes())),
        ("x-gzip", gzip(ndjson.as_bytes())),
        ("GZip", gzip(ndjson.as_bytes())),
        ("zstd", zstd::encode_all(ndjson.as_bytes(), 3).unwrap()),
        ("deflate", zlib),
        ("identity", ndjson.as_bytes().to_vec()),
    ];
    for (coding, body) in bodies {
        for path in ["/records", "/post"] {
            let r = send(&app, coded(path, coding, body.clone())).await;
            assert_eq!(r.status, 201, "{coding} on {path}: {}", String::from_utf8_lossy(&r.body));
            let ids = r.json()["ids"].as_array().unwrap().clone();
            let first = send(&app, get(&format!("/records/{}", ids[0].as_str().unwrap()))).await.json();
            assert_eq!(first["data"], json!({"n": 1.0, "s": "é"}));
        }
    }
    assert_eq!(app.store.len(), 24);
}

#[tokio::test]
async fn the_limit_applies_to_the_decoded_body_and_bad_streams_are_400_naming_the_coding() {
    let app = app_with(Limits { max_body_bytes: 1000, ..Limits::default() });
    // 2000 bytes that compress to ~40: over the limit once decoded.
    let big = format!("{{\"a\":\"{}\"}}", "x".repeat(2000));
    let p = send(&app, coded("/records", "gzip", gzip(big.as_bytes()))).await.problem(413);
    assert!(p["detail"].as_str().unwrap().contains("decompress"), "{p}");
    // Exactly at the limit once decoded: stored.
    let at_limit = format!("{{\"a\":\"{}\"}}", "x".repeat(1000 - 8));
    assert_eq!(at_limit.len(), 1000);
    assert_eq!(send(&app, coded("/records", "gzip", gzip(at_limit.as_bytes()))).await.status, 201);
    let full = gzip(b"{\"a\":1}\n{\"b\":2}\n");
    for (name, coding, body) in [
        ("plain body", "gzip", b"{\"a\":1}".to_vec()),
        ("truncated", "gzip", full[..full.len() - 6].to_vec()),
        ("gzip sent as zstd", "zstd", full.clone()),
        ("gzip sent as deflate", "deflate", full.clone()),
    ] {
        let p = send(&app, coded("/records", coding, body)).await.problem(400);
        assert_eq!(p["type"], "/problems/undecodable-body", "{name}: {p}");
        assert!(p["detail"].as_str().unwrap().contains(coding), "{name}: {p}");
    }
    let p = send(&app, coded("/records", "gzip, gzip", gzip(&full))).await.problem(415);
    assert!(p["detail"].as_str().unwrap().contains("once"), "{p}");
    assert_eq!(app.store.len(), 1);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let app = app_with(Limits { max_body_bytes: 1000, ..Limits::default() });
    let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(2000));
    send(&app, post("/records", "application/json", big.clone())).await.problem(413);
    // Without Content-Length: a streamed body is cut off at the limit.
    let chunks = futures_chunks(big);
    let req = Request::post("/records")
        .header("x-api-key", KEY)
        .header(header::CONTENT_TYPE, "application/json")
        .body(chunks)
        .unwrap();
    send(&app, req).await.problem(413);
    assert!(app.store.is_empty());
}

fn futures_chunks(s: String) -> Body {
    let parts: Vec<Result<String, std::io::Error>> =
        s.as_bytes().chunks(100).map(|c| Ok(String::from_utf8_lossy(c).into_owned())).collect();
    Body::from_stream(futures::stream::iter(parts))
}

#[tokio::test]
async fn the_api_key_is_required_in_the_header() {
    let app = app();
    let no_key =
        Request::post("/records").header(header::CONTENT_TYPE, "application/json").body(Body::from("{}")).unwrap();
    send(&app, no_key).await.problem(401);
    let wrong = Request::get("/summaries").header("x-api-key", "wrong").body(Body::empty()).unwrap();
    send(&app, wrong).await.problem(401);
    let in_query = Request::get(format!("/summaries?x-api-key={KEY}&api_key={KEY}")).body(Body::empty()).unwrap();
    send(&app, in_query).await.problem(401);
    assert!(app.store.is_empty());
}

#[tokio::test]
async fn unknown_routes_and_ids_are_404_and_bad_ids_400() {
    let app = app();
    send(&app, get("/nope")).await.problem(404);
    send(&app, get(&format!("/records/{}", RecordId::generate(tally_core::Timestamp::now())))).await.problem(404);
    for bad in ["not-a-ulid", "..%2F..%2Fetc%2Fpasswd", "%C3%A9t%C3%A9", &"A".repeat(10_000)] {
        let p = send(&app, get(&format!("/records/{bad}"))).await.problem(400);
        assert!(p["detail"].as_str().unwrap().len() < 300, "detail echoes too much: {p}");
    }
}

#[tokio::test]
async fn wrong_methods_are_405_with_allow() {
    let app = app();
    for (method, path, allow) in [
        (Method::PUT, "/records", "POST,GET,HEAD"),
        (Method::DELETE, "/records", "POST,GET,HEAD"),
        (Method::PATCH, "/records/01KAQ6ZP4W0000000000000000", "GET,HEAD,DELETE"),
        (Method::PATCH, "/post", "POST"),
        (Method::POST, "/health", "GET,HEAD"),
        (Method::DELETE, "/summaries", "GET,HEAD"),
    ] {
        let req =
            Request::builder().method(method.clone()).uri(path).header("x-api-key", KEY).body(Body::empty()).unwrap();
        let r = send(&app, req).await;
        r.problem(405);
        let got = r.header("allow").unwrap_or_default().replace(' ', "");
        assert_eq!(got, allow, "{method} {path}");
    }
}

#[tokio::test]
async fn idempotent_retries_replay_and_conflicting_reuse_is_409() {
    let app = app();
    let keyed = |body: &'static str| {
        let mut r = post("/records", "application/json", body);
        r.headers_mut().insert("idempotency-key", "order-42".parse().unwrap());
        r
    };
    let first = send(&app, keyed(r#"{"n":1}"#)).await;
    assert_eq!(first.status, 201);
    assert!(first.header("idempotent-replayed").is_none());
    let again = send(&app, keyed(r#"{"n":1}"#)).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(app.store.len(), 1);
    send(&app, keyed(r#"{"n":2}"#)).await.problem(409);
    assert_eq!(app.store.len(), 1);

    for bad in ["", &"k".repeat(256), "a\tb", "caf\u{e9}"] {
        let mut r = post("/records", "application/json", "{}");
        r.headers_mut().insert("idempotency-key", axum::http::HeaderValue::from_bytes(bad.as_bytes()).unwrap());
        send(&app, r).await.problem(400);
    }
    assert_eq!(app.store.len(), 1);
}

/// A store whose writes always fail as a busy or full disk would.
#[derive(Debug)]
struct UnavailableStore;

#[async_trait]
impl RecordStore for UnavailableStore {
    async fn insert(&self, _: &[Record], _: Option<&IdempotencyEntry>) -> Result<InsertOutcome, StoreError> {
        Err(StoreError::unavailable("disk full", std::io::Error::other("ENOSPC")))
    }
    async fn idempotency_entry(&self, _: &IdempotencyKey) -> Result<Option<IdempotencyEntry>, StoreError> {
        Ok(None)
    }
    async fn get(&self, _: RecordId) -> Result<Option<Record>, StoreError> {
        Err(StoreError::unavailable("disk full", std::io::Error::other("ENOSPC")))
    }
    fn scan_range(&self, _: RecordId, _: RecordId, _: usize) -> RecordPages<'_> {
        Box::pin(futures::stream::empty())
    }
    async fn weeks(&self) -> Result<Vec<IsoWeek>, StoreError> {
        Ok(vec![])
    }
}

#[tokio::test]
async fn a_store_that_cannot_commit_gives_503_with_retry_after() {
    let ingest = IngestService::new(Arc::new(UnavailableStore), Arc::new(SystemClock), Limits::default());
    let sink: Arc<dyn SummarySink> = Arc::new(MemorySummarySink::default());
    let router = router(AppState::new(ingest, sink, Auth::key(KEY)), HttpOptions::default());
    let app = App { router, store: Arc::default(), sink: Arc::default() };
    let r = send(&app, post("/records", "application/json", "{}")).await;
    let p = r.problem(503);
    assert!(r.header("retry-after").is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)));
    assert!(!p["detail"].as_str().unwrap().contains("ENOSPC"), "internals leaked: {p}");
}

#[tokio::test]
async fn summaries_are_listed_and_served_once_complete() {
    let app = app();
    let week = IsoWeek::parse("2026-W47").unwrap();
    send(&app, get("/summaries/2026-W47")).await.problem(404);
    for bad in ["2026-W54", "2026-W00", "..", "2026-47", "%2E%2E%2F"] {
        send(&app, get(&format!("/summaries/{bad}"))).await.problem(400);
    }
    app.sink.put_object(week, "summary.json", "application/json", r#"{"schema":1}"#.into()).await.unwrap();
    // Not complete until the manifest lands.
    send(&app, get("/summaries/2026-W47")).await.problem(404);
    assert_eq!(send(&app, get("/summaries")).await.json(), json!({"weeks": []}));
    app.sink.commit_week(week, "{}".into()).await.unwrap();
    let r = send(&app, get("/summaries/2026-W47")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"schema": 1}));
    assert_eq!(
        send(&app, get("/summaries")).await.json(),
        json!({"weeks": [{"week": "2026-W47", "href": "/summaries/2026-W47"}]})
    );
}
