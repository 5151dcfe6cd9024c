//! HTTP/1.x from clients: a strict request reader of ppm's own, and the
//! response writer that goes with it.
//!
//! # Why not hyper's server here
//!
//! The master is the only parser of untrusted bytes: what it forwards,
//! PHP believes. hyper's HTTP/1 server is lenient where a proxy must not
//! be: it accepts a request with both `Content-Length` and
//! `Transfer-Encoding` (it drops the length), and its parser (httparse)
//! accepts bare LF line endings, so a service behind it cannot even see
//! those requests to refuse them. Checking the raw bytes before hyper would
//! mean a second parser that has to agree with hyper's on every message
//! boundary. This module is instead the one HTTP/1 parser: it reads a
//! request head, checks it against RFC 9112 with no leniency, reads the
//! body with the one framing the head allows (a `Content-Length`, or
//! `chunked` alone), and hands the balancer a complete request. Anything
//! ambiguous is refused with a 4xx and the connection is closed, because
//! after a framing error the next byte's meaning is unknown. HTTP/2 (TLS
//! with ALPN `h2`, or cleartext with prior knowledge) still goes to hyper,
//! whose h2 framing has no such ambiguity; the worker side is hyper's
//! HTTP/1 client, which only ever sends the normalized request the
//! balancer builds: a `Content-Length` body, no `Transfer-Encoding`.
//!
//! # Theory of operation
//!
//! `serve` runs one connection: read a head (idle timeout before its first
//! byte, `--header-timeout` from its first byte to its end, 408 past it),
//! check it (`HeadScanner` for lines and sizes as bytes arrive,
//! `parse_head` for the fields), read the body (`--body-timeout` of
//! silence allowed, `--max-body-size` enforced for `chunked` as it
//! arrives, and before reading for `Content-Length`) into a `SpoolWriter`,
//! all within `--request-timeout` of the request's first byte (408 past
//! it, so a client trickling bytes cannot hold a connection for ever),
//! call the handler, write its response, and go round again while the
//! connection may be kept alive. A refusal is answered and the connection
//! closed the lingering way (`linger`), so a client still writing its
//! request reads the answer instead of a reset. While the handler runs, the socket is
//! watched: a client that goes away cancels its request (and so leaves
//! the worker queue).
//!
//! The parsing functions are pure (`HeadScanner`, `parse_head`,
//! `ChunkedDecoder`) so they can be tested byte by byte and fuzzed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::balancer::ProxyBody;
use crate::linger::Linger;
use crate::spool::{SpoolConfig, SpoolWriter, Spooled};

/// Empty lines tolerated before a request line (after a previous body's
/// stray CRLF); more are refused rather than buffered.
const MAX_LEADING_EMPTY_LINES: usize = 4;

/// The limits of the front door.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest request line (method, target, version); 414 past it.
    pub max_request_line: usize,
    /// Largest header section (or trailer section), request line excluded; 431 past it.
    pub max_header_size: usize,
    /// Most header fields; 431 past it.
    pub max_headers: usize,
    /// From the first byte of a request to the end of its head; 408 past it.
    pub header_timeout: Duration,
    /// Longest silence while a body is read; 408 past it.
    pub body_timeout: Duration,
    /// From the first byte of a request to the end of its body; 408 past it.
    pub request_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request, and
    /// the longest a response write may make no progress.
    pub idle_timeout: Duration,
    /// Largest request body; 413 past it.
    pub max_body_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_line: 8 * 1024,
            max_header_size: 32 * 1024,
            max_headers: 100,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(60),
            max_body_size: 64 * 1024 * 1024,
        }
    }
}

/// A request the front door refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
}

fn refuse(status: StatusCode, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

fn bad(reason: &'static str) -> Refusal {
    refuse(StatusCode::BAD_REQUEST, reason)
}

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
fn is_tchar(b: u8) -> bool {
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
fn field_line(line: &[u8]) -> Result<(&[u8], &[u8]), Refusal> {
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

/// Longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 4096;

/// Decodes a `chunked` body strictly (RFC 9112 7.1): 1 to 16 hex digits,
/// well-formed extensions (ignored), CRLF after every line and every
/// chunk's data, trailer fields checked like header fields and dropped.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: Chunked,
    trailer_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// What one step of the chunked decoder found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body data: this range of the input (empty when the step consumed
    /// only framing: a size line, a CRLF, a trailer field).
    Data(std::ops::Range<usize>),
    /// More input is needed.
    More,
    /// The body is complete.
    Done,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self {
            state: Chunked::Size,
            trailer_bytes: 0,
        }
    }

    /// Takes bytes from the front of `input`: returns how many were
    /// consumed and what they were. Call again with the rest until it
    /// returns `More` (then supply more input) or `Done`.
    pub fn step(&mut self, input: &[u8], limits: &Limits) -> Result<(usize, Decoded), Refusal> {
        match self.state {
            Chunked::Done => Ok((0, Decoded::Done)),
            Chunked::Size => {
                let Some(line) = line(input, MAX_CHUNK_LINE)? else {
                    return Ok((0, Decoded::More));
                };
                let size = chunk_size(&input[..line])?;
                self.state = if size == 0 {
                    Chunked::Trailers
                } else {
                    Chunked::Data(size)
                };
                Ok((line + 2, Decoded::Data(0..0)))
            }
            Chunked::Data(left) => {
                if input.is_empty() {
                    return Ok((0, Decoded::More));
                }
                let take = left.min(input.len() as u64) as usize;
                self.state = if take as u64 == left {
                    Chunked::DataEnd
                } else {
                    Chunked::Data(left - take as u64)
                };
                Ok((take, Decoded::Data(0..take)))
            }
            Chunked::DataEnd => match input {
                [b'\r', b'\n', ..] => {
                    self.state = Chunked::Size;
                    Ok((2, Decoded::Data(0..0)))
                }
                [] | [b'\r'] => Ok((0, Decoded::More)),
                _ => Err(bad("chunk data not followed by CRLF")),
            },
            Chunked::Trailers => {
                let Some(end) = line(input, limits.max_header_size)? else {
                    return Ok((0, Decoded::More));
                };
                if end == 0 {
                    self.state = Chunked::Done;
                    return Ok((2, Decoded::Done));
                }
                field_line(&input[..end])?;
                self.trailer_bytes += end + 2;
                if self.trailer_bytes > limits.max_header_size {
                    return Err(refuse(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "trailer section too large",
                    ));
                }
                Ok((end + 2, Decoded::Data(0..0)))
            }
        }
    }
}

/// The length of the CRLF-terminated line at the start of `input`, once
/// it is all there. A bare CR or LF, a NUL, or a line longer than `max`
/// is an error.
fn line(input: &[u8], max: usize) -> Result<Option<usize>, Refusal> {
    for (i, &b) in input.iter().enumerate() {
        match b {
            b'\n' => return Err(bad("bare LF line ending")),
            b'\r' => {
                return match input.get(i + 1) {
                    Some(b'\n') => Ok(Some(i)),
                    Some(_) => Err(bad("CR without LF")),
                    None => Ok(None),
                }
            }
            0 => return Err(bad("NUL byte in a chunk line")),
            _ if i >= max => return Err(bad("chunk line too long")),
            _ => {}
        }
    }
    if input.len() > max {
        return Err(bad("chunk line too long"));
    }
    Ok(None)
}

/// `chunk-size [ chunk-ext ]`, strictly; the extensions are ignored.
fn chunk_size(line: &[u8]) -> Result<u64, Refusal> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(bad("invalid chunk size"));
    }
    let size = u64::from_str_radix(std::str::from_utf8(&line[..digits]).unwrap_or("x"), 16)
        .map_err(|_| bad("invalid chunk size"))?;
    // chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
    let mut rest = &line[digits..];
    let ws = |s: &mut &[u8]| {
        while let [b' ' | b'\t', tail @ ..] = *s {
            *s = tail;
        }
    };
    let token = |s: &mut &[u8]| -> bool {
        let n = s.iter().take_while(|&&b| is_tchar(b)).count();
        *s = &s[n..];
        n > 0
    };
    loop {
        ws(&mut rest);
        match rest {
            [] => return Ok(size),
            [b';', tail @ ..] => rest = tail,
            _ => return Err(bad("invalid chunk extension")),
        }
        ws(&mut rest);
        if !token(&mut rest) {
            return Err(bad("invalid chunk extension"));
        }
        ws(&mut rest);
        if let [b'=', tail @ ..] = rest {
            rest = tail;
            ws(&mut rest);
            if let [b'"', tail @ ..] = rest {
                rest = quoted_string_tail(tail).ok_or(bad("invalid chunk extension"))?;
            } else if !token(&mut rest) {
                return Err(bad("invalid chunk extension"));
            }
        }
    }
}

/// After an opening quote: the input after the closing quote.
fn quoted_string_tail(mut s: &[u8]) -> Option<&[u8]> {
    loop {
        match s {
            [b'"', tail @ ..] => return Some(tail),
            [b'\\', escaped, tail @ ..]
                if *escaped == b'\t' || (b' '..=b'~').contains(escaped) || *escaped >= 0x80 =>
            {
                s = tail
            }
            [b, tail @ ..] if *b == b'\t' || (*b >= b' ' && *b != 0x7f && *b != b'\\') => s = tail,
            _ => return None,
        }
    }
}

/// Parses one whole request from `bytes` the way a connection would, with
/// the body decoded in memory: the pure front half of `serve`, used by the
/// fuzz tests. Returns the head, the body and the bytes consumed, or None
/// when the input ends first.
pub fn parse_request(
    bytes: &[u8],
    limits: &Limits,
) -> Result<Option<(Head, Vec<u8>, usize)>, Refusal> {
    let mut scanner = HeadScanner::default();
    let Some(range) = scanner.scan(bytes, limits)? else {
        return Ok(None);
    };
    let head = parse_head(&bytes[range.clone()], limits)?;
    let mut at = range.end;
    let mut body = Vec::new();
    match head.framing {
        Framing::Empty => {}
        Framing::Length(len) => {
            if len > limits.max_body_size {
                return Err(too_large());
            }
            let Some(end) = at.checked_add(len as usize).filter(|&e| e <= bytes.len()) else {
                return Ok(None);
            };
            body.extend_from_slice(&bytes[at..end]);
            at = end;
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            loop {
                let (used, decoded) = decoder.step(&bytes[at..], limits)?;
                match decoded {
                    Decoded::Data(range) => body.extend_from_slice(&bytes[at..][range]),
                    Decoded::More => return Ok(None),
                    Decoded::Done => {
                        at += used;
                        break;
                    }
                }
                at += used;
                if body.len() as u64 > limits.max_body_size {
                    return Err(too_large());
                }
            }
        }
    }
    Ok(Some((head, body, at)))
}

fn too_large() -> Refusal {
    refuse(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
}

fn timed_out() -> Refusal {
    refuse(StatusCode::REQUEST_TIMEOUT, "request not received in time")
}

/// When the request started arriving (its first byte), as a request
/// extension, for the access log's request time.
#[derive(Debug, Clone, Copy)]
pub struct Received(pub Instant);

/// What `serve` hands the handler: a complete request, or the refusal of
/// one (whose response is sent before the connection closes). The
/// request line is kept with a refusal for the access log, when known.
pub enum Arrival {
    Request(Request<Spooled>),
    Refused {
        refusal: Refusal,
        request_line: Option<String>,
        received: Instant,
    },
}

/// How a connection read ended, when it did not produce a request.
enum Stop {
    /// Nothing to answer: the client left or was idle too long.
    Close,
    /// Answer with this refusal, then close.
    Refuse(Refusal),
}

impl From<Refusal> for Stop {
    fn from(refusal: Refusal) -> Self {
        Stop::Refuse(refusal)
    }
}

/// Reads into `buf` until `deadline`. Ok(false) on end of input.
async fn fill<IO: AsyncRead + Unpin>(
    io: &mut IO,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<bool, ()> {
    buf.reserve(16 * 1024);
    match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Ok(false),
        Ok(Ok(_)) => Ok(true),
        Err(_) => Err(()),
    }
}

/// Serves HTTP/1.x requests on one connection until it closes, the client
/// leaves, or `shutdown` turns true (the request in progress finishes).
/// `buf` holds bytes already read from `io`.
pub async fn serve<IO, H, F>(
    mut io: IO,
    mut buf: BytesMut,
    limits: &Limits,
    spool: &Arc<SpoolConfig>,
    mut shutdown: watch::Receiver<bool>,
    mut handler: H,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
    H: FnMut(Arrival) -> F,
    F: Future<Output = Response<ProxyBody>>,
{
    let mut wait = limits.header_timeout;
    loop {
        let Some(arrival) =
            next_arrival(&mut io, &mut buf, wait, limits, spool, &mut shutdown).await
        else {
            return;
        };
        wait = limits.idle_timeout;
        let request = match arrival {
            Arrival::Request(request) => request,
            Arrival::Refused {
                refusal,
                request_line,
                received,
            } => {
                let linger = Linger::after(refusal.status);
                let response = handler(Arrival::Refused {
                    refusal,
                    request_line,
                    received,
                })
                .await;
                let (method, version) = (Method::GET, Version::HTTP_11);
                let _ = write_response(&mut io, response, &method, version, false, limits).await;
                // The client may still be sending: see `linger`.
                crate::linger::close(&mut io, linger, &mut shutdown).await;
                return;
            }
        };
        let method = request.method().clone();
        let version = request.version();
        let keep_alive = request.extensions().get::<KeepAlive>().is_some();

        // The socket is watched while the request is handled: a client
        // that leaves cancels it (and so leaves the worker queue).
        let handling = handler(Arrival::Request(request));
        tokio::pin!(handling);
        let mut watching = true;
        let response = loop {
            tokio::select! {
                response = &mut handling => break response,
                read = io.read_buf(&mut buf), if watching => match read {
                    Ok(0) | Err(_) => return,
                    // Pipelined bytes: kept for the next round, but not
                    // more than one head's worth while this one runs.
                    Ok(_) => watching = buf.len() < limits.max_request_line + limits.max_header_size,
                },
            }
        };
        let keep = keep_alive && !*shutdown.borrow();
        match write_response(&mut io, response, &method, version, keep, limits).await {
            Ok(true) => {}
            _ => return,
        }
    }
}

/// Marks a request whose connection may be kept after it (an extension).
#[derive(Debug, Clone, Copy)]
struct KeepAlive;

/// Reads the next request, head and body: a complete request, the
/// refusal of one, or None when the connection should just close (the
/// client left, stayed silent for `wait`, or the master is stopping
/// between requests).
async fn next_arrival<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    buf: &mut BytesMut,
    wait: Duration,
    limits: &Limits,
    spool: &Arc<SpoolConfig>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Arrival> {
    // The head: `wait` for its first byte, then --header-timeout for the rest.
    let silent_until = Instant::now() + wait;
    let mut received = None;
    let mut scanner = HeadScanner::default();
    let scanned = loop {
        match scanner.scan(buf, limits) {
            Err(refusal) => break Err(refusal),
            Ok(Some(range)) => break Ok(range),
            Ok(None) => {}
        }
        if !buf.is_empty() && received.is_none() {
            received = Some(Instant::now());
        }
        let deadline = received.map_or(silent_until, |at| {
            at + limits.header_timeout.min(limits.request_timeout)
        });
        let read = tokio::select! {
            read = fill(io, buf, deadline) => read,
            _ = crate::until_true(shutdown), if buf.is_empty() => return None,
        };
        match read {
            Ok(true) => {}
            Ok(false) => return None,
            Err(()) if received.is_some() => break Err(timed_out()),
            Err(()) => return None,
        }
    };
    let received = received.unwrap_or_else(Instant::now);
    let request_line = first_line(buf);
    let refused = |refusal| {
        Some(Arrival::Refused {
            refusal,
            request_line: request_line.clone(),
            received,
        })
    };
    let range = match scanned {
        Ok(range) => range,
        Err(refusal) => return refused(refusal),
    };
    let head = match parse_head(&buf[range.clone()], limits) {
        Ok(head) => head,
        Err(refusal) => return refused(refusal),
    };
    buf.advance(range.end);

    let deadline = received + limits.request_timeout;
    let body = match read_body(io, buf, &head, limits, spool, deadline).await {
        Ok(body) => body,
        Err(Stop::Close) => return None,
        Err(Stop::Refuse(refusal)) => return refused(refusal),
    };
    let mut request = Request::new(body);
    *request.method_mut() = head.method;
    *request.uri_mut() = head.uri;
    *request.version_mut() = head.version;
    *request.headers_mut() = head.headers;
    request.extensions_mut().insert(Received(received));
    if head.keep_alive {
        request.extensions_mut().insert(KeepAlive);
    }
    Some(Arrival::Request(request))
}

/// The request line at the start of `buf`, for the log (lossy, bounded).
fn first_line(buf: &[u8]) -> Option<String> {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let rest = &buf[start..];
    let end = rest
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(rest.len());
    Some(String::from_utf8_lossy(&rest[..end.min(1024)]).into_owned())
}

async fn read_body<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    buf: &mut BytesMut,
    head: &Head,
    limits: &Limits,
    spool: &Arc<SpoolConfig>,
    deadline: Instant,
) -> Result<Spooled, Stop> {
    if let Framing::Length(len) = head.framing {
        if len > limits.max_body_size {
            return Err(too_large().into());
        }
    }
    if head.framing == Framing::Empty {
        return Ok(Spooled::empty());
    }
    if head.expect_continue && buf.is_empty() {
        let continued = tokio::time::timeout(
            limits.idle_timeout,
            io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n"),
        )
        .await;
        if !matches!(continued, Ok(Ok(()))) {
            return Err(Stop::Close);
        }
    }
    let mut body = SpoolWriter::new(spool.clone());
    let stored = |_| {
        Stop::Refuse(refuse(
            StatusCode::INSUFFICIENT_STORAGE,
            "cannot store the request body",
        ))
    };
    match head.framing {
        Framing::Empty => {}
        Framing::Length(len) => {
            let mut left = len;
            while left > 0 {
                if buf.is_empty() {
                    more(io, buf, limits.body_timeout, deadline).await?;
                }
                let take = left.min(buf.len() as u64) as usize;
                body.push(&buf[..take]).await.map_err(stored)?;
                buf.advance(take);
                left -= take as u64;
            }
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            loop {
                let (used, decoded) = decoder.step(buf, limits)?;
                match decoded {
                    Decoded::Data(range) => {
                        if body.len() + range.len() as u64 > limits.max_body_size {
                            return Err(too_large().into());
                        }
                        if !range.is_empty() {
                            body.push(&buf[range]).await.map_err(stored)?;
                        }
                        buf.advance(used);
                    }
                    Decoded::More => more(io, buf, limits.body_timeout, deadline).await?,
                    Decoded::Done => {
                        buf.advance(used);
                        break;
                    }
                }
            }
        }
    }
    body.finish().await.map_err(stored)
}

/// Reads more body bytes, allowing `silence` without any, and none
/// past the request's `deadline`.
async fn more<IO: AsyncRead + Unpin>(
    io: &mut IO,
    buf: &mut BytesMut,
    silence: Duration,
    deadline: Instant,
) -> Result<(), Stop> {
    match fill(io, buf, deadline.min(Instant::now() + silence)).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Stop::Close),
        Err(()) => Err(Stop::Refuse(timed_out())),
    }
}

/// Writes all of `data`, allowing `stall` without progress.
async fn write<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    data: Vec<u8>,
    stall: Duration,
) -> std::io::Result<()> {
    match tokio::time::timeout(stall, io.write_all(&data)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Flush the write buffer when it grows past this.
const WRITE_BUFFER: usize = 64 * 1024;

/// Writes `response` for a request with `method` and `version`. Returns
/// whether the connection may serve another request.
pub async fn write_response<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    response: Response<ProxyBody>,
    method: &Method,
    version: Version,
    keep_alive: bool,
    limits: &Limits,
) -> std::io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    let no_body = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let length = declared.or_else(|| body.size_hint().exact());
    // Chunked only for HTTP/1.1 clients; the server answers HTTP/1.1, and
    // 1.0 clients get a body delimited by the connection's close.
    let chunked = !no_body && length.is_none() && version != Version::HTTP_10;
    let mut keep_alive = keep_alive && (no_body || length.is_some() || chunked);

    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if matches!(
            *name,
            header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::CONNECTION
        ) || name == "keep-alive"
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let omit_length = status.is_informational() || status == StatusCode::NO_CONTENT;
    match length {
        Some(len) if !omit_length && (!no_body || declared.is_some() || len > 0) => {
            out.extend_from_slice(format!("content-length: {len}\r\n").as_bytes());
        }
        _ if chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");

    if no_body {
        drop(body);
        write(io, out, limits.idle_timeout).await?;
        io.flush().await?;
        return Ok(keep_alive);
    }
    let mut sent: u64 = 0;
    // A small body of known length goes out with its head in one write;
    // anything else is flushed as soon as the body has nothing more ready
    // at once, so a streamed response is not held back.
    let gather = length.is_some_and(|len| len <= WRITE_BUFFER as u64);
    loop {
        let frame = tokio::select! {
            biased;
            frame = body.frame() => frame,
            _ = std::future::ready(()), if !out.is_empty() && !gather => {
                write(io, std::mem::take(&mut out), limits.idle_timeout).await?;
                body.frame().await
            }
        };
        match frame {
            None => break,
            Some(Err(err)) => {
                // The worker broke off: the client can only tell from the
                // connection closing early.
                if !out.is_empty() {
                    let _ = write(io, out, limits.idle_timeout).await;
                }
                return Err(std::io::Error::other(err));
            }
            Some(Ok(frame)) => {
                let Ok(mut data) = frame.into_data() else {
                    continue;
                };
                if let Some(len) = length {
                    if sent + data.len() as u64 > len {
                        data.truncate((len - sent) as usize);
                        keep_alive = false;
                    }
                }
                if data.is_empty() {
                    continue;
                }
                sent += data.len() as u64;
                if chunked {
                    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                }
                out.extend_from_slice(&data);
                if chunked {
                    out.extend_from_slice(b"\r\n");
                }
                if out.len() >= WRITE_BUFFER {
                    write(io, std::mem::take(&mut out), limits.idle_timeout).await?;
                }
            }
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    if !out.is_empty() {
        write(io, out, limits.idle_timeout).await?;
    }
    io.flush().await?;
    if length.is_some_and(|len| sent < len) {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(keep_alive)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Option<(Head, Vec<u8>, usize)>, Refusal> {
        parse_request(bytes, &Limits::default())
    }

    fn status(bytes: &[u8]) -> u16 {
        match parse(bytes) {
            Ok(Some(_)) => 200,
            Ok(None) => 0,
            Err(r) => r.status.as_u16(),
        }
    }

    #[test]
    fn a_plain_request_parses() {
        let (head, body, used) =
            parse(b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\nrest")
                .unwrap()
                .unwrap();
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri, "/a?b=c");
        assert_eq!(head.headers["accept"], "*/*");
        assert!(head.keep_alive);
        assert!(body.is_empty());
        assert_eq!(used, 45);
    }

    #[test]
    fn a_chunked_body_decodes_with_extensions_and_trailers() {
        let req = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                    3;a=b;c=\"d e\"\r\nabc\r\n2 ; q\r\nde\r\n0\r\nX-T: 1\r\n\r\n";
        let (head, body, used) = parse(req).unwrap().unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        assert_eq!(body, b"abcde");
        assert_eq!(used, req.len());
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for req in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",
            b"GET / HTTP/1.1\nHost: x\n\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET a HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert_eq!(status(req), 400, "{}", String::from_utf8_lossy(req));
        }
    }

    #[test]
    fn bad_chunks_are_refused() {
        for chunks in [
            &b"g\r\n"[..],
            b"\r\n",
            b"0x3\r\nabc\r\n0\r\n\r\n",
            b"3 x\r\nabc\r\n0\r\n\r\n",
            b"3;\r\nabc\r\n0\r\n\r\n",
            b"3;a=\"b\r\nabc\r\n0\r\n\r\n",
            b"3\nabc\r\n0\r\n\r\n",
            b"3\r\nabcd\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"-3\r\nabc\r\n0\r\n\r\n",
            b"3\r\nabc\r\n0\r\nbad trailer\r\n\r\n",
        ] {
            let mut req =
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            req.extend_from_slice(chunks);
            assert_eq!(status(&req), 400, "{}", String::from_utf8_lossy(chunks));
        }
    }

    #[test]
    fn limits_have_their_own_statuses() {
        let limits = Limits {
            max_request_line: 20,
            max_header_size: 40,
            max_headers: 2,
            max_body_size: 5,
            ..Limits::default()
        };
        let check = |req: &[u8]| parse_request(req, &limits).err().map(|r| r.status.as_u16());
        assert_eq!(
            check(b"GET /aaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n"),
            Some(414)
        );
        assert_eq!(check(b"GET /aaaaaaaaaaaaaaaaaaaaaaaaa"), Some(414));
        assert_eq!(
            check(b"GET / HTTP/1.1\r\nHost: x\r\nX: yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\r\n"),
            Some(431)
        );
        assert_eq!(
            check(b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n\r\n"),
            Some(431)
        );
        assert_eq!(
            check(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n"),
            Some(413)
        );
        assert_eq!(
            check(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef"),
            Some(413)
        );
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_its_host() {
        let (head, _, _) =
            parse(b"GET http://example.test:8080/p?q HTTP/1.1\r\nHost: other\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(head.uri, "/p?q");
        assert_eq!(head.headers["host"], "example.test:8080");
    }

    #[test]
    fn connection_and_expect_are_understood() {
        let (head, _, _) = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!head.keep_alive);
        let (head, _, _) = parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(head.keep_alive);
        let (head, _, _) = parse(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!head.keep_alive);
        assert_eq!(
            status(
                b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx"
            ),
            200
        );
        assert_eq!(
            status(b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n"),
            417
        );
    }

    /// A body of unknown length, like a streamed worker response.
    struct Frames(std::collections::VecDeque<&'static [u8]>);

    impl Body for Frames {
        type Data = bytes::Bytes;
        type Error = crate::balancer::BoxError;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>>
        {
            std::task::Poll::Ready(
                self.0
                    .pop_front()
                    .map(|d| Ok(hyper::body::Frame::data(bytes::Bytes::from_static(d)))),
            )
        }
    }

    async fn written(
        status: u16,
        method: Method,
        version: Version,
        body: ProxyBody,
        headers: &[(&'static str, &'static str)],
    ) -> (String, bool) {
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        for (k, v) in headers {
            response
                .headers_mut()
                .insert(*k, HeaderValue::from_static(v));
        }
        let mut out = Vec::new();
        let keep = write_response(
            &mut out,
            response,
            &method,
            version,
            true,
            &Limits::default(),
        )
        .await
        .unwrap();
        (String::from_utf8(out).unwrap(), keep)
    }

    fn streamed() -> ProxyBody {
        Frames(["ab".as_bytes(), "cde".as_bytes()].into()).boxed_unsync()
    }

    fn fixed(text: &'static str) -> ProxyBody {
        http_body_util::Full::new(bytes::Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync()
    }

    #[tokio::test]
    async fn responses_are_framed_for_the_client_version() {
        let (out, keep) = written(200, Method::GET, Version::HTTP_11, streamed(), &[]).await;
        assert!(out.contains("transfer-encoding: chunked\r\n"), "{out}");
        assert!(
            out.ends_with("\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"),
            "{out}"
        );
        assert!(keep);
        let (out, keep) = written(200, Method::GET, Version::HTTP_10, streamed(), &[]).await;
        assert!(
            !out.contains("chunked") && out.contains("connection: close"),
            "{out}"
        );
        assert!(out.ends_with("\r\n\r\nabcde"), "{out}");
        assert!(!keep, "the end of the body is the end of the connection");
        let (out, keep) = written(200, Method::GET, Version::HTTP_10, fixed("abc"), &[]).await;
        assert!(
            out.contains("content-length: 3\r\nconnection: keep-alive\r\n"),
            "{out}"
        );
        assert!(keep);
    }

    #[tokio::test]
    async fn head_204_and_304_answers_have_no_body() {
        let empty = || fixed("");
        let (out, _) = written(
            200,
            Method::HEAD,
            Version::HTTP_11,
            empty(),
            &[("content-length", "42")],
        )
        .await;
        assert!(
            out.contains("content-length: 42\r\n") && out.ends_with("\r\n\r\n"),
            "{out}"
        );
        let (out, _) = written(204, Method::GET, Version::HTTP_11, empty(), &[]).await;
        assert!(
            !out.contains("content-length") && !out.contains("chunked"),
            "{out}"
        );
        let (out, keep) = written(
            304,
            Method::GET,
            Version::HTTP_11,
            empty(),
            &[("etag", "\"x\"")],
        )
        .await;
        assert!(
            out.starts_with("HTTP/1.1 304 Not Modified\r\n") && out.ends_with("\r\n\r\n"),
            "{out}"
        );
        assert!(keep);
    }

    #[tokio::test]
    async fn a_body_longer_than_its_declared_length_is_cut_and_the_connection_closed() {
        let (out, keep) = written(
            200,
            Method::GET,
            Version::HTTP_11,
            streamed(),
            &[("content-length", "3")],
        )
        .await;
        assert!(out.ends_with("\r\n\r\nabc"), "{out}");
        assert!(!keep);
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let (head, _, _) = parse(b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.uri, "/");
    }
}
