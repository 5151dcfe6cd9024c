//! The request head: found as its bytes arrive (`HeadScanner`), then
//! checked field by field against RFC 9112 (`parse_head`).

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode, Uri, Version};

use super::{bad, refuse, Limits, Refusal};

/// Empty lines tolerated before a request line (after a previous body's
/// stray CRLF); more are refused rather than buffered.
const MAX_LEADING_EMPTY_LINES: usize = 4;

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A checked request head.
#[derive(Debug)]
pub struct Head {
    pub method: Method,
    /// Origin-form (`/path?query`), or `*` for `OPTIONS *`.
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The client allows the connection to be kept after this request.
    pub keep_alive: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
}

/// Finds the end of a request head as its bytes arrive, checking line
/// endings and sizes on the way, so that a hostile head is refused as
/// soon as it is known to be one, never buffered past the limits.
#[derive(Debug, Default)]
pub struct HeadScanner {
    /// Bytes of the buffer already checked.
    scanned: usize,
    /// Where the current line starts.
    line_start: usize,
    /// Where the request line starts (after empty lines before it).
    start: usize,
    /// Where the header section starts, once the request line has ended.
    fields_start: Option<usize>,
}

impl HeadScanner {
    /// Scans the new bytes of `buf` (which holds everything since the
    /// scanner was made). Returns the head's byte range once it is complete.
    pub fn scan(
        &mut self,
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<std::ops::Range<usize>>, Refusal> {
        while self.scanned < buf.len() {
            let i = self.scanned;
            let byte = buf[i];
            self.scanned += 1;
            match byte {
                b'\r' => match buf.get(i + 1) {
                    Some(b'\n') => {}
                    Some(_) => return Err(bad("CR without LF")),
                    None => {
                        // Wait for the next byte before judging.
                        self.scanned -= 1;
                        break;
                    }
                },
                b'\n' => {
                    if i == 0 || buf[i - 1] != b'\r' {
                        return Err(bad("bare LF line ending"));
                    }
                    let line_len = i - 1 - self.line_start;
                    match self.fields_start {
                        None if line_len == 0 && self.line_start == self.start => {
                            // An empty line before the request line (RFC 9112 2.2).
                            // A few are tolerated; a stream of them is not a request.
                            if i + 1 > MAX_LEADING_EMPTY_LINES * 2 {
                                return Err(bad("too many empty lines before the request line"));
                            }
                            self.start = i + 1;
                        }
                        None => self.fields_start = Some(i + 1),
                        Some(_) if line_len == 0 => {
                            return Ok(Some(self.start..i + 1));
                        }
                        Some(_) => {}
                    }
                    self.line_start = i + 1;
                }
                0 => return Err(bad("NUL byte in the request head")),
                _ => {}
            }
            match self.fields_start {
                None if self.scanned - self.start > limits.max_request_line => {
                    return Err(refuse(StatusCode::URI_TOO_LONG, "request line too long"));
                }
                Some(fields) if self.scanned - fields > limits.max_header_size => {
                    return Err(refuse(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "request header section too large",
                    ));
                }
                _ => {}
            }
        }
        Ok(None)
    }
}

/// token characters (RFC 9110 5.6.2).
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Field value characters: visible ASCII, space, tab, and obs-text.
fn is_field_value_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// Splits one header field line into name and value, strictly: a token,
/// a colon right after it, optional whitespace, a value of field-value
/// bytes.
pub(super) fn field_line(line: &[u8]) -> Result<(&[u8], &[u8]), Refusal> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(bad("obsolete line folding"));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(bad("header line without a colon"))?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(bad("invalid header name"));
    }
    if !value.iter().all(|&b| is_field_value_byte(b)) {
        return Err(bad("invalid byte in a header value"));
    }
    Ok((name, trim_ows(value)))
}

/// Comma-separated list elements of every field `name`, trimmed, lowercase.
fn list(headers: &HeaderMap, name: HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|item| String::from_utf8_lossy(trim_ows(item)).to_ascii_lowercase())
        .collect()
}

/// Checks a complete head (from the request line to the empty line) and
/// decides how its body is framed.
pub fn parse_head(head: &[u8], limits: &Limits) -> Result<Head, Refusal> {
    let mut lines = head
        .strip_suffix(b"\r\n\r\n")
        .ok_or(bad("incomplete head"))?
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let request_line = lines.next().ok_or(bad("empty request"))?;

    // method SP request-target SP HTTP-version, single spaces.
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(bad("invalid method"));
    }
    let method = Method::from_bytes(method).map_err(|_| bad("invalid method"))?;
    let version = match version {
        b"HTTP/1.1" => Version::HTTP_11,
        b"HTTP/1.0" => Version::HTTP_10,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(refuse(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "HTTP version not supported",
            ))
        }
        _ => return Err(bad("invalid HTTP version")),
    };
    // What nginx accepts: no controls, no spaces (see `target`).
    if target.is_empty() || !target.iter().all(|&b| crate::target::is_target_byte(b)) {
        return Err(bad("invalid request target"));
    }
    if target.contains(&b'#') {
        return Err(bad("fragment in the request target"));
    }
    let raw_target = target;
    let target = &*crate::target::encode(raw_target);
    let parsed = Uri::try_from(target).map_err(|_| bad("invalid request target"))?;
    let mut authority = None;
    let uri = if target[0] == b'/' {
        if parsed.scheme().is_some() || parsed.authority().is_some() {
            return Err(bad("invalid request target"));
        }
        parsed
    } else if target == b"*" {
        if method != Method::OPTIONS {
            return Err(bad("asterisk-form is for OPTIONS only"));
        }
        parsed
    } else if method == Method::CONNECT {
        return Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported",
        ));
    } else {
        // absolute-form: the authority replaces Host (RFC 9112 3.2.2).
        let scheme_ok = matches!(parsed.scheme_str(), Some("http" | "https"));
        let Some(auth) = parsed.authority().filter(|_| scheme_ok) else {
            return Err(bad("invalid request target"));
        };
        if auth.as_str().contains('@') {
            return Err(bad("userinfo in the request target"));
        }
        authority = Some(auth.clone());
        let path = parsed.path_and_query().map_or("/", |p| p.as_str());
        let path = if path.starts_with('/') { path } else { "/" };
        Uri::try_from(path).map_err(|_| bad("invalid request target"))?
    };
    if method == Method::CONNECT {
        return Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported",
        ));
    }

    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = field_line(line)?;
        if headers.len() >= limits.max_headers {
            return Err(refuse(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many header fields",
            ));
        }
        let name = HeaderName::from_bytes(name).map_err(|_| bad("invalid header name"))?;
        let value = HeaderValue::from_bytes(value).map_err(|_| bad("invalid header value"))?;
        headers.append(name, value);
    }

    if raw_target[0] == b'/' {
        crate::target::record_raw(&mut headers, raw_target);
    } else {
        crate::target::record_raw(&mut headers, &crate::target::origin_form(raw_target));
    }

    // Host: exactly one in HTTP/1.1 (RFC 9112 3.2), a valid authority.
    let hosts = headers.get_all(header::HOST).iter().count();
    if hosts > 1 {
        return Err(bad("several Host headers"));
    }
    if hosts == 0 && version == Version::HTTP_11 && authority.is_none() {
        return Err(bad("missing Host header"));
    }
    if let Some(host) = headers.get(header::HOST) {
        let valid = host.is_empty()
            || (hyper::http::uri::Authority::try_from(host.as_bytes()).is_ok()
                && !host.as_bytes().contains(&b'@'));
        if !valid {
            return Err(bad("invalid Host header"));
        }
    }
    if let Some(authority) = authority {
        let value =
            HeaderValue::from_str(authority.as_str()).map_err(|_| bad("invalid request target"))?;
        headers.insert(header::HOST, value);
    }

    let framing = framing(&headers, version)?;

    let connection = list(&headers, header::CONNECTION);
    let keep_alive = match version {
        Version::HTTP_11 => !connection.iter().any(|t| t == "close"),
        _ => connection.iter().any(|t| t == "keep-alive"),
    };
    let expect = list(&headers, header::EXPECT);
    let expect_continue = match expect.as_slice() {
        [] => false,
        [one] if one == "100-continue" => version == Version::HTTP_11,
        _ => {
            return Err(refuse(
                StatusCode::EXPECTATION_FAILED,
                "unsupported expectation",
            ))
        }
    };
    Ok(Head {
        method,
        uri,
        version,
        headers,
        framing,
        keep_alive,
        expect_continue,
    })
}

/// The body framing of a request (RFC 9112 6.3), refusing every ambiguous
/// combination rather than picking one reading of it.
fn framing(headers: &HeaderMap, version: Version) -> Result<Framing, Refusal> {
    let lengths: Vec<&HeaderValue> = headers.get_all(header::CONTENT_LENGTH).iter().collect();
    let has_te = headers.contains_key(header::TRANSFER_ENCODING);
    if has_te {
        if !lengths.is_empty() {
            return Err(bad("both Content-Length and Transfer-Encoding"));
        }
        if version == Version::HTTP_10 {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        let codings = list(headers, header::TRANSFER_ENCODING);
        if codings != ["chunked"] {
            return Err(bad("unsupported Transfer-Encoding"));
        }
        return Ok(Framing::Chunked);
    }
    match lengths.as_slice() {
        [] => Ok(Framing::Empty),
        [one] => {
            let digits = one.as_bytes();
            if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
                return Err(bad("invalid Content-Length"));
            }
            let len: u64 = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse().ok())
                .ok_or(bad("invalid Content-Length"))?;
            Ok(if len == 0 {
                Framing::Empty
            } else {
                Framing::Length(len)
            })
        }
        _ => Err(bad("several Content-Length headers")),
    }
}
