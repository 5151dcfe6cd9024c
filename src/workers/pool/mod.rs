//! The dispatcher: slot states, idle workers and the request queue.
//!
//! # Theory of operation
//!
//! Each slot has a task (`workers::slot`, started with the pool by
//! `slot::start_pool`) that owns the slot's worker processes and its
//! lifecycle: it boots them, replaces them surge-first, and tells the pool
//! through a narrow API (`report.rs`; the task is the only writer of its
//! slot's worker) when a worker is ready, has taken over or is gone.
//! Other parts of ppm never touch a process; they send the task
//! `SlotCommand`s.
//!
//! The pool (`dispatch.rs`) holds, under one short lock, what it needs to
//! hand a request to a worker: each slot's state, its worker's `WorkerId`
//! and idle connection, the idle list and the FIFO queue of waiting
//! requests; and what `/status` reads (`status.rs`). A
//! request takes a `Lease` on an idle worker: round-robin, because released
//! workers go to the back of the idle list. When the lease is dropped the
//! worker goes to the first queued request it can serve, or back to the
//! idle list. A worker serves one request at a time, so the lease is
//! exclusive use of its connection. A worker is idle again only once it has
//! reported `request_done` (after its terminate work and reset), not merely
//! when its response has been read, so that a slow `kernel.terminate`
//! listener never delays another request.
//!
//! A replacement worker takes over its slot atomically (`swap`): new
//! requests go to it at once, while a request the old worker is still
//! serving finishes there; the slot task is told when it has.
//!
//! Every state change goes through `SlotState::can_become` (`state.rs`),
//! the one table of allowed transitions; an illegal one is refused.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};

use crate::shutdown::ShutdownWatch;

/// The request body type sent to workers: always whole, with a length.
pub type WorkerBody = crate::front::spool::WorkerBody;
use crate::workers::native::conn::FrameConn;
use dispatch::{Shared, Slot};
pub use lease::{Lease, SlowTimer};
pub use pm::{PmSettings, PmStatus};
pub use state::{ExitReason, Reply, SlotCommand, SlotState, WorkerId};
pub use status::{CurrentRequest, SlotStatus};

mod dispatch;
mod lease;
mod pm;
mod report;
mod state;
mod status;

/// Why a request got no worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AcquireError {
    #[error("the queue of waiting requests is full")]
    QueueFull,
    #[error("no worker became free within the queue timeout")]
    Timeout,
    #[error("ppm is shutting down")]
    ShuttingDown,
    /// Every slot's last boot failed and none has a worker: waiting would
    /// only delay the same answer.
    #[error("no PHP worker can start")]
    NoWorkers,
}

/// The worker pool: slot states, idle workers and the request queue.
pub struct Pool {
    shared: Mutex<Shared>,
    /// Unbounded, so that no command (a ConnectionBroke, a Kill) is ever dropped.
    commands: Vec<mpsc::UnboundedSender<SlotCommand>>,
    max_queue: usize,
    queue_timeout: Duration,
    /// The master's shutdown phase, for health checks and the process manager.
    shutdown: ShutdownWatch,
    /// Permits for extra workers booting beside the ones they replace.
    pub(crate) surge: Arc<Semaphore>,
    /// Debug mode: where files workers report as included go.
    included_files: Option<mpsc::UnboundedSender<Vec<PathBuf>>>,
    /// What php-fpm's status page counts (`/fpm-status`).
    pub(crate) fpm: crate::metrics::PoolCounters,
    /// The process manager's settings.
    pm: PmSettings,
}

impl Pool {
    /// Starts the process manager of a dynamic or ondemand pool: its
    /// first spare workers (the slot tasks boot them once they run), then
    /// its maintenance tick, which ends with the pool.
    pub(crate) fn start_pm(self: &Arc<Self>) {
        if self.is_elastic() {
            self.demand(&mut self.lock());
            tokio::spawn(pm::maintain(Arc::downgrade(self), self.pm.idle_timeout));
        }
    }

    /// The pool's bookkeeping alone, with the receiving end of each slot's
    /// command channel: `slot::start_pool` gives those to the slot tasks,
    /// the unit tests play the slot tasks' part themselves.
    pub(crate) fn new(
        slot_ports: &[u16],
        max_queue: usize,
        queue_timeout: Duration,
        max_surge: usize,
        included_files: Option<mpsc::UnboundedSender<Vec<PathBuf>>>,
        pm: PmSettings,
        shutdown: ShutdownWatch,
    ) -> (Arc<Pool>, Vec<mpsc::UnboundedReceiver<SlotCommand>>) {
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in slot_ports {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            receivers.push(rx);
        }
        // Slots of a dynamic or ondemand pool start empty; the process
        // manager wakes the ones it wants.
        let initial = match pm.mode {
            crate::config::PmMode::Static => SlotState::Exited,
            _ => SlotState::Empty,
        };
        let slots = slot_ports
            .iter()
            .enumerate()
            .map(|(slot, &port)| Slot::new(slot, port, initial))
            .collect();
        let pool = Arc::new(Pool {
            shared: Mutex::new(Shared {
                slots,
                idle: std::collections::VecDeque::new(),
                waiters: std::collections::VecDeque::new(),
                next_waiter: 0,
                ever_ready: false,
                logged_boot_error: None,
                pm: pm::PmState::new(),
            }),
            commands: senders,
            max_queue,
            queue_timeout,
            shutdown,
            surge: Arc::new(Semaphore::new(max_surge.max(1))),
            included_files,
            fpm: crate::metrics::PoolCounters::new(max_queue),
            pm,
        });
        (pool, receivers)
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// Whether the pool has no slots (never, once started).
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // Every critical section completes its updates before any call
        // that could panic, so the data behind a poisoned lock is sound.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a command to a slot's task without waiting.
    pub fn command(&self, slot: usize, command: SlotCommand) -> bool {
        self.commands
            .get(slot)
            .is_some_and(|tx| tx.send(command).is_ok())
    }

    /// Whether the master's ports have stopped accepting. Requests keep
    /// being served: a request that came in on a connection accepted
    /// before that must not fail.
    pub fn is_closed(&self) -> bool {
        self.shutdown.phase().is_closing()
    }

    /// Whether health checks should see this host as going away (a stop
    /// was asked for; during `--drain-delay` the ports still serve).
    pub fn is_going_away(&self) -> bool {
        self.shutdown.phase().is_going_away()
    }

    /// Tells every slot task to stop its workers and end.
    pub fn stop_all(&self) {
        for tx in &self.commands {
            let _ = tx.send(SlotCommand::Stop);
        }
    }
}

#[cfg(test)]
mod tests;
