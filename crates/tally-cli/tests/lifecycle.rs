//! The data lifecycle from the command line, as a user runs it: `tally
//! import`, `tally export`, `tally summarize`, `tally prune` on real files.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::tally;

const WEEK: &str = "2026-W40"; // 2026-09-28 .. 2026-10-05
const NEXT: &str = "2026-W41";

fn run(data_dir: &Path, args: &[&str]) -> Output {
    tally().args(args).arg("--data-dir").arg(data_dir).output().expect("run tally")
}

fn ok(data_dir: &Path, args: &[&str]) -> String {
    let out = run(data_dir, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "tally {args:?} failed: {stderr}");
    format!("{}{stderr}", String::from_utf8_lossy(&out.stdout))
}

fn week_file(data_dir: &Path, week: &str, name: &str) -> PathBuf {
    data_dir.join("bucket").join("summaries").join(week).join(name)
}

fn gunzip(path: &Path) -> String {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut text).unwrap();
    text
}

/// Varied plain records spread over the week, with their time in `meta.ts`
/// as RFC 3339, epoch seconds or epoch milliseconds.
fn plain_records(n: usize, seed: u64) -> String {
    let monday_s: u64 = 1_790_553_600; // 2026-09-28T00:00:00Z
    let mut out = String::new();
    for i in 0..n as u64 {
        let at = monday_s + (i * 7919 + seed * 104_729) % (7 * 86_400);
        let ts = match i % 3 {
            0 => format!("{at}"),
            1 => format!("{}", at * 1000 + i % 1000),
            _ => {
                let t = time::OffsetDateTime::from_unix_timestamp(at as i64).unwrap();
                format!("\"{}\"", t.format(&time::format_description::well_known::Rfc3339).unwrap())
            }
        };
        let line = match i % 4 {
            0 => format!(
                r#"{{"kind":"order","meta":{{"ts":{ts}}},"amount":{}.5,"items":[1,2,{i}],"big":1e400}}"#,
                i % 97
            ),
            1 => format!(
                r#"{{"kind":"view","meta":{{"ts":{ts},"page":"/p/{}"}},"user":"ü{}","ok":true}}"#,
                i % 13,
                i % 7
            ),
            2 => format!(
                r#"{{"kind":"error","meta":{{"ts":{ts}}},"code":{},"detail":null,"n":123456789012345678901234567890}}"#,
                400 + i % 5
            ),
            _ => format!(
                r#"{{"meta":{{"ts":{ts}}},"kind":"order","amount":{},"nested":{{"a":{{"b":[{{"c":"😀"}}]}}}}}}"#,
                i % 11
            ),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[test]
fn a_week_restored_from_its_export_summarizes_byte_for_byte_the_same() {
    let work = tempfile::tempdir().unwrap();
    let first = work.path().join("first");
    let plain = work.path().join("history.ndjson");
    std::fs::write(&plain, plain_records(3000, 1)).unwrap();

    // GIVEN history imported from plain records with their own times
    let out = ok(&first, &["import", plain.to_str().unwrap(), "--time-field", "meta.ts"]);
    assert!(out.contains("imported 3000, already present 0, lines 3000"), "{out}");
    // AND importing it again (or resuming an interrupted import) adds nothing
    let out = ok(&first, &["import", plain.to_str().unwrap(), "--time-field", "meta.ts"]);
    assert!(out.contains("imported 0, already present 3000"), "{out}");
    ok(&first, &["summarize", "--week", WEEK]);
    let summary = std::fs::read(week_file(&first, WEEK, "summary.json")).unwrap();
    let records = std::fs::read(week_file(&first, WEEK, "records.ndjson.gz")).unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&summary).unwrap();
    assert_eq!(stats["records"], 3000, "{stats}");

    // AND `tally export` writes the same lines as the weekly export
    let exported = work.path().join("w40.ndjson.gz");
    ok(&first, &["export", "--week", WEEK, "--out", exported.to_str().unwrap()]);
    assert_eq!(gunzip(&exported), gunzip(&week_file(&first, WEEK, "records.ndjson.gz")));

    // WHEN the store is wiped and the week's records.ndjson.gz is imported
    let backup = work.path().join("records.ndjson.gz");
    std::fs::write(&backup, &records).unwrap();
    let second = work.path().join("second");
    let out = ok(&second, &["import", backup.to_str().unwrap()]);
    assert!(out.contains("imported 3000, already present 0"), "{out}");
    ok(&second, &["summarize", "--week", WEEK]);

    // THEN the summary and the export are byte-identical to the first run's
    assert_eq!(std::fs::read(week_file(&second, WEEK, "summary.json")).unwrap(), summary);
    assert_eq!(std::fs::read(week_file(&second, WEEK, "records.ndjson.gz")).unwrap(), records);
}

/// Issue 24, item 4: `tally export` writes zstd when the file name ends in
/// `.zst`, and `tally import` reads it back (any number of frames).
#[test]
fn a_zst_export_holds_the_weeks_lines_and_imports_back() {
    let work = tempfile::tempdir().unwrap();
    let first = work.path().join("first");
    let plain = work.path().join("history.ndjson");
    std::fs::write(&plain, plain_records(500, 3)).unwrap();
    ok(&first, &["import", plain.to_str().unwrap(), "--time-field", "meta.ts"]);
    ok(&first, &["summarize", "--week", WEEK]);

    let zst = work.path().join("w40.ndjson.zst");
    ok(&first, &["export", "--week", WEEK, "--out", zst.to_str().unwrap()]);
    let lines = String::from_utf8(zstd::decode_all(std::fs::File::open(&zst).unwrap()).unwrap()).unwrap();
    assert_eq!(lines, gunzip(&week_file(&first, WEEK, "records.ndjson.gz")));

    // Two frames back to back (as `cat a.zst b.zst` makes) import as one file.
    let half = lines.len() / 2;
    let cut = lines[..half].rfind('\n').unwrap() + 1;
    let mut two = zstd::encode_all(&lines.as_bytes()[..cut], 3).unwrap();
    two.extend(zstd::encode_all(&lines.as_bytes()[cut..], 3).unwrap());
    let framed = work.path().join("two.ndjson.zst");
    std::fs::write(&framed, two).unwrap();
    let second = work.path().join("second");
    let out = ok(&second, &["import", framed.to_str().unwrap()]);
    assert!(out.contains("imported 500, already present 0"), "{out}");
    ok(&second, &["summarize", "--week", WEEK]);
    assert_eq!(
        std::fs::read(week_file(&second, WEEK, "summary.json")).unwrap(),
        std::fs::read(week_file(&first, WEEK, "summary.json")).unwrap()
    );
}

#[test]
fn a_bad_line_stops_the_import_and_a_rerun_resumes_without_duplicates() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let file = work.path().join("in.ndjson");
    let good = plain_records(5, 2);
    let mut lines: Vec<&str> = good.lines().collect();
    lines.insert(3, r#"{"meta":{"ts":"not a time"}}"#);
    std::fs::write(&file, lines.join("\n")).unwrap();

    let out = run(&data, &["import", file.to_str().unwrap(), "--time-field", "meta.ts"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("line 4") && stderr.contains("not an RFC 3339 time"), "{stderr}");
    assert!(stderr.contains("the 3 records before it are stored"), "{stderr}");

    // The dry run finds the same line and stores nothing.
    let dry = run(&data, &["import", file.to_str().unwrap(), "--time-field", "meta.ts", "--dry-run"]);
    assert!(!dry.status.success() && String::from_utf8_lossy(&dry.stderr).contains("line 4"));

    lines.remove(3);
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = ok(&data, &["import", file.to_str().unwrap(), "--time-field", "meta.ts"]);
    assert!(out.contains("imported 2, already present 3, lines 5"), "{out}");
}

#[test]
fn importing_into_a_summarized_week_summarizes_it_again() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let file = work.path().join("a.ndjson");
    std::fs::write(&file, plain_records(10, 3)).unwrap();
    ok(&data, &["import", file.to_str().unwrap(), "--time-field", "meta.ts"]);
    ok(&data, &["summarize", "--week", WEEK]);
    let more = work.path().join("b.ndjson");
    std::fs::write(&more, plain_records(4, 4)).unwrap();
    let out = ok(&data, &["import", more.to_str().unwrap(), "--time-field", "meta.ts"]);
    assert!(out.contains(&format!("summarizing again 1 week(s) that gained records: {WEEK}")), "{out}");
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(week_file(&data, WEEK, "summary.json")).unwrap()).unwrap();
    assert_eq!(stats["records"], 14);
}

#[test]
fn prune_deletes_only_summarized_weeks_past_the_retention() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let file = work.path().join("a.ndjson");
    // W40 from the generator, W41 a week later (same lines shifted by 7 days)
    let w40 = plain_records(20, 5);
    let w41: String =
        (0..6).map(|i| format!("{{\"meta\":{{\"ts\":{}}},\"i\":{i}}}\n", 1_791_158_400 + i * 3600)).collect();
    std::fs::write(&file, format!("{w40}{w41}")).unwrap();
    ok(&data, &["import", file.to_str().unwrap(), "--time-field", "meta.ts"]);
    ok(&data, &["summarize", "--week", WEEK]);

    let refused = run(&data, &["prune"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--retention-weeks N"));

    let out = ok(&data, &["prune", "--retention-weeks", "2"]);
    assert!(out.contains(&format!("{WEEK}          20 records deleted")), "{out}");
    assert!(out.contains(&format!("no summary: {NEXT}")), "{out}");
    // The summary stays; the records are gone; the other week is untouched.
    assert!(week_file(&data, WEEK, "manifest.json").exists());
    let exported = work.path().join("left.ndjson");
    ok(
        &data,
        &[
            "export",
            "--from",
            "2026-09-28T00:00:00Z",
            "--to",
            "2026-10-12T00:00:00Z",
            "--out",
            exported.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read_to_string(&exported).unwrap().lines().count(), 6);
    let out = ok(&data, &["prune", "--retention-weeks", "2"]);
    assert!(out.contains("nothing to prune"), "{out}");

    // Summarizing the pruned week again is refused (issue 21, item 9): it
    // would replace its summary with an empty one. The summary stays as it was.
    let manifest = std::fs::read(week_file(&data, WEEK, "manifest.json")).unwrap();
    let refused = run(&data, &["summarize", "--week", WEEK]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("{WEEK} was pruned")) && stderr.contains("tally import"), "{stderr}");
    assert_eq!(std::fs::read(week_file(&data, WEEK, "manifest.json")).unwrap(), manifest);
    let state = work.path().join("part.state");
    let refused = run(&data, &["summarize", "--week", WEEK, "--part", "1/2", "--state-out", state.to_str().unwrap()]);
    assert!(!refused.status.success() && !state.exists(), "{}", String::from_utf8_lossy(&refused.stderr));
}

#[tokio::test]
async fn an_erased_record_leaves_its_summarized_week_within_a_minute() {
    use common::{KEY, Server, client};
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let admin = work.path().join("admin.key");
    std::fs::write(&admin, "admin-key-e2e-987\n").unwrap();
    let server = Server::start(&data, &["--admin-key-file", admin.to_str().unwrap()]);
    let http = client();
    let r = server.post(&http, "/records", "application/json", r#"[{"n":1},{"n":2},{"n":3}]"#).await;
    assert_eq!(r.status(), 201);
    let ids: Vec<String> = serde_json::from_value(r.json::<serde_json::Value>().await.unwrap()["ids"].clone()).unwrap();
    let week = tally_core::IsoWeek::containing(tally_core::Timestamp::now()).to_string();
    ok(&data, &["summarize", "--partial", "--week", &week]);
    let export = week_file(&data, &week, "records.ndjson.gz");
    assert!(gunzip(&export).contains(&ids[1]));

    // The ingest key cannot erase; the admin key can.
    let url = server.url(&format!("/records/{}", ids[1]));
    let denied = http.delete(&url).header("x-api-key", KEY).send().await.unwrap();
    assert_eq!(denied.status(), 403);
    let erased = http.delete(&url).header("x-api-key", "admin-key-e2e-987").send().await.unwrap();
    assert_eq!(erased.status(), 200);
    let body: serde_json::Value = erased.json().await.unwrap();
    assert_eq!(body["summary"], "regenerating", "{body}");

    // Wait for the refresher's run (its log line), at most a minute, then read the week again.
    server.wait_for_log("week summarized", std::time::Duration::from_secs(60)).await;
    let text = gunzip(&export);
    assert!(!text.contains(&ids[1]), "the export still holds the erased record");
    assert!(text.contains(&ids[0]) && text.contains(&ids[2]));
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(week_file(&data, &week, "summary.json")).unwrap()).unwrap();
    assert_eq!(stats["records"], 2);
}

#[tokio::test]
async fn an_erasure_whose_rewrite_a_crash_interrupted_is_rewritten_by_the_next_serve() {
    use common::{Server, client};
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let admin = work.path().join("admin.key");
    std::fs::write(&admin, "admin-key-e2e-987\n").unwrap();
    let flags = ["--admin-key-file", admin.to_str().unwrap()];
    let server = Server::start(&data, &flags);
    let http = client();
    let r = server.post(&http, "/records", "application/json", r#"[{"n":1},{"n":2},{"n":3}]"#).await;
    assert_eq!(r.status(), 201);
    let ids: Vec<String> = serde_json::from_value(r.json::<serde_json::Value>().await.unwrap()["ids"].clone()).unwrap();
    let week = tally_core::IsoWeek::containing(tally_core::Timestamp::now()).to_string();
    ok(&data, &["summarize", "--partial", "--week", &week]);
    let export = week_file(&data, &week, "records.ndjson.gz");

    // GIVEN an erasure answered, and the server killed at once: the
    // refresher gathers requests for 5 s first, so the rewrite never ran
    let url = server.url(&format!("/records/{}", ids[1]));
    let erased = http.delete(&url).header("x-api-key", "admin-key-e2e-987").send().await.unwrap();
    assert_eq!(erased.status(), 200);
    server.kill9();
    assert!(gunzip(&export).contains(&ids[1]), "the kill came after the rewrite; nothing left to test");

    // WHEN tally serve starts again on the data directory
    let server = Server::start(&data, &flags);
    // THEN it finds the request in the SQLite file and rewrites the week
    server.wait_for_log("week summarized", std::time::Duration::from_secs(60)).await;
    assert!(server.log_text().contains("still pending; queued"), "{}", server.log_text());
    let text = gunzip(&export);
    assert!(!text.contains(&ids[1]), "the export still holds the erased record");
    assert!(text.contains(&ids[0]) && text.contains(&ids[2]));
}
