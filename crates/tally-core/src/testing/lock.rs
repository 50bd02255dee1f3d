//! The week lock in memory, and the contract every [`WeekLock`] adapter
//! passes (memory here, SQLite in `tally-local`, DynamoDB on moto in
//! `tally-aws`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::clock::Timestamp;
use crate::ports::{Acquired, StoreError, WeekLease, WeekLock};
use crate::week::IsoWeek;

#[derive(Debug, Default)]
struct Slot {
    /// `(holder, until)` while taken; `None` once released.
    held: Option<(String, Timestamp)>,
    /// The token of the last lease handed out.
    token: u64,
    done_from: Option<Timestamp>,
}

/// A [`WeekLock`] in memory. Clones share the locks: each is another
/// "process" on the same storage.
#[derive(Debug, Default, Clone)]
pub struct MemoryWeekLock(Arc<Mutex<HashMap<IsoWeek, Slot>>>);

impl MemoryWeekLock {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IsoWeek, Slot>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Who holds `week` at `now`, if anyone (for tests' assertions).
    pub fn holder(&self, week: IsoWeek, now: Timestamp) -> Option<String> {
        let slots = self.lock();
        let (holder, until) = slots.get(&week)?.held.as_ref()?;
        (now <= *until).then(|| holder.clone())
    }
}

fn after(now: Timestamp, ttl: Duration) -> Timestamp {
    Timestamp::from_millis(now.as_millis().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)))
}

/// Whether `slot` still carries `lease` (its token, not released).
fn carries(slot: Option<&Slot>, lease: &WeekLease) -> Option<Timestamp> {
    let slot = slot?;
    let (_, until) = slot.held.as_ref()?;
    (slot.token == lease.token).then_some(*until)
}

#[async_trait]
impl WeekLock for MemoryWeekLock {
    async fn try_acquire(
        &self,
        week: IsoWeek,
        holder: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Acquired, StoreError> {
        let mut slots = self.lock();
        let slot = slots.entry(week).or_default();
        if let Some((other, until)) = &slot.held {
            if now <= *until {
                return Ok(Acquired::Held { holder: other.clone(), until: *until });
            }
        }
        slot.token += 1;
        let until = after(now, ttl);
        slot.held = Some((holder.to_owned(), until));
        Ok(Acquired::Taken(WeekLease {
            week,
            holder: holder.to_owned(),
            token: slot.token,
            until,
            done_from: slot.done_from,
        }))
    }

    async fn renew(&self, lease: &mut WeekLease, now: Timestamp, ttl: Duration) -> Result<bool, StoreError> {
        let mut slots = self.lock();
        let slot = slots.get_mut(&lease.week);
        match slot {
            Some(slot) if carries(Some(slot), lease).is_some_and(|until| now <= until) => {
                let until = after(now, ttl);
                slot.held = Some((lease.holder.clone(), until));
                lease.until = until;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn check(&self, lease: &WeekLease, now: Timestamp) -> Result<bool, StoreError> {
        Ok(carries(self.lock().get(&lease.week), lease).is_some_and(|until| now <= until))
    }

    async fn release(
        &self,
        lease: WeekLease,
        done_from: Option<Timestamp>,
        _now: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut slots = self.lock();
        match slots.get_mut(&lease.week) {
            Some(slot) if carries(Some(slot), &lease).is_some() => {
                slot.held = None;
                slot.done_from = done_from.or(slot.done_from);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// A clock that follows tokio's time from `base`: under
/// `#[tokio::test(start_paused = true)]` it moves only when tokio's paused
/// clock does (`tokio::time::advance`, or auto-advance while every task
/// waits), so leases expire and schedules fire without real waiting.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base: Timestamp,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// Starts at `base` now (in tokio's time).
    pub fn starting_at(base: Timestamp) -> Self {
        Self { base, start: tokio::time::Instant::now() }
    }
}

impl crate::clock::Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let elapsed = i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX);
        Timestamp::from_millis(self.base.as_millis().saturating_add(elapsed))
    }
}

fn taken(acquired: Result<Acquired, StoreError>, what: &str) -> WeekLease {
    match acquired.unwrap_or_else(|e| panic!("{what}: {e}")) {
        Acquired::Taken(lease) => lease,
        held => panic!("{what}: expected the lock to be free, found {held:?}"),
    }
}

/// The behaviour every [`WeekLock`] must show. `open` gives another handle
/// on the same, initially empty, lock storage each time it is called — a
/// second process on the same database file, a second client of the same
/// table — so exclusion is shown across handles, not only within one.
pub async fn lock_contract<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn WeekLock>>,
{
    let (a, b) = (open().await, open().await);
    let week = IsoWeek::parse("2026-W20").expect("week");
    let other = week.next();
    let t0 = Timestamp::from_millis(week.end().as_millis() + 3_600_000);
    let at = |s: i64| Timestamp::from_millis(t0.as_millis() + s * 1000);
    let ttl = Duration::from_secs(60);

    // GIVEN run A takes the week
    let mut la = taken(a.try_acquire(week, "run-a", t0, ttl).await, "A takes a free week");
    assert_eq!((la.week, la.holder.as_str(), la.until, la.done_from), (week, "run-a", at(60), None));

    // THEN B, through another handle, finds it held by A until then (exclusion)
    let held = b.try_acquire(week, "run-b", at(1), ttl).await.expect("B tries");
    assert_eq!(held, Acquired::Held { holder: "run-a".into(), until: at(60) });
    // AND another week is a lock of its own
    let lo = taken(b.try_acquire(other, "run-b", at(1), ttl).await, "B takes another week");
    assert!(b.release(lo, None, at(2)).await.expect("release the other week"));

    // AND A's lease checks out, and renewing it keeps B out past the first ttl
    assert!(a.check(&la, at(30)).await.expect("check"));
    assert!(a.renew(&mut la, at(50), ttl).await.expect("renew"), "a held lease renews");
    assert_eq!(la.until, at(110));
    let held = b.try_acquire(week, "run-b", at(100), ttl).await.expect("B tries again");
    assert_eq!(held, Acquired::Held { holder: "run-a".into(), until: at(110) });

    // WHEN A completes a run that started at t0 and releases (release, done_from)
    let stale_a = la.clone();
    assert!(a.release(la, Some(t0), at(101)).await.expect("A releases"));

    // THEN B takes it at once, with a greater token and A's start as done_from
    let lb = taken(b.try_acquire(week, "run-b", at(102), ttl).await, "B takes the released week");
    assert!(lb.token > stale_a.token, "tokens grow: {} then {}", stale_a.token, lb.token);
    assert_eq!(lb.done_from, Some(t0));
    // AND A's old lease no longer checks, renews or releases
    assert!(!a.check(&stale_a, at(103)).await.expect("stale check"));
    assert!(!a.renew(&mut stale_a.clone(), at(103), ttl).await.expect("stale renew"));
    assert!(!a.release(stale_a.clone(), Some(at(90)), at(103)).await.expect("stale release"));

    // WHEN B's holder dies (it never renews): its lease holds up to its `until`, inclusive...
    let held = a.try_acquire(week, "run-c", lb.until, ttl).await.expect("C tries at B's until");
    assert_eq!(held, Acquired::Held { holder: "run-b".into(), until: lb.until });
    assert!(b.check(&lb, lb.until).await.expect("check at until"));
    // ...and expires right after (expiry)
    let expired = Timestamp::from_millis(lb.until.as_millis() + 1);
    assert!(!b.check(&lb, expired).await.expect("check after until"), "an expired lease is not held");
    let lc = taken(a.try_acquire(week, "run-c", expired, ttl).await, "C takes an expired week");
    assert!(lc.token > lb.token);
    assert_eq!(lc.done_from, Some(t0), "a lease that never completed records nothing");

    // THEN B, which outlived its lease, cannot check, renew or release it (fencing)
    let later = at(200);
    assert!(!b.check(&lb, later).await.expect("fenced check"));
    assert!(!b.renew(&mut lb.clone(), later, ttl).await.expect("fenced renew"));
    assert!(!b.release(lb, Some(at(102)), later).await.expect("fenced release"), "B's release leaves C's lease");
    assert!(a.check(&lc, later).await.expect("C still holds"));
    assert_eq!(
        b.try_acquire(week, "run-d", later, ttl).await.expect("D tries"),
        Acquired::Held { holder: "run-c".into(), until: lc.until }
    );

    // WHEN C fails (released without done_from): the last completed run stays on record
    assert!(a.release(lc, None, at(201)).await.expect("C releases"));
    let ld = taken(b.try_acquire(week, "run-d", at(202), ttl).await, "D takes the week");
    assert_eq!(ld.done_from, Some(t0));
    // AND a lease that expired without anyone taking it is still released, with its done_from
    let past = Timestamp::from_millis(ld.until.as_millis() + 60_000);
    assert!(!b.check(&ld, past).await.expect("expired check"));
    assert!(b.release(ld.clone(), Some(at(202)), past).await.expect("release an expired, untaken lease"));
    // AND releasing twice is a no-op
    assert!(!b.release(ld.clone(), Some(at(300)), past).await.expect("release twice"));
    let le = taken(a.try_acquire(week, "run-e", past, ttl).await, "E takes the week");
    assert_eq!(le.done_from, Some(at(202)));
    assert!(le.token > ld.token);
    assert!(a.release(le, None, past).await.expect("E releases"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_lock_meets_the_lock_contract() {
        let shared = MemoryWeekLock::default();
        lock_contract(|| {
            let handle = shared.clone();
            async move { Arc::new(handle) as Arc<dyn WeekLock> }
        })
        .await;
    }
}
