//! ISO 8601 weeks in UTC: Monday 00:00 up to the next Monday 00:00.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::{Date, Duration, OffsetDateTime, Time, Weekday};

use crate::clock::Timestamp;

/// An ISO week such as `2026-W47`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IsoWeek {
    year: i32,
    week: u8,
}

/// Why a string is not an ISO week.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not an ISO week: {reason} (expected YYYY-Www, e.g. 2026-W47)")]
pub struct InvalidWeek {
    pub input: String,
    pub reason: &'static str,
}

impl IsoWeek {
    /// Builds a week, checking that `year` has that many weeks (52 or 53).
    pub fn new(year: i32, week: u8) -> Option<Self> {
        Date::from_iso_week_date(year, week, Weekday::Monday)
            .ok()
            .filter(|_| (1000..=9999).contains(&year))
            // The week must end on a representable date: 9999-W52 would end
            // in year 10000, past `time::Date::MAX` (found by fuzzing).
            .filter(|monday| monday.checked_add(Duration::days(7)).is_some())
            .map(|_| Self { year, week })
    }

    /// Parses exactly `YYYY-Www` (also accepts a lowercase `w`).
    pub fn parse(s: &str) -> Result<Self, InvalidWeek> {
        let invalid = |reason| InvalidWeek { input: s.chars().take(40).collect(), reason };
        let b = s.as_bytes();
        if b.len() != 8 || b[4] != b'-' || !matches!(b[5], b'W' | b'w') {
            return Err(invalid("wrong shape"));
        }
        let digits = |r: std::ops::Range<usize>| -> Option<u32> {
            b[r].iter().try_fold(0u32, |acc, c| c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0')))
        };
        let (Some(year), Some(week)) = (digits(0..4), digits(6..8)) else {
            return Err(invalid("year and week must be digits"));
        };
        let year = year as i32;
        if week == 0 {
            return Err(invalid("weeks start at W01"));
        }
        Self::new(year, week as u8).ok_or_else(|| invalid("that year has no such week"))
    }

    /// The week containing `t`.
    pub fn containing(t: Timestamp) -> Self {
        let (year, week, _) = t.to_datetime().date().to_iso_week_date();
        Self { year, week }
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn week(self) -> u8 {
        self.week
    }

    /// Monday of this week.
    pub fn monday(self) -> Date {
        Date::from_iso_week_date(self.year, self.week, Weekday::Monday).unwrap_or(Date::MIN)
    }

    /// Monday 00:00:00.000 UTC, inclusive.
    pub fn start(self) -> Timestamp {
        Timestamp::from_datetime(self.monday().with_time(Time::MIDNIGHT).assume_utc())
    }

    /// The next Monday 00:00:00.000 UTC, exclusive.
    pub fn end(self) -> Timestamp {
        self.next().start()
    }

    pub fn next(self) -> Self {
        Self::containing(Timestamp::from_datetime((self.monday() + Duration::days(7)).midnight().assume_utc()))
    }

    pub fn previous(self) -> Self {
        Self::containing(Timestamp::from_datetime((self.monday() - Duration::days(7)).midnight().assume_utc()))
    }

    /// Every day of the week, Monday first.
    pub fn days(self) -> [Date; 7] {
        let m = self.monday();
        std::array::from_fn(|i| m + Duration::days(i as i64))
    }

    /// `from..=to`, ascending; empty when `from > to`.
    pub fn range(from: Self, to: Self) -> impl Iterator<Item = Self> {
        std::iter::successors(Some(from), |w| Some(w.next())).take_while(move |w| *w <= to)
    }

    /// The last full week before `now`.
    pub fn last_complete(now: Timestamp) -> Self {
        Self::containing(now).previous()
    }

    pub fn contains(self, t: Timestamp) -> bool {
        self.start() <= t && t < self.end()
    }
}

/// `OffsetDateTime` helper kept private to this module's callers.
pub fn date_start(d: Date) -> Timestamp {
    Timestamp::from_datetime(OffsetDateTime::new_utc(d, Time::MIDNIGHT))
}

impl fmt::Display for IsoWeek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-W{:02}", self.year, self.week)
    }
}

impl FromStr for IsoWeek {
    type Err = InvalidWeek;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for IsoWeek {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IsoWeek {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_representable_week_is_the_last_accepted() {
        // Regression (fuzzing): 9999-W52 parsed, then `end()` panicked.
        assert!(IsoWeek::parse("9999-W52").is_err());
        let last = IsoWeek::parse("9999-W51").unwrap();
        assert!(last.start() < last.end());
        let first = IsoWeek::parse("1000-W01").unwrap();
        assert!(first.previous() < first && first.start() < first.end());
    }

    fn w(s: &str) -> IsoWeek {
        IsoWeek::parse(s).unwrap()
    }

    #[test]
    fn parses_and_displays() {
        assert_eq!(w("2026-W47").to_string(), "2026-W47");
        assert_eq!(w("2026-w01").to_string(), "2026-W01");
        assert_eq!(w("2020-W53").to_string(), "2020-W53");
        assert_eq!(w("2026-W53").to_string(), "2026-W53");
    }

    #[test]
    fn rejects_bad_weeks() {
        for bad in [
            "2026-W54",
            "2026-W00",
            "2025-W53",
            "../",
            "2026W47",
            "2026-W4",
            "2026-W470",
            "abcd-W01",
            "",
            "２０２６-W01",
            "2026-X47",
            "+026-W01",
        ] {
            assert!(IsoWeek::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn bounds_are_monday_midnight_utc() {
        let week = w("2026-W48");
        assert_eq!(week.start().to_rfc3339(), "2026-11-23T00:00:00.000Z");
        assert_eq!(week.end().to_rfc3339(), "2026-11-30T00:00:00.000Z");
        assert!(week.contains(week.start()));
        assert!(!week.contains(week.end()));
        assert_eq!(IsoWeek::containing(Timestamp::from_millis(week.end().as_millis() - 1)), week);
    }

    #[test]
    fn steps_across_years() {
        assert_eq!(w("2020-W53").next(), w("2021-W01"));
        assert_eq!(w("2021-W01").previous(), w("2020-W53"));
        assert_eq!(w("2026-W01").previous(), w("2025-W52"));
        let all: Vec<_> = IsoWeek::range(w("2025-W51"), w("2026-W02")).collect();
        assert_eq!(all.len(), 4);
        assert_eq!(IsoWeek::range(w("2026-W02"), w("2026-W01")).count(), 0);
    }

    #[test]
    fn iso_week_year_differs_from_calendar_year() {
        // 2024-12-30 is a Monday in ISO week 2025-W01.
        let t = date_start(Date::from_calendar_date(2024, time::Month::December, 30).unwrap());
        assert_eq!(IsoWeek::containing(t), w("2025-W01"));
    }
}
