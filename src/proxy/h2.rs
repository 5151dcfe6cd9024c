//! HTTP/2 connections (hyper): each stream's request read whole, then
//! handled like an HTTP/1 one.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::{Balancer, ConnInfo};
use crate::body::ProxyBody;
use crate::front::http1::{Arrival, Received, Refusal};
use crate::front::spool::SpoolWriter;
use crate::shutdown::ShutdownWatch;

impl Balancer {
    pub(super) async fn serve_h2<IO>(
        self: &Arc<Self>,
        io: IO,
        conn: ConnInfo,
        mut shutdown: ShutdownWatch,
    ) where
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
                // The body holds the stream's guard, so the stream counts
                // until its response is sent (or dropped).
                Ok::<_, Infallible>(response.map(|body| {
                    body.map_frame(move |frame| {
                        let _counted = &stream;
                        frame
                    })
                    .boxed_unsync()
                }))
            }
        });
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_header_list_size(
                (self.front.limits.max_request_line + self.front.limits.max_header_size) as u32,
            )
            .max_concurrent_streams(100);
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let idle = self.front.limits.idle_timeout;
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
        if declared.is_some_and(|len| len > self.front.limits.max_body_size) {
            let arrival = refused(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
            return self.arrived(arrival, conn).await;
        }
        let mut spooled = SpoolWriter::new(self.front.spool.clone());
        let deadline = received + self.front.limits.request_timeout;
        let failure = loop {
            let until = deadline.min(Instant::now() + self.front.limits.body_timeout);
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
            if spooled.len() + data.len() as u64 > self.front.limits.max_body_size {
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
