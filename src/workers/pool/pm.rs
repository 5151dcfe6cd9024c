//! The process manager: how many of the slots have a worker.
//!
//! # Theory of operation
//!
//! php-fpm's three modes, in ppm's terms. Every slot has its port from the
//! start; what varies is whether a worker runs behind it.
//!
//! - `static`: every slot always has a worker (ppm's behaviour before
//!   this module).
//! - `ondemand`: slots start `Empty`. A request that finds no idle worker
//!   waits in the queue as always, and wakes one empty slot per waiting
//!   request not already covered by a booting worker; a request for an
//!   empty slot's own port wakes that slot. An idle worker is retired
//!   after `--worker-idle-timeout`.
//! - `dynamic`: as ondemand, and besides the queue's demand the pool keeps
//!   between `--min-spare-workers` and `--max-spare-workers` idle workers:
//!   fewer and empty slots are woken, more and the longest idle ones are
//!   retired at once; idle ones past the minimum are retired after
//!   `--worker-idle-timeout`, so that after a load the pool shrinks to
//!   the minimum.
//!
//! The pool decides (under its lock, so the counts are exact) and sends
//! the slot tasks `Wake` and `Retire`; each slot task still owns its
//! worker and its phase: it boots on `Wake`, and on `Retire` takes its
//! worker out of the idle list only if it is still idle
//! (`Pool::retire_idle`), so a request is never cut off. At most
//! `--max-spawn-rate` slots are woken per second. When a worker is wanted
//! and every slot already has one, "max workers reached" is counted
//! (php-fpm's `max children reached`).
//!
//! Decisions happen when a request joins the queue, when a slot becomes
//! empty, and on a short maintenance tick (retirements, and wakes the
//! spawn rate put off).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Pool, Shared, SlotCommand, SlotState};
use crate::config::PmMode;

/// How often the maintenance tick runs at most.
const TICK: Duration = Duration::from_millis(200);

pub use crate::config::PmSettings;

/// What `/status` shows of the process manager.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PmStatus {
    /// `static`, `dynamic` or `ondemand`.
    pub mode: String,
    /// Workers started because requests or the spare bounds wanted one.
    pub spawned: u64,
    /// Idle workers stopped.
    pub retired: u64,
    /// Times a worker was wanted while every slot had one (php-fpm's
    /// `max children reached`).
    pub max_workers_reached: u64,
    /// `--min-spare-workers` and `--max-spare-workers` (dynamic only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_spare_workers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_spare_workers: Option<usize>,
    /// `--worker-idle-timeout` in seconds (dynamic and ondemand).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_idle_timeout: Option<f64>,
}

/// The process manager's counters and spawn-rate window (under the pool's
/// lock).
#[derive(Debug)]
pub(super) struct PmState {
    spawned: u64,
    pub(super) retired: u64,
    window_start: Instant,
    window_spawns: usize,
    /// The spare minimum is not met and no slot is left: counted once per
    /// such episode, as php-fpm does.
    at_max: bool,
}

impl PmState {
    pub(super) fn new() -> Self {
        PmState {
            spawned: 0,
            retired: 0,
            window_start: Instant::now(),
            window_spawns: 0,
            at_max: false,
        }
    }
}

impl Pool {
    /// `--pm`: static, dynamic or ondemand.
    pub fn pm_mode(&self) -> PmMode {
        self.pm.mode
    }

    /// Whether workers come and go with the load.
    pub fn is_elastic(&self) -> bool {
        self.pm.mode != PmMode::Static
    }

    /// The process manager's figures, for `/status` and the metrics.
    pub fn pm_status(&self) -> PmStatus {
        let shared = self.lock();
        let dynamic = self.pm.mode == PmMode::Dynamic;
        PmStatus {
            mode: self.pm.mode.as_str().to_string(),
            spawned: shared.pm.spawned,
            retired: shared.pm.retired,
            max_workers_reached: self.fpm.max_children_reached(),
            min_spare_workers: dynamic.then_some(self.pm.min_spare),
            max_spare_workers: dynamic.then_some(self.pm.max_spare),
            worker_idle_timeout: self
                .is_elastic()
                .then_some(self.pm.idle_timeout.as_secs_f64()),
        }
    }

    /// Wakes empty slots for the requests waiting and, in a dynamic pool,
    /// for the spare minimum. Called with the lock held.
    pub(super) fn demand(&self, shared: &mut Shared) {
        if !self.is_elastic() {
            return;
        }
        let now = Instant::now();
        // A request for a slot's own port needs that slot.
        let mut wanted: Vec<usize> = shared
            .waiters
            .iter()
            .filter_map(|w| w.slot())
            .filter(|&s| shared.slots[s].state == SlotState::Empty && !shared.slots[s].waking)
            .collect();
        wanted.dedup();
        for s in wanted {
            if !self.wake(shared, s, now) {
                return;
            }
        }
        let booting = shared
            .slots
            .iter()
            .filter(|s| s.waking || s.state == SlotState::Starting)
            .count();
        let waiting = shared.waiters.iter().filter(|w| w.slot().is_none()).count();
        let for_requests = waiting.saturating_sub(booting);
        let for_spares = if self.pm.mode == PmMode::Dynamic {
            self.pm
                .min_spare
                .saturating_sub(shared.idle.len() + booting)
        } else {
            0
        };
        let mut need = for_requests.max(for_spares);
        while need > 0 {
            let Some(s) = shared
                .slots
                .iter()
                .position(|s| s.state == SlotState::Empty && !s.waking)
            else {
                break;
            };
            if !self.wake(shared, s, now) {
                return;
            }
            need -= 1;
        }
        // The spare minimum cannot be met: every slot has a worker.
        let short = for_spares > 0 && need > 0;
        if short && !shared.pm.at_max {
            self.fpm.children_maxed();
        }
        shared.pm.at_max = short;
    }

    /// Tells empty slot `s` to boot a worker, unless `--max-spawn-rate`
    /// workers were started in the last second. Returns whether it did.
    fn wake(&self, shared: &mut Shared, s: usize, now: Instant) -> bool {
        let pm = &mut shared.pm;
        if now.duration_since(pm.window_start) >= Duration::from_secs(1) {
            pm.window_start = now;
            pm.window_spawns = 0;
        }
        if pm.window_spawns >= self.pm.max_spawn_rate {
            return false;
        }
        pm.window_spawns += 1;
        pm.spawned += 1;
        shared.slots[s].waking = true;
        self.command(s, SlotCommand::Wake);
        true
    }

    /// Whether a request that finds no idle worker can have one started:
    /// a slot is empty and not already waking.
    pub(super) fn has_room(shared: &Shared) -> bool {
        shared
            .slots
            .iter()
            .any(|s| s.state == SlotState::Empty && !s.waking)
    }

    /// The idle workers to retire now, longest idle first.
    fn retirements(&self, shared: &Shared, now: Instant) -> Vec<(usize, u64)> {
        let mut idle: Vec<(usize, u64, Instant)> = shared
            .idle
            .iter()
            .filter_map(|&s| {
                let slot = &shared.slots[s];
                Some((s, slot.worker.as_ref()?.generation, slot.idle_since?))
            })
            .collect();
        idle.sort_by_key(|&(_, _, since)| since);
        let timed_out = idle
            .iter()
            .filter(|&&(_, _, since)| now.duration_since(since) >= self.pm.idle_timeout)
            .count();
        let count = match self.pm.mode {
            PmMode::Static => 0,
            PmMode::Ondemand => timed_out,
            PmMode::Dynamic => {
                let over_max = idle.len().saturating_sub(self.pm.max_spare);
                let over_min = idle.len().saturating_sub(self.pm.min_spare);
                over_max.max(timed_out.min(over_min))
            }
        };
        idle.into_iter()
            .take(count)
            .map(|(s, generation, _)| (s, generation))
            .collect()
    }

    /// Whether every slot is as the process manager wants it for now: a
    /// worker serving, or empty with none wanted.
    pub fn settled(&self) -> bool {
        self.lock()
            .slots
            .iter()
            .all(|s| s.state.is_serving() || (s.state == SlotState::Empty && !s.waking))
    }

    /// Whether a request would be served: a worker can serve, or (dynamic
    /// and ondemand) an empty slot can boot one and no boot is failing.
    pub fn available(&self) -> bool {
        let shared = self.lock();
        shared.slots.iter().any(|s| s.state.is_serving())
            || (shared.slots.iter().any(|s| s.state == SlotState::Empty)
                && !shared.slots.iter().any(|s| s.boot_failing))
    }
}

/// The maintenance tick of a dynamic or ondemand pool: wakes what the
/// spawn rate put off and retires idle workers. Ends with the pool.
pub(super) async fn maintain(pool: std::sync::Weak<Pool>, idle_timeout: Duration) {
    let mut tick = tokio::time::interval(TICK.min(idle_timeout / 4).max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        if pool.is_closed() {
            return;
        }
        let retire = {
            let mut shared = pool.lock();
            pool.demand(&mut shared);
            pool.retirements(&shared, Instant::now())
        };
        for (slot, generation) in retire {
            pool.command(slot, SlotCommand::Retire { generation });
        }
        drop::<Arc<Pool>>(pool);
    }
}
