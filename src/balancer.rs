//! The request path: the balancer port and the slot ports.
//!
//! A request is read whole (up to `--max-body-size`) before a worker is
//! taken, so a slow client never holds a worker. It is then forwarded as a
//! normalized HTTP/1.1 request over the worker's private socket, and the
//! response is buffered up to `RESPONSE_BUFFER` so that a slow reader
//! releases the worker early; a longer response streams, holding the
//! worker until its last byte has been read from it.

use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::forwarding::{strip_hop_by_hop, worker_headers, Origin, TrustedProxies};
use crate::metrics::Metrics;
use crate::pool::{AcquireError, ExitReason, Lease, Pool};

/// Responses up to this size are read whole from the worker before the
/// client gets them, so the worker is free whatever the client's speed.
pub const RESPONSE_BUFFER: usize = 1024 * 1024;
/// Attempts at a request whose worker connection turned out closed before
/// anything was sent.
const SEND_ATTEMPTS: usize = 3;

/// The error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response the master sends.
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Which workers a listener serves.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// The balancer: any idle worker.
    Any,
    /// A slot port: only that slot's worker.
    Slot(usize),
}

/// Shared state of the request path.
pub struct Balancer {
    pool: Arc<Pool>,
    max_body_size: u64,
    max_execution_time: Option<Duration>,
    /// `--slow-request-time`: log the PHP backtrace of requests running longer.
    pub slow_request_time: Option<Duration>,
    /// Path the master answers itself on every port, for load balancers'
    /// health checks (never sent to PHP).
    health_path: Option<String>,
    trusted: TrustedProxies,
    request_ids: RequestIds,
    pub metrics: Arc<Metrics>,
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
            max_body_size,
            max_execution_time,
            slow_request_time: None,
            health_path,
            request_ids: RequestIds::new(),
            metrics: Arc::new(Metrics::new(pool.len())),
            pool,
        }
    }

    /// The health check answer: 200 while the port has a ready worker
    /// (any worker for the balancer, its own for a slot port), else 503.
    fn health(&self, target: Target) -> Response<ProxyBody> {
        let up = match target {
            Target::Any => self.pool.any_ready(),
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
        response
    }

    /// Accepts connections until `shutdown` turns true, then lets open
    /// connections finish their current request and close, for at most
    /// `grace`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        target: Target,
        mut shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(err) => {
                            // EMFILE and friends: back off instead of spinning.
                            tracing::warn!("accept failed: {err}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let local = stream.local_addr().unwrap_or(peer);
                    let this = self.clone();
                    let service = hyper::service::service_fn(move |req| {
                        let this = this.clone();
                        async move { Ok::<_, Infallible>(this.handle(req, peer, local, target).await) }
                    });
                    let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    let conn = graceful.watch(conn);
                    let metrics = self.metrics.clone();
                    metrics.open_connections.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        // Client resets and protocol errors end only that connection.
                        let _ = conn.await;
                        metrics.open_connections.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                _ = crate::until_true(&mut shutdown) => break,
            }
        }
        drop(listener);
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the shutdown timeout; closing them");
        }
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        local: SocketAddr,
        target: Target,
    ) -> Response<ProxyBody> {
        if self.health_path.as_deref() == Some(req.uri().path()) {
            return self.health(target);
        }
        let started = tokio::time::Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let mut request_id = self.request_ids.next();
        let (mut response, slot) = self
            .forward(req, peer, local, target, &mut request_id)
            .await;
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(X_REQUEST_ID, value);
        }
        self.metrics.request(
            slot,
            response.status().as_u16(),
            started.elapsed(),
            method.as_str(),
            &path,
        );
        response
    }

    /// Reads the request whole, takes a worker and passes the request on.
    /// Returns the response and the slot that served it, if any did.
    async fn forward(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        local: SocketAddr,
        target: Target,
        request_id: &mut String,
    ) -> (Response<ProxyBody>, Option<usize>) {
        let (parts, body) = req.into_parts();
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.max_body_size) {
            return (too_large(), None);
        }
        let has_body = parts.headers.contains_key(header::CONTENT_LENGTH)
            || parts.headers.contains_key(header::TRANSFER_ENCODING)
            || !body.is_end_stream();
        let limit = usize::try_from(self.max_body_size).unwrap_or(usize::MAX);
        let body = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) if err.is::<http_body_util::LengthLimitError>() => return (too_large(), None),
            Err(_) => {
                let response =
                    error_response(StatusCode::BAD_REQUEST, "Could not read the request body\n");
                return (response, None);
            }
        };
        self.metrics
            .bytes_in
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        let origin = Origin {
            peer,
            local,
            tls: false,
            uri: &parts.uri,
        };
        let (headers, effective_id) = worker_headers(
            &parts.headers,
            &origin,
            has_body.then_some(body.len()),
            &self.trusted,
            std::mem::take(request_id),
        );
        *request_id = effective_id;
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let Ok(uri) = path.parse::<hyper::Uri>() else {
            return (
                error_response(StatusCode::BAD_REQUEST, "Bad request target\n"),
                None,
            );
        };

        let slot = match target {
            Target::Any => None,
            Target::Slot(s) => Some(s),
        };
        for _ in 0..SEND_ATTEMPTS {
            let queued = tokio::time::Instant::now();
            let mut lease = match self.pool.acquire(slot).await {
                Ok(lease) => lease,
                Err(err) => return (unavailable(err), None),
            };
            self.metrics.queue_wait.observe(queued.elapsed());
            let served_by = Some(lease.slot());
            let mut request = Request::new(Full::new(body.clone()));
            *request.method_mut() = parts.method.clone();
            *request.version_mut() = Version::HTTP_11;
            *request.headers_mut() = headers.clone();
            *request.uri_mut() = uri.clone();
            lease.begin(parts.method.as_str(), path);
            let _slow = self.slow_request_time.map(|after| lease.slow_log(after));
            let Some(conn) = lease.conn() else {
                lease.unsent();
                continue;
            };
            if conn.ready().await.is_err() {
                lease.unsent();
                continue;
            }
            // Execution time counts from here: queue time is not the app's.
            let deadline = self
                .max_execution_time
                .map(|limit| tokio::time::Instant::now() + limit);
            let Some(sent) = within(deadline, conn.send_request(request)).await else {
                return (
                    timed_out(&lease, &format!("{} {path}", parts.method)),
                    served_by,
                );
            };
            match sent {
                Ok(response) => {
                    let response = respond(response, lease, deadline, self.metrics.clone()).await;
                    return (response, served_by);
                }
                Err(err) if err.is_canceled() => {
                    lease.unsent();
                    continue;
                }
                Err(err) => {
                    tracing::warn!(
                        "[slot {}] worker failed during the request: {err}",
                        lease.slot()
                    );
                    let response = error_response(
                        StatusCode::BAD_GATEWAY,
                        "The PHP worker died during the request\n",
                    );
                    return (response, served_by);
                }
            }
        }
        let response = error_response(
            StatusCode::BAD_GATEWAY,
            "No PHP worker could take the request\n",
        );
        (response, None)
    }
}

fn too_large() -> Response<ProxyBody> {
    error_response(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large\n")
}

/// Passes the worker's response on. A response with a known length that
/// fits `RESPONSE_BUFFER` is read whole, so the worker is free at once
/// whatever the client's speed. Anything else (streamed output, large
/// files) is forwarded as it arrives by a pump task that reads ahead of the
/// client by up to `RESPONSE_BUFFER` bytes and holds the worker until the
/// last byte has been read from it.
async fn respond(
    response: Response<Incoming>,
    mut lease: Lease,
    deadline: Option<Instant>,
    metrics: Arc<Metrics>,
) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let known_len = body.size_hint().exact();
    if known_len.is_some_and(|len| len <= RESPONSE_BUFFER as u64) {
        let Some(collected) = within(deadline, body.collect()).await else {
            return timed_out(&lease, "a response");
        };
        return match collected {
            Ok(collected) => {
                lease.complete();
                drop(lease);
                let bytes = collected.to_bytes();
                metrics
                    .bytes_out
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Response::from_parts(parts, full(bytes))
            }
            Err(err) => {
                tracing::warn!("[slot {}] worker response broke off: {err}", lease.slot());
                error_response(
                    StatusCode::BAD_GATEWAY,
                    "The PHP worker died during the response\n",
                )
            }
        };
    }
    let budget = Arc::new(Semaphore::new(RESPONSE_BUFFER));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(pump(body, lease, budget, tx, deadline, metrics));
    Response::from_parts(parts, PumpedBody { rx }.boxed_unsync())
}

type Chunk = Result<(Bytes, OwnedSemaphorePermit), BoxError>;

async fn pump(
    mut body: Incoming,
    mut lease: Lease,
    budget: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Chunk>,
    deadline: Option<Instant>,
    metrics: Arc<Metrics>,
) {
    loop {
        let frame = tokio::select! {
            frame = within(deadline, body.frame()) => match frame {
                Some(frame) => frame,
                None => {
                    let _ = timed_out(&lease, "a streamed response");
                    let _ = tx.send(Err("the request passed --max-execution-time".into()));
                    return;
                }
            },
            // The client went away: stop reading; the unfinished lease
            // renews the worker's connection.
            _ = tx.closed() => return,
        };
        match frame {
            None => {
                lease.complete();
                return;
            }
            Some(Err(err)) => {
                tracing::warn!("[slot {}] worker response broke off: {err}", lease.slot());
                let _ = tx.send(Err(err.into()));
                return;
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                metrics
                    .bytes_out
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                let permits = data.len().clamp(1, RESPONSE_BUFFER) as u32;
                let permit = tokio::select! {
                    permit = budget.clone().acquire_many_owned(permits) => match permit {
                        Ok(permit) => permit,
                        Err(_) => return,
                    },
                    _ = tx.closed() => return,
                };
                if tx.send(Ok((data, permit))).is_err() {
                    return;
                }
            }
        }
    }
}

/// The client's side of a pumped response.
struct PumpedBody {
    rx: mpsc::UnboundedReceiver<Chunk>,
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

fn full(bytes: Bytes) -> ProxyBody {
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

/// Runs `work` until `deadline` (if any); None when the deadline passed.
async fn within<F: std::future::Future>(deadline: Option<Instant>, work: F) -> Option<F::Output> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, work).await.ok(),
        None => Some(work.await),
    }
}

/// The request passed `--max-execution-time`: the worker is killed and
/// replaced, the client gets 504.
fn timed_out(lease: &Lease, what: &str) -> Response<ProxyBody> {
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
    };
    let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, text);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
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
        format!(
            "{:016x}{:016x}",
            self.prefix,
            self.counter.fetch_add(1, Ordering::Relaxed)
        )
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
