//! Bad input through the Lambda path: API Gateway REST events (built from the
//! `events/apigw-post-records.json` fixture) into `api_service`, against
//! moto. Each case must get its exact 4xx problem document, and the table must
//! hold exactly as many records as before. The full suite of 100+ cases runs
//! over a real socket in `tally-cli/tests/bad_input.rs`; this one proves the
//! Lambda adapter maps the same failures the same way.

use std::sync::Arc;

use base64::Engine;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tally_aws::S3WeekRefresh;
use tally_aws::testing::fresh_adapters;
use tally_core::ports::WeekRefresh;
use tally_core::testing::{FixedClock, collect_week};
use tally_core::{Clock, IsoWeek, RecordLifecycle, SummarySink, Timestamp};
use tally_lambda::api_service;

/// Report links are not what these tests are about: a fixed secret.
fn links() -> tally_core::report_link::LinkSigner {
    tally_core::report_link::LinkSigner::new(Arc::new(tally_core::testing::MemoryLinkSecret::new("k".repeat(32))))
}
use tower::ServiceExt;

const FIXTURE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/apigw-post-records.json"));

enum Body<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
    None,
}

/// The fixture with another method, path, body and headers (`None` removes one).
fn event(method: &str, path: &str, body: Body<'_>, headers: &[(&str, Option<&str>)]) -> String {
    let mut e: Value = serde_json::from_str(FIXTURE).unwrap();
    e["httpMethod"] = json!(method);
    e["requestContext"]["httpMethod"] = json!(method);
    e["path"] = json!(path);
    e["resource"] = json!(path);
    e["requestContext"]["path"] = json!(format!("/Prod{path}"));
    for (name, value) in headers {
        for (field, wrap) in [("headers", false), ("multiValueHeaders", true)] {
            let map = e[field].as_object_mut().unwrap();
            map.retain(|k, _| !k.eq_ignore_ascii_case(name));
            if let Some(v) = value {
                map.insert((*name).to_owned(), if wrap { json!([v]) } else { json!(v) });
            }
        }
    }
    match body {
        Body::Text(t) => {
            e["body"] = json!(t);
            e["isBase64Encoded"] = json!(false);
        }
        Body::Binary(b) => {
            e["body"] = json!(base64::engine::general_purpose::STANDARD.encode(b));
            e["isBase64Encoded"] = json!(true);
        }
        Body::None => e["body"] = Value::Null,
    }
    e.to_string()
}

#[tokio::test]
async fn bad_requests_get_their_4xx_problem_and_store_nothing() {
    let (store, sink, _) = fresh_adapters().await;
    let refresh: Arc<dyn WeekRefresh> = Arc::new(S3WeekRefresh::new(&sink));
    let store: Arc<dyn RecordLifecycle> = Arc::new(store);
    let sink: Arc<dyn SummarySink> = Arc::new(sink);
    let clock: Arc<dyn Clock> = Arc::new(FixedClock::at(Timestamp::now()));
    let week = IsoWeek::containing(clock.now());
    let deep = format!("{}1{}", "{\"a\":".repeat(33), "}".repeat(33));
    let too_many = format!("[{}]", vec!["{}"; 1001].join(","));
    let json_ct = [("Content-Type", Some("application/json"))];
    #[rustfmt::skip]
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("empty body", event("POST", "/records", Body::Text(""), &json_ct), 400, "/problems/empty-body"),
        ("no body at all", event("POST", "/records", Body::None, &json_ct), 400, "/problems/empty-body"),
        ("truncated JSON", event("POST", "/records", Body::Text("{\"a\":"), &json_ct), 400, "/problems/malformed-json"),
        ("trailing garbage", event("POST", "/records", Body::Text("{}x"), &json_ct), 400, "/problems/malformed-json"),
        ("NaN literal", event("POST", "/records", Body::Text("{\"a\":NaN}"), &json_ct), 400, "/problems/malformed-json"),
        ("invalid UTF-8", event("POST", "/records", Body::Binary(b"{\"a\":\"\xff\"}"), &json_ct), 400, "/problems/invalid-encoding"),
        ("UTF-16 BOM", event("POST", "/records", Body::Binary(b"\xff\xfe{\0}\0"), &json_ct), 400, "/problems/invalid-encoding"),
        ("top-level number", event("POST", "/records", Body::Text("42"), &json_ct), 422, "/problems/not-an-object"),
        ("array of non-objects", event("POST", "/records", Body::Text("[{},1]"), &json_ct), 422, "/problems/not-an-object"),
        ("empty batch", event("POST", "/records", Body::Text("[]"), &json_ct), 422, "/problems/empty-batch"),
        ("1001 records", event("POST", "/records", Body::Text(&too_many), &json_ct), 422, "/problems/too-many-records"),
        ("depth 33", event("POST", "/records", Body::Text(&deep), &json_ct), 422, "/problems/too-deep"),
        ("duplicate key", event("POST", "/post", Body::Text("{\"a\":1,\"a\":2}"), &json_ct), 422, "/problems/duplicate-key"),
        ("NDJSON bad line", event("POST", "/records", Body::Text("{}\n{\"a\":\n"), &[("Content-Type", Some("application/x-ndjson"))]), 400, "/problems/malformed-json"),
        ("text/plain", event("POST", "/records", Body::Text("{}"), &[("Content-Type", Some("text/plain"))]), 415, "/problems/unsupported-media-type"),
        ("no Content-Type", event("POST", "/records", Body::Text("{}"), &[("Content-Type", None)]), 415, "/problems/unsupported-media-type"),
        ("long Idempotency-Key", event("POST", "/records", Body::Text("{}"), &[("Content-Type", Some("application/json")), ("Idempotency-Key", Some(&"k".repeat(256)))]), 400, "/problems/bad-request"),
        ("id not a ULID", event("GET", "/records/..%2F..%2Fetc", Body::None, &[]), 400, "/problems/bad-request"),
        ("unknown id", event("GET", "/records/01M89RQMEYGXTD6BNP1545TGZB", Body::None, &[]), 404, "/problems/not-found"),
        ("week 54", event("GET", "/summaries/2026-W54", Body::None, &[]), 400, "/problems/bad-request"),
        ("DELETE", event("DELETE", "/records", Body::None, &[]), 405, "/problems/method-not-allowed"),
        ("unknown route", event("GET", "/admin", Body::None, &[]), 404, "/problems/not-found"),
    ];
    let before = collect_week(store.as_ref(), week, 1000).await.len();
    for (name, e, status, kind) in &cases {
        let request = lambda_http::request::from_str(e).unwrap_or_else(|err| panic!("{name}: bad event: {err}"));
        let service = api_service(store.clone(), sink.clone(), refresh.clone(), links(), clock.clone(), None);
        let response = service.oneshot(request).await.expect("infallible");
        let got = response.status().as_u16();
        let ct = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let p: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!(got, *status, "{name}: {p}");
        assert_eq!(ct, "application/problem+json", "{name}");
        assert_eq!(p["type"], *kind, "{name}: {p}");
        assert!(p["detail"].as_str().is_some_and(|d| d.len() > 20), "{name}: no advice in {p}");
    }
    assert_eq!(collect_week(store.as_ref(), week, 1000).await.len(), before, "a refused request stored something");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut e, data).unwrap();
    e.finish().unwrap()
}

/// API Gateway (REST) decompresses gzip and deflate bodies before invoking
/// the function but leaves `Content-Encoding` in the event ("Call an API
/// method with a compressed payload", API Gateway developer guide); a body
/// passed through arrives base64-encoded (`isBase64Encoded`, "Binary media
/// types for REST APIs"). Both are stored; the limit holds on the decoded
/// size; a broken stream is 400 naming its coding; nothing refused is stored.
#[tokio::test]
async fn compressed_bodies_through_the_gateway_are_stored_once_decoded_and_bombs_are_refused() {
    let (store, sink, _) = fresh_adapters().await;
    let refresh: Arc<dyn WeekRefresh> = Arc::new(S3WeekRefresh::new(&sink));
    let store: Arc<dyn RecordLifecycle> = Arc::new(store);
    let sink: Arc<dyn SummarySink> = Arc::new(sink);
    let clock: Arc<dyn Clock> = Arc::new(FixedClock::at(Timestamp::now()));
    let week = IsoWeek::containing(clock.now());
    let ndjson = "{\"via\":\"gateway\",\"n\":1}\n{\"via\":\"gateway\",\"n\":2}\n";
    let zipped = gzip(ndjson.as_bytes());
    let nd = ("Content-Type", Some("application/x-ndjson"));
    let bomb = gzip(&vec![0; 1 << 20]).repeat(512);
    let zstd_bomb = zstd_frames();
    #[rustfmt::skip]
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("decoded by API Gateway, header kept", event("POST", "/records", Body::Text(ndjson), &[nd, ("Content-Encoding", Some("gzip"))]), 201, ""),
        ("gzip passed through as base64", event("POST", "/records", Body::Binary(&zipped), &[nd, ("Content-Encoding", Some("gzip"))]), 201, ""),
        ("zstd passed through as base64", event("POST", "/post", Body::Binary(&zstd_small(ndjson)), &[nd, ("Content-Encoding", Some("zstd"))]), 201, ""),
        ("gzip bomb", event("POST", "/records", Body::Binary(&bomb), &[nd, ("Content-Encoding", Some("gzip"))]), 413, "/problems/body-too-large"),
        ("zstd bomb", event("POST", "/records", Body::Binary(&zstd_bomb), &[nd, ("Content-Encoding", Some("zstd"))]), 413, "/problems/body-too-large"),
        ("truncated gzip", event("POST", "/records", Body::Binary(&zipped[..zipped.len() - 5]), &[nd, ("Content-Encoding", Some("gzip"))]), 400, "/problems/undecodable-body"),
        ("stacked codings", event("POST", "/records", Body::Binary(&gzip(&zipped)), &[nd, ("Content-Encoding", Some("gzip, gzip"))]), 415, "/problems/unsupported-media-type"),
        ("unknown coding", event("POST", "/records", Body::Binary(&zipped), &[nd, ("Content-Encoding", Some("br"))]), 415, "/problems/unsupported-media-type"),
    ];
    let mut expected = collect_week(store.as_ref(), week, 1000).await.len();
    for (name, e, status, kind) in &cases {
        let request = lambda_http::request::from_str(e).unwrap_or_else(|err| panic!("{name}: bad event: {err}"));
        let service = api_service(store.clone(), sink.clone(), refresh.clone(), links(), clock.clone(), None);
        let response = service.oneshot(request).await.expect("infallible");
        let got = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!(got, *status, "{name}: {body}");
        if *status == 201 {
            assert_eq!(body["count"], 2, "{name}: {body}");
            expected += 2;
        } else {
            assert_eq!(body["type"], *kind, "{name}: {body}");
        }
        let stored = collect_week(store.as_ref(), week, 1000).await;
        assert_eq!(stored.len(), expected, "{name}: a refused request stored something");
    }
    let stored = collect_week(store.as_ref(), week, 1000).await;
    assert!(stored.iter().all(|r| r.data.starts_with("{\"via\":\"gateway\"")), "stored as sent, uncompressed");
}

fn zstd_small(text: &str) -> Vec<u8> {
    zstd::encode_all(text.as_bytes(), 3).unwrap()
}

/// 10 GiB of zeros as 80 zstd frames of 128 MiB each (329 KB).
fn zstd_frames() -> Vec<u8> {
    zstd::encode_all(std::io::Read::take(std::io::repeat(0), 128 << 20), 3).unwrap().repeat(80)
}
