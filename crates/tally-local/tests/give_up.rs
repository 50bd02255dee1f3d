//! The SQLite writer and callers that stop waiting, with every interleaving
//! forced through the writer's fault point between claiming a group and
//! committing it (`SqliteOptions::after_claim`): a write withdrawn while
//! queued is never stored, and a caller that gives up once its write is
//! being committed gets the commit's answer — never an error for stored
//! records.

use std::sync::{Arc, Mutex, mpsc};

use futures::FutureExt;
use tally_core::ports::{GiveUp, InsertOutcome, RecordLifecycle, RecordStore, StoreError};
use tally_core::{Record, RecordId, Timestamp};
use tally_local::{CommitHook, SqliteOptions, SqliteRecordStore};
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

/// A store whose writer stops after claiming its first group, says so on
/// `claimed`, and commits it only once `release` is sent (or dropped).
/// Later groups pass straight through.
struct HeldStore {
    store: Arc<SqliteRecordStore>,
    claimed: tokio_mpsc::UnboundedReceiver<usize>,
    release: mpsc::Sender<()>,
    _dir: tempfile::TempDir,
}

fn held_store() -> HeldStore {
    let dir = tempfile::tempdir().unwrap();
    let (claimed_tx, claimed) = tokio_mpsc::unbounded_channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(Some(release_rx));
    let hook = CommitHook(Arc::new(move |size| {
        // Only the first group is held.
        if let Some(rx) = release_rx.lock().unwrap().take() {
            let _ = claimed_tx.send(size);
            let _ = rx.recv();
        }
    }));
    let options = SqliteOptions { after_claim: Some(hook), ..SqliteOptions::default() };
    let store = Arc::new(SqliteRecordStore::open(dir.path().join("tally.db"), options).unwrap());
    HeldStore { store, claimed, release, _dir: dir }
}

fn record(data: &str) -> Record {
    let at = Timestamp::now();
    Record { id: RecordId::generate(at), received_at: at, data: data.to_owned() }
}

/// A give-up signal the test fires, and a way to learn that the store has
/// seen it (its future completed inside the store's call).
fn give_up() -> (oneshot::Sender<()>, GiveUp<'static>, oneshot::Receiver<()>) {
    let (fire, fired) = oneshot::channel::<()>();
    let (seen_tx, seen) = oneshot::channel();
    let give_up: GiveUp<'static> = Box::pin(async move {
        let _ = fired.await;
        let _ = seen_tx.send(());
    });
    (fire, give_up, seen)
}

/// Waits until the writer has dealt with every write queued so far: its
/// queue is first in, first out, so once an empty restore queued now is
/// answered, every earlier insert was committed or dropped.
async fn writer_drained(store: &SqliteRecordStore) {
    store.restore(&[]).await.unwrap();
}

#[tokio::test]
async fn a_caller_that_gives_up_while_its_write_is_committing_gets_the_commits_answer() {
    let mut held = held_store();
    let r = record(r#"{"late":1}"#);
    // GIVEN an insert the writer has claimed for a commit (held at the fault point)
    let (fire, give_up, seen) = give_up();
    let insert = tokio::spawn({
        let (store, r) = (held.store.clone(), r.clone());
        async move { store.insert_until(std::slice::from_ref(&r), None, give_up).await }
    });
    assert_eq!(held.claimed.recv().await, Some(1));
    // WHEN its caller's time limit passes (and the store has seen it) before the commit
    fire.send(()).unwrap();
    seen.await.unwrap();
    held.release.send(()).unwrap();
    // THEN the caller gets the commit's answer, and the records are stored
    assert_eq!(insert.await.unwrap().unwrap(), InsertOutcome::Inserted);
    assert_eq!(held.store.get(r.id).await.unwrap(), Some(r));
}

#[tokio::test]
async fn a_caller_that_gives_up_while_its_write_is_queued_withdraws_it_for_good() {
    let mut held = held_store();
    // GIVEN the writer held on another request's commit
    let first = record(r#"{"first":1}"#);
    let blocker = tokio::spawn({
        let (store, first) = (held.store.clone(), first.clone());
        async move { store.insert(std::slice::from_ref(&first), None).await }
    });
    assert_eq!(held.claimed.recv().await, Some(1));
    // AND a write queued behind it
    let queued = record(r#"{"queued":1}"#);
    let (fire, give_up, seen) = give_up();
    let insert = tokio::spawn({
        let (store, queued) = (held.store.clone(), queued.clone());
        async move { store.insert_until(std::slice::from_ref(&queued), None, give_up).await }
    });
    // WHEN its caller's time limit passes
    fire.send(()).unwrap();
    seen.await.unwrap();
    // THEN the caller is told at once that nothing was stored
    let err = insert.await.unwrap().unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    // AND once the writer moves on, the withdrawn write is never stored
    held.release.send(()).unwrap();
    assert_eq!(blocker.await.unwrap().unwrap(), InsertOutcome::Inserted);
    writer_drained(&held.store).await;
    assert_eq!(held.store.get(queued.id).await.unwrap(), None);
    assert_eq!(held.store.count().await.unwrap(), 1);
}

#[tokio::test]
async fn a_write_whose_caller_left_while_it_was_queued_is_not_stored() {
    let mut held = held_store();
    // GIVEN the writer held on another request's commit
    let first = record(r#"{"first":1}"#);
    let blocker = tokio::spawn({
        let (store, first) = (held.store.clone(), first.clone());
        async move { store.insert(std::slice::from_ref(&first), None).await }
    });
    assert_eq!(held.claimed.recv().await, Some(1));
    // WHEN a plain insert is queued behind it and its caller goes away (one poll queues it)
    let abandoned = record("{}");
    assert!(held.store.insert(std::slice::from_ref(&abandoned), None).now_or_never().is_none());
    held.release.send(()).unwrap();
    assert_eq!(blocker.await.unwrap().unwrap(), InsertOutcome::Inserted);
    // THEN it is not stored behind its caller's back
    writer_drained(&held.store).await;
    assert_eq!(held.store.get(abandoned.id).await.unwrap(), None);
    assert_eq!(held.store.count().await.unwrap(), 1);
}
