//! The one retry mechanism of tally: exponential backoff with optional full
//! jitter, and the loop that applies it.
//!
//! Every place that retries uses this module — the DynamoDB adapter for what
//! the AWS SDK does not retry itself (`UnprocessedItems`, transaction
//! conflicts), the local schedule for a failed weekly run, and the report
//! notifications. What the SDK already retries (throttling, 5xx) is not
//! retried again on top. Policies are values, so each caller states its
//! budget next to the reason for it.

use std::future::Future;
use std::time::Duration;

/// Backoff before retry `n` (1-based): `min(max_delay, base * 2^(n-1))`,
/// or with [`jitter`](Self::jitter) a random time in `0..=` that ceiling
/// ("full jitter", which spreads competing clients apart). At most
/// `max_attempts` attempts in all, the first included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub max_delay: Duration,
    pub jitter: bool,
}

impl Default for RetryPolicy {
    /// Short, jittered retries for a request a client is waiting on: the
    /// worst case waits about 3 s, well inside API Gateway's 29 s.
    fn default() -> Self {
        Self { max_attempts: 8, base: Duration::from_millis(25), max_delay: Duration::from_secs(1), jitter: true }
    }
}

impl RetryPolicy {
    /// A failed scheduled weekly run: 1 min, doubling, capped at 1 h, six
    /// attempts (about 31 min of waiting) before the next scheduled run
    /// picks the week up again.
    pub const SCHEDULED_RUN: Self =
        Self { max_attempts: 6, base: Duration::from_secs(60), max_delay: Duration::from_secs(3600), jitter: false };

    /// A report notification: 5 attempts over 10 + 20 + 40 + 80 s = 2.5 min,
    /// so a receiver restarting for a minute still gets the message.
    pub const NOTIFICATION: Self =
        Self { max_attempts: 5, base: Duration::from_secs(10), max_delay: Duration::from_secs(120), jitter: false };

    /// The sleep before retry number `retry` (1-based), or `None` when the
    /// attempts are used up.
    pub fn delay(&self, retry: u32) -> Option<Duration> {
        if retry == 0 || retry >= self.max_attempts {
            return None;
        }
        let ceiling = self.base.saturating_mul(1u32 << (retry - 1).min(20)).min(self.max_delay);
        if !self.jitter {
            return Some(ceiling);
        }
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Some(Duration::from_millis(rand::random_range(0..=ms)))
    }

    /// The most this policy can sleep in all (the ceilings, jitter aside).
    pub fn worst_case_wait(&self) -> Duration {
        (1..self.max_attempts).map(|r| self.base.saturating_mul(1u32 << (r - 1).min(20)).min(self.max_delay)).sum()
    }
}

/// What [`retry`] tells its caller about each failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// 1-based number of the attempt that failed.
    pub number: u32,
    /// The sleep before the next attempt, `None` when this was the last one.
    pub next_in: Option<Duration>,
}

/// Runs `op` until it succeeds, `retryable` says an error is final, or the
/// policy's attempts are used up; returns the last result. `on_failure` sees
/// every failed attempt (to log it) before the sleep.
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    mut op: F,
    retryable: impl Fn(&E) -> bool,
    mut on_failure: impl FnMut(&E, Attempt),
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut number = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let next_in = if retryable(&e) { policy.delay(number) } else { None };
                on_failure(&e, Attempt { number, next_in });
                let Some(delay) = next_in else { return Err(e) };
                tokio::time::sleep(delay).await;
                number += 1;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn jittered_delays_are_bounded_and_attempts_run_out() {
        let p = RetryPolicy::default();
        for retry in 1..p.max_attempts {
            let d = p.delay(retry).unwrap();
            assert!(d <= p.max_delay && d <= p.base * (1 << (retry - 1)), "{retry}: {d:?}");
        }
        assert_eq!(p.delay(p.max_attempts), None);
        assert!(p.worst_case_wait() < Duration::from_secs(5), "worst case {:?}", p.worst_case_wait());
    }

    #[test]
    fn scheduled_runs_back_off_from_a_minute_to_an_hour() {
        let p = RetryPolicy::SCHEDULED_RUN;
        assert_eq!(p.delay(1), Some(Duration::from_secs(60)));
        assert_eq!(p.delay(2), Some(Duration::from_secs(120)));
        assert_eq!(p.delay(5), Some(Duration::from_secs(960)));
        assert_eq!(p.delay(6), None);
        let long = RetryPolicy { max_attempts: 40, ..p };
        assert_eq!(long.delay(39), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn notifications_try_three_times_or_more_over_a_minute_or_more() {
        let p = RetryPolicy::NOTIFICATION;
        assert!(p.max_attempts >= 3);
        assert!(p.worst_case_wait() >= Duration::from_secs(60), "{:?}", p.worst_case_wait());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_at_success_at_a_final_error_and_when_attempts_run_out() {
        let p = RetryPolicy::SCHEDULED_RUN;
        let calls = Cell::new(0);
        let ok: Result<u32, &str> = retry(
            &p,
            || async {
                calls.set(calls.get() + 1);
                if calls.get() < 3 { Err("transient") } else { Ok(calls.get()) }
            },
            |_| true,
            |_, _| {},
        )
        .await;
        assert_eq!(ok, Ok(3));

        calls.set(0);
        let fatal: Result<(), &str> = retry(
            &p,
            || async {
                calls.set(calls.get() + 1);
                Err("fatal")
            },
            |e| *e != "fatal",
            |_, a| assert_eq!(a.next_in, None),
        )
        .await;
        assert_eq!((fatal, calls.get()), (Err("fatal"), 1));

        let seen = Cell::new(Vec::new());
        let start = tokio::time::Instant::now();
        let gave_up: Result<(), &str> = retry(
            &p,
            || async { Err("down") },
            |_| true,
            |_, a| {
                let mut v = seen.take();
                v.push(a);
                seen.set(v);
            },
        )
        .await;
        assert_eq!(gave_up, Err("down"));
        let seen = seen.take();
        assert_eq!(seen.len(), p.max_attempts as usize);
        assert_eq!(seen.last().unwrap().next_in, None);
        assert_eq!(start.elapsed(), p.worst_case_wait());
    }
}
