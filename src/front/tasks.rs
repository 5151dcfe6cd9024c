//! The connection tasks of one listener: each counted in
//! `open_connections` while it runs, and all of them waited for (up to the
//! deadline of the `Closing` phase, `--shutdown-timeout`) once the
//! listener closes.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::shutdown::{Phase, ShutdownWatch};

/// The connection tasks a listener started.
pub struct ConnectionTasks {
    /// Every task holds a clone; once the last is dropped, `all_closed`
    /// returns None.
    alive: mpsc::Sender<()>,
    all_closed: mpsc::Receiver<()>,
    metrics: Arc<Metrics>,
}

impl ConnectionTasks {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        let (alive, all_closed) = mpsc::channel(1);
        ConnectionTasks {
            alive,
            all_closed,
            metrics,
        }
    }

    /// Runs one connection in a task of its own.
    pub fn spawn(&self, connection: impl Future<Output = ()> + Send + 'static) {
        let alive = self.alive.clone();
        let metrics = self.metrics.clone();
        metrics.open_connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _alive = alive;
            connection.await;
            metrics.open_connections.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// Waits until every connection has ended, at most until the deadline
    /// of the `Closing` phase (at once in any other phase); `what` names
    /// them in the warning when some are still open.
    pub async fn drain(self, shutdown: &ShutdownWatch, what: &str) {
        let deadline = match shutdown.phase() {
            Phase::Closing { deadline } => deadline,
            _ => Instant::now(),
        };
        let ConnectionTasks {
            alive,
            mut all_closed,
            ..
        } = self;
        drop(alive);
        if tokio::time::timeout_at(deadline, all_closed.recv())
            .await
            .is_err()
        {
            tracing::warn!("{what} still open after the shutdown timeout; closing them");
        }
    }
}
