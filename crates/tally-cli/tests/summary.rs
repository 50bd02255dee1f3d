//! The weekly summary end to end: records posted over HTTP to the real
//! server, `tally summarize` run as a user would, and every output read back.

mod common;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{KEY, Server, client, tally};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tally_core::{IsoWeek, Record, RecordId, RecordStore, Timestamp};
use tally_local::{SqliteOptions, SqliteRecordStore};

fn summarize(data_dir: &Path, args: &[&str]) -> std::process::Output {
    tally().arg("summarize").args(args).arg("--data-dir").arg(data_dir).output().expect("run tally summarize")
}

fn week_dir(data_dir: &Path, week: &str) -> std::path::PathBuf {
    data_dir.join("bucket").join("summaries").join(week)
}

/// The ids of an export, in file order (records may hold `1e400`, which a
/// `Value` cannot: read only the id).
fn exported_ids(path: &Path) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Line {
        id: String,
    }
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut text).unwrap();
    text.lines().map(|l| serde_json::from_str::<Line>(l).unwrap().id).collect()
}

#[tokio::test]
async fn posted_records_are_summarized_into_four_verified_objects() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let http = client();
    let body = r#"[{"user":{"name":"ada","age":36},"ok":true,"tags":["a","b"]},
                   {"user":{"name":"bob","age":41},"ok":false,"note":null},
                   {"user":{"name":"ada","age":1e400},"ok":true}]"#;
    let r = server.post(&http, "/records", "application/json", body).await;
    assert_eq!(r.status(), 201);
    let ids: Vec<String> = serde_json::from_value(r.json::<Value>().await.unwrap()["ids"].clone()).unwrap();
    let week = IsoWeek::containing(Timestamp::now()).to_string();

    // Not produced yet.
    let r = http.get(server.url(&format!("/summaries/{week}"))).header("x-api-key", KEY).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // WHEN the user summarizes the current week (the server may keep running: WAL readers are fine)
    let out = summarize(dir.path(), &["--partial", "--week", &week]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&week));

    // THEN all four objects exist and the manifest's hashes match them
    let wd = week_dir(dir.path(), &week);
    let manifest: Value = serde_json::from_slice(&std::fs::read(wd.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["records"], 3);
    assert_eq!(manifest["tally_version"], env!("CARGO_PKG_VERSION"));
    let objects = manifest["objects"].as_array().unwrap();
    let names: Vec<&str> = objects.iter().map(|o| o["key"].as_str().unwrap()).collect();
    for name in ["records.ndjson.gz", "summary.html", "summary.json"] {
        assert!(names.contains(&format!("summaries/{week}/{name}").as_str()), "{names:?}");
    }
    for o in objects {
        let file = wd.join(o["key"].as_str().unwrap().rsplit('/').next().unwrap());
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(o["bytes"], bytes.len());
        assert_eq!(o["sha256"], hex::encode(Sha256::digest(&bytes)));
    }
    let summary: Value = serde_json::from_slice(&std::fs::read(wd.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["schema"], 4);
    assert_eq!(summary["comparison"], Value::Null, "the first week has nothing to compare with");
    assert_eq!(summary["week"], week);
    assert_eq!(summary["records"], 3);
    let html = std::fs::read_to_string(wd.join("summary.html")).unwrap();
    assert!(html.contains("<svg") && html.contains(&week) && !html.contains("http://") && !html.contains("https://"));
    let index = std::fs::read_to_string(wd.parent().unwrap().join("index.html")).unwrap();
    assert!(index.contains(&format!("href=\"{week}/summary.html\"")), "the index links the week");
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(exported_ids(&wd.join("records.ndjson.gz")), sorted);

    // AND the API serves it
    let r = http.get(server.url(&format!("/summaries/{week}"))).header("x-api-key", KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), summary);
    let r = http.get(server.url("/summaries")).header("x-api-key", KEY).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["weeks"][0]["week"], week);

    // AND a rerun writes byte-identical outputs
    let before: Vec<Vec<u8>> = ["summary.json", "summary.html", "records.ndjson.gz"]
        .iter()
        .map(|n| std::fs::read(wd.join(n)).unwrap())
        .collect();
    let out = summarize(dir.path(), &["--partial", "--week", &week]);
    assert!(out.status.success());
    let after: Vec<Vec<u8>> = ["summary.json", "summary.html", "records.ndjson.gz"]
        .iter()
        .map(|n| std::fs::read(wd.join(n)).unwrap())
        .collect();
    assert_eq!(before, after);
    assert!(server.terminate().success());
}

#[test]
fn a_backfill_writes_every_week_including_empty_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = summarize(dir.path(), &["--from", "2020-W50", "--to", "2021-W02"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for week in ["2020-W50", "2020-W51", "2020-W52", "2020-W53", "2021-W01", "2021-W02"] {
        let wd = week_dir(dir.path(), week);
        for name in ["summary.json", "summary.html", "records.ndjson.gz", "manifest.json"] {
            assert!(wd.join(name).is_file(), "{week}/{name} missing");
        }
        let m: Value = serde_json::from_slice(&std::fs::read(wd.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(m["records"], 0);
    }
}

#[test]
fn bad_weeks_fail_with_a_clear_message_and_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["--week", "2026-W54"][..], &["--from", "2026-W10", "--to", "2026-W01"], &["--week", "../x"]] {
        let out = summarize(dir.path(), args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error:") && (err.contains("YYYY-Www") || err.contains("swap")), "{err}");
    }
}

#[tokio::test]
async fn serve_catches_up_past_weeks_without_a_summary_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let past = IsoWeek::containing(Timestamp::now()).previous().previous();
    // GIVEN records stored in a past week (as if the server was down on Monday)
    {
        let store = SqliteRecordStore::open(dir.path().join("tally.db"), SqliteOptions::default()).unwrap();
        let at = Timestamp::from_millis(past.start().as_millis() + 3_600_000);
        let records: Vec<Record> = (0..5)
            .map(|i| Record { id: RecordId::generate(at), received_at: at, data: format!("{{\"i\":{i}}}") })
            .collect();
        let store: Arc<dyn RecordStore> = Arc::new(store);
        store.insert(&records, None).await.unwrap();
    }
    // WHEN the server starts with its schedule on
    let mut server = Server::start_with_schedule(dir.path());
    // THEN the missed week is summarized without anyone asking
    let manifest = week_dir(dir.path(), &past.to_string()).join("manifest.json");
    server
        .wait_until(&format!("the catch-up to summarize {past}"), Duration::from_secs(30), || manifest.is_file())
        .await;
    let m: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(m["records"], 5);
    assert!(server.terminate().success());
}

/// Issue 22, item 4: `tally summarize` refuses a week that has not ended,
/// saying when it ends; with `--partial` it writes the week so far, its
/// manifest marked partial.
#[test]
fn a_week_not_yet_over_is_refused_unless_partial_and_then_marked_partial() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let week = IsoWeek::containing(Timestamp::now()).to_string();
    let out = tally().args(["summarize", "--week", &week, "--data-dir"]).arg(&data).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("{week} has not ended")) && stderr.contains("--partial"), "{stderr}");
    let manifest = data.join("bucket").join("summaries").join(&week).join("manifest.json");
    assert!(!manifest.exists(), "a refused run writes nothing");

    let out = tally().args(["summarize", "--partial", "--week", &week, "--data-dir"]).arg(&data).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(manifest["partial"], true);
}
