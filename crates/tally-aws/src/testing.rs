//! Test support (feature `testing`): a moto server's tables and buckets,
//! created with the same key schema as `template.yaml`. Used by this crate's
//! and `tally-lambda`'s tests; never by production code.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TimeToLiveSpecification,
};

use crate::{AwsConfig, DynamoDbRecordStore, S3SummarySink};

/// The endpoint of the moto server started by `scripts/with-moto`.
///
/// # Panics
/// When `TALLY_MOTO_ENDPOINT` is unset: these tests must fail loudly rather
/// than pass without having run.
pub fn moto_endpoint() -> String {
    match std::env::var("TALLY_MOTO_ENDPOINT") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "TALLY_MOTO_ENDPOINT is not set: the AWS adapter tests run against a moto server. \
             Run them with ./scripts/with-moto cargo test -p tally-aws -p tally-lambda"
        ),
    }
}

/// A name nobody else uses: tests run in parallel against one moto server.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// A fresh table and bucket on moto, and the config that points at them.
pub async fn fresh_config() -> AwsConfig {
    let config = AwsConfig {
        table: unique_name("tally-test"),
        bucket: unique_name("tally-test"),
        prefix: None,
        endpoint_url: Some(moto_endpoint()),
        region: Some("us-east-1".into()),
        attempt_timeout: None,
    };
    let sdk = crate::sdk_config(&config).await;
    create_table(&crate::dynamodb_client(&sdk, None), &config.table).await;
    create_bucket(&crate::s3_client(&sdk, true), &config.bucket).await;
    config
}

/// Both adapters on a fresh table and bucket.
pub async fn fresh_adapters() -> (DynamoDbRecordStore, S3SummarySink, AwsConfig) {
    let config = fresh_config().await;
    let (store, sink) = crate::connect(&config).await.expect("connect to moto");
    (store, sink, config)
}

/// Creates a table shaped like the template's: `pk` S HASH, `sk` S RANGE,
/// on-demand, TTL on `expires_at`.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, name: &str) {
    let attr = |n: &str| {
        AttributeDefinition::builder().attribute_name(n).attribute_type(ScalarAttributeType::S).build().expect("attr")
    };
    let key = |n: &str, t| KeySchemaElement::builder().attribute_name(n).key_type(t).build().expect("key");
    client
        .create_table()
        .table_name(name)
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create table {name} on moto: {}", tally_core::error_chain(&e)));
    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder().attribute_name("expires_at").enabled(true).build().expect("ttl"),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("enable TTL on {name}: {}", tally_core::error_chain(&e)));
}

pub async fn create_bucket(client: &aws_sdk_s3::Client, name: &str) {
    client
        .create_bucket()
        .bucket(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create bucket {name} on moto: {}", tally_core::error_chain(&e)));
}

/// Who holds `week`'s lease ([`crate::lease`]) in `config`'s table, if anyone.
pub async fn lease_holder(config: &AwsConfig, week: tally_core::IsoWeek) -> Option<String> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let sdk = crate::sdk_config(config).await;
    let item = crate::dynamodb_client(&sdk, None)
        .get_item()
        .table_name(&config.table)
        .key("pk", AttributeValue::S(crate::lease::lease_pk(week)))
        .key("sk", AttributeValue::S("L".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("read the lease of {week}: {}", tally_core::error_chain(&e)))
        .item?;
    item.get("owner").and_then(|v| v.as_s().ok()).cloned()
}

/// A fresh report-link secret on moto, as the template's `ReportLinkSecret`
/// (a random string of 64 characters); returns its ARN.
pub async fn create_link_secret(config: &AwsConfig) -> String {
    let sdk = crate::sdk_config(config).await;
    let client = crate::secrets_manager_client(&sdk);
    let password = client
        .get_random_password()
        .password_length(64)
        .exclude_punctuation(true)
        .send()
        .await
        .expect("moto GetRandomPassword");
    let out = client
        .create_secret()
        .name(unique_name("tally-report-link"))
        .secret_string(password.random_password().expect("a password"))
        .send()
        .await
        .expect("moto CreateSecret");
    out.arn().expect("the secret's ARN").to_owned()
}
