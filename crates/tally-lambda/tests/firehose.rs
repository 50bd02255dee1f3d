//! Amazon Data Firehose deliveries through the API function, against moto:
//! the `events/apigw-post-firehose.json` fixture (a delivery as API Gateway
//! passes it on the keyless `POST /firehose` route) and variations of it.
//! Run with `./scripts/with-moto cargo test -p tally-lambda --test firehose`.
//!
//! The request format is Firehose's ("Understand HTTP endpoint delivery
//! request and response specifications", Amazon Data Firehose developer
//! guide): the request id stays the same on every retry of a delivery, and
//! only a 200 counts as delivered. So a retried delivery must answer 200 and
//! store nothing twice — on DynamoDB too, where a delivery of more than 100
//! records is a staged batch rather than one transaction.

use std::sync::Arc;

use base64::Engine;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tally_aws::S3WeekRefresh;
use tally_aws::testing::fresh_adapters;
use tally_core::ports::WeekRefresh;
use tally_core::report_link::LinkSigner;
use tally_core::testing::{FixedClock, MemoryLinkSecret, collect_week};
use tally_core::{Clock, IsoWeek, RecordLifecycle, RecordStore, SummarySink, Timestamp};
use tally_http::Auth;
use tally_lambda::api_service;
use tower::ServiceExt;

const FIXTURE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/apigw-post-firehose.json"));
/// The fixture's `X-Amz-Firehose-Access-Key`; the stack is given its SHA-256
/// (`printf %s firehose-key-0123456789 | sha256sum`).
const KEY_SHA256: &str = "7fc347171bca8d0e6892f8a83a1561ce8232e835c15fad054e2c6c97c50a7cd9";

struct Env {
    store: Arc<dyn RecordLifecycle>,
    sink: Arc<dyn SummarySink>,
    refresh: Arc<dyn WeekRefresh>,
    clock: Arc<FixedClock>,
}

async fn env() -> Env {
    let (store, sink, _) = fresh_adapters().await;
    let refresh: Arc<dyn WeekRefresh> = Arc::new(S3WeekRefresh::new(&sink));
    Env { store: Arc::new(store), sink: Arc::new(sink), refresh, clock: Arc::new(FixedClock::at(Timestamp::now())) }
}

impl Env {
    async fn call(&self, event: &str, firehose: Option<Auth>) -> (u16, Value) {
        let request = lambda_http::request::from_str(event).expect("an API Gateway event");
        let clock: Arc<dyn Clock> = self.clock.clone();
        let links = LinkSigner::new(Arc::new(MemoryLinkSecret::new("k".repeat(32))));
        let service = api_service(self.store.clone(), self.sink.clone(), self.refresh.clone(), links, clock, firehose);
        let response = service.oneshot(request).await.expect("infallible");
        let status = response.status().as_u16();
        assert_eq!(response.headers()["content-type"], "application/json");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    async fn stored(&self) -> usize {
        let store: &dyn RecordStore = self.store.as_ref();
        collect_week(store, IsoWeek::containing(self.clock.now()), 1000).await.len()
    }
}

fn key() -> Option<Auth> {
    Auth::sha256_hex(KEY_SHA256)
}

/// The fixture with another request id, records, and header overrides.
fn delivery(id: &str, records: &[&str], headers: &[(&str, Option<&str>)]) -> String {
    let mut e: Value = serde_json::from_str(FIXTURE).unwrap();
    let records: Vec<Value> =
        records.iter().map(|r| json!({"data": base64::engine::general_purpose::STANDARD.encode(r)})).collect();
    e["body"] = json!(json!({"requestId": id, "timestamp": 1_795_620_600_000_i64, "records": records}).to_string());
    let mut all = vec![("X-Amz-Firehose-Request-Id", Some(id))];
    all.extend_from_slice(headers);
    for (name, value) in all {
        for (field, wrap) in [("headers", false), ("multiValueHeaders", true)] {
            let map = e[field].as_object_mut().unwrap();
            map.retain(|k, _| !k.eq_ignore_ascii_case(name));
            if let Some(v) = value {
                map.insert(name.to_owned(), if wrap { json!([v]) } else { json!(v) });
            }
        }
    }
    e.to_string()
}

#[tokio::test]
async fn the_fixture_delivery_is_stored_and_its_retry_stores_nothing_twice() {
    let env = env().await;
    let (status, body) = env.call(FIXTURE, key()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["requestId"], "ed4acda5-034f-9f42-bba1-f29aea6d7d8f");
    assert!(body["timestamp"].is_i64() && body.get("errorMessage").is_none(), "{body}");
    assert_eq!(env.stored().await, 3);
    // Firehose retries (its answer was lost): 200 again, nothing new.
    env.clock.advance_ms(2500);
    let (status, _) = env.call(FIXTURE, key()).await;
    assert_eq!(status, 200);
    assert_eq!(env.stored().await, 3);
}

#[tokio::test]
async fn a_delivery_of_a_thousand_and_one_records_is_one_staged_batch_stored_once_on_retry() {
    let env = env().await;
    let lines: Vec<String> = (0..1001).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let records: Vec<&str> = lines.iter().map(String::as_str).collect();
    let event = delivery("staged-1001", &records, &[]);
    let (status, body) = env.call(&event, key()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(env.stored().await, 1001);
    env.clock.advance_ms(3000);
    let (status, body) = env.call(&event, key()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(env.stored().await, 1001, "the retry must not store the delivery again");
}

#[tokio::test]
async fn refused_deliveries_store_nothing_and_answer_in_firehose_s_format() {
    let env = env().await;
    let mut bad_b64: Value = serde_json::from_str(&delivery("b64", &["{}"], &[])).unwrap();
    bad_b64["body"] = json!(r#"{"requestId":"b64","timestamp":1,"records":[{"data":"!!not base64!!"}]}"#);
    #[rustfmt::skip]
    let cases: Vec<(&str, String, Option<Auth>, u16, &str)> = vec![
        ("bad base64", bad_b64.to_string(), key(), 400, "records[0].data is not valid base64"),
        ("a record that is not an object", delivery("arr", &["{}", "[1]"], &[]), key(), 422, "records[1].data"),
        ("a wrong access key", delivery("k", &["{}"], &[("X-Amz-Firehose-Access-Key", Some("guess"))]), key(), 401, "does not match"),
        ("no access key", delivery("k", &["{}"], &[("X-Amz-Firehose-Access-Key", None)]), key(), 401, "access key"),
        ("Firehose not configured", delivery("off", &["{}"], &[]), None, 403, "FirehoseAccessKeySha256"),
    ];
    for (name, event, auth, status, message) in cases {
        let (got, body) = env.call(&event, auth).await;
        assert_eq!(got, status, "{name}: {body}");
        assert!(body["errorMessage"].as_str().unwrap_or_default().contains(message), "{name}: {body}");
        assert!(body["requestId"].is_string() && body["timestamp"].is_i64(), "{name}: {body}");
    }
    assert_eq!(env.stored().await, 0);
}

#[tokio::test]
async fn a_gzip_delivery_decompressed_by_api_gateway_is_stored() {
    // API Gateway decompresses gzip before invoking the function and leaves
    // the header ("Call an API method with a compressed payload").
    let env = env().await;
    let event = delivery("gz", &["{\"z\":1}"], &[("Content-Encoding", Some("gzip"))]);
    let (status, body) = env.call(&event, key()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(env.stored().await, 1);
}
