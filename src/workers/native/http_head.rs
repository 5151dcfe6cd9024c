//! Between hyper's HTTP types and the native runtime's: a request's head
//! as PHP will see it ([`RequestHead`]), and PHP's header lines as
//! response headers. Used by every HTTP front of a native worker.

use std::net::SocketAddr;

use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH};
use hyper::http::request::Parts;

use super::frames::RequestHead;

/// Headers that describe one connection, not the request: PHP never sees
/// them (as behind nginx, which does not forward them to php-fpm).
pub const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

/// The `Content-Length` the client declared, if it is a number.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// The head PHP gets for a request that came from `peer` to `local`;
/// `content_length` is the body's length as PHP is told it.
pub fn request_head(
    parts: &Parts,
    peer: SocketAddr,
    local: SocketAddr,
    content_length: Option<u64>,
) -> RequestHead {
    RequestHead {
        method: parts.method.to_string(),
        target: parts
            .uri
            .path_and_query()
            .map_or_else(|| b"/".to_vec(), |p| p.as_str().into()),
        protocol: format!("{:?}", parts.version),
        remote_addr: peer.ip().to_canonical().to_string(),
        remote_port: peer.port(),
        server_addr: local.ip().to_canonical().to_string(),
        server_port: local.port(),
        tls: false,
        content_length,
        headers: parts
            .headers
            .iter()
            .filter(|(name, _)| !HOP_BY_HOP.contains(&name.as_str()))
            .map(|(name, value)| (canonical_name(name.as_str()), value.as_bytes().to_vec()))
            .collect(),
        // FastCGI parameters come only through a master.
        cgi: Vec::new(),
    }
}

/// `content-type` → `Content-Type`: PHP applications read header names
/// the way clients usually send them (hyper lowercases them).
pub fn canonical_name(lower: &str) -> String {
    let mut out = String::with_capacity(lower.len());
    let mut upper = true;
    for c in lower.chars() {
        out.push(if upper { c.to_ascii_uppercase() } else { c });
        upper = c == '-';
    }
    out
}

/// One of PHP's header lines (`Name: value`) as a response header; `None`
/// for a line no HTTP client would accept.
pub fn parse_header_line(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = HeaderName::from_bytes(line[..colon].trim_ascii()).ok()?;
    let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
    Some((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_capitalised_for_php() {
        assert_eq!(canonical_name("x-request-id"), "X-Request-Id");
        assert_eq!(canonical_name("host"), "Host");
    }

    #[test]
    fn php_header_lines_become_response_headers() {
        let (n, v) = parse_header_line(b"Content-type: text/html; charset=UTF-8").unwrap();
        assert_eq!(n, "content-type");
        assert_eq!(v, "text/html; charset=UTF-8");
        assert!(parse_header_line(b"no colon").is_none());
        assert!(parse_header_line(b"Bad Name: x").is_none());
    }

    #[test]
    fn hop_by_hop_headers_do_not_reach_php() {
        let request = hyper::Request::builder()
            .uri("/a?b=1")
            .header("connection", "keep-alive")
            .header("x-a", "1")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let addr: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        let head = request_head(&parts, addr, addr, None);
        assert_eq!(head.target, b"/a?b=1");
        assert_eq!(head.protocol, "HTTP/1.1");
        assert_eq!(head.remote_addr, "127.0.0.1");
        assert_eq!(head.headers, vec![("X-A".to_string(), b"1".to_vec())]);
    }
}
