//! What a slot's serving worker tells its slot task: finished requests
//! (memory, recycle limits), script restarts, backtraces, included files.

use std::time::{Duration, Instant};

use super::phase::Running;
use super::Ctx;
use crate::workers::native::event::WorkerEvent;
use crate::workers::native::frames::Outcome;
use crate::workers::pool::ExitReason;

/// How often a worker's RSS is read at most.
const RSS_INTERVAL: Duration = Duration::from_secs(1);

impl Ctx {
    /// Takes what a worker that has exited still had queued for its slot.
    /// Its exit is never announced (exit() restarts its script
    /// in-process), and its connection may sit idle in the pool holding
    /// the channel open, so nothing more is waited for.
    pub(super) async fn read_last_words(&self, gone: &mut Running) {
        while let Ok(event) = gone.events.try_recv() {
            self.handle_event(gone, event, false).await;
        }
        gone.events_open = false;
    }

    /// Handles one event of `running`; the recycle it asks for, if any.
    /// Only a `recyclable` worker (not one already being replaced, not one
    /// gone) is recycled.
    pub(super) async fn handle_event(
        &self,
        running: &mut Running,
        event: WorkerEvent,
        recyclable: bool,
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
                self.pool.script_restarted(self.slot, reason);
            }
            WorkerEvent::Finished {
                memory,
                peak_memory,
            } => {
                // A worker past a limit takes no further request, not even
                // while its replacement boots: a limit is a limit. Decided
                // before it is idle again, from what is known at once.
                let retry_blocked = running
                    .recycle_blocked_until
                    .is_some_and(|until| Instant::now() < until);
                if recyclable && retry_blocked {
                    // Its replacement failed to boot a moment ago: it
                    // serves on until the retry, even past a limit the
                    // exchange has just retired it for.
                    self.pool.keep_serving(self.slot);
                }
                let recyclable = recyclable && !retry_blocked;
                let mut reason = recyclable
                    .then(|| self.limit_reached(running, memory.max(peak_memory), None))
                    .flatten();
                if reason.is_some() {
                    self.pool.retire(self.slot);
                }
                let rss = if running.last_rss.is_none_or(|t| t.elapsed() >= RSS_INTERVAL) {
                    running.last_rss = Some(Instant::now());
                    crate::metrics::process_rss(running.pid).await
                } else {
                    None
                };
                self.pool.record_memory(self.slot, memory, peak_memory, rss);
                if recyclable && reason.is_none() && rss.is_some() {
                    reason = self.limit_reached(running, 0, rss);
                    if reason.is_some() {
                        self.pool.retire(self.slot);
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
            .max_requests
            .is_some_and(|limit| running.requests() >= limit)
        {
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
}

/// Asks a stuck worker for its PHP backtrace, waiting briefly for it.
pub(super) async fn backtrace_of(running: &mut Running) -> Option<String> {
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
