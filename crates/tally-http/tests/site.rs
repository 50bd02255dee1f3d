//! What people open in a browser, in-process with `oneshot`: the landing
//! page (`GET /`, HTML or JSON by `Accept`) and the report site
//! (`GET /reports/`, `GET /reports/{week}/`) behind signed, expiring links.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use tally_core::ports::SummarySink;
use tally_core::report_link::{LinkSigner, PublicUrl, ReportLinks};
use tally_core::testing::{FixedClock, HookedSink, MemoryLinkSecret, MemoryRecordStore, MemorySummarySink, SinkHook};
use tally_core::{IngestService, IsoWeek, Limits, Timestamp};
use tally_http::site::CONTENT_SECURITY_POLICY;
use tally_http::{AppState, Auth, HttpOptions, router};
use tower::ServiceExt;

const KEY: &str = "site-key-123";
const SECRET: &str = "0123456789abcdef0123456789abcdef-site";
const NOW: Timestamp = Timestamp::from_millis(1_796_000_000_000);

/// Counts the sink's reads, so a test can tell nothing was read.
#[derive(Debug, Default)]
struct CountReads {
    reads: AtomicUsize,
}

impl SinkHook for CountReads {
    fn before_read(&self) {
        self.reads.fetch_add(1, Ordering::SeqCst);
    }
}

type Counting = HookedSink<CountReads>;

struct Site {
    router: Router,
    sink: Arc<Counting>,
    links: ReportLinks,
    clock: Arc<FixedClock>,
}

fn week(s: &str) -> IsoWeek {
    IsoWeek::parse(s).unwrap()
}

async fn site(auth: Auth) -> Site {
    let sink = Arc::new(Counting::new(Arc::new(MemorySummarySink::default()), CountReads::default()));
    let clock = Arc::new(FixedClock::at(NOW));
    let ingest = IngestService::new(Arc::new(MemoryRecordStore::default()), clock.clone(), Limits::default());
    let signer = LinkSigner::new(Arc::new(MemoryLinkSecret::new(SECRET)));
    let state = AppState::new(ingest, sink.clone(), auth).with_report_links(signer.clone());
    let links = ReportLinks::new(signer, PublicUrl::parse("http://tally.test").unwrap(), 30);
    // Two summarized weeks and the index, as a weekly run leaves them.
    for (w, html) in [
        (
            "2026-W46",
            r#"<h1>Week 2026-W46</h1><a href="../index.html">All weeks</a><a href="../2026-W47/summary.html" rel="next">2026-W47</a>"#,
        ),
        (
            "2026-W47",
            r##"<h1>Week 2026-W47</h1><a href="../index.html">All weeks</a><a href="../2026-W46/summary.html" rel="prev">2026-W46</a><a href="#f-1">x</a>"##,
        ),
    ] {
        sink.put_object(week(w), "summary.html", "text/html", Bytes::from(html)).await.unwrap();
        sink.commit_week(week(w), Bytes::from_static(b"{}")).await.unwrap();
    }
    let index = r#"<h1>Weekly reports</h1><a href="2026-W47/summary.html">2026-W47</a><a href="2026-W46/summary.html">2026-W46</a>"#;
    sink.put_index("index.html", "text/html", Bytes::from(index)).await.unwrap();
    sink.hook().reads.store(0, Ordering::SeqCst);
    Site { router: router(state, HttpOptions::default()), sink, links, clock }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the headers every HTML answer of the site carries.
    fn assert_html_page(&self) {
        assert_eq!(self.header("content-type"), Some("text/html; charset=utf-8"), "{}", self.body);
        assert_eq!(self.header("content-security-policy"), Some(CONTENT_SECURITY_POLICY));
        assert_eq!(self.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(self.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(self.header("cache-control"), Some("no-store"));
    }
}

async fn send(site: &Site, req: Request<Body>) -> Reply {
    let res = site.router.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
    Reply { status: parts.status, headers: parts.headers, body }
}

fn browse(path: &str) -> Request<Body> {
    Request::get(path).header("accept", "text/html,application/xhtml+xml,*/*;q=0.8").body(Body::empty()).unwrap()
}

/// The path and query of a full link.
fn path_of(link: &str) -> &str {
    link.strip_prefix("http://tally.test").unwrap()
}

#[tokio::test]
async fn a_signed_week_link_opens_the_page_with_its_links_carrying_the_token() {
    let site = site(Auth::Open).await;
    let link = site.links.week(week("2026-W47"), NOW).await.unwrap();
    let query = link.split_once('?').unwrap().1.to_owned();
    let reply = send(&site, browse(path_of(&link))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.assert_html_page();
    assert!(reply.body.contains("<h1>Week 2026-W47</h1>"));
    assert!(reply.body.contains(&format!(r#"href="../?{query}""#)), "{}", reply.body);
    assert!(reply.body.contains(&format!(r#"href="../2026-W46/?{query}" rel="prev""#)), "{}", reply.body);
    assert!(reply.body.contains(r##"href="#f-1""##), "anchors stay");

    // The links it carries open the other pages.
    let prev = send(&site, browse(&format!("/reports/2026-W46/?{query}"))).await;
    assert_eq!(prev.status, 200);
    assert!(prev.body.contains(&format!(r#"href="../2026-W47/?{query}""#)), "{}", prev.body);
    let index = send(&site, browse(&format!("/reports/?{query}"))).await;
    assert_eq!(index.status, 200);
    index.assert_html_page();
    assert!(index.body.contains(&format!(r#"href="2026-W47/?{query}""#)), "{}", index.body);
}

#[tokio::test]
async fn a_changed_missing_or_expired_token_gets_the_403_page_and_nothing_is_read() {
    let site = site(Auth::Open).await;
    let link = site.links.week(week("2026-W47"), NOW).await.unwrap();
    let good = path_of(&link).to_owned();
    let (head, sig) = good.split_once("&sig=").unwrap();
    let flipped = format!("{head}&sig={}{}", if sig.starts_with('0') { '1' } else { '0' }, &sig[1..]);
    let exp = head.split_once("exp=").unwrap().1.parse::<i64>().unwrap();
    let longer = good.replace(&format!("exp={exp}"), &format!("exp={}", exp + 86_400));
    for (path, title) in [
        (flipped.as_str(), "This report link is not valid"),
        (longer.as_str(), "This report link is not valid"),
        ("/reports/2026-W47/", "This page needs a report link"),
        ("/reports/", "This page needs a report link"),
        ("/reports/2026-W47/?exp=1&exp=2&sig=00", "This report link is not valid"),
    ] {
        let reply = send(&site, browse(path)).await;
        assert_eq!(reply.status, 403, "{path}: {}", reply.body);
        reply.assert_html_page();
        assert!(reply.body.contains(title), "{path}: {}", reply.body);
        assert!(reply.body.contains("tally report-link"), "{path}: says how to get a fresh link");
    }
    assert!(send(&site, browse(&flipped)).await.body.contains("tally report-link --week 2026-W47"));
    assert_eq!(site.sink.hook().reads.load(Ordering::SeqCst), 0, "no bucket read without a valid link");

    // Thirty days later the genuine link has expired.
    site.clock.set(Timestamp::from_millis(NOW.as_millis() + 30 * 86_400_000));
    let expired = send(&site, browse(&good)).await;
    assert_eq!(expired.status, 403);
    assert!(expired.body.contains("This report link has expired"), "{}", expired.body);
    assert_eq!(site.sink.hook().reads.load(Ordering::SeqCst), 0);
    site.clock.set(Timestamp::from_millis(NOW.as_millis() + 30 * 86_400_000 - 1000));
    assert_eq!(send(&site, browse(&good)).await.status, 200, "valid until its last second");
}

#[tokio::test]
async fn the_api_key_opens_the_site_when_the_server_has_one_and_open_servers_still_need_a_link() {
    let keyed = site(Auth::key(KEY)).await;
    let req = Request::get("/reports/2026-W47/").header("x-api-key", KEY).body(Body::empty()).unwrap();
    let reply = send(&keyed, req).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.contains(r#"href="../2026-W46/" rel="prev""#), "routes without a token: {}", reply.body);
    let wrong = Request::get("/reports/").header("x-api-key", "nope").body(Body::empty()).unwrap();
    assert_eq!(send(&keyed, wrong).await.status, 403);
    // A server without a key (loopback, or behind API Gateway) never takes a header for a key.
    let open = site(Auth::Open).await;
    let req = Request::get("/reports/").header("x-api-key", "anything").body(Body::empty()).unwrap();
    assert_eq!(send(&open, req).await.status, 403);
}

#[tokio::test]
async fn a_week_without_a_complete_summary_is_a_404_page_and_a_bad_week_a_400_problem() {
    let site = site(Auth::Open).await;
    let link = site.links.site(NOW).await.unwrap();
    let query = link.split_once('?').unwrap().1;
    // Being rewritten: the manifest is gone, the old page is still there.
    site.sink.begin_week(week("2026-W46")).await.unwrap();
    for w in ["2026-W46", "2026-W45"] {
        let reply = send(&site, browse(&format!("/reports/{w}/?{query}"))).await;
        assert_eq!(reply.status, 404, "{}", reply.body);
        reply.assert_html_page();
        assert!(reply.body.contains(&format!("tally summarize --week {w}")), "{}", reply.body);
    }
    let bad = send(&site, browse(&format!("/reports/2026-W99/?{query}"))).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.header("content-type"), Some("application/problem+json"));
}

#[tokio::test]
async fn addresses_without_the_final_slash_redirect_keeping_the_token() {
    let site = site(Auth::Open).await;
    let reply = send(&site, browse("/reports/2026-W47?exp=1&sig=2")).await;
    assert_eq!(reply.status, 308);
    assert_eq!(reply.header("location"), Some("2026-W47/?exp=1&sig=2"));
    let reply = send(&site, browse("/reports")).await;
    assert_eq!((reply.status.as_u16(), reply.header("location")), (308, Some("reports/")));
}

#[tokio::test]
async fn the_landing_page_is_html_for_browsers_and_json_for_api_clients() {
    let site = site(Auth::key(KEY)).await;
    let page = send(&site, browse("/")).await;
    assert_eq!(page.status, 200);
    page.assert_html_page();
    for text in [
        "tally",
        "Health: <span class=\"ok\">ok</span>",
        tally_core::VERSION,
        r#"href="openapi.json""#,
        "tally report-link",
    ] {
        assert!(page.body.contains(text), "{text}: {}", page.body);
    }
    for accept in [None, Some("application/json"), Some("*/*")] {
        let mut req = Request::get("/");
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let reply = send(&site, req.body(Body::empty()).unwrap()).await;
        assert_eq!(reply.status, 200, "{accept:?}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(v["service"], "tally");
        assert_eq!(v["version"], tally_core::VERSION);
        assert_eq!((v["health"].as_str(), v["openapi"].as_str()), (Some("health"), Some("openapi.json")));
    }
    assert_eq!(tally_http::site::landing_html(), page.body, "API Gateway's copy is the same page");
}
