//! The table's key scheme: the partition and sort key of each kind of item
//! (see the item layout in the [module docs](super)). The keys of week leases
//! and batch markers, which share the table, are [`crate::lease::lease_pk`]
//! and [`crate::batch::marker_pk`].

use tally_core::idempotency::IdempotencyKey;
use tally_core::{IsoWeek, RecordId};
use time::Date;

/// Shards per day. Changing it orphans existing data: it is part of the key.
pub const SHARDS: u16 = 16;
/// The partition of the week markers (`sk` = the week).
pub(super) const WEEKS_PK: &str = "W";
/// The sort key of an idempotency entry (`pk` = [`key_pk`]).
pub(super) const KEY_SK: &str = "I";

/// The partition key of a record: `D#<UTC day>#<shard>`.
pub fn record_pk(id: RecordId) -> String {
    day_pk(id.timestamp().to_datetime().date(), id.shard(SHARDS))
}

/// The partition key of one shard of a UTC day.
pub(crate) fn day_pk(day: Date, shard: u16) -> String {
    format!("D#{:04}-{:02}-{:02}#{shard:02}", day.year(), u8::from(day.month()), day.day())
}

/// The partition key of an idempotency entry: `I#<key>`.
pub(super) fn key_pk(key: &IdempotencyKey) -> String {
    format!("I#{}", key.as_str())
}

/// The sort-key bounds (both inclusive) of `week`'s records.
pub(crate) fn week_bounds(week: IsoWeek) -> (String, String) {
    let (from, to) = (RecordId::lower_bound(week.start()), RecordId::lower_bound(week.end()));
    (from.to_string(), to.previous().unwrap_or(from).to_string())
}
