//! One request's exchange with a native worker, over its frame socket.
//!
//! The task that runs it owns the worker's connection from the first
//! frame written to the worker's `Ready`: it writes the request head, the
//! body chunks (streamed from the spooled body while the response is
//! read, so a big upload is never whole in memory and a worker that
//! answers before reading cannot deadlock the master) and the body end;
//! it reads the response head, the body (buffered up to
//! `RESPONSE_BUFFER`, so a slow client releases the worker early; past
//! that, or from PHP's first `flush()`, streamed with that much read
//! ahead), the response end (which may
//! come early: `fastcgi_finish_request()`), then the worker's stats and
//! `Ready`. Only then is the lease released, with its connection: the
//! worker is idle exactly when its `Ready` has been read. No other task
//! is on the way and nothing is counted.
//!
//! `--max-execution-time` counts from dispatch to the response end (504
//! when it passes before), then again for the work after the response;
//! past it the worker is killed and replaced.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::header::CONTENT_LENGTH;
use hyper::{Response, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use crate::body::{ProxyBody, Tail};
use crate::metrics::Metrics;
use crate::proxy::responses::{
    error_response, full, timed_out, Chunk, PumpedBody, RESPONSE_BUFFER,
};
use crate::workers::native::conn::{FrameConn, FrameReader};
use crate::workers::native::event::WorkerEvent;
use crate::workers::native::frames::{Outcome, ToMaster, ToWorker, BODY_CHUNK};
use crate::workers::native::http_head::parse_header_line;
use crate::workers::pool::{Lease, SlowTimer, WorkerBody};

/// How long frames are still read from a worker being killed, so that the
/// backtrace it was asked for reaches the log.
const LAST_FRAMES: Duration = Duration::from_secs(2);

/// Runs the exchange of `request` on the native worker of `lease`. The
/// response comes back as soon as it is known; the exchange goes on in a
/// task of its own until the worker is ready again. None when nothing
/// reached the worker (its connection was already unusable).
pub(crate) async fn run(
    mut lease: Lease,
    head: Vec<u8>,
    body: WorkerBody,
    slow_request_time: Option<Duration>,
    max_execution_time: Option<Duration>,
    metrics: Arc<Metrics>,
    what: String,
) -> Result<Response<ProxyBody>, Vec<u8>> {
    let conn = match lease.take_conn() {
        Some(conn) if !conn.is_closed() => conn,
        other => {
            if let Some(conn) = other {
                lease.put_back(conn);
            }
            lease.unsent();
            return Err(head);
        }
    };
    let (respond, response) = oneshot::channel();
    let exchange = Exchange {
        respond: Some(respond),
        slow: slow_request_time.map(|after| lease.slow_log(after)),
        limit: max_execution_time,
        metrics,
        what,
    };
    // The exchange runs here, in the task of the connection that read the
    // request. What is left of it once the response is known (the
    // worker's clean-up up to its `Ready`, or a streamed body) goes with
    // the response as its `Tail`; if this future is dropped first (the
    // client left), the tail's drop hands the exchange to a task of its
    // own.
    let mut tail = Tail::new(Box::pin(exchange.run(lease, conn, head, body)));
    let mut response = response;
    let (finished, response) = std::future::poll_fn(|cx| {
        let finished = Pin::new(&mut tail).poll(cx).is_ready();
        match Pin::new(&mut response).poll(cx) {
            Poll::Pending if !finished => Poll::Pending,
            Poll::Ready(Ok(response)) => Poll::Ready((finished, Some(response))),
            _ => Poll::Ready((finished, None)),
        }
    })
    .await;
    let mut response = response.unwrap_or_else(|| {
        error_response(StatusCode::BAD_GATEWAY, "The PHP worker exchange failed\n")
    });
    if finished {
        // The worker is idle again and may have just been handed to a
        // queued request: let that request's task write to the worker
        // before this one writes its response to the client, so the
        // worker works while the client is answered (about 10 % more
        // requests/s on hello world, doc/benchmarks.md).
        let_others_run().await;
    } else {
        response.extensions_mut().insert(tail);
    }
    Ok(response)
}

/// Puts this task at the back of the runtime's queue once. Unlike
/// `tokio::task::yield_now`, which defers the task until the I/O driver
/// has been polled (a system call), this wakes the task at once, so only
/// the tasks already woken run first.
async fn let_others_run() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

struct Exchange {
    /// Where the response goes once known.
    respond: Option<oneshot::Sender<Response<ProxyBody>>>,
    /// The pending `--slow-request-time` backtrace, cancelled once the
    /// response is known.
    slow: Option<SlowTimer>,
    limit: Option<Duration>,
    metrics: Arc<Metrics>,
    what: String,
}

/// Where the response to the client stands.
enum Client {
    /// No head yet.
    Waiting,
    /// Head read; the body is collected up to `RESPONSE_BUFFER`.
    Collecting(hyper::http::response::Parts, BytesMut),
    /// Streaming, `RESPONSE_BUFFER` bytes ahead of the client at most.
    Streaming(mpsc::UnboundedSender<Chunk>, Arc<Semaphore>),
    /// The response is complete, or its client left: frames up to
    /// `Ready` are read for the worker's sake.
    Done,
}

/// How an exchange ended for the worker.
enum End {
    /// `Ready` was read after these stats.
    Ready(Option<(u64, u64)>),
    /// The frame stream is broken or out of step; the worker goes.
    Broken,
}

impl Exchange {
    async fn run(mut self, mut lease: Lease, mut conn: FrameConn, head: Vec<u8>, body: WorkerBody) {
        let end = self
            .relay(&lease, &mut conn.reader, &mut conn.write, head, body)
            .await;
        match end {
            End::Ready(stats) => {
                let (memory, peak) = stats.unwrap_or_default();
                if conn.finished(memory, peak) {
                    lease.retire_after();
                }
                lease.memory(memory, peak);
                lease.put_back(conn);
                lease.complete();
            }
            End::Broken => {
                conn.mark_broken();
                lease.put_back(conn);
            }
        }
    }

    /// Writes the request while reading the response frames up to `Ready`.
    async fn relay(
        &mut self,
        lease: &Lease,
        reader: &mut FrameReader,
        write: &mut OwnedWriteHalf,
        head: Vec<u8>,
        body: WorkerBody,
    ) -> End {
        let deadline = self.limit.map(|limit| Instant::now() + limit);
        let send = send_request(write, head, body);
        tokio::pin!(send);
        let mut sending = true;
        let mut client = Client::Waiting;
        let mut stats = None;
        let mut ended_at: Option<Instant> = None;
        loop {
            let limit_at = match ended_at {
                None => deadline,
                Some(at) => self.limit.map(|limit| at + limit),
            };
            let frame = tokio::select! {
                // A failed write shows as the worker's end on the read side.
                _ = &mut send, if sending => {
                    sending = false;
                    continue;
                }
                frame = reader.next() => frame,
                _ = sleep_until(limit_at) => {
                    self.timed_out(lease, &mut client, ended_at.is_some());
                    return drain(reader).await;
                }
            };
            let frame = match frame {
                Ok(frame) => frame,
                Err(err) => {
                    tracing::warn!(
                        "[{}] worker failed during the request ({}): {err}",
                        reader.label(),
                        self.what
                    );
                    self.fail(&mut client);
                    return End::Broken;
                }
            };
            match frame {
                ToMaster::Head { status, lines } if matches!(client, Client::Waiting) => {
                    let mut response = Response::new(());
                    *response.status_mut() =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    let headers = response.headers_mut();
                    for line in &lines {
                        if let Some((name, value)) = parse_header_line(line) {
                            headers.append(name, value);
                        }
                    }
                    crate::front::forwarding::strip_hop_by_hop(headers);
                    client = Client::Collecting(response.into_parts().0, BytesMut::new());
                }
                ToMaster::Body(data) => {
                    self.metrics
                        .bytes_out
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    if self.body(&mut client, data, limit_at).await.is_some() {
                        self.timed_out(lease, &mut client, false);
                        return drain(reader).await;
                    }
                }
                // PHP flushed: the client gets what came so far now, and
                // the rest as it comes (a flush before any output has
                // nothing to deliver: PHP sends headers with output).
                // Streaming already, the flushed output went on as it came.
                ToMaster::Flush => {
                    let stuck = match client {
                        Client::Collecting(..) => self.start_streaming(&mut client, limit_at).await,
                        _ => None,
                    };
                    if stuck.is_some() {
                        self.timed_out(lease, &mut client, false);
                        return drain(reader).await;
                    }
                }
                ToMaster::End { outcome, .. } => {
                    if outcome.restarts() {
                        reader.report(WorkerEvent::ScriptRestarted { outcome });
                    } else if outcome == Outcome::Exception {
                        reader.report(WorkerEvent::UncaughtException);
                    }
                    self.complete(&mut client);
                    ended_at = Some(Instant::now());
                }
                ToMaster::Stats { memory, peak } => stats = Some((memory, peak)),
                ToMaster::Ready if ended_at.is_some() && !sending => return End::Ready(stats),
                ToMaster::Ready => {
                    tracing::warn!(
                        "[{}] worker said ready before the end of {}",
                        reader.label(),
                        self.what
                    );
                    self.fail(&mut client);
                    return End::Broken;
                }
                _ => {}
            }
        }
    }

    /// Passes a body chunk on. Some(()) when the deadline passed while
    /// the client was not reading.
    async fn body(
        &mut self,
        client: &mut Client,
        data: Vec<u8>,
        limit_at: Option<Instant>,
    ) -> Option<()> {
        match client {
            Client::Waiting => {
                // Output before any head: PHP's default head.
                let parts = Response::new(()).into_parts().0;
                let mut collected = BytesMut::new();
                collected.extend_from_slice(&data);
                *client = Client::Collecting(parts, collected);
            }
            Client::Collecting(_, collected) => {
                collected.extend_from_slice(&data);
                if collected.len() > RESPONSE_BUFFER {
                    return self.start_streaming(client, limit_at).await;
                }
            }
            Client::Streaming(..) => return self.stream(client, Bytes::from(data), limit_at).await,
            Client::Done => {}
        }
        None
    }

    /// Sends the head and what was collected: the response streams from
    /// here on. Some(()) when the deadline passed while the client was not
    /// reading.
    async fn start_streaming(
        &mut self,
        client: &mut Client,
        limit_at: Option<Instant>,
    ) -> Option<()> {
        let Client::Collecting(parts, collected) = std::mem::replace(client, Client::Done) else {
            return None;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let budget = Arc::new(Semaphore::new(RESPONSE_BUFFER));
        self.send(Response::from_parts(
            parts,
            PumpedBody { rx }.boxed_unsync(),
        ));
        *client = Client::Streaming(tx, budget);
        if collected.is_empty() {
            return None;
        }
        self.stream(client, collected.freeze(), limit_at).await
    }

    /// Sends a chunk to a streaming client once it has room for it.
    async fn stream(
        &mut self,
        client: &mut Client,
        data: Bytes,
        limit_at: Option<Instant>,
    ) -> Option<()> {
        let Client::Streaming(tx, budget) = client else {
            return None;
        };
        let permits = data.len().clamp(1, RESPONSE_BUFFER) as u32;
        let permit = tokio::select! {
            permit = budget.clone().acquire_many_owned(permits) => permit.ok(),
            // The client left: PHP goes on, its output is dropped.
            _ = tx.closed() => None,
            _ = sleep_until(limit_at) => return Some(()),
        };
        let sent = permit.is_some_and(|permit| tx.send(Ok((data, permit))).is_ok());
        if !sent {
            *client = Client::Done;
        }
        None
    }

    /// The response ended: it goes to the client whole, or its stream ends.
    fn complete(&mut self, client: &mut Client) {
        match std::mem::replace(client, Client::Done) {
            Client::Waiting => self.send(Response::new(full(Bytes::new()))),
            Client::Collecting(mut parts, collected) => {
                parts.headers.remove(CONTENT_LENGTH);
                self.send(Response::from_parts(parts, full(collected.freeze())));
            }
            Client::Streaming(..) | Client::Done => {}
        }
    }

    /// The worker failed: 502 if the client has no response yet.
    fn fail(&mut self, client: &mut Client) {
        match std::mem::replace(client, Client::Done) {
            Client::Streaming(tx, _) => {
                let _ = tx.send(Err("the PHP worker died during the response".into()));
            }
            Client::Waiting | Client::Collecting(..) => self.send(error_response(
                StatusCode::BAD_GATEWAY,
                "The PHP worker died during the request\n",
            )),
            Client::Done => {}
        }
    }

    /// `--max-execution-time` passed: 504 if the client has no response
    /// yet; the worker is killed and replaced.
    fn timed_out(&mut self, lease: &Lease, client: &mut Client, after_response: bool) {
        let what = if after_response {
            format!("the work after the response to {}", self.what)
        } else {
            self.what.clone()
        };
        match std::mem::replace(client, Client::Done) {
            Client::Waiting | Client::Collecting(..) => {
                let response = timed_out(lease, &what);
                self.send(response);
            }
            Client::Streaming(tx, _) => {
                let _ = timed_out(lease, &what);
                let _ = tx.send(Err("the request passed --max-execution-time".into()));
            }
            Client::Done => {
                let _ = timed_out(lease, &what);
            }
        }
    }

    fn send(&mut self, response: Response<ProxyBody>) {
        if let Some(respond) = self.respond.take() {
            self.slow = None;
            let _ = respond.send(response);
        }
    }
}

/// Reads what a worker being killed still sends (the backtrace the slot
/// task asked it for) until it is gone.
async fn drain(reader: &mut FrameReader) -> End {
    let _ = tokio::time::timeout(LAST_FRAMES, async { while reader.next().await.is_ok() {} }).await;
    End::Broken
}

/// Writes the request head (already encoded in `out`), the body in
/// chunks and the body end.
async fn send_request(
    write: &mut OwnedWriteHalf,
    mut out: Vec<u8>,
    mut body: WorkerBody,
) -> std::io::Result<()> {
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            for chunk in data.chunks(BODY_CHUNK) {
                ToWorker::Body(chunk.to_vec()).encode(&mut out);
            }
            if out.len() >= BODY_CHUNK {
                write.write_all(&out).await?;
                out.clear();
            }
        }
    }
    ToWorker::BodyEnd.encode(&mut out);
    write.write_all(&out).await
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::sync::Notify;

    /// The task woken before the step aside (the queued request that was
    /// just handed the worker) runs before the task that stepped aside
    /// goes on (to write its response).
    #[test]
    fn a_task_woken_before_the_step_aside_runs_first() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let handed = Arc::new(Notify::new());
        runtime.block_on(async {
            let queued = tokio::spawn({
                let (order, handed) = (order.clone(), handed.clone());
                async move {
                    handed.notified().await;
                    order
                        .lock()
                        .unwrap()
                        .push("queued request writes to the worker");
                }
            });
            // Let the queued task start waiting.
            tokio::task::yield_now().await;
            handed.notify_one();
            super::let_others_run().await;
            order.lock().unwrap().push("response goes to the client");
            queued.await.unwrap();
        });
        assert_eq!(
            *order.lock().unwrap(),
            [
                "queued request writes to the worker",
                "response goes to the client"
            ]
        );
    }
}
