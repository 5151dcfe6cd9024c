//! One client connection: read a request within its timeouts, spool its
//! body, hand it over, write the answer, and go round while kept alive.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use hyper::{Method, Request, Response, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::chunked::{ChunkedDecoder, Decoded};
use super::head::{parse_head, Framing, Head, HeadScanner};
use super::write::write_response;
use super::{refuse, timed_out, too_large, Arrival, Limits, Received, Refusal};
use crate::body::{ProxyBody, Tail};
use crate::front::linger::Linger;
use crate::front::spool::{SpoolConfig, SpoolWriter, Spooled};
use crate::shutdown::ShutdownWatch;

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
    mut shutdown: ShutdownWatch,
    mut handler: H,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
    H: FnMut(Arrival) -> F,
    F: Future<Output = Response<ProxyBody>>,
{
    let mut wait = limits.header_timeout;
    // A connection accepted just before the master began to close is
    // owed its first request (its client sent it at once, it just had not
    // arrived yet); only one idle between requests is closed at once.
    let mut served = false;
    loop {
        let Some(arrival) = next_arrival(
            &mut io,
            &mut buf,
            wait,
            limits,
            spool,
            &mut shutdown,
            served,
        )
        .await
        else {
            return;
        };
        wait = limits.idle_timeout;
        served = true;
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
                crate::front::linger::close(&mut io, linger, &mut shutdown).await;
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
        let keep = keep_alive && !shutdown.phase().is_closing();
        let mut response = response;
        let (kept, tail) = match response.extensions_mut().remove::<Tail>() {
            None => {
                let written = write_response(&mut io, response, &method, version, keep, limits);
                (matches!(written.await, Ok(true)), None)
            }
            // The tail runs while the response is written: a streamed
            // body is what it feeds.
            Some(mut tail) => {
                let writing = write_response(&mut io, response, &method, version, keep, limits);
                tokio::pin!(writing);
                let mut finished = false;
                let written = loop {
                    tokio::select! {
                        written = &mut writing => break written,
                        () = &mut tail, if !finished => finished = true,
                    }
                };
                (matches!(written, Ok(true)), (!finished).then_some(tail))
            }
        };
        let Some(mut tail) = tail else {
            if kept {
                continue;
            }
            return;
        };
        if !kept {
            drop(io);
            tail.await;
            return;
        }
        // The worker's clean-up after the response: this task sees it to
        // the worker's `Ready` unless the client's next request (or its
        // leaving, --idle-timeout, or the master closing its ports) comes
        // first; then the tail goes on in a task of its own. The
        // connection is idle meanwhile: what is left of --idle-timeout is
        // the next request's wait.
        let idle_until = Instant::now() + limits.idle_timeout;
        tokio::select! {
            biased;
            () = &mut tail => {}
            read = io.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            () = tokio::time::sleep_until(idle_until) => return,
            () = shutdown.closing(), if buf.is_empty() => return,
        }
        wait = idle_until.saturating_duration_since(Instant::now());
    }
}

/// Marks a request whose connection may be kept after it (an extension).
#[derive(Debug, Clone, Copy)]
struct KeepAlive;

/// Reads the next request, head and body: a complete request, the
/// refusal of one, or None when the connection should just close (the
/// client left, stayed silent for `wait`, or the master is stopping
/// and `between_requests`).
async fn next_arrival<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    buf: &mut BytesMut,
    wait: Duration,
    limits: &Limits,
    spool: &Arc<SpoolConfig>,
    shutdown: &mut ShutdownWatch,
    between_requests: bool,
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
            _ = shutdown.closing(), if buf.is_empty() && between_requests => return None,
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
