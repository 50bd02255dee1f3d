//! The weekly report end to end, as a user gets it: three generated weeks
//! imported with `tally import --time-field`, summarized by
//! `tally summarize --from … --to … --segment-by kind`, then read back
//! from the bucket folder and over the API.
//!
//! Week 1 and week 2 come from one distribution (different seeds): week 2
//! must warn of nothing. Week 3 injects every finding kind, each on its own
//! field; each must be found on its path. With three `kind` values, each of
//! week 3's eight changes (seven warnings, one note) is listed once on its
//! page, naming the segments where it happened too, while `summary.json`
//! keeps every segment's finding (issue 23: 0.3 listed 25 warnings and 4
//! notes here).

mod common;

use std::fmt::Write as _;
use std::path::Path;

use common::{KEY, Server, client, tally};
use serde_json::Value;
use tally_core::IsoWeek;

/// splitmix64: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// `n` NDJSON lines of `week`, each with an RFC 3339 `ts`. `broken` shifts
/// every field a finding watches, and leaves Wednesday without records.
fn week_lines(out: &mut String, week: IsoWeek, n: usize, seed: u64, broken: bool) {
    let mut rng = Rng(seed);
    let start = week.start().as_millis();
    for _ in 0..n {
        let mut day = rng.below(7);
        if broken && day == 2 {
            day = 3;
        }
        let ms = start + (day * 86_400_000 + rng.below(86_400_000)) as i64;
        let ts = tally_core::Timestamp::from_millis(ms).to_rfc3339();
        let kind = match rng.below(100) {
            0..60 => "order",
            60..85 => "refund",
            _ => "audit",
        };
        let country = ["de", "de", "fr", "us", "jp", "br"][rng.below(6) as usize];
        let country = if broken && rng.chance(70) { "jp" } else { country };
        let amount = (10 + rng.below(50) + rng.below(50)) * if broken { 4 } else { 1 };
        let email = if rng.chance(if broken { 50 } else { 5 }) {
            "null".to_owned()
        } else {
            format!("\"u{}@example.com\"", rng.below(500))
        };
        let zip = rng.below(90_000) + 10_000;
        let zip = if broken { format!("\"{zip}\"") } else { zip.to_string() };
        let _ = write!(
            out,
            r#"{{"ts":"{ts}","kind":"{kind}","country":"{country}","amount":{amount},"email":{email},"zip":{zip}"#
        );
        if !broken && rng.chance(30) {
            out.push_str(r#","legacy":{"v":1}"#);
        }
        if broken && rng.chance(20) {
            out.push_str(r#","coupon":"SPRING""#);
        }
        out.push_str("}\n");
    }
}

fn run(args: &[&str], data_dir: &Path) -> String {
    let out = tally().args(args).arg("--data-dir").arg(data_dir).output().expect("run tally");
    assert!(out.status.success(), "tally {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn summary(data_dir: &Path, week: IsoWeek) -> Value {
    let path = data_dir.join("bucket/summaries").join(week.to_string()).join("summary.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn three_imported_weeks_report_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let w1 = IsoWeek::parse("2026-W40").unwrap();
    let (w2, w3) = (w1.next(), w1.next().next());
    let mut lines = String::new();
    week_lines(&mut lines, w1, 2000, 1, false);
    week_lines(&mut lines, w2, 2000, 2, false);
    week_lines(&mut lines, w3, 5000, 3, true);
    let file = dir.path().join("history.ndjson");
    std::fs::write(&file, lines).unwrap();

    run(&["import", file.to_str().unwrap(), "--time-field", "ts"], dir.path());
    let (from, to) = (w1.to_string(), w3.to_string());
    run(&["summarize", "--from", &from, "--to", &to, "--segment-by", "kind"], dir.path());

    // Week 1: nothing to compare with. Week 2: same distribution, no warning.
    assert_eq!(summary(dir.path(), w1)["comparison"], Value::Null);
    let s2 = summary(dir.path(), w2);
    assert_eq!(s2["schema"], 4);
    assert_eq!(s2["comparison"]["previous_week"], from);
    let warns: Vec<&Value> =
        s2["comparison"]["findings"].as_array().unwrap().iter().filter(|f| f["severity"] == "warn").collect();
    assert!(warns.is_empty(), "{warns:#?}");

    // Week 3: every kind, on its path; and per segment.
    let s3 = summary(dir.path(), w3);
    let findings = s3["comparison"]["findings"].as_array().unwrap();
    let has = |kind: &str, path: Option<&str>| findings.iter().any(|f| f["kind"] == kind && f["path"].as_str() == path);
    for (kind, path) in [
        ("volume", None),
        ("field_added", Some("coupon")),
        ("field_removed", Some("legacy")),
        ("type_changed", Some("zip")),
        ("null_rate", Some("email")),
        ("distribution", Some("amount")),
        ("top_values", Some("country")),
        ("quiet_day", None),
        ("distribution", Some("kind=order:amount")),
        ("distribution", Some("kind=refund:amount")),
        ("distribution", Some("kind=audit:amount")),
    ] {
        assert!(has(kind, path), "no {kind} on {path:?}: {findings:#?}");
    }
    let segments = s3["segments"]["values"].as_array().unwrap();
    assert_eq!(segments[0]["value"], "order");
    // Every segment finding is kept, each folded into the week's finding
    // of its kind and field (the week's lists the segments).
    let week_findings: Vec<&Value> = findings.iter().filter(|f| f["folded"] != true).collect();
    let folded = findings.iter().filter(|f| f["folded"] == true).count();
    assert_eq!(week_findings.len(), 8, "{week_findings:#?}");
    assert!(week_findings.iter().all(|f| !f["path"].as_str().unwrap_or_default().starts_with("kind=")));
    assert_eq!(folded, 3 * 7, "volume, added, removed, type, nulls, distribution, mix in each kind: {findings:#?}");
    for f in &week_findings {
        let segs = f["segments"].as_array().map_or(0, Vec::len);
        if f["kind"] == "quiet_day" {
            assert_eq!(segs, 0, "a quiet day is the week's");
        } else {
            assert_eq!(segs, 3, "{f:#?}");
            assert!(f["message"].as_str().unwrap().ends_with(" The same in all 3 `kind` segments."), "{f:#?}");
        }
    }

    // The report site: findings first, warnings highlighted, an index of all weeks.
    let bucket = dir.path().join("bucket/summaries");
    let html = std::fs::read_to_string(bucket.join(&to).join("summary.html")).unwrap();
    assert!(html.find("id=\"findings\"").unwrap() < html.find("id=\"fields\"").unwrap());
    // Each change once on the page: 7 warnings and 1 note.
    let listed = &html[html.find("id=\"findings\"").unwrap()..html.find("id=\"per-day\"").unwrap()];
    assert!(listed.contains("7 warnings and 1 note."), "{listed}");
    assert_eq!(listed.matches("<li class=\"warn\">").count(), 7, "{listed}");
    assert_eq!(listed.matches("<li class=\"info\">").count(), 1, "{listed}");
    for kind in [
        "volume",
        "field_added",
        "field_removed",
        "type_changed",
        "null_rate",
        "distribution",
        "top_values",
        "quiet_day",
    ] {
        assert_eq!(listed.matches(&format!("<span class=\"kind\">{kind}</span>")).count(), 1, "{kind}: {listed}");
    }
    assert!(html.contains(&format!("href=\"../{w2}/summary.html\" rel=\"prev\"")));
    let html2 = std::fs::read_to_string(bucket.join(w2.to_string()).join("summary.html")).unwrap();
    assert!(html2.contains(&format!("href=\"../{w1}/summary.html\" rel=\"prev\"")));
    let index = std::fs::read_to_string(bucket.join("index.html")).unwrap();
    let table = &index[index.find("Every summarized week").unwrap()..];
    let positions: Vec<usize> =
        [w3, w2, w1].iter().map(|w| table.find(&format!("<a href=\"{w}/summary.html\">")).unwrap()).collect();
    assert!(positions.windows(2).all(|p| p[0] < p[1]), "newest first");

    // The API serves summary.json as written.
    let mut server = Server::start(dir.path(), &[]);
    let r = client().get(server.url(&format!("/summaries/{to}"))).header("x-api-key", KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let served: Value = r.json().await.unwrap();
    assert_eq!(served, s3);
    server.terminate();
}
