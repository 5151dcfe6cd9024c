//! From a FastCGI request's parameters to the request a worker gets: the
//! one place that says how the CGI variables reach PHP.
//!
//! php-fpm puts every parameter the web server sends into `$_SERVER` as it
//! came (plus `FCGI_ROLE`, `PHP_SELF`, `PHP_AUTH_*` and `REQUEST_TIME*`),
//! on top of the process environment. ppm does the same by carrying the
//! parameters whole to the worker:
//!
//! - **`X-Ppm-Cgi`**, a header only the master sets (`forwarding` removes
//!   any `X-Ppm-*` a client sends, and the worker believes it only from
//!   its master), holds every parameter in order as `NAME=VALUE` pairs
//!   joined by `&`, each name and value percent-encoded where it has a
//!   control or non-ASCII byte, a space, `%`, `&` or `=`. The runtime
//!   (`bridges/src/RequestGlobals.php`) makes `$_SERVER` from these
//!   instead of from the HTTP request: environment, then the parameters
//!   (a repeated name: the last one wins, like php-fpm), then `PHP_SELF`
//!   (`SCRIPT_NAME` + `PATH_INFO`), `PHP_AUTH_*` from
//!   `HTTP_AUTHORIZATION`, `REQUEST_TIME_FLOAT` and `REQUEST_TIME`.
//!   `$_GET` is parsed from `QUERY_STRING`.
//! - The HTTP request the worker also gets, and that the queue, limits,
//!   metrics and access log see, is rebuilt from them: method from
//!   `REQUEST_METHOD`, target from `REQUEST_URI` (else `SCRIPT_NAME` and
//!   `QUERY_STRING`), version from `SERVER_PROTOCOL`, a header per
//!   `HTTP_*` parameter (`HTTP_USER_AGENT` → `User-Agent`) and
//!   `Content-Type` from `CONTENT_TYPE`; the body is the STDIN stream. The
//!   connection facts come from `REMOTE_ADDR`/`REMOTE_PORT` (the client,
//!   for the access log), `SERVER_ADDR`/`SERVER_PORT` and `HTTPS`.
//!
//! A native worker's request head frame carries the list as such: the
//! worker's request keeps the `CgiVars` extension, which the master puts
//! into the frame (`native_exchange`), and the worker registers it as
//! `$_SERVER` (`native/request.rs`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri, Version};
use tokio::time::Instant;

use crate::front::http1::{Limits, Received, Refusal};
use crate::front::spool::Spooled;
use crate::proxy::{ConnInfo, Target};

/// A FastCGI request's parameters, in the order the web server sent them;
/// a request extension, which marks the request as one that came over
/// FastCGI.
#[derive(Debug, Clone)]
pub struct CgiVars(Vec<(Bytes, Bytes)>);

impl CgiVars {
    /// The parameters, with `FCGI_ROLE` first as php-fpm registers it.
    pub fn new(params: Vec<(Bytes, Bytes)>) -> Self {
        let mut vars = Vec::with_capacity(params.len() + 1);
        vars.push((
            Bytes::from_static(b"FCGI_ROLE"),
            Bytes::from_static(b"RESPONDER"),
        ));
        vars.extend(params);
        Self(vars)
    }

    /// Every parameter in order, `FCGI_ROLE` first.
    pub fn pairs(&self) -> &[(Bytes, Bytes)] {
        &self.0
    }

    /// The value of `name` (the last one sent, as php-fpm keeps it).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n.as_ref() == name.as_bytes())
            .map(|(_, v)| v.as_ref())
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// `METHOD URI PROTOCOL`, for the access log line of a refused request.
    pub fn request_line(&self) -> String {
        let text = |name| self.text(name).unwrap_or("-");
        format!(
            "{} {} {}",
            text("REQUEST_METHOD"),
            text("REQUEST_URI"),
            text("SERVER_PROTOCOL")
        )
    }

    /// The connection facts the web server reports (for the access log,
    /// the metrics and the forwarding headers).
    pub fn conn_info(&self) -> ConnInfo {
        let ip = |name| self.text(name).and_then(|v| v.parse::<IpAddr>().ok());
        let port = |name| self.text(name).and_then(|v| v.parse::<u16>().ok());
        let unknown = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let https = self
            .text("HTTPS")
            .is_some_and(|v| !v.is_empty() && !v.eq_ignore_ascii_case("off"));
        ConnInfo {
            peer: SocketAddr::new(
                ip("REMOTE_ADDR").unwrap_or(unknown),
                port("REMOTE_PORT").unwrap_or(0),
            ),
            local: SocketAddr::new(
                ip("SERVER_ADDR").unwrap_or(unknown),
                port("SERVER_PORT").unwrap_or(0),
            ),
            tls: https,
            target: Target::Any,
        }
    }
}

/// The connection facts of a request whose parameters are unknown.
pub fn unknown_conn() -> ConnInfo {
    let unknown = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    ConnInfo {
        peer: unknown,
        local: unknown,
        tls: false,
        target: Target::Any,
    }
}

/// Checks the parameters against the front door's header limits: the
/// whole stream was bounded by its reader; here the number of `HTTP_*`
/// parameters (the client's headers) is, and `CONTENT_LENGTH` against
/// `--max-body-size`.
pub fn check(vars: &CgiVars, limits: &Limits) -> Result<(), Refusal> {
    let headers = vars
        .0
        .iter()
        .filter(|(n, _)| n.starts_with(b"HTTP_"))
        .count();
    if headers > limits.max_headers {
        return Err(Refusal {
            status: hyper::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            reason: "too many header fields",
        });
    }
    let declared = vars
        .text("CONTENT_LENGTH")
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body_size) {
        return Err(Refusal {
            status: hyper::StatusCode::PAYLOAD_TOO_LARGE,
            reason: "request body too large",
        });
    }
    Ok(())
}

/// The HTTP request the parameters describe, and its connection facts.
pub fn to_request(vars: CgiVars, body: Spooled, received: Instant) -> (Request<Spooled>, ConnInfo) {
    let method = vars
        .get("REQUEST_METHOD")
        .and_then(|m| Method::from_bytes(m).ok())
        .unwrap_or(Method::GET);
    // The worker's $_SERVER has REQUEST_URI as sent; the Uri, for the
    // log and the metrics, has the bytes it refuses percent-encoded.
    let uri = vars
        .get("REQUEST_URI")
        .and_then(|u| Uri::try_from(&*crate::target::encode(u)).ok())
        .filter(|u| u.path().starts_with('/'))
        .or_else(|| script_uri(&vars))
        .unwrap_or_else(|| Uri::from_static("/"));
    let version = match vars.get("SERVER_PROTOCOL") {
        Some(b"HTTP/1.0") => Version::HTTP_10,
        Some(b"HTTP/2.0") => Version::HTTP_2,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &vars.0 {
        let header = match name.strip_prefix(b"HTTP_") {
            Some(b"CONTENT_TYPE" | b"CONTENT_LENGTH") => None,
            Some(rest) => header_name(rest),
            None if name.as_ref() == b"CONTENT_TYPE" && !value.is_empty() => {
                Some(header::CONTENT_TYPE)
            }
            None => None,
        };
        if let (Some(header), Ok(value)) = (header, HeaderValue::from_bytes(value)) {
            // One field per name, the last one, like php-fpm's $_SERVER.
            headers.insert(header, value);
        }
    }
    let conn = vars.conn_info();
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    request.extensions_mut().insert(Received(received));
    request.extensions_mut().insert(vars);
    (request, conn)
}

/// `SCRIPT_NAME?QUERY_STRING`, for a request whose `REQUEST_URI` is
/// missing or not a valid target.
fn script_uri(vars: &CgiVars) -> Option<Uri> {
    let script = vars.text("SCRIPT_NAME").filter(|s| s.starts_with('/'))?;
    let target = match vars.text("QUERY_STRING").filter(|q| !q.is_empty()) {
        Some(query) => format!("{script}?{query}"),
        None => script.to_string(),
    };
    target.parse().ok()
}

/// `USER_AGENT` → `user-agent`.
fn header_name(cgi: &[u8]) -> Option<HeaderName> {
    let name: Vec<u8> = cgi
        .iter()
        .map(|&b| {
            if b == b'_' {
                b'-'
            } else {
                b.to_ascii_lowercase()
            }
        })
        .collect();
    HeaderName::from_bytes(&name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> CgiVars {
        CgiVars::new(
            pairs
                .iter()
                .map(|(n, v)| {
                    (
                        Bytes::copy_from_slice(n.as_bytes()),
                        Bytes::copy_from_slice(v.as_bytes()),
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn nginx_parameters_become_the_request_and_its_connection() {
        let v = vars(&[
            ("REQUEST_METHOD", "POST"),
            ("REQUEST_URI", "/hello/world?a=1"),
            ("QUERY_STRING", "a=1"),
            ("SERVER_PROTOCOL", "HTTP/1.0"),
            ("CONTENT_TYPE", "application/x-www-form-urlencoded"),
            ("CONTENT_LENGTH", "3"),
            ("REMOTE_ADDR", "203.0.113.9"),
            ("REMOTE_PORT", "40000"),
            ("SERVER_ADDR", "127.0.0.1"),
            ("SERVER_PORT", "443"),
            ("HTTPS", "on"),
            ("HTTP_HOST", "shop.example"),
            ("HTTP_USER_AGENT", "curl/8"),
            ("HTTP_X_CUSTOM", "first"),
            ("HTTP_X_CUSTOM", "second"),
        ]);
        let (req, conn) = to_request(v, Spooled::empty(), Instant::now());
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri(), "/hello/world?a=1");
        assert_eq!(req.version(), Version::HTTP_10);
        assert_eq!(req.headers()["host"], "shop.example");
        assert_eq!(req.headers()["user-agent"], "curl/8");
        assert_eq!(req.headers()["x-custom"], "second");
        assert_eq!(
            req.headers()["content-type"],
            "application/x-www-form-urlencoded"
        );
        assert!(!req.headers().contains_key("content-length"));
        assert_eq!(conn.peer, "203.0.113.9:40000".parse().unwrap());
        assert_eq!(conn.local, "127.0.0.1:443".parse().unwrap());
        assert!(conn.tls);
        assert!(req.extensions().get::<CgiVars>().is_some());
    }

    #[test]
    fn a_missing_or_bad_request_uri_falls_back_to_the_script_and_query() {
        let v = vars(&[
            ("REQUEST_URI", "not a uri"),
            ("SCRIPT_NAME", "/index.php"),
            ("QUERY_STRING", "x=1"),
        ]);
        let (req, conn) = to_request(v, Spooled::empty(), Instant::now());
        assert_eq!(req.method(), Method::GET);
        let raw = vars(&[("REQUEST_URI", "/caf\u{e9}?q=<b>")]);
        let (encoded, _) = to_request(raw, Spooled::empty(), Instant::now());
        assert_eq!(encoded.uri(), "/caf%C3%A9?q=%3Cb%3E");
        assert_eq!(req.uri(), "/index.php?x=1");
        assert!(!conn.tls);
        let (req, _) = to_request(vars(&[]), Spooled::empty(), Instant::now());
        assert_eq!(req.uri(), "/");
    }

    #[test]
    fn too_many_headers_or_a_declared_body_past_the_limit_are_refused() {
        let limits = Limits {
            max_headers: 2,
            max_body_size: 10,
            ..Limits::default()
        };
        let ok = vars(&[("HTTP_A", "1"), ("HTTP_B", "2"), ("CONTENT_LENGTH", "10")]);
        assert!(check(&ok, &limits).is_ok());
        let many = vars(&[("HTTP_A", "1"), ("HTTP_B", "2"), ("HTTP_C", "3")]);
        assert_eq!(check(&many, &limits).unwrap_err().status, 431);
        let big = vars(&[("CONTENT_LENGTH", "11")]);
        assert_eq!(check(&big, &limits).unwrap_err().status, 413);
    }
}
