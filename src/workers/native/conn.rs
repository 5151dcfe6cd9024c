//! The master's side of a native worker's frame socket.
//!
//! One `FrameConn` per worker process. It lives in the pool while the
//! worker is idle and moves with the `Lease` into the task that runs an
//! exchange, which writes the request frames and reads every frame up to
//! the worker's `Ready`: only that task reads the socket while a request
//! runs. Frames that concern the slot rather than the request (log lines,
//! backtraces, finished requests, the reason a script restarted) go on to
//! the slot task through an unbounded channel, so they never hold the
//! exchange up. Finished requests are told only when the worker reached a
//! recycle limit and otherwise every `REPORT_EVERY`: the exchange counts
//! them and checks the request and memory limits itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use super::event::WorkerEvent;
use super::frames::{split, FrameError, ToMaster};

/// Why a frame connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("the worker closed its socket")]
    Closed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// When the worker must take no further request, decided by the exchange
/// from the stats it read, before the worker is idle again.
#[derive(Debug, Clone, Default)]
pub struct Recycle {
    /// Requests after which the worker is recycled (None: unlimited).
    pub max_requests: Option<u64>,
    /// Zend memory (bytes) after which it is recycled.
    pub memory_limit: Option<u64>,
    /// Requests it has finished, shared with the slot task (its logs and
    /// limits), which hears of finished requests only now and then.
    pub served: Arc<AtomicU64>,
}

impl Recycle {
    /// Counts one finished request; whether the worker reached a limit.
    pub fn finished(&mut self, memory: u64, peak: u64) -> bool {
        let served = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_requests.is_some_and(|limit| served >= limit)
            || self
                .memory_limit
                .is_some_and(|limit| memory.max(peak) >= limit)
    }
}

/// A connected native worker.
pub struct FrameConn {
    pub(crate) reader: FrameReader,
    pub(crate) write: OwnedWriteHalf,
    pub(crate) recycle: Recycle,
    /// PHP's `memory_limit` setting, as the worker reported it at boot.
    pub(crate) php_memory_limit: Option<String>,
    /// When the slot task last heard of a finished request.
    reported_at: Option<Instant>,
}

/// How often the slot task hears of finished requests (for the worker's
/// RSS, sampled about once a second) when no limit was reached: waking it
/// for every request cost the master more CPU than the rest of the hop.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// The reading half of a worker's frame socket.
pub struct FrameReader {
    read: OwnedReadHalf,
    buf: BytesMut,
    label: String,
    events: mpsc::UnboundedSender<WorkerEvent>,
    broken: bool,
}

impl FrameConn {
    /// Wraps the master's end of a worker's socket; slot frames go to
    /// `events`, log lines to the log under `label`.
    pub fn new(
        socket: tokio::net::UnixStream,
        label: String,
        events: mpsc::UnboundedSender<WorkerEvent>,
    ) -> Self {
        let (read, write) = socket.into_split();
        FrameConn {
            reader: FrameReader {
                read,
                buf: BytesMut::with_capacity(64 << 10),
                label,
                events,
                broken: false,
            },
            write,
            recycle: Recycle::default(),
            php_memory_limit: None,
            reported_at: None,
        }
    }

    /// Whether the connection can carry no further request (an exchange
    /// broke off, or the worker closed it).
    pub fn is_closed(&self) -> bool {
        self.reader.broken
    }

    /// Marks the connection unusable: the frame stream is out of step.
    pub fn mark_broken(&mut self) {
        self.reader.broken = true;
    }

    /// The next frame for the request (see [`FrameReader::next`]).
    pub async fn next(&mut self) -> Result<ToMaster, ConnError> {
        self.reader.next().await
    }

    /// Tells the slot task about a finished request or a script restart.
    pub fn report(&self, event: WorkerEvent) {
        self.reader.report(event);
    }

    /// Counts a finished request with the worker's memory after it; tells
    /// the slot task when the worker reached a recycle limit (returns
    /// true), and otherwise now and then (`REPORT_EVERY`).
    pub fn finished(&mut self, memory: u64, peak: u64) -> bool {
        let retire = self.recycle.finished(memory, peak);
        let now = Instant::now();
        if retire || self.reported_at.is_none_or(|at| now - at >= REPORT_EVERY) {
            self.reported_at = Some(now);
            self.report(WorkerEvent::Finished {
                memory,
                peak_memory: peak,
            });
        }
        retire
    }
}

impl FrameReader {
    /// Tells the slot task about a finished request or a script restart.
    pub fn report(&self, event: WorkerEvent) {
        let _ = self.events.send(event);
    }

    /// The slot label for log lines.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The next frame for the request; slot frames are passed on (see the
    /// module docs) and skipped.
    pub async fn next(&mut self) -> Result<ToMaster, ConnError> {
        loop {
            if let Some(frame) = self.buffered()? {
                if let Some(frame) = self.pass_on(frame) {
                    return Ok(frame);
                }
                continue;
            }
            match self.read.read_buf(&mut self.buf).await {
                Ok(0) => {
                    self.broken = true;
                    return Err(ConnError::Closed);
                }
                Ok(_) => {}
                Err(err) => {
                    self.broken = true;
                    return Err(err.into());
                }
            }
        }
    }

    fn buffered(&mut self) -> Result<Option<ToMaster>, ConnError> {
        let parsed = match split(&self.buf) {
            Ok(None) => return Ok(None),
            Ok(Some((kind, payload, used))) => ToMaster::parse(kind, payload).map(|f| (f, used)),
            Err(err) => Err(err),
        };
        match parsed {
            Ok((frame, used)) => {
                let _ = self.buf.split_to(used);
                Ok(Some(frame))
            }
            Err(err) => {
                self.broken = true;
                Err(err.into())
            }
        }
    }

    /// Slot frames go to the log or the slot task; request frames are
    /// returned.
    fn pass_on(&self, frame: ToMaster) -> Option<ToMaster> {
        match frame {
            ToMaster::Log(line) => {
                for line in line.lines().filter(|l| !l.trim().is_empty()) {
                    tracing::info!("[{}] {line}", self.label);
                }
                None
            }
            ToMaster::Backtrace(trace) => {
                let _ = self.events.send(WorkerEvent::Backtrace { trace });
                None
            }
            ToMaster::Included(files) => {
                let files = files.into_iter().map(Into::into).collect();
                let _ = self.events.send(WorkerEvent::IncludedFiles { files });
                None
            }
            other => Some(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_recycled_at_its_request_or_memory_limit() {
        let mut r = Recycle {
            max_requests: Some(2),
            memory_limit: Some(100),
            served: Arc::default(),
        };
        assert!(!r.finished(10, 20));
        assert!(r.finished(10, 20), "second request reaches max-requests");
        let mut r = Recycle {
            max_requests: None,
            memory_limit: Some(100),
            served: Arc::default(),
        };
        assert!(!r.finished(10, 99));
        assert!(r.finished(10, 100), "peak memory at the limit");
    }
}
