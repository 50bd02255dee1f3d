//! Items to and from tally's values (records, idempotency entries), and SDK
//! errors to [`StoreError`]s classified for the client.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use tally_core::idempotency::{Fingerprint, IdempotencyEntry, IdempotencyKey};
use tally_core::ports::StoreError;
use tally_core::{Record, RecordId, Timestamp};

use super::layout::{KEY_SK, key_pk, record_pk};

pub(crate) type Item = HashMap<String, AttributeValue>;

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn record_item(r: &Record) -> Item {
    HashMap::from([
        ("pk".to_owned(), s(record_pk(r.id))),
        ("sk".to_owned(), s(r.id.to_string())),
        ("data".to_owned(), s(r.data.clone())),
        ("received_at".to_owned(), n(r.received_at.as_millis())),
    ])
}

pub(crate) fn entry_item(e: &IdempotencyEntry, complete: bool) -> Item {
    // TTL wants epoch seconds; round up so the key lives at least as long as promised.
    let expires_s = (e.expires_at.as_millis() + 999).div_euclid(1000);
    HashMap::from([
        ("pk".to_owned(), s(key_pk(&e.key))),
        ("sk".to_owned(), s(KEY_SK)),
        ("fingerprint".to_owned(), s(e.fingerprint.to_hex())),
        ("received_at".to_owned(), n(e.received_at.as_millis())),
        ("status".to_owned(), n(i64::from(e.status))),
        ("response".to_owned(), s(e.response.clone())),
        ("expires_at".to_owned(), n(expires_s)),
        ("expires_at_ms".to_owned(), n(e.expires_at.as_millis())),
        ("complete".to_owned(), AttributeValue::Bool(complete)),
    ])
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Internal { message: format!("a DynamoDB item has a missing or malformed `{what}`"), source: None }
}

pub(crate) fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str).ok_or_else(|| corrupt(name))
}

pub(crate) fn get_n(item: &Item, name: &str) -> Result<i64, StoreError> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).ok_or_else(|| corrupt(name))
}

pub(crate) fn parse_record(item: &Item) -> Result<Record, StoreError> {
    let id = RecordId::parse(get_s(item, "sk")?)
        .map_err(|e| StoreError::internal("a record's sort key is not a ULID", e))?;
    Ok(Record {
        id,
        received_at: Timestamp::from_millis(get_n(item, "received_at")?),
        data: get_s(item, "data")?.to_owned(),
    })
}

/// The entry and its `complete` flag.
pub(super) fn parse_entry(key: &IdempotencyKey, item: &Item) -> Result<(IdempotencyEntry, bool), StoreError> {
    let fingerprint = Fingerprint::from_hex(get_s(item, "fingerprint")?).ok_or_else(|| corrupt("fingerprint"))?;
    let entry = IdempotencyEntry {
        key: key.clone(),
        fingerprint,
        received_at: Timestamp::from_millis(get_n(item, "received_at")?),
        status: u16::try_from(get_n(item, "status")?).map_err(|_| corrupt("status"))?,
        response: get_s(item, "response")?.to_owned(),
        expires_at: Timestamp::from_millis(get_n(item, "expires_at_ms")?),
    };
    let complete = item.get("complete").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false);
    Ok((entry, complete))
}

/// Maps an SDK error: throttling, 5xx and network trouble are worth a retry
/// by the client (503); anything else is a bug or misconfiguration (500).
pub(crate) fn classify<E, R>(op: &'static str, err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = err.code().map(str::to_owned);
    let transient = crate::is_transient(&err);
    let message = format!("DynamoDB {op} failed ({})", code.as_deref().unwrap_or("no error code"));
    if transient { StoreError::unavailable(message, err) } else { StoreError::internal(message, err) }
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
