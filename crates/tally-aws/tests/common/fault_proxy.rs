//! A small HTTP fault proxy between the AWS SDK and moto: it forwards every
//! request unchanged, except those matching a rule (an operation, and a
//! string the request body contains — e.g. the id of a chunk's first record),
//! which it fails with a given status and error code, or holds until the
//! test opens a gate. moto never checks SigV4 signatures, so forwarding to
//! another host is fine.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_types::retry::RetryConfig;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::{Notify, watch};

/// What the proxy does with a matching request.
#[derive(Clone)]
pub enum Fault {
    /// Answers with this status and a DynamoDB error of this code, at every attempt.
    Fail { status: u16, code: &'static str },
    /// Holds the request until [`Gate::open`], then forwards it.
    Hold(Arc<Gate>),
}

impl Fault {
    /// A 500 the SDK retries, then gives up on.
    pub fn server_error() -> Self {
        Self::Fail { status: 500, code: "InternalServerError" }
    }
}

/// Where a held request waits.
pub struct Gate {
    reached: Notify,
    open: watch::Sender<bool>,
}

impl Gate {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { reached: Notify::new(), open: watch::Sender::new(false) })
    }

    /// Waits until a request has reached the gate.
    pub async fn reached(&self) {
        tokio::time::timeout(Duration::from_secs(30), self.reached.notified())
            .await
            .expect("no request reached the fault proxy's gate within 30 s");
    }

    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

struct Rule {
    op: &'static str,
    contains: String,
    fault: Fault,
    hits: Arc<AtomicUsize>,
}

/// The proxy: [`url`](Self::url) is the SDK's endpoint.
pub struct FaultProxy {
    pub url: String,
    rules: Arc<Mutex<Vec<Rule>>>,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (moto's endpoint).
    pub async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fault proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let rules: Arc<Mutex<Vec<Rule>>> = Arc::default();
        let client = reqwest::Client::new();
        let shared = rules.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (rules, client, upstream) = (shared.clone(), client.clone(), upstream.clone());
                let service = service_fn(move |req| handle(req, rules.clone(), client.clone(), upstream.clone()));
                tokio::spawn(async move {
                    // A client that goes away mid-request is what some tests do.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url, rules }
    }

    /// Applies `fault` to every `op` request whose body contains `contains`;
    /// returns the counter of requests it matched.
    pub fn inject(&self, op: &'static str, contains: impl Into<String>, fault: Fault) -> Arc<AtomicUsize> {
        let hits = Arc::new(AtomicUsize::new(0));
        self.rules.lock().unwrap().push(Rule { op, contains: contains.into(), fault, hits: hits.clone() });
        hits
    }

    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }

    /// A DynamoDB client that goes through this proxy, with quick SDK
    /// retries (two attempts) so failing tests stay fast.
    pub fn dynamodb_client(&self) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .endpoint_url(&self.url)
            .retry_config(RetryConfig::standard().with_max_attempts(2).with_initial_backoff(Duration::from_millis(1)))
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }
}

async fn handle(
    req: Request<Incoming>,
    rules: Arc<Mutex<Vec<Rule>>>,
    client: reqwest::Client,
    upstream: String,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let target = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let op = target.rsplit('.').next().unwrap_or_default().to_owned();
    let text = String::from_utf8_lossy(&body);
    let fault = rules.lock().unwrap().iter().find(|r| r.op == op && text.contains(&r.contains)).map(|r| {
        r.hits.fetch_add(1, Ordering::SeqCst);
        r.fault.clone()
    });
    match fault {
        Some(Fault::Fail { status, code }) => {
            let body = format!(
                r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"injected by the fault proxy"}}"#
            );
            return Ok(Response::builder()
                .status(status)
                .header("content-type", "application/x-amz-json-1.0")
                .body(Full::new(Bytes::from(body)))
                .unwrap());
        }
        Some(Fault::Hold(gate)) => {
            gate.reached.notify_one();
            let mut open = gate.open.subscribe();
            let _ = open.wait_for(|open| *open).await;
        }
        None => {}
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut forward = client.request(parts.method.clone(), format!("{upstream}{path}")).body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            forward = forward.header(name, value);
        }
    }
    let Ok(answer) = forward.send().await else {
        return Ok(Response::builder().status(502).body(Full::new(Bytes::new())).unwrap());
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    Ok(response.body(Full::new(bytes)).unwrap())
}
