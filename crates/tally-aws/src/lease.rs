//! One summary run per week at a time, across Lambda invocations and
//! `tally --store dynamodb` processes: the [`WeekLock`] port on DynamoDB.
//!
//! On AWS every refresh request is its own invocation of the weekly
//! function, so a burst of erasures in one week starts several runs of that
//! week at once; interleaved, an older run could upload its export after a
//! newer one and bring an erased record back. Every run of a week therefore
//! holds this lease while it writes the week
//! (`tally_core::summary::locked`).
//!
//! # Item layout (in the records table)
//! ```text
//! lease  pk = L#2026-W47   sk = L   owner = <run id>, until = <epoch ms>     while held
//!                                   fence = <n>                              fencing token: +1 per lease taken
//!                                   done_from = <epoch ms>                   start of the last complete run
//!                                   expires_at = <epoch s> (TTL)             90 days after the last run
//! ```
//! Taking the lease is one conditional UpdateItem (free, or held past its
//! `until`) that also adds 1 to `fence`; the new `fence` is the lease's
//! token. Renewing it, and checking it before each write of the run (a
//! `SET owner = owner`: the weekly role may UpdateItem lease items, not
//! GetItem them), are UpdateItems conditional on `owner`, `fence` and
//! `until >= now`;
//! releasing it removes `owner` and `until` only if this run still holds it
//! (`owner` and `fence`). `done_from` lets a run triggered by a request skip
//! the week when a run that started after the request has completed since.
//! An item written before `fence` existed starts counting at 1.

use std::time::Duration;

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use tally_core::ports::{Acquired, StoreError, WeekLease, WeekLock};
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

/// Per-week leases in the records table (see the module docs): the
/// [`WeekLock`] adapter on AWS.
#[derive(Debug, Clone)]
pub struct DynamoDbWeekLease {
    client: Client,
    table: String,
}

impl DynamoDbRecordStore {
    /// Leases in this store's table, through its client.
    pub fn week_lease(&self) -> DynamoDbWeekLease {
        DynamoDbWeekLease { client: self.client().clone(), table: self.table().to_owned() }
    }
}

fn number(item: Option<&HashMap<String, AttributeValue>>, name: &str) -> Option<i64> {
    item?.get(name)?.as_n().ok()?.parse().ok()
}

impl DynamoDbWeekLease {
    /// If `lease` is still held at `now` (its owner and fence, not
    /// expired), sets `until` to `until` (a renewal) or, with `None`,
    /// changes nothing (a check: the weekly role may UpdateItem lease
    /// items, not GetItem them). `false` when it is not held.
    async fn extend(&self, lease: &WeekLease, now: Timestamp, until: Option<i64>) -> Result<bool, StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(lease_pk(lease.week)))
            .key("sk", AttributeValue::S(LEASE_SK.into()))
            .condition_expression("#owner = :owner AND #fence = :fence AND #until >= :now")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#fence", "fence")
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":owner", AttributeValue::S(lease.holder.clone()))
            .expression_attribute_values(":fence", n(token(lease)))
            .expression_attribute_values(":now", n(now.as_millis()));
        let request = match until {
            Some(until) => {
                request.update_expression("SET #until = :until").expression_attribute_values(":until", n(until))
            }
            None => request.update_expression("SET #owner = :owner"),
        };
        let result = request.send().await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(crate::dynamo::classify("UpdateItem (renew or check lease)", e)),
        }
    }
}

#[async_trait]
impl WeekLock for DynamoDbWeekLease {
    /// `holder` must be unique per run: a release is conditional on it.
    #[instrument(skip_all, fields(table = %self.table, week = %week))]
    async fn try_acquire(
        &self,
        week: IsoWeek,
        holder: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Acquired, StoreError> {
        let until = now.as_millis().saturating_add(millis(ttl));
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(lease_pk(week)))
            .key("sk", AttributeValue::S(LEASE_SK.into()))
            .update_expression("SET #owner = :owner, #until = :until ADD #fence :one")
            .condition_expression("attribute_not_exists(#until) OR #until < :now")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#until", "until")
            .expression_attribute_names("#fence", "fence")
            .expression_attribute_values(":owner", AttributeValue::S(holder.into()))
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":now", n(now.as_millis()))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => {
                let item = out.attributes.as_ref();
                Ok(Acquired::Taken(WeekLease {
                    week,
                    holder: holder.to_owned(),
                    token: number(item, "fence").and_then(|t| u64::try_from(t).ok()).unwrap_or_default(),
                    until: Timestamp::from_millis(until),
                    done_from: number(item, "done_from").map(Timestamp::from_millis),
                }))
            }
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                let old = e.as_service_error().and_then(|e| match e {
                    UpdateItemError::ConditionalCheckFailedException(c) => c.item.clone(),
                    _ => None,
                });
                let holder = old
                    .as_ref()
                    .and_then(|item| item.get("owner")?.as_s().ok().cloned())
                    .unwrap_or_else(|| "another run".into());
                let until = number(old.as_ref(), "until").unwrap_or_else(|| now.as_millis());
                Ok(Acquired::Held { holder, until: Timestamp::from_millis(until) })
            }
            Err(e) => Err(crate::dynamo::classify("UpdateItem (take lease)", e)),
        }
    }

    #[instrument(skip_all, fields(table = %self.table, week = %lease.week))]
    async fn renew(&self, lease: &mut WeekLease, now: Timestamp, ttl: Duration) -> Result<bool, StoreError> {
        let until = now.as_millis().saturating_add(millis(ttl));
        let renewed = self.extend(lease, now, Some(until)).await?;
        if renewed {
            lease.until = Timestamp::from_millis(until);
        }
        Ok(renewed)
    }

    #[instrument(skip_all, fields(table = %self.table, week = %lease.week))]
    async fn check(&self, lease: &WeekLease, now: Timestamp) -> Result<bool, StoreError> {
        self.extend(lease, now, None).await
    }

    #[instrument(skip_all, fields(table = %self.table, week = %lease.week))]
    async fn release(
        &self,
        lease: WeekLease,
        done_from: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let expires_s = now.as_millis().saturating_add(millis(KEEP_ITEM)).div_euclid(1000);
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(lease_pk(lease.week)))
            .key("sk", AttributeValue::S(LEASE_SK.into()))
            .condition_expression("#owner = :owner AND #fence = :fence")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#fence", "fence")
            .expression_attribute_names("#until", "until")
            .expression_attribute_names("#expires", "expires_at")
            .expression_attribute_values(":owner", AttributeValue::S(lease.holder.clone()))
            .expression_attribute_values(":fence", n(token(&lease)))
            .expression_attribute_values(":expires", n(expires_s));
        request = match done_from {
            Some(started) => request
                .update_expression("SET #done = :done, #expires = :expires REMOVE #owner, #until")
                .expression_attribute_names("#done", "done_from")
                .expression_attribute_values(":done", n(started.as_millis())),
            None => request.update_expression("SET #expires = :expires REMOVE #owner, #until"),
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(crate::dynamo::classify("UpdateItem (release lease)", e)),
        }
    }
}

fn token(lease: &WeekLease) -> i64 {
    i64::try_from(lease.token).unwrap_or(i64::MAX)
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
