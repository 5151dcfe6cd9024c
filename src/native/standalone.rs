//! `ppm worker --runtime native --listen ADDR`: one process that serves
//! HTTP with PHP hosted in it, for debugging an application and as the
//! benchmark baseline.
//!
//! PHP runs on the main thread (it has no stack guard, and spawned threads
//! have small stacks); a second thread runs a one-slot master on tokio:
//! hyper reads HTTP, each request becomes frames on a socket pair to the
//! PHP thread, and the response frames become the HTTP response. Requests
//! take turns on the one PHP interpreter; the slot is released when PHP
//! says ready, after any work past `fastcgi_finish_request()`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderName, HeaderValue, CONTENT_LENGTH};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, Mutex};

use super::frames::{split, FrameError, RequestHead, ToMaster, ToWorker};
use super::host;
use crate::config::AppOptions;
use crate::Error;

/// How long a stop waits for the request in progress.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Serves `app` on `listen` until SIGTERM or SIGINT; returns the exit status.
pub fn run(app: AppOptions, listen: SocketAddr) -> Result<i32, Error> {
    app.validate()?;
    let run_dir = crate::master::make_run_dir()?;
    let entry = host::install_entry(run_dir.path())?;
    let listener = std::net::TcpListener::bind(listen).map_err(|source| Error::Bind {
        what: "worker".into(),
        addr: listen,
        source,
    })?;
    listener.set_nonblocking(true)?;
    let (php_end, master_end) = std::os::unix::net::UnixStream::pair()?;
    master_end.set_nonblocking(true)?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let dir = app.dir.display().to_string();
    let front = std::thread::Builder::new().name("front".into()).spawn(
        move || -> Result<Option<String>, Error> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(front(listener, master_end, listen, dir, ready_tx))
        },
    )?;
    // The front thread's signal handlers must exist before PHP's first
    // request startup, which chains PHP's own handlers to them.
    let _ = ready_rx.recv();
    let status = host::run(php_end, &app, &entry, 0)?;
    match front.join() {
        Ok(Ok(Some(message))) => Err(Error::Bootstrap(message)),
        Ok(Err(err)) => Err(err),
        _ => Ok(status),
    }
}

async fn front(
    listener: std::net::TcpListener,
    socket: std::os::unix::net::UnixStream,
    listen: SocketAddr,
    dir: String,
    ready: std::sync::mpsc::Sender<()>,
) -> Result<Option<String>, Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let _ = ready.send(());
    let (read, write) = tokio::net::UnixStream::from_std(socket)?.into_split();
    let mut reader = FrameReader {
        read,
        buf: BytesMut::with_capacity(64 << 10),
    };
    loop {
        match reader.next().await {
            Ok(Some(ToMaster::Ready)) => break,
            Ok(Some(ToMaster::BootError(message))) => return Ok(Some(message)),
            Ok(Some(ToMaster::Log(line))) => tracing::warn!("[worker] {line}"),
            Ok(Some(_)) => {}
            Ok(None) => return Ok(Some("the worker ended during its bootstrap".into())),
            Err(err) => return Ok(Some(format!("during the bootstrap: {err}"))),
        }
    }
    tracing::info!(
        "worker {} serving {dir} on http://{listen} (native runtime)",
        std::process::id()
    );
    let slot = Arc::new(Mutex::new(Slot {
        reader,
        writer: Some(write),
    }));
    let listener = tokio::net::TcpListener::from_std(listener)?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            accepted = listener.accept() => {
                let Ok((tcp, peer)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                let local = tcp.local_addr().unwrap_or(listen);
                let slot = slot.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, peer, local, slot.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        }
    }
    drop(listener);
    // The request in progress finishes; returning drops the runtime, its
    // tasks and the socket, and PHP's next wait sees the end.
    let _ = tokio::time::timeout(STOP_GRACE, slot.lock()).await;
    Ok(None)
}

/// The one PHP interpreter's end of the socket.
struct Slot {
    reader: FrameReader,
    /// Lent to the task writing a request body while it runs.
    writer: Option<OwnedWriteHalf>,
}

struct FrameReader {
    read: OwnedReadHalf,
    buf: BytesMut,
}

#[derive(Debug, thiserror::Error)]
enum FrontError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl FrameReader {
    async fn next(&mut self) -> Result<Option<ToMaster>, FrontError> {
        loop {
            if let Some(frame) = self.buffered()? {
                return Ok(Some(frame));
            }
            if self.read.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// The next frame if it is already read, without waiting.
    fn buffered(&mut self) -> Result<Option<ToMaster>, FrontError> {
        let Some((kind, payload, used)) = split(&self.buf)? else {
            return Ok(None);
        };
        let frame = ToMaster::parse(kind, payload)?;
        let _ = self.buf.split_to(used);
        Ok(Some(frame))
    }
}

const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

type Body = ChannelBody;

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    local: SocketAddr,
    slot: Arc<Mutex<Slot>>,
) -> Result<Response<Body>, Infallible> {
    let mut guard = slot.lock_owned().await;
    let (parts, mut body) = req.into_parts();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A body without a length (chunked) is read whole first: PHP, like
    // php-fpm behind nginx, is told its length.
    let mut buffered = None;
    let content_length = if declared.is_none() && !hyper::body::Body::is_end_stream(&body) {
        let Ok(collected) = BodyExt::collect(&mut body).await else {
            return Ok(plain(StatusCode::BAD_REQUEST, "unreadable request body"));
        };
        let bytes = collected.to_bytes();
        let len = bytes.len() as u64;
        buffered = Some(bytes);
        Some(len)
    } else {
        declared
    };
    let head = RequestHead {
        method: parts.method.to_string(),
        target: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
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
        params: None,
    };
    let Some(mut writer) = guard.writer.take() else {
        return Ok(plain(StatusCode::BAD_GATEWAY, "the worker is gone"));
    };
    let mut out = Vec::with_capacity(1024);
    ToWorker::Head(head).encode(&mut out);
    // A request whose body is already here goes out in one write; a
    // streamed body is written by a task of its own while the response
    // is read (PHP may answer before it read the body).
    let body_writer = if buffered.is_some() || hyper::body::Body::is_end_stream(&body) {
        if let Some(bytes) = buffered {
            ToWorker::Body(bytes.to_vec()).encode(&mut out);
        }
        ToWorker::BodyEnd.encode(&mut out);
        let written = writer.write_all(&out).await;
        guard.writer = Some(writer);
        if written.is_err() {
            return Ok(plain(StatusCode::BAD_GATEWAY, "the worker is gone"));
        }
        None
    } else {
        Some(tokio::spawn(async move {
            if writer.write_all(&out).await.is_err() {
                return writer;
            }
            out.clear();
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    ToWorker::Body(data.to_vec()).encode(&mut out);
                    if writer.write_all(&out).await.is_err() {
                        return writer;
                    }
                    out.clear();
                }
            }
            ToWorker::BodyEnd.encode(&mut out);
            let _ = writer.write_all(&out).await;
            writer
        }))
    };

    let (status, lines) = loop {
        match guard.reader.next().await {
            Ok(Some(ToMaster::Head { status, lines })) => break (status, lines),
            Ok(Some(ToMaster::Log(line))) => tracing::warn!("[worker] {line}"),
            Ok(Some(ToMaster::End { .. })) => break (200, Vec::new()),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                return Ok(plain(StatusCode::BAD_GATEWAY, "the worker ended"));
            }
        }
    };
    let mut response = Response::new(ChannelBody::default());
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for line in &lines {
        if let Some((name, value)) = parse_header_line(line) {
            response.headers_mut().append(name, value);
        }
    }
    // Usually the whole response and the worker's Ready came in the same
    // read: answer from the buffer, no relay task, no channel.
    let mut collected = BytesMut::new();
    let mut ended = false;
    loop {
        match guard.reader.buffered() {
            Ok(Some(ToMaster::Body(data))) if !ended => collected.extend_from_slice(&data),
            Ok(Some(ToMaster::End { .. })) => ended = true,
            Ok(Some(ToMaster::Ready)) if ended => {
                response.body_mut().first = Some(collected.freeze());
                if let Some(writer) = body_writer {
                    // The slot is free once the body writer hands its
                    // half of the socket back (it has written BodyEnd).
                    tokio::spawn(async move {
                        if let Ok(writer) = writer.await {
                            guard.writer = Some(writer);
                        }
                    });
                }
                return Ok(response);
            }
            Ok(Some(ToMaster::Ready)) => {
                // Ready before the response end: a protocol error.
                return Ok(plain(StatusCode::BAD_GATEWAY, "the worker is confused"));
            }
            Ok(Some(ToMaster::Log(line))) => tracing::warn!("[worker] {line}"),
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => return Ok(plain(StatusCode::BAD_GATEWAY, "the worker is confused")),
        }
    }
    if !collected.is_empty() {
        response.body_mut().first = Some(collected.freeze());
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    if !ended {
        response.body_mut().rx = Some(rx);
    }
    tokio::spawn(async move {
        let mut tx = (!ended).then_some(tx);
        loop {
            match guard.reader.next().await {
                Ok(Some(ToMaster::Body(data))) => {
                    if let Some(sender) = &tx {
                        // A client that left stops receiving; PHP goes on.
                        if sender.send(Bytes::from(data)).await.is_err() {
                            tx = None;
                        }
                    }
                }
                Ok(Some(ToMaster::End { .. })) => tx = None,
                Ok(Some(ToMaster::Ready)) => break,
                Ok(Some(ToMaster::Log(line))) => tracing::warn!("[worker] {line}"),
                Ok(Some(ToMaster::Backtrace(trace))) => {
                    tracing::warn!("[worker] PHP backtrace (SIGUSR1):\n{trace}")
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
        if let Some(writer) = body_writer {
            if let Ok(writer) = writer.await {
                guard.writer = Some(writer);
            }
        }
    });
    Ok(response)
}

/// `content-type` → `Content-Type`: PHP applications read header names
/// the way clients usually send them (hyper lowercases them).
pub(crate) fn canonical_name(lower: &str) -> String {
    let mut out = String::with_capacity(lower.len());
    let mut upper = true;
    for c in lower.chars() {
        out.push(if upper { c.to_ascii_uppercase() } else { c });
        upper = c == '-';
    }
    out
}

pub(crate) fn parse_header_line(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = HeaderName::from_bytes(line[..colon].trim_ascii()).ok()?;
    let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
    Some((name, value))
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(ChannelBody {
        first: Some(Bytes::from_static(text.as_bytes())),
        rx: None,
    });
    *response.status_mut() = status;
    response
}

/// A response body: what was read with the head, then what the task
/// relaying the worker's frames sends.
#[derive(Default)]
pub struct ChannelBody {
    first: Option<Bytes>,
    rx: Option<mpsc::Receiver<Bytes>>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        match self.rx.as_mut() {
            None => Poll::Ready(None),
            Some(rx) => rx
                .poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
        }
    }
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
}
