//! Both Lambda handlers in-process, fed the fixtures under `events/`, against
//! moto. Run with `./scripts/with-moto cargo test -p tally-lambda`.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use http_body_util::BodyExt;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;
use tally_aws::testing::fresh_adapters;
use tally_core::testing::FixedClock;
use tally_core::{Clock, IsoWeek, Record, RecordId, RecordLifecycle, RecordStore, SummarySink, Timestamp};
use tally_lambda::{Retention, WeekPruned, WeeklyDeps, WeeklyError, api_service, handle_weekly};
use tower::ServiceExt;

macro_rules! event {
    ($name:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/", $name))
    };
}

struct Env {
    store: Arc<dyn RecordStore>,
    /// The same table as `store`, as the lifecycle port.
    lifecycle: Arc<dyn RecordLifecycle>,
    sink: Arc<dyn SummarySink>,
    clock: Arc<FixedClock>,
}

async fn env() -> Env {
    let (store, sink, _) = fresh_adapters().await;
    let store = Arc::new(store);
    Env {
        store: store.clone(),
        lifecycle: store,
        sink: Arc::new(sink),
        clock: Arc::new(FixedClock::at(Timestamp::now())),
    }
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    json: Value,
}

async fn call(env: &Env, fixture: &str) -> Answer {
    let request = lambda_http::request::from_str(fixture).expect("fixture is an API Gateway event");
    let clock: Arc<dyn Clock> = env.clock.clone();
    let response = api_service(env.store.clone(), env.sink.clone(), clock).oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer { status, headers, json }
}

#[tokio::test]
async fn health_answers_without_a_key() {
    let env = env().await;
    let a = call(&env, event!("apigw-health.json")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json["status"], "ok");
}

#[tokio::test]
async fn the_original_apps_hello_world_event_is_stored() {
    let env = env().await;
    // GIVEN the 2021 app's sample event on its own route, POST /Prod/post
    let a = call(&env, event!("apigw-post-legacy-hello-world.json")).await;
    // THEN it is stored and answered with 201, id and Location
    assert_eq!(a.status, 201, "{}", a.json);
    let id = RecordId::parse(a.json["id"].as_str().unwrap()).unwrap();
    assert_eq!(a.headers["location"], format!("/records/{id}").as_str());
    let stored = env.store.get(id).await.unwrap().unwrap();
    assert_eq!(stored.data, r#"{"message": "hello world"}"#);
}

#[tokio::test]
async fn post_records_stores_one_record_losslessly() {
    let env = env().await;
    let a = call(&env, event!("apigw-post-records.json")).await;
    assert_eq!(a.status, 201, "{}", a.json);
    let id = RecordId::parse(a.json["id"].as_str().unwrap()).unwrap();
    assert_eq!(
        env.store.get(id).await.unwrap().unwrap().data,
        r#"{"sensor":"t-1","celsius":21.5,"at":"2026-11-25T15:30:00Z"}"#
    );
}

#[tokio::test]
async fn an_idempotent_ndjson_batch_is_stored_once() {
    let env = env().await;
    let first = call(&env, event!("apigw-post-records-batch.json")).await;
    assert_eq!(first.status, 201, "{}", first.json);
    assert_eq!(first.json["count"], 3);
    // API Gateway redelivers / the client retries: same answer, nothing new.
    env.clock.advance_ms(1500);
    let again = call(&env, event!("apigw-post-records-batch.json")).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.json, first.json);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let week = IsoWeek::containing(env.clock.now());
    assert_eq!(tally_core::testing::collect_week(env.store.as_ref(), week, 100).await.len(), 3);
}

#[tokio::test]
async fn get_record_reads_back_by_id() {
    let env = env().await;
    let a = call(&env, event!("apigw-get-record.json")).await;
    assert_eq!(a.status, 404, "{}", a.json);
    let id = RecordId::parse("01KAQ6ZP4W0000000000000000").unwrap();
    let record = Record { id, received_at: id.timestamp(), data: r#"{"k":1.0}"#.into() };
    env.store.insert(std::slice::from_ref(&record), None).await.unwrap();
    let a = call(&env, event!("apigw-get-record.json")).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["id"], id.to_string());
    assert_eq!(a.json["data"], serde_json::json!({"k": 1.0}));
}

fn weekly_event(fixture: &str) -> LambdaEvent<Value> {
    LambdaEvent::new(serde_json::from_str(fixture).unwrap(), Context::default())
}

fn weekly_deps(env: &Env) -> WeeklyDeps {
    let clock: Arc<dyn Clock> = env.clock.clone();
    WeeklyDeps { store: env.store.clone(), sink: env.sink.clone(), clock, options: Default::default(), retention: None }
}

async fn seed_week(env: &Env, week: IsoWeek, n: i64) {
    let records: Vec<Record> = (0..n)
        .map(|i| {
            let at = Timestamp::from_millis(week.start().as_millis() + 3_600_000 * (i + 1));
            Record { id: RecordId::generate(at), received_at: at, data: format!(r#"{{"i":{i},"ok":true}}"#) }
        })
        .collect();
    env.store.insert(&records, None).await.unwrap();
}

#[tokio::test]
async fn the_scheduled_event_summarizes_the_previous_week_and_catches_up() {
    let env = env().await;
    let previous = IsoWeek::last_complete(env.clock.now());
    let older = previous.previous().previous();
    seed_week(&env, previous, 5).await;
    seed_week(&env, older, 2).await;
    // The current week is never summarized early.
    seed_week(&env, previous.next(), 1).await;

    let out = handle_weekly(&weekly_deps(&env), weekly_event(event!("schedule-weekly.json"))).await.unwrap();

    let done: Vec<(IsoWeek, u64)> = out.weeks.iter().map(|w| (w.week, w.records)).collect();
    assert_eq!(done, vec![(older, 2), (previous, 5)]);
    assert_eq!(out.records, 7);
    assert_eq!(env.sink.list_weeks().await.unwrap(), vec![older, previous]);
    let manifest = env.sink.read_object(previous, "manifest.json").await.unwrap().unwrap();
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest["records"], 5);
    // A rerun (the scheduler retrying) converges on the same summaries.
    let again = handle_weekly(&weekly_deps(&env), weekly_event(event!("schedule-weekly.json"))).await.unwrap();
    assert_eq!(again.weeks.iter().map(|w| w.week).collect::<Vec<_>>(), vec![previous]);
}

#[tokio::test]
async fn a_given_week_or_range_is_built_and_served_by_the_api() {
    let env = env().await;
    let w47 = IsoWeek::parse("2026-W47").unwrap();
    seed_week(&env, w47, 3).await;
    let out = handle_weekly(&weekly_deps(&env), weekly_event(event!("schedule-week.json"))).await.unwrap();
    assert_eq!(out.weeks.len(), 1);
    assert_eq!(out.records, 3);
    let out = handle_weekly(&weekly_deps(&env), weekly_event(event!("schedule-range.json"))).await.unwrap();
    assert_eq!(out.weeks.iter().map(|w| (w.week, w.records)).collect::<Vec<_>>(), vec![(w47.previous(), 0), (w47, 3)]);

    // The API lists and serves what the weekly function wrote.
    let list = call(&env, event!("apigw-list-summaries.json")).await;
    assert_eq!(list.status, 200, "{}", list.json);
    assert!(list.json.to_string().contains("2026-W47"), "{}", list.json);
    let summary = call(&env, event!("apigw-get-summary.json")).await;
    assert_eq!(summary.status, 200, "{}", summary.json);
    assert!(summary.json.to_string().contains("2026-W47"), "{}", summary.json);
}

fn with_retention(env: &Env, keep_weeks: u32) -> WeeklyDeps {
    WeeklyDeps { retention: Some(Retention { store: env.lifecycle.clone(), keep_weeks }), ..weekly_deps(env) }
}

fn week_event(week: IsoWeek) -> LambdaEvent<Value> {
    LambdaEvent::new(serde_json::json!({ "week": week }), Context::default())
}

#[tokio::test]
async fn after_a_run_the_retention_deletes_old_summarized_weeks_only() {
    let env = env().await;
    let previous = IsoWeek::last_complete(env.clock.now());
    let old = |n: usize| (0..n).fold(previous, |w, _| w.previous());
    let (oldest, older) = (old(5), old(4));
    seed_week(&env, oldest, 2).await;
    seed_week(&env, older, 3).await;
    seed_week(&env, previous, 1).await;

    // GIVEN a retention of 2 weeks WHEN one old week is summarized by hand
    let out = handle_weekly(&with_retention(&env, 2), week_event(older)).await.unwrap();
    // THEN its records go (its summary stays); the other old week has no
    // summary, so its records are kept and reported; the recent week is kept.
    assert_eq!(out.pruned, vec![WeekPruned { week: older, records: 3 }]);
    assert_eq!(out.kept_unsummarized, vec![oldest]);
    assert_eq!(env.store.weeks().await.unwrap(), vec![oldest, previous]);
    assert!(tally_core::testing::collect_week(env.store.as_ref(), older, 100).await.is_empty());
    assert_eq!(env.sink.list_weeks().await.unwrap(), vec![older]);

    // WHEN the schedule runs: it catches up the old week, then prunes it.
    let out = handle_weekly(&with_retention(&env, 2), weekly_event(event!("schedule-weekly.json"))).await.unwrap();
    assert_eq!(out.pruned, vec![WeekPruned { week: oldest, records: 2 }]);
    assert!(out.kept_unsummarized.is_empty());
    assert_eq!(env.store.weeks().await.unwrap(), vec![previous]);
    assert_eq!(env.sink.list_weeks().await.unwrap(), vec![oldest, older, previous]);
}

#[tokio::test]
async fn without_retention_nothing_is_deleted() {
    let env = env().await;
    let old = IsoWeek::last_complete(env.clock.now()).previous().previous().previous();
    seed_week(&env, old, 2).await;
    let out = handle_weekly(&weekly_deps(&env), week_event(old)).await.unwrap();
    assert!(out.pruned.is_empty() && out.kept_unsummarized.is_empty());
    assert_eq!(env.store.weeks().await.unwrap(), vec![old]);
}

#[tokio::test]
async fn a_failing_prune_is_logged_and_does_not_fail_the_run() {
    let env = env().await;
    let old = IsoWeek::last_complete(env.clock.now()).previous().previous().previous();
    seed_week(&env, old, 2).await;
    let mut config = tally_aws::testing::fresh_config().await;
    config.table = "no-such-table".into();
    let (broken, _) = tally_aws::connect(&config).await.unwrap();
    let deps =
        WeeklyDeps { retention: Some(Retention { store: Arc::new(broken), keep_weeks: 0 }), ..weekly_deps(&env) };
    let out = handle_weekly(&deps, week_event(old)).await.unwrap();
    assert_eq!(out.weeks.len(), 1, "the summary is written");
    assert!(out.pruned.is_empty());
    assert_eq!(env.store.weeks().await.unwrap(), vec![old], "nothing deleted");
}

#[tokio::test]
async fn a_bad_weekly_event_is_an_error_so_the_scheduler_retries_and_dead_letters() {
    let env = env().await;
    let err = handle_weekly(&weekly_deps(&env), weekly_event(r#"{"week":"last"}"#)).await.unwrap_err();
    assert!(matches!(err, WeeklyError::BadRequest(_)), "{err:?}");
    let diagnostic = lambda_runtime::Diagnostic::from(err);
    assert_eq!(diagnostic.error_type, "tally.BadRequest");
}

#[tokio::test]
async fn a_failing_store_fails_the_weekly_run() {
    let mut config = tally_aws::testing::fresh_config().await;
    config.table = "no-such-table".into();
    let (store, sink) = tally_aws::connect(&config).await.unwrap();
    let deps = WeeklyDeps::new(Arc::new(store), Arc::new(sink));
    let err = handle_weekly(&deps, weekly_event(event!("schedule-week.json"))).await.unwrap_err();
    assert!(matches!(err, WeeklyError::Summarize(_)), "{err:?}");
    assert!(deps.sink.list_weeks().await.unwrap().is_empty());
}
