//! The webhook notifier against a real HTTP receiver on 127.0.0.1: what it
//! sends, how it signs, and how [`announce`] retries it. Retries use a
//! policy of milliseconds (real sockets do not mix with paused time).

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tally_core::ports::Notifier;
use tally_core::retry::RetryPolicy;
use tally_core::summary::notify::{Announced, announce};
use tally_core::summary::{Notification, SummaryOptions, is_summarized, summarize_week};
use tally_core::testing::{FixedClock, MemoryRecordStore, MemorySummarySink};
use tally_core::{IsoWeek, Record, RecordId, RecordStore, SummarySink, WeekReport};
use tally_notify::{SIGNATURE_HEADER, WebhookNotifier};

/// What the receiver was sent.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

/// A webhook receiver: answers with the scripted statuses in turn (then
/// 200), or never answers when `hang`; records every request.
#[derive(Clone, Default)]
struct Receiver {
    script: Arc<Mutex<VecDeque<StatusCode>>>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(script: &[u16], hang: bool) -> (Self, SocketAddr) {
        let receiver = Self {
            script: Arc::new(Mutex::new(script.iter().map(|s| StatusCode::from_u16(*s).unwrap()).collect())),
            received: Arc::default(),
        };
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/hooks/{token}",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    state.received.lock().unwrap().push(Received { headers, body });
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    state.script.lock().unwrap().pop_front().unwrap_or(StatusCode::OK)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

const FAST: RetryPolicy = RetryPolicy {
    max_attempts: 5,
    base: Duration::from_millis(5),
    max_delay: Duration::from_millis(20),
    jitter: false,
};

fn week() -> IsoWeek {
    IsoWeek::parse("2026-W47").unwrap()
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/hooks/T0-SECRETTOKEN")
}

/// A week with three records, summarized into a memory sink.
async fn summarized() -> (MemorySummarySink, WeekReport) {
    let store = MemoryRecordStore::default();
    let at = tally_core::Timestamp::from_millis(week().start().as_millis() + 3_600_000);
    let records: Vec<Record> = (0..3)
        .map(|i| Record { id: RecordId::generate(at), received_at: at, data: format!(r#"{{"i":{i}}}"#) })
        .collect();
    store.insert(&records, None).await.unwrap();
    let sink = MemorySummarySink::default();
    let clock = FixedClock::at(week().end());
    let report =
        summarize_week(&store, &sink, &clock, week(), &SummaryOptions::default(), &tally_core::summary::NoProgress)
            .await
            .unwrap();
    (sink, report)
}

/// When the notifications are made.
const NOW: tally_core::Timestamp = tally_core::Timestamp::from_millis(1_796_000_000_000);

fn links() -> tally_core::report_link::ReportLinks {
    let secret = Arc::new(tally_core::testing::MemoryLinkSecret::new("k".repeat(32)));
    let base = tally_core::report_link::PublicUrl::parse("https://tally.example.com").unwrap();
    tally_core::report_link::ReportLinks::new(tally_core::report_link::LinkSigner::new(secret), base, 30)
}

fn notifiers(n: WebhookNotifier) -> Vec<Arc<dyn Notifier>> {
    vec![Arc::new(n)]
}

#[tokio::test]
async fn webhook_notifier_meets_the_notifier_contract() {
    // A receiver that passes on the `text` of each notification it is sent.
    let (tx, mut texts) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hooks/{token}",
        axum::routing::post(move |body: Bytes| {
            let tx = tx.clone();
            async move {
                let n: Notification = serde_json::from_slice(&body).unwrap();
                let _ = tx.send(n.text);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // And one that fails every request.
    let (_failing, failing_addr) = Receiver::start(&[500; 8], false).await;

    let webhook = WebhookNotifier::new(&url(addr), Some("k")).unwrap();
    let failing = WebhookNotifier::new(&url(failing_addr), Some("k")).unwrap();
    tally_core::testing::notifier_contract(&webhook, &mut texts, &failing).await;
}

#[tokio::test]
async fn the_body_is_the_notification_signed_with_the_secret() {
    let (receiver, addr) = Receiver::start(&[], false).await;
    let (sink, report) = summarized().await;
    let secret = "correct horse battery staple";
    let webhook = WebhookNotifier::new(&url(addr), Some(secret)).unwrap();
    let announced = announce(&notifiers(webhook), &sink, &links(), &report, NOW, &FAST).await;
    assert_eq!(announced, Announced { delivered: 1, failed: 0 });

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let Received { headers, body } = &received[0];
    assert_eq!(headers["content-type"], "application/json");
    // The receiver's side: HMAC-SHA256 over the raw body bytes, before parsing.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(headers[SIGNATURE_HEADER].to_str().unwrap(), expected);
    let mut wrong = <Hmac<Sha256> as Mac>::new_from_slice(b"another secret").unwrap();
    wrong.update(body);
    assert_ne!(
        headers[SIGNATURE_HEADER].to_str().unwrap(),
        format!("sha256={}", hex::encode(wrong.finalize().into_bytes()))
    );

    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    let mut keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["findings", "records", "report", "text", "warnings", "week"]);
    let n: Notification = serde_json::from_slice(body).unwrap();
    assert_eq!((n.week, n.records, n.warnings), (week(), 3, 0));
    assert!(n.report.starts_with("https://tally.example.com/reports/2026-W47/?exp="), "{}", n.report);
    assert!(n.text.contains("2026-W47") && n.text.contains(&n.report), "{}", n.text);

    // Without a secret there is no signature header.
    let unsigned = WebhookNotifier::new(&url(addr), None).unwrap();
    unsigned.deliver(&n).await.unwrap();
    assert!(receiver.received()[1].headers.get(SIGNATURE_HEADER).is_none());
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_three_attempts_and_no_duplicate_after_success() {
    let (receiver, addr) = Receiver::start(&[500, 503], false).await;
    let (sink, report) = summarized().await;
    let webhook = WebhookNotifier::new(&url(addr), Some("k")).unwrap();
    let announced = announce(&notifiers(webhook), &sink, &links(), &report, NOW, &FAST).await;
    assert_eq!(announced, Announced { delivered: 1, failed: 0 });
    let received = receiver.received();
    assert_eq!(received.len(), 3, "two failures, one success, nothing after it");
    // Every attempt carries the same bytes and signature.
    assert!(received.iter().all(|r| r.body == received[0].body && r.headers[SIGNATURE_HEADER] == received[0].headers[SIGNATURE_HEADER]));
}

#[tokio::test]
async fn too_many_requests_is_retried_a_client_error_or_a_redirect_is_not() {
    let (sink, report) = summarized().await;
    let (receiver, addr) = Receiver::start(&[429], false).await;
    let announced =
        announce(&notifiers(WebhookNotifier::new(&url(addr), None).unwrap()), &sink, &links(), &report, NOW, &FAST)
            .await;
    assert_eq!((announced.delivered, receiver.received().len()), (1, 2));

    for status in [400, 401, 404, 302] {
        let (receiver, addr) = Receiver::start(&[status, status], false).await;
        let webhook = WebhookNotifier::new(&url(addr), Some("k")).unwrap();
        let n = tally_core::summary::notify::notification(&sink, &links(), &report, NOW).await;
        let err = webhook.deliver(&n).await.unwrap_err();
        assert!(!err.is_retryable(), "{status}: {err}");
        assert!(err.to_string().contains(&status.to_string()), "{err}");
        assert!(!err.to_string().contains("SECRETTOKEN"), "the URL's path is not shown: {err}");
        let announced = announce(&notifiers(webhook), &sink, &links(), &report, NOW, &FAST).await;
        assert_eq!(announced, Announced { delivered: 0, failed: 1 });
        // One request from deliver, one from announce: never retried.
        assert_eq!(receiver.received().len(), 2, "{status}");
    }
}

#[tokio::test]
async fn an_unreachable_receiver_is_counted_as_failed_and_the_summary_stands() {
    // A port that was just free: nothing listens there.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let (sink, report) = summarized().await;
    let webhook = WebhookNotifier::new(&url(addr), Some("k")).unwrap();
    let n = tally_core::summary::notify::notification(&sink, &links(), &report, NOW).await;
    let err = webhook.deliver(&n).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("could not connect") && !err.to_string().contains("SECRETTOKEN"), "{err}");

    let announced = announce(&notifiers(webhook), &sink, &links(), &report, NOW, &FAST).await;
    assert_eq!(announced, Announced { delivered: 0, failed: 1 });
    assert!(is_summarized(&sink, week()).await.unwrap(), "the week's manifest is still there");
    assert_eq!(sink.list_weeks().await.unwrap(), vec![week()]);
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out_and_is_retried() {
    let (receiver, addr) = Receiver::start(&[], true).await;
    let (sink, report) = summarized().await;
    let webhook = WebhookNotifier::new(&url(addr), None).unwrap().with_attempt_timeout(Duration::from_millis(200));
    let policy = RetryPolicy { max_attempts: 3, ..FAST };
    let announced = announce(&notifiers(webhook), &sink, &links(), &report, NOW, &policy).await;
    assert_eq!(announced, Announced { delivered: 0, failed: 1 });
    assert_eq!(receiver.received().len(), 3, "each timed-out attempt was retried");
}
