//! Rolling restarts: every slot's worker is replaced surge-first,
//! `--max-surge` slots at a time. The roll stops at the first replacement
//! that fails to boot; the slots not yet rolled keep their old workers, so
//! a broken deploy never takes a running cluster down.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::metrics::unix_now;
use crate::systemd::Notifier;
use crate::workers::pool::{ExitReason, Pool, SlotCommand};

/// Progress of a rolling restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartState {
    Running,
    Succeeded,
    Failed,
}

/// A rolling restart, as `/status` and `POST /restart` report it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestartStatus {
    pub id: u64,
    /// The pool restarted, when the master runs named pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    pub state: RestartState,
    /// The slots this restart replaces, in order.
    pub slots: Vec<usize>,
    /// The slots replaced so far.
    pub done: Vec<usize>,
    pub started_at: u64,
    pub finished_at: Option<u64>,
    /// PHP's error when a replacement failed to boot.
    pub error: Option<String>,
}

/// Starts rolling restarts and remembers the last one.
pub struct Restarts {
    pool: Arc<Pool>,
    max_surge: usize,
    notifier: Arc<Notifier>,
    /// The pool's name, when the master runs named pools.
    name: Option<String>,
    last: Mutex<Option<RestartStatus>>,
}

impl Restarts {
    pub fn new(
        pool: Arc<Pool>,
        max_surge: usize,
        notifier: Arc<Notifier>,
        name: Option<String>,
    ) -> Self {
        Self {
            pool,
            max_surge: max_surge.max(1),
            notifier,
            name,
            last: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<RestartStatus>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a rolling restart of `slots` (all when None), or returns the
    /// one already running: a second request joins the first.
    pub fn start(self: &Arc<Self>, slots: Option<Vec<usize>>) -> RestartStatus {
        let mut last = self.lock();
        if let Some(running) = last.as_ref().filter(|r| r.state == RestartState::Running) {
            return running.clone();
        }
        let slots = slots.unwrap_or_else(|| (0..self.pool.len()).collect());
        let status = RestartStatus {
            id: last.as_ref().map(|r| r.id + 1).unwrap_or(1),
            pool: self.name.clone(),
            state: RestartState::Running,
            slots: slots.clone(),
            done: Vec::new(),
            started_at: unix_now(),
            finished_at: None,
            error: None,
        };
        *last = Some(status.clone());
        let pool = self
            .name
            .as_deref()
            .map(|n| format!(" of pool {n}"))
            .unwrap_or_default();
        tracing::info!("rolling restart {}{pool} of slots {slots:?}", status.id);
        tokio::spawn(self.clone().roll(status.id, slots));
        status
    }

    /// The last restart, running or finished.
    pub fn last(&self) -> Option<RestartStatus> {
        self.lock().clone()
    }

    async fn roll(self: Arc<Self>, id: u64, slots: Vec<usize>) {
        self.notifier.reloading();
        let mut error = None;
        'roll: for group in slots.chunks(self.max_surge) {
            let mut replies = Vec::new();
            for &slot in group {
                let (tx, rx) = oneshot::channel();
                let command = SlotCommand::Replace {
                    reason: ExitReason::Restart,
                    reply: Some(tx),
                };
                if !self.pool.command(slot, command) {
                    error = Some(format!("slot {slot} is not running"));
                    break 'roll;
                }
                replies.push((slot, rx));
            }
            for (slot, rx) in replies {
                match rx.await {
                    Ok(Ok(())) => self.update(id, |r| r.done.push(slot)),
                    Ok(Err(message)) => error = Some(format!("slot {slot}: {message}")),
                    Err(_) => error = Some(format!("slot {slot} stopped during the restart")),
                }
            }
            if error.is_some() {
                break;
            }
        }
        match &error {
            None => tracing::info!("rolling restart {id} done"),
            Some(message) => {
                tracing::error!("rolling restart {id} stopped; old workers keep serving: {message}")
            }
        }
        self.notifier.notify("READY=1");
        self.update(id, |r| {
            r.state = if error.is_some() {
                RestartState::Failed
            } else {
                RestartState::Succeeded
            };
            r.error = error;
            r.finished_at = Some(unix_now());
        });
    }

    fn update(&self, id: u64, change: impl FnOnce(&mut RestartStatus)) {
        if let Some(status) = self.lock().as_mut().filter(|r| r.id == id) {
            change(status);
        }
    }
}
