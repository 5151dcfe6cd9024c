//! Who may use the control plane: the `Host` check against DNS
//! rebinding, the bearer token, the same-origin rule for browsers, and
//! what a reader without the token may see.
//!
//! Without a token the control plane trusts whoever can reach it, which
//! on loopback means local users. A web page cannot reach loopback
//! directly, but it can rebind a name of its own (`evil.example`) to
//! 127.0.0.1: the browser then sends `Host: evil.example:5500` and treats
//! the answers as same-origin. Refusing every `Host` that is not a
//! loopback name or address closes that door; with a token the page
//! cannot authenticate anyway.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

use crate::control::ControlState;

/// Outermost layer, before routing: without a token, a request must name
/// this control plane in `Host` by a loopback name or address.
pub async fn host_guard(
    State(state): State<Arc<ControlState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if state.token.is_none() {
        let host = request
            .headers()
            .get(axum::http::header::HOST)
            .map(|v| v.to_str().unwrap_or("\u{fffd}"));
        // No Host at all is no browser (browsers always send it), so
        // nothing can be rebound; HTTP/1.0 tools may leave it out.
        if let Some(host) = host.filter(|h| !host_allowed(h, state.control)) {
            let message = format!(
                "Host {host:?} does not name this control plane; without a control token \
                 only localhost, 127.0.0.0/8, [::1] and --control-host are accepted \
                 (this protects against DNS rebinding)\n"
            );
            return (StatusCode::MISDIRECTED_REQUEST, message).into_response();
        }
    }
    next.run(request).await
}

/// Whether a `Host` header value names a loopback address, `localhost`,
/// or the control plane's own address, with or without a port.
pub fn host_allowed(host: &str, control: SocketAddr) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inside, port))
                if port.is_empty() || port.strip_prefix(':').is_some_and(valid_port) =>
            {
                inside
            }
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if valid_port(port) => name,
            Some(_) => return false,
            None => host,
        }
    };
    if name.eq_ignore_ascii_case("localhost") || name.eq_ignore_ascii_case("localhost.") {
        return true;
    }
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip == control.ip(),
        Err(_) => false,
    }
}

fn valid_port(text: &str) -> bool {
    text.parse::<u16>().is_ok()
}

/// Access rules: probes are always open; with a token, every other request
/// needs it (reads may be left open with `--control-public-read`); and a
/// browser may only send mutating requests from the dashboard's own origin.
pub async fn guard(
    State(state): State<Arc<ControlState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = request.uri().path();
    if matches!(path, "/health" | "/ready") {
        return next.run(request).await;
    }
    let mutating =
        request.method() != axum::http::Method::GET && request.method() != axum::http::Method::HEAD;
    let headers = request.headers();
    if mutating && !same_origin(headers) {
        return (
            StatusCode::FORBIDDEN,
            "cross-origin requests may not change the cluster\n",
        )
            .into_response();
    }
    if let Some(token) = &state.token {
        if (mutating || !state.public_read) && !bearer_matches(headers, token) {
            return (
                StatusCode::UNAUTHORIZED,
                [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
                "this endpoint needs Authorization: Bearer <control token>\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// Whether a request came from the control plane's own pages, or from a
/// client that is no browser (no `Origin`, no cross-site fetch metadata).
pub fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if matches!(text("sec-fetch-site"), Some("cross-site" | "same-site")) {
        return false;
    }
    match (text("origin"), text("host")) {
        (None, _) => true,
        (Some(origin), Some(host)) => {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                == Some(host)
        }
        (Some(_), None) => false,
    }
}

/// Whether `Authorization` carries `token` as a bearer credential. The
/// scheme name is case-insensitive (RFC 7235 §2.1), the token is not.
pub fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some((scheme, given)) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
    else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let given = given.trim_start();
    // Compare in constant time: the token guards a network endpoint.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Whether this request may see everything `/status` knows: always
/// without a token, else only with it. Readers let in by
/// `--control-public-read` get no query strings, which often carry
/// secrets (signed URLs, API keys, reset tokens).
pub fn sees_everything(state: &ControlState, headers: &HeaderMap) -> bool {
    state
        .token
        .as_deref()
        .is_none_or(|token| bearer_matches(headers, token))
}

/// Cuts the query string off a request target.
pub fn without_query(target: &str) -> &str {
    target.split_once('?').map_or(target, |(path, _)| path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn only_the_dashboards_own_origin_may_post() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:5500")])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:5500"),
            ("origin", "http://127.0.0.1:5500")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:5500"),
            ("origin", "http://evil.test")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:5500"),
            ("sec-fetch-site", "cross-site")
        ])));
    }

    #[test]
    fn the_bearer_token_must_match_exactly_and_the_scheme_in_any_case() {
        let token = "0123456789abcdef";
        for good in [
            "Bearer 0123456789abcdef",
            "bearer 0123456789abcdef",
            "BEARER 0123456789abcdef",
        ] {
            assert!(bearer_matches(&headers(&[("authorization", good)]), token));
        }
        for bad in [
            "Bearer 0123456789abcdeX",
            "Bearer 0123",
            "Basic 0123456789abcdef",
            "Bearer0123456789abcdef",
            "0123456789abcdef",
        ] {
            assert!(
                !bearer_matches(&headers(&[("authorization", bad)]), token),
                "{bad}"
            );
        }
        assert!(!bearer_matches(&headers(&[]), token));
    }

    #[test]
    fn only_loopback_hosts_and_the_control_address_pass() {
        let control: SocketAddr = "127.0.0.1:5500".parse().unwrap();
        for good in [
            "localhost",
            "localhost:5500",
            "LOCALHOST:1",
            "127.0.0.1",
            "127.0.0.1:5500",
            "127.9.8.7:80",
            "[::1]",
            "[::1]:5500",
        ] {
            assert!(host_allowed(good, control), "{good}");
        }
        for bad in [
            "evil.example",
            "evil.example:5500",
            "localhost.evil.example",
            "127.0.0.1.nip.io:5500",
            "10.0.0.1:5500",
            "[::2]:5500",
            "[::1]x",
            "[::1]5500",
            "127.0.0.1:notaport",
            "",
        ] {
            assert!(!host_allowed(bad, control), "{bad}");
        }
        let own: SocketAddr = "[::1]:5500".parse().unwrap();
        assert!(host_allowed("[::1]:5500", own));
    }

    #[test]
    fn queries_are_cut_off() {
        assert_eq!(without_query("/a?token=x"), "/a");
        assert_eq!(without_query("/a"), "/a");
    }
}
