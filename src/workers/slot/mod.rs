//! The task that owns one slot's workers.
//!
//! # Theory of operation
//!
//! `SlotTask::run` is the only code that starts, replaces or stops the
//! slot's PHP processes, and the only writer of what the dispatcher knows
//! of the slot's worker (`pool/report.rs`). Where the slot stands is one
//! `Phase` that holds the workers it concerns (`phase.rs`): `Empty` (none
//! wanted), `Booting` (a boot and who waits for it), `Backoff` (a pause
//! after failed boots), `Serving` (the worker, and its replacement booting
//! beside it). Replaced workers finishing their last request are each
//! owned by a small stopper task. One `select!` takes the slot's commands
//! and the phase's news, so each command is handled in one place.
//!
//! Every restart is surge-first: the replacement boots beside the serving
//! worker, which keeps serving; once it reports `ready`, `Pool::swap`
//! switches the slot to it in one step; the old worker finishes the
//! request it may be serving and is then stopped. If the replacement fails
//! to boot, nothing changes for the slot and the PHP error goes back to
//! whoever asked (a rolling restart stops there).
//!
//! Only a worker that is already gone (crash, exit(), killed after a
//! timeout) is followed by a boot without a worker serving, with
//! exponential backoff when it crashes at once, and when boots keep
//! failing.
//!
//! In a dynamic or ondemand pool (`pool::pm`) a slot may also be `Empty`:
//! it waits for `Wake` to boot a worker, and on `Retire` stops its worker
//! if that is still idle and becomes empty again. A rolling restart has
//! nothing to do in an empty slot: its next worker loads the code as it is
//! then.

mod boot;
mod events;
mod phase;
mod start;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use boot::Limits;
use phase::{Boot, Booted, News, Phase, Running};
pub use start::{start_pool, PoolConfig};

use crate::workers::pool::{ExitReason, Pool, Reply, SlotCommand, SlotState};
use crate::workers::process::WorkerSpec;

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
/// After a recycle whose replacement failed to boot, wait this long before
/// the next recycle attempt of that worker.
const RECYCLE_RETRY: Duration = Duration::from_secs(30);

/// What a slot task works with and never changes.
struct Ctx {
    pool: Arc<Pool>,
    slot: usize,
    spec: Arc<WorkerSpec>,
    limits: Limits,
}

impl Ctx {
    fn label(&self) -> String {
        format!("slot {}", self.slot)
    }
}

/// The task that owns one slot's workers; see the module docs.
pub(crate) struct SlotTask {
    ctx: Ctx,
    commands: mpsc::UnboundedReceiver<SlotCommand>,
    phase: Phase,
    /// The slot boots a worker as soon as the task runs (else it starts
    /// empty).
    boots_at_start: bool,
    /// The generation of the slot's newest worker (each gets the next).
    minted: u64,
    failures: u32,
    stoppers: Vec<JoinHandle<()>>,
}

impl SlotTask {
    /// A slot task; `empty` when the slot starts without a worker (the
    /// process manager wakes it).
    pub(crate) fn new(
        pool: Arc<Pool>,
        slot: usize,
        spec: Arc<WorkerSpec>,
        limits: Limits,
        commands: mpsc::UnboundedReceiver<SlotCommand>,
        empty: bool,
    ) -> Self {
        Self {
            ctx: Ctx {
                pool,
                slot,
                spec,
                limits,
            },
            commands,
            phase: Phase::Empty,
            boots_at_start: !empty,
            minted: 0,
            failures: 0,
            stoppers: Vec::new(),
        }
    }

    pub(crate) async fn run(mut self) {
        if self.boots_at_start {
            self.cold_boot(Vec::new());
        }
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    None | Some(SlotCommand::Stop) => break,
                    Some(command) => self.on_command(command).await,
                },
                news = self.phase.news() => self.on_news(news).await,
            }
        }
        self.shutdown().await;
    }

    /// Every command but `Stop`, whatever the phase.
    async fn on_command(&mut self, command: SlotCommand) {
        match command {
            SlotCommand::Stop => {}
            SlotCommand::Replace { reason, reply } => self.replace(reason, reply),
            SlotCommand::ConnectionBroke { generation } => self.connection_broke(generation).await,
            SlotCommand::Kill { generation, reason } => self.kill(generation, reason).await,
            SlotCommand::Backtrace { generation } => {
                let request = self.ctx.pool.describe_request(self.ctx.slot);
                if let Some(running) = self.serving(generation) {
                    running.slow_request = Some(request);
                    running.worker.ask_backtrace();
                }
            }
            SlotCommand::Retire { generation } => self.retire_idle(generation),
            SlotCommand::Wake => {
                // Only an empty slot is woken.
                if matches!(self.phase, Phase::Empty) {
                    self.cold_boot(Vec::new());
                }
            }
        }
    }

    async fn on_news(&mut self, news: News) {
        match news {
            News::Booted(booted) => self.booted(booted),
            News::BackoffOver => {
                let Phase::Backoff { replies, .. } = self.take_phase() else {
                    return;
                };
                self.cold_boot(replies.unwrap_or_default());
            }
            News::Event(event) => {
                let Phase::Serving { worker, replacing } = &mut self.phase else {
                    return;
                };
                // While a replacement boots, the worker it replaces is not
                // recycled again.
                let recyclable = replacing.is_none();
                let recycle = match event {
                    None => {
                        worker.events_open = false;
                        None
                    }
                    Some(event) => self.ctx.handle_event(worker, event, recyclable).await,
                };
                if let Some(reason) = recycle {
                    self.replace(reason, None);
                }
            }
            News::Exited(exit) => self.on_exit(exit).await,
            News::Replaced(booted) => self.replaced(booted),
            News::Ttl => self.replace(ExitReason::Ttl, None),
        }
    }

    fn take_phase(&mut self) -> Phase {
        std::mem::replace(&mut self.phase, Phase::Stopped)
    }

    /// The serving worker, if it is worker `generation`: commands that
    /// come from a request name the worker they concern.
    fn serving(&mut self, generation: u64) -> Option<&mut Running> {
        match &mut self.phase {
            Phase::Serving { worker, .. } if worker.generation() == generation => Some(worker),
            _ => None,
        }
    }

    /// Starts booting the slot's next worker; `surge` when it boots beside
    /// a worker it will replace.
    fn boot_next(
        &mut self,
        surge: bool,
    ) -> impl std::future::Future<Output = Result<Booted, String>> {
        self.minted += 1;
        boot::boot(
            self.ctx.pool.clone(),
            self.ctx.spec.clone(),
            self.ctx.limits.clone(),
            self.ctx.slot,
            self.minted,
            surge,
        )
    }

    /// Boots a worker in a slot that has none (empty, after a pause, or
    /// at start).
    fn cold_boot(&mut self, replies: Vec<Reply>) {
        self.ctx.pool.booting(self.ctx.slot);
        self.phase = Phase::Booting(Boot::new(self.boot_next(false), None, replies));
    }

    /// Boots a worker in a slot the dispatcher already shows `Starting`.
    fn boot_again(&mut self) {
        self.phase = Phase::Booting(Boot::new(self.boot_next(false), None, Vec::new()));
    }

    /// Waits before the next boot attempt.
    fn back_off(&mut self, replies: Option<Vec<Reply>>) {
        let delay = boot::backoff(self.failures);
        tracing::info!(
            "[{}] next attempt in {:.1}s",
            self.ctx.label(),
            delay.as_secs_f64()
        );
        self.phase = Phase::Backoff {
            until: Instant::now() + delay,
            replies,
        };
    }

    /// A boot of `Booting` ended.
    fn booted(&mut self, booted: Result<Booted, String>) {
        let Phase::Booting(boot) = self.take_phase() else {
            return;
        };
        match booted {
            Ok(Booted { running, conn }) => {
                tracing::info!("[{}] worker {} ready", self.ctx.label(), running.pid);
                self.ctx
                    .pool
                    .ready(self.ctx.slot, running.id.clone(), running.pid, conn);
                answer(boot.replies, Ok(()));
                self.phase = Phase::Serving {
                    worker: running,
                    replacing: None,
                };
                self.restart_for(boot.restart_after);
            }
            Err(message) => {
                self.failures += 1;
                let next = if self.failures >= FAILED_AFTER {
                    SlotState::Failed
                } else {
                    SlotState::Backoff
                };
                let label = self.ctx.label();
                if self.ctx.pool.boot_failed(self.ctx.slot, &message, next) {
                    let attempt = self.failures;
                    tracing::error!(
                        "[{label}] worker failed to boot (attempt {attempt}): {message}"
                    );
                } else {
                    tracing::error!(
                        "[{label}] worker failed to boot (attempt {}): the same error as above",
                        self.failures
                    );
                }
                answer(boot.replies, Err(message.clone()));
                answer(boot.restart_after.unwrap_or_default(), Err(message));
                self.back_off(Some(Vec::new()));
            }
        }
    }

    /// Starts a surge-first replacement of the serving worker, or joins
    /// the boot under way.
    fn replace(&mut self, reason: ExitReason, reply: Option<Reply>) {
        let surge = matches!(
            self.phase,
            Phase::Serving {
                replacing: None,
                ..
            }
        );
        let future = surge.then(|| self.boot_next(true));
        match &mut self.phase {
            // The next worker boots with the code as it is then.
            Phase::Empty => answer(reply.into_iter().collect(), Ok(())),
            Phase::Booting(boot)
            | Phase::Serving {
                replacing: Some(boot),
                ..
            } => boot.join(reason, reply),
            Phase::Backoff { replies, .. } => match replies {
                Some(replies) => replies.extend(reply),
                None => answer(
                    reply.into_iter().collect(),
                    Err("the slot is waiting to retry a failed boot".into()),
                ),
            },
            Phase::Serving { worker, replacing } => {
                tracing::info!(
                    "[{}] replacing worker {} ({reason}, {} requests served)",
                    self.ctx.label(),
                    worker.pid,
                    worker.requests()
                );
                if let Some(future) = future {
                    *replacing = Some(Boot::new(future, Some(reason), reply.into_iter().collect()));
                }
            }
            Phase::Stopped => answer(reply.into_iter().collect(), Err("ppm is stopping".into())),
        }
    }

    /// Restart requests that waited for a recycle get a replacement of
    /// their own.
    fn restart_for(&mut self, waiting: Option<Vec<Reply>>) {
        if let Some(waiting) = waiting {
            self.replace(ExitReason::Restart, None);
            for reply in waiting {
                self.replace(ExitReason::Restart, Some(reply));
            }
        }
    }

    /// The replacement booting beside the serving worker is done: switch
    /// the slot to it, or keep the serving worker when it failed.
    fn replaced(&mut self, booted: Result<Booted, String>) {
        let Phase::Serving {
            worker: mut old,
            replacing: Some(boot),
        } = self.take_phase()
        else {
            return;
        };
        let reason = boot.reason.unwrap_or(ExitReason::Restart);
        let (slot, label) = (self.ctx.slot, self.ctx.label());
        let worker = match booted {
            Ok(Booted { running, conn }) => {
                let drained =
                    self.ctx
                        .pool
                        .swap(slot, running.id.clone(), running.pid, conn, old.pid);
                tracing::info!(
                    "[{label}] worker {} took over from worker {} ({reason})",
                    running.pid,
                    old.pid
                );
                self.failures = 0;
                let stopper = boot::retire(self.ctx.pool.clone(), slot, old, drained, reason);
                self.stoppers.retain(|s| !s.is_finished());
                self.stoppers.push(tokio::spawn(stopper));
                answer(boot.replies, Ok(()));
                running
            }
            Err(message) => {
                tracing::error!("[{label}] replacement failed to boot: {message}");
                self.ctx.pool.record_error(slot, Some(message.clone()));
                // Keep serving; try recycling again later.
                old.recycle_blocked_until = Some(Instant::now() + RECYCLE_RETRY);
                self.ctx.pool.keep_serving(slot);
                answer(boot.replies, Err(message));
                old
            }
        };
        self.phase = Phase::Serving {
            worker,
            replacing: None,
        };
        self.restart_for(boot.restart_after);
    }

    /// The serving worker exited.
    async fn on_exit(&mut self, exit: String) {
        let Phase::Serving {
            worker: mut gone,
            replacing,
        } = self.take_phase()
        else {
            return;
        };
        self.ctx.read_last_words(&mut gone).await;
        let reason = gone.exit_reason.unwrap_or(ExitReason::Crash);
        let log = format!(
            "[{}] worker {} exited ({exit}, {reason})",
            self.ctx.label(),
            gone.pid
        );
        if reason == ExitReason::Crash {
            tracing::warn!("{log}");
        } else {
            tracing::info!("{log}");
        }
        let (pool, slot) = (&self.ctx.pool, self.ctx.slot);
        if let Some(boot) = replacing {
            // The replacement takes the slot when it is ready.
            pool.worker_gone(slot, reason, exit, SlotState::Starting);
            self.phase = Phase::Booting(boot);
        } else if reason == ExitReason::Crash && gone.ready_at.elapsed() < MIN_HEALTHY_RUN {
            self.failures += 1;
            pool.worker_gone(slot, reason, exit, SlotState::Backoff);
            self.back_off(None);
        } else {
            self.failures = 0;
            pool.worker_gone(slot, reason, exit, SlotState::Starting);
            self.boot_again();
        }
    }

    /// The frame connection of worker `generation` broke off mid-exchange:
    /// the worker is out of step with it and is killed (then replaced).
    async fn connection_broke(&mut self, generation: u64) {
        let label = self.ctx.label();
        let Some(running) = self.serving(generation) else {
            return;
        };
        // A connection usually breaks because the worker is exiting (a
        // crash): give it a moment to show that, so the exit is reported
        // as it was, not as a kill.
        match tokio::time::timeout(BROKEN_SETTLE, running.worker.wait()).await {
            Ok(exit) => self.on_exit(exit).await,
            Err(_) => {
                tracing::warn!(
                    "[{label}] the exchange with worker {} broke off; killing it",
                    running.pid
                );
                running.worker.kill_group();
            }
        }
    }

    /// Worker `generation` is stuck: log its backtrace and kill it; it is
    /// replaced once it has exited.
    async fn kill(&mut self, generation: u64, reason: ExitReason) {
        let label = self.ctx.label();
        let request = self.ctx.pool.describe_request(self.ctx.slot);
        let Some(running) = self.serving(generation) else {
            return;
        };
        let trace = events::backtrace_of(running).await;
        tracing::warn!(
            "[{label}] killing worker {} ({reason}) serving {request}; PHP backtrace:\n{}",
            running.pid,
            trace.as_deref().unwrap_or("(the worker did not answer)")
        );
        running.exit_reason = Some(reason);
        running.worker.kill_group();
    }

    /// Stops worker `generation` because it stayed idle, if it still is
    /// and no replacement boots (that takes the slot next): the slot
    /// becomes empty. The worker stops in the background, like a replaced
    /// one, so the slot can boot again at once.
    fn retire_idle(&mut self, generation: u64) {
        let idle = matches!(
            &self.phase,
            Phase::Serving { worker, replacing: None } if worker.generation() == generation
        );
        if !idle || !self.ctx.pool.retire_idle(self.ctx.slot) {
            return;
        }
        let Phase::Serving {
            worker: mut old, ..
        } = self.take_phase()
        else {
            return;
        };
        self.phase = Phase::Empty;
        tracing::info!(
            "[{}] retiring idle worker {} ({} requests served)",
            self.ctx.label(),
            old.pid,
            old.requests()
        );
        let slot = self.ctx.slot;
        self.stoppers.retain(|s| !s.is_finished());
        self.stoppers.push(tokio::spawn(async move {
            let exit = old.worker.stop(STOP_GRACE).await;
            tracing::info!("[slot {slot}] idle worker {} stopped ({exit})", old.pid);
        }));
        self.failures = 0;
    }

    async fn shutdown(mut self) {
        let (pool, slot) = (self.ctx.pool.clone(), self.ctx.slot);
        let stopping = || Err("ppm is stopping".to_string());
        match self.take_phase() {
            Phase::Empty | Phase::Stopped => pool.stopped(slot),
            Phase::Booting(boot) => {
                // Dropping the boot kills the half-booted worker.
                drop(boot.future);
                answer(boot.replies, stopping());
                answer(boot.restart_after.unwrap_or_default(), stopping());
                pool.stopped(slot);
            }
            Phase::Backoff { replies, .. } => {
                answer(replies.unwrap_or_default(), stopping());
                pool.stopped(slot);
            }
            Phase::Serving {
                mut worker,
                replacing,
            } => {
                if let Some(boot) = replacing {
                    drop(boot.future);
                    answer(boot.replies, stopping());
                    answer(boot.restart_after.unwrap_or_default(), stopping());
                }
                pool.stopping(slot);
                let exit = worker.worker.stop(STOP_GRACE).await;
                tracing::info!(
                    "[{}] worker {} stopped ({exit})",
                    self.ctx.label(),
                    worker.pid
                );
                pool.worker_gone(slot, ExitReason::Shutdown, exit, SlotState::Exited);
            }
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
}

fn answer(replies: Vec<Reply>, result: Result<(), String>) {
    for reply in replies {
        let _ = reply.send(result.clone());
    }
}
