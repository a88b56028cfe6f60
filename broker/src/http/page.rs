//! The status page at `GET /`: one HTML file (`status.html`) with its CSS and script inline,
//! compiled into the binary. It polls the JSON endpoints ([`super::introspect`]) once a second
//! and draws the connections, slow-consumer warnings, the busiest topics, the subscriptions and
//! the NATS bridge. Nothing is fetched from anywhere else, so it works on an air-gapped host; the
//! `Content-Security-Policy` header makes the browser hold the page to that.

use axum::http::header;
use axum::response::IntoResponse;

/// The page, as served.
pub const STATUS_HTML: &str = include_str!("status.html");

/// What the page may load: its own inline style and script, and JSON from this endpoint.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// `GET /`.
pub async fn status_page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        STATUS_HTML,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for outside in [
            "http://", "https://", "//cdn", "src=\"", "<link", "@import", "url(",
        ] {
            assert!(
                !STATUS_HTML.contains(outside),
                "the page refers to {outside}"
            );
        }
    }

    #[test]
    fn the_page_never_writes_html_from_data() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!STATUS_HTML.contains(sink), "the page uses {sink}");
        }
    }
}
