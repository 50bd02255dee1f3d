//! The ingest service: request body in, durable records (or a clear refusal) out.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock::{Clock, Timestamp};
use crate::id::RecordId;
use crate::idempotency::{Fingerprint, IdempotencyEntry, IdempotencyKey, RETENTION_MS, id_seed};
use crate::ports::{GiveUp, InsertOutcome, RecordStore, StoreError};
use crate::record::Record;
use crate::validate::{BodyFormat, Limits, Parsed, ValidationError, parse_body};

/// The body of a `201 Created` answer to `POST /records`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IngestResponse {
    /// One object was sent.
    Single { id: RecordId, received_at: Timestamp },
    /// An array or NDJSON was sent; ids are in input order.
    Batch { count: usize, ids: Vec<RecordId> },
}

impl IngestResponse {
    /// The id to put in `Location`, for single-record requests.
    pub fn location_id(&self) -> Option<RecordId> {
        match self {
            Self::Single { id, .. } => Some(*id),
            Self::Batch { .. } => None,
        }
    }
}

/// A successful ingest: the response to send, and whether it is a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestReceipt {
    pub status: u16,
    pub response: IngestResponse,
    /// `response` as sent the first time, byte for byte.
    pub body: String,
    /// True when an idempotent retry was answered from the stored response.
    pub replayed: bool,
}

/// Why an ingest did not store anything.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("this Idempotency-Key was already used with a different request body; use a new key for a new request")]
    IdempotencyConflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Validates bodies and stores their records through a [`RecordStore`].
#[derive(Debug, Clone)]
pub struct IngestService {
    store: Arc<dyn RecordStore>,
    clock: Arc<dyn Clock>,
    limits: Limits,
}

impl IngestService {
    pub fn new(store: Arc<dyn RecordStore>, clock: Arc<dyn Clock>, limits: Limits) -> Self {
        Self { store, clock, limits }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn store(&self) -> &Arc<dyn RecordStore> {
        &self.store
    }

    /// The clock that stamps `received_at` (and dates erasures).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Validates `body` and stores its records all-or-nothing. Returns only
    /// once they are durable.
    pub async fn ingest(
        &self,
        body: &[u8],
        format: BodyFormat,
        key: Option<IdempotencyKey>,
    ) -> Result<IngestReceipt, IngestError> {
        self.ingest_until(body, format, key, Box::pin(std::future::pending())).await
    }

    /// [`ingest`](Self::ingest) for a caller with a time limit, which
    /// `give_up` completes. A [`IngestError::Store`] error then always means
    /// that nothing of the request is stored, ever: giving up withdraws the
    /// write if it has not started committing, and otherwise waits for the
    /// commit's real answer ([`RecordStore::insert_until`]). So the HTTP
    /// layer's 503 for a store that is too slow never hides stored records.
    pub async fn ingest_until(
        &self,
        body: &[u8],
        format: BodyFormat,
        key: Option<IdempotencyKey>,
        give_up: GiveUp<'_>,
    ) -> Result<IngestReceipt, IngestError> {
        self.ingest_with(body, format, key, &self.limits, give_up).await
    }

    /// [`ingest_until`](Self::ingest_until) under other limits (a Firehose
    /// delivery's, [`crate::firehose::delivery_limits`]).
    pub(crate) async fn ingest_with(
        &self,
        body: &[u8],
        format: BodyFormat,
        key: Option<IdempotencyKey>,
        limits: &Limits,
        mut give_up: GiveUp<'_>,
    ) -> Result<IngestReceipt, IngestError> {
        // Only an idempotent request needs the body's SHA-256 (a whole pass
        // over up to 1 MiB); without a key, nothing reads it.
        let fingerprint = key.as_ref().map(|_| Fingerprint::of(format.tag(), body));
        let request_body = body;
        if let (Some(key), Some(fingerprint)) = (&key, fingerprint) {
            // A read: dropping it when the caller gives up leaves nothing behind.
            let lookup = match futures::future::select(self.store.idempotency_entry(key), &mut give_up).await {
                futures::future::Either::Left((lookup, _)) => lookup?,
                futures::future::Either::Right(((), _)) => return Err(StoreError::gave_up().into()),
            };
            if let Some(entry) = lookup {
                return replay(entry, fingerprint);
            }
        }

        let parsed = parse_body(body, format, limits)?;
        let received_at = self.clock.now();
        let seed = key.as_ref().zip(fingerprint.as_ref()).map(|(k, f)| id_seed(k, f));
        let base = rand::random::<u128>();
        let records: Vec<Record> = parsed
            .records()
            .iter()
            .enumerate()
            .map(|(i, data)| Record {
                id: match &seed {
                    Some(seed) => RecordId::deterministic(received_at, seed, i),
                    None => RecordId::sequence(received_at, base, i),
                },
                received_at,
                data: (*data).to_owned(),
            })
            .collect();
        let response = match parsed {
            Parsed::Single(_) => IngestResponse::Single { id: records[0].id, received_at },
            Parsed::Batch(_) => {
                IngestResponse::Batch { count: records.len(), ids: records.iter().map(|r| r.id).collect() }
            }
        };
        let body = serde_json::to_string(&response).unwrap_or_default();
        let entry = key.zip(fingerprint).map(|(key, fingerprint)| IdempotencyEntry {
            key,
            fingerprint,
            received_at,
            status: 201,
            response: body.clone(),
            expires_at: Timestamp::from_millis(received_at.as_millis() + RETENTION_MS),
        });
        match self.store.insert_until(&records, entry.as_ref(), give_up).await? {
            InsertOutcome::Inserted => Ok(IngestReceipt { status: 201, response, body, replayed: false }),
            InsertOutcome::KeyExists(existing) => {
                replay(existing, fingerprint.unwrap_or_else(|| Fingerprint::of(format.tag(), request_body)))
            }
        }
    }
}

fn replay(entry: IdempotencyEntry, fingerprint: Fingerprint) -> Result<IngestReceipt, IngestError> {
    if entry.fingerprint != fingerprint {
        return Err(IngestError::IdempotencyConflict);
    }
    let response = serde_json::from_str(&entry.response)
        .map_err(|e| StoreError::internal("a stored idempotent response is not valid JSON", e))?;
    Ok(IngestReceipt { status: entry.status, response, body: entry.response, replayed: true })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FixedClock, MemoryRecordStore};

    fn service() -> (IngestService, Arc<MemoryRecordStore>) {
        let store = Arc::new(MemoryRecordStore::default());
        let clock = Arc::new(FixedClock::at(Timestamp::from_millis(1_795_939_200_000)));
        (IngestService::new(store.clone(), clock, Limits::default()), store)
    }

    fn key(k: &str) -> Option<IdempotencyKey> {
        Some(IdempotencyKey::parse(k.as_bytes()).unwrap())
    }

    #[tokio::test]
    async fn single_object_gets_an_id_and_timestamp() {
        let (svc, store) = service();
        let r = svc.ingest(br#"{"n":1}"#, BodyFormat::Json, None).await.unwrap();
        let IngestResponse::Single { id, received_at } = r.response else { panic!("{r:?}") };
        assert_eq!(received_at.to_rfc3339(), "2026-11-29T08:00:00.000Z");
        assert_eq!(id.timestamp(), received_at);
        assert_eq!(store.get(id).await.unwrap().unwrap().data, r#"{"n":1}"#);
        assert_eq!(r.body, format!(r#"{{"id":"{id}","received_at":"2026-11-29T08:00:00.000Z"}}"#));
    }

    #[tokio::test]
    async fn batch_ids_follow_input_order() {
        let (svc, store) = service();
        let r = svc.ingest(b"{\"i\":0}\n{\"i\":1}\n{\"i\":2}", BodyFormat::NdJson, None).await.unwrap();
        let IngestResponse::Batch { count, ids } = r.response else { panic!() };
        assert_eq!(count, 3);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(store.get(*id).await.unwrap().unwrap().data, format!("{{\"i\":{i}}}"));
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "a batch's ids sort in input order");
    }

    #[tokio::test]
    async fn invalid_batches_store_nothing() {
        let (svc, store) = service();
        let err = svc.ingest(br#"[{"a":1},2]"#, BodyFormat::Json, None).await.unwrap_err();
        assert!(matches!(err, IngestError::Invalid(_)));
        assert_eq!(store.len(), 0);
    }

    #[tokio::test]
    async fn idempotent_retry_replays_and_conflicts() {
        let (svc, store) = service();
        let first = svc.ingest(br#"[{"a":1},{"a":2}]"#, BodyFormat::Json, key("k1")).await.unwrap();
        let again = svc.ingest(br#"[{"a":1},{"a":2}]"#, BodyFormat::Json, key("k1")).await.unwrap();
        assert!(!first.replayed && again.replayed);
        assert_eq!(first.body, again.body);
        assert_eq!(store.len(), 2);
        let err = svc.ingest(br#"[{"a":1}]"#, BodyFormat::Json, key("k1")).await.unwrap_err();
        assert!(matches!(err, IngestError::IdempotencyConflict));
        // Same bytes but another framing is another request.
        let err = svc.ingest(br#"[{"a":1},{"a":2}]"#, BodyFormat::NdJson, key("k1")).await.unwrap_err();
        assert!(matches!(err, IngestError::IdempotencyConflict));
        assert_eq!(store.len(), 2);
    }

    #[tokio::test]
    async fn an_entry_knows_the_ids_its_request_was_given() {
        let (svc, store) = service();
        let r = svc.ingest(br#"[{"a":1},{"a":2}]"#, BodyFormat::Json, key("k2")).await.unwrap();
        let IngestResponse::Batch { ids, .. } = r.response else { panic!() };
        let entry = store.idempotency_entry(&key("k2").unwrap()).await.unwrap().unwrap();
        assert_eq!(ids, vec![entry.record_id(0), entry.record_id(1)]);
    }

    #[tokio::test]
    async fn racing_retries_are_settled_by_the_store() {
        let (svc, store) = service();
        // Simulate a race: the key is claimed between our lookup and our insert.
        let a = svc.ingest(br#"{"a":1}"#, BodyFormat::Json, key("k")).await.unwrap();
        store.forget_lookups(true);
        let b = svc.ingest(br#"{"a":1}"#, BodyFormat::Json, key("k")).await.unwrap();
        assert!(b.replayed);
        assert_eq!(a.response, b.response);
        assert_eq!(store.len(), 1);
    }
}
