//! The body of `GET /status`: the master's figures over the pools it is
//! asked about (all, or the one `?pool=NAME` names), each pool's own
//! figures in `pools` when the master runs named pools, and every slot of
//! them in `workers` (with its `pool`).
//!
//! With the single pool of a command line the body is what it always
//! was: no `pools`, no `pool` in the rows.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::control::served::{PoolInfo, ServedPool};
use crate::control::state::ControlState;
use crate::metrics::{quantile_of, RecentError};
use crate::workers::pool::{PmStatus, SlotState, SlotStatus};
use crate::workers::rolling::{RestartState, RestartStatus};

/// How many recent errors the master's figures keep, over all pools.
const RECENT_ERRORS: usize = 20;

/// Fixed facts about the running cluster (of its first pool, for the
/// pool's own facts).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub master_pid: u32,
    #[serde(flatten)]
    pub pool: PoolInfo,
    pub control: SocketAddr,
}

/// The body of `GET /status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    #[serde(flatten)]
    pub info: ClusterInfo,
    pub uptime_seconds: u64,
    pub total_workers: usize,
    pub ready_workers: usize,
    pub busy_workers: usize,
    pub queue_length: usize,
    pub requests_total: u64,
    /// The process manager (`--pm`): its mode, workers spawned and retired,
    /// and how often every slot was in use when another worker was wanted.
    /// Over several pools: the counts summed, the mode `mixed` when the
    /// pools differ.
    #[serde(default)]
    pub pm: PmStatus,
    /// Estimated request latency percentiles (p50, p90, p99) in milliseconds.
    pub latency_ms: Latency,
    /// The last 5xx answers.
    pub recent_errors: Vec<RecentError>,
    pub shutting_down: bool,
    /// The last rolling restart, running or finished (over several pools:
    /// the last one started, with its `pool`).
    pub restart: Option<RestartStatus>,
    pub workers: Vec<WorkerRow>,
    /// Each pool's figures, when the master runs named pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolStatus>,
}

/// One pool in `GET /status`'s `pools`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolStatus {
    pub name: String,
    #[serde(flatten)]
    pub info: PoolInfo,
    pub total_workers: usize,
    pub ready_workers: usize,
    pub busy_workers: usize,
    pub queue_length: usize,
    pub requests_total: u64,
    pub pm: PmStatus,
    pub latency_ms: Latency,
    pub restart: Option<RestartStatus>,
    /// Whether a worker of this pool was ever ready.
    pub ever_ready: bool,
    /// The last boot error of its workers, if any.
    pub boot_error: Option<String>,
}

/// Request latency percentiles in milliseconds (None before any request).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

impl Latency {
    fn of(pools: &[&ServedPool]) -> Latency {
        let histograms: Vec<_> = pools.iter().map(|p| &p.balancer.metrics.duration).collect();
        let ms = |q| quantile_of(&histograms, q).map(|s| s * 1000.0);
        Latency {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
        }
    }
}

/// One slot in `GET /status`: `SlotStatus`, kept as plain JSON so that
/// the client side needs no knowledge of the pool's types.
pub type WorkerRow = serde_json::Value;

/// The counts of one pool's slots.
struct Counts {
    total: usize,
    ready: usize,
    busy: usize,
}

impl Counts {
    fn of(slots: &[SlotStatus]) -> Counts {
        let count = |s: SlotState| slots.iter().filter(|w| w.state == s).count();
        Counts {
            total: slots.len(),
            ready: count(SlotState::Ready),
            busy: count(SlotState::Busy),
        }
    }
}

/// The status of `pools` (at least one).
pub async fn cluster_status(state: &ControlState, pools: &[Arc<ServedPool>]) -> ClusterStatus {
    let mut rows = Vec::new();
    let mut summaries = Vec::new();
    let mut errors = Vec::new();
    let mut restarts = Vec::new();
    for pool in pools {
        // The restart before the slots: a restart that says it succeeded
        // then comes with the slots it replaced.
        let restart = pool.restarts.last();
        let mut slots = pool.pool.status();
        fill_missing_rss(&mut slots).await;
        let counts = Counts::of(&slots);
        let metrics = &pool.balancer.metrics;
        restarts.extend(restart.clone());
        errors.extend(metrics.recent_errors().into_iter().map(|mut e| {
            e.pool = pool.named.then(|| pool.name.clone());
            e
        }));
        for slot in &slots {
            let mut row = serde_json::to_value(slot).unwrap_or_default();
            if let (true, Some(object)) = (pool.named, row.as_object_mut()) {
                object.insert("pool".into(), pool.name.clone().into());
            }
            rows.push(row);
        }
        summaries.push(PoolStatus {
            name: pool.name.clone(),
            info: pool.info.clone(),
            total_workers: counts.total,
            ready_workers: counts.ready,
            busy_workers: counts.busy,
            queue_length: pool.pool.queue_len(),
            requests_total: metrics.requests_total(),
            pm: pool.pool.pm_status(),
            latency_ms: Latency::of(&[pool]),
            restart,
            ever_ready: pool.pool.ever_ready(),
            boot_error: pool.pool.last_boot_error(),
        });
    }
    errors.sort_by_key(|e| e.at);
    let skip = errors.len().saturating_sub(RECENT_ERRORS);
    errors.drain(..skip);
    let first = &pools[0];
    let all: Vec<&ServedPool> = pools.iter().map(|p| &**p).collect();
    ClusterStatus {
        info: ClusterInfo {
            master_pid: state.master_pid,
            pool: first.info.clone(),
            control: state.control,
        },
        uptime_seconds: state.started.elapsed().as_secs(),
        total_workers: summaries.iter().map(|p| p.total_workers).sum(),
        ready_workers: summaries.iter().map(|p| p.ready_workers).sum(),
        busy_workers: summaries.iter().map(|p| p.busy_workers).sum(),
        queue_length: summaries.iter().map(|p| p.queue_length).sum(),
        requests_total: summaries.iter().map(|p| p.requests_total).sum(),
        pm: pm_over(&summaries),
        latency_ms: Latency::of(&all),
        recent_errors: errors,
        shutting_down: state.shutdown.phase().is_going_away(),
        restart: last_restart(restarts),
        workers: rows,
        pools: if first.named { summaries } else { Vec::new() },
    }
}

/// The process manager's figures over several pools.
fn pm_over(pools: &[PoolStatus]) -> PmStatus {
    if let [only] = pools {
        return only.pm.clone();
    }
    let mode = &pools[0].pm.mode;
    PmStatus {
        mode: if pools.iter().all(|p| &p.pm.mode == mode) {
            mode.clone()
        } else {
            "mixed".into()
        },
        spawned: pools.iter().map(|p| p.pm.spawned).sum(),
        retired: pools.iter().map(|p| p.pm.retired).sum(),
        max_workers_reached: pools.iter().map(|p| p.pm.max_workers_reached).sum(),
        ..PmStatus::default()
    }
}

/// The restart to show over several pools: a running one, else the one
/// started last.
fn last_restart(restarts: Vec<RestartStatus>) -> Option<RestartStatus> {
    restarts
        .into_iter()
        .max_by_key(|r| (r.state == RestartState::Running, r.started_at, r.id))
}

/// Fills in the RSS of workers that have not reported it yet (it is
/// sampled after requests), so a worker's RSS is known from its boot.
pub(crate) async fn fill_missing_rss(slots: &mut [SlotStatus]) {
    for slot in slots.iter_mut().filter(|s| s.rss_bytes == 0) {
        if let Some(pid) = slot.pid {
            slot.rss_bytes = crate::metrics::process_rss(pid).await.unwrap_or(0);
        }
    }
}
