//! The task that owns one slot's workers.
//!
//! # Theory of operation
//!
//! `SlotTask::run` is the only code that starts, replaces or stops the
//! slot's PHP processes. It keeps at most three: the `current` worker that
//! serves the slot, a `replacing` one booting beside it, and replaced ones
//! finishing their last request (each owned by a small stopper task).
//!
//! Every restart is surge-first: the replacement boots beside the current
//! worker, which keeps serving; once it reports `ready`, `Pool::swap` switches the slot to it in one step; the
//! old worker finishes the request it may be serving and is then stopped.
//! If the replacement fails to boot, nothing changes for the slot and the
//! PHP error goes back to whoever asked (a rolling restart stops there).
//!
//! Only a worker that is already gone (crash, exit(), killed after a
//! timeout) is followed by a cold boot, with exponential backoff when
//! boots keep failing.
//!
//! In a dynamic or ondemand pool (`pool::pm`) a slot may also be `Empty`:
//! no worker and none wanted. It waits for `Wake` to boot one, and on
//! `Retire` stops its worker if that is still idle and becomes empty
//! again. A rolling restart has nothing to do in an empty slot: its next
//! worker loads the code as it is then.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::workers::native::conn::FrameConn;
use crate::workers::native::event::WorkerEvent;
use crate::workers::native::frames::Outcome;
use crate::workers::pool::{ExitReason, Pool, SlotCommand, SlotState};
use crate::workers::process::{Worker, WorkerSpec};

/// Backoff after the first failed boot; doubles per failure.
const BACKOFF_START: Duration = Duration::from_millis(500);
/// Longest wait between two boot attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Consecutive failures after which a slot is reported `failed`.
const FAILED_AFTER: u32 = 5;
/// A worker that crashes sooner than this after becoming ready counts as a
/// failed boot for backoff purposes, so a crash loop cannot spin.
const MIN_HEALTHY_RUN: Duration = Duration::from_secs(2);
/// How long a replaced or stopping worker gets to exit by itself.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long a worker whose connection broke gets to show it is exiting
/// before it is killed.
const BROKEN_SETTLE: Duration = Duration::from_millis(100);
/// How often a worker's RSS is read at most.
const RSS_INTERVAL: Duration = Duration::from_secs(1);
/// After a recycle whose replacement failed to boot, wait this long before
/// the next recycle attempt of that worker.
const RECYCLE_RETRY: Duration = Duration::from_secs(30);

/// When workers are recycled (built by config).
pub use crate::config::RecycleLimits as Limits;

/// A worker that is ready and serving (or was).
struct Running {
    worker: Worker,
    events: mpsc::UnboundedReceiver<WorkerEvent>,
    events_open: bool,
    generation: u64,
    pid: u32,
    ready_at: Instant,
    /// Requests it has finished, counted by the exchanges (`Recycle`).
    requests: Arc<std::sync::atomic::AtomicU64>,
    max_requests: u64,
    ttl_deadline: Option<Instant>,
    /// Why it will exit, when that is known before it does.
    exit_reason: Option<ExitReason>,
    /// A recycle is under way or may not be retried before this instant.
    recycle_blocked_until: Option<Instant>,
    last_rss: Option<Instant>,
    /// The slow request a backtrace was asked for, as it was then: the
    /// answer may arrive after the request has ended.
    slow_request: Option<String>,
}

impl Running {
    fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A booted worker and its connection.
struct Booted {
    running: Running,
    conn: FrameConn,
}

type BootFuture = Pin<Box<dyn Future<Output = Result<Booted, String>> + Send>>;

struct Replacing {
    boot: BootFuture,
    reason: ExitReason,
    replies: Vec<oneshot::Sender<Result<(), String>>>,
    /// Restart requests that arrived while a recycle was booting: that
    /// worker may have loaded the code from before a deploy, so they get a
    /// replacement of their own once it is done.
    restart_after: Option<Vec<oneshot::Sender<Result<(), String>>>>,
}

/// What happened to the current worker.
enum News {
    Event(Option<WorkerEvent>),
    Exited(String),
}

/// The task that owns one slot's workers; see the module docs.
pub(crate) struct SlotTask {
    pool: Arc<Pool>,
    slot: usize,
    spec: Arc<WorkerSpec>,
    limits: Limits,
    commands: mpsc::UnboundedReceiver<SlotCommand>,
    generation: u64,
    failures: u32,
    stoppers: Vec<JoinHandle<()>>,
    /// No worker is wanted until the process manager sends `Wake`.
    empty: bool,
}

impl SlotTask {
    pub(crate) fn new(
        pool: Arc<Pool>,
        slot: usize,
        spec: Arc<WorkerSpec>,
        limits: Limits,
        commands: mpsc::UnboundedReceiver<SlotCommand>,
        empty: bool,
    ) -> Self {
        Self {
            pool,
            slot,
            spec,
            limits,
            commands,
            generation: 0,
            failures: 0,
            stoppers: Vec::new(),
            empty,
        }
    }

    fn label(&self) -> String {
        format!("slot {}", self.slot)
    }

    pub(crate) async fn run(mut self) {
        let mut current: Option<Running> = None;
        let mut replacing: Option<Replacing> = None;
        loop {
            if current.is_none() && replacing.is_none() {
                if self.empty && !self.wait_for_wake().await {
                    break;
                }
                self.empty = false;
                match self.cold_boot().await {
                    Some(running) => current = Some(running),
                    None => break,
                }
            }
            // A replacement under way or just failed pushes the TTL back.
            let ttl_at = current.as_ref().and_then(|c| {
                c.ttl_deadline.map(|ttl| {
                    c.recycle_blocked_until
                        .map_or(ttl, |blocked| ttl.max(blocked))
                })
            });
            tokio::select! {
                news = watch(&mut current) => match news {
                    News::Event(event) => {
                        if let Some(reason) = self.on_event(&mut current, event).await {
                            self.replace(&mut current, &mut replacing, reason, None);
                        }
                    }
                    News::Exited(exit) => {
                        if let Some(gone) = current.take() {
                            if self.on_exit(gone, exit, replacing.is_some()).await {
                                break;
                            }
                        }
                    }
                },
                booted = poll_boot(&mut replacing) => {
                    let Some(Replacing { reason, replies, restart_after, .. }) = replacing.take() else { continue };
                    self.on_replacement(&mut current, booted, reason, replies);
                    if current.is_none() && self.wait_backoff(None).await {
                        break;
                    }
                    if let Some(waiting) = restart_after {
                        self.replace(&mut current, &mut replacing, ExitReason::Restart, None);
                        for reply in waiting {
                            self.replace(&mut current, &mut replacing, ExitReason::Restart, Some(reply));
                        }
                    }
                }
                command = self.commands.recv() => match command {
                    None | Some(SlotCommand::Stop) => break,
                    Some(SlotCommand::Replace { reason, reply }) => {
                        self.replace(&mut current, &mut replacing, reason, reply);
                    }
                    Some(SlotCommand::ConnectionBroke { generation }) => {
                        if let Some(exit) = self.connection_broke(&mut current, generation).await {
                            if let Some(gone) = current.take() {
                                if self.on_exit(gone, exit, replacing.is_some()).await {
                                    break;
                                }
                            }
                        }
                    }
                    Some(SlotCommand::Kill { generation, reason }) => {
                        if let Some(running) = current.as_mut().filter(|c| c.generation == generation) {
                            let request = self.pool.describe_request(self.slot);
                            let trace = backtrace_of(running).await;
                            tracing::warn!(
                                "[{}] killing worker {} ({reason}) serving {request}; PHP backtrace:\n{}",
                                self.label(),
                                running.pid,
                                trace.as_deref().unwrap_or("(the worker did not answer)")
                            );
                            running.exit_reason = Some(reason);
                            running.worker.kill_group();
                        }
                    }
                    Some(SlotCommand::Backtrace { generation }) => {
                        if let Some(running) = current.as_mut().filter(|c| c.generation == generation) {
                            running.slow_request = Some(self.pool.describe_request(self.slot));
                            running.worker.ask_backtrace();
                        }
                    }
                    Some(SlotCommand::Retire { generation }) => {
                        // Not while a replacement boots: it takes the slot next.
                        if replacing.is_none() {
                            self.retire_idle(&mut current, generation);
                        }
                    }
                    // Only an empty slot is woken.
                    Some(SlotCommand::Wake) => {}
                },
                _ = sleep_until(ttl_at) => self.replace(&mut current, &mut replacing, ExitReason::Ttl, None),
            }
        }
        self.shutdown(current, replacing).await;
    }

    /// Waits, in an empty slot, until the process manager wants a worker.
    /// Returns false when the slot was told to stop meanwhile.
    async fn wait_for_wake(&mut self) -> bool {
        loop {
            match self.commands.recv().await {
                None | Some(SlotCommand::Stop) => {
                    self.pool
                        .set_state(self.slot, self.generation, SlotState::Stopping);
                    self.pool
                        .set_state(self.slot, self.generation, SlotState::Exited);
                    return false;
                }
                Some(SlotCommand::Wake) => return true,
                // The next worker boots with the code as it is then.
                Some(SlotCommand::Replace { reply, .. }) => {
                    answer(reply.into_iter().collect(), Ok(()))
                }
                Some(
                    SlotCommand::ConnectionBroke { .. }
                    | SlotCommand::Kill { .. }
                    | SlotCommand::Backtrace { .. }
                    | SlotCommand::Retire { .. },
                ) => {}
            }
        }
    }

    /// Stops worker `generation` because it stayed idle, if it still is:
    /// the slot becomes empty. The worker stops in the background, like a
    /// replaced one, so the slot can boot again at once.
    fn retire_idle(&mut self, current: &mut Option<Running>, generation: u64) {
        if current.as_ref().is_none_or(|c| c.generation != generation)
            || !self.pool.claim_idle(self.slot, generation)
        {
            return;
        }
        let Some(mut old) = current.take() else {
            return;
        };
        tracing::info!(
            "[{}] retiring idle worker {} ({} requests served)",
            self.label(),
            old.pid,
            old.requests()
        );
        let slot = self.slot;
        self.stoppers.push(tokio::spawn(async move {
            let exit = old.worker.stop(STOP_GRACE).await;
            tracing::info!("[slot {slot}] idle worker {} stopped ({exit})", old.pid);
        }));
        self.stoppers.retain(|s| !s.is_finished());
        self.pool.worker_retired(self.slot, generation);
        self.failures = 0;
        self.empty = true;
    }

    /// Boots a worker when none serves the slot, retrying with backoff.
    /// Returns None when the slot was told to stop meanwhile.
    async fn cold_boot(&mut self) -> Option<Running> {
        let mut replies: Vec<oneshot::Sender<Result<(), String>>> = Vec::new();
        loop {
            let boot = self.boot_next(false);
            self.pool.worker_starting(self.slot, self.generation);
            tokio::pin!(boot);
            let result = loop {
                tokio::select! {
                    result = &mut boot => break result,
                    command = self.commands.recv() => match command {
                        None | Some(SlotCommand::Stop) => {
                            self.pool.set_state(self.slot, self.generation, SlotState::Stopping);
                            self.pool.set_state(self.slot, self.generation, SlotState::Exited);
                            answer(replies, Err("ppm is stopping".into()));
                            return None;
                        }
                        // A worker booting now runs the newest code already.
                        Some(SlotCommand::Replace { reply, .. }) => replies.extend(reply),
                        Some(
                            SlotCommand::ConnectionBroke { .. }
                            | SlotCommand::Kill { .. }
                            | SlotCommand::Backtrace { .. }
                            | SlotCommand::Wake
                            | SlotCommand::Retire { .. },
                        ) => {}
                    },
                }
            };
            match result {
                Ok(Booted { running, conn, .. }) => {
                    tracing::info!("[{}] worker {} ready", self.label(), running.pid);
                    self.pool.record_error(self.slot, None);
                    self.pool
                        .worker_ready(self.slot, running.generation, running.pid, conn);
                    answer(replies, Ok(()));
                    return Some(running);
                }
                Err(message) => {
                    self.failures += 1;
                    if self.pool.boot_failed(self.slot, &message) {
                        tracing::error!(
                            "[{}] worker failed to boot (attempt {}): {message}",
                            self.label(),
                            self.failures
                        );
                    } else {
                        tracing::error!(
                            "[{}] worker failed to boot (attempt {}): the same error as above",
                            self.label(),
                            self.failures
                        );
                    }
                    let next = if self.failures >= FAILED_AFTER {
                        SlotState::Failed
                    } else {
                        SlotState::Backoff
                    };
                    self.pool.set_state(self.slot, self.generation, next);
                    answer(std::mem::take(&mut replies), Err(message));
                    if self.wait_backoff(Some(&mut replies)).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Handles a control message of the current worker; returns a reason
    /// to recycle it, if one was reached.
    async fn on_event(
        &mut self,
        current: &mut Option<Running>,
        event: Option<WorkerEvent>,
    ) -> Option<ExitReason> {
        let running = current.as_mut()?;
        match event {
            None => {
                running.events_open = false;
                None
            }
            Some(event) => self.handle_event(running, event).await,
        }
    }

    /// Takes what a worker that has exited still had queued for its slot.
    /// Its exit is never announced (exit() restarts its script
    /// in-process), and its connection may sit idle in the pool holding
    /// the channel open, so nothing more is waited for.
    async fn read_last_words(&mut self, gone: &mut Running) {
        while let Ok(event) = gone.events.try_recv() {
            self.handle_event(gone, event).await;
        }
        gone.events_open = false;
    }

    async fn handle_event(
        &mut self,
        running: &mut Running,
        event: WorkerEvent,
    ) -> Option<ExitReason> {
        match event {
            WorkerEvent::UncaughtException => self.pool.uncaught_exception(self.slot),
            WorkerEvent::ScriptRestarted { outcome } => {
                let reason = match outcome {
                    Outcome::Exit => ExitReason::Exit,
                    Outcome::Timeout => ExitReason::PhpTimeout,
                    Outcome::OutOfMemory => ExitReason::OutOfMemory,
                    _ => ExitReason::Fatal,
                };
                tracing::info!(
                    "[{}] worker {} restarts its script in-process ({reason})",
                    self.label(),
                    running.pid
                );
                self.pool
                    .script_restarted(self.slot, running.generation, reason);
            }
            WorkerEvent::Finished {
                memory,
                peak_memory,
            } => {
                // A worker past a limit takes no further request, not even
                // while its replacement boots: a limit is a limit. Decided
                // before it is idle again, from what is known at once.
                let mut reason = self.limit_reached(running, memory.max(peak_memory), None);
                if reason.is_some() {
                    self.pool.retire(self.slot, running.generation);
                }
                let rss = if running.last_rss.is_none_or(|t| t.elapsed() >= RSS_INTERVAL) {
                    running.last_rss = Some(Instant::now());
                    crate::metrics::process_rss(running.pid).await
                } else {
                    None
                };
                self.pool
                    .record_memory(self.slot, running.generation, memory, peak_memory, rss);
                if reason.is_none() && rss.is_some() {
                    reason = self.limit_reached(running, 0, rss);
                    if reason.is_some() {
                        self.pool.retire(self.slot, running.generation);
                    }
                }
                return reason;
            }
            WorkerEvent::IncludedFiles { files } => self.pool.note_included(files),
            WorkerEvent::Backtrace { trace } => {
                let request = running
                    .slow_request
                    .take()
                    .unwrap_or_else(|| self.pool.describe_request(self.slot));
                tracing::warn!(
                    "[{}] slow request: {request}; PHP backtrace:\n{trace}",
                    self.label()
                );
            }
        }
        None
    }

    /// The recycle limit `running` has reached after a request, if any.
    fn limit_reached(
        &self,
        running: &Running,
        memory: u64,
        rss: Option<u64>,
    ) -> Option<ExitReason> {
        if running
            .recycle_blocked_until
            .is_some_and(|until| Instant::now() < until)
        {
            return None;
        }
        if running.max_requests > 0 && running.requests() >= running.max_requests {
            return Some(ExitReason::MaxRequests);
        }
        let mb = |bytes: u64| bytes as f64 / 1048576.0;
        if let Some(limit) = self.limits.memory_limit.filter(|&limit| memory >= limit) {
            tracing::info!(
                "[{}] worker {} used {:.1} MB of PHP memory, past --memory-limit={:.0}",
                self.label(),
                running.pid,
                mb(memory),
                mb(limit)
            );
            return Some(ExitReason::Memory);
        }
        let (limit, rss) = self.limits.rss_limit.zip(rss)?;
        (rss >= limit).then(|| {
            tracing::info!(
                "[{}] worker {} has {:.1} MB resident (RSS), past --rss-limit={:.0}",
                self.label(),
                running.pid,
                mb(rss),
                mb(limit)
            );
            ExitReason::Memory
        })
    }

    /// The current worker exited. Returns true when the slot was told to
    /// stop while waiting out a backoff.
    async fn on_exit(
        &mut self,
        mut gone: Running,
        exit: String,
        replacement_booting: bool,
    ) -> bool {
        self.read_last_words(&mut gone).await;
        let reason = gone.exit_reason.unwrap_or(ExitReason::Crash);
        let log = format!(
            "[{}] worker {} exited ({exit}, {reason})",
            self.label(),
            gone.pid
        );
        if reason == ExitReason::Crash {
            tracing::warn!("{log}");
        } else {
            tracing::info!("{log}");
        }
        self.pool
            .worker_gone(self.slot, gone.generation, reason, exit, SlotState::Exited);
        if replacement_booting {
            // The replacement will take the slot when it is ready.
            return false;
        }
        if reason == ExitReason::Crash && gone.ready_at.elapsed() < MIN_HEALTHY_RUN {
            self.failures += 1;
            self.pool
                .set_state(self.slot, gone.generation, SlotState::Backoff);
            return self.wait_backoff(None).await;
        }
        self.failures = 0;
        false
    }

    /// Starts a surge-first replacement of the current worker, or joins the
    /// one under way.
    fn replace(
        &mut self,
        current: &mut Option<Running>,
        replacing: &mut Option<Replacing>,
        reason: ExitReason,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    ) {
        if let Some(under_way) = replacing.as_mut() {
            if reason == ExitReason::Restart && under_way.reason != ExitReason::Restart {
                under_way
                    .restart_after
                    .get_or_insert_with(Vec::new)
                    .extend(reply);
            } else {
                under_way.replies.extend(reply);
            }
            return;
        }
        if let Some(running) = current.as_mut() {
            running.recycle_blocked_until =
                Some(Instant::now() + Duration::from_secs(86_400 * 365));
            tracing::info!(
                "[{}] replacing worker {} ({reason}, {} requests served)",
                self.label(),
                running.pid,
                running.requests()
            );
        }
        *replacing = Some(Replacing {
            boot: Box::pin(self.boot_next(true)),
            reason,
            replies: reply.into_iter().collect(),
            restart_after: None,
        });
    }

    /// A replacement finished booting: switch the slot to it, or keep the
    /// current worker when it failed.
    fn on_replacement(
        &mut self,
        current: &mut Option<Running>,
        booted: Result<Booted, String>,
        reason: ExitReason,
        replies: Vec<oneshot::Sender<Result<(), String>>>,
    ) {
        match booted {
            Ok(Booted { running, conn }) => {
                let old = current.take();
                self.pool
                    .set_surge(self.slot, None, old.as_ref().map(|o| o.pid));
                let drained = self
                    .pool
                    .swap(self.slot, running.generation, running.pid, conn);
                tracing::info!(
                    "[{}] worker {} took over{}",
                    self.label(),
                    running.pid,
                    old.as_ref()
                        .map(|o| format!(" from worker {} ({reason})", o.pid))
                        .unwrap_or_default()
                );
                *current = Some(running);
                self.failures = 0;
                self.pool.record_error(self.slot, None);
                if let Some(old) = old {
                    self.stoppers.push(tokio::spawn(retire(
                        self.pool.clone(),
                        self.slot,
                        old,
                        drained,
                        reason,
                    )));
                }
                self.stoppers.retain(|s| !s.is_finished());
                answer(replies, Ok(()));
            }
            Err(message) => {
                self.pool.set_surge(self.slot, None, None);
                tracing::error!("[{}] replacement failed to boot: {message}", self.label());
                self.pool.record_error(self.slot, Some(message.clone()));
                if let Some(running) = current.as_mut() {
                    // Keep serving; try recycling again later.
                    running.recycle_blocked_until = Some(Instant::now() + RECYCLE_RETRY);
                    self.pool.keep_serving(self.slot, running.generation);
                } else {
                    self.failures += 1;
                }
                answer(replies, Err(message));
            }
        }
    }

    /// The frame connection of the current worker broke off mid-exchange:
    /// the worker is out of step with it and is killed (then replaced).
    /// Returns how the worker ended if it turns out to be exiting anyway.
    async fn connection_broke(
        &mut self,
        current: &mut Option<Running>,
        generation: u64,
    ) -> Option<String> {
        let running = current.as_mut().filter(|c| c.generation == generation)?;
        // A connection usually breaks because the worker is exiting (a
        // crash): give it a moment to show that, so the exit is reported
        // as it was, not as a kill.
        if let Ok(exit) = tokio::time::timeout(BROKEN_SETTLE, running.worker.wait()).await {
            return Some(exit);
        }
        tracing::warn!(
            "[{}] the exchange with worker {} broke off; killing it",
            self.label(),
            running.pid
        );
        running.worker.kill_group();
        None
    }

    /// Sleeps for the backoff of the failures so far. Returns true when the
    /// slot was told to stop meanwhile; restart requests that arrive are
    /// collected in `replies` when given (answered after the next boot).
    async fn wait_backoff(
        &mut self,
        mut replies: Option<&mut Vec<oneshot::Sender<Result<(), String>>>>,
    ) -> bool {
        let delay = backoff(self.failures);
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
                    None | Some(SlotCommand::Stop) => {
                        self.pool.set_state(self.slot, self.generation, SlotState::Stopping);
                        self.pool.set_state(self.slot, self.generation, SlotState::Exited);
                        if let Some(replies) = replies.take() {
                            answer(std::mem::take(replies), Err("ppm is stopping".into()));
                        }
                        return true;
                    }
                    Some(SlotCommand::Replace { reply, .. }) => match replies.as_deref_mut() {
                        Some(replies) => replies.extend(reply),
                        None => answer(reply.into_iter().collect(), Err("the slot is waiting to retry a failed boot".into())),
                    },
                    Some(
                        SlotCommand::ConnectionBroke { .. }
                        | SlotCommand::Kill { .. }
                        | SlotCommand::Backtrace { .. }
                        | SlotCommand::Wake
                        | SlotCommand::Retire { .. },
                    ) => {}
                },
            }
        }
    }

    async fn shutdown(mut self, current: Option<Running>, replacing: Option<Replacing>) {
        if let Some(under_way) = replacing {
            // Dropping the boot kills the half-booted worker.
            drop(under_way.boot);
            answer(under_way.replies, Err("ppm is stopping".into()));
        }
        if let Some(mut running) = current {
            self.pool
                .set_state(self.slot, running.generation, SlotState::Stopping);
            let exit = running.worker.stop(STOP_GRACE).await;
            tracing::info!("[{}] worker {} stopped ({exit})", self.label(), running.pid);
            self.pool.worker_gone(
                self.slot,
                running.generation,
                ExitReason::Shutdown,
                exit,
                SlotState::Exited,
            );
        }
        // Replaced workers finish their last request, but not for ever: the
        // master already waited --shutdown-timeout for in-flight requests.
        // Aborting a stopper drops its worker, which kills its group.
        for mut stopper in self.stoppers.drain(..) {
            if tokio::time::timeout(STOP_GRACE * 2, &mut stopper)
                .await
                .is_err()
            {
                stopper.abort();
            }
        }
    }

    /// Starts booting the slot's next worker generation; `surge` when it
    /// boots beside a worker it will replace.
    fn boot_next(
        &mut self,
        surge: bool,
    ) -> impl Future<Output = Result<Booted, String>> + Send + 'static {
        self.generation += 1;
        boot(
            self.pool.clone(),
            self.spec.clone(),
            self.limits.clone(),
            self.slot,
            self.generation,
            surge,
        )
    }
}

/// Asks a stuck worker for its PHP backtrace, waiting briefly for it.
async fn backtrace_of(running: &mut Running) -> Option<String> {
    if !running.events_open {
        return None;
    }
    running.worker.ask_backtrace();
    let wait = async {
        while let Some(event) = running.events.recv().await {
            if let WorkerEvent::Backtrace { trace } = event {
                return Some(trace);
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_millis(300), wait)
        .await
        .ok()
        .flatten()
}

/// Waits for news of the current worker; never resolves without one.
async fn watch(current: &mut Option<Running>) -> News {
    match current {
        None => std::future::pending().await,
        Some(running) => tokio::select! {
            event = running.events.recv(), if running.events_open => News::Event(event),
            exit = running.worker.wait() => News::Exited(exit),
        },
    }
}

async fn poll_boot(replacing: &mut Option<Replacing>) -> Result<Booted, String> {
    match replacing {
        None => std::future::pending().await,
        Some(under_way) => (&mut under_way.boot).await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn answer(replies: Vec<oneshot::Sender<Result<(), String>>>, result: Result<(), String>) {
    for reply in replies {
        let _ = reply.send(result.clone());
    }
}

/// Lets a replaced worker finish its request, then stops it.
async fn retire(
    pool: Arc<Pool>,
    slot: usize,
    mut old: Running,
    drained: oneshot::Receiver<()>,
    reason: ExitReason,
) {
    tokio::select! {
        _ = drained => {}
        exit = old.worker.wait() => {
            pool.replaced_worker_gone(slot, old.pid, reason, exit);
            return;
        }
    }
    let exit = old.worker.stop(STOP_GRACE).await;
    tracing::info!("[slot {slot}] replaced worker {} stopped ({exit})", old.pid);
    pool.replaced_worker_gone(slot, old.pid, reason, exit);
}

/// Spawns a worker and waits until it is ready. With `surge`, it first
/// takes one of the pool's surge permits, so at most `--max-surge` extra
/// workers boot at once.
async fn boot(
    pool: Arc<Pool>,
    spec: Arc<WorkerSpec>,
    limits: Limits,
    slot: usize,
    generation: u64,
    surge: bool,
) -> Result<Booted, String> {
    let _permit = if surge {
        Some(
            pool.surge
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    let label = format!("slot {slot}");
    tracing::info!("[{label}] starting worker");
    let booted =
        crate::workers::native::spawn::boot(&spec, slot, label, limits.bootstrap_timeout, |pid| {
            if surge {
                pool.set_surge(slot, Some(pid), None)
            }
        })
        .await?;
    let pid = booted.worker.pid();
    warn_if_php_limit_is_lower(booted.conn.php_memory_limit.as_deref(), &limits);
    let running = running(booted.worker, booted.events, slot, generation, pid, &limits);
    let mut conn = booted.conn;
    conn.recycle = crate::workers::native::conn::Recycle {
        max_requests: running.max_requests,
        memory_limit: limits.memory_limit,
        served: running.requests.clone(),
    };
    Ok(Booted { running, conn })
}

/// A ready worker's state, with its own jittered limits.
fn running(
    worker: Worker,
    events: mpsc::UnboundedReceiver<WorkerEvent>,
    slot: usize,
    generation: u64,
    pid: u32,
    limits: &Limits,
) -> Running {
    let seed = random_fraction(slot, generation);
    // 0: unlimited, as `Recycle` counts.
    let max_requests = match limits.max_requests {
        None => 0,
        Some(n) => (n - (n as f64 * limits.jitter * seed) as u64).max(1),
    };
    let ttl_deadline = limits
        .ttl
        .map(|ttl| Instant::now() + ttl.mul_f64(1.0 - limits.jitter * seed));
    Running {
        worker,
        events,
        events_open: true,
        generation,
        pid,
        ready_at: Instant::now(),
        requests: Arc::default(),
        max_requests,
        ttl_deadline,
        exit_reason: None,
        recycle_blocked_until: None,
        last_rss: None,
        slow_request: None,
    }
}

/// `--memory-limit` never trips when PHP's own `memory_limit` is lower:
/// PHP fails the request first. Said once per master, at the first boot.
fn warn_if_php_limit_is_lower(php_setting: Option<&str>, limits: &Limits) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    let (Some(ours), Some(php)) = (
        limits.memory_limit,
        php_setting.and_then(crate::workers::php::ini_bytes),
    ) else {
        return;
    };
    if php <= ours {
        WARNED.call_once(|| {
            tracing::warn!(
                "--memory-limit ({} MB) is not below PHP's memory_limit ({}): PHP stops a request with \"Allowed memory size exhausted\" before ppm would recycle the worker; lower --memory-limit or raise memory_limit (--php-ini memory_limit=...)",
                ours / 1048576,
                php_setting.unwrap_or_default()
            );
        });
    }
}

/// A number in [0, 1), different per slot and worker.
fn random_fraction(slot: usize, generation: u64) -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_usize(slot);
    hasher.write_u64(generation);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The delay before boot attempt number `failures + 1`.
fn backoff(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    BACKOFF_START.saturating_mul(factor).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_limit() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(40), BACKOFF_MAX);
    }

    #[test]
    fn jitter_fractions_differ_between_workers_and_stay_below_one() {
        let values: Vec<f64> = (0..50).map(|g| random_fraction(1, g)).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let first = values[0];
        assert!(values.iter().any(|v| (v - first).abs() > 1e-9));
    }
}
