//! A request's exclusive use of one worker (`Lease`), and what it does
//! when it ends.

use std::sync::Arc;
use std::time::Duration;

use super::{CurrentRequest, ExitReason, FrameConn, Pool, SlotCommand};

/// Exclusive use of one worker for one request. Dropping it returns the
/// worker to the pool: reusable if the response was read to its end (or
/// nothing was sent), otherwise its connection is renewed first.
pub struct Lease {
    pub(super) pool: Arc<Pool>,
    pub(super) slot: usize,
    pub(super) generation: u64,
    pub(super) conn: Option<FrameConn>,
    pub(super) sent: bool,
    pub(super) completed: bool,
    /// The worker reached a recycle limit with this request.
    pub(super) retire: bool,
    /// The worker's PHP memory after the request (current, peak), for
    /// `/status`.
    pub(super) memory: Option<(u64, u64)>,
}

impl Lease {
    /// Takes the worker's connection out for an exchange that owns it;
    /// `put_back` returns it. Marks the request as sent.
    pub fn take_conn(&mut self) -> Option<FrameConn> {
        self.sent = true;
        self.conn.take()
    }

    /// Returns the connection `take_conn` took.
    pub fn put_back(&mut self, conn: FrameConn) {
        self.conn = Some(conn);
    }

    /// The worker reached a recycle limit: once this lease is released it
    /// takes no other request, even before the slot task hears of it.
    pub fn retire_after(&mut self) {
        self.retire = true;
    }

    /// The worker's PHP memory after the request, shown in `/status` once
    /// the lease is released.
    pub fn memory(&mut self, memory: u64, peak: u64) {
        self.memory = Some((memory, peak));
    }

    /// The slot this worker serves.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Which of the slot's workers this is.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Shows the request in `/status` while the worker serves it.
    pub fn begin(&self, method: &str, path: &str) {
        let mut shared = self.pool.lock();
        let slot = &mut shared.slots[self.slot];
        if slot.serves(self.generation) {
            slot.status.current_request = Some(CurrentRequest {
                method: method.to_string(),
                path: path.chars().take(200).collect(),
                started_at_ms: crate::metrics::unix_now_ms(),
            });
        }
    }

    /// The response has been read to its end: the connection can be
    /// reused. The exchange has counted the request (`FrameConn::finished`,
    /// on the worker's one request counter); a lease given back sent but
    /// not complete is counted when it is released.
    pub fn complete(&mut self) {
        self.completed = true;
    }

    /// Nothing reached the worker (its connection was already closed): give
    /// the worker back for a new connection without counting a request.
    pub fn unsent(&mut self) {
        self.sent = false;
        self.completed = false;
    }

    /// Has the worker's PHP backtrace logged if the request still runs
    /// after `after` (`--slow-request-time`), until the guard is dropped.
    pub fn slow_log(&self, after: Duration) -> SlowTimer {
        let (pool, slot, generation) = (self.pool.clone(), self.slot, self.generation);
        SlowTimer(tokio::spawn(async move {
            tokio::time::sleep(after).await;
            pool.fpm.slow_request();
            pool.command(slot, SlotCommand::Backtrace { generation });
        }))
    }

    /// The worker is stuck: have it killed and replaced.
    pub fn kill(&self, reason: ExitReason) {
        self.pool.command(
            self.slot,
            SlotCommand::Kill {
                generation: self.generation,
                reason,
            },
        );
    }
}

/// Cancels a pending slow-request backtrace when dropped.
pub struct SlowTimer(tokio::task::JoinHandle<()>);

impl Drop for SlowTimer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.fpm.released();
        if let Some(conn) = self.conn.take() {
            self.pool.release(self, conn);
        }
    }
}
