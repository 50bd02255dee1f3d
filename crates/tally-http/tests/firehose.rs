//! `POST /firehose` in-process: Amazon Data Firehose HTTP endpoint delivery.
//!
//! Requests are built as the spec says Firehose sends them, and answers are
//! checked against what it says Firehose accepts: "Understand HTTP endpoint
//! delivery request and response specifications", Amazon Data Firehose
//! developer guide (docs.aws.amazon.com/firehose/latest/dev/httpdeliveryrequestresponse.html):
//! headers `X-Amz-Firehose-Protocol-Version: 1.0`, `X-Amz-Firehose-Request-Id`
//! (the same on every retry), `X-Amz-Firehose-Access-Key`, `Content-Type:
//! application/json`, optional `Content-Encoding: gzip`; body `{requestId,
//! timestamp, records: [{data: base64}]}`. Answer: `Content-Type:
//! application/json`, `Content-Length`, no `Content-Encoding`, body
//! `{requestId, timestamp}` with 200, or with `errorMessage` otherwise.

use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tally_core::testing::{MemoryRecordStore, MemorySummarySink};
use tally_core::{IngestService, Limits, SystemClock};
use tally_http::{AppState, Auth, HttpOptions, router};
use tower::ServiceExt;

const KEY: &str = "firehose-test-key";
const ID: &str = "ed4acda5-034f-9f42-bba1-f29aea6d7d8f";

struct App {
    router: axum::Router,
    store: Arc<MemoryRecordStore>,
}

fn app_with(auth: Option<Auth>) -> App {
    let store = Arc::new(MemoryRecordStore::default());
    let ingest = IngestService::new(store.clone(), Arc::new(SystemClock), Limits::default());
    let state = AppState::new(ingest, Arc::new(MemorySummarySink::default()), Auth::key(KEY)).with_firehose_auth(auth);
    App { router: router(state, HttpOptions::default()), store }
}

fn app() -> App {
    app_with(Some(Auth::key(KEY)))
}

fn envelope(id: &str, records: &[&[u8]]) -> Vec<u8> {
    let records: Vec<Value> =
        records.iter().map(|r| json!({"data": base64::engine::general_purpose::STANDARD.encode(r)})).collect();
    json!({"requestId": id, "timestamp": 1_578_090_901_599_i64, "records": records}).to_string().into_bytes()
}

/// A request as Firehose sends it.
fn delivery(id: &str) -> axum::http::request::Builder {
    Request::post("/firehose")
        .header("x-amz-firehose-protocol-version", "1.0")
        .header("x-amz-firehose-request-id", id)
        .header("x-amz-firehose-source-arn", "arn:aws:firehose:us-east-1:123456789012:deliverystream/tally")
        .header("x-amz-firehose-access-key", KEY)
        .header("content-type", "application/json")
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    json: Value,
}

async fn send(app: &App, req: Request<Body>) -> Answer {
    let res = app.router.clone().oneshot(req).await.expect("infallible");
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {bytes:?}"));
    Answer { status: parts.status, headers: parts.headers, json }
}

async fn deliver(app: &App, id: &str, body: Vec<u8>) -> Answer {
    send(app, delivery(id).body(Body::from(body)).unwrap()).await
}

/// The response format: application/json with a length, never compressed,
/// `requestId` and an integer `timestamp` always, `errorMessage` on errors.
fn check_format(a: &Answer, id: &str) {
    assert_eq!(a.headers["content-type"], "application/json", "{}", a.json);
    assert!(a.headers.contains_key("content-length"), "Firehose needs Content-Length");
    assert!(!a.headers.contains_key("content-encoding"));
    assert_eq!(a.json["requestId"], id, "{}", a.json);
    assert!(a.json["timestamp"].as_i64().is_some_and(|t| t > 1_700_000_000_000), "{}", a.json);
    if a.status == StatusCode::OK {
        assert!(a.json.get("errorMessage").is_none(), "{}", a.json);
    } else {
        let message = a.json["errorMessage"].as_str().unwrap_or_default();
        assert!(message.len() > 20 && message.len() <= 8192, "{}", a.json);
        assert_eq!(a.json["status"], a.status.as_u16(), "{}", a.json);
    }
}

#[tokio::test]
async fn a_delivery_of_objects_and_aggregated_ndjson_is_stored_and_answered_in_firehose_s_format() {
    let app = app();
    let a = deliver(&app, ID, envelope(ID, &[b"{\"a\":1}", b"{\"b\":2}\n{\"c\":3}\n", b""])).await;
    assert_eq!(a.status, 200, "{}", a.json);
    check_format(&a, ID);
    assert_eq!(app.store.len(), 3);
}

#[tokio::test]
async fn a_gzip_delivery_is_stored() {
    let app = app();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&envelope(ID, &[b"{\"gz\":true}"])).unwrap();
    let body = e.finish().unwrap();
    let req = delivery(ID).header("content-encoding", "gzip").body(Body::from(body)).unwrap();
    let a = send(&app, req).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(app.store.len(), 1);
}

#[tokio::test]
async fn a_retried_request_id_is_answered_200_and_stores_nothing_twice() {
    let app = app();
    let body = envelope(ID, &[b"{\"n\":1}", b"{\"n\":2}"]);
    assert_eq!(deliver(&app, ID, body).await.status, 200);
    // Firehose's retry: same id and records, a later envelope timestamp.
    let retry = String::from_utf8(envelope(ID, &[b"{\"n\":1}", b"{\"n\":2}"]))
        .unwrap()
        .replace("1578090901599", "1578091000000");
    let a = deliver(&app, ID, retry.into_bytes()).await;
    assert_eq!(a.status, 200, "{}", a.json);
    check_format(&a, ID);
    assert_eq!(app.store.len(), 2, "a retry must not store the records again");
    // The same id with other records: 409, nothing stored.
    let a = deliver(&app, ID, envelope(ID, &[b"{\"n\":3}"])).await;
    assert_eq!(a.status, 409, "{}", a.json);
    check_format(&a, ID);
    assert_eq!(app.store.len(), 2);
}

#[tokio::test]
async fn bad_deliveries_are_refused_whole_with_firehose_error_bodies() {
    let app = app();
    let bad_b64 =
        br#"{"requestId":"r-b64","timestamp":1,"records":[{"data":"e30="},{"data":"%%% not base64"}]}"#.to_vec();
    let big = format!("{{\"s\":\"{}\"}}", "x".repeat(60_000));
    let too_big: Vec<&[u8]> = vec![big.as_bytes(); 40];
    /// Name, request id, body, status, problem type, what `errorMessage` says.
    type Case<'a> = (&'a str, &'a str, Vec<u8>, u16, &'a str, &'a str);
    #[rustfmt::skip]
    let cases: Vec<Case<'_>> = vec![
        ("bad base64", "r-b64", bad_b64, 400, "/problems/bad-firehose-delivery", "records[1].data is not valid base64"),
        ("a record that is not an object", "r-arr", envelope("r-arr", &[b"{}", b"[1,2]"]), 422, "/problems/not-an-object", "records[1].data, line 1: the body is an array"),
        ("a bad NDJSON line", "r-line", envelope("r-line", &[b"{}\n{\"a\":\n"]), 400, "/problems/malformed-json", "records[0].data, line 2"),
        ("not a delivery", "r-x", br#"{"hello":"world"}"#.to_vec(), 400, "/problems/bad-firehose-delivery", "not a Firehose delivery"),
        ("header and body ids differ", "r-head", envelope("r-body", &[b"{}"]), 400, "/problems/bad-firehose-delivery", "differ"),
        // 400, not 413: Firehose does not back up a batch answered 413.
        ("over the size limit", "r-big", envelope("r-big", &too_big), 400, "/problems/body-too-large", "buffering size"),
    ];
    for (name, id, body, status, kind, message) in cases {
        let a = deliver(&app, id, body).await;
        assert_eq!(a.status.as_u16(), status, "{name}: {}", a.json);
        check_format(&a, id);
        assert_eq!(a.json["type"], kind, "{name}: {}", a.json);
        assert!(a.json["errorMessage"].as_str().unwrap().contains(message), "{name}: {}", a.json);
    }
    assert!(app.store.is_empty());
}

/// Firehose's headers with one replaced (`None`: left out).
fn with_header(name: &str, value: Option<&str>, body: &[u8]) -> Request<Body> {
    let mut req = Request::post("/firehose");
    for (n, v) in [
        ("x-amz-firehose-protocol-version", "1.0"),
        ("x-amz-firehose-request-id", ID),
        ("x-amz-firehose-access-key", KEY),
        ("content-type", "application/json"),
    ] {
        match (n == name, value) {
            (false, _) => req = req.header(n, v),
            (true, Some(value)) => req = req.header(n, value),
            (true, None) => {}
        }
    }
    req.body(Body::from(body.to_vec())).unwrap()
}

#[tokio::test]
async fn the_access_key_protocol_version_and_content_type_are_checked_first() {
    let app = app();
    let body = envelope(ID, &[b"{}"]);
    // Firehose sends its key in its own header; the API key header does not stand for it.
    let mut api_key = with_header("x-amz-firehose-access-key", None, &body);
    api_key.headers_mut().insert("x-api-key", KEY.parse().unwrap());
    for (name, req, status, message) in [
        ("API key header instead", api_key, 401, "X-Amz-Firehose-Access-Key"),
        ("wrong access key", with_header("x-amz-firehose-access-key", Some("nope"), &body), 401, "does not match"),
        ("protocol 2.0", with_header("x-amz-firehose-protocol-version", Some("2.0"), &body), 400, "1.0"),
        ("no protocol header", with_header("x-amz-firehose-protocol-version", None, &body), 400, "POST /records"),
        ("text/plain", with_header("content-type", Some("text/plain"), &body), 415, "application/json"),
    ] {
        let a = send(&app, req).await;
        assert_eq!(a.status.as_u16(), status, "{name}: {}", a.json);
        check_format(&a, ID);
        assert!(a.json["errorMessage"].as_str().unwrap().contains(message), "{name}: {}", a.json);
    }
    let off = app_with(None);
    let a = deliver(&off, ID, body).await;
    assert_eq!(a.status, 403, "{}", a.json);
    assert!(a.json["errorMessage"].as_str().unwrap().contains("FirehoseAccessKeySha256"), "{}", a.json);
    assert!(app.store.is_empty() && off.store.is_empty());
}
