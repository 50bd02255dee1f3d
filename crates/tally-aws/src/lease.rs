//! One summary run per week at a time, across Lambda invocations.
//!
//! Locally one process writes summaries (the server's schedule and its
//! refresher share a task). On AWS every refresh request is its own
//! invocation of the weekly function, so a burst of erasures in one week
//! starts several runs of that week at once; interleaved, an older run could
//! upload its export after a newer one and bring an erased record back. The
//! weekly function therefore holds this lease while it writes a week.
//!
//! # Item layout (in the records table)
//! ```text
//! lease  pk = L#2026-W47   sk = L   owner = <run id>, until = <epoch ms>     while held
//!                                   done_from = <epoch ms>                   start of the last complete run
//!                                   expires_at = <epoch s> (TTL)             90 days after the last run
//! ```
//! Taking the lease is one conditional UpdateItem (free, or held past its
//! `until`); releasing it removes `owner` and `until` only if this run still
//! holds it. `done_from` lets a run triggered by a request skip the week when
//! a run that started after the request has completed since.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use tally_core::ports::StoreError;
use tally_core::{IsoWeek, Timestamp};
use tracing::instrument;

use crate::DynamoDbRecordStore;

const LEASE_SK: &str = "L";
/// How long a lease item outlives its last run (then DynamoDB's TTL drops it).
const KEEP_ITEM: Duration = Duration::from_secs(90 * 86_400);

/// The partition key of `week`'s lease: `L#<week>`. The weekly role may
/// UpdateItem only partitions starting with `L#` (`dynamodb:LeadingKeys`).
pub fn lease_pk(week: IsoWeek) -> String {
    format!("L#{week}")
}

/// Per-week leases in the records table (see the module docs).
#[derive(Debug, Clone)]
pub struct DynamoDbWeekLease {
    client: Client,
    table: String,
}

/// A lease this run holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub week: IsoWeek,
    owner: String,
    /// When the last complete run of the week started, if the item remembers one.
    pub done_from: Option<Timestamp>,
}

impl DynamoDbRecordStore {
    /// Leases in this store's table, through its client.
    pub fn week_lease(&self) -> DynamoDbWeekLease {
        DynamoDbWeekLease { client: self.client().clone(), table: self.table().to_owned() }
    }
}

impl DynamoDbWeekLease {
    /// Takes `week`'s lease for `hold` if nobody holds it (or its holder's
    /// time is up); `None` when another run holds it. `owner` must be unique
    /// per run.
    #[instrument(skip_all, fields(table = %self.table, week = %week))]
    pub async fn try_acquire(
        &self,
        week: IsoWeek,
        owner: &str,
        now: Timestamp,
        hold: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let until = now.as_millis().saturating_add(millis(hold));
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(lease_pk(week)))
            .key("sk", AttributeValue::S(LEASE_SK.into()))
            .update_expression("SET #owner = :owner, #until = :until")
            .condition_expression("attribute_not_exists(#until) OR #until < :now")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":owner", AttributeValue::S(owner.into()))
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":now", n(now.as_millis()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => {
                let done_from = out
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get("done_from"))
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse().ok())
                    .map(Timestamp::from_millis);
                Ok(Some(Lease { week, owner: owner.to_owned(), done_from }))
            }
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(None),
            Err(e) => Err(crate::dynamo::classify("UpdateItem (take lease)", e)),
        }
    }

    /// Gives the lease back. With `done_from` (the run completed), records
    /// when that run started. A lease that expired and was taken by another
    /// run is left alone (logged): it is theirs now.
    #[instrument(skip_all, fields(table = %self.table, week = %lease.week))]
    pub async fn release(&self, lease: Lease, done_from: Option<Timestamp>, now: Timestamp) -> Result<(), StoreError> {
        let expires_s = now.as_millis().saturating_add(millis(KEEP_ITEM)).div_euclid(1000);
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(lease_pk(lease.week)))
            .key("sk", AttributeValue::S(LEASE_SK.into()))
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#until", "until")
            .expression_attribute_names("#expires", "expires_at")
            .expression_attribute_values(":owner", AttributeValue::S(lease.owner.clone()))
            .expression_attribute_values(":expires", n(expires_s));
        request = match done_from {
            Some(started) => request
                .update_expression("SET #done = :done, #expires = :expires REMOVE #owner, #until")
                .expression_attribute_names("#done", "done_from")
                .expression_attribute_values(":done", n(started.as_millis())),
            None => request.update_expression("SET #expires = :expires REMOVE #owner, #until"),
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                tracing::warn!(week = %lease.week, "the week's lease expired and was taken by another run before this one released it");
                Ok(())
            }
            Err(e) => Err(crate::dynamo::classify("UpdateItem (release lease)", e)),
        }
    }
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
