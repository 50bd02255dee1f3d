//! The same user journey as `serve.rs` and `summary.rs`, on the AWS store:
//! `tally serve --store dynamodb` and `tally summarize --store dynamodb`
//! against the moto server that `scripts/with-moto` starts (these tests fail,
//! not skip, without it).

mod common;

use common::{KEY, Server, client, tally};
use serde_json::{Value, json};
use tally_core::{IsoWeek, Timestamp};

fn aws_flags(config: &tally_aws::AwsConfig) -> Vec<String> {
    vec![
        "--store".into(),
        "dynamodb".into(),
        "--table".into(),
        config.table.clone(),
        "--bucket".into(),
        format!("s3://{}", config.bucket),
        "--endpoint-url".into(),
        config.endpoint_url.clone().unwrap_or_default(),
        "--region".into(),
        "us-east-1".into(),
    ]
}

#[tokio::test]
async fn serve_and_summarize_work_the_same_on_dynamodb_and_s3() {
    let config = tally_aws::testing::fresh_config().await;
    let flags = aws_flags(&config);
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &flag_refs);
    let http = client();

    // A lossless single record and a batch.
    let single = r#"{"z":1.0,"big":123456789012345678901234567890,"s":"é😀"}"#;
    let r = server.post(&http, "/records", "application/json", single).await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let r = server.post(&http, "/post", "application/x-ndjson", "{\"i\":0}\n{\"i\":1}\n").await;
    assert_eq!(r.status(), 201);
    let text = http.get(server.url(&format!("/records/{id}"))).header("x-api-key", KEY).send().await.unwrap();
    assert!(text.text().await.unwrap().ends_with(&format!(r#""data":{single}}}"#)));

    // A refused batch stores nothing.
    let r = server.post(&http, "/records", "application/json", r#"[{"ok":1},{"a":1,"a":2}]"#).await;
    assert_eq!(r.status(), 422);

    // The weekly run writes to S3 and the API serves it.
    let week = IsoWeek::containing(Timestamp::now()).to_string();
    let out = tally()
        .args(["summarize", "--partial", "--week", &week])
        .args(&flags)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("s3://{}/summaries/{week}", config.bucket)));
    let r = http.get(server.url(&format!("/summaries/{week}"))).header("x-api-key", KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let summary: Value = r.json().await.unwrap();
    assert_eq!((summary["week"].clone(), summary["records"].clone()), (json!(week), json!(3)));
    let r = http.get(server.url("/summaries")).header("x-api-key", KEY).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["weeks"][0]["week"], week);
    assert!(server.terminate().success());
}

/// The data lifecycle from the CLI on DynamoDB + S3: import plain records,
/// summarize, export, restore the export into a fresh table (byte-identical
/// summary), then prune.
#[tokio::test]
async fn import_export_and_prune_work_the_same_on_dynamodb_and_s3() {
    let run = |config: &tally_aws::AwsConfig, args: &[&str]| {
        let out = tally()
            .args(args)
            .args(aws_flags(config))
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "tally {args:?}: {text}");
        text
    };
    let week = "2026-W40";
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.ndjson");
    let lines: String = (0..300)
        .map(|i| format!("{{\"ts\":{},\"n\":{i},\"big\":1e400,\"s\":\"é{}\"}}\n", 1_790_553_600 + i * 1733, i % 7))
        .collect();
    std::fs::write(&plain, lines).unwrap();

    let first = tally_aws::testing::fresh_config().await;
    let out = run(&first, &["import", plain.to_str().unwrap(), "--time-field", "ts"]);
    assert!(out.contains("imported 300, already present 0"), "{out}");
    let out = run(&first, &["import", plain.to_str().unwrap(), "--time-field", "ts"]);
    assert!(out.contains("imported 0, already present 300"), "{out}");
    run(&first, &["summarize", "--week", week]);
    let export = dir.path().join("w40.ndjson.gz");
    run(&first, &["export", "--week", week, "--out", export.to_str().unwrap()]);

    // Restore into a fresh table and bucket: the same summary, byte for byte.
    let second = tally_aws::testing::fresh_config().await;
    let out = run(&second, &["import", export.to_str().unwrap()]);
    assert!(out.contains("imported 300, already present 0"), "{out}");
    run(&second, &["summarize", "--week", week]);
    let (_, s3) = {
        let sdk = tally_aws::sdk_config(&first).await;
        (tally_aws::dynamodb_client(&sdk, None), tally_aws::s3_client(&sdk, true))
    };
    let read = |bucket: String| {
        let s3 = s3.clone();
        async move {
            let key = format!("summaries/{week}/summary.json");
            let obj = s3.get_object().bucket(bucket).key(key).send().await.unwrap();
            obj.body.collect().await.unwrap().into_bytes()
        }
    };
    assert_eq!(read(first.bucket.clone()).await, read(second.bucket.clone()).await);

    // Retention: the summarized week's records go; its summary stays.
    let out = run(&second, &["prune", "--retention-weeks", "2"]);
    assert!(out.contains(&format!("{week}         300 records deleted")), "{out}");
    let left = dir.path().join("left.ndjson");
    run(&second, &["export", "--week", week, "--out", left.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&left).unwrap(), "");
}
