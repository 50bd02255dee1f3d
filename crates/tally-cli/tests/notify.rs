//! Report notifications end to end: the real `tally` binary posting to a
//! real HTTP receiver on 127.0.0.1 after `tally summarize` and after the
//! start-up catch-up of `tally serve`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use common::{Server, tally};
use tally_core::summary::Notification;
use tally_core::{IsoWeek, Record, RecordId, RecordStore, Timestamp};
use tally_local::{SqliteOptions, SqliteRecordStore};

type Posts = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

/// A receiver answering `status` to every POST, recording each one.
async fn receiver(status: u16) -> (Posts, SocketAddr) {
    let posts: Posts = Arc::default();
    let seen = posts.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push((headers, body.to_vec()));
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (posts, addr)
}

/// Stores `n` records in the middle of each of `weeks`.
async fn seed(data_dir: &Path, weeks: &[IsoWeek], n: usize) {
    let store = SqliteRecordStore::open(data_dir.join("tally.db"), SqliteOptions::default()).unwrap();
    let store: Arc<dyn RecordStore> = Arc::new(store);
    for week in weeks {
        let at = Timestamp::from_millis(week.start().as_millis() + 2 * 86_400_000);
        let records: Vec<Record> = (0..n)
            .map(|i| Record { id: RecordId::generate(at), received_at: at, data: format!(r#"{{"i":{i}}}"#) })
            .collect();
        store.insert(&records, None).await.unwrap();
    }
}

fn notifications(posts: &Posts) -> Vec<Notification> {
    posts.lock().unwrap().iter().map(|(_, body)| serde_json::from_slice(body).unwrap()).collect()
}

// Multi-threaded: the receiver keeps answering while the test blocks on `tally`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tally_summarize_posts_once_per_summarized_week() {
    let dir = tempfile::tempdir().unwrap();
    let last = IsoWeek::last_complete(Timestamp::now());
    let (first, second) = (last.previous().previous(), last.previous());
    seed(dir.path(), &[first, second], 4).await;
    let (posts, addr) = receiver(200).await;

    let out = tally()
        .args(["summarize", "--from", &first.to_string(), "--to", &second.to_string(), "--data-dir"])
        .arg(dir.path())
        .args(["--notify-url", &format!("http://{addr}/hook"), "--public-url", "https://reports.example.com/tally/"])
        .env("TALLY_NOTIFY_SECRET", "s3cr3t-for-tests")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("s3cr3t-for-tests"), "the secret is never logged");

    let sent = notifications(&posts);
    assert_eq!(sent.iter().map(|n| n.week).collect::<Vec<_>>(), vec![first, second], "one POST per week, in order");
    for (n, (headers, body)) in sent.iter().zip(posts.lock().unwrap().iter()) {
        assert_eq!(n.records, 4);
        // The report is a signed link to the week's page on the report site, valid 30 days.
        let prefix = format!("https://reports.example.com/tally/reports/{}/?exp=", n.week);
        let exp: i64 = n.report.strip_prefix(&prefix).and_then(|q| q.split('&').next()?.parse().ok()).unwrap();
        let days = (exp * 1000 - Timestamp::now().as_millis()) as f64 / 86_400_000.0;
        assert!((29.9..=30.0).contains(&days), "{}", n.report);
        assert!(n.text.contains(&n.week.to_string()) && n.text.contains(&n.report), "{}", n.text);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-tally-signature"].to_str().unwrap(), tally_notify::signature(b"s3cr3t-for-tests", body));
    }

    // Without --notify-url nothing is sent.
    let out = tally().args(["summarize", "--week", &first.to_string(), "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success());
    assert_eq!(posts.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_notification_is_logged_and_the_summary_stands() {
    let dir = tempfile::tempdir().unwrap();
    let week = IsoWeek::last_complete(Timestamp::now());
    seed(dir.path(), &[week], 2).await;
    let (posts, addr) = receiver(403).await;

    let out = tally()
        .args(["summarize", "--week", &week.to_string(), "--data-dir"])
        .arg(dir.path())
        .args(["--notify-url", &format!("http://{addr}/hook")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a failed delivery does not fail the run: {stderr}");
    assert_eq!(posts.lock().unwrap().len(), 1, "a 4xx is not retried");
    assert!(stderr.contains("was not delivered") && stderr.contains("403"), "{stderr}");
    assert!(dir.path().join(format!("bucket/summaries/{week}/manifest.json")).is_file());
}

#[tokio::test]
async fn serve_announces_each_week_its_catch_up_writes() {
    let dir = tempfile::tempdir().unwrap();
    let past = IsoWeek::containing(Timestamp::now()).previous().previous();
    seed(dir.path(), &[past], 3).await;
    let (posts, addr) = receiver(200).await;

    let url = format!("http://{addr}/hook");
    let mut server = Server::start_with_schedule_and(dir.path(), &["--notify-url", &url]);
    server
        .wait_until("a notification after the catch-up", Duration::from_secs(30), || !posts.lock().unwrap().is_empty())
        .await;
    let sent = notifications(&posts);
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].week, sent[0].records), (past, 3));
    // The link is the server's own address; it opens the week's page, and a changed one does not.
    assert!(sent[0].report.starts_with(&format!("{}/reports/{past}/?exp=", server.base)), "{}", sent[0].report);
    let page = reqwest::get(&sent[0].report).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains(&format!("Week {past}")));
    let mut tampered = sent[0].report.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    assert_eq!(reqwest::get(&tampered).await.unwrap().status(), 403);
    assert!(server.terminate().success());
    assert_eq!(posts.lock().unwrap().len(), 1, "no duplicate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tally_report_link_prints_links_the_server_opens_until_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let week = IsoWeek::last_complete(Timestamp::now());
    seed(dir.path(), &[week], 2).await;
    let out = tally().args(["summarize", "--week", &week.to_string(), "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut server = Server::start(dir.path(), &[]);

    let link = |args: &[&str]| {
        let out = tally()
            .arg("report-link")
            .args(args)
            .args(["--public-url", &server.base, "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("valid until"));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let week_link = link(&["--week", &week.to_string()]);
    assert!(week_link.starts_with(&format!("{}/reports/{week}/?exp=", server.base)), "{week_link}");
    let page = reqwest::get(&week_link).await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let index_link = link(&[]);
    assert!(index_link.starts_with(&format!("{}/reports/?exp=", server.base)), "{index_link}");
    let index = reqwest::get(&index_link).await.unwrap().text().await.unwrap();
    assert!(index.contains(&format!("href=\"{week}/?exp=")), "the index links to the week with the token: {index}");

    // The secret is the data directory's, readable by its owner only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("report-link.secret")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Without the link, or once the secret is replaced (rotated), the page is refused.
    let bare = reqwest::get(format!("{}/reports/{week}/", server.base)).await.unwrap();
    assert_eq!(bare.status(), 403);
    assert!(bare.text().await.unwrap().contains(&format!("tally report-link --week {week}")));
    assert!(server.terminate().success());
    std::fs::remove_file(dir.path().join("report-link.secret")).unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let old = week_link.replace(&week_link[..week_link.find("/reports/").unwrap()], &server.base);
    assert_eq!(reqwest::get(&old).await.unwrap().status(), 403, "a rotated secret revokes old links");
    assert!(server.terminate().success());
}
