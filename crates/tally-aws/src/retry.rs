//! Backoff for the retries the SDK does not do itself (BatchWriteItem's
//! `UnprocessedItems`, which come back in a *successful* response).

use std::time::Duration;

/// Exponential backoff with full jitter: before retry `n` (1-based) sleep a
/// random time in `0..=min(max_delay, base * 2^(n-1))`; give up after
/// `max_attempts` attempts in all. The defaults bound the wait to about 3 s,
/// well inside API Gateway's 29 s, after which the client gets a 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 8, base: Duration::from_millis(25), max_delay: Duration::from_secs(1) }
    }
}

impl RetryPolicy {
    /// The sleep before retry number `retry` (1-based), or `None` when the
    /// attempts are used up.
    pub fn delay(&self, retry: u32) -> Option<Duration> {
        if retry >= self.max_attempts {
            return None;
        }
        let ceiling = self.base.saturating_mul(1u32 << retry.saturating_sub(1).min(20)).min(self.max_delay);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Some(Duration::from_millis(rand::random_range(0..=ms)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_bounded_and_attempts_run_out() {
        let p = RetryPolicy::default();
        for retry in 1..p.max_attempts {
            let d = p.delay(retry).unwrap();
            assert!(d <= p.max_delay && d <= p.base * (1 << (retry - 1)), "{retry}: {d:?}");
        }
        assert_eq!(p.delay(p.max_attempts), None);
        let total: Duration = (1..p.max_attempts).map(|r| (p.base * (1 << (r - 1))).min(p.max_delay)).sum();
        assert!(total < Duration::from_secs(5), "worst case {total:?}");
    }
}
