//! Decorators for fault injection. [`HookedScans`]: every call of both
//! store ports goes through to the wrapped store, except that the pages of
//! each scan pass through a [`ScanHook`] first. [`HookedSink`]: every call
//! goes through to the wrapped sink, with a [`SinkHook`] run around a week's
//! `begin_week` and `commit_week`, and before every read. Tests that pause a run or make it panic
//! write only the hook, not the forwarding methods (which several tests used
//! to write out each time, and could get subtly wrong: `insert_until` must
//! be forwarded too, see [`RecordStore::insert_until`]).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::RecordId;
use crate::clock::Timestamp;
use crate::idempotency::{IdempotencyEntry, IdempotencyKey};
use crate::ports::{
    GiveUp, InsertOutcome, ObjectInfo, ObjectUpload, RecordLifecycle, RecordPages, RecordStore, RestoreOutcome,
    SinkError, StoreError, SummarySink,
};
use crate::record::Record;
use crate::week::IsoWeek;

/// What a [`HookedScans`] store does to its scans.
pub trait ScanHook: Send + Sync + std::fmt::Debug {
    /// The pages a scan of ids `from..to` answers. `inner` is the wrapped
    /// store: the hook calls its `scan_range(from, to, page_size)` when it
    /// wants that store's pages (and may act on the store before), wraps
    /// them, or answers something else.
    fn scan<'a>(
        &'a self,
        inner: &'a dyn RecordStore,
        from: RecordId,
        to: RecordId,
        page_size: usize,
    ) -> RecordPages<'a>;
}

/// `inner` with its scans passed through `hook`.
#[derive(Debug)]
pub struct HookedScans<H> {
    inner: Arc<dyn RecordLifecycle>,
    hook: H,
}

impl<H: ScanHook> HookedScans<H> {
    pub fn new(inner: Arc<dyn RecordLifecycle>, hook: H) -> Self {
        Self { inner, hook }
    }

    /// The hook, to arm or inspect it while the store is in use.
    pub fn hook(&self) -> &H {
        &self.hook
    }
}

#[async_trait]
impl<H: ScanHook> RecordStore for HookedScans<H> {
    async fn insert(&self, r: &[Record], i: Option<&IdempotencyEntry>) -> Result<InsertOutcome, StoreError> {
        self.inner.insert(r, i).await
    }
    async fn insert_until(
        &self,
        r: &[Record],
        i: Option<&IdempotencyEntry>,
        give_up: GiveUp<'_>,
    ) -> Result<InsertOutcome, StoreError> {
        self.inner.insert_until(r, i, give_up).await
    }
    async fn idempotency_entry(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyEntry>, StoreError> {
        self.inner.idempotency_entry(key).await
    }
    async fn get(&self, id: RecordId) -> Result<Option<Record>, StoreError> {
        self.inner.get(id).await
    }
    fn scan_range(&self, from: RecordId, to: RecordId, page_size: usize) -> RecordPages<'_> {
        self.hook.scan(self.inner.as_ref(), from, to, page_size)
    }
    async fn weeks(&self) -> Result<Vec<IsoWeek>, StoreError> {
        self.inner.weeks().await
    }
}

#[async_trait]
impl<H: ScanHook> RecordLifecycle for HookedScans<H> {
    async fn restore(&self, records: &[Record]) -> Result<RestoreOutcome, StoreError> {
        self.inner.restore(records).await
    }
    async fn delete(&self, id: RecordId) -> Result<bool, StoreError> {
        self.inner.delete(id).await
    }
    async fn delete_week(&self, week: IsoWeek) -> Result<u64, StoreError> {
        self.inner.delete_week(week).await
    }
    async fn clear_abandoned(&self, week: IsoWeek, now: Timestamp) -> Result<u64, StoreError> {
        self.inner.clear_abandoned(week, now).await
    }
}

/// What a [`HookedSink`] does around a week's writes. Every method does
/// nothing unless overridden.
#[async_trait]
pub trait SinkHook: Send + Sync + std::fmt::Debug {
    /// Before the wrapped sink's `begin_week` of `week` (a run starting).
    async fn before_begin(&self, _week: IsoWeek) {}
    /// Before the wrapped sink's `commit_week` of `week` (a run's manifest).
    async fn before_commit(&self, _week: IsoWeek) {}
    /// After the wrapped sink committed `week`.
    fn committed(&self, _week: IsoWeek) {}
    /// Before every read of the wrapped sink (`read_object`, `list_weeks`,
    /// `read_index`).
    fn before_read(&self) {}
}

/// `inner` with `hook` run around its `begin_week` and `commit_week`, and
/// before its reads.
#[derive(Debug)]
pub struct HookedSink<H> {
    inner: Arc<dyn SummarySink>,
    hook: H,
}

impl<H: SinkHook> HookedSink<H> {
    pub fn new(inner: Arc<dyn SummarySink>, hook: H) -> Self {
        Self { inner, hook }
    }

    /// The hook, to arm or inspect it while the sink is in use.
    pub fn hook(&self) -> &H {
        &self.hook
    }
}

#[async_trait]
impl<H: SinkHook> SummarySink for HookedSink<H> {
    async fn begin_week(&self, week: IsoWeek) -> Result<(), SinkError> {
        self.hook.before_begin(week).await;
        self.inner.begin_week(week).await
    }
    async fn put_object(&self, w: IsoWeek, n: &str, ct: &str, b: Bytes) -> Result<ObjectInfo, SinkError> {
        self.inner.put_object(w, n, ct, b).await
    }
    async fn open_object(&self, w: IsoWeek, n: &str, ct: &str) -> Result<Box<dyn ObjectUpload>, SinkError> {
        self.inner.open_object(w, n, ct).await
    }
    async fn commit_week(&self, week: IsoWeek, manifest: Bytes) -> Result<ObjectInfo, SinkError> {
        self.hook.before_commit(week).await;
        let info = self.inner.commit_week(week, manifest).await?;
        self.hook.committed(week);
        Ok(info)
    }
    async fn read_object(&self, week: IsoWeek, name: &str) -> Result<Option<Bytes>, SinkError> {
        self.hook.before_read();
        self.inner.read_object(week, name).await
    }
    async fn delete_object(&self, week: IsoWeek, name: &str) -> Result<(), SinkError> {
        self.inner.delete_object(week, name).await
    }
    async fn list_weeks(&self) -> Result<Vec<IsoWeek>, SinkError> {
        self.hook.before_read();
        self.inner.list_weeks().await
    }
    async fn put_index(&self, name: &str, ct: &str, body: Bytes) -> Result<ObjectInfo, SinkError> {
        self.inner.put_index(name, ct, body).await
    }
    async fn read_index(&self, name: &str) -> Result<Option<Bytes>, SinkError> {
        self.hook.before_read();
        self.inner.read_index(name).await
    }
}
