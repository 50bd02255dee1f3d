//! The routes people open in a browser: `GET /` (the landing page, or JSON
//! for API clients) and the report site, `GET /reports/` and
//! `GET /reports/{week}/`. Like [`crate::handlers`], they parse HTTP, call
//! `tally-core` ([`report_link`](tally_core::report_link) to check a link,
//! [`report_site`](tally_core::report_site) to read a page) and map the
//! result back.
//!
//! # Who may read a page
//! A valid signed link (`?exp=…&sig=…`), or the API key in `x-api-key` when
//! the server has one. The link is checked before anything is read from the
//! bucket; a link that is missing, changed or expired gets a short HTML page
//! (403) saying how to get a fresh one (`tally report-link`).
//!
//! # Headers
//! Every HTML answer carries a strict `Content-Security-Policy`: nothing may
//! load (`default-src 'none'`) but the page's own inline styles — the
//! report pages are self-contained, with inline `<style>` and `style`
//! attributes (bar widths), and no scripts, fonts or images to fetch —, no
//! `<base>`, no form, no framing. `Referrer-Policy: no-referrer` keeps the
//! token in the address from leaking to any site a reader goes to next,
//! `X-Content-Type-Options: nosniff` keeps browsers to the declared type, and
//! `Cache-Control: no-store` keeps the pages out of shared caches.

use askama::Template;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tally_core::IsoWeek;
use tally_core::report_link::Refused;
use tally_core::report_site::{Grant, SitePage, read_page};

use crate::handlers::{API_KEY, within};
use crate::problem::{ApiError, Problem};
use crate::schema::Landing;
use crate::state::AppState;

/// The `Content-Security-Policy` of every HTML answer (see the module docs).
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub const HTML: &str = "text/html; charset=utf-8";

/// The landing page (the same on AWS, where API Gateway answers it).
#[derive(Template)]
#[template(path = "landing.html")]
struct LandingPage<'a> {
    status: &'a str,
    version: &'a str,
}

/// Why the report site refused a request, and what to do.
#[derive(Template)]
#[template(path = "refused.html")]
struct RefusedPage<'a> {
    title: &'a str,
    reason: String,
    advice: &'a str,
    command: Option<String>,
}

/// The landing page's HTML, as `GET /` answers a browser; `scripts/openapi`
/// puts the same bytes in `template.yaml` for API Gateway to answer.
pub fn landing_html() -> String {
    LandingPage { status: "ok", version: tally_core::VERSION }
        .render()
        .unwrap_or_else(|e| format!("<!doctype html><title>tally</title><p>tally {}: {e}", tally_core::VERSION))
}

/// The JSON `GET /` answers API clients; `scripts/openapi` copies it into
/// `template.yaml` too.
pub fn landing_json() -> String {
    serde_json::to_string(&Landing::current()).unwrap_or_default()
}

/// True when the client asked for HTML: its `Accept` names `text/html`, as
/// every browser's does. The rule API Gateway applies on AWS is the same
/// (`template.yaml`), so both answer alike.
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/html"))
}

/// An HTML answer with the site's security headers.
fn html(status: StatusCode, body: String) -> Response {
    let mut res = (status, body).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(HTML));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `GET /` — a short landing page for browsers, JSON for API clients.
#[utoipa::path(
    get,
    path = "/",
    tag = "service",
    operation_id = "get_landing",
    responses((status = 200,
        description = "What this service is, its health and version, and where to go next: an HTML page when \
            `Accept` names `text/html` (a browser), else JSON.",
        content((Landing = "application/json"), (String = "text/html"))))
)]
pub async fn landing(headers: HeaderMap) -> Response {
    if wants_html(&headers) {
        return html(StatusCode::OK, landing_html());
    }
    ([(header::CONTENT_TYPE, "application/json")], landing_json()).into_response()
}

/// The query of a signed link.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkQuery {
    /// When the link expires, in Unix seconds (as the link has it).
    #[param(pattern = "^[1-9][0-9]{0,11}$", example = "1798761600")]
    pub exp: Option<String>,
    /// The link's signature: 64 lower-case hex digits (as the link has it).
    #[param(pattern = "^[0-9a-f]{64}$")]
    pub sig: Option<String>,
}

/// `GET /reports/` — the report site's index (every week, with trends).
#[utoipa::path(
    get,
    path = "/reports/",
    tag = "reports",
    operation_id = "get_report_index",
    params(LinkQuery),
    responses(
        (status = 200, description = "The index page. Its links to the weeks carry the link's token.",
            body = String, content_type = "text/html"),
        (status = 403, description = "No valid signed link (missing, changed or expired) and no API key: a short \
            HTML page saying how to get a fresh link.", body = String, content_type = "text/html"),
        (status = 404, description = "No week has been summarized yet.", body = String, content_type = "text/html"),
        (status = 503, description = "The summary bucket (or the link secret) cannot be read right now.",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    ),
    security((), ("api_key" = []))
)]
pub async fn report_index(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<LinkQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    serve_page(&state, &headers, query, SitePage::Index).await
}

/// `GET /reports/{week}/` — one week's report page.
#[utoipa::path(
    get,
    path = "/reports/{week}/",
    tag = "reports",
    operation_id = "get_report_week",
    params(("week" = String, Path, description = "An ISO week, e.g. `2026-W47`."), LinkQuery),
    responses(
        (status = 200, description = "The week's page. Its links to other weeks and to the index carry the \
            link's token.", body = String, content_type = "text/html"),
        (status = 400, description = "Not an ISO week.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No valid signed link (missing, changed or expired) and no API key: a short \
            HTML page saying how to get a fresh link.", body = String, content_type = "text/html"),
        (status = 404, description = "No complete summary for this week (yet).", body = String,
            content_type = "text/html"),
        (status = 503, description = "The summary bucket (or the link secret) cannot be read right now.",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    ),
    security((), ("api_key" = []))
)]
pub async fn report_week(
    State(state): State<AppState>,
    headers: HeaderMap,
    week: Result<Path<String>, PathRejection>,
    query: Result<Query<LinkQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(week) = week.map_err(|e| ApiError::BadRequest(format!("the week in the path is unreadable: {e}")))?;
    let week = IsoWeek::parse(&week).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    serve_page(&state, &headers, query, SitePage::Week(week)).await
}

/// `GET /reports` and `GET /reports/{week}` (no final `/`): a permanent
/// redirect to the page's address, query kept. Relative, so it holds under
/// any prefix (API Gateway's stage).
pub async fn report_slash(uri: axum::http::Uri) -> Response {
    let last = uri.path().rsplit('/').next().unwrap_or_default();
    let location = match uri.query() {
        Some(q) => format!("{last}/?{q}"),
        None => format!("{last}/"),
    };
    match HeaderValue::from_str(&location) {
        Ok(v) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, v)]).into_response(),
        Err(_) => Problem::for_status(StatusCode::NOT_FOUND).into_response(),
    }
}

/// Checks the caller, then reads and answers `page`.
async fn serve_page(
    state: &AppState,
    headers: &HeaderMap,
    query: Result<Query<LinkQuery>, QueryRejection>,
    page: SitePage,
) -> Result<Response, ApiError> {
    let grant = match authorize(state, headers, query).await? {
        Ok(grant) => grant,
        Err(refused) => return Ok(refused_page(&refused, page)),
    };
    let body = within(state, read_page(state.sink.as_ref(), page, grant)).await??;
    Ok(match body {
        Some(body) => html(StatusCode::OK, body),
        None => {
            let (title, reason) = match page {
                SitePage::Index => ("No reports yet", "No week has been summarized yet.".to_owned()),
                SitePage::Week(w) => ("No report for this week", format!("There is no complete report for {w} yet.")),
            };
            let advice = "Reports are written after each week ends (Mondays, by default); a run of that week \
                          writes it now:";
            let command = match page {
                SitePage::Index => None,
                SitePage::Week(w) => Some(format!("tally summarize --week {w}")),
            };
            render(StatusCode::NOT_FOUND, RefusedPage { title, reason, advice, command })
        }
    })
}

/// A [`Grant`] for the API key or a valid link, else why not. The outer
/// error is the server's (the secret could not be read).
async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    query: Result<Query<LinkQuery>, QueryRejection>,
) -> Result<Result<Grant, Refused>, ApiError> {
    if state.auth.verifies(headers.get(API_KEY).map(|v| v.as_bytes())) {
        return Ok(Ok(Grant::api_key()));
    }
    let Some(signer) = &state.links else { return Ok(Err(Refused::Missing)) };
    // A query tally did not write (a repeated or undecodable parameter) is a changed link.
    let Ok(Query(query)) = query else { return Ok(Err(Refused::Invalid)) };
    let now = state.ingest.clock().now();
    let checked = within(state, signer.check(query.exp.as_deref(), query.sig.as_deref(), now)).await??;
    Ok(checked.map(Grant::link))
}

/// The 403 page for `refused`.
fn refused_page(refused: &Refused, page: SitePage) -> Response {
    let title = match refused {
        Refused::Missing => "This page needs a report link",
        Refused::Invalid => "This report link is not valid",
        Refused::Expired { .. } => "This report link has expired",
    };
    let reason = match refused {
        Refused::Missing => {
            "The weekly reports open with the signed link each weekly message carries; this address has none."
                .to_owned()
        }
        Refused::Invalid => format!("{refused}."),
        Refused::Expired { at } => format!("It expired on {}.", at.to_rfc3339().get(..10).unwrap_or_default()),
    };
    let command = match page {
        SitePage::Index => "tally report-link".to_owned(),
        SitePage::Week(w) => format!("tally report-link --week {w}"),
    };
    let advice = "Ask whoever runs this tally service for a fresh link. They print one with the command below \
                  (on AWS, the stack's ReportLinkCommand output gives it with the right settings):";
    render(StatusCode::FORBIDDEN, RefusedPage { title, reason, advice, command: Some(command) })
}

fn render(status: StatusCode, page: impl Template) -> Response {
    match page.render() {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!(error = %e, "an HTML page failed to render");
            Problem::for_status(StatusCode::INTERNAL_SERVER_ERROR).into_response()
        }
    }
}
