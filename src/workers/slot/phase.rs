//! Where a slot's lifecycle stands: a phase that holds the workers it
//! concerns, so a worker that is gone cannot be signalled by mistake and a
//! boot cannot be forgotten.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::workers::native::conn::FrameConn;
use crate::workers::native::event::WorkerEvent;
use crate::workers::pool::{ExitReason, Reply, WorkerId};
use crate::workers::process::Worker;

/// The phase of a slot; see the module docs of `slot`. One per slot, moved
/// only when the phase changes: the size of `Serving` does not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum Phase {
    /// No worker, and none wanted until the process manager sends `Wake`
    /// (`--pm dynamic|ondemand`).
    Empty,
    /// A worker boots and none serves the slot: the first, one after a
    /// crash, or the replacement of a worker that died while it booted.
    Booting(Boot),
    /// Waiting before the next boot attempt after failures.
    Backoff {
        until: Instant,
        /// Restart requests to answer after the next boot; `None` when
        /// they are refused meanwhile (a crash loop).
        replies: Option<Vec<Reply>>,
    },
    /// A worker serves the slot; its replacement may boot beside it.
    Serving {
        worker: Running,
        replacing: Option<Boot>,
    },
    /// The task is ending (also what a phase is while it is being changed).
    Stopped,
}

/// A worker that is ready and serving (or was).
pub(super) struct Running {
    pub(super) worker: Worker,
    pub(super) events: mpsc::UnboundedReceiver<WorkerEvent>,
    pub(super) events_open: bool,
    /// Which worker it is and the requests it has served, shared with
    /// the dispatcher and the exchanges.
    pub(super) id: Arc<WorkerId>,
    pub(super) pid: u32,
    pub(super) ready_at: Instant,
    /// `--max-requests` with its jitter (None: unlimited).
    pub(super) max_requests: Option<u64>,
    pub(super) ttl_deadline: Option<Instant>,
    /// Why it will exit, when that is known before it does.
    pub(super) exit_reason: Option<ExitReason>,
    /// Its replacement failed to boot: no recycle is tried before this
    /// instant.
    pub(super) recycle_blocked_until: Option<Instant>,
    pub(super) last_rss: Option<Instant>,
    /// The slow request a backtrace was asked for, as it was then: the
    /// answer may arrive after the request has ended.
    pub(super) slow_request: Option<String>,
}

impl Running {
    pub(super) fn requests(&self) -> u64 {
        self.id.served()
    }

    pub(super) fn generation(&self) -> u64 {
        self.id.generation
    }

    /// When its `--ttl` recycles it; a replacement that just failed
    /// pushes that back.
    fn ttl_at(&self) -> Option<Instant> {
        let ttl = self.ttl_deadline?;
        Some(
            self.recycle_blocked_until
                .map_or(ttl, |blocked| ttl.max(blocked)),
        )
    }
}

/// A booted worker and its connection.
pub(super) struct Booted {
    pub(super) running: Running,
    pub(super) conn: FrameConn,
}

type BootFuture = Pin<Box<dyn Future<Output = Result<Booted, String>> + Send>>;

/// A worker booting, and who waits for it.
pub(super) struct Boot {
    pub(super) future: BootFuture,
    /// Why: the worker it replaces reached a limit, or was asked to
    /// restart; `None` for a boot with no worker to replace.
    pub(super) reason: Option<ExitReason>,
    pub(super) replies: Vec<Reply>,
    /// Restart requests that arrived while a recycle was booting: that
    /// worker may have loaded the code from before a deploy, so they get a
    /// replacement of their own once it is done.
    pub(super) restart_after: Option<Vec<Reply>>,
}

impl Boot {
    pub(super) fn new(
        future: impl Future<Output = Result<Booted, String>> + Send + 'static,
        reason: Option<ExitReason>,
        replies: Vec<Reply>,
    ) -> Self {
        Boot {
            future: Box::pin(future),
            reason,
            replies,
            restart_after: None,
        }
    }

    /// A restart (or recycle) request arrives while this boot is under way.
    pub(super) fn join(&mut self, reason: ExitReason, reply: Option<Reply>) {
        let recycling = self.reason.is_some_and(|r| r != ExitReason::Restart);
        if reason == ExitReason::Restart && recycling {
            self.restart_after
                .get_or_insert_with(Vec::new)
                .extend(reply);
        } else {
            self.replies.extend(reply);
        }
    }
}

/// What happened in the current phase.
pub(super) enum News {
    /// The boot of `Booting` ended.
    Booted(Result<Booted, String>),
    /// The backoff is over.
    BackoffOver,
    /// A message of the serving worker (`None`: it will send no more).
    Event(Option<WorkerEvent>),
    /// The serving worker exited.
    Exited(String),
    /// The replacement booting beside the serving worker is done.
    Replaced(Result<Booted, String>),
    /// The serving worker's `--ttl` is reached.
    Ttl,
}

impl Phase {
    /// Waits for news of this phase; never resolves in one that has none.
    /// Cancel-safe: the boots live in the phase, not in this future.
    pub(super) async fn news(&mut self) -> News {
        match self {
            Phase::Empty | Phase::Stopped => std::future::pending().await,
            Phase::Booting(boot) => News::Booted((&mut boot.future).await),
            Phase::Backoff { until, .. } => {
                tokio::time::sleep_until((*until).into()).await;
                News::BackoffOver
            }
            Phase::Serving { worker, replacing } => {
                // A replacement under way is the recycle the TTL would ask for.
                let ttl_at = worker.ttl_at().filter(|_| replacing.is_none());
                tokio::select! {
                    event = worker.events.recv(), if worker.events_open => News::Event(event),
                    exit = worker.worker.wait() => News::Exited(exit),
                    booted = poll_boot(replacing) => News::Replaced(booted),
                    _ = sleep_until(ttl_at) => News::Ttl,
                }
            }
        }
    }
}

async fn poll_boot(boot: &mut Option<Boot>) -> Result<Booted, String> {
    match boot {
        None => std::future::pending().await,
        Some(boot) => (&mut boot.future).await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    fn booting(reason: Option<ExitReason>) -> Boot {
        Boot::new(std::future::pending(), reason, Vec::new())
    }

    #[test]
    fn a_restart_during_a_recycle_waits_for_a_replacement_of_its_own() {
        let mut boot = booting(Some(ExitReason::MaxRequests));
        let (reply, _answer) = oneshot::channel();
        boot.join(ExitReason::Restart, Some(reply));
        assert!(boot.replies.is_empty());
        assert_eq!(boot.restart_after.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn a_restart_joins_a_restart_or_a_boot_without_a_worker() {
        for reason in [Some(ExitReason::Restart), None] {
            let mut boot = booting(reason);
            let (reply, _answer) = oneshot::channel();
            boot.join(ExitReason::Restart, Some(reply));
            assert_eq!(boot.replies.len(), 1, "{reason:?}");
            assert!(boot.restart_after.is_none(), "{reason:?}");
        }
    }
}
