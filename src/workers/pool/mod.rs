//! The dispatcher: slot states, idle workers and the request queue.
//!
//! # Theory of operation
//!
//! Each slot has a task (`slot::SlotTask`) that owns the slot's worker
//! processes: it boots them, replaces them surge-first, and tells the pool
//! when a worker is ready or gone. Other parts of ppm never touch a process;
//! they send the task `SlotCommand`s.
//!
//! The pool holds, under one short lock, each slot's state and its idle
//! connection, the idle list and the FIFO queue of waiting requests. A
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
//! Every state change goes through `SlotState::can_become`, the one table
//! of allowed transitions.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::metrics::unix_now;
use crate::shutdown::ShutdownWatch;
use crate::workers::process::WorkerSpec;
use crate::workers::slot::{Limits, SlotTask};

/// The request body type sent to workers: always whole, with a length.
pub type WorkerBody = crate::front::spool::WorkerBody;
use crate::workers::native::conn::FrameConn;
pub use lease::{Lease, SlowTimer};
pub use pm::{PmSettings, PmStatus};

mod lease;
mod pm;

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
    /// No worker; one will be started.
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
    /// The one table of allowed transitions.
    pub fn can_become(self, next: SlotState) -> bool {
        use SlotState::*;
        matches!(
            (self, next),
            (Exited | Backoff | Failed, Starting)
                | (Starting, Ready | Backoff | Failed)
                | (Ready, Busy)
                | (Busy, Ready)
                | (Ready | Busy, Draining)
                | (Draining, Ready)
                | (
                    Starting | Ready | Busy | Draining | Backoff | Failed | Exited,
                    Stopping
                )
                | (Ready | Busy | Draining | Stopping, Exited)
                | (Exited, Backoff)
                // The process manager: an empty slot boots on demand, an
                // idle worker is retired (stopping) and leaves it empty.
                | (Exited | Stopping, Empty)
                | (Empty, Starting | Stopping)
        )
    }

    /// Whether a worker in this state counts as serving capacity.
    pub fn is_serving(self) -> bool {
        matches!(self, SlotState::Ready | SlotState::Busy)
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
        reply: Option<oneshot::Sender<Result<(), String>>>,
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

/// What `/status` shows about one slot.
#[derive(Debug, Clone, Serialize)]
pub struct SlotStatus {
    pub slot: usize,
    pub port: u16,
    pub state: SlotState,
    pub pid: Option<u32>,
    /// Requests served by this slot, all its workers together.
    pub requests: u64,
    /// Requests served by the current worker.
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
    /// Resets the figures of the slot's previous worker for a new one.
    fn new_worker(&mut self, pid: Option<u32>) {
        self.pid = pid;
        self.memory_bytes = 0;
        self.peak_memory_bytes = 0;
        self.rss_bytes = 0;
        self.worker_requests = 0;
        self.started_at = Some(unix_now());
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

struct Slot {
    state: SlotState,
    generation: u64,
    conn: Option<FrameConn>,
    /// A lease on the current worker is out.
    leased: bool,
    /// A replaced worker still serving a request, and who to tell when done.
    draining: Vec<(u64, oneshot::Sender<()>)>,
    /// The slot's last boot failed and no worker has been ready since.
    boot_failing: bool,
    /// The worker reached a recycle limit: once its request is over it
    /// takes no other, until its replacement takes over.
    retiring: bool,
    /// Since when the worker has been on the idle list.
    idle_since: Option<std::time::Instant>,
    /// The process manager told this empty slot to boot a worker, and it
    /// has not started yet.
    waking: bool,
    status: SlotStatus,
}

struct Waiter {
    id: u64,
    slot: Option<usize>,
    tx: oneshot::Sender<Result<Lease, AcquireError>>,
}

struct Shared {
    slots: Vec<Slot>,
    idle: VecDeque<usize>,
    waiters: VecDeque<Waiter>,
    next_waiter: u64,
    /// A worker has been ready at least once since the master started.
    ever_ready: bool,
    /// The last boot error logged in full, so the same PHP error from every
    /// slot and attempt is not printed again and again.
    logged_boot_error: Option<String>,
    pm: pm::PmState,
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

/// Where and how the pool runs its workers.
pub struct PoolConfig {
    pub spec: Arc<WorkerSpec>,
    /// The public port of each slot, for status only.
    pub slot_ports: Vec<u16>,
    pub max_queue: usize,
    pub queue_timeout: Duration,
    pub max_surge: usize,
    pub limits: Limits,
    /// `--max-execution-time`, which also bounds a worker's terminate work.
    pub max_execution_time: Option<Duration>,
    /// Debug mode: where files workers report as included go.
    pub included_files: Option<mpsc::UnboundedSender<Vec<PathBuf>>>,
    /// The process manager: static, dynamic or ondemand.
    pub pm: PmSettings,
    /// The master's shutdown phase.
    pub shutdown: ShutdownWatch,
}

impl Pool {
    /// Creates the pool and starts one task per slot. The returned handles
    /// end when the slots have stopped (after `stop_all`).
    pub fn start(config: PoolConfig) -> (Arc<Pool>, Vec<tokio::task::JoinHandle<()>>) {
        let (pool, receivers) = Pool::new(
            &config.slot_ports,
            config.max_queue,
            config.queue_timeout,
            config.max_surge,
            config.included_files.clone(),
            config.pm.clone(),
            config.shutdown.clone(),
        );
        let initial = pool.lock().slots.first().map(|s| s.state);
        if pool.is_elastic() {
            // A dynamic pool's first spare workers.
            pool.demand(&mut pool.lock());
            tokio::spawn(pm::maintain(Arc::downgrade(&pool), config.pm.idle_timeout));
        }
        let tasks = receivers
            .into_iter()
            .enumerate()
            .map(|(slot, rx)| {
                let task = SlotTask::new(
                    pool.clone(),
                    slot,
                    config.spec.clone(),
                    config.limits.clone(),
                    rx,
                    initial == Some(SlotState::Empty),
                );
                tokio::spawn(task.run())
            })
            .collect();
        (pool, tasks)
    }

    /// The pool's bookkeeping alone, with the receiving end of each slot's
    /// command channel: `start` gives those to the slot tasks, the unit
    /// tests play the slot tasks' part themselves.
    fn new(
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
            .map(|(slot, &port)| Slot {
                state: initial,
                generation: 0,
                conn: None,
                leased: false,
                draining: Vec::new(),
                boot_failing: false,
                retiring: false,
                idle_since: None,
                waking: false,
                status: SlotStatus {
                    slot,
                    port,
                    state: initial,
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
                },
            })
            .collect();
        let pool = Arc::new(Pool {
            shared: Mutex::new(Shared {
                slots,
                idle: VecDeque::new(),
                waiters: VecDeque::new(),
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

    /// Sends a command to a slot's task, waiting for room in its queue.
    pub async fn send(&self, slot: usize, command: SlotCommand) -> bool {
        match self.commands.get(slot) {
            Some(tx) => tx.send(command).is_ok(),
            None => false,
        }
    }

    /// Takes an idle worker (any, or the given slot's), waiting in the FIFO
    /// queue when none is idle.
    pub async fn acquire(self: &Arc<Self>, slot: Option<usize>) -> Result<Lease, AcquireError> {
        let (id, mut rx) = {
            let mut shared = self.lock();
            let found = match slot {
                None => shared.idle.pop_front(),
                Some(s) => shared
                    .idle
                    .iter()
                    .position(|&i| i == s)
                    .and_then(|pos| shared.idle.remove(pos)),
            };
            if let Some(s) = found {
                return Ok(self.lease_idle(&mut shared, s));
            }
            if shared.cannot_serve(slot) {
                return Err(AcquireError::NoWorkers);
            }
            if shared.waiters.len() >= self.max_queue {
                return Err(AcquireError::QueueFull);
            }
            let id = shared.next_waiter;
            shared.next_waiter += 1;
            let (tx, rx) = oneshot::channel();
            // Every worker is busy and no slot is left to start another:
            // php-fpm's "max children reached".
            let maxed = shared.idle.is_empty() && !Self::has_room(&shared);
            shared.waiters.push_back(Waiter { id, slot, tx });
            self.fpm.queued(shared.waiters.len(), maxed);
            self.demand(&mut shared);
            (id, rx)
        };
        // Leaves the queue when the request gives up or its client goes.
        let _guard = WaiterGuard { pool: self, id };
        match tokio::time::timeout(self.queue_timeout, &mut rx).await {
            Ok(Ok(lease)) => lease,
            Ok(Err(_)) => Err(AcquireError::ShuttingDown),
            Err(_) => {
                self.remove_waiter(id);
                // A worker may have been handed over just as time ran out.
                rx.try_recv().unwrap_or(Err(AcquireError::Timeout))
            }
        }
    }

    fn remove_waiter(&self, id: u64) {
        let mut shared = self.lock();
        shared.waiters.retain(|w| w.id != id);
    }

    /// Marks slot `s` (which must be idle with a connection) busy and leases it.
    fn lease_idle(self: &Arc<Self>, shared: &mut Shared, s: usize) -> Lease {
        let slot = &mut shared.slots[s];
        transition(slot, SlotState::Busy);
        slot.leased = true;
        slot.idle_since = None;
        self.fpm.leased();
        Lease {
            pool: self.clone(),
            slot: s,
            generation: slot.generation,
            conn: slot.conn.take(),
            sent: false,
            completed: false,
            retire: false,
            memory: None,
        }
    }

    /// Gives the now idle slot `s` to the first queued request that can
    /// take it, or puts it on the idle list.
    fn hand_over(self: &Arc<Self>, shared: &mut Shared, s: usize) {
        if shared.slots[s].state != SlotState::Ready {
            transition(&mut shared.slots[s], SlotState::Ready);
        }
        while let Some(pos) = shared
            .waiters
            .iter()
            .position(|w| w.slot.is_none() || w.slot == Some(s))
        {
            let Some(waiter) = shared.waiters.remove(pos) else {
                break;
            };
            let lease = self.lease_idle(shared, s);
            match waiter.tx.send(Ok(lease)) {
                Ok(()) => return,
                Err(Ok(mut lease)) => {
                    // That client left; take the worker back unused.
                    let conn = lease.conn.take();
                    let slot = &mut shared.slots[s];
                    slot.conn = conn;
                    slot.leased = false;
                    transition(slot, SlotState::Ready);
                }
                Err(Err(_)) => {}
            }
        }
        shared.slots[s].idle_since = Some(std::time::Instant::now());
        shared.idle.push_back(s);
    }

    /// Takes back the worker of `lease`, which is being dropped, with its
    /// connection: reusable if the response was read to its end (or
    /// nothing was sent).
    fn release(self: &Arc<Self>, lease: &Lease, conn: FrameConn) {
        let (s, generation, sent, retire) =
            (lease.slot, lease.generation, lease.sent, lease.retire);
        let reusable = lease.completed || !sent;
        let memory = lease.memory;
        let mut shared = self.lock();
        let slot = &mut shared.slots[s];
        if sent {
            slot.status.requests += 1;
        }
        if let Some((memory, peak)) = memory.filter(|_| slot.generation == generation) {
            slot.status.memory_bytes = memory;
            slot.status.peak_memory_bytes = peak;
        }
        if let Some(pos) = slot.draining.iter().position(|(g, _)| *g == generation) {
            // A replaced worker finished its last request.
            let (_, done) = slot.draining.swap_remove(pos);
            let _ = done.send(());
            return;
        }
        if slot.generation != generation || slot.state != SlotState::Busy {
            return;
        }
        slot.leased = false;
        slot.status.current_request = None;
        if sent {
            slot.status.worker_requests += 1;
        }
        if retire {
            slot.retiring = true;
        }
        if reusable && !conn.is_closed() {
            // The exchange read the worker's `Ready` before giving the
            // lease back: the worker is idle.
            slot.conn = Some(conn);
            self.idle_again(&mut shared, s);
        } else {
            // The worker may be fine but this connection is not; the slot
            // stays busy until its task has a new one.
            drop(shared);
            self.command(s, SlotCommand::ConnectionBroke { generation });
        }
    }

    /// Slot `s`'s worker finished a request: it takes the next one, or,
    /// when it is retiring, waits for its replacement.
    fn idle_again(self: &Arc<Self>, shared: &mut Shared, s: usize) {
        let slot = &mut shared.slots[s];
        if slot.retiring {
            if slot.state != SlotState::Draining {
                transition(slot, SlotState::Draining);
            }
        } else {
            self.hand_over(shared, s);
        }
    }

    /// Worker `generation` reached a recycle limit: it takes no request
    /// after the one it may be serving, until its replacement takes over.
    pub(crate) fn retire(&self, s: usize, generation: u64) {
        let mut shared = self.lock();
        if shared.slots[s].generation != generation {
            return;
        }
        shared.slots[s].retiring = true;
        if shared.slots[s].state == SlotState::Ready {
            shared.idle.retain(|&i| i != s);
            transition(&mut shared.slots[s], SlotState::Draining);
        }
    }

    /// The replacement of retiring worker `generation` failed to boot: the
    /// worker serves on rather than leave the slot without one.
    pub(crate) fn keep_serving(self: &Arc<Self>, s: usize, generation: u64) {
        let mut shared = self.lock();
        let slot = &mut shared.slots[s];
        if slot.generation != generation || !slot.retiring {
            return;
        }
        slot.retiring = false;
        if slot.state == SlotState::Draining {
            self.hand_over(&mut shared, s);
        }
    }

    pub(crate) fn set_state(&self, s: usize, generation: u64, next: SlotState) {
        let mut shared = self.lock();
        let slot = &mut shared.slots[s];
        if slot.generation == generation && slot.state != next {
            transition(slot, next);
        }
    }

    /// A cold boot begins (no worker serves the slot).
    pub(crate) fn worker_starting(&self, s: usize, generation: u64) {
        let mut shared = self.lock();
        let slot = &mut shared.slots[s];
        slot.generation = generation;
        slot.conn = None;
        slot.leased = false;
        slot.retiring = false;
        slot.waking = false;
        transition(slot, SlotState::Starting);
        slot.status.new_worker(None);
    }

    /// Worker `generation` is (again) connected and idle.
    pub(crate) fn worker_ready(
        self: &Arc<Self>,
        s: usize,
        generation: u64,
        pid: u32,
        conn: FrameConn,
    ) {
        let mut shared = self.lock();
        let slot = &mut shared.slots[s];
        if slot.generation != generation {
            return;
        }
        slot.status.pid = Some(pid);
        slot.conn = Some(conn);
        slot.boot_failing = false;
        shared.ever_ready = true;
        self.idle_again(&mut shared, s);
    }

    /// Switches slot `s` to a booted replacement in one step. The returned
    /// receiver fires once the replaced worker has no request in flight.
    pub(crate) fn swap(
        self: &Arc<Self>,
        s: usize,
        generation: u64,
        pid: u32,
        conn: FrameConn,
    ) -> oneshot::Receiver<()> {
        let (done_tx, done_rx) = oneshot::channel();
        let mut shared = self.lock();
        shared.idle.retain(|&i| i != s);
        let slot = &mut shared.slots[s];
        if slot.leased {
            slot.draining.push((slot.generation, done_tx));
        } else {
            let _ = done_tx.send(());
        }
        if !matches!(
            slot.state,
            SlotState::Ready | SlotState::Busy | SlotState::Starting | SlotState::Draining
        ) {
            transition(slot, SlotState::Starting);
        }
        slot.generation = generation;
        slot.leased = false;
        slot.conn = Some(conn);
        slot.status.new_worker(Some(pid));
        slot.status.replacement_pid = None;
        slot.boot_failing = false;
        slot.retiring = false;
        shared.ever_ready = true;
        self.hand_over(&mut shared, s);
        done_rx
    }

    /// Worker `generation` ended; `next` is the slot's state from now on.
    pub(crate) fn worker_gone(
        &self,
        s: usize,
        generation: u64,
        reason: ExitReason,
        exit: String,
        next: SlotState,
    ) {
        let mut shared = self.lock();
        let slot = &mut shared.slots[s];
        if slot.generation != generation {
            return;
        }
        shared.idle.retain(|&i| i != s);
        let slot = &mut shared.slots[s];
        slot.conn = None;
        slot.leased = false;
        slot.status.pid = None;
        slot.status.current_request = None;
        if reason != ExitReason::Shutdown {
            count_restart(&mut slot.status, reason);
        }
        slot.status.last_reason = Some(reason);
        slot.status.last_exit = Some(exit);
        if slot.state != next {
            transition(slot, next);
        }
    }

    /// Worker `generation`'s script restarted in its process (native
    /// runtime) after a request ended with `reason`: counted as a restart.
    pub(crate) fn script_restarted(&self, s: usize, generation: u64, reason: ExitReason) {
        let mut shared = self.lock();
        let slot = &mut shared.slots[s];
        if slot.generation == generation {
            count_restart(&mut slot.status, reason);
            slot.status.last_reason = Some(reason);
        }
    }

    /// A request of slot `s` ended with an uncaught exception.
    pub(crate) fn uncaught_exception(&self, s: usize) {
        self.lock().slots[s].status.uncaught_exceptions += 1;
    }

    /// A replaced worker ended (it no longer served the slot).
    pub(crate) fn replaced_worker_gone(
        &self,
        s: usize,
        pid: u32,
        reason: ExitReason,
        exit: String,
    ) {
        let mut shared = self.lock();
        let slot = &mut shared.slots[s];
        slot.status.draining_pids.retain(|&p| p != pid);
        count_restart(&mut slot.status, reason);
        slot.status.last_reason = Some(reason);
        slot.status.last_exit = Some(exit);
    }

    pub(crate) fn set_surge(&self, s: usize, replacement: Option<u32>, draining: Option<u32>) {
        let mut shared = self.lock();
        let status = &mut shared.slots[s].status;
        status.replacement_pid = replacement;
        if let Some(pid) = draining {
            status.draining_pids.push(pid);
        }
    }

    /// Passes on files a worker reported as included (debug mode).
    pub(crate) fn note_included(&self, files: Vec<PathBuf>) {
        if let Some(tx) = &self.included_files {
            let _ = tx.send(files);
        }
    }

    pub(crate) fn record_error(&self, s: usize, message: Option<String>) {
        self.lock().slots[s].status.last_error = message;
    }

    /// Slot `s` failed to boot a worker with PHP's error `message`. When
    /// that leaves no slot able to serve, the queued requests are answered
    /// at once. Returns whether the message differs from the last one
    /// logged in full (the caller logs it in full only then).
    pub(crate) fn boot_failed(&self, s: usize, message: &str) -> bool {
        let mut shared = self.lock();
        shared.slots[s].boot_failing = true;
        shared.slots[s].status.last_error = Some(message.to_string());
        if shared.cannot_serve(None) {
            for waiter in std::mem::take(&mut shared.waiters) {
                let _ = waiter.tx.send(Err(AcquireError::NoWorkers));
            }
        }
        if shared.logged_boot_error.as_deref() == Some(message) {
            return false;
        }
        shared.logged_boot_error = Some(message.to_string());
        true
    }

    /// Whether a worker has been ready at least once.
    pub fn ever_ready(&self) -> bool {
        self.lock().ever_ready
    }

    /// The last PHP boot error of any slot, if one failed.
    pub fn last_boot_error(&self) -> Option<String> {
        self.lock().logged_boot_error.clone()
    }

    pub(crate) fn record_memory(
        &self,
        s: usize,
        generation: u64,
        memory: u64,
        peak: u64,
        rss: Option<u64>,
    ) {
        let mut shared = self.lock();
        let slot = &mut shared.slots[s];
        if slot.generation == generation {
            slot.status.memory_bytes = memory;
            slot.status.peak_memory_bytes = peak;
            if let Some(rss) = rss {
                slot.status.rss_bytes = rss;
            }
        }
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
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or_default();
                let seconds = now.saturating_sub(r.started_at_ms) as f64 / 1000.0;
                format!("{} {} (running {seconds:.1}s)", r.method, r.path)
            }
            None => "a request".to_string(),
        }
    }

    /// A snapshot of every slot, for `/status`.
    pub fn status(&self) -> Vec<SlotStatus> {
        self.lock().slots.iter().map(|s| s.status.clone()).collect()
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
    pub async fn stop_all(&self) {
        for tx in &self.commands {
            let _ = tx.send(SlotCommand::Stop);
        }
    }
}

/// Sets a slot's state, checking the transition table. An illegal
/// transition is a bug: it is logged (and fails debug builds' tests).
fn transition(slot: &mut Slot, next: SlotState) {
    if !slot.state.can_become(next) {
        tracing::error!(
            "bug: slot {} went from {:?} to {:?}, which is not an allowed transition",
            slot.status.slot,
            slot.state,
            next
        );
        debug_assert!(
            false,
            "illegal slot transition {:?} -> {:?}",
            slot.state, next
        );
    }
    slot.state = next;
    slot.status.state = next;
}

fn count_restart(status: &mut SlotStatus, reason: ExitReason) {
    status.restarts += 1;
    *status
        .restarts_by_reason
        .entry(reason.to_string())
        .or_default() += 1;
}

impl Shared {
    /// Whether no worker of the given slot (or of any slot) can serve and
    /// each one's last boot failed: a request would wait for nothing.
    fn cannot_serve(&self, slot: Option<usize>) -> bool {
        let mut slots = self.slots.iter().enumerate();
        slots.all(|(i, s)| {
            slot.is_some_and(|want| want != i) || (!s.state.is_serving() && s.boot_failing)
        })
    }
}

struct WaiterGuard<'a> {
    pool: &'a Pool,
    id: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.pool.remove_waiter(self.id);
    }
}

#[cfg(test)]
mod tests;
