//! The master's shutdown as one named phase (pingora's shape): every part
//! that stops — the control plane, the pools, the listeners and the
//! connections they serve — watches the same phase in one watch channel,
//! and the order the phases may follow each other is written once, in
//! `Phase::may_follow`.
//!
//! `Running` → `Draining` (a stop was asked for: `/ready` and the health
//! path answer 503 while the ports still serve, for `--drain-delay`) →
//! `Closing` (the ports stop accepting; in-flight requests get
//! `--shutdown-timeout` to finish) → `Stopping` (the workers are stopped)
//! → `Stopped` (every worker has exited; the control plane closes).

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Where the master is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Serving.
    Running,
    /// A stop was asked for (SIGTERM, SIGINT, `POST /stop`, or no worker
    /// ever booted). Health checks see the host going away; the ports keep
    /// accepting until `until` (`--drain-delay`; None: close at once).
    Draining { until: Option<Instant> },
    /// The ports have stopped accepting; open connections finish their
    /// requests until `deadline` (`--shutdown-timeout`).
    Closing { deadline: Instant },
    /// The workers are being stopped.
    Stopping,
    /// Every worker has exited.
    Stopped,
}

impl Phase {
    /// The phases in the only order they may come in.
    fn step(&self) -> u8 {
        match self {
            Phase::Running => 0,
            Phase::Draining { .. } => 1,
            Phase::Closing { .. } => 2,
            Phase::Stopping => 3,
            Phase::Stopped => 4,
        }
    }

    /// Whether `self` may come right after `previous`: each phase follows
    /// the one before it, none is skipped and none comes back.
    pub fn may_follow(&self, previous: &Phase) -> bool {
        self.step() == previous.step() + 1
    }

    /// Whether a stop was asked for: health checks fail, restarts are refused.
    pub fn is_going_away(&self) -> bool {
        self.step() >= 1
    }

    /// Whether the ports have stopped accepting.
    pub fn is_closing(&self) -> bool {
        self.step() >= 2
    }

    /// Whether every worker has exited.
    pub fn is_stopped(&self) -> bool {
        self.step() >= 4
    }
}

/// The master's end of the phase: it moves the phase on.
#[derive(Debug)]
pub struct Shutdown {
    phase: watch::Sender<Phase>,
    drain_delay: Option<Duration>,
}

impl Shutdown {
    /// A running master whose stop drains for `drain_delay` first.
    pub fn new(drain_delay: Option<Duration>) -> Self {
        Self {
            phase: watch::Sender::new(Phase::Running),
            drain_delay,
        }
    }

    /// A view of the phase for the parts that stop.
    pub fn watch(&self) -> ShutdownWatch {
        ShutdownWatch(self.phase.subscribe())
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Asks for a stop: `Running` becomes `Draining`. Returns false when a
    /// stop was already asked for (a second `POST /stop` is no error).
    pub fn request(&self) -> bool {
        let until = self.drain_delay.map(|delay| Instant::now() + delay);
        self.phase.send_if_modified(|phase| {
            let asked = *phase == Phase::Running;
            if asked {
                *phase = Phase::Draining { until };
            }
            asked
        })
    }

    /// Moves on to `next`, which must follow the current phase. A move out
    /// of order is a bug: it is logged, refused (and fails debug builds).
    pub fn advance(&self, next: Phase) {
        self.phase.send_if_modified(|phase| {
            if next.may_follow(phase) {
                *phase = next;
                return true;
            }
            tracing::error!("bug: shutdown phase {next:?} cannot follow {phase:?}");
            debug_assert!(false, "shutdown phase {next:?} after {phase:?}");
            false
        });
    }
}

#[cfg(test)]
impl Shutdown {
    /// A running master without a drain delay, and a watch of it.
    pub fn running() -> (Shutdown, ShutdownWatch) {
        let shutdown = Shutdown::new(None);
        let watch = shutdown.watch();
        (shutdown, watch)
    }

    /// Asks for a stop and closes the ports at once.
    pub fn close_now(&self) {
        self.request();
        self.advance(Phase::Closing {
            deadline: Instant::now(),
        });
    }
}

/// What the parts that stop see of the phase.
#[derive(Debug, Clone)]
pub struct ShutdownWatch(watch::Receiver<Phase>);

impl ShutdownWatch {
    pub fn phase(&self) -> Phase {
        *self.0.borrow()
    }

    /// Waits until the phase is one `reached` accepts. The master gone
    /// counts as reached: nothing is left to wait for.
    async fn until(&mut self, reached: fn(&Phase) -> bool) {
        // The guard `wait_for` returns is not Send; drop it here.
        let _ = self.0.wait_for(reached).await.map(|_| ());
    }

    /// Waits until a stop is asked for.
    pub async fn going_away(&mut self) {
        self.until(Phase::is_going_away).await
    }

    /// Waits until the ports stop accepting.
    pub async fn closing(&mut self) {
        self.until(Phase::is_closing).await
    }

    /// Waits until every worker has exited.
    pub async fn stopped(&mut self) {
        self.until(Phase::is_stopped).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_come_in_order_and_a_second_stop_request_is_no_error() {
        let shutdown = Shutdown::new(Some(Duration::from_secs(5)));
        let mut watch = shutdown.watch();
        assert_eq!(watch.phase(), Phase::Running);
        assert!(shutdown.request());
        assert!(!shutdown.request(), "asked once");
        watch.going_away().await;
        assert!(matches!(watch.phase(), Phase::Draining { until: Some(_) }));
        assert!(!watch.phase().is_closing());
        let deadline = Instant::now() + Duration::from_secs(30);
        shutdown.advance(Phase::Closing { deadline });
        watch.closing().await;
        shutdown.advance(Phase::Stopping);
        shutdown.advance(Phase::Stopped);
        watch.stopped().await;
        assert!(watch.phase().is_stopped() && watch.phase().is_going_away());
    }

    #[test]
    fn no_phase_is_skipped_and_none_comes_back() {
        let closing = Phase::Closing {
            deadline: Instant::now(),
        };
        let draining = Phase::Draining { until: None };
        assert!(draining.may_follow(&Phase::Running));
        assert!(closing.may_follow(&draining));
        assert!(!closing.may_follow(&Phase::Running), "skips draining");
        assert!(!Phase::Running.may_follow(&Phase::Stopped), "comes back");
        assert!(!Phase::Stopping.may_follow(&Phase::Stopping));
    }

    #[tokio::test]
    async fn a_watch_of_a_gone_master_does_not_wait() {
        let mut watch = Shutdown::new(None).watch();
        tokio::time::timeout(Duration::from_secs(5), watch.closing())
            .await
            .expect("returns at once");
    }
}
