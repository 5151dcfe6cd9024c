//! What a slot task tells the dispatcher: the narrow API through which
//! the one owner of a slot's workers publishes which worker serves the
//! slot, and what `/status` shows of it.
//!
//! None of these take a generation to check: the slot task is the only
//! writer of its slot's worker, so what it says is about that worker.
//! Only what comes back from a request (a `Lease`, a command naming a
//! worker) is checked against the worker serving the slot.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::state::WorkerId;
use super::{AcquireError, ExitReason, FrameConn, Pool, SlotState};

impl Pool {
    /// A boot begins in slot `s`, which has no worker.
    pub(crate) fn booting(&self, s: usize) {
        let mut shared = self.lock();
        let slot = &mut shared.slots[s];
        slot.forget_worker(None);
        slot.waking = false;
        slot.become_(SlotState::Starting);
        slot.status.new_worker(None);
    }

    /// Slot `s`'s boot failed with PHP's error `message`; it waits in
    /// `next` (`Backoff` or `Failed`) before the next attempt. When that
    /// leaves no slot able to serve, the queued requests are answered at
    /// once. Returns whether the message differs from the last one logged
    /// in full (the caller logs it in full only then).
    pub(crate) fn boot_failed(&self, s: usize, message: &str, next: SlotState) -> bool {
        let mut shared = self.lock();
        let slot = &mut shared.slots[s];
        slot.become_(next);
        slot.boot_failing = true;
        slot.status.last_error = Some(message.to_string());
        if shared.cannot_serve(None) {
            shared.refuse_waiters(AcquireError::NoWorkers);
        }
        if shared.logged_boot_error.as_deref() == Some(message) {
            return false;
        }
        shared.logged_boot_error = Some(message.to_string());
        true
    }

    /// Slot `s`'s worker booted and is idle.
    pub(crate) fn ready(self: &Arc<Self>, s: usize, id: Arc<WorkerId>, pid: u32, conn: FrameConn) {
        let mut shared = self.lock();
        let slot = &mut shared.slots[s];
        slot.worker = Some(id);
        slot.conn = Some(conn);
        slot.status.pid = Some(pid);
        // It may be a replacement whose worker died while it booted.
        slot.status.replacement_pid = None;
        slot.status.last_error = None;
        slot.boot_failing = false;
        shared.ever_ready = true;
        self.idle_again(&mut shared, s);
    }

    /// Switches slot `s` to a booted replacement in one step; worker
    /// `old_pid` is replaced. The returned receiver fires once the
    /// replaced worker has no request in flight.
    pub(crate) fn swap(
        self: &Arc<Self>,
        s: usize,
        id: Arc<WorkerId>,
        pid: u32,
        conn: FrameConn,
        old_pid: u32,
    ) -> oneshot::Receiver<()> {
        let (done_tx, done_rx) = oneshot::channel();
        let mut shared = self.lock();
        shared.idle.retain(|&i| i != s);
        let slot = &mut shared.slots[s];
        slot.forget_worker(Some(done_tx));
        slot.worker = Some(id);
        slot.conn = Some(conn);
        slot.status.new_worker(Some(pid));
        slot.status.replacement_pid = None;
        slot.status.draining_pids.push(old_pid);
        slot.status.last_error = None;
        slot.boot_failing = false;
        shared.ever_ready = true;
        self.hand_over(&mut shared, s);
        done_rx
    }

    /// Slot `s`'s worker reached a recycle limit: it takes no request
    /// after the one it may be serving, until its replacement takes over.
    pub(crate) fn retire(&self, s: usize) {
        let mut shared = self.lock();
        shared.slots[s].retiring = true;
        if shared.slots[s].state == SlotState::Ready {
            shared.idle.retain(|&i| i != s);
            shared.slots[s].become_(SlotState::Draining);
        }
    }

    /// The replacement of slot `s`'s retiring worker failed to boot: the
    /// worker serves on rather than leave the slot without one.
    pub(crate) fn keep_serving(self: &Arc<Self>, s: usize) {
        let mut shared = self.lock();
        let slot = &mut shared.slots[s];
        slot.status.replacement_pid = None;
        if !slot.retiring {
            return;
        }
        slot.retiring = false;
        if slot.state == SlotState::Draining {
            self.hand_over(&mut shared, s);
        }
    }

    /// The process manager wants slot `s`'s worker retired: if it is idle,
    /// no request gets it any more, the slot is empty and true is
    /// returned (the slot task stops it); false when a request has it.
    pub(crate) fn retire_idle(&self, s: usize) -> bool {
        let mut shared = self.lock();
        let slot = &mut shared.slots[s];
        if slot.state != SlotState::Ready || slot.leased || !slot.become_(SlotState::Empty) {
            return false;
        }
        slot.forget_worker(None);
        slot.status.pid = None;
        slot.status.last_reason = Some(ExitReason::Idle);
        shared.idle.retain(|&i| i != s);
        shared.pm.retired += 1;
        // A request may have come for this slot's port meanwhile.
        self.demand(&mut shared);
        true
    }

    /// Slot `s`'s worker ended for `reason`; `next` is the slot's state
    /// from now on: `Starting` when its successor boots at once (it may
    /// be booting already), `Backoff` after a pause, `Exited` at shutdown.
    pub(crate) fn worker_gone(&self, s: usize, reason: ExitReason, exit: String, next: SlotState) {
        let mut shared = self.lock();
        shared.idle.retain(|&i| i != s);
        let slot = &mut shared.slots[s];
        slot.forget_worker(None);
        slot.status.pid = None;
        if reason == ExitReason::Shutdown {
            slot.status.last_reason = Some(reason);
        } else {
            slot.status.count_restart(reason);
        }
        slot.status.last_exit = Some(exit);
        slot.become_(next);
        if next == SlotState::Starting {
            slot.status.new_worker(None);
        }
    }

    /// Slot `s`'s worker is being stopped (shutdown).
    pub(crate) fn stopping(&self, s: usize) {
        self.lock().slots[s].become_(SlotState::Stopping);
    }

    /// Slot `s`, which has no worker, has stopped.
    pub(crate) fn stopped(&self, s: usize) {
        self.lock().slots[s].become_(SlotState::Exited);
    }

    /// Slot `s`'s worker's script restarted in its process (native
    /// runtime) after a request ended with `reason`: counted as a restart.
    pub(crate) fn script_restarted(&self, s: usize, reason: ExitReason) {
        self.lock().slots[s].status.count_restart(reason);
    }

    /// A request of slot `s` ended with an uncaught exception.
    pub(crate) fn uncaught_exception(&self, s: usize) {
        self.lock().slots[s].status.uncaught_exceptions += 1;
    }

    /// A replaced worker of slot `s` ended.
    pub(crate) fn replaced_worker_gone(
        &self,
        s: usize,
        pid: u32,
        reason: ExitReason,
        exit: String,
    ) {
        let mut shared = self.lock();
        let status = &mut shared.slots[s].status;
        status.draining_pids.retain(|&p| p != pid);
        status.count_restart(reason);
        status.last_exit = Some(exit);
    }

    /// A replacement for slot `s`'s worker is booting as `pid`.
    pub(crate) fn replacement_started(&self, s: usize, pid: u32) {
        self.lock().slots[s].status.replacement_pid = Some(pid);
    }

    /// Slot `s`'s last error (a failed boot of a replacement), or none.
    pub(crate) fn record_error(&self, s: usize, message: Option<String>) {
        self.lock().slots[s].status.last_error = message;
    }

    /// Slot `s`'s worker's memory after a request.
    pub(crate) fn record_memory(&self, s: usize, memory: u64, peak: u64, rss: Option<u64>) {
        let mut shared = self.lock();
        let status = &mut shared.slots[s].status;
        status.memory_bytes = memory;
        status.peak_memory_bytes = peak;
        if let Some(rss) = rss {
            status.rss_bytes = rss;
        }
    }

    /// Passes on files a worker reported as included (debug mode).
    pub(crate) fn note_included(&self, files: Vec<PathBuf>) {
        if let Some(tx) = &self.included_files {
            let _ = tx.send(files);
        }
    }
}
