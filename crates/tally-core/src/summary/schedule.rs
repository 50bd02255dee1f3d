//! When the weekly summary runs. Pure logic: the binaries own the loop (tokio
//! sleep in `tally serve`, an EventBridge schedule in AWS).
//!
//! Why croner: it parses the standard 5-field syntax people already know
//! (`5 0 * * MON`, with optional seconds), follows Vixie cron's day-of-month /
//! day-of-week OR rule, and is maintained; the `cron` crate insists on a
//! seconds field, which would surprise anyone pasting a crontab line.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use crate::clock::Timestamp;
use crate::week::IsoWeek;

/// Every Monday at 00:05 UTC: five minutes' grace for late writes of Sunday.
pub const DEFAULT_SCHEDULE: &str = "5 0 * * MON";

/// The cron expression could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error(
    "{expression:?} is not a cron schedule (expected e.g. {DEFAULT_SCHEDULE:?}: minute hour day-of-month month day-of-week, UTC)"
)]
pub struct InvalidSchedule {
    pub expression: String,
    #[source]
    source: croner::errors::CronError,
}

/// A cron schedule, evaluated in UTC.
#[derive(Debug, Clone)]
pub struct WeeklySchedule {
    expression: String,
    cron: croner::Cron,
}

impl WeeklySchedule {
    pub fn parse(expression: &str) -> Result<Self, InvalidSchedule> {
        let cron = croner::Cron::from_str(expression)
            .map_err(|source| InvalidSchedule { expression: expression.to_owned(), source })?;
        Ok(Self { expression: expression.to_owned(), cron })
    }

    /// The first run strictly after `now`; `None` if the expression never
    /// fires again (e.g. a past year).
    pub fn next_after(&self, now: Timestamp) -> Option<Timestamp> {
        let now = DateTime::<Utc>::from_timestamp_millis(now.as_millis())?;
        let next = self.cron.find_next_occurrence(&now, false).ok()?;
        Some(Timestamp::from_millis(next.timestamp_millis()))
    }

    /// The week a run at `run_at` summarizes: the last complete one.
    pub fn week_for_run(run_at: Timestamp) -> IsoWeek {
        IsoWeek::last_complete(run_at)
    }
}

impl Default for WeeklySchedule {
    fn default() -> Self {
        // The default expression is a constant known to parse (tested below).
        match Self::parse(DEFAULT_SCHEDULE) {
            Ok(s) => s,
            Err(e) => unreachable!("default schedule must parse: {e}"),
        }
    }
}

impl FromStr for WeeklySchedule {
    type Err = InvalidSchedule;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for WeeklySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expression)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn default_runs_monday_at_0005_utc() {
        let s = WeeklySchedule::default();
        // Wednesday → next Monday
        assert_eq!(s.next_after(at("2026-11-18T12:00:00Z")).unwrap().to_rfc3339(), "2026-11-23T00:05:00.000Z");
        // exactly at a run → the following week's
        assert_eq!(s.next_after(at("2026-11-23T00:05:00Z")).unwrap().to_rfc3339(), "2026-11-30T00:05:00.000Z");
        // Monday 00:04 → the same day
        assert_eq!(s.next_after(at("2026-11-23T00:04:59Z")).unwrap().to_rfc3339(), "2026-11-23T00:05:00.000Z");
    }

    #[test]
    fn a_run_summarizes_the_previous_week() {
        assert_eq!(WeeklySchedule::week_for_run(at("2026-11-23T00:05:00Z")), IsoWeek::parse("2026-W47").unwrap());
    }

    #[test]
    fn custom_and_invalid_expressions() {
        let hourly = WeeklySchedule::parse("0 * * * *").unwrap();
        assert_eq!(hourly.next_after(at("2026-01-01T10:30:00Z")).unwrap().to_rfc3339(), "2026-01-01T11:00:00.000Z");
        let err = WeeklySchedule::parse("every monday").unwrap_err();
        assert!(err.to_string().contains("every monday"));
        assert!(std::error::Error::source(&err).is_some());
    }
}
