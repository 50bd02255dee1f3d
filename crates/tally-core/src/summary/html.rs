//! `summary.html` (placeholder replaced below).
use super::model::Summary;

pub fn render_html(summary: &Summary) -> String {
    format!("<!doctype html><title>{}</title>", summary.week)
}
