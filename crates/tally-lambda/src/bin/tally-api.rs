//! `tally-api`: the HTTP API on AWS Lambda behind API Gateway (REST, stage `Prod`).
//! Wiring only; see `tally_lambda::api_service`.

use std::sync::Arc;

use tally_aws::S3WeekRefresh;
use tally_core::SystemClock;
use tally_lambda::FunctionConfig;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    // JSON logs (LoggingConfig in template.yaml) with the request id of each invocation.
    lambda_http::tracing::init_default_subscriber();
    let config = FunctionConfig::from_env(|name| std::env::var(name))?;
    // SDK clients are built once per cold start; no request is made here.
    let (store, sink) = tally_aws::connect(&config.aws_config()).await?;
    // Erasures ask for their week's rewrite with an object beside its summary.
    let refresh = Arc::new(S3WeekRefresh::new(&sink));
    // The report site's links: the secret is read on the first /reports request, once per cold start.
    let links = config.link_signer().await?;
    let service = tally_lambda::api_service(
        Arc::new(store),
        Arc::new(sink),
        refresh,
        links,
        Arc::new(SystemClock),
        config.firehose_auth(),
    );
    lambda_http::run(service).await
}
