//! What one API request writes to CloudWatch Logs at the default level
//! (`LogLevel=info`): exactly one line, the request line, whose size
//! docs/COST.md uses for the logs' ingestion cost. The subscriber is set up
//! the way `lambda_http::tracing::init_default_subscriber` does it with
//! `AWS_LAMBDA_LOG_FORMAT=JSON` (LoggingConfig in template.yaml), and the
//! request runs inside the span the Lambda runtime opens per invocation.
//! Run with `./scripts/with-moto cargo test -p tally-lambda --test log_lines -- --nocapture`.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io;
use std::sync::{Arc, Mutex};

use lambda_http::tracing::subscriber::filter::LevelFilter;
use lambda_http::tracing::subscriber::util::SubscriberInitExt;
use lambda_http::tracing::{Instrument, info_span};
use serde_json::Value;
use tally_aws::S3WeekRefresh;
use tally_aws::testing::fresh_adapters;
use tally_core::SystemClock;
use tally_lambda::api_service;
use tower::ServiceExt;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn one_request_writes_one_info_line_and_its_size_is_what_cost_md_assumes() {
    let (store, sink, _) = fresh_adapters().await;
    let store = Arc::new(store);
    let refresh = Arc::new(S3WeekRefresh::new(&sink));
    let links =
        tally_core::report_link::LinkSigner::new(Arc::new(tally_core::testing::MemoryLinkSecret::new("k".repeat(32))));
    let service = api_service(store.clone(), Arc::new(sink), refresh, links, Arc::new(SystemClock), None);
    let request = lambda_http::request::from_str(include_str!("../../../events/apigw-post-records.json")).unwrap();

    // GIVEN the subscriber of init_default_subscriber (JSON, INFO, no target, no time)
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = lambda_http::tracing::subscriber::fmt()
        .with_target(false)
        .without_time()
        .with_max_level(LevelFilter::INFO)
        .with_writer(move || writer.clone())
        .json()
        .finish();
    let _guard = subscriber.set_default();
    // WHEN POST /records is handled inside the runtime's invocation span
    // (request id and X-Ray trace id as Lambda passes them: 36 and 40 chars)
    let span = info_span!(
        "Lambda runtime invoke",
        requestId = "8f507a7c-5d2a-4a6c-9f1e-2b3c4d5e6f70",
        xrayTraceId = "Root=1-6745a2b0-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=0"
    );
    let response = service.oneshot(request).instrument(span).await.unwrap();
    assert_eq!(response.status(), 201);

    // THEN exactly one line was logged, at INFO: the request line
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one line per request at INFO, got:\n{text}");
    println!("request log line: {} bytes\n{}", lines[0].len() + 1, lines[0]);
    let line: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["fields"]["message"], "request done");
    assert_eq!(line["fields"]["status"], 201);
    // Lambda's JSON log filter reads "level"; the request id ties it to the
    // invocation (and the access log's requestId).
    let spans = line["spans"].as_array().unwrap();
    assert!(spans.iter().any(|s| s["requestId"] == "8f507a7c-5d2a-4a6c-9f1e-2b3c4d5e6f70"), "{line}");
    let bytes = lines[0].len() + 1;
    // bench/cost.py's REQUEST_LINE_BYTES comes from this measurement.
    let cost_py = include_str!("../../../bench/cost.py");
    let assumed: usize = cost_py
        .lines()
        .find_map(|l| l.strip_prefix("REQUEST_LINE_BYTES = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("bench/cost.py defines REQUEST_LINE_BYTES");
    assert!(
        bytes.abs_diff(assumed) <= assumed / 10,
        "the request line is {bytes} bytes but bench/cost.py assumes {assumed}: update REQUEST_LINE_BYTES and regenerate docs/COST.md"
    );
}
