//! tally's webhook notifier — a driven adapter of the hexagon:
//! [`WebhookNotifier`] implements [`Notifier`] by `POST`ing the week's
//! [`Notification`] as `application/json` to a URL (`--notify-url`,
//! `TALLY_NOTIFY_URL`), used by `tally serve`, `tally summarize` and the
//! weekly Lambda alike.
//!
//! # Protocol
//! - Body: `{"week","records","warnings","findings","report","text"}`
//!   ([`Notification`]); chat tools' incoming webhooks (Slack, Mattermost,
//!   Teams) show its `text`.
//! - With a secret (`TALLY_NOTIFY_SECRET`), header
//!   `X-Tally-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>`:
//!   the receiver recomputes it over the raw body before parsing it and
//!   compares in constant time.
//! - One attempt per [`deliver`](Notifier::deliver), bounded by
//!   [`ATTEMPT_TIMEOUT`]. Network errors, timeouts, 429 and 5xx are
//!   retryable; other answers are final: a 4xx will not change by asking
//!   again, and redirects are not followed (a `POST` redirected becomes a
//!   `GET` that delivers nothing), so the URL must be the final one. The
//!   retries themselves are [`tally_core::summary::notify::announce`]'s.
//!
//! # Secrets
//! A webhook URL is often a credential itself (Slack's and Teams' carry a
//! token in the path), so neither the URL beyond its scheme and host, nor
//! the secret, nor the body is ever logged or put in an error message;
//! `Debug` redacts them too.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;
use tally_core::ports::{Notifier, NotifyError};
use tally_core::summary::Notification;

/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "X-Tally-Signature";

/// The longest one delivery attempt may take, connecting included: a
/// receiver slower than this is treated as down and tried again later.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a webhook cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    #[error(
        "the notification URL (--notify-url / TALLY_NOTIFY_URL) is not a valid http(s) URL ({0}); \
         give the receiver's full address, e.g. https://hooks.example.com/tally"
    )]
    BadUrl(String),
    #[error("could not set up the HTTPS client for notifications: {0}")]
    Tls(String),
}

/// POSTs notifications to one URL; see the crate docs.
#[derive(Clone)]
pub struct WebhookNotifier {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
    secret: Option<Arc<[u8]>>,
    timeout: Duration,
}

impl std::fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookNotifier")
            .field("receiver", &self.receiver())
            .field("signed", &self.secret.is_some())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl WebhookNotifier {
    /// A notifier for `url`; with `secret` (an empty one counts as none),
    /// every body is signed.
    pub fn new(url: &str, secret: Option<&str>) -> Result<Self, WebhookConfigError> {
        // The parse error names what is wrong without echoing the URL.
        let url: Uri =
            url.trim().parse().map_err(|e: http::uri::InvalidUri| WebhookConfigError::BadUrl(e.to_string()))?;
        let scheme = url.scheme_str().unwrap_or_default();
        if !matches!(scheme, "http" | "https") || url.host().is_none_or(str::is_empty) {
            return Err(WebhookConfigError::BadUrl(format!(
                "the scheme is {scheme:?}, not http or https, or there is no host"
            )));
        }
        // hyper's client follows no redirect: see the crate docs.
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(ATTEMPT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config()?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(https);
        let secret = secret.filter(|s| !s.is_empty()).map(|s| Arc::from(s.as_bytes()));
        Ok(Self { client, url, secret, timeout: ATTEMPT_TIMEOUT })
    }

    /// Another per-attempt timeout (tests; the default is [`ATTEMPT_TIMEOUT`]).
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The URL's scheme, host and port — what logs and errors may show.
    pub fn receiver(&self) -> String {
        let (scheme, host) = (self.url.scheme_str().unwrap_or_default(), self.url.host().unwrap_or_default());
        match self.url.port_u16() {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        }
    }

    fn error(&self, retryable: bool, what: String) -> NotifyError {
        let message = format!("webhook {}: {what}", self.receiver());
        if retryable { NotifyError::retryable(message, None) } else { NotifyError::final_(message, None) }
    }
}

/// `sha256=<hex HMAC-SHA256 of body keyed with secret>`, the value of
/// [`SIGNATURE_HEADER`].
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC accepts any key"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// rustls with the aws-lc-rs provider (as the AWS SDK) and the system's
/// root certificates.
fn tls_config() -> Result<rustls::ClientConfig, WebhookConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::warn!(
            errors = native.errors.len(),
            "no system root certificates found: https notification URLs will fail (install ca-certificates)"
        );
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .map_err(|e| WebhookConfigError::Tls(e.to_string()))
}

#[async_trait]
impl Notifier for WebhookNotifier {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn deliver(&self, notification: &Notification) -> Result<(), NotifyError> {
        let body = serde_json::to_vec(notification)
            .map_err(|e| NotifyError::final_(format!("could not encode the notification: {e}"), None))?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static(concat!("tally/", env!("CARGO_PKG_VERSION"))));
        if let Some(secret) = &self.secret {
            request = request.header(SIGNATURE_HEADER, signature(secret, &body));
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| NotifyError::final_(format!("could not build the request: {e}"), None))?;
        let response = match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Ok(Ok(response)) => response,
            Err(_elapsed) => {
                return Err(self.error(true, format!("no answer within {} s", self.timeout.as_secs_f64())));
            }
            // hyper's errors do not quote the URL (whose path may be a token).
            Ok(Err(e)) => {
                let what = if e.is_connect() { "could not connect" } else { "the request failed" };
                return Err(self.error(true, format!("{what} ({})", tally_core::error_chain(&e))));
            }
        };
        let status = response.status();
        // The answer's body is not read: nothing in it changes what happens.
        drop(response);
        match status {
            s if s.is_success() => Ok(()),
            s if s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() => {
                Err(self.error(true, format!("the receiver answered {s}")))
            }
            s if s.is_redirection() => Err(self.error(
                false,
                format!("the receiver answered {s}, a redirect, which is not followed; set the URL it redirects to"),
            )),
            s => Err(self.error(
                false,
                format!(
                    "the receiver refused the notification with {s}; check the URL{}",
                    if self.secret.is_some() {
                        " and that it verifies X-Tally-Signature with the same secret"
                    } else {
                        ""
                    }
                ),
            )),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hex_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn urls_must_be_http_and_are_never_shown_beyond_the_host() {
        for bad in ["", "hooks.example.com/x", "ftp://example.com/x", "file:///tmp/x", "http://"] {
            let err = WebhookNotifier::new(bad, None).unwrap_err();
            assert!(err.to_string().contains("--notify-url"), "{bad:?}: {err}");
        }
        let n = WebhookNotifier::new("https://hooks.example.com/services/T0/B0/SECRETTOKEN", Some("s3cr3t")).unwrap();
        assert_eq!(n.receiver(), "https://hooks.example.com");
        let debug = format!("{n:?}");
        assert!(!debug.contains("SECRETTOKEN") && !debug.contains("s3cr3t"), "{debug}");
        let n = WebhookNotifier::new("http://127.0.0.1:9/x", Some("")).unwrap();
        assert_eq!((n.receiver().as_str(), n.secret.is_none()), ("http://127.0.0.1:9", true));
    }
}
