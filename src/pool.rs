//! Worker slots: the slot state machine, one task per slot that owns its
//! worker process, and the dispatcher that hands idle workers to requests.
//!
//! # Theory of operation
//!
//! Each slot has a task (`run_slot`) that owns the slot's `Worker`: it
//! spawns it, waits for `ready`, connects to its private socket, and tells
//! the dispatcher the slot is ready. It then watches the process and its
//! control channel until the worker exits, and starts a new one (after a
//! backoff when workers keep failing). Other parts of ppm never touch the
//! process; they send the task `SlotCommand`s.
//!
//! The dispatcher (`Pool`) holds, under one short lock, each slot's state
//! and its idle connection, the idle list and the FIFO queue of waiting
//! requests. A request takes a `Lease` on an idle worker: round-robin,
//! because released workers go to the back of the idle list. When the
//! lease is dropped the worker goes to the first queued request it can
//! serve, or back to the idle list. A worker serves one request at a time,
//! so the lease is exclusive use of its connection.
//!
//! Every state change goes through `SlotState::can_become`, the one table
//! of allowed transitions.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::worker::{Listen, Worker, WorkerEvent, WorkerSpec};

/// The request body type sent to workers: always whole, with a length.
pub type WorkerBody = Full<Bytes>;
/// A connection to one worker's private socket.
pub type WorkerConn = SendRequest<WorkerBody>;

/// Backoff after the first failed boot; doubles per failure.
const BACKOFF_START: Duration = Duration::from_millis(500);
/// Longest wait between two boot attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Consecutive failures after which a slot is reported `failed`.
const FAILED_AFTER: u32 = 5;
/// A worker that exits sooner than this after becoming ready counts as a
/// failure for backoff purposes, so a crash loop cannot spin.
const MIN_HEALTHY_RUN: Duration = Duration::from_secs(2);
/// How long a stopping worker gets to exit by itself before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The state of a worker slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotState {
    /// A worker is booting.
    Starting,
    /// The worker is idle and can take a request.
    Ready,
    /// The worker is serving a request (or its connection is being renewed).
    Busy,
    /// The worker finishes its current request, then stops.
    Draining,
    /// The worker is being stopped.
    Stopping,
    /// No worker; one will be started.
    Exited,
    /// Waiting before the next boot attempt after a failure.
    Backoff,
    /// Several boot attempts in a row failed; still retried at the longest backoff.
    Failed,
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
                | (
                    Starting | Ready | Busy | Draining | Backoff | Failed | Exited,
                    Stopping
                )
                | (Ready | Busy | Draining | Stopping, Exited)
                | (Exited, Backoff)
        )
    }

    /// Whether a worker in this state counts as serving capacity.
    pub fn is_serving(self) -> bool {
        matches!(self, SlotState::Ready | SlotState::Busy)
    }
}

/// Commands to a slot's task.
#[derive(Debug)]
pub enum SlotCommand {
    /// The connection to worker `generation` broke; open a new one.
    Reconnect { generation: u64 },
    /// Stop the worker and end the task.
    Stop,
}

/// What `/status` shows about one slot.
#[derive(Debug, Clone, Serialize)]
pub struct SlotStatus {
    pub slot: usize,
    pub port: u16,
    pub state: SlotState,
    pub pid: Option<u32>,
    pub socket: Option<PathBuf>,
    pub requests: u64,
    pub memory_bytes: u64,
    pub peak_memory_bytes: u64,
    /// Unix time (seconds) the current worker was started.
    pub started_at: Option<u64>,
    pub restarts: u64,
    pub last_exit: Option<String>,
    pub last_error: Option<String>,
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
}

struct Slot {
    state: SlotState,
    generation: u64,
    conn: Option<WorkerConn>,
    status: SlotStatus,
}

struct Waiter {
    id: u64,
    slot: Option<usize>,
    tx: oneshot::Sender<Lease>,
}

struct Shared {
    slots: Vec<Slot>,
    idle: VecDeque<usize>,
    waiters: VecDeque<Waiter>,
    next_waiter: u64,
}

/// The worker pool: slot states, idle workers and the request queue.
pub struct Pool {
    shared: Mutex<Shared>,
    commands: Vec<mpsc::Sender<SlotCommand>>,
    max_queue: usize,
    queue_timeout: Duration,
    closed: AtomicBool,
}

/// Where the pool runs its workers.
pub struct PoolConfig {
    pub spec: Arc<WorkerSpec>,
    pub run_dir: PathBuf,
    /// The public port of each slot, for status only.
    pub slot_ports: Vec<u16>,
    pub max_queue: usize,
    pub queue_timeout: Duration,
    pub bootstrap_timeout: Duration,
}

impl Pool {
    /// Creates the pool and starts one task per slot. The returned handles
    /// end when the slots have stopped (after `stop_all`).
    pub fn start(config: PoolConfig) -> (Arc<Pool>, Vec<tokio::task::JoinHandle<()>>) {
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in &config.slot_ports {
            let (tx, rx) = mpsc::channel(16);
            senders.push(tx);
            receivers.push(rx);
        }
        let slots = config
            .slot_ports
            .iter()
            .enumerate()
            .map(|(slot, &port)| Slot {
                state: SlotState::Exited,
                generation: 0,
                conn: None,
                status: SlotStatus {
                    slot,
                    port,
                    state: SlotState::Exited,
                    pid: None,
                    socket: None,
                    requests: 0,
                    memory_bytes: 0,
                    peak_memory_bytes: 0,
                    started_at: None,
                    restarts: 0,
                    last_exit: None,
                    last_error: None,
                },
            })
            .collect();
        let pool = Arc::new(Pool {
            shared: Mutex::new(Shared {
                slots,
                idle: VecDeque::new(),
                waiters: VecDeque::new(),
                next_waiter: 0,
            }),
            commands: senders,
            max_queue: config.max_queue,
            queue_timeout: config.queue_timeout,
            closed: AtomicBool::new(false),
        });
        let tasks = receivers
            .into_iter()
            .enumerate()
            .map(|(slot, rx)| {
                let task = SlotTask {
                    pool: pool.clone(),
                    slot,
                    spec: config.spec.clone(),
                    run_dir: config.run_dir.clone(),
                    bootstrap_timeout: config.bootstrap_timeout,
                    commands: rx,
                };
                tokio::spawn(task.run())
            })
            .collect();
        (pool, tasks)
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
        // A panic while holding the lock leaves consistent data: every
        // critical section completes its updates before any call that
        // could panic.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes an idle worker (any, or the given slot's), waiting in the FIFO
    /// queue when none is idle.
    pub async fn acquire(self: &Arc<Self>, slot: Option<usize>) -> Result<Lease, AcquireError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(AcquireError::ShuttingDown);
        }
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
            if shared.waiters.len() >= self.max_queue {
                return Err(AcquireError::QueueFull);
            }
            let id = shared.next_waiter;
            shared.next_waiter += 1;
            let (tx, rx) = oneshot::channel();
            shared.waiters.push_back(Waiter { id, slot, tx });
            (id, rx)
        };
        // Leaves the queue when the request gives up or its client goes.
        let _guard = WaiterGuard { pool: self, id };
        match tokio::time::timeout(self.queue_timeout, &mut rx).await {
            Ok(Ok(lease)) => Ok(lease),
            Ok(Err(_)) => Err(AcquireError::ShuttingDown),
            Err(_) => {
                self.remove_waiter(id);
                // A worker may have been handed over just as time ran out.
                rx.try_recv().map_err(|_| AcquireError::Timeout)
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
        Lease {
            pool: self.clone(),
            slot: s,
            generation: slot.generation,
            conn: slot.conn.take(),
            sent: false,
            completed: false,
        }
    }

    /// Gives the now idle slot `s` to the first queued request that can
    /// take it, or puts it on the idle list.
    fn hand_over(self: &Arc<Self>, shared: &mut Shared, s: usize) {
        transition(&mut shared.slots[s], SlotState::Ready);
        while let Some(pos) = shared
            .waiters
            .iter()
            .position(|w| w.slot.is_none() || w.slot == Some(s))
        {
            let Some(waiter) = shared.waiters.remove(pos) else {
                break;
            };
            let lease = self.lease_idle(shared, s);
            match waiter.tx.send(lease) {
                Ok(()) => return,
                Err(mut lease) => {
                    // That client left; take the worker back unused.
                    let conn = lease.conn.take();
                    let slot = &mut shared.slots[s];
                    slot.conn = conn;
                    transition(slot, SlotState::Ready);
                }
            }
        }
        shared.idle.push_back(s);
    }

    fn release(
        self: &Arc<Self>,
        s: usize,
        generation: u64,
        conn: WorkerConn,
        reusable: bool,
        sent: bool,
    ) {
        let mut shared = self.lock();
        let slot = &mut shared.slots[s];
        if slot.generation != generation || slot.state != SlotState::Busy {
            return;
        }
        if sent {
            slot.status.requests += 1;
        }
        if reusable && !conn.is_closed() {
            slot.conn = Some(conn);
            self.hand_over(&mut shared, s);
        } else {
            // The worker may be fine but this connection is not; the slot
            // stays busy until its task has a new one.
            drop(shared);
            let _ = self.commands[s].try_send(SlotCommand::Reconnect { generation });
        }
    }

    fn set_state(&self, s: usize, generation: u64, next: SlotState) {
        let mut shared = self.lock();
        let slot = &mut shared.slots[s];
        if slot.generation == generation {
            transition(slot, next);
        }
    }

    fn worker_starting(&self, s: usize, generation: u64, socket: PathBuf) {
        let mut shared = self.lock();
        let slot = &mut shared.slots[s];
        slot.generation = generation;
        slot.conn = None;
        transition(slot, SlotState::Starting);
        slot.status.pid = None;
        slot.status.socket = Some(socket);
        slot.status.memory_bytes = 0;
        slot.status.peak_memory_bytes = 0;
        slot.status.started_at = Some(unix_now());
    }

    fn worker_ready(self: &Arc<Self>, s: usize, generation: u64, pid: u32, conn: WorkerConn) {
        let mut shared = self.lock();
        let slot = &mut shared.slots[s];
        if slot.generation != generation {
            return;
        }
        slot.status.pid = Some(pid);
        slot.conn = Some(conn);
        self.hand_over(&mut shared, s);
    }

    fn worker_gone(&self, s: usize, generation: u64, exit: String, next: SlotState) {
        let mut shared = self.lock();
        shared.idle.retain(|&i| i != s);
        let slot = &mut shared.slots[s];
        if slot.generation != generation {
            return;
        }
        slot.conn = None;
        slot.status.pid = None;
        if slot.state != SlotState::Stopping {
            slot.status.restarts += 1;
        }
        slot.status.last_exit = Some(exit);
        if slot.state != next {
            transition(slot, next);
        }
    }

    fn record_error(&self, s: usize, message: String) {
        self.lock().slots[s].status.last_error = Some(message);
    }

    fn record_memory(&self, s: usize, generation: u64, memory: u64, peak: u64) {
        let mut shared = self.lock();
        let slot = &mut shared.slots[s];
        if slot.generation == generation {
            slot.status.memory_bytes = memory;
            slot.status.peak_memory_bytes = peak;
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

    /// Whether at least one worker can serve.
    pub fn any_ready(&self) -> bool {
        self.lock().slots.iter().any(|s| s.state.is_serving())
    }

    /// Refuses new requests; queued and running ones still finish.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Tells every slot task to stop its worker and end.
    pub async fn stop_all(&self) {
        for tx in &self.commands {
            let _ = tx.send(SlotCommand::Stop).await;
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
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

/// Exclusive use of one worker for one request. Dropping it returns the
/// worker to the pool: reusable if the response was read to its end (or
/// nothing was sent), otherwise its connection is renewed first.
pub struct Lease {
    pool: Arc<Pool>,
    slot: usize,
    generation: u64,
    conn: Option<WorkerConn>,
    sent: bool,
    completed: bool,
}

impl Lease {
    /// The slot this worker serves.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// The worker's connection; using it marks the request as sent.
    pub fn conn(&mut self) -> Option<&mut WorkerConn> {
        self.sent = true;
        self.conn.as_mut()
    }

    /// The response has been read to its end: the connection can be reused.
    pub fn complete(&mut self) {
        self.completed = true;
    }

    /// Nothing reached the worker (its connection was already closed): give
    /// the worker back for a new connection without counting a request.
    pub fn unsent(&mut self) {
        self.sent = false;
        self.completed = false;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let reusable = self.completed || !self.sent;
            self.pool
                .release(self.slot, self.generation, conn, reusable, self.sent);
        }
    }
}

/// The task that owns one slot's worker.
struct SlotTask {
    pool: Arc<Pool>,
    slot: usize,
    spec: Arc<WorkerSpec>,
    run_dir: PathBuf,
    bootstrap_timeout: Duration,
    commands: mpsc::Receiver<SlotCommand>,
}

/// How a worker's boot ended.
enum Boot {
    Ready { pid: u32, conn: WorkerConn },
    Failed(String),
    Stop,
}

/// How a running worker's life ended.
enum Life {
    Exited(String),
    Stop,
}

impl SlotTask {
    fn label(&self) -> String {
        format!("slot {}", self.slot)
    }

    async fn run(mut self) {
        let mut generation = 0u64;
        let mut failures = 0u32;
        let label = self.label();
        loop {
            generation += 1;
            let socket = self
                .run_dir
                .join(format!("w{}-{generation}.sock", self.slot));
            let _ = std::fs::remove_file(&socket);
            self.pool
                .worker_starting(self.slot, generation, socket.clone());
            tracing::info!("[{label}] starting worker");
            let listen = Listen::Unix(socket.clone());
            let (mut worker, mut events) =
                match Worker::spawn(&self.spec, &listen, self.slot, label.clone()).await {
                    Ok(pair) => pair,
                    Err(err) => {
                        let message = format!("cannot run {}: {err}", self.spec.php.path.display());
                        if self.fail_and_wait(generation, &mut failures, message).await {
                            return;
                        }
                        continue;
                    }
                };
            let (pid, conn) = match self.boot(&mut worker, &mut events, &socket).await {
                Boot::Ready { pid, conn } => (pid, conn),
                Boot::Stop => {
                    self.stop_worker(generation, &mut worker).await;
                    return;
                }
                Boot::Failed(message) => {
                    worker.kill_group();
                    let exit = worker.wait().await;
                    tracing::debug!("[{label}] failed worker ended: {exit}");
                    if self.fail_and_wait(generation, &mut failures, message).await {
                        return;
                    }
                    continue;
                }
            };
            tracing::info!("[{label}] worker {pid} ready");
            let ready_at = Instant::now();
            self.pool.worker_ready(self.slot, generation, pid, conn);
            match self
                .serve(generation, &mut worker, &mut events, &socket)
                .await
            {
                Life::Stop => {
                    self.stop_worker(generation, &mut worker).await;
                    return;
                }
                Life::Exited(exit) => {
                    let _ = std::fs::remove_file(&socket);
                    tracing::warn!("[{label}] worker {pid} exited ({exit}); starting a new one");
                    if ready_at.elapsed() < MIN_HEALTHY_RUN {
                        failures += 1;
                        self.pool
                            .worker_gone(self.slot, generation, exit, SlotState::Exited);
                        if self.wait_backoff(generation, failures, false).await {
                            return;
                        }
                    } else {
                        failures = 0;
                        self.pool
                            .worker_gone(self.slot, generation, exit, SlotState::Exited);
                    }
                }
            }
        }
    }

    /// Waits for the worker's `ready`, then connects to its socket.
    async fn boot(
        &mut self,
        worker: &mut Worker,
        events: &mut mpsc::Receiver<WorkerEvent>,
        socket: &std::path::Path,
    ) -> Boot {
        let deadline = tokio::time::sleep(self.bootstrap_timeout);
        tokio::pin!(deadline);
        let pid = loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(WorkerEvent::Ready { pid }) => break pid,
                    Some(WorkerEvent::BootstrapError { message }) => return Boot::Failed(message),
                    Some(_) => {}
                    None => {
                        // The control channel closed: the worker is exiting.
                        let exit = worker.wait().await;
                        return Boot::Failed(self.explain(worker, &format!("the worker exited during bootstrap ({exit})")));
                    }
                },
                exit = worker.wait() => {
                    return Boot::Failed(self.explain(worker, &format!("the worker exited during bootstrap ({exit})")));
                }
                command = self.commands.recv() => match command {
                    Some(SlotCommand::Stop) | None => return Boot::Stop,
                    Some(SlotCommand::Reconnect { .. }) => {}
                },
                _ = &mut deadline => {
                    return Boot::Failed(self.explain(worker, &format!(
                        "the worker did not become ready within {:?} (--bootstrap-timeout)",
                        self.bootstrap_timeout
                    )));
                }
            }
        };
        match connect(socket).await {
            Ok(conn) => Boot::Ready { pid, conn },
            Err(err) => Boot::Failed(format!(
                "cannot connect to the worker's socket {}: {err}",
                socket.display()
            )),
        }
    }

    /// Adds the worker's last output lines to a failure message: a PHP error
    /// printed before the runtime could report it is the useful part.
    fn explain(&self, worker: &Worker, what: &str) -> String {
        let output = worker.recent_output();
        if output.is_empty() {
            what.to_string()
        } else {
            format!("{what}; its last output:\n{output}")
        }
    }

    /// Watches a ready worker until it exits or the slot is told to stop.
    async fn serve(
        &mut self,
        generation: u64,
        worker: &mut Worker,
        events: &mut mpsc::Receiver<WorkerEvent>,
        socket: &std::path::Path,
    ) -> Life {
        let mut events_open = true;
        loop {
            tokio::select! {
                event = events.recv(), if events_open => match event {
                    Some(WorkerEvent::RequestDone { memory, peak_memory }) => {
                        self.pool.record_memory(self.slot, generation, memory, peak_memory);
                    }
                    Some(WorkerEvent::Exiting { reason }) => {
                        tracing::info!("[{}] worker is exiting: {reason}", self.label());
                    }
                    Some(other) => tracing::debug!("[{}] ignoring {other:?}", self.label()),
                    None => events_open = false,
                },
                exit = worker.wait() => return Life::Exited(exit),
                command = self.commands.recv() => match command {
                    Some(SlotCommand::Stop) | None => return Life::Stop,
                    Some(SlotCommand::Reconnect { generation: g }) if g == generation => {
                        match connect(socket).await {
                            Ok(conn) => self.pool.worker_ready(self.slot, generation, worker.pid(), conn),
                            Err(err) => {
                                // The worker is dying or wedged: replace it.
                                tracing::warn!("[{}] cannot reconnect to worker ({err}); killing it", self.label());
                                worker.kill_group();
                            }
                        }
                    }
                    Some(SlotCommand::Reconnect { .. }) => {}
                },
            }
        }
    }

    /// Records a failed boot and waits out the backoff. Returns true when
    /// the slot was told to stop meanwhile.
    async fn fail_and_wait(
        &mut self,
        generation: u64,
        failures: &mut u32,
        message: String,
    ) -> bool {
        *failures += 1;
        tracing::error!(
            "[{}] worker failed to boot (attempt {}): {message}",
            self.label(),
            failures
        );
        self.pool.record_error(self.slot, message);
        let next = if *failures >= FAILED_AFTER {
            SlotState::Failed
        } else {
            SlotState::Backoff
        };
        self.pool.set_state(self.slot, generation, next);
        self.wait_backoff(generation, *failures, true).await
    }

    /// Sleeps for the backoff of `failures` consecutive failures. Returns
    /// true when the slot was told to stop meanwhile.
    async fn wait_backoff(
        &mut self,
        generation: u64,
        failures: u32,
        already_in_backoff: bool,
    ) -> bool {
        if !already_in_backoff {
            self.pool
                .set_state(self.slot, generation, SlotState::Backoff);
        }
        let delay = backoff(failures);
        tracing::info!(
            "[{}] next attempt in {:.1}s",
            self.label(),
            delay.as_secs_f64()
        );
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return false,
                command = self.commands.recv() => match command {
                    Some(SlotCommand::Stop) | None => {
                        self.pool.set_state(self.slot, generation, SlotState::Stopping);
                        self.pool.set_state(self.slot, generation, SlotState::Exited);
                        return true;
                    }
                    Some(SlotCommand::Reconnect { .. }) => {}
                },
            }
        }
    }

    async fn stop_worker(&mut self, generation: u64, worker: &mut Worker) {
        self.pool
            .set_state(self.slot, generation, SlotState::Stopping);
        let exit = worker.stop(STOP_GRACE).await;
        tracing::info!(
            "[{}] worker {} stopped ({exit})",
            self.label(),
            worker.pid()
        );
        self.pool.worker_gone(
            self.slot,
            generation,
            format!("shutdown: {exit}"),
            SlotState::Exited,
        );
    }
}

/// The delay before boot attempt number `failures + 1`.
fn backoff(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    BACKOFF_START.saturating_mul(factor).min(BACKOFF_MAX)
}

/// Opens an HTTP/1.1 connection to a worker's private socket.
async fn connect(socket: &std::path::Path) -> std::io::Result<WorkerConn> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        // Ends when the worker or the master closes the connection.
        let _ = connection.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;
    use SlotState::*;

    #[test]
    fn a_worker_boots_serves_and_exits() {
        for (from, to) in [
            (Exited, Starting),
            (Starting, Ready),
            (Ready, Busy),
            (Busy, Ready),
            (Busy, Exited),
        ] {
            assert!(from.can_become(to), "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn a_booting_worker_cannot_take_requests() {
        assert!(!Starting.can_become(Busy));
        assert!(!Backoff.can_become(Ready));
        assert!(!Exited.can_become(Ready));
        assert!(!Stopping.can_become(Ready));
    }

    #[test]
    fn backoff_doubles_up_to_a_limit() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(40), BACKOFF_MAX);
    }
}
