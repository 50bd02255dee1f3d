//! Shared handler state and API-key authentication.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tally_core::lifecycle::RecordReader;
use tally_core::ports::WeekRefresh;
use tally_core::report_link::LinkSigner;
use tally_core::{IngestService, RecordLifecycle, SummarySink, SystemClock};

use crate::problem::ApiError;

/// Who may call the protected routes.
#[derive(Clone)]
pub enum Auth {
    /// No key configured. The binaries allow this only on loopback addresses
    /// (or behind API Gateway, which checks keys itself).
    Open,
    /// Callers must send this key in `x-api-key`. Only its SHA-256 is kept,
    /// so comparison time does not depend on where the bytes differ, nor on
    /// the length of either key.
    Key(Arc<[u8; 32]>),
}

impl Auth {
    pub fn key(key: &str) -> Self {
        Self::Key(Arc::new(Sha256::digest(key.as_bytes()).into()))
    }

    /// True only when a key is configured and `presented` is it: what opens
    /// the report site without a signed link. [`Auth::Open`] never does (on
    /// AWS the router runs open behind API Gateway, which does not check a
    /// key on those routes).
    pub fn verifies(&self, presented: Option<&[u8]>) -> bool {
        matches!(self, Self::Key(_)) && self.allows(presented)
    }

    /// The key whose SHA-256 is `hex` (64 hex digits), for a deployment that
    /// must not hold the key itself (the Lambda function's Firehose key).
    pub fn sha256_hex(hex: &str) -> Option<Self> {
        let bytes: [u8; 32] = hex::decode(hex.trim()).ok()?.try_into().ok()?;
        Some(Self::Key(Arc::new(bytes)))
    }

    /// True when `presented` (the raw `x-api-key` header) is acceptable.
    pub fn allows(&self, presented: Option<&[u8]>) -> bool {
        match self {
            Self::Open => true,
            Self::Key(expected) => {
                let Some(presented) = presented else { return false };
                let digest: [u8; 32] = Sha256::digest(presented).into();
                digest.ct_eq(expected.as_ref()).into()
            }
        }
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key, not even its digest.
        f.write_str(match self {
            Self::Open => "Auth::Open",
            Self::Key(_) => "Auth::Key(..)",
        })
    }
}

/// Who may erase records (`DELETE /records/{id}`).
#[derive(Clone, Debug)]
pub enum Admin {
    /// Callers must send this admin key in `x-api-key`: it must differ from
    /// the API key, which gets 403.
    Key(Auth),
    /// The caller was authorized before the request got here: on AWS, API
    /// Gateway's IAM (SigV4) authorizer on the `DELETE` method.
    Upstream,
}

/// What erasure needs: the store, where to ask for a week's summary to be
/// rewritten, and who may call it.
#[derive(Clone, Debug)]
pub struct Erasure {
    pub(crate) store: Arc<dyn RecordLifecycle>,
    pub(crate) refresh: Arc<dyn WeekRefresh>,
    pub(crate) admin: Admin,
}

impl Erasure {
    pub fn new(store: Arc<dyn RecordLifecycle>, refresh: Arc<dyn WeekRefresh>, admin: Admin) -> Self {
        Self { store, refresh, admin }
    }

    /// 401 without a key, 403 with any key but the admin key.
    pub(crate) fn admit(&self, presented: Option<&[u8]>) -> Result<(), ApiError> {
        match &self.admin {
            Admin::Upstream => Ok(()),
            Admin::Key(key) if key.allows(presented) => Ok(()),
            Admin::Key(_) if presented.is_none() => {
                Err(ApiError::Unauthorized("send the admin key in the x-api-key header to erase records"))
            }
            Admin::Key(_) => Err(ApiError::Forbidden(
                "erasing records needs the admin key (TALLY_ADMIN_KEY), not the API key; send it in x-api-key".into(),
            )),
        }
    }
}

/// Everything handlers need. Cloned for every request (by the handler and
/// each middleware that takes `State`), so it is one `Arc`: a clone is one
/// reference count, not one per field (the field-by-field clone and drop
/// were 3.5 % of `tally serve`'s CPU under load; docs/BENCHMARKS.md, issue 25).
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] shares; handlers read it through `Deref`.
#[derive(Clone, Debug)]
pub struct Shared {
    pub(crate) ingest: IngestService,
    /// Reads records back (by id, by range); its settle window is the store timeout.
    pub(crate) reader: RecordReader,
    /// `None`: erasure is off (`DELETE` is 403 and says how to turn it on).
    pub(crate) erasure: Option<Erasure>,
    pub(crate) sink: Arc<dyn SummarySink>,
    pub(crate) auth: Auth,
    /// Who may deliver with Amazon Data Firehose (`POST /firehose`, key in
    /// `X-Amz-Firehose-Access-Key`); `None`: the route answers 403. The API
    /// key by default.
    pub(crate) firehose_auth: Option<Auth>,
    /// Longest wait for one store call; past it the request gets 503 with
    /// `Retry-After` (the store's fault), not the router's 408 (the client's).
    /// A `POST` whose records are already being committed when it passes
    /// waits for that commit instead, so a 503 never hides stored records.
    pub(crate) store_timeout: Duration,
    /// Slots for requests that upload a body; a request finding none is shed
    /// with 503 before its body is read, so memory stays bounded by
    /// `slots x body limit` however many clients flood the server.
    pub(crate) ingest_slots: Arc<tokio::sync::Semaphore>,
    /// Checks the signed links of the report site (`GET /reports/…`);
    /// `None`: only the API key opens it.
    pub(crate) links: Option<LinkSigner>,
}

impl AppState {
    /// Default for [`with_store_timeout`](Self::with_store_timeout): well
    /// below the default request timeout, well above SQLite's busy timeout.
    pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(10);

    /// Default for [`with_ingest_concurrency`](Self::with_ingest_concurrency).
    pub const DEFAULT_INGEST_CONCURRENCY: usize = 64;

    pub fn new(ingest: IngestService, sink: Arc<dyn SummarySink>, auth: Auth) -> Self {
        let reader = RecordReader::new(ingest.store().clone(), Arc::new(SystemClock), Self::DEFAULT_STORE_TIMEOUT);
        Self(Arc::new(Shared {
            ingest,
            reader,
            erasure: None,
            sink,
            firehose_auth: Some(auth.clone()),
            auth,
            store_timeout: Self::DEFAULT_STORE_TIMEOUT,
            ingest_slots: Arc::new(tokio::sync::Semaphore::new(Self::DEFAULT_INGEST_CONCURRENCY)),
            links: None,
        }))
    }

    /// The shared state, for the builder methods below (a copy only if the
    /// state was already cloned, which the router does after building).
    fn shared_mut(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.0)
    }

    /// Sets how many uploads (`POST`s) may be in progress at once; more are
    /// answered 503 with `Retry-After` at once (load shedding).
    pub fn with_ingest_concurrency(mut self, slots: usize) -> Self {
        self.shared_mut().ingest_slots = Arc::new(tokio::sync::Semaphore::new(slots.max(1)));
        self
    }

    /// Sets the longest wait for one store call (keep it below the request timeout).
    pub fn with_store_timeout(mut self, timeout: Duration) -> Self {
        let shared = self.shared_mut();
        shared.store_timeout = timeout;
        shared.reader = RecordReader::new(shared.ingest.store().clone(), Arc::new(SystemClock), timeout);
        self
    }

    /// Lets signed links open the report site (`GET /reports/…`): `signer`
    /// checks them with the secret that signed them.
    pub fn with_report_links(mut self, signer: LinkSigner) -> Self {
        self.shared_mut().links = Some(signer);
        self
    }

    /// Sets who may deliver with Firehose (`None`: nobody, the route answers
    /// 403). On AWS, where API Gateway checks the API key and the function
    /// never learns it, the Firehose route has a key of its own.
    pub fn with_firehose_auth(mut self, auth: Option<Auth>) -> Self {
        self.shared_mut().firehose_auth = auth;
        self
    }

    /// Turns erasure (`DELETE /records/{id}`) on.
    pub fn with_erasure(mut self, erasure: Erasure) -> Self {
        self.shared_mut().erasure = Some(erasure);
        self
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_check() {
        let auth = Auth::key("s3cret");
        assert!(auth.allows(Some(b"s3cret")));
        assert!(!auth.allows(Some(b"s3cret ")));
        assert!(!auth.allows(Some(b"")));
        assert!(!auth.allows(None));
        assert!(Auth::Open.allows(None));
        assert!(!format!("{auth:?}").contains("s3cret"));
        // sha256("s3cret"), as `printf %s s3cret | sha256sum` prints it.
        let by_hash = Auth::sha256_hex("1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0").unwrap();
        assert_eq!(by_hash.allows(Some(b"s3cret")), auth.allows(Some(b"s3cret")));
        assert!(Auth::sha256_hex("abc").is_none());
    }
}
