//! Which weeks one weekly run builds: the week the schedule owes, the weeks
//! whose erasure asked for a rewrite, and the weeks it missed (catch-up) —
//! at most [`MAX_WEEKS_PER_RUN`] of them, the rest left to the next run.
//!
//! Why a bound: after an import of history or a long outage, catch-up may
//! find hundreds of weeks. On AWS one run is one Step Functions execution,
//! whose input and output payloads are capped at 256 KiB and whose history at
//! 25,000 events (the Step Functions developer guide, "Step Functions service
//! quotas"); a week fanned out into 28 shares costs about 207 history events
//! without retries and about 390 with two retries of every task, so 26 weeks
//! stay under 10,200 events and 50 KiB of plan: half the limits, whatever
//! fails. A single invocation (15 minutes) is bounded by the same number.
//! `tests/infra/test_statemachine.py` runs the worst case on moto's
//! interpreter and checks both limits.

use crate::week::IsoWeek;

/// Most weeks one run builds. The rest are [`RunPlan::deferred`]: on AWS the
/// execution starts the next one for them (`{"catch_up":true}`); otherwise
/// the next run takes them.
pub const MAX_WEEKS_PER_RUN: usize = 26;

/// What one run builds, ascending, and what it does besides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunPlan {
    pub weeks: Vec<IsoWeek>,
    /// Weeks with a refresh request (an erasure): deleted once rewritten.
    pub requested: Vec<IsoWeek>,
    /// Weeks to announce: the schedule's and the missed ones, not rewrites.
    pub announced: Vec<IsoWeek>,
    /// Weeks that need a run but did not fit, ascending: the next run's.
    pub deferred: Vec<IsoWeek>,
}

impl RunPlan {
    /// Whether another run must follow for the deferred weeks.
    pub fn more(&self) -> bool {
        !self.deferred.is_empty()
    }
}

/// Plans a scheduled run, keeping at most `cap` weeks (at least one). In
/// order of priority: `scheduled` (the last complete week, which the schedule
/// promises; `None` for a continuation of a catch-up), the `requested` weeks
/// (an erasure waits for them), then the `pending` ones, oldest first. The
/// weeks kept run oldest first.
pub fn plan_scheduled(scheduled: Option<IsoWeek>, requested: &[IsoWeek], pending: &[IsoWeek], cap: usize) -> RunPlan {
    let mut requested = requested.to_vec();
    requested.sort_unstable();
    requested.dedup();
    let mut pending = pending.to_vec();
    pending.sort_unstable();
    pending.dedup();
    let mut wanted: Vec<IsoWeek> = Vec::new();
    for week in scheduled.iter().chain(&requested).chain(&pending) {
        if !wanted.contains(week) {
            wanted.push(*week);
        }
    }
    let cap = cap.max(1);
    let mut deferred = wanted.split_off(wanted.len().min(cap));
    deferred.sort_unstable();
    let mut weeks = wanted;
    weeks.sort_unstable();
    // A requested week is announced only when the schedule owes it too.
    let announced =
        weeks.iter().copied().filter(|w| Some(*w) == scheduled || pending.binary_search(w).is_ok()).collect();
    let requested = weeks.iter().copied().filter(|w| requested.binary_search(w).is_ok()).collect();
    RunPlan { weeks, requested, announced, deferred }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> IsoWeek {
        IsoWeek::parse(s).unwrap()
    }

    fn weeks_from(first: &str, n: usize) -> Vec<IsoWeek> {
        std::iter::successors(Some(w(first)), |w| Some(w.next())).take(n).collect()
    }

    #[test]
    fn a_small_plan_keeps_every_week_in_order_and_defers_nothing() {
        let plan = plan_scheduled(Some(w("2026-W47")), &[w("2026-W40")], &[w("2026-W45"), w("2026-W40")], 26);
        assert_eq!(plan.weeks, vec![w("2026-W40"), w("2026-W45"), w("2026-W47")]);
        assert_eq!(plan.requested, vec![w("2026-W40")]);
        assert_eq!(plan.announced, vec![w("2026-W40"), w("2026-W45"), w("2026-W47")]);
        assert!(plan.deferred.is_empty() && !plan.more());
    }

    #[test]
    fn six_hundred_missed_weeks_run_26_at_a_time_the_scheduled_and_requested_first() {
        let pending = weeks_from("2012-W01", 600);
        let scheduled = w("2026-W47");
        let requested = [w("2020-W10")];
        let plan = plan_scheduled(Some(scheduled), &requested, &pending, MAX_WEEKS_PER_RUN);
        assert_eq!(plan.weeks.len(), MAX_WEEKS_PER_RUN);
        assert!(plan.weeks.contains(&scheduled) && plan.weeks.contains(&requested[0]));
        // Then the oldest missed weeks, and the result runs oldest first.
        assert_eq!(plan.weeks[0], pending[0]);
        assert!(plan.weeks.windows(2).all(|p| p[0] < p[1]));
        assert_eq!(plan.deferred.len(), 600 + 1 - (MAX_WEEKS_PER_RUN - 1) - 1);
        assert!(plan.more());
        // Each continuation (no scheduled week) takes the next oldest, until none is left.
        let mut left = plan.deferred.clone();
        let mut runs = 1;
        while !left.is_empty() {
            let next = plan_scheduled(None, &[], &left, MAX_WEEKS_PER_RUN);
            assert_eq!(next.weeks, left[..left.len().min(MAX_WEEKS_PER_RUN)].to_vec());
            left = next.deferred;
            runs += 1;
        }
        // 601 distinct weeks (the requested one is also missed): this run's 26, then the rest 26 at a time.
        assert_eq!(runs, 1 + (601 - MAX_WEEKS_PER_RUN).div_ceil(MAX_WEEKS_PER_RUN));
    }

    #[test]
    fn a_rewrite_alone_is_not_announced() {
        let plan = plan_scheduled(Some(w("2026-W47")), &[w("2026-W30")], &[], 26);
        assert_eq!(plan.announced, vec![w("2026-W47")]);
        assert_eq!(plan.requested, vec![w("2026-W30")]);
    }

    #[test]
    fn a_cap_of_zero_still_runs_the_scheduled_week() {
        let plan = plan_scheduled(Some(w("2026-W47")), &[], &[w("2026-W01")], 0);
        assert_eq!(plan.weeks, vec![w("2026-W47")]);
        assert_eq!(plan.deferred, vec![w("2026-W01")]);
    }
}
