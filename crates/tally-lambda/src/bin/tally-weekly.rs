//! `tally-weekly`: the weekly summary, invoked by EventBridge Scheduler, and
//! the rewrite of a week whose refresh request was created (EventBridge rule
//! on the summary bucket). Also each step of the weekly
//! state machine. Wiring only; see `tally_lambda::handle_weekly_event`.

use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use tally_lambda::{FunctionConfig, Retention, WeeklyDeps};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    // JSON logs (LoggingConfig in template.yaml) with the request id of each invocation.
    lambda_runtime::tracing::init_default_subscriber();
    // A bad TALLY_* setting fails the cold start, naming the variable (tally_config: as the CLI's flags).
    let config = FunctionConfig::from_env(|name| std::env::var(name))?;
    let (store, sink) = tally_aws::connect(&config.aws_config()).await?;
    let store = Arc::new(store);
    let retention = config.retention_weeks().map(|keep_weeks| Retention { store: store.clone(), keep_weeks });
    // TALLY_NOTIFY_URL / TALLY_NOTIFY_SECRET / TALLY_REPORT_TOPIC_ARN, each optional.
    let notifiers = config.notifiers().await?;
    // Each notification's signed link: TALLY_PUBLIC_URL and the secret (read once per cold start, when first needed).
    let links = config.report_links().await?;
    let deps = WeeklyDeps {
        options: config.summary_options(),
        retention,
        notifiers,
        links,
        shares: config.weekly_parts,
        ..WeeklyDeps::new(store, sink)
    };
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| tally_lambda::handle_weekly_event(&deps, event))).await
}
