//! The connection tasks of one listener: each counted in
//! `open_connections` while it runs, and all of them waited for (up to the
//! shutdown grace) once the listener closes.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::metrics::Metrics;

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

    /// Waits until every connection has ended, for at most `grace`;
    /// `what` names them in the warning when some are still open.
    pub async fn drain(self, grace: Duration, what: &str) {
        let ConnectionTasks {
            alive,
            mut all_closed,
            ..
        } = self;
        drop(alive);
        if tokio::time::timeout(grace, all_closed.recv())
            .await
            .is_err()
        {
            tracing::warn!("{what} still open after the shutdown timeout; closing them");
        }
    }
}
