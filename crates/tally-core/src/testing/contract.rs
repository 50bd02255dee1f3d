//! The contracts of the ports with more than one adapter, besides the
//! record store's: one function per port, called by a test in each adapter's
//! crate with that adapter (memory here, the folder sink and the local
//! refresh queue in `tally-local`, S3 and SNS on moto in `tally-aws`, the
//! webhook in `tally-notify`). Each checks what callers rely on, so an
//! adapter that passes can stand in for any other.

use std::time::Duration;

use bytes::Bytes;
use sha2::Digest;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::ports::{LinkSecretStore, Notifier, SinkError, SummarySink, WeekRefresh};
use crate::report_link::LinkSecret;
use crate::summary::{Finding, FindingKind, Notification, Severity};
use crate::week::IsoWeek;

fn week(s: &str) -> IsoWeek {
    IsoWeek::parse(s).expect("week")
}

fn sha256(body: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(body))
}

/// Names every sink refuses: empty, not one path component, hidden (the
/// folder sink's temp files start with a dot), or with other characters.
pub const BAD_OBJECT_NAMES: [&str; 12] =
    ["", ".", "..", "../x", "a/b", "/abs", "a\\b", ".hidden", ".x.tmp", "x y", "a\nb", "é.json"];

/// The behaviour every [`SummarySink`] must show. Call it with an empty
/// sink whose keys start at `summaries/` (no prefix).
pub async fn sink_contract(sink: &dyn SummarySink) {
    let w = week("2026-W47");

    // GIVEN an empty sink: no week is listed, and a missing object reads as None, not an error
    assert_eq!(sink.list_weeks().await.expect("list an empty sink"), Vec::<IsoWeek>::new());
    assert_eq!(sink.read_object(w, "summary.json").await.expect("read from an empty sink"), None);

    // WHEN an object is put (bytes that are not UTF-8)
    let body = Bytes::from((0..=255u8).cycle().take(3000).collect::<Vec<u8>>());
    let info = sink.put_object(w, "summary.json", "application/json", body.clone()).await.expect("put");
    // THEN its info names it and its bytes, and it reads back identical
    assert_eq!(info.key, "summaries/2026-W47/summary.json");
    assert_eq!((info.bytes, info.sha256.as_str()), (3000, sha256(&body).as_str()));
    assert_eq!(sink.read_object(w, "summary.json").await.expect("read").as_ref(), Some(&body));
    // AND an empty object is an object
    sink.put_object(w, "empty.json", "application/json", Bytes::new()).await.expect("put empty");
    assert_eq!(sink.read_object(w, "empty.json").await.expect("read empty"), Some(Bytes::new()));
    // AND a put replaces the whole object
    let short = Bytes::from_static(b"{\"v\":2}");
    sink.put_object(w, "summary.json", "application/json", short.clone()).await.expect("put again");
    assert_eq!(sink.read_object(w, "summary.json").await.expect("read replaced").as_ref(), Some(&short));
    // AND an object missing from a week that has others, or from an unknown week, reads as None
    assert_eq!(sink.read_object(w, "summary.html").await.expect("read missing"), None);
    assert_eq!(sink.read_object(w.previous(), "summary.json").await.expect("read unknown week"), None);

    // WHEN manifests are committed to weeks in no particular order (across a year with 53 weeks)
    let committed = [week("2026-W10"), week("2025-W52"), week("2026-W53"), week("2026-W09"), week("2027-W01")];
    for (i, c) in committed.iter().enumerate() {
        let manifest = Bytes::from(format!("{{\"manifest\":{i}}}"));
        let info = sink.commit_week(*c, manifest.clone()).await.expect("commit");
        assert_eq!(info.key, format!("summaries/{c}/manifest.json"));
        assert_eq!((info.bytes, info.sha256.clone()), (manifest.len() as u64, sha256(&manifest)));
        assert_eq!(sink.read_object(*c, "manifest.json").await.expect("read manifest"), Some(manifest));
    }
    // THEN exactly the committed weeks are listed, ascending; a week with objects only is not
    let mut expected = committed.to_vec();
    expected.sort();
    assert_eq!(sink.list_weeks().await.expect("list"), expected);

    // WHEN the week with objects is committed, then begun again
    sink.commit_week(w, Bytes::from_static(b"{}")).await.expect("commit");
    assert!(sink.list_weeks().await.expect("list").contains(&w));
    sink.begin_week(w).await.expect("begin a committed week");
    // THEN only its manifest is gone: it is not listed, its other objects stay
    assert!(!sink.list_weeks().await.expect("list").contains(&w), "begin_week must withdraw the manifest");
    assert_eq!(sink.read_object(w, "manifest.json").await.expect("read manifest"), None);
    assert_eq!(sink.read_object(w, "summary.json").await.expect("read").as_ref(), Some(&short));
    // AND beginning a week that has no manifest is fine
    sink.begin_week(w).await.expect("begin again");
    sink.begin_week(week("2020-W01")).await.expect("begin an unknown week");

    // WHEN a streamed upload replaces an object
    let old = Bytes::from_static(b"old export");
    sink.put_object(w, "records.ndjson.gz", "application/gzip", old.clone()).await.expect("put old");
    let chunks: Vec<Bytes> = (0..20u8).map(|i| Bytes::from(vec![i; 10_000 + usize::from(i)])).collect();
    let whole: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let mut upload = sink.open_object(w, "records.ndjson.gz", "application/gzip").await.expect("open");
    for chunk in &chunks {
        upload.write(chunk.clone()).await.expect("write");
    }
    // THEN nothing of it is visible before finish: the old object stands
    assert_eq!(sink.read_object(w, "records.ndjson.gz").await.expect("read mid-upload"), Some(old));
    let info = upload.finish().await.expect("finish");
    // AND after finish it is whole
    assert_eq!(info.key, "summaries/2026-W47/records.ndjson.gz");
    assert_eq!((info.bytes, info.sha256.as_str()), (whole.len() as u64, sha256(&whole).as_str()));
    assert_eq!(sink.read_object(w, "records.ndjson.gz").await.expect("read").as_deref(), Some(&whole[..]));
    // AND an upload of a new name is invisible until finished; with no chunk it is an empty object
    let mut upload = sink.open_object(w, "fresh.gz", "application/gzip").await.expect("open");
    upload.write(Bytes::from_static(b"abc")).await.expect("write");
    assert_eq!(sink.read_object(w, "fresh.gz").await.expect("read mid-upload"), None);
    upload.finish().await.expect("finish");
    let empty = sink.open_object(w, "nothing.gz", "application/gzip").await.expect("open");
    assert_eq!(empty.finish().await.expect("finish empty").bytes, 0);
    assert_eq!(sink.read_object(w, "nothing.gz").await.expect("read"), Some(Bytes::new()));

    // WHEN uploads are aborted or dropped unfinished
    for name in ["aborted.gz", "records.ndjson.gz"] {
        let mut upload = sink.open_object(w, name, "application/gzip").await.expect("open");
        upload.write(Bytes::from(vec![7u8; 50_000])).await.expect("write");
        upload.abort().await.expect("abort");
    }
    let mut dropped = sink.open_object(w, "dropped.gz", "application/gzip").await.expect("open");
    dropped.write(Bytes::from(vec![7u8; 50_000])).await.expect("write");
    drop(dropped);
    // THEN they leave nothing, and the object an aborted upload would have replaced stands
    assert_eq!(sink.read_object(w, "aborted.gz").await.expect("read aborted"), None);
    assert_eq!(sink.read_object(w, "dropped.gz").await.expect("read dropped"), None);
    assert_eq!(sink.read_object(w, "records.ndjson.gz").await.expect("read").as_deref(), Some(&whole[..]));

    // WHEN objects are deleted
    sink.delete_object(w, "empty.json").await.expect("delete");
    // THEN they are gone; deleting a missing object, even of an unknown week, is fine
    assert_eq!(sink.read_object(w, "empty.json").await.expect("read deleted"), None);
    sink.delete_object(w, "empty.json").await.expect("delete again");
    sink.delete_object(week("2020-W01"), "never.json").await.expect("delete in an unknown week");

    // AND the index sits beside the weeks and is not one
    let index = Bytes::from_static(b"<!doctype html><p>index</p>");
    let info = sink.put_index("index.html", "text/html; charset=utf-8", index.clone()).await.expect("put index");
    assert_eq!(info.key, "summaries/index.html");
    assert_eq!((info.bytes, info.sha256.as_str()), (index.len() as u64, sha256(&index).as_str()));
    assert_eq!(sink.list_weeks().await.expect("list"), expected);
    // AND it reads back; a missing one reads as None
    assert_eq!(sink.read_index("index.html").await.expect("read index").as_ref(), Some(&index));
    assert_eq!(sink.read_index("other.html").await.expect("read a missing index"), None);
    // AND it is not an object of any week
    assert_eq!(sink.read_object(w, "index.html").await.expect("read"), None);

    // AND names that are not one plain path component are refused as a bug, touching nothing
    let refused = |what: &str, name: &str, result: Result<(), SinkError>| match result {
        Err(SinkError::Internal { .. }) => {}
        other => panic!("{what} of {name:?}: {other:?}, expected an Internal error"),
    };
    for bad in BAD_OBJECT_NAMES {
        let body = Bytes::from_static(b"bad");
        refused("put_object", bad, sink.put_object(w, bad, "text/plain", body.clone()).await.map(drop));
        refused("put_index", bad, sink.put_index(bad, "text/plain", body).await.map(drop));
        refused("open_object", bad, sink.open_object(w, bad, "text/plain").await.map(drop));
        refused("read_object", bad, sink.read_object(w, bad).await.map(drop));
        refused("delete_object", bad, sink.delete_object(w, bad).await);
        refused("read_index", bad, sink.read_index(bad).await.map(drop));
    }
    assert_eq!(sink.list_weeks().await.expect("list"), expected);
    assert_eq!(sink.read_object(w, "summary.json").await.expect("read").as_ref(), Some(&short));
}

/// The behaviour every [`WeekRefresh`] must show. Call it with one that has
/// no request yet.
pub async fn refresh_contract(refresh: &dyn WeekRefresh) {
    let (w, earlier) = (week("2026-W47"), week("2025-W52"));
    // GIVEN no request: nothing is pending, and a done of a week never asked for is fine
    assert_eq!(refresh.pending().await.expect("pending"), Vec::<IsoWeek>::new());
    refresh.done(w).await.expect("done of a week never asked for");

    // WHEN a week is asked for
    refresh.request(w).await.expect("request");
    // THEN it is pending
    assert_eq!(refresh.pending().await.expect("pending"), vec![w]);
    // AND asking again is still one request
    refresh.request(w).await.expect("request again");
    assert_eq!(refresh.pending().await.expect("pending"), vec![w]);
    // AND pending weeks are listed ascending, whatever the order of the requests
    refresh.request(earlier).await.expect("request an earlier week");
    assert_eq!(refresh.pending().await.expect("pending"), vec![earlier, w]);

    // WHEN a week is done
    refresh.done(w).await.expect("done");
    // THEN only that week's request is withdrawn, and done again is fine
    assert_eq!(refresh.pending().await.expect("pending"), vec![earlier]);
    refresh.done(w).await.expect("done again");
    // AND a later request of a done week is pending again
    refresh.request(w).await.expect("request after done");
    assert_eq!(refresh.pending().await.expect("pending"), vec![earlier, w]);
    refresh.done(earlier).await.expect("done");
    refresh.done(w).await.expect("done");
    assert_eq!(refresh.pending().await.expect("pending"), Vec::<IsoWeek>::new());
}

/// A marker in the contract's notification texts that no error may quote.
const BODY_MARKER: &str = "body-marker-7f3a";

/// The behaviour every [`Notifier`] must show.
///
/// - `notifier` delivers to a working endpoint, which sends the `text` of
///   each notification it receives into `received`;
/// - `failing` delivers to an endpoint that fails (refuses, errors, is not
///   there).
pub async fn notifier_contract(
    notifier: &dyn Notifier,
    received: &mut UnboundedReceiver<String>,
    failing: &dyn Notifier,
) {
    assert!(!notifier.name().is_empty(), "a notifier has a name for logs");
    let report = "https://reports.example.com/2026-W47/summary.html?X-Amz-Signature=abc&b=1".to_owned();
    let first = Notification {
        week: week("2026-W47"),
        records: 1234,
        warnings: 0,
        findings: Vec::new(),
        report: report.clone(),
        text: format!("tally report for 2026-W47: 1,234 records (no earlier week to compare with).\nReport: {report}"),
    };
    let finding = Finding {
        kind: FindingKind::FieldRemoved,
        path: Some("user.email".into()),
        severity: Severity::Warn,
        previous: 1.0.into(),
        current: 0.0.into(),
        message: "user.email was in every record last week and in none this week.".into(),
        segments: Vec::new(),
        folded: false,
    };
    let second = Notification {
        week: week("2026-W48"),
        records: 0,
        warnings: 1,
        findings: vec![finding],
        report: report.clone(),
        text: format!(
            "tally report for 2026-W48: 0 records (-100% vs 2026-W47: 1,234). 1 warning:\n\
             - field_removed user.email: \"quoted\" <b>&amp;</b> tab\there, Ünïcödé, 😀 {BODY_MARKER}\nReport: {report}"
        ),
    };

    // WHEN each notification is delivered once
    for n in [&first, &second] {
        notifier.deliver(n).await.unwrap_or_else(|e| panic!("deliver {}: {}", n.week, crate::error_chain(&e)));
        // THEN the endpoint received exactly its text
        let got = tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .unwrap_or_else(|_| panic!("the endpoint received nothing for {} within 10 s", n.week))
            .expect("the endpoint stopped");
        assert_eq!(got, n.text);
    }
    // AND one delivery is one message
    assert!(received.try_recv().is_err(), "a delivery reached the endpoint more than once");

    // WHEN the endpoint fails THEN delivering is an error, which does not quote the notification
    let err = failing.deliver(&second).await.expect_err("delivering to a failing endpoint must be an error");
    let chain = crate::error_chain(&err);
    assert!(!chain.contains(BODY_MARKER), "the error quotes the notification: {chain}");
}

/// The behaviour every [`LinkSecretStore`] must show. `first` and `second`
/// are two adapters over the same backing store (two processes: the server
/// and a weekly run), which may or may not hold a secret yet.
pub async fn link_secret_contract(first: &dyn LinkSecretStore, second: &dyn LinkSecretStore) {
    // WHEN the secret is loaded
    let secret = first.load().await.expect("load the secret");
    // THEN loading again, here or from another process, gives the same bytes
    assert_eq!(first.load().await.expect("load again"), secret);
    assert_eq!(second.load().await.expect("load from another process"), secret);
    // AND it is a secret (LinkSecret's only constructor checks its length) that Debug does not show
    let _: &LinkSecret = &secret;
    assert_eq!(format!("{secret:?}"), "LinkSecret(<redacted>)");
}
