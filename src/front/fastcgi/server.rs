//! One FastCGI connection, in the responder role, one request at a time.
//!
//! # Theory of operation
//!
//! A connection waits for BEGIN_REQUEST (at most `--idle-timeout`), reads
//! the PARAMS stream (bounded like an HTTP head: `--max-request-line` +
//! `--max-header-size` bytes, `--max-headers` `HTTP_*` parameters, within
//! `--header-timeout`) and the STDIN stream (spooled like an HTTP body, up
//! to `--max-body-size`, with `--body-timeout` and `--request-timeout`),
//! then hands the complete request to the handler the listener was given
//! (the master passes the balancer's `arrived`), exactly as an HTTP
//! request: same queue, workers, limits, metrics and access log. The response goes back as STDOUT records, CGI style
//! (`Status:` and the headers, a blank line, the body as it streams),
//! then END_REQUEST. Without `FCGI_KEEP_CONN` the connection closes after
//! it, as the web server expects; with it the next BEGIN_REQUEST follows.
//!
//! While the request waits for a worker, runs or streams, the connection
//! is still read: FCGI_ABORT_REQUEST (or the web server closing) drops the
//! request, which leaves the queue or, if a worker has it, lets the worker
//! finish as when an HTTP client hangs up. GET_VALUES is answered at any
//! time, unknown record types get UNKNOWN_TYPE, a second request on the
//! connection gets `FCGI_CANT_MPX_CONN` and another role
//! `FCGI_UNKNOWN_ROLE`. A request past a limit is answered like its HTTP
//! twin (431, 413, 408) and the connection closed; a malformed record
//! closes the connection with a log line, and nothing of it reaches PHP.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body;
use hyper::{Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::params::{self, CgiVars};
use super::records::{self, kind, Begin, Malformed, ProtocolStatus, ReadError, Record};
use crate::body::ProxyBody;
use crate::front::conn_limit::ConnLimit;
use crate::front::forwarding::strip_hop_by_hop;
use crate::front::http1::{Arrival, Limits, Refusal};
use crate::front::spool::{SpoolConfig, SpoolWriter};
use crate::front::ConnInfo;
use crate::metrics::Metrics;
use crate::shutdown::ShutdownWatch;

/// What the master answers to FCGI_GET_VALUES.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    /// `FCGI_MAX_CONNS` and `FCGI_MAX_REQS` (one request per connection).
    pub max_conns: usize,
}

/// What every connection of a listener shares, besides its handler: the
/// front door's limits and spool, the connection limit and the metrics.
pub struct Settings {
    pub limits: Limits,
    pub spool: Arc<SpoolConfig>,
    pub connections: Arc<ConnLimit>,
    pub metrics: Arc<Metrics>,
    pub capacity: Capacity,
}

/// How a request read from the connection ended.
enum Read {
    Complete(CgiVars, crate::front::spool::Spooled),
    /// Refused, with the parameters when they were read whole.
    Refused(Refusal, Option<CgiVars>),
    Aborted,
}

/// Why the connection closes early.
enum Close {
    /// The web server left or stayed silent too long: nothing to say.
    Quiet,
    /// A protocol violation, logged.
    Malformed(Malformed),
}

impl From<Malformed> for Close {
    fn from(err: Malformed) -> Self {
        Close::Malformed(err)
    }
}

impl From<ReadError> for Close {
    fn from(err: ReadError) -> Self {
        match err {
            ReadError::Malformed(m) => Close::Malformed(m),
            ReadError::Io(_) => Close::Quiet,
        }
    }
}

/// One connection's state.
struct Conn<R, W, H> {
    settings: Arc<Settings>,
    handler: H,
    reader: records::RecordReader<R>,
    writer: W,
    out: BytesMut,
    /// The id of the request in progress.
    active: Option<u16>,
}

/// Serves one connection until the web server closes it, a request
/// without `FCGI_KEEP_CONN` ends, or `shutdown` turns true between
/// requests.
/// `handler` answers each request, refused ones included.
pub async fn serve<R, W, H, F>(
    settings: Arc<Settings>,
    handler: H,
    reader: R,
    writer: W,
    mut shutdown: ShutdownWatch,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    H: Fn(Arrival, ConnInfo) -> F,
    F: Future<Output = Response<ProxyBody>>,
{
    let mut conn = Conn {
        settings,
        handler,
        reader: records::RecordReader::new(reader),
        writer,
        out: BytesMut::with_capacity(16 * 1024),
        active: None,
    };
    match conn.requests(&mut shutdown).await {
        Ok(()) | Err(Close::Quiet) => {}
        Err(Close::Malformed(why)) => {
            tracing::warn!("FastCGI: closing a connection that sent a malformed record: {why}");
        }
    }
    let _ = conn.writer.shutdown().await;
}

impl<R, W, H, Fut> Conn<R, W, H>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    H: Fn(Arrival, ConnInfo) -> Fut,
    Fut: Future<Output = Response<ProxyBody>>,
{
    async fn requests(&mut self, shutdown: &mut ShutdownWatch) -> Result<(), Close> {
        // As over HTTP/1: a connection accepted just before the master
        // began to close is owed its first request; only an idle one
        // between requests is closed at once.
        let mut served = false;
        loop {
            let Some((id, keep_conn)) = self.wait_begin(shutdown, served).await? else {
                return Ok(());
            };
            served = true;
            self.active = Some(id);
            let received = Instant::now();
            let (arrival, conn_info) = match self.read_request(id, received).await? {
                Read::Aborted => {
                    self.end(id).await?;
                    if !keep_conn {
                        return Ok(());
                    }
                    continue;
                }
                Read::Refused(refusal, vars) => (
                    Arrival::Refused {
                        refusal,
                        request_line: vars.as_ref().map(CgiVars::request_line),
                        received,
                    },
                    vars.as_ref()
                        .map_or_else(params::unknown_conn, CgiVars::conn_info),
                ),
                Read::Complete(vars, body) => {
                    let (request, conn_info) = params::to_request(vars, body, received);
                    (Arrival::Request(request), conn_info)
                }
            };
            let refused = matches!(arrival, Arrival::Refused { .. });
            let handling = (self.handler)(arrival, conn_info);
            // A refused request's remaining records are not read: the
            // connection closes after the answer.
            let watched = if refused {
                Some(handling.await)
            } else {
                self.watching(handling).await?
            };
            let Some(response) = watched else {
                // Aborted while queued or running: the worker (if any)
                // finishes on its own, as when an HTTP client hangs up.
                self.end(id).await?;
                if !keep_conn {
                    return Ok(());
                }
                continue;
            };
            let completed = self.respond(id, response, !refused).await?;
            self.active = None;
            if refused {
                self.linger().await;
                return Ok(());
            }
            if !completed {
                self.end(id).await?;
            }
            if !keep_conn {
                return Ok(());
            }
        }
    }

    /// Waits for the next BEGIN_REQUEST (answering management records);
    /// None when the connection should close (the master closing counts
    /// only `between_requests`).
    async fn wait_begin(
        &mut self,
        shutdown: &mut ShutdownWatch,
        between_requests: bool,
    ) -> Result<Option<(u16, bool)>, Close> {
        let idle = self.settings.limits.idle_timeout;
        loop {
            let record = tokio::select! {
                record = tokio::time::timeout(idle, self.reader.next()) => match record {
                    Ok(record) => record?,
                    Err(_) => return Ok(None),
                },
                _ = shutdown.closing(), if between_requests => return Ok(None),
            };
            let Some(record) = record else {
                return Ok(None);
            };
            if record.kind == kind::BEGIN_REQUEST && record.request_id != 0 {
                let begin = Begin::parse(&record.content)?;
                if begin.role == records::ROLE_RESPONDER {
                    return Ok(Some((record.request_id, begin.keep_conn)));
                }
                records::put_end_request(
                    &mut self.out,
                    record.request_id,
                    ProtocolStatus::UnknownRole,
                );
                self.flush().await?;
                continue;
            }
            self.other(record).await?;
        }
    }

    /// Reads PARAMS and STDIN of request `id`.
    async fn read_request(&mut self, id: u16, received: Instant) -> Result<Read, Close> {
        let limits = self.settings.limits.clone();
        let max_params = limits.max_request_line + limits.max_header_size;
        let head_deadline = received + limits.header_timeout.min(limits.request_timeout);
        let mut raw = BytesMut::new();
        let vars = loop {
            let Some(record) = self.next_by(head_deadline).await? else {
                return Ok(Read::Refused(
                    timeout("request head not received in time"),
                    None,
                ));
            };
            match self.own(record, id).await? {
                Some(Own::Params(data)) if data.is_empty() => {
                    let vars = CgiVars::new(records::parse_pairs(&raw.split().freeze())?);
                    if let Err(refusal) = params::check(&vars, &limits) {
                        return Ok(Read::Refused(refusal, Some(vars)));
                    }
                    break vars;
                }
                Some(Own::Params(data)) => {
                    if raw.len() + data.len() > max_params {
                        let refusal = Refusal {
                            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                            reason: "request header fields too large",
                        };
                        return Ok(Read::Refused(refusal, None));
                    }
                    raw.extend_from_slice(&data);
                }
                Some(Own::Stdin(_)) => {
                    return Err(Close::Malformed(Malformed::OutOfOrder {
                        kind: kind::STDIN,
                        id,
                    }))
                }
                Some(Own::Abort) => return Ok(Read::Aborted),
                None => {}
            }
        };
        let mut body = SpoolWriter::new(self.settings.spool.clone());
        let deadline = received + limits.request_timeout;
        loop {
            let until = deadline.min(Instant::now() + limits.body_timeout);
            let Some(record) = self.next_by(until).await? else {
                return Ok(Read::Refused(
                    timeout("request body not received in time"),
                    Some(vars),
                ));
            };
            match self.own(record, id).await? {
                Some(Own::Stdin(data)) if data.is_empty() => {
                    let Ok(body) = body.finish().await else {
                        return Ok(Read::Refused(no_storage(), Some(vars)));
                    };
                    return Ok(Read::Complete(vars, body));
                }
                Some(Own::Stdin(data)) => {
                    if body.len() + data.len() as u64 > limits.max_body_size {
                        let refusal = Refusal {
                            status: StatusCode::PAYLOAD_TOO_LARGE,
                            reason: "request body too large",
                        };
                        return Ok(Read::Refused(refusal, Some(vars)));
                    }
                    if body.push(&data).await.is_err() {
                        return Ok(Read::Refused(no_storage(), Some(vars)));
                    }
                }
                Some(Own::Params(_)) => {
                    return Err(Close::Malformed(Malformed::OutOfOrder {
                        kind: kind::PARAMS,
                        id,
                    }))
                }
                Some(Own::Abort) => return Ok(Read::Aborted),
                None => {}
            }
        }
    }

    /// The next record before `deadline`; None when it passed.
    async fn next_by(&mut self, deadline: Instant) -> Result<Option<Record>, Close> {
        match tokio::time::timeout_at(deadline, self.reader.next()).await {
            Ok(Ok(Some(record))) => Ok(Some(record)),
            Ok(Ok(None)) => Err(Close::Quiet),
            Ok(Err(err)) => Err(err.into()),
            Err(_) => Ok(None),
        }
    }

    /// Sorts a record read while request `id` is active: its own stream
    /// data or abort, or (None) something answered here.
    async fn own(&mut self, record: Record, id: u16) -> Result<Option<Own>, Close> {
        if record.request_id == id {
            match record.kind {
                kind::PARAMS => return Ok(Some(Own::Params(record.content))),
                kind::STDIN => return Ok(Some(Own::Stdin(record.content))),
                kind::ABORT_REQUEST => return Ok(Some(Own::Abort)),
                _ => {}
            }
        }
        self.other(record).await?;
        Ok(None)
    }

    /// Any record that is not part of the active request.
    async fn other(&mut self, record: Record) -> Result<(), Close> {
        match record.kind {
            kind::GET_VALUES if record.request_id == 0 => {
                let asked = records::parse_pairs(&record.content)?;
                let max = self.settings.capacity.max_conns.to_string();
                let mut answer = BytesMut::new();
                for (name, _) in asked {
                    let value = match name.as_ref() {
                        b"FCGI_MAX_CONNS" | b"FCGI_MAX_REQS" => max.as_bytes(),
                        b"FCGI_MPXS_CONNS" => b"0",
                        _ => continue,
                    };
                    records::put_pair(&mut answer, &name, value);
                }
                // An answer that does not fit one record is cut to what fits.
                answer.truncate(records::MAX_CONTENT);
                records::put_record(&mut self.out, kind::GET_VALUES_RESULT, 0, &answer);
            }
            kind::BEGIN_REQUEST if record.request_id != 0 => {
                Begin::parse(&record.content)?;
                if self.active == Some(record.request_id) {
                    return Err(Close::Malformed(Malformed::Stray {
                        kind: record.kind,
                        id: record.request_id,
                    }));
                }
                records::put_end_request(
                    &mut self.out,
                    record.request_id,
                    ProtocolStatus::CantMpxConn,
                );
            }
            // An abort that crossed the end of its request.
            kind::ABORT_REQUEST => return Ok(()),
            kind::END_REQUEST
            | kind::STDOUT
            | kind::STDERR
            | kind::GET_VALUES_RESULT
            | kind::UNKNOWN_TYPE => {
                return Err(Close::Malformed(Malformed::WrongDirection(record.kind)))
            }
            kind::BEGIN_REQUEST | kind::PARAMS | kind::STDIN | kind::DATA | kind::GET_VALUES => {
                return Err(Close::Malformed(Malformed::Stray {
                    kind: record.kind,
                    id: record.request_id,
                }))
            }
            unknown => records::put_unknown_type(&mut self.out, unknown),
        }
        self.flush().await
    }

    /// Runs `handling` while reading the connection; None when the
    /// request was aborted.
    async fn watching<F>(&mut self, handling: F) -> Result<Option<Response<ProxyBody>>, Close>
    where
        F: std::future::Future<Output = Response<ProxyBody>>,
    {
        let Some(id) = self.active else {
            return Ok(None);
        };
        tokio::pin!(handling);
        loop {
            tokio::select! {
                response = &mut handling => return Ok(Some(response)),
                record = self.reader.next() => {
                    let Some(record) = record? else {
                        return Err(Close::Quiet);
                    };
                    if let Some(Own::Abort) = self.during(record, id).await? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// A record that arrives while the request is handled.
    async fn during(&mut self, record: Record, id: u16) -> Result<Option<Own>, Close> {
        match self.own(record, id).await? {
            Some(Own::Abort) => Ok(Some(Own::Abort)),
            Some(Own::Params(_)) => Err(Close::Malformed(Malformed::OutOfOrder {
                kind: kind::PARAMS,
                id,
            })),
            Some(Own::Stdin(_)) => Err(Close::Malformed(Malformed::OutOfOrder {
                kind: kind::STDIN,
                id,
            })),
            None => Ok(None),
        }
    }

    /// Sends the response as STDOUT records, then END_REQUEST, reading the
    /// connection meanwhile if `watch`. Returns false when the request was
    /// aborted half-way (END_REQUEST not sent).
    async fn respond(
        &mut self,
        id: u16,
        response: Response<ProxyBody>,
        watch: bool,
    ) -> Result<bool, Close> {
        let (mut parts, mut body) = response.into_parts();
        // The worker's side of the exchange goes on in a task of its own
        // (a streamed body is what it feeds).
        drop(parts.extensions.remove::<crate::body::Tail>());
        strip_hop_by_hop(&mut parts.headers);
        let mut head = BytesMut::with_capacity(512);
        head.extend_from_slice(b"Status: ");
        head.extend_from_slice(parts.status.as_str().as_bytes());
        if let Some(reason) = parts.status.canonical_reason() {
            head.extend_from_slice(b" ");
            head.extend_from_slice(reason.as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        for (name, value) in &parts.headers {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        records::put_stream(&mut self.out, kind::STDOUT, id, &head);
        loop {
            if body.is_end_stream() {
                records::put_record(&mut self.out, kind::STDOUT, id, b"");
                records::put_end_request(&mut self.out, id, ProtocolStatus::RequestComplete);
                self.flush().await?;
                return Ok(true);
            }
            // What is ready goes out together; the rest waits for the body.
            if !self.out.is_empty() {
                self.flush().await?;
            }
            let frame = tokio::select! {
                frame = body.frame() => frame,
                record = self.reader.next(), if watch => {
                    let Some(record) = record? else {
                        return Err(Close::Quiet);
                    };
                    if let Some(Own::Abort) = self.during(record, id).await? {
                        return Ok(false);
                    }
                    continue;
                }
            };
            match frame {
                None => {
                    records::put_record(&mut self.out, kind::STDOUT, id, b"");
                    records::put_end_request(&mut self.out, id, ProtocolStatus::RequestComplete);
                    self.flush().await?;
                    return Ok(true);
                }
                // The worker's response broke off: closing without
                // END_REQUEST tells the web server the response is cut.
                Some(Err(_)) => return Err(Close::Quiet),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        records::put_stream(&mut self.out, kind::STDOUT, id, &data);
                    }
                }
            }
        }
    }

    /// Ends request `id` without output (aborted).
    async fn end(&mut self, id: u16) -> Result<(), Close> {
        self.active = None;
        records::put_end_request(&mut self.out, id, ProtocolStatus::RequestComplete);
        self.flush().await
    }

    /// Writes what is buffered; a web server that takes nothing for
    /// `--idle-timeout` is given up on.
    async fn flush(&mut self) -> Result<(), Close> {
        let out = self.out.split().freeze();
        write(&mut self.writer, out, self.settings.limits.idle_timeout).await
    }

    /// After an early refusal: stop writing, then read and drop what the
    /// web server still sends for a moment, so that closing does not reset
    /// the connection before it has read the answer.
    async fn linger(&mut self) {
        let _ = self.writer.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(Some(_)) = self.reader.next().await {}
        })
        .await;
    }
}

/// A record of the active request's own.
enum Own {
    Params(Bytes),
    Stdin(Bytes),
    Abort,
}

async fn write<W: AsyncWrite + Unpin>(
    writer: &mut W,
    data: Bytes,
    idle: Duration,
) -> Result<(), Close> {
    if data.is_empty() {
        return Ok(());
    }
    match tokio::time::timeout(idle, writer.write_all(&data)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(Close::Quiet),
    }
}

fn timeout(reason: &'static str) -> Refusal {
    Refusal {
        status: StatusCode::REQUEST_TIMEOUT,
        reason,
    }
}

fn no_storage() -> Refusal {
    Refusal {
        status: StatusCode::INSUFFICIENT_STORAGE,
        reason: "cannot store the request body",
    }
}
