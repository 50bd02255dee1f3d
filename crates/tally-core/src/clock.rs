//! Server time. Every record's `received_at` comes from a [`Clock`], so tests
//! can place records in any week without waiting for one.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A UTC instant with millisecond precision, the resolution of ULIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// Milliseconds since the Unix epoch. Values before 1970 are rejected by
    /// [`RecordId`](crate::RecordId) construction, not here.
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    pub fn now() -> Self {
        let now = OffsetDateTime::now_utc();
        Self((now.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    pub fn to_datetime(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    pub fn from_datetime(dt: OffsetDateTime) -> Self {
        Self((dt.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    /// RFC 3339 in UTC with exactly three fractional digits: `2026-11-23T08:00:00.000Z`.
    pub fn to_rfc3339(self) -> String {
        let mut out = String::with_capacity(24);
        self.write_rfc3339(&mut out);
        out
    }

    /// Appends [`to_rfc3339`](Self::to_rfc3339)'s text to `out`. Years 1970 to
    /// 9999 (every ULID's) take a direct civil-from-days conversion: this runs
    /// once per exported record, where going through `OffsetDateTime` and
    /// `format!` cost more than the rest of the line's serialization.
    pub fn write_rfc3339(self, out: &mut String) {
        const MS_PER_DAY: i64 = 86_400_000;
        const YEAR_10000: i64 = 253_402_300_800_000;
        if !(0..YEAR_10000).contains(&self.0) {
            out.push_str(&self.slow_rfc3339());
            return;
        }
        let (days, ms) = (self.0 / MS_PER_DAY, self.0 % MS_PER_DAY);
        // Howard Hinnant's civil_from_days, for days since 1970-01-01 >= 0.
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let (secs, milli) = (ms / 1000, ms % 1000);
        let mut buf = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: i64| {
            for i in (at..at + width).rev() {
                buf[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, secs / 3600);
        put(14, 2, secs / 60 % 60);
        put(17, 2, secs % 60);
        put(20, 3, milli);
        out.push_str(std::str::from_utf8(&buf).unwrap_or_default());
    }

    fn slow_rfc3339(self) -> String {
        let dt = self.to_datetime();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            dt.millisecond()
        )
    }

    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        OffsetDateTime::parse(s, &Rfc3339).ok().map(Self::from_datetime)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse_rfc3339(&s).ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 timestamp"))
    }
}

/// Source of `received_at`.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The real UTC wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_rfc3339_matches_the_time_crate() {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut samples: Vec<i64> = vec![
            0,
            1,
            999,
            86_399_999,
            86_400_000,
            951_782_400_000,
            4_107_542_399_999,
            253_402_300_799_999,
            253_402_300_800_000,
            -1,
            -86_400_001,
            i64::MAX,
            i64::MIN,
        ];
        for _ in 0..20_000 {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            samples.push((rng >> 17) as i64 % 253_402_300_800_000);
        }
        for ms in samples {
            let t = Timestamp::from_millis(ms);
            assert_eq!(t.to_rfc3339(), t.slow_rfc3339(), "{ms}");
        }
    }

    #[test]
    fn formats_with_milliseconds_and_z() {
        let t = Timestamp::from_millis(1_795_939_200_123);
        assert_eq!(t.to_rfc3339(), "2026-11-29T08:00:00.123Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
    }

    #[test]
    fn epoch_formats() {
        assert_eq!(Timestamp::from_millis(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
    }
}
