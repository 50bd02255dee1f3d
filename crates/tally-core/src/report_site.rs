//! The report site as tally serves it: `GET /reports/` (the index) and
//! `GET /reports/{week}/` (a week's page), read from the [`SummarySink`]
//! (the folder locally, S3 on AWS) once a caller is [granted](Grant) access.
//!
//! # The pages' links, served
//! The stored pages (`summaries/index.html`, `summaries/W/summary.html`)
//! link to each other by relative file names (`../index.html`,
//! `../2026-W46/summary.html`, `2026-W47/summary.html`), so the folder works
//! from `file://` and the bucket as it is; their bytes never change for
//! serving. A served page gets its links rewritten to the site's routes
//! (`../`, `../2026-W46/`, `2026-W47/`), each carrying the token of the link
//! that opened it (`?exp=…&sig=…`): a relative link drops the page's query
//! string, so without this the first click would lose the token (see
//! [`crate::report_link`] for why a token covers the whole site). Links to
//! anchors (`#f-3`) stay as they are.
//!
//! The rewrite uses an HTML parser (`lol_html`, Cloudflare's streaming
//! rewriter) on `<a href>` elements only — the index's SVG bars included —
//! rather than matching text, so an attribute value is never mistaken for
//! markup.

use bytes::Bytes;
use lol_html::{RewriteStrSettings, element, rewrite_str};

use crate::ports::{SinkError, SummarySink};
use crate::report_link::LinkToken;
use crate::summary::{INDEX_HTML, SUMMARY_HTML, is_summarized};
use crate::week::IsoWeek;

/// A page of the report site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SitePage {
    /// `GET /reports/`: every week, with trends.
    Index,
    /// `GET /reports/{week}/`: one week's report.
    Week(IsoWeek),
}

/// Permission to read the report site. Only a checked link
/// ([`crate::report_link::LinkSigner::check`]) or a caller the HTTP layer
/// authenticated with the API key gets one, so nothing is read from the
/// bucket for a request that has neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The token the page's links carry on, if access came from a link.
    token: Option<LinkToken>,
}

impl Grant {
    /// Access by a valid signed link: the page's links carry its token.
    pub fn link(token: LinkToken) -> Self {
        Self { token: Some(token) }
    }

    /// Access by the API key (a script; its links carry no token).
    pub fn api_key() -> Self {
        Self { token: None }
    }
}

/// The page, its links rewritten to the site's routes (carrying the
/// grant's token); `None` when it does not exist: no index yet, or a week
/// without a complete summary (no manifest: never written, or being
/// rewritten right now).
pub async fn read_page(sink: &dyn SummarySink, page: SitePage, grant: Grant) -> Result<Option<String>, SinkError> {
    let body = match page {
        SitePage::Index => sink.read_index(INDEX_HTML).await?,
        SitePage::Week(week) if is_summarized(sink, week).await? => sink.read_object(week, SUMMARY_HTML).await?,
        SitePage::Week(_) => None,
    };
    body.map(|html| serve_links(&html, grant.token.map(|t| t.query()).as_deref())).transpose()
}

/// `html` with each relative `<a href>` to a page turned into its route, plus
/// `?query` when given.
fn serve_links(html: &Bytes, query: Option<&str>) -> Result<String, SinkError> {
    let text = std::str::from_utf8(html)
        .map_err(|e| SinkError::internal("a stored report page is not UTF-8; rewrite it (tally summarize)", e))?;
    let settings = RewriteStrSettings::new().append_element_content_handler(element!("a[href]", |el| {
        if let Some(href) = el.get_attribute("href").and_then(|h| route_of(&h, query)) {
            el.set_attribute("href", &href)?;
        }
        Ok(())
    }));
    rewrite_str(text, settings).map_err(|e| SinkError::internal("a stored report page could not be parsed", e))
}

/// The route a page link points to, or `None` to leave it alone (anchors,
/// absolute URLs, anything tally's pages do not write).
fn route_of(href: &str, query: Option<&str>) -> Option<String> {
    let (path, fragment) = match href.split_once('#') {
        Some((p, f)) => (p, Some(f)),
        None => (href, None),
    };
    if path.is_empty() || path.starts_with('/') || path.contains([':', '?', '\\']) {
        return None;
    }
    let dir = [SUMMARY_HTML, INDEX_HTML]
        .iter()
        .find_map(|page| path.strip_suffix(page).filter(|d| d.is_empty() || d.ends_with('/')))
        .unwrap_or(path);
    let mut out = if dir.is_empty() { "./".to_owned() } else { dir.to_owned() };
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const Q: &str = "exp=1&sig=ab";

    #[test]
    fn page_links_become_routes_carrying_the_token_and_anchors_stay() {
        for (href, with, without) in [
            ("../index.html", "../?exp=1&sig=ab", "../"),
            ("../2026-W46/summary.html", "../2026-W46/?exp=1&sig=ab", "../2026-W46/"),
            ("2026-W47/summary.html", "2026-W47/?exp=1&sig=ab", "2026-W47/"),
            ("2026-W47/summary.html#f-2", "2026-W47/?exp=1&sig=ab#f-2", "2026-W47/#f-2"),
            ("index.html", "./?exp=1&sig=ab", "./"),
        ] {
            assert_eq!(route_of(href, Some(Q)).as_deref(), Some(with), "{href}");
            assert_eq!(route_of(href, None).as_deref(), Some(without), "{href}");
        }
        for href in ["#f-3", "https://example.com/", "/abs", "mailto:x@y", "x?y=1", ""] {
            assert_eq!(route_of(href, Some(Q)), None, "{href}");
        }
        assert_eq!(route_of("notsummary.html", None).as_deref(), Some("notsummary.html"));
    }

    #[test]
    fn only_href_attributes_of_links_change_not_text_or_other_attributes() {
        let html = Bytes::from_static(
            br##"<p title="../index.html">../index.html</p><a href="../index.html">All</a><svg><a href="2026-W01/summary.html"><rect/></a></svg><a href="#x">x</a>"##,
        );
        let out = serve_links(&html, Some(Q)).unwrap();
        assert_eq!(
            out,
            r##"<p title="../index.html">../index.html</p><a href="../?exp=1&sig=ab">All</a><svg><a href="2026-W01/?exp=1&sig=ab"><rect/></a></svg><a href="#x">x</a>"##
        );
    }
}
