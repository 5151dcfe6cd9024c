//! One request's life in the master, top to bottom: refused or arrived,
//! the health path, static files, the worker head frame, a worker from
//! the pool, the exchange, the access log line.

use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};
use tokio::time::Instant;

use super::responses::error_response;
use super::{Balancer, ConnInfo, Target};
use crate::body::{BoxError, ProxyBody};
use crate::front::forwarding::{client_ip, Forwarding, Origin};
use crate::front::http1::{Arrival, Received};
use crate::front::spool::Spooled;
use crate::proxy::access_log::{AccessLog, Record};
use crate::workers::native::head_frame::HeadFrame;
use crate::workers::pool::AcquireError;

/// Attempts at a request whose worker connection turned out closed before
/// anything was sent.
const SEND_ATTEMPTS: usize = 3;

impl Balancer {
    /// The answer to a request (or to a refused one), logged.
    pub(crate) async fn arrived(&self, arrival: Arrival, conn: ConnInfo) -> Response<ProxyBody> {
        match arrival {
            Arrival::Refused {
                refusal,
                request_line,
                received,
            } => {
                let mut response = error_response(refusal.status, format!("{}\n", refusal.reason));
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
                let record = self.front.access_log.as_ref().map(|_| Record {
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
        let record = self.front.access_log.as_ref().map(|_| Record {
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
            log: self.front.access_log.clone().expect("logging"),
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
        let static_response = match &self.front.static_files {
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
        let (Some(log), Some(record)) = (&self.front.access_log, record) else {
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

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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
pub(super) struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    pub(super) fn new() -> Self {
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
