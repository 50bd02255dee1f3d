//! Both Lambda handlers in-process, fed the fixtures under `events/`, against
//! moto. Run with `./scripts/with-moto cargo test -p tally-lambda`.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use http_body_util::BodyExt;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;
use tally_aws::testing::fresh_adapters;
use tally_aws::{DynamoDbRecordStore, S3SummarySink, S3WeekRefresh};
use tally_core::lifecycle::{SummaryState, erase};
use tally_core::ports::WeekRefresh;
use tally_core::report_link::{LinkSigner, PublicUrl, ReportLinks};
use tally_core::summary::fanout::part_object;
use tally_core::summary::{MANIFEST_JSON, Part, RECORDS_NDJSON_GZ, SUMMARY_HTML, SUMMARY_JSON};
use tally_core::testing::FixedClock;
use tally_core::{Clock, IsoWeek, Record, RecordId, RecordLifecycle, RecordStore, SummarySink, Timestamp};
use tally_lambda::{
    MAX_WEEKS_PER_RUN, Retention, WeekPruned, WeeklyDeps, WeeklyError, WeeklyOutput, api_service, handle_weekly,
    handle_weekly_event,
};
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
    dynamo: Arc<DynamoDbRecordStore>,
    s3: S3SummarySink,
    config: tally_aws::AwsConfig,
    /// Checks report links with a Secrets Manager secret on moto, as the API function does.
    signer: LinkSigner,
}

async fn env() -> Env {
    env_at(Timestamp::now()).await
}

async fn env_at(now: Timestamp) -> Env {
    let (store, sink, config) = fresh_adapters().await;
    let store = Arc::new(store);
    let arn = tally_aws::testing::create_link_secret(&config).await;
    let secrets = tally_aws::secrets_manager_client(&tally_aws::sdk_config(&config).await);
    let signer = LinkSigner::new(Arc::new(tally_aws::SecretsManagerLinkSecret::new(secrets, arn)));
    Env {
        signer,
        config,
        store: store.clone(),
        lifecycle: store.clone(),
        sink: Arc::new(sink.clone()),
        clock: Arc::new(FixedClock::at(now)),
        dynamo: store,
        s3: sink,
    }
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    json: Value,
}

async fn call(env: &Env, fixture: &str) -> Answer {
    let (status, headers, bytes) = call_raw(env, fixture).await;
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer { status, headers, json }
}

async fn call_raw(env: &Env, fixture: &str) -> (u16, http::HeaderMap, bytes::Bytes) {
    let request = lambda_http::request::from_str(fixture).expect("fixture is an API Gateway event");
    let clock: Arc<dyn Clock> = env.clock.clone();
    let refresh = Arc::new(S3WeekRefresh::new(&env.s3));
    let service = api_service(env.lifecycle.clone(), env.sink.clone(), refresh, env.signer.clone(), clock, None);
    let response = service.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, bytes)
}

/// The API's URL, as the template passes it to the weekly function (`TALLY_PUBLIC_URL`).
const API_URL: &str = "https://abc123defg.execute-api.us-east-1.amazonaws.com/Prod/";

/// The event API Gateway sends the function when a browser opens `link`
/// (a report link under [`API_URL`], or a relative one from a page):
/// `apigw-get-report-week.json` with the link's path and query.
fn report_event(link: &str) -> String {
    let rest = link.strip_prefix(API_URL.trim_end_matches('/')).unwrap_or(link);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut event: Value = serde_json::from_str(event!("apigw-get-report-week.json")).unwrap();
    let week = path.strip_prefix("/reports/").and_then(|w| w.strip_suffix('/')).filter(|w| !w.is_empty());
    event["path"] = path.into();
    event["requestContext"]["path"] = format!("/Prod{path}").into();
    let resource = if week.is_some() { "/reports/{week}" } else { "/reports" };
    event["resource"] = resource.into();
    event["requestContext"]["resourcePath"] = resource.into();
    event["pathParameters"] = week.map_or(Value::Null, |w| serde_json::json!({ "week": w }));
    let pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).unwrap())
        .collect();
    event["queryStringParameters"] = if pairs.is_empty() {
        Value::Null
    } else {
        pairs.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect()
    };
    event["multiValueQueryStringParameters"] = if pairs.is_empty() {
        Value::Null
    } else {
        pairs.iter().map(|(k, v)| (k.clone(), serde_json::json!([v]))).collect()
    };
    event.to_string()
}

/// Opens `link` through the API function: status, headers, body.
async fn open(env: &Env, link: &str) -> (u16, http::HeaderMap, String) {
    let (status, headers, body) = call_raw(env, &report_event(link)).await;
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
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
    WeeklyDeps {
        store: env.lifecycle.clone(),
        sink: env.sink.clone(),
        clock,
        ..WeeklyDeps::new(env.dynamo.clone(), env.s3.clone())
    }
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
    let deps = WeeklyDeps::new(Arc::new(store), sink);
    let err = handle_weekly(&deps, weekly_event(event!("schedule-week.json"))).await.unwrap_err();
    // The week's lease, in the same table, is the first thing to fail.
    assert!(matches!(err, WeeklyError::Lease { .. }), "{err:?}");
    assert!(deps.sink.list_weeks().await.unwrap().is_empty());
}

// ------------------------------------------------------- refresh after erasure

fn at(rfc3339: &str) -> Timestamp {
    Timestamp::parse_rfc3339(rfc3339).unwrap()
}

/// A fixture with the test's bucket in place of the example bucket.
fn refresh_event(env: &Env, fixture: &str) -> LambdaEvent<Value> {
    weekly_event(&fixture.replace("tally-summarybucket-example", env.s3.bucket()))
}

fn w47() -> IsoWeek {
    IsoWeek::parse("2026-W47").unwrap()
}

async fn manifest_records(env: &Env, week: IsoWeek) -> Option<u64> {
    let manifest = env.sink.read_object(week, MANIFEST_JSON).await.unwrap()?;
    serde_json::from_slice::<Value>(&manifest).unwrap()["records"].as_u64()
}

async fn export_holds(env: &Env, week: IsoWeek, id: RecordId) -> bool {
    use std::io::Read;
    let gz = env.sink.read_object(week, RECORDS_NDJSON_GZ).await.unwrap().unwrap();
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(&gz[..]).read_to_string(&mut text).unwrap();
    text.contains(&id.to_string())
}

async fn lease_held(env: &Env, week: IsoWeek) -> bool {
    tally_aws::testing::lease_holder(&env.config, week).await.is_some()
}

async fn request_exists(env: &Env, week: IsoWeek) -> bool {
    S3WeekRefresh::new(&env.s3).pending().await.unwrap().contains(&week)
}

/// GIVEN W47 summarized with 3 records (at 11:00) WHEN one is erased, which
/// writes W47's refresh request (the fixtures' object, created at 12:00).
async fn summarized_then_erased(env: &Env) -> RecordId {
    seed_week(env, w47(), 3).await;
    handle_weekly(&weekly_deps(env), weekly_event(event!("schedule-week.json"))).await.unwrap();
    assert_eq!(manifest_records(env, w47()).await, Some(3));
    let victim = tally_core::testing::collect_week(env.store.as_ref(), w47(), 10).await[1].id;
    assert!(export_holds(env, w47(), victim).await);
    let refresh = S3WeekRefresh::new(&env.s3);
    let erased =
        erase(env.lifecycle.as_ref(), env.sink.as_ref(), &refresh, env.clock.now(), victim).await.unwrap().unwrap();
    assert_eq!(erased.summary, SummaryState::Regenerating);
    assert!(request_exists(env, w47()).await);
    // The event reaches the function a little later.
    env.clock.set(at("2026-11-30T12:00:30Z"));
    victim
}

#[tokio::test]
async fn a_refresh_request_event_rewrites_the_week_without_the_erased_record() {
    let env = env_at(at("2026-11-30T11:00:00Z")).await;
    let victim = summarized_then_erased(&env).await;

    // WHEN S3 notifies the weekly function of the request object
    let out = handle_weekly(&weekly_deps(&env), refresh_event(&env, event!("refresh-request.json"))).await.unwrap();

    // THEN the week is summarized again without the record, and the request is gone
    assert_eq!(out.weeks.iter().map(|w| (w.week, w.records)).collect::<Vec<_>>(), vec![(w47(), 2)]);
    assert_eq!(manifest_records(&env, w47()).await, Some(2));
    assert!(!export_holds(&env, w47(), victim).await);
    assert!(!request_exists(&env, w47()).await);
    assert!(out.pruned.is_empty(), "a refresh does not prune");

    // A duplicate delivery of the same event finds the week already rewritten
    // by a run that started after the request.
    env.clock.set(at("2026-11-30T12:05:00Z"));
    let again = handle_weekly(&weekly_deps(&env), refresh_event(&env, event!("refresh-request.json"))).await.unwrap();
    assert_eq!((again.weeks.len(), again.covered.as_slice()), (0, &[w47()][..]));
}

#[tokio::test]
async fn the_eventbridge_shape_of_the_event_works_the_same() {
    let env = env_at(at("2026-11-30T11:00:00Z")).await;
    let victim = summarized_then_erased(&env).await;
    let event = refresh_event(&env, event!("eventbridge-refresh-request.json"));
    let out = handle_weekly(&weekly_deps(&env), event).await.unwrap();
    assert_eq!(out.weeks.iter().map(|w| (w.week, w.records)).collect::<Vec<_>>(), vec![(w47(), 2)]);
    assert!(!export_holds(&env, w47(), victim).await);
    assert!(!request_exists(&env, w47()).await);
}

#[tokio::test]
async fn concurrent_refreshes_of_one_week_run_one_after_the_other_and_coalesce() {
    let env = env_at(at("2026-11-30T11:00:00Z")).await;
    summarized_then_erased(&env).await;
    // WHEN a second request of the week arrives while the first one's run
    // holds the week (a burst of erasures). B starts once A holds the lease:
    // moto, unlike DynamoDB, does not make two simultaneous conditional
    // updates of one item atomic.
    let deps = weekly_deps(&env);
    let b_after_a_holds = async {
        while !lease_held(&env, w47()).await {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        handle_weekly(&deps, refresh_event(&env, event!("eventbridge-refresh-request.json"))).await
    };
    let (a, b) =
        tokio::join!(handle_weekly(&deps, refresh_event(&env, event!("refresh-request.json"))), b_after_a_holds);
    // THEN one rewrites the week; the other waits for its lease and then
    // finds the week rewritten by a run that started after its request.
    let (a, b): (WeeklyOutput, WeeklyOutput) = (a.unwrap(), b.unwrap());
    let rewritten = a.weeks.len() + b.weeks.len();
    let covered = a.covered.len() + b.covered.len();
    assert_eq!((rewritten, covered), (1, 1), "{a:?} {b:?}");
    assert_eq!(manifest_records(&env, w47()).await, Some(2));
}

#[tokio::test]
async fn a_week_held_by_another_run_for_too_long_fails_the_event_so_lambda_retries_it() {
    let env = env_at(at("2026-11-30T11:00:00Z")).await;
    let deps = WeeklyDeps { lease_wait: std::time::Duration::from_millis(500), ..weekly_deps(&env) };
    let held = deps.lease.try_acquire(w47(), "someone-else", env.clock.now(), deps.lease_hold).await.unwrap();
    assert!(matches!(held, tally_core::ports::Acquired::Taken(_)), "{held:?}");
    let err = handle_weekly(&deps, refresh_event(&env, event!("refresh-request.json"))).await.unwrap_err();
    assert!(matches!(err, WeeklyError::Busy { .. }), "{err:?}");
    assert_eq!(lambda_runtime::Diagnostic::from(err).error_type, "tally.Busy");
    // Scheduled and operator runs wait for the lease too.
    let err = handle_weekly(&deps, weekly_event(event!("schedule-week.json"))).await.unwrap_err();
    assert!(matches!(err, WeeklyError::Busy { .. }), "{err:?}");
}

#[tokio::test]
async fn the_schedule_also_rewrites_weeks_whose_request_event_was_lost() {
    let env = env_at(at("2026-11-30T11:00:00Z")).await;
    let victim = summarized_then_erased(&env).await;
    // The request's event never arrives; the next scheduled run picks it up.
    let out = handle_weekly(&weekly_deps(&env), weekly_event(event!("schedule-weekly.json"))).await.unwrap();
    assert!(out.weeks.iter().any(|w| (w.week, w.records) == (w47(), 2)), "{out:?}");
    assert!(!export_holds(&env, w47(), victim).await);
    assert!(!request_exists(&env, w47()).await);
}

#[tokio::test]
async fn a_request_for_a_week_the_retention_has_emptied_keeps_its_summary() {
    let env = env_at(at("2026-11-30T11:00:00Z")).await;
    summarized_then_erased(&env).await;
    // GIVEN the retention deleted the week's records before the event came
    env.lifecycle.delete_week(w47()).await.unwrap();
    let out = handle_weekly(&weekly_deps(&env), refresh_event(&env, event!("refresh-request.json"))).await.unwrap();
    // THEN the summary is not replaced by an empty one
    assert_eq!((out.weeks.len(), out.covered.as_slice()), (0, &[w47()][..]));
    assert_eq!(manifest_records(&env, w47()).await, Some(3));
    assert!(!request_exists(&env, w47()).await);
}

#[tokio::test]
async fn other_s3_events_are_errors_that_say_what_was_expected() {
    let env = env().await;
    let fixture = event!("refresh-request.json").replace("tally-summarybucket-example", env.s3.bucket());
    for (name, event) in [
        ("another object of the week", fixture.replace("refresh.request", "manifest.json")),
        ("another bucket", event!("refresh-request.json").to_owned()),
        ("a deletion", fixture.replace("ObjectCreated:Put", "ObjectRemoved:Delete")),
        ("another service", fixture.replace("\"aws:s3\"", "\"aws:sqs\"")),
        ("garbage", r#"{"Records":"x"}"#.to_owned()),
        ("an unknown object", r#"{"hello":"world"}"#.to_owned()),
    ] {
        let err = handle_weekly(&weekly_deps(&env), weekly_event(&event)).await.unwrap_err();
        let WeeklyError::BadRequest(msg) = &err else { panic!("{name}: {err:?}") };
        assert!(msg.contains("refresh.request"), "{name}: {msg}");
    }
    // S3's test event (sent when a notification is set up) is not an error.
    let test_event = weekly_event(r#"{"Service":"Amazon S3","Event":"s3:TestEvent"}"#);
    assert!(handle_weekly(&weekly_deps(&env), test_event).await.unwrap().weeks.is_empty());
}

// ------------------------------------------------------ reads and erasure (API)

/// `fixture` with `id` in place of the fixtures' record id.
fn for_id(fixture: &str, id: RecordId) -> String {
    fixture.replace("01KAQ6ZP4W0000000000000000", &id.to_string())
}

/// `fixture` with `name=value` added to its query string.
fn with_query(fixture: &str, name: &str, value: &str) -> String {
    let mut event: Value = serde_json::from_str(fixture).unwrap();
    event["queryStringParameters"][name] = Value::from(value);
    event["multiValueQueryStringParameters"][name] = serde_json::json!([value]);
    event.to_string()
}

#[tokio::test]
async fn get_records_reads_a_week_page_by_page() {
    let env = env().await;
    seed_week(&env, w47(), 3).await;
    let stored = tally_core::testing::collect_week(env.store.as_ref(), w47(), 10).await;
    // GET /records?week=2026-W47&limit=2, then the next page with its cursor
    let first = call(&env, event!("apigw-list-records.json")).await;
    assert_eq!(first.status, 200, "{}", first.json);
    let next = first.json["next"].as_str().expect("a cursor to the next page").to_owned();
    let second = call(&env, &with_query(event!("apigw-list-records.json"), "cursor", &next)).await;
    assert_eq!(second.status, 200, "{}", second.json);
    assert_eq!(second.json["next"], Value::Null);
    let ids: Vec<String> = [&first.json, &second.json]
        .iter()
        .flat_map(|page| page["records"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(ids, stored.iter().map(|r| r.id.to_string()).collect::<Vec<_>>());
    // A bad parameter is a 400 naming it.
    let bad = call(&env, &with_query(event!("apigw-list-records.json"), "limit", "0")).await;
    assert_eq!(bad.status, 400, "{}", bad.json);
}

#[tokio::test]
async fn an_iam_signed_delete_erases_the_record_and_its_week_is_rewritten_without_it() {
    let env = env_at(at("2026-11-30T11:00:00Z")).await;
    seed_week(&env, w47(), 3).await;
    handle_weekly(&weekly_deps(&env), weekly_event(event!("schedule-week.json"))).await.unwrap();
    let victim = tally_core::testing::collect_week(env.store.as_ref(), w47(), 10).await[1].id;

    // WHEN an operator sends the signed DELETE
    let a = call(&env, &for_id(event!("apigw-delete-record.json"), victim)).await;

    // THEN the record is gone, and the week's refresh request is written
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json, serde_json::json!({"id": victim.to_string(), "week": "2026-W47", "summary": "regenerating"}));
    assert_eq!(env.store.get(victim).await.unwrap(), None);
    assert!(request_exists(&env, w47()).await);
    // ...whose event makes the weekly function rewrite the week without it.
    env.clock.set(at("2026-11-30T12:00:30Z"));
    let out = handle_weekly(&weekly_deps(&env), refresh_event(&env, event!("refresh-request.json"))).await.unwrap();
    assert_eq!(out.weeks.iter().map(|w| (w.week, w.records)).collect::<Vec<_>>(), vec![(w47(), 2)]);
    assert!(!export_holds(&env, w47(), victim).await);
    assert!(!request_exists(&env, w47()).await);
    // Erased already: 404.
    let again = call(&env, &for_id(event!("apigw-delete-record.json"), victim)).await;
    assert_eq!(again.status, 404, "{}", again.json);
}

#[tokio::test]
async fn a_delete_without_the_iam_caller_api_gateway_adds_is_refused() {
    let env = env().await;
    seed_week(&env, w47(), 1).await;
    let id = tally_core::testing::collect_week(env.store.as_ref(), w47(), 10).await[0].id;
    let mut event: Value = serde_json::from_str(&for_id(event!("apigw-delete-record.json"), id)).unwrap();
    event["requestContext"]["identity"]["userArn"] = Value::Null;
    let a = call(&env, &event.to_string()).await;
    assert_eq!(a.status, 403, "{}", a.json);
    assert_eq!(a.headers["content-type"], "application/problem+json");
    assert!(env.store.get(id).await.unwrap().is_some(), "nothing erased");
    assert!(!request_exists(&env, w47()).await);
}

#[tokio::test]
async fn a_weekly_run_sweeps_the_staged_items_a_killed_writer_left_in_its_week() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let env = env().await;
    let w47 = IsoWeek::parse("2026-W47").unwrap();
    seed_week(&env, w47, 3).await;
    // GIVEN five staged items of a batch whose writer died before committing it
    let raw = tally_aws::dynamodb_client(&tally_aws::sdk_config(&env.config).await, None);
    let at = Timestamp::from_millis(w47.start().as_millis() + 7_200_000);
    let batch = RecordId::generate(at);
    for i in 0..5 {
        let id = RecordId::generate(at);
        raw.put_item()
            .table_name(&env.config.table)
            .item("pk", AttributeValue::S(tally_aws::dynamo::record_pk(id)))
            .item("sk", AttributeValue::S(id.to_string()))
            .item("data", AttributeValue::S(format!(r#"{{"staged":{i}}}"#)))
            .item("received_at", AttributeValue::N(at.as_millis().to_string()))
            .item("batch", AttributeValue::S(batch.to_string()))
            .send()
            .await
            .unwrap();
    }
    // WHEN the week is built
    let out = handle_weekly(&weekly_deps(&env), week_event(w47)).await.unwrap();
    // THEN its summary counts only the committed records, and the staged items are gone
    assert_eq!(out.records, 3);
    let staged = raw
        .scan()
        .table_name(&env.config.table)
        .filter_expression("attribute_exists(#b)")
        .expression_attribute_names("#b", "batch")
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert_eq!(staged.items().len(), 0);
}

/// A webhook receiver on 127.0.0.1 answering 200; the notifications it got.
async fn webhook_receiver() -> (Arc<std::sync::Mutex<Vec<tally_core::summary::Notification>>>, String) {
    let posts: Arc<std::sync::Mutex<Vec<tally_core::summary::Notification>>> = Arc::default();
    let seen = posts.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: bytes::Bytes| {
            let seen = seen.clone();
            async move { seen.lock().unwrap().push(serde_json::from_slice(&body).unwrap()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (posts, format!("http://{addr}/hook"))
}

fn notifying(env: &Env, url: &str) -> WeeklyDeps {
    let webhook = tally_notify::WebhookNotifier::new(url, Some("k")).unwrap();
    let fast = tally_core::retry::RetryPolicy {
        max_attempts: 3,
        base: std::time::Duration::from_millis(5),
        max_delay: std::time::Duration::from_millis(5),
        jitter: false,
    };
    let links = ReportLinks::new(env.signer.clone(), PublicUrl::parse(API_URL).unwrap(), 30);
    WeeklyDeps { notifiers: vec![Arc::new(webhook)], notify_policy: fast, links, ..weekly_deps(env) }
}

#[tokio::test]
async fn scheduled_and_operator_runs_announce_their_weeks_and_refresh_rewrites_do_not() {
    // GIVEN W47 summarized and then an erasure in it; now is Monday of W49,
    // so the schedule owes W48.
    let env = env_at(at("2026-11-30T11:00:00Z")).await;
    summarized_then_erased(&env).await;
    let w48 = w47().next();
    seed_week(&env, w48, 4).await;
    let (posts, url) = webhook_receiver().await;
    let deps = notifying(&env, &url);

    // WHEN the refresh request's event rewrites W47, THEN nobody is told
    let out = handle_weekly(&deps, refresh_event(&env, event!("refresh-request.json"))).await.unwrap();
    assert_eq!(out.weeks.iter().map(|w| (w.week, w.records)).collect::<Vec<_>>(), vec![(w47(), 2)]);
    assert!(posts.lock().unwrap().is_empty(), "a refresh is not announced");

    // WHEN another erasure leaves a request the schedule picks up, with W48 due
    let victim = tally_core::testing::collect_week(env.store.as_ref(), w47(), 10).await[0].id;
    erase(env.lifecycle.as_ref(), env.sink.as_ref(), &S3WeekRefresh::new(&env.s3), env.clock.now(), victim)
        .await
        .unwrap()
        .unwrap();
    let out = handle_weekly(&deps, weekly_event(event!("schedule-weekly.json"))).await.unwrap();
    assert_eq!(out.weeks.iter().map(|w| w.week).collect::<Vec<_>>(), vec![w47(), w48]);
    assert_eq!(out.notifications_failed, 0);
    // THEN only W48, the week the schedule owes, is announced, once
    let sent = posts.lock().unwrap().clone();
    assert_eq!(sent.iter().map(|n| (n.week, n.records)).collect::<Vec<_>>(), vec![(w48, 4)]);
    // with a signed link to its page on the API, valid 30 days
    let report = &sent[0].report;
    let exp = report.strip_prefix(&format!("{API_URL}reports/2026-W48/?exp=")).unwrap_or_else(|| panic!("{report}"));
    let exp: i64 = exp.split('&').next().unwrap().parse().unwrap();
    assert_eq!(exp, env.clock.now().as_millis() / 1000 + 30 * 86_400, "{report}");
    assert!(sent[0].text.contains(report.as_str()));

    // An operator's run of a week is announced.
    handle_weekly(&deps, weekly_event(event!("schedule-week.json"))).await.unwrap();
    let sent = posts.lock().unwrap().clone();
    assert_eq!(sent.iter().map(|n| (n.week, n.records)).collect::<Vec<_>>(), vec![(w48, 4), (w47(), 1)]);
}

/// The link a weekly notification carries opens the week's page through the
/// API function, which reads it from S3 (moto); the page's links open the
/// other weeks and the index; a changed or expired link gets the 403 page,
/// and nothing is read for it.
#[tokio::test]
async fn the_notifications_link_opens_the_week_page_from_s3_through_the_api() {
    let env = env_at(at("2026-11-30T11:00:00Z")).await;
    let w48 = w47().next();
    seed_week(&env, w47(), 3).await;
    seed_week(&env, w48, 4).await;
    let (posts, url) = webhook_receiver().await;
    let deps = notifying(&env, &url);
    handle_weekly(&deps, weekly_event(event!("schedule-week.json"))).await.unwrap();
    handle_weekly(&deps, weekly_event(event!("schedule-weekly.json"))).await.unwrap();
    let link = posts.lock().unwrap().iter().find(|n| n.week == w48).unwrap().report.clone();
    let query = link.split_once('?').unwrap().1.to_owned();

    // WHEN a browser opens it THEN the week's page comes from S3, its links carrying the token
    let (status, headers, page) = open(&env, &link).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["content-security-policy"], tally_http::site::CONTENT_SECURITY_POLICY);
    assert_eq!(
        (headers["referrer-policy"].to_str().unwrap(), headers["x-content-type-options"].to_str().unwrap()),
        ("no-referrer", "nosniff")
    );
    let stored = String::from_utf8(env.sink.read_object(w48, SUMMARY_HTML).await.unwrap().unwrap().to_vec()).unwrap();
    assert!(page.contains("<h1>Week 2026-W48</h1>") && stored.contains("<h1>Week 2026-W48</h1>"));
    assert!(stored.contains(r#"href="../2026-W47/summary.html""#), "the stored page keeps its file links");
    assert!(page.contains(&format!(r#"href="../2026-W47/?{query}""#)), "{page}");
    // AND following its links opens the previous week and the index
    let (status, _, previous) = open(&env, &format!("/reports/2026-W47/?{query}")).await;
    assert_eq!(status, 200);
    assert!(previous.contains("<h1>Week 2026-W47</h1>"));
    let (status, _, index) = open(&env, &format!("/reports/?{query}")).await;
    assert_eq!(status, 200);
    assert!(index.contains(&format!(r#"href="2026-W48/?{query}""#)), "{index}");

    // WHEN a byte of the signature changes, or the link is past its expiry, THEN the 403 page
    let mut tampered = link.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    let (status, headers, refused) = open(&env, &tampered).await;
    assert_eq!(status, 403);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(refused.contains("This report link is not valid") && refused.contains("tally report-link --week 2026-W48"));
    env.clock.advance_ms(31 * 86_400_000);
    let (status, _, expired) = open(&env, &link).await;
    assert_eq!(status, 403);
    assert!(expired.contains("This report link has expired"), "{expired}");
    // AND the fixture (a signature tally never made) is refused too
    let (status, _, body) = call_raw(&env, event!("apigw-get-report-week.json")).await;
    assert_eq!(status, 403, "{body:?}");
}

#[tokio::test]
async fn an_unreachable_webhook_is_counted_and_the_run_succeeds() {
    let env = env_at(at("2026-11-30T11:00:00Z")).await;
    let w48 = w47().next();
    seed_week(&env, w48, 2).await;
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", listener.local_addr().unwrap())
    };
    let out = handle_weekly(&notifying(&env, &dead), weekly_event(event!("schedule-weekly.json"))).await.unwrap();
    assert_eq!(out.notifications_failed, 1);
    assert_eq!(serde_json::to_value(&out).unwrap()["notifications_failed"], 1);
    assert_eq!(manifest_records(&env, w48).await, Some(2), "the summary is written all the same");
}

fn step(payload: Value) -> LambdaEvent<Value> {
    LambdaEvent::new(payload, Context::default())
}

/// Every object of a week, by name.
async fn week_objects(env: &Env, week: IsoWeek) -> Vec<(&'static str, Option<bytes::Bytes>)> {
    let mut out = Vec::new();
    for name in [RECORDS_NDJSON_GZ, SUMMARY_JSON, SUMMARY_HTML, MANIFEST_JSON] {
        out.push((name, env.sink.read_object(week, name).await.unwrap()));
    }
    out
}

async fn part_states_left(env: &Env, week: IsoWeek) -> Vec<Part> {
    let mut left = Vec::new();
    for part in Part::all() {
        if env.sink.read_object(week, &part_object(part)).await.unwrap().is_some() {
            left.push(part);
        }
    }
    left
}

/// The state machine's steps (plan → shares → merge → finish), fed the
/// fixtures and the plan's own payloads in the order Step Functions could
/// run them, write the bytes a single invocation writes, and leave no state.
#[tokio::test]
async fn the_state_machine_steps_write_what_a_single_invocation_writes() {
    let env = env_at(at("2026-11-30T03:00:00Z")).await;
    seed_week(&env, w47(), 150).await;
    let deps = WeeklyDeps { shares: 3, ..weekly_deps(&env) };

    let plan = handle_weekly_event(&deps, weekly_event(event!("step-plan.json"))).await.unwrap();
    let weeks = plan["weeks"].as_array().unwrap();
    assert_eq!(weeks.len(), 1, "{plan}");
    assert_eq!(weeks[0]["week"], "2026-W47");
    let parts: Vec<Value> = weeks[0]["parts"].as_array().unwrap().clone();
    let shares: Vec<&str> = parts.iter().map(|p| p["part"].as_str().unwrap()).collect();
    assert_eq!(shares, ["1/3", "2/3", "3/3"]);
    assert_eq!(parts[1], serde_json::from_str::<Value>(event!("step-part.json")).unwrap());
    let merge = weeks[0]["merge"].clone();
    assert_eq!(
        (&merge["tally"], &merge["announce"], &merge["refresh"]),
        (&"merge".into(), &true.into(), &false.into())
    );

    // Shares in any order (a Map state runs them at once).
    let mut records = 0;
    for part in [parts[2].clone(), serde_json::from_str(event!("step-part.json")).unwrap(), parts[0].clone()] {
        let done = handle_weekly_event(&deps, step(part)).await.unwrap();
        records += done["records"].as_u64().unwrap();
    }
    assert_eq!(records, 150);
    assert_eq!(part_states_left(&env, w47()).await.len(), 28, "every canonical part has its state");
    assert_eq!(manifest_records(&env, w47()).await, None, "the shares alone commit nothing");

    let merged = handle_weekly_event(&deps, step(merge)).await.unwrap();
    assert_eq!(merged["records"], 150);
    assert_eq!(merged["manifest"], "summaries/2026-W47/manifest.json");
    assert!(part_states_left(&env, w47()).await.is_empty(), "the merge deletes the states");
    assert!(!lease_held(&env, w47()).await, "the merge releases the week's lease");
    let fanned_out = week_objects(&env, w47()).await;

    let finish = serde_json::json!({"tally": "finish", "weeks": [merged]});
    let out = handle_weekly_event(&deps, step(finish)).await.unwrap();
    assert_eq!((out["records"].as_u64(), out["weeks"][0]["week"].as_str()), (Some(150), Some("2026-W47")));

    // A single invocation of the same week writes the same bytes.
    handle_weekly(&deps, weekly_event(event!("schedule-week.json"))).await.unwrap();
    let single = week_objects(&env, w47()).await;
    for ((name, a), (_, b)) in fanned_out.iter().zip(&single) {
        assert!(a.is_some() && a == b, "{name} differs between the fan-out and a single invocation");
    }
}

/// The schedule's plan is the single invocation's: the previous week plus
/// catch-up, each announced, each cut into `TALLY_WEEKLY_PARTS` shares.
#[tokio::test]
async fn the_schedules_plan_catches_up_like_a_single_invocation() {
    let env = env().await;
    let previous = IsoWeek::last_complete(env.clock.now());
    let older = previous.previous().previous();
    seed_week(&env, older, 2).await;
    let deps = WeeklyDeps { shares: 2, ..weekly_deps(&env) };
    let plan = handle_weekly_event(&deps, step(serde_json::json!({"tally": "plan", "input": {}}))).await.unwrap();
    let weeks: Vec<(&str, usize, bool)> = plan["weeks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["week"].as_str().unwrap(), w["parts"].as_array().unwrap().len(), w["merge"]["announce"] == true))
        .collect();
    let (older, previous) = (older.to_string(), previous.to_string());
    assert_eq!(weeks, vec![(older.as_str(), 2, true), (previous.as_str(), 2, true)]);
}

/// A merge whose shares did not all run writes nothing and fails, naming
/// what to do; bad step payloads are errors that say what is expected.
#[tokio::test]
async fn a_merge_without_every_share_fails_and_commits_nothing() {
    let env = env_at(at("2026-11-30T03:00:00Z")).await;
    seed_week(&env, w47(), 40).await;
    let deps = WeeklyDeps { shares: 3, ..weekly_deps(&env) };
    handle_weekly_event(&deps, weekly_event(event!("step-part.json"))).await.unwrap();
    let err = handle_weekly_event(&deps, weekly_event(event!("step-merge.json"))).await.unwrap_err();
    let message = tally_core::error_chain(&err);
    assert!(matches!(err, WeeklyError::FanOut(_)), "{message}");
    assert!(message.contains("missing") && message.contains("run the whole week again"), "{message}");
    assert_eq!(manifest_records(&env, w47()).await, None);
    assert!(!lease_held(&env, w47()).await, "a failed merge releases the lease");

    for bad in [
        serde_json::json!({"tally": "part", "week": "2026-W47", "part": "4/3"}),
        serde_json::json!({"tally": "part", "week": "2026-W47"}),
        serde_json::json!({"tally": "explode"}),
    ] {
        let err = handle_weekly_event(&deps, step(bad.clone())).await.unwrap_err();
        assert!(matches!(err, WeeklyError::BadRequest(_)), "{bad}: {err}");
        assert!(err.to_string().contains("expected"), "{bad}: {err}");
    }
}

/// Issue 21, item 8: a catch-up of more weeks than one run builds plans the
/// bound's weeks (the schedule's week among them) and says "more"; Finish
/// passes it on; the continuation (`{"catch_up":true}`) plans the rest
/// without the schedule's week again. The bound is lowered to 4 here (moto is
/// slow); 600 weeks at the real bound: tally_core's plan tests and
/// tests/infra/test_statemachine.py on moto's interpreter.
#[tokio::test]
async fn a_catch_up_longer_than_one_run_is_planned_in_bounded_runs_that_continue() {
    const BOUND: usize = 4;
    let env = env().await;
    let previous = IsoWeek::last_complete(env.clock.now());
    let missed: Vec<IsoWeek> =
        std::iter::successors(Some(previous.previous()), |w| Some(w.previous())).take(BOUND + 2).collect();
    for &week in &missed {
        seed_week(&env, week, 1).await;
    }
    let deps = WeeklyDeps { shares: 1, max_weeks: BOUND, ..weekly_deps(&env) };
    assert_eq!(weekly_deps(&env).max_weeks, MAX_WEEKS_PER_RUN);
    let weeks_of = |plan: &Value| -> Vec<IsoWeek> {
        plan["weeks"].as_array().unwrap().iter().map(|w| IsoWeek::parse(w["week"].as_str().unwrap()).unwrap()).collect()
    };

    let plan = handle_weekly_event(&deps, step(serde_json::json!({"tally": "plan", "input": {}}))).await.unwrap();
    let first = weeks_of(&plan);
    assert_eq!(first.len(), BOUND);
    assert!(first.contains(&previous), "the schedule's week is always in the run");
    let mut oldest = missed.clone();
    oldest.sort_unstable();
    assert_eq!(first[..BOUND - 1], oldest[..BOUND - 1], "then the oldest missed weeks");
    assert_eq!((plan["more"].as_bool(), plan["deferred"].as_u64()), (Some(true), Some(3)));

    // Finish hands "more" to the state machine's choice.
    let finish = handle_weekly_event(&deps, step(serde_json::json!({"tally": "finish", "weeks": [], "more": true})))
        .await
        .unwrap();
    assert_eq!(finish["more"], true);

    // The run builds its weeks (a single invocation here: the same plan).
    let out = handle_weekly(&deps, weekly_event(event!("schedule-weekly.json"))).await.unwrap();
    assert_eq!(out.weeks.iter().map(|w| w.week).collect::<Vec<_>>(), first);

    // The continuation plans the 3 left, without the schedule's week again.
    let input = serde_json::json!({"catch_up": true, "AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID": "arn:x"});
    let next = handle_weekly_event(&deps, step(serde_json::json!({"tally": "plan", "input": input}))).await.unwrap();
    assert_eq!(weeks_of(&next), oldest[BOUND - 1..].to_vec());
    assert_eq!((next["more"].as_bool(), next["deferred"].as_u64()), (Some(false), Some(0)));

    let bad = serde_json::json!({"tally": "plan", "input": {"catch_up": true, "week": "2026-W47"}});
    let err = handle_weekly_event(&deps, step(bad)).await.unwrap_err();
    assert!(matches!(err, WeeklyError::BadRequest(_)) && err.to_string().contains("catch_up"), "{err}");
}

/// Issue 21, item 9: a week the retention pruned (records deleted, summary
/// kept) is never summarized again, by any entry point: the run is refused,
/// saying why and what to do, and the summary stays as it was.
#[tokio::test]
async fn rerunning_a_pruned_week_is_refused_and_keeps_its_summary() {
    let env = env().await;
    let previous = IsoWeek::last_complete(env.clock.now());
    let old = (0..4).fold(previous, |w, _| w.previous());
    seed_week(&env, old, 3).await;
    handle_weekly(&with_retention(&env, 2), week_event(old)).await.unwrap();
    assert!(!env.store.weeks().await.unwrap().contains(&old), "the retention pruned the week");
    let before = week_objects(&env, old).await;

    // An operator's rerun, a share of a fanned-out run: both refused.
    let err = handle_weekly(&weekly_deps(&env), week_event(old)).await.unwrap_err();
    let message = tally_core::error_chain(&err);
    assert!(message.contains("was pruned") && message.contains("tally import"), "{message}");
    let share = serde_json::json!({"tally": "part", "week": old, "part": "1/1"});
    let message = tally_core::error_chain(&handle_weekly_event(&weekly_deps(&env), step(share)).await.unwrap_err());
    assert!(message.contains("was pruned"), "{message}");

    assert_eq!(manifest_records(&env, old).await, Some(3));
    assert_eq!(week_objects(&env, old).await, before, "nothing of the summary changed");
    assert!(part_states_left(&env, old).await.is_empty(), "the refused share wrote no state");
}

/// With a retention of 0 weeks the previous week is pruned right after its
/// run; the schedule's input run again (a retry, deploy.sh's verification)
/// succeeds and keeps that week's summary.
#[tokio::test]
async fn the_schedule_run_again_after_a_zero_week_retention_keeps_the_pruned_week() {
    let env = env().await;
    let previous = IsoWeek::last_complete(env.clock.now());
    seed_week(&env, previous, 4).await;
    let out = handle_weekly(&with_retention(&env, 0), weekly_event(event!("schedule-weekly.json"))).await.unwrap();
    assert_eq!(out.pruned, vec![WeekPruned { week: previous, records: 4 }]);
    let before = week_objects(&env, previous).await;
    let again = handle_weekly(&with_retention(&env, 0), weekly_event(event!("schedule-weekly.json"))).await.unwrap();
    assert!(again.weeks.is_empty(), "{again:?}");
    assert_eq!(week_objects(&env, previous).await, before);
}

/// Every object a week's manifest lists has the bytes and SHA-256 it says.
async fn manifest_matches_objects(env: &Env, week: IsoWeek) {
    use sha2::Digest;
    let manifest: Value =
        serde_json::from_slice(&env.sink.read_object(week, MANIFEST_JSON).await.unwrap().unwrap()).unwrap();
    for object in manifest["objects"].as_array().unwrap() {
        let key = object["key"].as_str().unwrap();
        let name = key.rsplit('/').next().unwrap();
        let body = env.sink.read_object(week, name).await.unwrap().unwrap();
        assert_eq!(object["bytes"].as_u64(), Some(body.len() as u64), "{key}");
        assert_eq!(object["sha256"].as_str(), Some(hex::encode(sha2::Sha256::digest(&body)).as_str()), "{key}");
    }
}

/// Issue 22, item 3 on AWS: a record erased while a fanned-out run of its
/// week is under way — after the shares read it, before the merge — never
/// comes back, whichever of the merge and the erasure's rewrite takes the
/// week's lease first. Rewrite first: the merge sees that a newer run has
/// completed and summarizes the week from the store instead of merging the
/// stale states. Merge first: its run started before the request, so it does
/// not cover it, and the rewrite follows.
#[tokio::test]
async fn an_erasure_during_a_fanned_out_run_is_never_undone_whichever_commits_first() {
    for rewrite_first in [true, false] {
        let env = env_at(at("2026-11-30T11:00:00Z")).await;
        seed_week(&env, w47(), 6).await;
        let deps = WeeklyDeps { shares: 2, ..weekly_deps(&env) };
        let plan =
            handle_weekly_event(&deps, step(serde_json::json!({"tally": "plan", "input": {"week": "2026-W47"}})))
                .await
                .unwrap();
        let week = plan["weeks"][0].clone();
        for part in week["parts"].as_array().unwrap() {
            handle_weekly_event(&deps, step(part.clone())).await.unwrap();
        }
        // The shares have read every record; now one is erased (its request
        // object is created at 12:00, the fixture's event time).
        let victim = tally_core::testing::collect_week(env.store.as_ref(), w47(), 10).await[2].id;
        env.clock.set(at("2026-11-30T12:00:00Z"));
        let erased =
            erase(env.lifecycle.as_ref(), env.sink.as_ref(), &S3WeekRefresh::new(&env.s3), env.clock.now(), victim)
                .await;
        assert_eq!(erased.unwrap().unwrap().summary, SummaryState::Regenerating);
        env.clock.set(at("2026-11-30T12:00:30Z"));
        let rewrite = || handle_weekly(&deps, refresh_event(&env, event!("refresh-request.json")));
        let merge = || handle_weekly_event(&deps, step(week["merge"].clone()));
        if rewrite_first {
            rewrite().await.unwrap();
            merge().await.unwrap();
        } else {
            merge().await.unwrap();
            assert!(export_holds(&env, w47(), victim).await, "the merge alone still holds it");
            let out = rewrite().await.unwrap();
            assert!(out.covered.is_empty(), "a run that started before the erasure does not cover it");
        }
        assert!(!export_holds(&env, w47(), victim).await, "rewrite first: {rewrite_first}");
        assert_eq!(manifest_records(&env, w47()).await, Some(5));
        manifest_matches_objects(&env, w47()).await;
        assert!(part_states_left(&env, w47()).await.is_empty());
    }
}
