//! The request path: the balancer port and the slot ports.
//!
//! # Theory of operation
//!
//! Each port's accept loop (`serve`) takes a permit of the shared
//! `--max-connections` limit before it accepts, so past the limit new
//! connections wait in the kernel's backlog instead of costing memory;
//! an address past its `--max-connections-per-ip` share gets a 503 at
//! once (`conn_limit`).
//! A connection is then TLS (the balancer port with `--tls-cert`; ALPN
//! picks `h2` or `http/1.1`), HTTP/2 with prior knowledge (its preface is
//! recognised on the first bytes), or HTTP/1.x. HTTP/1.x is read by ppm's
//! own strict reader (`http1`, which explains why); HTTP/2 by hyper.
//! Either way the balancer receives a complete request: the whole body is
//! in hand (in memory or spooled to disk, `spool`) before a worker is
//! taken, so a slow client never holds a worker.
//!
//! A request for the health path or for a file under `--static-directory`
//! is answered by the master (`static_files`). Anything else takes a
//! worker and is passed, normalized (`forwarding` builds its headers), as
//! frames over the worker's frame socket (`native_exchange`). The exchange
//! with the worker runs in a task of its own from the first byte written
//! to the worker's `Ready`, so a client that hangs up never leaves a
//! worker half-way through a request its slot counted. The response is
//! buffered up to `RESPONSE_BUFFER` so that a slow reader releases the
//! worker early; a longer response streams, holding the worker until its
//! last byte has been read from it. Every answer gets an
//! access log line once its last byte is sent (`access_log`).

pub mod access_log;
pub mod exchange;

use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::front::conn_limit::{Admitted, ConnLimit};
use crate::front::forwarding::{client_ip, Forwarding, Origin, TrustedProxies};
use crate::front::http1::{self, Arrival, Limits, Received, Refusal};
use crate::front::spool::{SpoolConfig, SpoolWriter, Spooled};
use crate::front::static_files::StaticFiles;
use crate::metrics::Metrics;
use crate::proxy::access_log::{AccessLog, Record};
use crate::workers::native::frames::HeadFrame;
use crate::workers::pool::{AcquireError, ExitReason, Lease, Pool};

/// Responses up to this size are read whole from the worker before the
/// client gets them, so the worker is free whatever the client's speed.
pub const RESPONSE_BUFFER: usize = 1024 * 1024;
/// Attempts at a request whose worker connection turned out closed before
/// anything was sent.
const SEND_ATTEMPTS: usize = 3;
/// The first bytes of every HTTP/2 connection (RFC 9113 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

use crate::body::{BoxError, ProxyBody};
use crate::shutdown::ShutdownWatch;

/// Which workers a listener serves.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// The balancer: any idle worker.
    Any,
    /// A slot port: only that slot's worker.
    Slot(usize),
}

/// What the master knows about one client connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
    pub target: Target,
}

/// The front door's settings, made from the options before any worker
/// starts: every file they name (certificate, key, static directory,
/// access log) is opened here, so a bad one stops the start with nothing
/// left running.
pub struct FrontDoor {
    pub limits: Limits,
    pub spool: Arc<SpoolConfig>,
    pub connections: Arc<ConnLimit>,
    pub tls: Option<TlsAcceptor>,
    pub static_files: Option<StaticFiles>,
    pub access_log: Option<Arc<AccessLog>>,
}

impl FrontDoor {
    pub fn new(
        opts: &crate::config::StartOptions,
        app_dir: &std::path::Path,
    ) -> Result<Self, crate::Error> {
        let invalid = |option, message| crate::Error::InvalidOption { option, message };
        let tls = match (&opts.tls_cert, &opts.tls_key) {
            (Some(cert), Some(key)) => Some(crate::front::tls::acceptor(cert, key)?),
            _ => None,
        };
        // --bridge=script serves the document root's other files, as the
        // web server in front of php-fpm would.
        let static_dir = match &opts.static_directory {
            Some(dir) => Some(("static-directory", app_dir.join(dir))),
            None if opts.app.runs_scripts() => {
                Some(("document-root", opts.app.document_root(app_dir)))
            }
            None => None,
        };
        let static_files = match static_dir {
            Some((option, dir)) => {
                let files = StaticFiles::new(&dir, opts.static_dotfiles)
                    .map_err(|err| invalid(option, format!("{}: {err}", dir.display())))?;
                Some(files)
            }
            None => None,
        };
        let access_log = if opts.logging() {
            let log =
                AccessLog::start(opts.access_log.clone(), opts.log_format).map_err(|err| {
                    let file = opts.access_log.as_deref().unwrap_or("stdout".as_ref());
                    invalid("access-log", format!("{}: {err}", file.display()))
                })?;
            Some(Arc::new(log))
        } else {
            None
        };
        Ok(Self {
            limits: opts.front_door_limits(),
            spool: Arc::new(SpoolConfig {
                memory_limit: opts.body_buffer_size,
                directory: opts.spool_directory.clone(),
            }),
            connections: Arc::new(ConnLimit::new(
                opts.max_connections,
                opts.connections_per_ip(),
                opts.trusted_proxies(),
            )),
            tls,
            static_files,
            access_log,
        })
    }
}

/// Shared state of the request path.
pub struct Balancer {
    pool: Arc<Pool>,
    max_execution_time: Option<Duration>,
    /// `--slow-request-time`: log the PHP backtrace of requests running longer.
    pub slow_request_time: Option<Duration>,
    /// Path the master answers itself on every port, for load balancers'
    /// health checks (never sent to PHP).
    health_path: Option<String>,
    trusted: TrustedProxies,
    request_ids: RequestIds,
    pub metrics: Arc<Metrics>,
    /// Size and time limits of client requests.
    pub limits: Limits,
    /// Where request bodies past the memory threshold go.
    pub spool: Arc<SpoolConfig>,
    /// `--max-connections` and `--max-connections-per-ip`, shared by every port.
    pub connections: Arc<ConnLimit>,
    /// `--tls-cert`/`--tls-key`: the balancer port speaks TLS.
    pub tls: Option<TlsAcceptor>,
    /// `--static-directory`.
    pub static_files: Option<StaticFiles>,
    /// `--logging`.
    pub access_log: Option<Arc<AccessLog>>,
}

impl Balancer {
    pub fn new(
        pool: Arc<Pool>,
        max_body_size: u64,
        max_execution_time: Option<Duration>,
        health_path: Option<String>,
        trusted: TrustedProxies,
    ) -> Self {
        Self {
            trusted,
            max_execution_time,
            slow_request_time: None,
            health_path,
            request_ids: RequestIds::new(),
            metrics: Arc::new(Metrics::new(pool.len())),
            pool,
            limits: Limits {
                max_body_size,
                ..Limits::default()
            },
            spool: Arc::new(SpoolConfig {
                memory_limit: 1024 * 1024,
                directory: None,
            }),
            connections: Arc::new(ConnLimit::new(10_000, None, TrustedProxies::default())),
            tls: None,
            static_files: None,
            access_log: None,
        }
    }

    /// Takes the front door's settings (see `FrontDoor`).
    pub fn set_front_door(&mut self, front_door: FrontDoor) {
        self.limits = front_door.limits;
        self.spool = front_door.spool;
        self.connections = front_door.connections;
        self.tls = front_door.tls;
        self.static_files = front_door.static_files;
        self.access_log = front_door.access_log;
    }

    /// The health check answer: 200 while the port has a ready worker
    /// (any worker for the balancer, its own for a slot port), else 503.
    fn health(&self, target: Target) -> Response<ProxyBody> {
        // While stopping, report down at once so that load balancers take
        // this host out before its ports close.
        let up = !self.pool.is_going_away()
            && match target {
                // An ondemand pool with no worker yet still serves.
                Target::Any => self.pool.available(),
                Target::Slot(slot) => self.pool.slot_serving(slot),
            };
        let mut response = if up {
            error_response(StatusCode::OK, "ok\n")
        } else {
            error_response(StatusCode::SERVICE_UNAVAILABLE, "no ready worker\n")
        };
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // So that `ppm stop <this port>` can say it is no control plane.
        response.headers_mut().insert(
            crate::control::identify::LISTENER_HEADER,
            HeaderValue::from_static(match target {
                Target::Any => "balancer",
                Target::Slot(_) => "slot",
            }),
        );
        response
    }

    /// Accepts connections until `shutdown` turns true, then lets open
    /// connections finish their current request and close, for at most
    /// `grace`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        target: Target,
        mut shutdown: ShutdownWatch,
        grace: Duration,
    ) {
        // Every connection task holds a clone of `alive`; once the last
        // is dropped, `all_closed` returns None.
        let (alive, mut all_closed) = mpsc::channel::<()>(1);
        let tls = match target {
            Target::Any => self.tls.clone(),
            Target::Slot(_) => None,
        };
        // Set once a wait for a free connection timed out: from then on,
        // until one is free, new connections get a 503 without waiting.
        let mut at_limit = false;
        loop {
            let permit = match self.connections.try_permit() {
                Some(permit) => Some(permit),
                None if at_limit => None,
                None => tokio::select! {
                    permit = self.connections.permit() => match permit {
                        Ok(permit) => Some(permit),
                        Err(_) => break,
                    },
                    _ = tokio::time::sleep(crate::front::conn_limit::FULL_WAIT) => None,
                    _ = shutdown.closing() => break,
                },
            };
            at_limit = permit.is_none();
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!("accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.closing() => break,
            };
            let _ = stream.set_nodelay(true);
            let admitted = match permit {
                Some(permit) => self.connections.admit(peer.ip(), permit),
                None => Err(self.connections.refuse_full()),
            };
            let permit = match admitted {
                Ok(admitted) => admitted,
                Err(refused) => {
                    // A TLS client could not read a plain answer: it just
                    // sees the connection close.
                    if tls.is_none() {
                        let mut shutdown = shutdown.clone();
                        tokio::spawn(async move { refused.refuse(stream, &mut shutdown).await });
                    }
                    continue;
                }
            };
            let conn = ConnInfo {
                peer,
                local: stream.local_addr().unwrap_or(peer),
                tls: tls.is_some(),
                target,
            };
            let this = self.clone();
            let tls = tls.clone();
            let shutdown = shutdown.clone();
            let alive = alive.clone();
            self.metrics
                .open_connections
                .fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let _alive = alive;
                let _permit: Admitted = permit;
                this.connection(stream, conn, tls, shutdown).await;
                this.metrics
                    .open_connections
                    .fetch_sub(1, Ordering::Relaxed);
            });
        }
        drop(listener);
        drop(alive);
        if tokio::time::timeout(grace, all_closed.recv())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the shutdown timeout; closing them");
        }
    }

    /// One client connection, whatever its protocol.
    async fn connection(
        self: &Arc<Self>,
        stream: TcpStream,
        conn: ConnInfo,
        tls: Option<TlsAcceptor>,
        mut shutdown: ShutdownWatch,
    ) {
        if let Some(acceptor) = tls {
            let handshake = tokio::select! {
                handshake = tokio::time::timeout(self.limits.header_timeout, acceptor.accept(stream)) => handshake,
                _ = shutdown.closing() => return,
            };
            let Ok(Ok(stream)) = handshake else {
                return;
            };
            if stream.get_ref().1.alpn_protocol() == Some(crate::front::tls::ALPN_H2) {
                self.serve_h2(stream, conn, shutdown).await;
            } else {
                self.serve_h1(stream, BytesMut::new(), conn, shutdown).await;
            }
            return;
        }
        // Cleartext: HTTP/2 with prior knowledge starts with its preface;
        // anything else is HTTP/1.x.
        let mut stream = stream;
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let deadline = Instant::now() + self.limits.header_timeout.min(self.limits.request_timeout);
        while buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf) {
            let read = tokio::select! {
                read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)) => read,
                _ = shutdown.closing(), if buf.is_empty() => return,
            };
            match read {
                Ok(Ok(n)) if n > 0 => {}
                _ if buf.is_empty() => return,
                // Let the HTTP/1 reader answer what it has (408, 400).
                _ => break,
            }
        }
        if buf.starts_with(H2_PREFACE) {
            let io = Prefixed {
                prefix: buf.freeze(),
                io: stream,
            };
            self.serve_h2(io, conn, shutdown).await;
        } else {
            self.serve_h1(stream, buf, conn, shutdown).await;
        }
    }

    async fn serve_h1<IO>(
        self: &Arc<Self>,
        io: IO,
        buf: BytesMut,
        conn: ConnInfo,
        shutdown: ShutdownWatch,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let this = self.clone();
        http1::serve(
            io,
            buf,
            &self.limits,
            &self.spool,
            shutdown,
            move |arrival| {
                let this = this.clone();
                async move { this.arrived(arrival, conn).await }
            },
        )
        .await;
    }

    async fn serve_h2<IO>(self: &Arc<Self>, io: IO, conn: ConnInfo, mut shutdown: ShutdownWatch)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // Streams in progress, and when the last one ended: an HTTP/2
        // connection without a stream for --idle-timeout is closed
        // gracefully, like an idle HTTP/1 connection.
        let activity = Arc::new(Activity::new());
        let this = self.clone();
        let tracked = activity.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let this = this.clone();
            let stream = Stream::begin(&tracked);
            async move {
                let response = this.h2_request(req, conn).await;
                Ok::<_, Infallible>(response.map(|inner| {
                    StreamBody {
                        inner,
                        _stream: stream,
                    }
                    .boxed_unsync()
                }))
            }
        });
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_header_list_size(
                (self.limits.max_request_line + self.limits.max_header_size) as u32,
            )
            .max_concurrent_streams(100);
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let idle = self.limits.idle_timeout;
        let mut tick = tokio::time::interval(Duration::from_secs(1).min(idle));
        loop {
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = shutdown.closing() => break,
                _ = tick.tick() => if activity.idle_for() > Some(idle) {
                    break;
                },
            }
        }
        connection.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(idle, connection).await;
    }

    /// An HTTP/2 request: its body is read whole (with the same limits as
    /// HTTP/1's) before it goes the way of every request.
    async fn h2_request(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<ProxyBody> {
        let received = Instant::now();
        let (mut parts, mut body) = req.into_parts();
        let refused = |status, reason| Arrival::Refused {
            refusal: Refusal { status, reason },
            request_line: Some(format!("{} {} HTTP/2.0", parts.method, parts.uri)),
            received,
        };
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.limits.max_body_size) {
            let arrival = refused(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
            return self.arrived(arrival, conn).await;
        }
        let mut spooled = SpoolWriter::new(self.spool.clone());
        let deadline = received + self.limits.request_timeout;
        let failure = loop {
            let until = deadline.min(Instant::now() + self.limits.body_timeout);
            let frame = match tokio::time::timeout_at(until, body.frame()).await {
                Err(_) => {
                    break Some((
                        StatusCode::REQUEST_TIMEOUT,
                        "request body not received in time",
                    ))
                }
                Ok(None) => break None,
                Ok(Some(Err(_))) => {
                    break Some((StatusCode::BAD_REQUEST, "could not read the request body"))
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if spooled.len() + data.len() as u64 > self.limits.max_body_size {
                break Some((StatusCode::PAYLOAD_TOO_LARGE, "request body too large"));
            }
            if spooled.push(&data).await.is_err() {
                break Some((
                    StatusCode::INSUFFICIENT_STORAGE,
                    "cannot store the request body",
                ));
            }
        };
        if let Some((status, reason)) = failure {
            return self.arrived(refused(status, reason), conn).await;
        }
        let Ok(spooled) = spooled.finish().await else {
            let arrival = refused(
                StatusCode::INSUFFICIENT_STORAGE,
                "cannot store the request body",
            );
            return self.arrived(arrival, conn).await;
        };
        // HTTP/2 may split cookies over several fields; HTTP/1.1 wants one
        // (RFC 9113 8.2.3).
        let cookies: Vec<&[u8]> = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        if cookies.len() > 1 {
            if let Ok(joined) = HeaderValue::from_bytes(&cookies.join(&b"; "[..])) {
                parts.headers.insert(header::COOKIE, joined);
            }
        }
        parts.extensions.insert(Received(received));
        let request = Request::from_parts(parts, spooled);
        let mut response = self.arrived(Arrival::Request(request), conn).await;
        // hyper writes the response in tasks of its own: the worker's side
        // of the exchange goes on in one too (a streamed body is what it
        // feeds).
        drop(response.extensions_mut().remove::<crate::body::Tail>());
        response
    }

    /// The answer to a request (or to a refused one), logged.
    pub(crate) async fn arrived(&self, arrival: Arrival, conn: ConnInfo) -> Response<ProxyBody> {
        match arrival {
            Arrival::Refused {
                refusal,
                request_line,
                received,
            } => {
                let mut response = plain(refusal.status, format!("{}\n", refusal.reason));
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                let line = request_line.unwrap_or_default();
                let mut words = line.splitn(3, ' ');
                let (method, uri) = (words.next().unwrap_or("-"), words.next().unwrap_or("-"));
                self.metrics.request(
                    None,
                    refusal.status.as_u16(),
                    received.elapsed(),
                    method,
                    uri,
                );
                let record = self.access_log.as_ref().map(|_| Record {
                    remote_addr: conn.peer.ip(),
                    time: SystemTime::now() - received.elapsed(),
                    method: if method.is_empty() { "-" } else { method }.to_string(),
                    uri: uri.to_string(),
                    protocol: words.next().map_or("-", protocol_name),
                    status: refusal.status.as_u16(),
                    bytes_sent: 0,
                    referer: None,
                    user_agent: None,
                    request_time: Duration::ZERO,
                    queue_time: None,
                    slot: None,
                    request_id: "-".into(),
                });
                self.logged(response, record, received)
            }
            Arrival::Request(req) => self.handle(req, conn).await,
        }
    }

    async fn handle(&self, req: Request<Spooled>, conn: ConnInfo) -> Response<ProxyBody> {
        let received = req
            .extensions()
            .get::<Received>()
            .map_or_else(Instant::now, |r| r.0);
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        // The line the access log will write if the request is dropped
        // before it is answered (the client left): nginx's 499.
        let record = self.access_log.as_ref().map(|_| Record {
            remote_addr: client_ip(req.headers(), conn.peer.ip(), &self.trusted),
            time: SystemTime::now() - received.elapsed(),
            method: method.to_string(),
            uri: req
                .uri()
                .path_and_query()
                .map_or_else(|| req.uri().to_string(), |p| p.to_string()),
            protocol: version_name(req.version()),
            status: 499,
            bytes_sent: 0,
            referer: header_text(req.headers(), header::REFERER),
            user_agent: header_text(req.headers(), header::USER_AGENT),
            request_time: Duration::ZERO,
            queue_time: None,
            slot: None,
            request_id: String::new(),
        });
        let mut pending = record.map(|record| Pending {
            log: self.access_log.clone().expect("logging"),
            record: Some(record),
            received,
        });
        if self.health_path.as_deref() == Some(req.uri().path()) {
            let response = self.health(conn.target);
            let record = pending.take().map(|pending| Record {
                status: response.status().as_u16(),
                request_id: "-".into(),
                ..pending.into_record()
            });
            return self.logged(response, record, received);
        }
        let mut request_id = self.request_ids.next();
        let mut outcome = Outcome::default();
        // Over FastCGI the web server has served its files already and
        // named the script to run, as with php-fpm.
        let fastcgi = req
            .extensions()
            .get::<crate::front::fastcgi::CgiVars>()
            .is_some();
        let static_response = match &self.static_files {
            Some(files) if !fastcgi => files.serve(req.method(), req.uri(), req.headers()).await,
            _ => None,
        };
        let mut response = match static_response {
            Some(response) => response,
            None => self.forward(req, conn, &mut request_id, &mut outcome).await,
        };
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(X_REQUEST_ID, value);
        }
        self.metrics.request(
            outcome.slot,
            response.status().as_u16(),
            started.elapsed(),
            method.as_str(),
            &path,
        );
        let record = pending.take().map(|pending| {
            let mut record = pending.into_record();
            record.status = response.status().as_u16();
            record.queue_time = outcome.queue_time;
            record.slot = outcome.slot;
            record.request_id = request_id;
            record
        });
        self.logged(response, record, received)
    }

    /// Wraps the response body so that its log line is written once it
    /// has been sent (or abandoned).
    fn logged(
        &self,
        response: Response<ProxyBody>,
        record: Option<Record>,
        received: Instant,
    ) -> Response<ProxyBody> {
        let (Some(log), Some(record)) = (&self.access_log, record) else {
            return response;
        };
        let pending = Pending {
            log: log.clone(),
            record: Some(record),
            received,
        };
        response.map(|inner| LoggedBody { inner, pending }.boxed_unsync())
    }

    /// Takes a worker and passes the complete request on. `outcome` says
    /// which slot served it and how long it waited for a worker.
    async fn forward(
        &self,
        req: Request<Spooled>,
        conn: ConnInfo,
        request_id: &mut String,
        outcome: &mut Outcome,
    ) -> Response<ProxyBody> {
        let (parts, body) = req.into_parts();
        let has_body = parts.headers.contains_key(header::CONTENT_LENGTH)
            || parts.headers.contains_key(header::TRANSFER_ENCODING)
            || !body.is_empty();
        self.metrics
            .bytes_in
            .fetch_add(body.len(), Ordering::Relaxed);
        let origin = Origin {
            peer: conn.peer,
            local: conn.local,
            tls: conn.tls,
            uri: &parts.uri,
        };
        let forwarding = Forwarding::new(
            &parts.headers,
            &origin,
            &self.trusted,
            std::mem::take(request_id),
        );
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        // The request head frame, encoded once from the parsed request:
        // the target as sent (it may hold bytes above 0x7F, see
        // target.rs), and the headers as the forwarding rules leave them.
        let raw_target = crate::target::raw_for(&parts.headers, path);
        let body_len = has_body.then_some(body.len() as usize);
        let cgi = parts
            .extensions
            .get::<crate::front::fastcgi::CgiVars>()
            .map_or(&[][..], |vars| vars.pairs());
        let mut head = Vec::with_capacity(1024);
        HeadFrame {
            method: parts.method.as_str(),
            target: raw_target
                .as_ref()
                .map_or(path.as_bytes(), |raw| raw.as_bytes()),
            protocol: "HTTP/1.1",
            remote_addr: &crate::text::ip_text(forwarding.remote_addr),
            remote_port: forwarding.remote_port,
            server_addr: &crate::text::ip_text(forwarding.server_addr),
            server_port: forwarding.server_port,
            tls: forwarding.https,
            content_length: body_len.map(|len| len as u64),
        }
        .encode(
            &mut head,
            |sink| {
                forwarding.headers(&parts.headers, body_len, |name, value| {
                    sink.lower(name, value)
                })
            },
            cgi.iter().map(|(name, value)| (&name[..], &value[..])),
        );
        *request_id = forwarding.request_id;

        let slot = match conn.target {
            Target::Any => None,
            Target::Slot(s) => Some(s),
        };
        for _ in 0..SEND_ATTEMPTS {
            let queued = tokio::time::Instant::now();
            let lease = match self.pool.acquire(slot).await {
                Ok(lease) => lease,
                Err(err) => {
                    outcome.queue_time = Some(queued.elapsed());
                    return unavailable(err);
                }
            };
            let waited = queued.elapsed();
            self.metrics.queue_wait.observe(waited);
            outcome.queue_time = Some(outcome.queue_time.unwrap_or_default() + waited);
            outcome.slot = Some(lease.slot());
            lease.begin(parts.method.as_str(), path);
            match crate::proxy::exchange::run(
                lease,
                head,
                body.body(),
                self.slow_request_time,
                self.max_execution_time,
                self.metrics.clone(),
                format!("{} {path}", parts.method),
            )
            .await
            {
                Ok(response) => return response,
                // Nothing reached that worker: the same head goes to another.
                Err(unsent) => head = unsent,
            }
        }
        outcome.slot = None;
        error_response(
            StatusCode::BAD_GATEWAY,
            "No PHP worker could take the request\n",
        )
    }
}

/// The streams of one HTTP/2 connection.
struct Activity {
    /// (streams in progress, when the last one ended)
    state: std::sync::Mutex<(usize, Option<Instant>)>,
}

impl Activity {
    fn new() -> Self {
        Self {
            state: std::sync::Mutex::new((0, Some(Instant::now()))),
        }
    }

    /// How long the connection has had no stream (None while it has one).
    fn idle_for(&self) -> Option<Duration> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match *state {
            (0, Some(since)) => Some(since.elapsed()),
            (0, None) => Some(Duration::ZERO),
            _ => None,
        }
    }
}

/// One HTTP/2 stream in progress; ends when its response body is dropped.
struct Stream(Arc<Activity>);

impl Stream {
    fn begin(activity: &Arc<Activity>) -> Self {
        let mut state = activity.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 += 1;
        Stream(activity.clone())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 -= 1;
        state.1 = Some(Instant::now());
    }
}

/// A response body that keeps its stream counted until it is sent.
struct StreamBody {
    inner: ProxyBody,
    _stream: Stream,
}

impl Body for StreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Which worker served a request, and how long it waited for one.
#[derive(Debug, Default)]
struct Outcome {
    slot: Option<usize>,
    queue_time: Option<Duration>,
}

/// An access log line waiting for its response to be sent. Written when
/// dropped, so a response the client abandons is logged too.
struct Pending {
    log: Arc<AccessLog>,
    record: Option<Record>,
    received: Instant,
}

impl Pending {
    /// The record, taken out so that it is not written.
    fn into_record(mut self) -> Record {
        self.record.take().expect("written only on drop")
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(record) = &mut self.record {
            record.request_time = self.received.elapsed();
            self.log.write(record);
        }
    }
}

/// A response body that counts what it sends for the access log.
struct LoggedBody {
    inner: ProxyBody,
    pending: Pending,
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let (Some(data), Some(record)) = (frame.data_ref(), &mut self.pending.record) {
                record.bytes_sent += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn header_text(headers: &hyper::HeaderMap, name: HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        _ => "-",
    }
}

fn protocol_name(text: &str) -> &'static str {
    match text {
        "HTTP/1.0" => "HTTP/1.0",
        "HTTP/1.1" => "HTTP/1.1",
        "HTTP/2.0" => "HTTP/2.0",
        _ => "-",
    }
}

/// An IO whose first bytes were already read (the sniffed HTTP/2 preface).
struct Prefixed<IO> {
    prefix: Bytes,
    io: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// A short plain-text response with an owned text.
fn plain(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A chunk of a streamed response, with the share of `RESPONSE_BUFFER` it
/// holds until the client has taken it.
pub(crate) type Chunk = Result<(Bytes, OwnedSemaphorePermit), BoxError>;

/// The client's side of a pumped response.
pub(crate) struct PumpedBody {
    pub(crate) rx: mpsc::UnboundedReceiver<Chunk>,
}

impl Body for PumpedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.rx.poll_recv(cx) {
            // The permit is dropped here: the pump may read that much more.
            Poll::Ready(Some(Ok((data, _permit)))) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub(crate) fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A short plain-text response from the master itself.
pub fn error_response(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The request passed `--max-execution-time`: the worker is killed and
/// replaced, the client gets 504.
pub(crate) fn timed_out(lease: &Lease, what: &str) -> Response<ProxyBody> {
    tracing::warn!(
        "[slot {}] {what} passed --max-execution-time; killing the worker",
        lease.slot()
    );
    lease.kill(ExitReason::Timeout);
    error_response(
        StatusCode::GATEWAY_TIMEOUT,
        "The PHP worker did not answer within the maximum execution time\n",
    )
}

fn unavailable(err: AcquireError) -> Response<ProxyBody> {
    let text = match err {
        AcquireError::QueueFull => "All workers are busy and the queue is full\n",
        AcquireError::Timeout => "No worker became free in time\n",
        AcquireError::ShuttingDown => "The server is shutting down\n",
        AcquireError::NoWorkers => {
            "No PHP worker can start; the error is in ppm's log and status\n"
        }
    };
    let retry_after = match err {
        AcquireError::NoWorkers => "5",
        _ => "1",
    };
    let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, text);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(retry_after));
    response
}

/// Request ids: a per-process random prefix and a counter, so they are
/// unique without a random number per request.
struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        Self {
            prefix: hasher.finish(),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        let mut id = Vec::with_capacity(32);
        crate::text::push_hex16(&mut id, self.prefix);
        crate::text::push_hex16(&mut id, self.counter.fetch_add(1, Ordering::Relaxed));
        String::from_utf8(id).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique() {
        let ids = RequestIds::new();
        assert_ne!(ids.next(), ids.next());
        assert_eq!(ids.next().len(), 32);
    }
}
