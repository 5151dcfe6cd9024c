//! Starting a pool: the dispatcher, then one task per slot.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Limits, SlotTask};
use crate::workers::pool::Pool;
use crate::workers::process::WorkerSpec;

/// Where and how the pool runs its workers.
pub struct PoolConfig {
    pub spec: Arc<WorkerSpec>,
    /// The public port of each slot, for status only.
    pub slot_ports: Vec<u16>,
    pub max_queue: usize,
    pub queue_timeout: Duration,
    pub max_surge: usize,
    pub limits: Limits,
    /// Debug mode: where files workers report as included go.
    pub included_files: Option<mpsc::UnboundedSender<Vec<std::path::PathBuf>>>,
    /// The process manager: static, dynamic or ondemand.
    pub pm: crate::workers::pool::PmSettings,
    /// The master's shutdown phase.
    pub shutdown: crate::shutdown::ShutdownWatch,
}

/// Creates the pool (the dispatcher) and starts one task per slot, which
/// owns the slot's workers. The returned handles end when the slots have
/// stopped (after `Pool::stop_all`).
pub fn start_pool(config: PoolConfig) -> (Arc<Pool>, Vec<JoinHandle<()>>) {
    let (pool, receivers) = Pool::new(
        &config.slot_ports,
        config.max_queue,
        config.queue_timeout,
        config.max_surge,
        config.included_files.clone(),
        config.pm.clone(),
        config.shutdown.clone(),
    );
    // Slots of a dynamic or ondemand pool start empty; the process manager
    // wakes the ones it wants.
    let empty = pool.is_elastic();
    pool.start_pm();
    let tasks = receivers
        .into_iter()
        .enumerate()
        .map(|(slot, rx)| {
            let task = SlotTask::new(
                pool.clone(),
                slot,
                config.spec.clone(),
                config.limits.clone(),
                rx,
                empty,
            );
            tokio::spawn(task.run())
        })
        .collect();
    (pool, tasks)
}
