//! The weekly run's guarantees over the memory adapters: an erasure is never
//! undone, whichever way it interleaves with runs, imports and the
//! retention; every manifest matches its objects.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tally_core::lifecycle::erase;
use tally_core::ports::WeekRefresh;
use tally_core::summary::{
    LockSettings, NoProgress, OnBusy, RefreshRequest, SummaryOptions, Trigger, Weekly, WeeklySettings,
};
use tally_core::testing::erasure::{erasure_scenario, exported_ids};
use tally_core::testing::{FixedClock, MemoryRecordStore, MemorySummarySink, MemoryWeekLock, RecordedRefresh};
use tally_core::{IsoWeek, Record, RecordId, RecordLifecycle, RecordStore, SummarySink, Timestamp};

#[tokio::test]
async fn an_erasure_before_during_or_after_a_run_is_never_undone_on_the_memory_adapters() {
    erasure_scenario(
        Arc::new(MemoryRecordStore::default()),
        Arc::new(MemorySummarySink::default()),
        Arc::new(MemoryWeekLock::default()),
    )
    .await;
}

/// One step of a random schedule.
#[derive(Debug, Clone)]
enum Op {
    /// An operator's run of week `0..WEEKS`.
    Summarize(usize),
    /// The erasure of the initial record `i`.
    Erase(usize),
    /// An import of `n` new records into a week, then its re-summarize.
    Import(usize, u8),
    /// The retention, keeping this many weeks.
    Prune(u32),
    /// The refresher draining the requests so far.
    Refresh,
}

const WEEKS: usize = 3;
const RECORDS: usize = 12;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..WEEKS).prop_map(Op::Summarize),
        3 => (0..RECORDS).prop_map(Op::Erase),
        1 => (0..WEEKS, 1..4u8).prop_map(|(w, n)| Op::Import(w, n)),
        1 => (0..3u32).prop_map(Op::Prune),
        1 => Just(Op::Refresh),
    ]
}

fn week(i: usize) -> IsoWeek {
    let mut w = IsoWeek::parse("2026-W45").unwrap();
    for _ in 0..i {
        w = w.next();
    }
    w
}

fn record(week: IsoWeek, n: u64) -> Record {
    let at = Timestamp::from_millis(week.start().as_millis() + 60_000 * (n as i64 + 1));
    Record { id: RecordId::generate(at), received_at: at, data: format!(r#"{{"n":{n}}}"#) }
}

/// Runs the ops concurrently (spawned in order on one thread: they
/// interleave at every await, under paused time so lock waits pass at
/// once), then drains the refresh queue, and checks every week.
async fn schedule(ops: Vec<Op>) {
    let store = Arc::new(MemoryRecordStore::default());
    let sink = Arc::new(MemorySummarySink::default());
    let refresh = Arc::new(RecordedRefresh::default());
    let now = week(WEEKS).end();
    let clock = Arc::new(FixedClock::at(now));
    let settings = WeeklySettings {
        lock: LockSettings { ttl: Duration::from_secs(3600), on_busy: OnBusy::Wait(Duration::from_secs(600)) },
        ..WeeklySettings::local(SummaryOptions { threads: 1, ..SummaryOptions::default() }, None)
    };
    let weekly =
        Weekly::new(store.clone(), sink.clone(), Arc::new(MemoryWeekLock::default()), clock, settings, "proptest")
            .with_refresh(refresh.clone());
    let initial: Vec<Record> = (0..RECORDS).map(|i| record(week(i % WEEKS), i as u64)).collect();
    store.restore(&initial).await.unwrap();
    let erased = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let mut tasks = Vec::new();
    for (k, op) in ops.into_iter().enumerate() {
        let (weekly, store, sink, refresh, erased) =
            (weekly.clone(), store.clone(), sink.clone(), refresh.clone(), erased.clone());
        let initial = initial.clone();
        tasks.push(tokio::spawn(async move {
            match op {
                Op::Summarize(w) => drop(weekly.week(week(w), Trigger::Operator { partial: false }, &NoProgress).await),
                Op::Erase(i) => {
                    let id = initial[i].id;
                    if let Ok(Some(_)) = erase(store.as_ref(), sink.as_ref(), refresh.as_ref(), now, id).await {
                        erased.lock().unwrap().insert(id.to_string());
                    }
                }
                Op::Import(w, n) => {
                    let records: Vec<Record> =
                        (0..u64::from(n)).map(|j| record(week(w), 1000 * (k as u64 + 1) + j)).collect();
                    store.restore(&records).await.unwrap();
                    if sink.list_weeks().await.unwrap().contains(&week(w)) {
                        drop(weekly.week(week(w), Trigger::Import, &NoProgress).await);
                    }
                }
                Op::Prune(keep) => drop(weekly.prune(keep).await),
                Op::Refresh => drain_quietly(&weekly, refresh.as_ref(), now).await,
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Every request wakes the refresher once more (the local queue's
    // message, the S3 object's event) even if a run in progress withdrew
    // it from `pending`: the final pass rewrites every week ever asked for.
    let asked: BTreeSet<IsoWeek> = refresh.weeks().into_iter().collect();
    let requests: Vec<_> = asked.into_iter().map(|week| RefreshRequest { week, requested_at: now }).collect();
    weekly.refresh(&requests, &NoProgress).await.unwrap();
    let erased = erased.lock().unwrap().clone();
    for w in 0..WEEKS {
        // Every manifest matches its objects (checked by exported_ids), and
        // no export holds an erased record.
        if let Some(ids) = exported_ids(sink.as_ref(), week(w)).await {
            let kept: Vec<&String> = ids.iter().filter(|id| erased.contains(*id)).collect();
            assert!(kept.is_empty(), "{} still exports erased records {kept:?}", week(w));
        }
    }
    // Nothing erased is left in the store either.
    for id in &erased {
        let id: RecordId = id.parse().unwrap();
        assert_eq!(store.get(id).await.unwrap(), None);
    }
}

/// A refresher pass in the middle of the schedule (its own failures, such
/// as a week held too long, only leave requests for the final drain).
async fn drain_quietly(weekly: &Weekly, refresh: &dyn WeekRefresh, now: Timestamp) {
    let weeks = refresh.pending().await.unwrap();
    let requests: Vec<_> = weeks.into_iter().map(|week| RefreshRequest { week, requested_at: now }).collect();
    let _ = weekly.refresh(&requests, &NoProgress).await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn no_export_keeps_an_erased_record_whatever_the_schedule_of_runs_imports_erasures_and_prunes(
        ops in proptest::collection::vec(op(), 1..14)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        runtime.block_on(schedule(ops));
    }
}

#[tokio::test]
async fn the_retention_leaves_a_week_waiting_for_its_rewrite_alone_until_it_is_rewritten() {
    let store = Arc::new(MemoryRecordStore::default());
    let sink = Arc::new(MemorySummarySink::default());
    let refresh = Arc::new(RecordedRefresh::default());
    let now = week(WEEKS).end();
    let settings = WeeklySettings::local(SummaryOptions { threads: 1, ..SummaryOptions::default() }, None);
    let weekly = Weekly::new(
        store.clone(),
        sink.clone(),
        Arc::new(MemoryWeekLock::default()),
        Arc::new(FixedClock::at(now)),
        settings,
        "test",
    )
    .with_refresh(refresh.clone());
    let records: Vec<Record> = (0..3).map(|n| record(week(0), n)).collect();
    store.restore(&records).await.unwrap();
    weekly.week(week(0), Trigger::Scheduled, &NoProgress).await.unwrap().unwrap();
    // GIVEN a record erased from the summarized week, its rewrite not yet run
    erase(store.as_ref(), sink.as_ref(), refresh.as_ref(), now, records[0].id).await.unwrap().unwrap();
    // WHEN the retention runs: the week keeps its records (pruned, its
    // summary would keep the erased record for good)
    let report = weekly.prune(0).await.unwrap();
    assert!(report.pruned.is_empty(), "{report:?}");
    assert_eq!(store.weeks().await.unwrap(), vec![week(0)]);
    // THEN once rewritten, the export lacks the record, and the next prune deletes the week
    drain_quietly(&weekly, refresh.as_ref(), now).await;
    let ids = exported_ids(sink.as_ref(), week(0)).await.unwrap();
    assert!(!ids.contains(&records[0].id.to_string()) && ids.len() == 2, "{ids:?}");
    assert_eq!(weekly.prune(0).await.unwrap().pruned, vec![(week(0), 2)]);
}
