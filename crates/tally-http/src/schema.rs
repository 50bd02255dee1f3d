//! The shapes of request and response bodies and parameters, as documented
//! in the OpenAPI document.
//!
//! A leaf module: it depends on nothing else in this crate, so handlers can
//! name their bodies and the document can list its schemas without either
//! depending on the other. Where `tally-core` produces the body (the `201` of
//! `POST /records`, a stored record), the type here only describes it, and a
//! test checks that the two agree.

use serde::Serialize;
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

/// Body of `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the server answers.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// The server's crate version.
    #[schema(example = "0.1.0")]
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
