//! `tally summarize` on N threads, and a week computed as `--part K/N`
//! state files and combined with `--merge`, end to end over the SQLite
//! store: every way gives the bytes of a one-thread run.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::tally;
use tally_core::{IsoWeek, Record, RecordId, RecordStore, Timestamp};
use tally_local::{SqliteOptions, SqliteRecordStore};

const OBJECTS: [&str; 3] = ["records.ndjson.gz", "summary.json", "summary.html"];

fn week() -> IsoWeek {
    IsoWeek::parse("2026-W40").unwrap()
}

/// A data directory whose store holds `n` varied records spread over the
/// week (Wednesday left empty), a few of them unparsable.
async fn data_dir(n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteRecordStore::open(dir.path().join("tally.db"), SqliteOptions::default()).unwrap();
    let store: Arc<dyn RecordStore> = Arc::new(store);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let span = 7 * 86_400_000u64;
    let mut times: Vec<i64> = (0..n)
        .map(|_| week().start().as_millis() + (next() % span) as i64)
        .filter(|t| (t - week().start().as_millis()) / 86_400_000 != 2)
        .collect();
    times.sort_unstable();
    let records: Vec<Record> = times
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let at = Timestamp::from_millis(t);
            let r = next();
            let data = match r % 5 {
                0 => format!(r#"{{"kind":"a","v":{},"user":"u{}"}}"#, r % 1000, r % 300),
                1 => format!(r#"{{"kind":"b","k{}":{},"s":"{}","nested":{{"x":[1,2],"y":null}}}}"#, r % 40, r % 7, r),
                2 => format!(r#"{{"kind":"c","f":{},"t":"é{}"}}"#, (r % 10_000) as f64 / 3.0, r % 5000),
                3 => format!(r#"{{"kind":"{}","ok":true}}"#, r % 50),
                _ if r % 97 == 0 => "{\"broken\": [".to_owned(),
                _ => r#"{"kind":"a","deep":{"a":{"b":{"c":{"d":{"e":1}}}}}}"#.to_owned(),
            };
            Record { id: RecordId::deterministic(at, b"parts", i), received_at: at, data }
        })
        .collect();
    for chunk in records.chunks(1000) {
        store.insert(chunk, None).await.unwrap();
    }
    dir
}

fn summarize(data: &Path, out: &Path, args: &[&str]) -> std::process::Output {
    tally()
        .arg("summarize")
        .args(["--week", &week().to_string(), "--segment-by", "kind"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run tally summarize")
}

fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn failed(out: std::process::Output) -> String {
    assert!(!out.status.success(), "expected a failure; stdout: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap()
}

fn objects(out: &Path) -> Vec<Vec<u8>> {
    let dir = out.join("summaries").join(week().to_string());
    OBJECTS.iter().map(|o| std::fs::read(dir.join(o)).unwrap()).collect()
}

fn manifest_objects(out: &Path) -> serde_json::Value {
    let path = out.join("summaries").join(week().to_string()).join("manifest.json");
    serde_json::from_slice::<serde_json::Value>(&std::fs::read(path).unwrap()).unwrap()["objects"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_thread_count_and_every_part_split_write_the_same_bytes() {
    let data = data_dir(20_000).await;
    let base = data.path().join("t1");
    ok(summarize(data.path(), &base, &["--threads", "1"]));
    let expected = objects(&base);

    for threads in ["2", "3", "7"] {
        let out = data.path().join(format!("t{threads}"));
        ok(summarize(data.path(), &out, &["--threads", threads]));
        for (i, o) in objects(&out).iter().enumerate() {
            assert!(*o == expected[i], "{} differs with --threads {threads}", OBJECTS[i]);
        }
        assert_eq!(manifest_objects(&out), manifest_objects(&base));
    }

    // WHEN the week is computed as 3 parts (on different thread counts) and merged in another order
    let states: Vec<PathBuf> = (1..=3).map(|k| data.path().join(format!("part{k}.state"))).collect();
    for (k, state) in states.iter().enumerate() {
        let part = format!("{}/3", k + 1);
        let threads = (k + 1).to_string();
        let printed = ok(summarize(
            data.path(),
            &data.path().join("unused"),
            &["--part", &part, "--state-out", state.to_str().unwrap(), "--threads", &threads],
        ));
        assert!(printed.contains(&format!("part {part}")), "{printed}");
    }
    assert!(
        !data.path().join("unused").join("summaries").join(week().to_string()).exists(),
        "--part writes no summary"
    );
    let merged = data.path().join("merged");
    let printed = ok(summarize(
        data.path(),
        &merged,
        &["--merge", states[2].to_str().unwrap(), states[0].to_str().unwrap(), states[1].to_str().unwrap()],
    ));
    assert!(printed.contains(&week().to_string()), "{printed}");
    // THEN the four objects are the plain run's
    for (i, o) in objects(&merged).iter().enumerate() {
        assert!(*o == expected[i], "{} differs after --merge", OBJECTS[i]);
    }
    assert_eq!(manifest_objects(&merged), manifest_objects(&base));

    // AND a merge missing a part, or given one twice, is refused before anything is written
    let refused = data.path().join("refused");
    let err = failed(summarize(
        data.path(),
        &refused,
        &["--merge", states[0].to_str().unwrap(), states[2].to_str().unwrap()],
    ));
    assert!(err.contains("9 parts of 2026-W40 are missing") && err.contains("part 9 (Wed 06:00–12:00 UTC)"), "{err}");
    assert!(err.contains("--part K/N --state-out FILE"), "{err}");
    let err = failed(summarize(
        data.path(),
        &refused,
        &[
            "--merge",
            states[0].to_str().unwrap(),
            states[1].to_str().unwrap(),
            states[2].to_str().unwrap(),
            states[1].to_str().unwrap(),
        ],
    ));
    assert!(err.contains("is in both") && err.contains("pass each part once"), "{err}");
    assert!(!refused.join("summaries").join(week().to_string()).exists());

    // AND states of another week or other options are refused, naming the file
    let err = failed(
        tally()
            .args(["summarize", "--week", "2026-W41", "--segment-by", "kind", "--merge"])
            .args(&states)
            .arg("--data-dir")
            .arg(data.path())
            .arg("--out")
            .arg(&refused)
            .output()
            .unwrap(),
    );
    assert!(err.contains("is of week 2026-W40, not 2026-W41") && err.contains("part1.state"), "{err}");
    let err = failed(
        tally()
            .args(["summarize", "--week", &week().to_string(), "--merge"])
            .args(&states)
            .arg("--data-dir")
            .arg(data.path())
            .output()
            .unwrap(),
    );
    assert!(err.contains("--segment-by None here, Some(\"kind\") in the state"), "{err}");
}

#[test]
fn bad_part_flags_fail_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let err = failed(summarize(dir.path(), &out, &["--part", "4/3", "--state-out", "x.state"]));
    assert!(err.contains("expected K/N with 1 <= K <= N <= 28"), "{err}");
    let err = failed(summarize(dir.path(), &out, &["--part", "1/2"]));
    assert!(err.contains("--state-out"), "{err}");
    let not_a_state = dir.path().join("x.state");
    std::fs::write(&not_a_state, "{\"records\": []}").unwrap();
    let err = failed(summarize(dir.path(), &out, &["--merge", not_a_state.to_str().unwrap()]));
    assert!(err.contains("not a tally part state") && err.contains("x.state"), "{err}");
}
