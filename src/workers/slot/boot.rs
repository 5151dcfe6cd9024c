//! Making a slot's workers: booting one with its own jittered limits,
//! stopping a replaced one once its last request is over, and the backoff
//! between failed boots.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::phase::{Booted, Running};
use super::STOP_GRACE;
use crate::workers::native::event::WorkerEvent;
use crate::workers::pool::{ExitReason, Pool, WorkerId};
use crate::workers::process::{Worker, WorkerSpec};

/// Backoff after the first failed boot; doubles per failure.
const BACKOFF_START: Duration = Duration::from_millis(500);
/// Longest wait between two boot attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// When workers are recycled (built by config).
pub use crate::config::RecycleLimits as Limits;

/// Lets a replaced worker finish its request, then stops it.
pub(super) async fn retire(
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
pub(super) async fn boot(
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
                pool.replacement_started(slot, pid)
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
        served: running.id.served.clone(),
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
    let max_requests = limits
        .max_requests
        .map(|n| (n - (n as f64 * limits.jitter * seed) as u64).max(1));
    let ttl_deadline = limits
        .ttl
        .map(|ttl| Instant::now() + ttl.mul_f64(1.0 - limits.jitter * seed));
    Running {
        worker,
        events,
        events_open: true,
        id: WorkerId::new(generation),
        pid,
        ready_at: Instant::now(),
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
pub(super) fn backoff(failures: u32) -> Duration {
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
