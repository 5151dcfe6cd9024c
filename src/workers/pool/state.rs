//! A slot's published state, the one table of its allowed transitions,
//! why workers end, and the commands a slot task takes.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::oneshot;

/// The state of a worker slot: of the worker that serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotState {
    /// A worker is booting.
    Starting,
    /// The worker is idle and can take a request.
    Ready,
    /// The worker is serving a request (or its connection is being renewed).
    Busy,
    /// The worker reached a recycle limit: it takes no more requests while
    /// its replacement boots.
    Draining,
    /// The worker is being stopped.
    Stopping,
    /// No worker: the slot has not started yet, or has stopped.
    Exited,
    /// Waiting before the next boot attempt after a failure.
    Backoff,
    /// Several boot attempts in a row failed; still retried at the longest backoff.
    Failed,
    /// No worker, and none wanted for now (`--pm dynamic|ondemand`): its
    /// port answers health checks with 503, and a request boots one.
    Empty,
}

impl SlotState {
    /// The one table of allowed transitions. Staying in a state is no
    /// transition and always allowed (see `transition`).
    pub fn can_become(self, next: SlotState) -> bool {
        use SlotState::*;
        matches!(
            (self, next),
            // A boot begins: the first, after a pause, or on demand.
            (Exited | Backoff | Failed | Empty, Starting)
                // The worker died: the next one boots now (a replacement
                // may already be booting) or after a pause (a crash loop).
                | (Ready | Busy | Draining, Starting | Backoff)
                | (Starting, Ready | Backoff | Failed)
                | (Ready, Busy)
                | (Busy, Ready)
                // A recycle limit: no request after the current one.
                | (Ready | Busy, Draining)
                // Its replacement took over, or failed and it serves on.
                | (Draining, Ready)
                // Shutdown: a worker is stopped; a slot without one is done.
                | (Ready | Busy | Draining, Stopping)
                | (Stopping, Exited)
                | (Starting | Backoff | Failed | Empty, Exited)
                // The process manager retires an idle worker.
                | (Ready, Empty)
        )
    }

    /// Whether a worker in this state counts as serving capacity.
    pub fn is_serving(self) -> bool {
        matches!(self, SlotState::Ready | SlotState::Busy)
    }
}

/// Moves slot `slot` from `*state` to `next` if the table allows it.
/// Staying in a state is no transition. An illegal transition is a bug:
/// it is refused, in release builds too, and logged with both states.
/// Returns whether the slot is in `next` now.
pub(super) fn transition(slot: usize, state: &mut SlotState, next: SlotState) -> bool {
    if *state == next {
        return true;
    }
    if !state.can_become(next) {
        tracing::error!(
            "bug: slot {slot} cannot go from {:?} to {:?}: not an allowed transition; it stays {:?}",
            *state,
            next,
            *state
        );
        return false;
    }
    *state = next;
    true
}

/// One worker of a slot, as the dispatcher and the slot task both know
/// it. The slot task makes one per worker and hands it to the dispatcher
/// with the worker's connection: which of the slot's workers it is, and
/// the requests it has served (the counter the exchange also counts on,
/// through `FrameConn::finished`). Shared by reference, so neither fact is
/// kept twice.
#[derive(Debug, Default)]
pub struct WorkerId {
    pub generation: u64,
    pub served: Arc<AtomicU64>,
}

impl WorkerId {
    pub fn new(generation: u64) -> Arc<Self> {
        Arc::new(WorkerId {
            generation,
            served: Arc::default(),
        })
    }

    /// Requests it has served.
    pub fn served(&self) -> u64 {
        self.served.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Why a worker ended; reported per slot in `/status` and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitReason {
    /// `--max-requests` reached.
    MaxRequests,
    /// `--ttl` reached.
    Ttl,
    /// `--memory-limit` passed.
    Memory,
    /// A request passed `--max-execution-time`.
    Timeout,
    /// The worker died on its own.
    Crash,
    /// A rolling or single-slot restart.
    Restart,
    /// The master is stopping.
    Shutdown,
    /// The application called exit() during a request.
    Exit,
    /// A PHP fatal error (native runtime: the script restarts in-process).
    Fatal,
    /// PHP's own `max_execution_time` (native runtime).
    PhpTimeout,
    /// PHP's `memory_limit` (native runtime).
    OutOfMemory,
    /// Idle past what the process manager keeps (`--pm dynamic|ondemand`).
    Idle,
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        f.write_str(&text)
    }
}

/// The answer to a restart request: whether the replacement booted (else
/// PHP's error).
pub type Reply = oneshot::Sender<Result<(), String>>;

/// Commands to a slot's task.
#[derive(Debug)]
pub enum SlotCommand {
    /// The connection to worker `generation` broke off mid-exchange: the
    /// worker is out of step with it and is replaced.
    ConnectionBroke { generation: u64 },
    /// Replace the worker surge-first; the reply says whether the
    /// replacement booted (else PHP's error; the old worker keeps serving).
    Replace {
        reason: ExitReason,
        reply: Option<Reply>,
    },
    /// Log the PHP backtrace of worker `generation`'s slow request.
    Backtrace { generation: u64 },
    /// Kill worker `generation` at once (it is stuck) and start a new one.
    Kill { generation: u64, reason: ExitReason },
    /// Stop the worker and end the task.
    Stop,
    /// The slot is empty and a worker is wanted: boot one.
    Wake,
    /// Stop worker `generation` if it is still idle; the slot becomes empty.
    Retire { generation: u64 },
}
