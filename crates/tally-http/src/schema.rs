//! The shapes of request and response bodies and parameters, as documented
//! in the OpenAPI document.
//!
//! A leaf module: it depends on nothing else in this crate, so handlers can
//! name their bodies and the document can list its schemas without either
//! depending on the other. Where `tally-core` produces the body (the `201` of
//! `POST /records`, a stored record), the type here only describes it, and a
//! test checks that the two agree.

use serde::{Deserialize, Serialize};
use tally_core::IsoWeek;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

/// `201` body when one object was sent (mirrors `tally_core::IngestResponse::Single`).
#[derive(Debug, Serialize, ToSchema)]
#[cfg_attr(test, derive(serde::Deserialize), serde(deny_unknown_fields))]
pub struct RecordCreated {
    /// The new record's id.
    #[schema(pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$", example = "01KB0Z6Y6N5D1H4S3X9Q2W8E7R")]
    pub id: String,
    /// When the server received it: RFC 3339, UTC, milliseconds.
    #[schema(format = DateTime, example = "2026-11-25T15:32:06.123Z")]
    pub received_at: String,
}

/// `201` body when an array or NDJSON was sent (mirrors `tally_core::IngestResponse::Batch`).
#[derive(Debug, Serialize, ToSchema)]
#[cfg_attr(test, derive(serde::Deserialize), serde(deny_unknown_fields))]
pub struct BatchCreated {
    /// How many records were stored.
    #[schema(minimum = 1)]
    pub count: usize,
    /// Their ids, in input order.
    #[schema(min_items = 1)]
    pub ids: Vec<RecordIdString>,
}

/// A record id (ULID).
#[derive(Debug, Serialize, ToSchema)]
#[cfg_attr(test, derive(serde::Deserialize))]
#[schema(pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$", example = "01KB0Z6Y6N5D1H4S3X9Q2W8E7R")]
pub struct RecordIdString(pub String);

/// The `201` body of `POST /records`: one of the two shapes.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Created {
    Single(RecordCreated),
    Batch(BatchCreated),
}

/// `GET /records/{id}`: a stored record, its data exactly as it was sent
/// (key order, number spelling and unicode intact).
#[derive(Debug, Serialize, ToSchema)]
#[cfg_attr(test, derive(serde::Deserialize), serde(deny_unknown_fields))]
pub struct StoredRecord {
    #[schema(pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$", example = "01KB0Z6Y6N5D1H4S3X9Q2W8E7R")]
    pub id: String,
    #[schema(format = DateTime, example = "2026-11-25T15:32:06.123Z")]
    pub received_at: String,
    #[schema(schema_with = any_object)]
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// `GET /records`: one page of a range, in id order.
#[derive(Debug, Serialize, ToSchema)]
#[cfg_attr(test, derive(serde::Deserialize), serde(deny_unknown_fields))]
pub struct RecordPage {
    /// At most `limit` records, each as `GET /records/{id}` answers it.
    pub records: Vec<StoredRecord>,
    /// The cursor of the next page (send it as `cursor` with the same range),
    /// or `null` when this page ends the range.
    #[schema(nullable = true, pattern = "^[0-9a-f]+$")]
    pub next: Option<String>,
}

/// `DELETE /records/{id}`: what was erased, and what happens to its week's
/// summary (mirrors `tally_core::lifecycle::Erased`).
#[derive(Debug, Serialize, ToSchema)]
#[cfg_attr(test, derive(serde::Deserialize), serde(deny_unknown_fields))]
pub struct Erased {
    #[schema(pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$", example = "01KB0Z6Y6N5D1H4S3X9Q2W8E7R")]
    pub id: String,
    /// The record's ISO week.
    #[schema(example = "2026-W47")]
    pub week: String,
    /// `regenerating`: the week's summary held the record and is being
    /// rewritten (within a minute); `none`: the week has no summary yet;
    /// `stale`: the rewrite could not be queued — run `tally summarize --week W`.
    #[schema(example = "regenerating")]
    pub summary: ErasedSummary,
}

/// See [`Erased::summary`].
#[derive(Debug, Serialize, ToSchema)]
#[cfg_attr(test, derive(serde::Deserialize))]
#[serde(rename_all = "lowercase")]
pub enum ErasedSummary {
    Regenerating,
    None,
    Stale,
}

/// A JSON object with any members.
fn any_object() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Object)
}

/// Request body of `POST /records` as `application/json`: one object, or a
/// non-empty array of objects (at most 1000 by default, `--max-batch-records`).
#[derive(Debug)]
pub struct RecordsJson;

impl PartialSchema for RecordsJson {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(any_object().description(Some("One record.")))
            .item(objects().description(Some("A batch, stored all or nothing.")))
            .description(Some(
                "One JSON object, or a non-empty array of objects. Limits (defaults): body ≤ 1 MiB, \
                 record ≤ 64 KiB, batch ≤ 1000 records, nesting depth ≤ 32, no duplicate keys.",
            ))
            .into()
    }
}

impl ToSchema for RecordsJson {}

/// Request body of `POST /records` as `application/x-ndjson`.
#[derive(Debug)]
pub struct RecordsNdjson;

impl PartialSchema for RecordsNdjson {
    fn schema() -> RefOr<Schema> {
        objects()
            .description(Some(
                "NDJSON: one JSON object per line (the items of this array, each on its own line); \
                 blank lines are ignored. Stored all or nothing; errors name the item's index and line.",
            ))
            .into()
    }
}

impl ToSchema for RecordsNdjson {}

fn objects() -> ArrayBuilder {
    ArrayBuilder::new().items(any_object()).min_items(Some(1)).max_items(Some(1000))
}

/// Any JSON object (a week's `summary.json`, the OpenAPI document).
#[derive(Debug)]
pub struct AnyObject;

impl PartialSchema for AnyObject {
    fn schema() -> RefOr<Schema> {
        any_object().into()
    }
}

impl ToSchema for AnyObject {}

/// `summary.json` as `GET /summaries/{week}` serves it: the OpenAPI shape
/// of `tally_core::summary::Summary` (README, "The weekly summary", says
/// what each key means). Documentation only — the handler serves the
/// stored bytes — and a test deserializes real summaries into it with
/// unknown keys denied, so it cannot drift from what tally writes.
/// Schema 2 adds `comparison`, `segments` and each number field's
/// `quantiles`; summaries written by 0.1 (schema 1) lack them. Schema 3
/// adds `segments.max_unlisted_records`, schema 4 the findings' `segments`
/// and `folded`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WeekSummary {
    /// `summary.json` schema version: 4 for tally 0.4 (3 for its development builds), 2 for 0.2 and 0.3, 1 for 0.1.
    #[schema(minimum = 1, example = 4)]
    pub schema: u32,
    #[schema(example = "2026-W47")]
    pub week: String,
    /// Monday 00:00 UTC, inclusive.
    #[schema(format = DateTime)]
    pub start: String,
    /// Next Monday 00:00 UTC, exclusive.
    #[schema(format = DateTime)]
    pub end: String,
    pub records: u64,
    pub bytes: u64,
    pub unparsable_records: u64,
    /// Monday first, 7 entries.
    #[schema(schema_with = any_objects)]
    pub per_day: Vec<serde_json::Value>,
    /// 168 entries: hour 0 is Monday 00:00–01:00 UTC.
    pub per_hour: Vec<u64>,
    #[schema(schema_with = any_object)]
    pub limits: serde_json::Value,
    /// Per field path: presence, nulls, types, and number/string/boolean/array statistics.
    #[schema(schema_with = any_objects)]
    pub fields: Vec<serde_json::Value>,
    /// What changed since the latest earlier summarized week; `null` when none.
    #[serde(default)]
    pub comparison: Option<WeekComparison>,
    /// Per-value summaries of the `--segment-by` field; `null` when not segmented.
    #[serde(default)]
    pub segments: Option<WeekSegments>,
}

/// `comparison` of `summary.json`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WeekComparison {
    #[schema(example = "2026-W46")]
    pub previous_week: String,
    /// Sorted by (kind, path).
    pub findings: Vec<WeekFinding>,
}

/// One finding.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WeekFinding {
    #[schema(example = "null_rate")]
    pub kind: FindingKindDoc,
    /// The field path (segment findings prefixed `kind=orders:`), or `null` for the week.
    #[schema(example = "user.email")]
    pub path: Option<String>,
    pub severity: SeverityDoc,
    /// The value last week (a number, string or object, by kind).
    #[schema(schema_with = any_value)]
    pub previous: serde_json::Value,
    /// The value this week.
    #[schema(schema_with = any_value)]
    pub current: serde_json::Value,
    #[schema(
        example = "Field `user.email` is null in 41 % of the records that have it (was 3.0 %); beyond chance (p < 10⁻¹²). The same in all 3 `kind` segments."
    )]
    pub message: String,
    /// Schema 4, on week findings: the segments whose finding of the same
    /// kind and path went the same way, folded into this one. Absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(nullable = false, example = json!(["kind=order", "kind=refund", "kind=audit"]))]
    pub segments: Vec<String>,
    /// Schema 4, on segment findings: `true` when the week's finding of the
    /// same kind and path says the same; the report lists only that one.
    /// Absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schema(nullable = false)]
    pub folded: bool,
}

/// The finding kinds.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FindingKindDoc {
    Volume,
    FieldAdded,
    FieldRemoved,
    TypeChanged,
    NullRate,
    Distribution,
    TopValues,
    QuietDay,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SeverityDoc {
    Info,
    Warn,
}

/// `segments` of `summary.json`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WeekSegments {
    /// The top-level field segmented by.
    #[schema(example = "kind")]
    pub by: String,
    /// The 20 most frequent values, by records; their records and fields are exact.
    pub values: Vec<WeekSegment>,
    /// Records with another value, or without the field.
    pub other_records: u64,
    /// Schema 3: only past 10,000 distinct values, when the list may miss a
    /// value: the most records a value not listed may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unlisted_records: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WeekSegment {
    #[schema(example = "order")]
    pub value: String,
    pub records: u64,
    /// Same shape as the week's `fields`.
    #[schema(schema_with = any_objects)]
    pub fields: Vec<serde_json::Value>,
}

fn any_objects() -> ArrayBuilder {
    ArrayBuilder::new().items(any_object())
}

/// Any JSON value.
fn any_value() -> ObjectBuilder {
    ObjectBuilder::new()
}

/// Body of `GET /` for API clients (`Accept` without `text/html`). The
/// links are relative to the API's base URL (on AWS it ends in `/Prod/`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Landing {
    /// Always `tally`.
    #[schema(example = "tally")]
    pub service: &'static str,
    /// Always `ok` when the server answers, as `GET /health`.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// The server's crate version.
    #[schema(example = "0.4.0")]
    pub version: &'static str,
    /// Where `GET /health` is, relative to this URL.
    #[schema(example = "health")]
    pub health: &'static str,
    /// Where this API's OpenAPI document is, relative to this URL.
    #[schema(example = "openapi.json")]
    pub openapi: &'static str,
    /// Where the report site is, relative to this URL (it opens with a signed link).
    #[schema(example = "reports/")]
    pub reports: &'static str,
}

impl Landing {
    pub fn current() -> Self {
        Self {
            service: "tally",
            status: "ok",
            version: tally_core::VERSION,
            health: "health",
            openapi: "openapi.json",
            reports: "reports/",
        }
    }
}

/// Body of `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the server answers.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// The server's crate version.
    #[schema(example = "0.4.0")]
    pub version: &'static str,
}

/// One entry of `GET /summaries`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WeekLink {
    /// The ISO week, e.g. `2026-W47`.
    #[schema(value_type = String, pattern = "^[1-9][0-9]{3}-W(0[1-9]|[1-4][0-9]|5[0-3])$", example = "2026-W47")]
    pub week: IsoWeek,
    /// Where its `summary.json` is served.
    #[schema(example = "/summaries/2026-W47")]
    pub href: String,
}

/// Body of `GET /summaries`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WeekList {
    /// Weeks whose summary is complete, oldest first.
    pub weeks: Vec<WeekLink>,
}

/// The `Idempotency-Key` request header of the `POST` routes.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKeyHeader {
    /// Makes a retry safe: the same key with the same body answers the first
    /// answer again (same ids, `Idempotent-Replayed: true`) and stores
    /// nothing; the same key with another body is 409. Keys are kept at
    /// least 24 hours. 1–255 printable ASCII characters (HTTP drops spaces
    /// around header values, so the pattern has none at either end).
    #[param(
        rename = "Idempotency-Key",
        required = false,
        pattern = "^[!-~]([ -~]{0,253}[!-~])?$",
        min_length = 1,
        max_length = 255
    )]
    pub idempotency_key: String,
}

/// A Firehose HTTP endpoint delivery (request format 1.0).
#[derive(Debug, Serialize, ToSchema)]
pub struct FirehoseRequest {
    /// The delivery's id; the same on every retry of the delivery. Must
    /// match `X-Amz-Firehose-Request-Id`.
    #[serde(rename = "requestId")]
    #[schema(min_length = 1, example = "ed4acda5-034f-9f42-bba1-f29aea6d7d8f")]
    pub request_id: String,
    /// When Firehose made the request (milliseconds since the epoch).
    #[schema(example = 1578090901599_i64)]
    pub timestamp: Option<i64>,
    /// The records: each one JSON object, or NDJSON lines of objects.
    #[schema(max_items = 10000)]
    pub records: Vec<FirehoseRecord>,
}

/// One record of a Firehose delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct FirehoseRecord {
    /// The record's bytes, base64-encoded: a JSON object or NDJSON lines of
    /// objects once decoded. Empty records are allowed and store nothing.
    #[schema(content_encoding = "base64", example = "eyJ0ZW1wIjoyMS41fQ==")]
    pub data: String,
}

/// Every answer of `POST /firehose`, in Firehose's response format 1.0:
/// `requestId` and `timestamp`, plus `errorMessage` and tally's problem
/// members (`type`, `title`, `status`, `detail`) when it is an error.
#[derive(Debug, Serialize, ToSchema)]
#[cfg_attr(test, derive(serde::Deserialize))]
pub struct FirehoseAck {
    /// The delivery's request id (empty when the request carried none).
    #[serde(rename = "requestId")]
    pub request_id: String,
    /// When tally answered (milliseconds since the epoch).
    pub timestamp: i64,
    /// What went wrong and what to do; Firehose logs it, and copies the last
    /// one to its S3 backup when it gives up.
    #[serde(rename = "errorMessage", skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error_message: Option<String>,
    /// The problem kind, as in problem documents.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "/problems/not-an-object")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub detail: Option<String>,
}

impl FirehoseAck {
    /// The success answer.
    pub fn ok(request_id: String, timestamp: i64) -> Self {
        Self { request_id, timestamp, error_message: None, kind: None, title: None, status: None, detail: None }
    }
}

/// The `X-Amz-Firehose-*` request headers of `POST /firehose` (the access
/// key is the `firehose_access_key` security scheme).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct FirehoseHeaders {
    /// The format version; tally speaks `1.0`.
    #[param(rename = "X-Amz-Firehose-Protocol-Version", example = "1.0", pattern = "^1\\.0$")]
    pub protocol_version: String,
    /// The delivery's id, the same on every retry: tally stores a delivery
    /// once per id. Must match the body's `requestId`.
    #[param(rename = "X-Amz-Firehose-Request-Id", required = false, example = "ed4acda5-034f-9f42-bba1-f29aea6d7d8f")]
    pub request_id: String,
}

#[cfg(test)]
mod tests {
    use tally_core::{IngestResponse, RecordId, Timestamp};

    use super::*;

    /// The documented shapes are the ones `tally-core` serializes.
    #[test]
    fn documented_bodies_match_the_core_types() {
        let id = RecordId::generate(Timestamp::now());
        let single = serde_json::to_string(&IngestResponse::Single { id, received_at: Timestamp::now() }).unwrap();
        let single: RecordCreated = serde_json::from_str(&single).unwrap();
        assert_eq!(single.id, id.to_string());
        let batch = serde_json::to_string(&IngestResponse::Batch { count: 1, ids: vec![id] }).unwrap();
        let batch: BatchCreated = serde_json::from_str(&batch).unwrap();
        assert_eq!(batch.ids[0].0, id.to_string());
    }

    #[test]
    fn the_patterns_accept_what_the_parsers_accept() {
        // No regex crate here: check the character classes by hand.
        let id = RecordId::generate(Timestamp::now()).to_string();
        assert!(RecordId::parse(&id.to_lowercase()).is_ok(), "lower case ids are documented as valid");
        assert!(tally_core::IdempotencyKey::parse(b"~ !").is_ok());
        assert!(tally_core::IsoWeek::parse("2026-w53").is_ok());
        assert!(tally_core::IsoWeek::parse("0999-W01").is_err(), "years start at 1000, as the pattern says");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod summary_json_tests {
    use super::*;
    use tally_core::summary::{Aggregator, SummaryOptions, compare};
    use tally_core::{Record, RecordId};

    fn summary(week: IsoWeek, n: u64, segment: bool) -> tally_core::Summary {
        let options = SummaryOptions { segment_by: segment.then(|| "kind".into()), ..SummaryOptions::default() };
        let mut agg = Aggregator::new(week, &options);
        for i in 0..n {
            let at = week.start();
            let data = format!(r#"{{"kind":"k{}","n":{i},"s":"v{}","e":null,"a":[1]}}"#, i % 3, i % 7);
            agg.push(&Record { id: RecordId::generate(at), received_at: at, data });
        }
        agg.finish()
    }

    /// The documented shape covers every key tally writes, in schema 4 and 1.
    #[test]
    fn week_summary_documents_every_key_of_summary_json() {
        let week = IsoWeek::parse("2026-W47").unwrap();
        let previous = summary(week.previous(), 100, true);
        let mut current = summary(week, 300, true);
        current.comparison = Some(compare(&previous, &current, &Default::default()));
        assert!(!current.comparison.as_ref().unwrap().findings.is_empty(), "exercise the findings");
        // Present only past 10,000 segment values: set here to cover it.
        current.segments.as_mut().unwrap().max_unlisted_records = Some(12);
        let doc: WeekSummary = serde_json::from_slice(&current.to_json().unwrap()).unwrap();
        assert_eq!(doc.schema, 4);
        assert_eq!(doc.segments.as_ref().unwrap().max_unlisted_records, Some(12));
        // Schema 4: the week's volume finding with the segments folded into it.
        let findings = &doc.comparison.as_ref().unwrap().findings;
        assert!(findings.iter().any(|f| f.segments.len() == 3), "{findings:#?}");
        assert!(findings.iter().any(|f| f.folded), "{findings:#?}");
        assert!(doc.comparison.is_some() && doc.segments.is_some());
        // A schema-1 summary (0.1) has neither key.
        let mut old: serde_json::Value = serde_json::from_slice(&summary(week, 3, false).to_json().unwrap()).unwrap();
        let map = old.as_object_mut().unwrap();
        map.remove("comparison");
        map.remove("segments");
        map.insert("schema".into(), 1.into());
        let doc: WeekSummary = serde_json::from_value(old).unwrap();
        assert!(doc.comparison.is_none());
    }
}
