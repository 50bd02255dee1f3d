//! The message that announces a week's report: what a webhook receives as
//! JSON and an SNS topic sends as text.
//!
//! A leaf module (plain data and text formatting, no port): the
//! [`Notifier`](crate::ports::Notifier) port takes a [`Notification`], and the
//! use case that builds and sends it ([`super::notify`]) uses the ports, so
//! keeping the type here avoids a cycle between `ports` and `summary`.
//!
//! The `text` digest is written for people, and for chat tools' incoming
//! webhooks (Slack, Mattermost, Teams), which show a JSON body's `text` as
//! is: a headline with the week, its record count and the change against
//! the previous week, the number of warnings, the first few warnings, and
//! the report's link — plain text with no markup, so nothing renders oddly.

use serde::{Deserialize, Serialize};

use super::fmt::{change_whole, clip, group};
use super::model::{Comparison, Finding, Severity};
use crate::week::IsoWeek;

/// Warnings quoted in the digest; the rest are counted ("and 4 more").
pub const DIGEST_WARNINGS: usize = 3;

/// Characters of one finding's message quoted in the digest.
const DIGEST_MESSAGE_CHARS: usize = 200;

/// `{"week", "records", "warnings", "findings", "report", "text"}`, exactly
/// these keys in this order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    pub week: IsoWeek,
    pub records: u64,
    /// Findings of severity `warn` the report lists (segment findings
    /// folded into the week's are not counted; see `Comparison::warnings`).
    pub warnings: usize,
    /// Every finding of the comparison with the previous week, as in
    /// `summary.json`, folded ones included (empty when there is no earlier
    /// week).
    pub findings: Vec<Finding>,
    /// The week's page on the report site tally serves, as a signed,
    /// expiring link (`crate::report_link`): `<public URL>/reports/<week>/?exp=…&sig=…`.
    pub report: String,
    /// A short digest for people (see the module docs).
    pub text: String,
}

/// The latest earlier summarized week, as the digest quotes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviousWeek {
    pub week: IsoWeek,
    /// `None` when its manifest could not be read: the digest then names
    /// the week without the change in records.
    pub records: Option<u64>,
}

impl Notification {
    /// The notification for `week`'s report at `report`. `comparison` is the
    /// week's comparison (`None`: no earlier week); `previous_records` is the
    /// record count of `comparison.previous_week`, if known.
    pub fn new(
        week: IsoWeek,
        records: u64,
        comparison: Option<&Comparison>,
        previous_records: Option<u64>,
        report: String,
    ) -> Self {
        let findings = comparison.map(|c| c.findings.clone()).unwrap_or_default();
        let warnings = comparison.map_or(0, Comparison::warnings);
        let previous = comparison.map(|c| PreviousWeek { week: c.previous_week, records: previous_records });
        let text = digest(week, records, previous, &findings, &report);
        Self { week, records, warnings, findings, report, text }
    }

    /// A one-line subject (e-mail, SNS): ASCII only and at most 100
    /// characters, as SNS requires.
    pub fn subject(&self) -> String {
        let mut subject = format!("tally report {}: {} records", self.week, group(self.records));
        match self.warnings {
            0 => {}
            1 => subject.push_str(", 1 warning"),
            n => subject.push_str(&format!(", {n} warnings")),
        }
        subject
    }
}

/// The `text` of a notification.
fn digest(week: IsoWeek, records: u64, previous: Option<PreviousWeek>, findings: &[Finding], report: &str) -> String {
    let mut text = format!("tally report for {week}: {} records", group(records));
    match previous {
        None => text.push_str(" (no earlier week to compare with)."),
        Some(PreviousWeek { week: prev, records: None }) => text.push_str(&format!(" (compared with {prev}).")),
        Some(PreviousWeek { week: prev, records: Some(before) }) => {
            text.push_str(&format!(" ({} vs {prev}: {}).", change_whole(before, records), group(before)));
        }
    }
    // The warnings as the report lists them: each change once.
    let warnings: Vec<&Finding> = findings.iter().filter(|f| f.severity == Severity::Warn && !f.folded).collect();
    match (previous, warnings.len()) {
        (None, _) => {}
        (Some(_), 0) => text.push_str(" No warnings."),
        (Some(_), 1) => text.push_str(" 1 warning:"),
        (Some(_), n) => text.push_str(&format!(" {n} warnings:")),
    }
    for finding in warnings.iter().take(DIGEST_WARNINGS) {
        text.push_str("\n- ");
        text.push_str(finding.kind.as_str());
        if let Some(path) = &finding.path {
            text.push(' ');
            text.push_str(path);
        }
        text.push_str(": ");
        text.push_str(&shorten(&finding.message, DIGEST_MESSAGE_CHARS));
    }
    if warnings.len() > DIGEST_WARNINGS {
        text.push_str(&format!("\n- and {} more in the report", warnings.len() - DIGEST_WARNINGS));
    }
    text.push_str("\nReport: ");
    text.push_str(report);
    text
}

/// At most `max` characters of `s` (ending in `...` when cut), on one line.
fn shorten(s: &str, max: usize) -> String {
    let one_line: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    clip(&one_line, max, "...")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::summary::FindingKind;

    fn week() -> IsoWeek {
        IsoWeek::parse("2026-W47").unwrap()
    }

    fn finding(kind: FindingKind, path: Option<&str>, severity: Severity, message: &str) -> Finding {
        Finding {
            kind,
            path: path.map(str::to_owned),
            severity,
            previous: serde_json::Value::Null,
            current: serde_json::Value::Null,
            message: message.into(),
            segments: Vec::new(),
            folded: false,
        }
    }

    fn comparison(findings: Vec<Finding>) -> Comparison {
        Comparison { previous_week: IsoWeek::parse("2026-W46").unwrap(), findings }
    }

    #[test]
    fn serializes_to_exactly_the_six_keys() {
        let c = comparison(vec![
            finding(FindingKind::Volume, None, Severity::Warn, "The record count more than doubled."),
            finding(FindingKind::FieldAdded, Some("a.b"), Severity::Info, "a.b is new."),
        ]);
        let n = Notification::new(
            week(),
            25_000,
            Some(&c),
            Some(11_430),
            "/data/bucket/summaries/2026-W47/summary.html".into(),
        );
        let v = serde_json::to_value(&n).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = vec!["week", "records", "warnings", "findings", "report", "text"];
        expected.sort_unstable();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort_unstable();
        assert_eq!(keys_sorted, expected);
        assert_eq!(v["week"], "2026-W47");
        assert_eq!(v["records"], 25_000);
        assert_eq!(v["warnings"], 1);
        assert_eq!(v["findings"].as_array().unwrap().len(), 2, "all findings, info included");
        assert_eq!(v["findings"][1]["kind"], "field_added");
        assert_eq!(v["report"], "/data/bucket/summaries/2026-W47/summary.html");
        let back: Notification = serde_json::from_value(v).unwrap();
        assert_eq!(back, n);
    }

    #[test]
    fn the_digest_names_the_week_the_change_the_warnings_and_the_link() {
        let c = comparison(vec![
            finding(FindingKind::FieldRemoved, Some("user.email"), Severity::Warn, "user.email is gone."),
            finding(FindingKind::NullRate, Some("price"), Severity::Warn, "price is null in 40% of records (was 1%)."),
            finding(FindingKind::FieldAdded, Some("x"), Severity::Info, "x is new."),
            finding(FindingKind::QuietDay, None, Severity::Warn, "No records on Wednesday."),
            finding(FindingKind::Volume, None, Severity::Warn, "Records fell by 60%."),
            finding(FindingKind::TopValues, Some("kind"), Severity::Warn, &"long ".repeat(100)),
        ]);
        let n = Notification::new(week(), 4_572, Some(&c), Some(11_430), "https://example.com/r".into());
        let lines: Vec<&str> = n.text.lines().collect();
        assert_eq!(lines[0], "tally report for 2026-W47: 4,572 records (-60% vs 2026-W46: 11,430). 5 warnings:");
        assert_eq!(lines[1], "- field_removed user.email: user.email is gone.");
        assert_eq!(lines[2], "- null_rate price: price is null in 40% of records (was 1%).");
        assert_eq!(lines[3], "- quiet_day: No records on Wednesday.");
        assert_eq!(lines[4], "- and 2 more in the report");
        assert_eq!(lines[5], "Report: https://example.com/r");
        assert_eq!(lines.len(), 6);
        assert_eq!(n.warnings, 5);
        assert_eq!(n.subject(), "tally report 2026-W47: 4,572 records, 5 warnings");
    }

    #[test]
    fn segment_findings_folded_into_the_weeks_are_neither_counted_nor_quoted() {
        let mut week_finding = finding(FindingKind::NullRate, Some("email"), Severity::Warn, "email: 50 % (was 5 %).");
        week_finding.segments = vec!["kind=a".into(), "kind=b".into()];
        let mut folded = finding(FindingKind::NullRate, Some("kind=a:email"), Severity::Warn, "a: 50 % (was 5 %).");
        folded.folded = true;
        let other = finding(FindingKind::NullRate, Some("kind=c:email"), Severity::Warn, "c: 1 % (was 5 %).");
        let c = comparison(vec![week_finding, folded, other]);
        let n = Notification::new(week(), 100, Some(&c), Some(100), "/r".into());
        assert_eq!((n.warnings, n.findings.len()), (2, 3), "the listed warnings; every finding kept");
        assert!(n.text.contains("2 warnings:") && !n.text.contains("kind=a:email"), "{}", n.text);
        assert!(n.text.contains("- null_rate email:") && n.text.contains("- null_rate kind=c:email:"), "{}", n.text);
    }

    #[test]
    fn the_digest_of_a_first_week_and_of_a_quiet_one() {
        let first = Notification::new(week(), 7, None, None, "/r".into());
        assert_eq!(first.text, "tally report for 2026-W47: 7 records (no earlier week to compare with).\nReport: /r");
        assert_eq!((first.warnings, first.findings.len()), (0, 0));
        assert_eq!(first.subject(), "tally report 2026-W47: 7 records");

        let c = comparison(vec![finding(FindingKind::FieldAdded, Some("x"), Severity::Info, "x is new.")]);
        let same = Notification::new(week(), 1_000, Some(&c), Some(1_000), "/r".into());
        assert_eq!(
            same.text,
            "tally report for 2026-W47: 1,000 records (+0% vs 2026-W46: 1,000). No warnings.\nReport: /r"
        );
        let unknown = Notification::new(week(), 1_000, Some(&c), None, "/r".into());
        assert!(unknown.text.starts_with("tally report for 2026-W47: 1,000 records (compared with 2026-W46)."));
        let from_zero = Notification::new(week(), 5, Some(&c), Some(0), "/r".into());
        assert!(from_zero.text.contains("(up from 0 vs 2026-W46: 0)"), "{}", from_zero.text);
    }

    #[test]
    fn long_messages_are_cut_and_subjects_stay_short_ascii() {
        let c = comparison(vec![finding(FindingKind::TopValues, Some("k"), Severity::Warn, &"é\n".repeat(300))]);
        let n = Notification::new(week(), u64::MAX, Some(&c), Some(1), "/r".into());
        let line = n.text.lines().nth(1).unwrap();
        assert!(line.chars().count() <= "- top_values k: ".len() + DIGEST_MESSAGE_CHARS, "{line}");
        assert!(line.ends_with("..."));
        let subject = Notification { warnings: usize::MAX, ..n }.subject();
        assert!(subject.len() <= 100 && subject.is_ascii(), "{subject}");
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000), "1,000");
        assert_eq!(group(u64::MAX), "18,446,744,073,709,551,615");
    }
}
