//! HTTP clients served on PHP's own thread: the [`Link`] of
//! `ppm worker --listen`.
//!
//! Theory of operation. A current-thread tokio runtime lives on PHP's
//! thread and runs only while PHP waits on it: inside
//! [`next_request`](Link::next_request), while PHP reads a request body
//! that has not arrived yet, and briefly when PHP flushes or streams. In
//! those moments hyper accepts connections, reads requests, writes the
//! responses PHP finished, and keeps idle keep-alive connections waiting
//! without blocking anyone. Each connection's task hands its request to
//! PHP through a queue (first come, first served: one interpreter) and
//! waits for the response PHP builds. No other thread is involved per
//! request, so a request costs no thread wake-up and no socket between
//! threads: the response PHP finished goes out, and the next request is
//! read, in the same wait.
//!
//! A response PHP ends without having flushed is sent whole, with its
//! `Content-Length`; one that PHP flushes, or that passes [`FLUSH_AT`]
//! bytes, streams (chunked), with back-pressure from the client.

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::HeaderMap;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot, watch};

use super::frame_link::FLUSH_AT;
use super::frames::{Outcome, RequestHead, END_EARLY};
use super::http_head::{declared_length, parse_header_line, request_head};
use super::io::{IoError, Link};

/// How long an early response end (`fastcgi_finish_request()`) waits for
/// the client to take the response before PHP goes on; the rest is sent
/// at PHP's next wait.
const EARLY_END_WAIT: Duration = Duration::from_secs(1);

/// Streamed chunks buffered towards a slow client before PHP waits.
const STREAM_CHUNKS: usize = 4;

/// Requests read and waiting for PHP. Each connection has at most one;
/// past this, connections wait to hand theirs over.
const QUEUE: usize = 1024;

/// How long a stop waits for the responses already built to reach their
/// clients (a client that does not read keeps its connection no longer).
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// A request handed by a connection's task to PHP's thread.
struct Exchange {
    head: RequestHead,
    body: RequestBody,
    respond: oneshot::Sender<Response<ResponseBody>>,
}

/// A chunked request body up to this size is kept in memory; a larger one
/// goes to a temporary file, as nginx buffers it before php-fpm sees it.
const WHOLE_IN_MEMORY: usize = 1 << 20;

enum RequestBody {
    /// Read as PHP pulls it.
    Stream(Incoming),
    /// Read whole by the connection's task (a chunked body: PHP, like
    /// php-fpm behind nginx, is told the body's length).
    Whole(Bytes),
    /// The same, past [`WHOLE_IN_MEMORY`]: an unnamed temporary file,
    /// read from its start.
    File(std::fs::File),
}

/// The request PHP is handling, and its response so far.
struct Current {
    body: Option<RequestBody>,
    /// Body bytes received and not yet read by PHP.
    chunk: Bytes,
    respond: Option<oneshot::Sender<Response<ResponseBody>>>,
    status: u16,
    headers: HeaderMap,
    out: BytesMut,
    /// Once the response streams: where its chunks go (`None` after the
    /// client left).
    stream: Option<mpsc::Sender<Bytes>>,
    streaming: bool,
}

/// The in-thread HTTP front.
pub struct HttpLink {
    rt: Runtime,
    listener: Option<std::net::TcpListener>,
    listen: SocketAddr,
    dir: String,
    queue_tx: mpsc::Sender<Exchange>,
    queue: mpsc::Receiver<Exchange>,
    stop: watch::Receiver<bool>,
    current: Option<Current>,
    boot_error: Rc<RefCell<Option<String>>>,
    /// Cloned into the accept task and every connection's task, never
    /// sent on: [`connections`](Self::connections) ends once they all
    /// ended.
    alive: Option<mpsc::Sender<()>>,
    connections: mpsc::Receiver<()>,
}

impl HttpLink {
    /// Serves on `listener` (bound, not yet accepting) once PHP is booted;
    /// stops when `stop` turns true. `dir` names the application in the
    /// log; a boot error lands in `boot_error`.
    pub fn new(
        listener: std::net::TcpListener,
        dir: String,
        stop: watch::Receiver<bool>,
        boot_error: Rc<RefCell<Option<String>>>,
    ) -> std::io::Result<HttpLink> {
        let listen = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (queue_tx, queue) = mpsc::channel(QUEUE);
        let (alive, connections) = mpsc::channel(1);
        Ok(HttpLink {
            rt,
            listener: Some(listener),
            listen,
            dir,
            queue_tx,
            queue,
            stop,
            current: None,
            boot_error,
            alive: Some(alive),
            connections,
        })
    }

    /// Starts accepting (after the bootstrap: connections wait in the
    /// listen queue until then).
    fn start(&mut self) -> Result<(), IoError> {
        let Some(listener) = self.listener.take() else {
            return Ok(());
        };
        let queue = self.queue_tx.clone();
        let Some(alive) = self.alive.clone() else {
            return Ok(());
        };
        let listener = {
            let _entered = self.rt.enter();
            tokio::net::TcpListener::from_std(listener).map_err(IoError::Http)?
        };
        self.rt
            .spawn(accept(listener, queue, self.stop.clone(), alive));
        tracing::info!(
            "worker {} serving {} on http://{} (native runtime)",
            std::process::id(),
            self.dir,
            self.listen
        );
        Ok(())
    }

    /// Sends what PHP wrote so far as the next chunk of a streamed
    /// response, starting the stream (and sending the head) if needed.
    fn push(&mut self) {
        let Some(current) = self.current.as_mut() else {
            return;
        };
        if !current.streaming {
            current.streaming = true;
            let (tx, rx) = mpsc::channel(STREAM_CHUNKS);
            let response = current.response(ResponseBody {
                first: None,
                rx: Some(rx),
                len: None,
                _sent: None,
            });
            if let Some(respond) = current.respond.take() {
                // A client that left has no receiver; the chunks then go
                // nowhere, and PHP goes on.
                if self.rt.block_on(async { respond.send(response) }).is_ok() {
                    current.stream = Some(tx);
                }
            }
        }
        if current.out.is_empty() {
            return;
        }
        let chunk = current.out.split().freeze();
        if let Some(tx) = &current.stream {
            let sent = self.rt.block_on(async {
                let sent = tx.send(chunk).await;
                // One turn of the runtime: the connection writes the chunk.
                tokio::task::yield_now().await;
                sent
            });
            if sent.is_err() {
                current.stream = None;
            }
        }
    }
}

impl HttpLink {
    /// Stops accepting, answers the requests still queued with a 503, and
    /// lets every connection write the response it has (the last one PHP
    /// built included) and close, for at most [`DRAIN_WAIT`].
    fn drain(&mut self) {
        self.queue.close();
        while let Ok(exchange) = self.queue.try_recv() {
            // Its connection's task answers 503 when the exchange drops.
            drop(exchange);
        }
        self.alive = None;
        let connections = &mut self.connections;
        self.rt.block_on(async {
            let _ = tokio::time::timeout(DRAIN_WAIT, connections.recv()).await;
        });
    }
}

impl Current {
    fn new(exchange: Exchange) -> Current {
        Current {
            body: Some(exchange.body),
            chunk: Bytes::new(),
            respond: Some(exchange.respond),
            status: 200,
            headers: HeaderMap::new(),
            out: BytesMut::new(),
            stream: None,
            streaming: false,
        }
    }

    fn response(&mut self, body: ResponseBody) -> Response<ResponseBody> {
        let mut response = Response::new(body);
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        *response.headers_mut() = std::mem::take(&mut self.headers);
        response
    }
}

impl Link for HttpLink {
    fn next_request(&mut self, _stats: Option<(u64, u64)>) -> Result<Option<RequestHead>, IoError> {
        // The previous request's unread body is dropped with it; hyper
        // reads and drops the rest, or closes that connection.
        self.current = None;
        self.start()?;
        let (queue, stop) = (&mut self.queue, &mut self.stop);
        let next = self.rt.block_on(async {
            tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => None,
                exchange = queue.recv() => exchange,
            }
        });
        if next.is_none() {
            self.drain();
        }
        Ok(next.map(|mut exchange| {
            let head = std::mem::take(&mut exchange.head);
            self.current = Some(Current::new(exchange));
            head
        }))
    }

    fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, IoError> {
        let Some(current) = self.current.as_mut() else {
            return Ok(0);
        };
        while current.chunk.is_empty() {
            match current.body.take() {
                None => return Ok(0),
                Some(RequestBody::Whole(bytes)) => current.chunk = bytes,
                Some(RequestBody::File(mut file)) => {
                    let n = std::io::Read::read(&mut file, buf).map_err(IoError::Http)?;
                    if n > 0 {
                        current.body = Some(RequestBody::File(file));
                    }
                    return Ok(n);
                }
                Some(RequestBody::Stream(mut incoming)) => {
                    match self.rt.block_on(incoming.frame()) {
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data() {
                                current.chunk = data;
                            }
                            current.body = Some(RequestBody::Stream(incoming));
                        }
                        // The end, or a client that left: PHP sees the
                        // body end here (as a short body).
                        _ => return Ok(0),
                    }
                }
            }
        }
        let n = buf.len().min(current.chunk.len());
        buf[..n].copy_from_slice(&current.chunk.split_to(n));
        Ok(n)
    }

    fn send_head(&mut self, status: u16, lines: &[&[u8]]) -> Result<(), IoError> {
        if let Some(current) = self.current.as_mut() {
            current.status = status;
            current.headers.clear();
            for line in lines {
                if let Some((name, value)) = parse_header_line(line) {
                    current.headers.append(name, value);
                }
            }
        }
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> Result<(), IoError> {
        let Some(current) = self.current.as_mut() else {
            return Ok(());
        };
        current.out.extend_from_slice(data);
        if current.out.len() >= FLUSH_AT {
            self.push();
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), IoError> {
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.respond.is_some() || c.stream.is_some())
        {
            self.push();
        }
        Ok(())
    }

    fn end(&mut self, flags: u8, _outcome: Outcome) -> Result<(), IoError> {
        let (sent_tx, sent_rx) = oneshot::channel();
        let Some(current) = self.current.as_mut() else {
            return Ok(());
        };
        if current.streaming {
            self.push();
            // Dropping the sender ends the streamed body.
            if let Some(current) = self.current.as_mut() {
                current.stream = None;
            }
            drop(sent_tx);
        } else if let Some(respond) = current.respond.take() {
            let out = current.out.split().freeze();
            let response = current.response(ResponseBody {
                len: Some(out.len() as u64),
                first: Some(out),
                rx: None,
                _sent: Some(sent_tx),
            });
            // Sent from inside the runtime, so waking the connection's
            // task needs no system call; one turn of the runtime then
            // lets it write the response now. Without that turn, the
            // response would wait while PHP handles the requests already
            // queued (block_on returns at once when they are there).
            self.rt.block_on(async {
                let _ = respond.send(response);
                tokio::task::yield_now().await;
            });
        }
        if flags & END_EARLY != 0 {
            // The client has its answer before the work after
            // fastcgi_finish_request() starts: hyper drops the body once
            // it has taken it, and writes it in the same turn.
            self.rt.block_on(async {
                let _ = tokio::time::timeout(EARLY_END_WAIT, sent_rx).await;
                tokio::task::yield_now().await;
            });
        }
        Ok(())
    }

    fn log(&mut self, line: &str) {
        tracing::warn!("[worker] {line}");
    }

    fn backtrace(&mut self, trace: &str) -> Result<(), IoError> {
        tracing::warn!("[worker] PHP backtrace (SIGUSR1):\n{trace}");
        Ok(())
    }

    fn boot_error(&mut self, message: &str) -> Result<(), IoError> {
        *self.boot_error.borrow_mut() = Some(message.to_string());
        Ok(())
    }

    fn script_ended(&mut self) -> Result<(), IoError> {
        Ok(())
    }
}

/// Accepts connections and serves each in a task of its own, until
/// `stop`; then each connection finishes the request it has and closes.
async fn accept(
    listener: tokio::net::TcpListener,
    queue: mpsc::Sender<Exchange>,
    mut stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopped(&mut stop) => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of descriptors, usually: give connections a moment
                // to close rather than spin.
                tracing::warn!("accepting a connection: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Ok(local) = tcp.local_addr() else {
            continue;
        };
        let queue = queue.clone();
        let mut stop = stop.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            let _alive = alive;
            let service = hyper::service::service_fn(move |req| {
                let queue = queue.clone();
                async move { Ok::<_, Infallible>(handle(req, peer, local, queue).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stopped(&mut stop) => {}
            }
            // An idle connection closes now; one with a request writes its
            // response first.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// One request of a connection: handed to PHP, answered with what PHP
/// built.
async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    local: SocketAddr,
    queue: mpsc::Sender<Exchange>,
) -> Response<ResponseBody> {
    let (parts, mut body) = req.into_parts();
    let declared = declared_length(&parts.headers);
    let (body, content_length) = if declared.is_none() && !hyper::body::Body::is_end_stream(&body) {
        match read_whole(&mut body).await {
            Ok((body, len)) => (body, Some(len)),
            Err(err) => {
                tracing::warn!("reading a chunked request body: {err}");
                return plain(StatusCode::BAD_REQUEST, "unreadable request body");
            }
        }
    } else {
        (RequestBody::Stream(body), declared)
    };
    let (respond, response) = oneshot::channel();
    let exchange = Exchange {
        head: request_head(&parts, peer, local, content_length),
        body,
        respond,
    };
    if queue.send(exchange).await.is_err() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "the worker is stopping");
    }
    response
        .await
        .unwrap_or_else(|_| plain(StatusCode::SERVICE_UNAVAILABLE, "the worker is stopping"))
}

/// A body without a length, read whole: in memory up to
/// [`WHOLE_IN_MEMORY`], else in a temporary file. Its length comes with it.
async fn read_whole(body: &mut Incoming) -> std::io::Result<(RequestBody, u64)> {
    use std::io::{Seek, Write};
    let mut memory = BytesMut::new();
    let mut file: Option<std::fs::File> = None;
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(std::io::Error::other)?.into_data() else {
            continue; // trailers
        };
        len += data.len() as u64;
        // Writing blocks this thread briefly; it is PHP's, and PHP is
        // waiting anyway while this runs.
        match file.as_mut() {
            Some(file) => file.write_all(&data)?,
            None if memory.len() + data.len() > WHOLE_IN_MEMORY => {
                let mut spill = tempfile::tempfile()?;
                spill.write_all(&memory)?;
                spill.write_all(&data)?;
                memory = BytesMut::new();
                file = Some(spill);
            }
            None => memory.extend_from_slice(&data),
        }
    }
    Ok(match file {
        Some(mut file) => {
            file.rewind()?;
            (RequestBody::File(file), len)
        }
        None => (RequestBody::Whole(memory.freeze()), len),
    })
}

fn plain(status: StatusCode, text: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody {
        first: Some(Bytes::from_static(text.as_bytes())),
        rx: None,
        len: Some(text.len() as u64),
        _sent: None,
    });
    *response.status_mut() = status;
    response
}

/// A response body: what PHP wrote before the response went out, then,
/// for a streamed response, the chunks PHP writes after.
pub struct ResponseBody {
    first: Option<Bytes>,
    rx: Option<mpsc::Receiver<Bytes>>,
    /// The whole length, when the response did not stream.
    len: Option<u64>,
    /// Dropped with the body, when hyper is done with it.
    _sent: Option<oneshot::Sender<()>>,
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(first) = self.first.take() {
            if !first.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(first))));
            }
        }
        match self.rx.as_mut() {
            None => Poll::Ready(None),
            Some(rx) => rx
                .poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rx.is_none() && self.first.as_ref().is_none_or(Bytes::is_empty)
    }

    fn size_hint(&self) -> SizeHint {
        match self.len {
            Some(len) => SizeHint::with_exact(len),
            None => SizeHint::default(),
        }
    }
}
