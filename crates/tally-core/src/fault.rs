//! Fault injection for tests (feature `fault-injection`, never in release
//! builds): decorators that wrap any [`RecordStore`] or [`SummarySink`] and
//! fail, or hang, chosen operations according to a shared [`FaultPlan`].
//!
//! ```ignore
//! let plan = FaultPlan::new();
//! let store = FaultyStore::new(real_store, plan.clone());
//! plan.fail(Op::Insert, Fault::Unavailable);            // every insert: 503
//! plan.fail_nth(Op::SinkPut("summary.html"), 1, Fault::Internal); // 2nd put only
//! plan.clear();
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::Either;

use crate::id::RecordId;
use crate::idempotency::{IdempotencyEntry, IdempotencyKey};
use crate::ports::{
    GiveUp, InsertOutcome, ObjectInfo, ObjectUpload, RecordPages, RecordStore, SinkError, StoreError, SummarySink,
};
use crate::record::Record;
use crate::week::IsoWeek;

/// An operation a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Insert,
    IdempotencyLookup,
    Get,
    /// One page of [`RecordStore::scan_range`] (the count is per page).
    ScanPage,
    Weeks,
    SinkBegin,
    /// [`SummarySink::put_object`] of the named object.
    SinkPut(&'static str),
    SinkOpen,
    /// One chunk written to a streamed upload.
    UploadWrite,
    UploadFinish,
    SinkCommit,
    SinkRead,
    SinkDelete,
    SinkList,
}

/// What happens to a targeted call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A transient error (`StoreError::Unavailable` / `SinkError::Unavailable`).
    Unavailable,
    /// A permanent error (`Internal`).
    Internal,
    /// The call hangs this long, then proceeds normally (a slow disk or network).
    Delay(Duration),
}

#[derive(Debug, Clone, Copy)]
struct Rule {
    fault: Fault,
    /// Calls to let through before the fault applies.
    skip: u64,
    /// How many calls it applies to (`None`: all).
    times: Option<u64>,
}

#[derive(Debug, Default)]
struct PlanInner {
    rules: HashMap<Op, Rule>,
    calls: HashMap<Op, u64>,
    injected: u64,
    /// Calls in progress through a decorator (fault applied or not,
    /// forwarded call included).
    in_flight: u64,
    /// Times a caller's time limit passed during a call ([`RecordStore::insert_until`]).
    gave_up: u64,
}

/// The faults to inject, shared by decorators and changed while they run.
///
/// Tests wait on what the plan sees instead of sleeping:
/// [`injected_at_least`](Self::injected_at_least) ("the insert has started
/// hanging") and [`settled`](Self::settled) ("no decorated call is still
/// running, not even a delayed one").
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    inner: Arc<Mutex<PlanInner>>,
    changed: Arc<tokio::sync::Notify>,
}

/// One call in progress through a decorator; counted until dropped, which
/// is when the call returns or its caller stops waiting for it.
struct InFlight(FaultPlan);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
        self.0.changed.notify_waiters();
    }
}

impl FaultPlan {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PlanInner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until `done` holds for the plan's state.
    async fn until(&self, done: impl Fn(&PlanInner) -> bool) {
        loop {
            let mut changed = std::pin::pin!(self.changed.notified());
            // Registered before the check, so no change can slip in between.
            changed.as_mut().enable();
            if done(&self.lock()) {
                return;
            }
            changed.await;
        }
    }

    /// Waits until at least `n` faults were injected in all (for a
    /// [`Fault::Delay`]: until the `n`-th targeted call has started hanging).
    pub async fn injected_at_least(&self, n: u64) {
        self.until(|p| p.injected >= n).await;
    }

    /// Waits until no call is in progress through a decorator on this plan:
    /// every delay has ended or been dropped with its caller, and every
    /// forwarded call has returned. (What an adapter does after its caller
    /// left — a queued write — is the adapter's to wait for.)
    pub async fn settled(&self) {
        self.until(|p| p.in_flight == 0).await;
    }

    /// Waits until callers gave up `n` times in all during calls through the
    /// decorators: their time limit passed while the fault (a delay) ran, or
    /// while the adapter they forward to still had the call
    /// ([`RecordStore::insert_until`]).
    pub async fn gave_up_at_least(&self, n: u64) {
        self.until(|p| p.gave_up >= n).await;
    }

    fn note_gave_up(&self) {
        self.lock().gave_up += 1;
        self.changed.notify_waiters();
    }

    fn enter(&self) -> InFlight {
        self.lock().in_flight += 1;
        InFlight(self.clone())
    }

    /// Every call of `op` from now on.
    pub fn fail(&self, op: Op, fault: Fault) {
        self.lock().rules.insert(op, Rule { fault, skip: 0, times: None });
    }

    /// Only the `n`-th call of `op` counted from now (0-based).
    pub fn fail_nth(&self, op: Op, n: u64, fault: Fault) {
        let mut inner = self.lock();
        let done = inner.calls.get(&op).copied().unwrap_or(0);
        inner.rules.insert(op, Rule { fault, skip: done + n, times: Some(1) });
    }

    /// Removes every rule (calls already hanging finish their delay).
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    /// Counts a call of `op` and returns the fault to apply, if any.
    fn on_call(&self, op: Op) -> Option<Fault> {
        let mut inner = self.lock();
        let n = {
            let c = inner.calls.entry(op).or_insert(0);
            *c += 1;
            *c - 1
        };
        let rule = *inner.rules.get(&op)?;
        let applies = n >= rule.skip && rule.times.is_none_or(|t| n < rule.skip + t);
        if applies {
            inner.injected += 1;
            drop(inner);
            self.changed.notify_waiters();
        }
        applies.then_some(rule.fault)
    }

    /// Applies `op`'s fault, if any; the returned guard counts the call as
    /// in progress until the decorator's whole call is over.
    async fn store(&self, op: Op) -> Result<InFlight, StoreError> {
        let call = self.enter();
        match self.on_call(op) {
            None => Ok(call),
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                Ok(call)
            }
            Some(Fault::Unavailable) => Err(StoreError::Unavailable {
                message: format!("injected fault in {op:?}"),
                retry_after: Duration::from_secs(2),
                source: None,
            }),
            Some(Fault::Internal) => {
                Err(StoreError::Internal { message: format!("injected fault in {op:?}"), source: None })
            }
        }
    }

    /// [`store`](Self::store) for sink calls.
    async fn sink(&self, op: Op) -> Result<InFlight, SinkError> {
        let call = self.enter();
        match self.on_call(op) {
            None => Ok(call),
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                Ok(call)
            }
            Some(Fault::Unavailable) => {
                Err(SinkError::Unavailable { message: format!("injected fault in {op:?}"), source: None })
            }
            Some(Fault::Internal) => {
                Err(SinkError::Internal { message: format!("injected fault in {op:?}"), source: None })
            }
        }
    }
}

/// A [`RecordStore`] that consults a [`FaultPlan`] before each call.
#[derive(Debug, Clone)]
pub struct FaultyStore {
    inner: Arc<dyn RecordStore>,
    plan: FaultPlan,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn RecordStore>, plan: FaultPlan) -> Self {
        Self { inner, plan }
    }
}

#[async_trait]
impl RecordStore for FaultyStore {
    async fn insert(
        &self,
        records: &[Record],
        idempotency: Option<&IdempotencyEntry>,
    ) -> Result<InsertOutcome, StoreError> {
        let _call = self.plan.store(Op::Insert).await?;
        self.inner.insert(records, idempotency).await
    }

    /// The fault (a delay included) comes before the write, so giving up
    /// during it withdraws the write; after it, giving up is the inner
    /// adapter's to handle. Either way the plan counts it.
    async fn insert_until(
        &self,
        records: &[Record],
        idempotency: Option<&IdempotencyEntry>,
        mut give_up: GiveUp<'_>,
    ) -> Result<InsertOutcome, StoreError> {
        let fault = std::pin::pin!(self.plan.store(Op::Insert));
        let _call = match futures::future::select(fault, &mut give_up).await {
            Either::Left((call, _)) => call?,
            Either::Right(((), _)) => {
                self.plan.note_gave_up();
                return Err(StoreError::gave_up());
            }
        };
        let plan = self.plan.clone();
        let observed: GiveUp<'_> = Box::pin(async move {
            give_up.await;
            plan.note_gave_up();
        });
        self.inner.insert_until(records, idempotency, observed).await
    }

    async fn idempotency_entry(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyEntry>, StoreError> {
        let _call = self.plan.store(Op::IdempotencyLookup).await?;
        self.inner.idempotency_entry(key).await
    }

    async fn get(&self, id: RecordId) -> Result<Option<Record>, StoreError> {
        let _call = self.plan.store(Op::Get).await?;
        self.inner.get(id).await
    }

    fn scan_range(&self, from: RecordId, to: RecordId, page_size: usize) -> RecordPages<'_> {
        let plan = self.plan.clone();
        self.inner
            .scan_range(from, to, page_size)
            .then(move |page| {
                let plan = plan.clone();
                async move {
                    let _call = plan.store(Op::ScanPage).await?;
                    page
                }
            })
            .boxed()
    }

    async fn weeks(&self) -> Result<Vec<IsoWeek>, StoreError> {
        let _call = self.plan.store(Op::Weeks).await?;
        self.inner.weeks().await
    }
}

/// A [`SummarySink`] that consults a [`FaultPlan`] before each call,
/// including each chunk of a streamed upload.
#[derive(Debug, Clone)]
pub struct FaultySink {
    inner: Arc<dyn SummarySink>,
    plan: FaultPlan,
}

impl FaultySink {
    pub fn new(inner: Arc<dyn SummarySink>, plan: FaultPlan) -> Self {
        Self { inner, plan }
    }
}

fn put_op(name: &str) -> Op {
    // Only the summary service's object names are targeted by name.
    match name {
        "summary.json" => Op::SinkPut("summary.json"),
        "summary.html" => Op::SinkPut("summary.html"),
        "records.ndjson.gz" => Op::SinkPut("records.ndjson.gz"),
        _ => Op::SinkPut("other"),
    }
}

#[async_trait]
impl SummarySink for FaultySink {
    async fn begin_week(&self, week: IsoWeek) -> Result<(), SinkError> {
        let _call = self.plan.sink(Op::SinkBegin).await?;
        self.inner.begin_week(week).await
    }

    async fn put_object(
        &self,
        week: IsoWeek,
        name: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<ObjectInfo, SinkError> {
        let _call = self.plan.sink(put_op(name)).await?;
        self.inner.put_object(week, name, content_type, body).await
    }

    async fn open_object(
        &self,
        week: IsoWeek,
        name: &str,
        content_type: &str,
    ) -> Result<Box<dyn ObjectUpload>, SinkError> {
        let _call = self.plan.sink(Op::SinkOpen).await?;
        let inner = self.inner.open_object(week, name, content_type).await?;
        Ok(Box::new(FaultyUpload { inner, plan: self.plan.clone() }))
    }

    async fn commit_week(&self, week: IsoWeek, manifest: Bytes) -> Result<ObjectInfo, SinkError> {
        let _call = self.plan.sink(Op::SinkCommit).await?;
        self.inner.commit_week(week, manifest).await
    }

    async fn read_object(&self, week: IsoWeek, name: &str) -> Result<Option<Bytes>, SinkError> {
        let _call = self.plan.sink(Op::SinkRead).await?;
        self.inner.read_object(week, name).await
    }

    async fn delete_object(&self, week: IsoWeek, name: &str) -> Result<(), SinkError> {
        let _call = self.plan.sink(Op::SinkDelete).await?;
        self.inner.delete_object(week, name).await
    }

    async fn list_weeks(&self) -> Result<Vec<IsoWeek>, SinkError> {
        let _call = self.plan.sink(Op::SinkList).await?;
        self.inner.list_weeks().await
    }

    async fn put_index(&self, name: &str, content_type: &str, body: Bytes) -> Result<ObjectInfo, SinkError> {
        let _call = self.plan.sink(put_op(name)).await?;
        self.inner.put_index(name, content_type, body).await
    }

    async fn read_index(&self, name: &str) -> Result<Option<Bytes>, SinkError> {
        self.inner.read_index(name).await
    }
}

struct FaultyUpload {
    inner: Box<dyn ObjectUpload>,
    plan: FaultPlan,
}

#[async_trait]
impl ObjectUpload for FaultyUpload {
    async fn write(&mut self, chunk: Bytes) -> Result<(), SinkError> {
        let _call = self.plan.sink(Op::UploadWrite).await?;
        self.inner.write(chunk).await
    }

    async fn finish(self: Box<Self>) -> Result<ObjectInfo, SinkError> {
        let _call = self.plan.sink(Op::UploadFinish).await?;
        self.inner.finish().await
    }

    async fn abort(self: Box<Self>) -> Result<(), SinkError> {
        // Aborting must always be possible: that is how failures clean up.
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_count_calls() {
        let plan = FaultPlan::new();
        assert_eq!(plan.on_call(Op::Insert), None);
        plan.fail_nth(Op::Insert, 1, Fault::Internal);
        assert_eq!(plan.on_call(Op::Insert), None);
        assert_eq!(plan.on_call(Op::Insert), Some(Fault::Internal));
        assert_eq!(plan.on_call(Op::Insert), None);
        plan.fail(Op::Get, Fault::Unavailable);
        assert_eq!(plan.on_call(Op::Get), Some(Fault::Unavailable));
        assert_eq!(plan.on_call(Op::Get), Some(Fault::Unavailable));
        assert_eq!(plan.injected(), 3);
        plan.clear();
        assert_eq!(plan.on_call(Op::Get), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_test_can_wait_for_a_delayed_call_to_start_and_to_be_over() {
        let plan = FaultPlan::new();
        let store = Arc::new(FaultyStore::new(Arc::new(crate::testing::MemoryRecordStore::default()), plan.clone()));
        plan.fail(Op::Weeks, Fault::Delay(Duration::from_secs(60)));
        // GIVEN a call hanging in its delay
        let finishing = tokio::spawn({
            let store = store.clone();
            async move { store.weeks().await }
        });
        plan.injected_at_least(1).await;
        // THEN the plan is not settled while it hangs
        let early = tokio::time::timeout(Duration::from_secs(1), plan.settled()).await;
        assert!(early.is_err(), "settled while a call was still hanging");
        // AND it is once the call returned
        assert!(finishing.await.unwrap().is_ok());
        plan.settled().await;
        // AND once a hanging call's caller stopped waiting for it
        let abandoned = tokio::spawn(async move { store.weeks().await });
        plan.injected_at_least(2).await;
        abandoned.abort();
        plan.settled().await;
        assert_eq!(plan.injected(), 2);
    }
}
