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
//!
//! The module's parts: `head` (the request head: scanning and checking),
//! `chunked` (the chunked body decoder), `serve` (one connection's loop:
//! timeouts, body spooling, keep-alive) and `write` (the response writer).

mod chunked;
mod head;
mod serve;
mod write;

pub use chunked::{ChunkedDecoder, Decoded};
pub use head::{parse_head, Framing, Head, HeadScanner};
pub use serve::serve;
pub use write::write_response;

use hyper::{Request, StatusCode};
use tokio::time::Instant;

use crate::front::spool::Spooled;

/// The limits of the front door (built by config).
pub use crate::config::RequestLimits as Limits;

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

#[cfg(test)]
mod tests;
