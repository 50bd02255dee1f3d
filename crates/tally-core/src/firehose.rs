//! Amazon Data Firehose as a source: storing one HTTP endpoint delivery.
//!
//! Firehose's HTTP endpoint destination POSTs its buffered records as one
//! JSON document, `{"requestId", "timestamp", "records": [{"data": <base64>}]}`
//! (request/response format version 1.0: "Understand HTTP endpoint delivery
//! request and response specifications", Amazon Data Firehose developer
//! guide). It retries a delivery that was not answered 200 with the same
//! request id, for as long as the stream's retry duration, then backs the
//! records up to S3.
//!
//! A delivery is one ingest request: its records, each a JSON object or
//! NDJSON lines (a producer may aggregate several records in one Firehose
//! record), are concatenated into one NDJSON batch and stored all or nothing
//! through [`IngestService`] with the idempotency key `firehose:<request id>`.
//! The key's fingerprint covers the records, not the envelope, so a retry
//! (whose envelope `timestamp` may differ) replays the first answer and
//! stores nothing twice — tally's one idempotency mechanism, unchanged.
//!
//! # Limits
//!
//! Firehose buffers at least 1 MiB before it delivers (the smallest buffer
//! size it offers an HTTP endpoint) and may put up to 10,000 records in one
//! request. So a delivery may hold up to twice the body limit of record data
//! (`2 x max_body_bytes`: a buffer that closes a record past its size) and up
//! to [`FIREHOSE_MAX_RECORDS`] records (or `max_batch_records`, if larger);
//! its envelope, base64 and all, up to [`envelope_limit`]. Every record is
//! checked like any other (size, depth, duplicate keys).

use base64::Engine;
use serde::Deserialize;

use crate::idempotency::IdempotencyKey;
use crate::ingest::{IngestError, IngestResponse, IngestService};
use crate::ports::GiveUp;
use crate::validate::{BodyFormat, Limits, Position, ValidationError};

/// Most records Firehose puts in one request (the request schema's
/// `maxItems`).
pub const FIREHOSE_MAX_RECORDS: usize = 10_000;

/// Prefix of the idempotency keys of Firehose deliveries.
pub const KEY_PREFIX: &str = "firehose:";

/// The limits a delivery's records are held to: a body's, except that a
/// delivery may carry [`FIREHOSE_MAX_RECORDS`] records and twice the body
/// limit of data (see the module documentation).
pub fn delivery_limits(limits: &Limits) -> Limits {
    Limits {
        max_body_bytes: limits.max_body_bytes.saturating_mul(2),
        max_batch_records: limits.max_batch_records.max(FIREHOSE_MAX_RECORDS),
        ..*limits
    }
}

/// The largest envelope worth reading: the delivery's data base64-encoded
/// (4/3 larger) plus the JSON around each record.
pub fn envelope_limit(limits: &Limits) -> usize {
    let data = delivery_limits(limits);
    data.max_body_bytes / 3 * 4 + 4 + data.max_batch_records * 16 + 4096
}

/// One parsed delivery: its request id and its records' data, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirehoseDelivery {
    request_id: String,
    key: IdempotencyKey,
    records: Vec<Vec<u8>>,
}

/// What storing a delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirehoseOutcome {
    /// The records are durable (`replayed`: a retry of a delivery stored
    /// before; nothing new was stored).
    Stored { records: usize, replayed: bool },
    /// Every record was empty (Firehose permits empty records): nothing to store.
    Empty,
}

/// Why a delivery was refused. Nothing of it is stored.
#[derive(Debug, thiserror::Error)]
pub enum FirehoseError {
    #[error(
        "the body is not a Firehose delivery ({0}); send {{\"requestId\": ..., \"records\": [{{\"data\": <base64>}}]}}"
    )]
    Envelope(String),
    #[error(
        "the request id {0:?} cannot key a delivery: it must be 1 to {max} printable ASCII characters",
        max = 255 - KEY_PREFIX.len()
    )]
    RequestId(String),
    #[error(
        "the X-Amz-Firehose-Request-Id header ({header:?}) and the body's requestId ({body:?}) differ; send one id"
    )]
    RequestIdMismatch { header: String, body: String },
    #[error("records[{index}].data is not valid base64 ({reason}); Firehose sends each record's data base64-encoded")]
    Base64 { index: usize, reason: String },
    #[error(
        "the delivery holds {bytes} bytes of record data, more than the limit of {max}; lower the Firehose \
         buffering size (1 MiB fits tally's default limit) or raise --max-body-bytes"
    )]
    TooLarge { bytes: usize, max: usize },
    #[error(
        "the delivery's body is larger than {max} bytes (base64 and JSON included, once decompressed); lower the \
         Firehose buffering size (1 MiB fits tally's default limit) or raise --max-body-bytes"
    )]
    EnvelopeTooLarge { max: usize },
    #[error("records[{index}].data, line {line}: {source}")]
    Record {
        index: usize,
        line: usize,
        #[source]
        source: ValidationError,
    },
    #[error(transparent)]
    Invalid(ValidationError),
    #[error(transparent)]
    Ingest(IngestError),
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "requestId")]
    request_id: String,
    records: Vec<EnvelopeRecord>,
}

#[derive(Deserialize)]
struct EnvelopeRecord {
    data: String,
}

impl FirehoseDelivery {
    /// Parses a delivery's (decompressed) body. `header_id` is the
    /// `X-Amz-Firehose-Request-Id` header, which must match the body's id
    /// when both are present.
    pub fn parse(body: &[u8], header_id: Option<&str>, limits: &Limits) -> Result<Self, FirehoseError> {
        let envelope: Envelope = serde_json::from_slice(body).map_err(|e| FirehoseError::Envelope(e.to_string()))?;
        if let Some(header) = header_id.filter(|h| *h != envelope.request_id) {
            return Err(FirehoseError::RequestIdMismatch { header: clip(header), body: clip(&envelope.request_id) });
        }
        // Firehose always sends an id; an empty one would key every such
        // delivery alike (a second would replay the first's answer).
        let key = Some(&envelope.request_id)
            .filter(|id| !id.is_empty())
            .and_then(|id| IdempotencyKey::parse(format!("{KEY_PREFIX}{id}").as_bytes()).ok())
            .ok_or_else(|| FirehoseError::RequestId(clip(&envelope.request_id)))?;
        let max = delivery_limits(limits).max_body_bytes;
        let mut bytes = 0usize;
        let mut records = Vec::with_capacity(envelope.records.len());
        for (index, record) in envelope.records.into_iter().enumerate() {
            let data = base64::engine::general_purpose::STANDARD
                .decode(record.data.as_bytes())
                .map_err(|e| FirehoseError::Base64 { index, reason: e.to_string() })?;
            bytes += data.len() + 1;
            if bytes > max {
                return Err(FirehoseError::TooLarge { bytes, max });
            }
            records.push(data);
        }
        Ok(Self { request_id: envelope.request_id, key, records })
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The delivery as one NDJSON body, and the first line of each record in it.
    fn ndjson(&self) -> (Vec<u8>, Vec<usize>) {
        let mut body = Vec::with_capacity(self.records.iter().map(|r| r.len() + 1).sum());
        let mut starts = Vec::with_capacity(self.records.len());
        let mut line = 1;
        for data in &self.records {
            starts.push(line);
            body.extend_from_slice(data);
            if !data.ends_with(b"\n") {
                body.push(b'\n');
            }
            line += data.iter().filter(|b| **b == b'\n').count() + usize::from(!data.ends_with(b"\n"));
        }
        (body, starts)
    }
}

impl IngestService {
    /// Stores a delivery all or nothing, idempotently on its request id: a
    /// retry with the same records replays the first answer (`replayed`);
    /// the same id with other records is [`IngestError::IdempotencyConflict`].
    pub async fn ingest_firehose(
        &self,
        delivery: &FirehoseDelivery,
        give_up: GiveUp<'_>,
    ) -> Result<FirehoseOutcome, FirehoseError> {
        let blank = |data: &Vec<u8>| data.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
        if delivery.records.iter().all(blank) {
            return Ok(FirehoseOutcome::Empty);
        }
        let (body, starts) = delivery.ndjson();
        let limits = delivery_limits(self.limits());
        match self.ingest_with(&body, BodyFormat::NdJson, Some(delivery.key.clone()), &limits, give_up).await {
            Ok(receipt) => Ok(FirehoseOutcome::Stored {
                records: match receipt.response {
                    IngestResponse::Single { .. } => 1,
                    IngestResponse::Batch { count, .. } => count,
                },
                replayed: receipt.replayed,
            }),
            Err(IngestError::Invalid(e)) => Err(locate(e, &starts)),
            Err(e) => Err(FirehoseError::Ingest(e)),
        }
    }
}

/// Names the Firehose record (and its line) a validation error is about,
/// instead of the line of the concatenated batch.
fn locate(e: ValidationError, starts: &[usize]) -> FirehoseError {
    let line = match &e {
        ValidationError::InvalidUtf8 { line, .. } | ValidationError::Syntax { line, .. } => Some(*line),
        other => other.position().and_then(|p| p.line),
    };
    let Some(line) = line else { return FirehoseError::Invalid(e) };
    let index = starts.partition_point(|start| *start <= line).saturating_sub(1);
    let in_record = line - starts.get(index).copied().unwrap_or(1) + 1;
    // The position inside the batch means nothing to the sender: the record
    // and its line say it.
    let none = Position::default();
    let source = match e {
        ValidationError::Syntax { message, column, .. } => {
            ValidationError::Syntax { message, line: in_record, column, pos: none }
        }
        ValidationError::InvalidUtf8 { offset, .. } => ValidationError::InvalidUtf8 { offset, line: in_record },
        ValidationError::NotAnObject { found, .. } => ValidationError::NotAnObject { found, pos: none },
        ValidationError::RecordTooLarge { bytes, max, .. } => ValidationError::RecordTooLarge { bytes, max, pos: none },
        ValidationError::TooDeep { max, .. } => ValidationError::TooDeep { max, pos: none },
        ValidationError::DuplicateKey { key, path, .. } => ValidationError::DuplicateKey { key, path, pos: none },
        other => other,
    };
    FirehoseError::Record { index, line: in_record, source }
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::Timestamp;
    use crate::testing::{FixedClock, MemoryRecordStore};

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn envelope(id: &str, records: &[&str]) -> Vec<u8> {
        let records: Vec<_> = records.iter().map(|r| serde_json::json!({"data": b64(r)})).collect();
        serde_json::json!({"requestId": id, "timestamp": 1_578_090_901_599_i64, "records": records})
            .to_string()
            .into_bytes()
    }

    fn service() -> (IngestService, Arc<MemoryRecordStore>) {
        let store = Arc::new(MemoryRecordStore::default());
        let clock = Arc::new(FixedClock::at(Timestamp::from_millis(1_795_939_200_000)));
        (IngestService::new(store.clone(), clock, Limits::default()), store)
    }

    async fn deliver(svc: &IngestService, body: &[u8]) -> Result<FirehoseOutcome, FirehoseError> {
        let delivery = FirehoseDelivery::parse(body, None, svc.limits())?;
        svc.ingest_firehose(&delivery, Box::pin(std::future::pending())).await
    }

    #[tokio::test]
    async fn objects_and_aggregated_ndjson_records_are_stored_once_per_request_id() {
        let (svc, store) = service();
        let body = envelope("ed4acda5-034f-9f42-bba1-f29aea6d7d8f", &["{\"a\":1}", "{\"b\":2}\n{\"c\":3}\n", ""]);
        assert_eq!(store_ok(&svc, &body).await, FirehoseOutcome::Stored { records: 3, replayed: false });
        // Firehose retries with the same id (and a new envelope timestamp): nothing new.
        let retry = String::from_utf8(body).unwrap().replace("1578090901599", "1578090999999");
        assert_eq!(store_ok(&svc, retry.as_bytes()).await, FirehoseOutcome::Stored { records: 3, replayed: true });
        assert_eq!(store.len(), 3);
        // The same id with other records is a conflict; nothing stored.
        let other = envelope("ed4acda5-034f-9f42-bba1-f29aea6d7d8f", &["{\"a\":2}"]);
        assert!(matches!(deliver(&svc, &other).await, Err(FirehoseError::Ingest(IngestError::IdempotencyConflict))));
        assert_eq!(store.len(), 3);
    }

    async fn store_ok(svc: &IngestService, body: &[u8]) -> FirehoseOutcome {
        deliver(svc, body).await.unwrap()
    }

    #[tokio::test]
    async fn a_bad_record_refuses_the_whole_delivery_and_names_the_record_and_line() {
        let (svc, store) = service();
        let body = envelope("r1", &["{\"a\":1}", "{\"b\":2}\n[1]\n"]);
        let err = deliver(&svc, &body).await.unwrap_err();
        assert!(matches!(err, FirehoseError::Record { index: 1, line: 2, .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.starts_with("records[1].data, line 2: the body is an array, not a JSON object"), "{text}");
        let err = deliver(&svc, &envelope("r2", &["{}", "{}", "{\"a\":"])).await.unwrap_err();
        assert!(matches!(err, FirehoseError::Record { index: 2, line: 1, .. }), "{err:?}");
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn bad_envelopes_base64_and_ids_are_refused_before_anything_is_stored() {
        let (svc, store) = service();
        let bad = br#"{"requestId":"r","records":[{"data":"e30="},{"data":"not base64!"}]}"#;
        assert!(matches!(deliver(&svc, bad).await, Err(FirehoseError::Base64 { index: 1, .. })));
        assert!(matches!(deliver(&svc, br#"{"records":[]}"#).await, Err(FirehoseError::Envelope(_))));
        assert!(matches!(deliver(&svc, b"[1]").await, Err(FirehoseError::Envelope(_))));
        let long = envelope(&"x".repeat(250), &["{}"]);
        assert!(matches!(deliver(&svc, &long).await, Err(FirehoseError::RequestId(_))));
        assert!(matches!(deliver(&svc, &envelope("", &["{}"])).await, Err(FirehoseError::RequestId(_))));
        let empty = FirehoseDelivery::parse(br#"{"requestId":"","records":[]}"#, Some(""), svc.limits());
        assert!(matches!(empty, Err(FirehoseError::RequestId(_))), "an empty id with no records is refused too");
        let parsed = FirehoseDelivery::parse(&envelope("a", &["{}"]), Some("b"), svc.limits());
        assert!(matches!(parsed, Err(FirehoseError::RequestIdMismatch { .. })));
        assert_eq!(store_ok(&svc, &envelope("only-empty", &["", ""])).await, FirehoseOutcome::Empty);
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn a_delivery_may_hold_firehose_s_10_000_records_and_twice_the_body_limit() {
        let (svc, store) = service();
        let records = vec!["{\"n\":1}"; FIREHOSE_MAX_RECORDS];
        assert_eq!(
            store_ok(&svc, &envelope("big", &records)).await,
            FirehoseOutcome::Stored { records: 10_000, replayed: false }
        );
        assert_eq!(store.len(), 10_000);
        let one_more = vec!["{\"n\":1}"; FIREHOSE_MAX_RECORDS + 1];
        let err = deliver(&svc, &envelope("bigger", &one_more)).await.unwrap_err();
        assert!(matches!(err, FirehoseError::Invalid(ValidationError::TooManyRecords { .. })), "{err:?}");
        let fat = format!("{{\"s\":\"{}\"}}", "x".repeat(60_000));
        let over = vec![fat.as_str(); 40];
        assert!(matches!(deliver(&svc, &envelope("fat", &over)).await, Err(FirehoseError::TooLarge { .. })));
        assert!(envelope(&"x".repeat(10), &vec![fat.as_str(); 34]).len() < envelope_limit(svc.limits()));
        assert_eq!(store.len(), 10_000);
    }
}
