//! What `/status`, the metrics and the health checks read of the slots.

use std::collections::BTreeMap;

use serde::Serialize;

use super::dispatch::Slot;
use super::{ExitReason, Pool, SlotState};
use crate::metrics::{unix_now, unix_now_ms};

/// What `/status` shows about one slot.
#[derive(Debug, Clone, Serialize)]
pub struct SlotStatus {
    pub slot: usize,
    pub port: u16,
    /// Filled in by the snapshot, from the dispatcher's record.
    pub state: SlotState,
    pub pid: Option<u32>,
    /// Requests served by this slot, all its workers together (filled in
    /// by the snapshot, from the workers' counters).
    pub requests: u64,
    /// Requests served by the current worker (idem).
    pub worker_requests: u64,
    pub memory_bytes: u64,
    pub peak_memory_bytes: u64,
    pub rss_bytes: u64,
    /// Unix time (seconds) the current worker was started.
    pub started_at: Option<u64>,
    /// Workers of this slot that ended and were replaced.
    pub restarts: u64,
    pub last_reason: Option<ExitReason>,
    pub last_exit: Option<String>,
    pub last_error: Option<String>,
    /// Pid of a replacement that is booting, during a surge.
    pub replacement_pid: Option<u32>,
    /// Pids of replaced workers finishing their last request.
    pub draining_pids: Vec<u32>,
    /// Replaced workers by reason (`max-requests`, `crash`, …).
    pub restarts_by_reason: BTreeMap<String, u64>,
    /// Requests that ended with an uncaught exception (native runtime:
    /// the worker continues, so they are no restart).
    pub uncaught_exceptions: u64,
    /// The request the worker is serving, if any.
    pub current_request: Option<CurrentRequest>,
}

impl SlotStatus {
    pub(super) fn new(slot: usize, port: u16, state: SlotState) -> Self {
        SlotStatus {
            slot,
            port,
            state,
            pid: None,
            requests: 0,
            worker_requests: 0,
            memory_bytes: 0,
            peak_memory_bytes: 0,
            rss_bytes: 0,
            started_at: None,
            restarts: 0,
            last_reason: None,
            last_exit: None,
            last_error: None,
            replacement_pid: None,
            draining_pids: Vec::new(),
            restarts_by_reason: BTreeMap::new(),
            uncaught_exceptions: 0,
            current_request: None,
        }
    }

    /// Resets the figures of the slot's previous worker for a new one.
    pub(super) fn new_worker(&mut self, pid: Option<u32>) {
        self.pid = pid;
        self.memory_bytes = 0;
        self.peak_memory_bytes = 0;
        self.rss_bytes = 0;
        self.started_at = Some(unix_now());
    }

    /// A worker of the slot ended for `reason`.
    pub(super) fn count_restart(&mut self, reason: ExitReason) {
        self.restarts += 1;
        *self
            .restarts_by_reason
            .entry(reason.to_string())
            .or_default() += 1;
        self.last_reason = Some(reason);
    }
}

/// A request in progress, as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CurrentRequest {
    pub method: String,
    pub path: String,
    /// Unix time in milliseconds the worker took it.
    pub started_at_ms: u64,
}

impl Slot {
    /// The slot as `/status` shows it.
    fn snapshot(&self) -> SlotStatus {
        let current = self.worker.as_ref().map_or(0, |w| w.served());
        let draining: u64 = self.draining.iter().map(|d| d.id.served()).sum();
        SlotStatus {
            state: self.state,
            requests: self.past_requests + current + draining,
            worker_requests: current,
            ..self.status.clone()
        }
    }
}

impl Pool {
    /// A snapshot of every slot, for `/status`.
    pub fn status(&self) -> Vec<SlotStatus> {
        self.lock().slots.iter().map(Slot::snapshot).collect()
    }

    /// The request slot `s` is serving, as "METHOD /path (N.Ns)".
    pub(crate) fn describe_request(&self, s: usize) -> String {
        let shared = self.lock();
        match shared
            .slots
            .get(s)
            .and_then(|slot| slot.status.current_request.as_ref())
        {
            Some(r) => {
                let seconds = unix_now_ms().saturating_sub(r.started_at_ms) as f64 / 1000.0;
                format!("{} {} (running {seconds:.1}s)", r.method, r.path)
            }
            None => "a request".to_string(),
        }
    }

    /// Requests waiting for a worker.
    pub fn queue_len(&self) -> usize {
        self.lock().waiters.len()
    }

    /// Whether slot `s` has a worker that can serve (idle or busy).
    pub fn slot_serving(&self, s: usize) -> bool {
        self.lock()
            .slots
            .get(s)
            .is_some_and(|slot| slot.state.is_serving())
    }

    /// Whether every slot has a worker that can serve.
    pub fn all_serving(&self) -> bool {
        self.lock().slots.iter().all(|s| s.state.is_serving())
    }

    /// Whether at least one worker can serve.
    pub fn any_ready(&self) -> bool {
        self.lock().slots.iter().any(|s| s.state.is_serving())
    }

    /// Whether a worker has been ready at least once.
    pub fn ever_ready(&self) -> bool {
        self.lock().ever_ready
    }

    /// The last PHP boot error of any slot, if one failed.
    pub fn last_boot_error(&self) -> Option<String> {
        self.lock().logged_boot_error.clone()
    }
}
