//! The hot path: a request takes an idle worker (`acquire`), or waits in
//! the FIFO queue, and gives it back (`release`) to the first queued
//! request that can take it or to the idle list.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::state::{transition, SlotState, WorkerId};
use super::status::SlotStatus;
use super::{pm, AcquireError, FrameConn, Lease, Pool, SlotCommand};

/// What the dispatcher knows of one slot: what it needs to hand a request
/// to the slot's worker, and what `/status` reads. The slot task (which
/// owns the worker processes) writes it through `report.rs`; requests
/// through `acquire` and `release`.
pub(super) struct Slot {
    pub(super) index: usize,
    pub(super) state: SlotState,
    /// The worker serving the slot, once booted.
    pub(super) worker: Option<Arc<WorkerId>>,
    /// Its connection, while it is idle.
    pub(super) conn: Option<FrameConn>,
    /// A lease on the current worker is out.
    pub(super) leased: bool,
    /// Replaced workers still serving a request, and who to tell when done.
    pub(super) draining: Vec<Drained>,
    /// The slot's last boot failed and no worker has been ready since.
    pub(super) boot_failing: bool,
    /// The worker reached a recycle limit: once its request is over it
    /// takes no other, until its replacement takes over.
    pub(super) retiring: bool,
    /// Since when the worker has been on the idle list.
    pub(super) idle_since: Option<Instant>,
    /// The process manager told this empty slot to boot a worker, and it
    /// has not started yet.
    pub(super) waking: bool,
    /// Requests served by the slot's workers that are gone.
    pub(super) past_requests: u64,
    /// The rest of what `/status` shows, as the slot task reported it.
    pub(super) status: SlotStatus,
}

/// A worker that no longer serves the slot (replaced, or gone) while a
/// lease on it is still out: its last request is counted, and whoever
/// waits is told, when that lease comes back.
pub(super) struct Drained {
    pub(super) id: Arc<WorkerId>,
    pub(super) done: Option<oneshot::Sender<()>>,
}

impl Slot {
    pub(super) fn new(index: usize, port: u16, state: SlotState) -> Self {
        Slot {
            index,
            state,
            worker: None,
            conn: None,
            leased: false,
            draining: Vec::new(),
            boot_failing: false,
            retiring: false,
            idle_since: None,
            waking: false,
            past_requests: 0,
            status: SlotStatus::new(index, port, state),
        }
    }

    /// Moves the slot to `next` through the transition table.
    pub(super) fn become_(&mut self, next: SlotState) -> bool {
        transition(self.index, &mut self.state, next)
    }

    /// Whether worker `generation` is the one serving the slot.
    pub(super) fn serves(&self, generation: u64) -> bool {
        self.worker
            .as_ref()
            .is_some_and(|w| w.generation == generation)
    }

    /// The current worker leaves the dispatcher: its requests are the
    /// slot's past, once the request it may be serving is over.
    pub(super) fn forget_worker(&mut self, done: Option<oneshot::Sender<()>>) {
        match self.worker.take() {
            Some(id) if self.leased => self.draining.push(Drained { id, done }),
            other => {
                self.past_requests += other.map_or(0, |id| id.served());
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
        }
        self.conn = None;
        self.leased = false;
        self.retiring = false;
        self.idle_since = None;
        self.status.current_request = None;
    }
}

pub(super) struct Waiter {
    id: u64,
    slot: Option<usize>,
    tx: oneshot::Sender<Result<Lease, AcquireError>>,
}

impl Waiter {
    pub(super) fn slot(&self) -> Option<usize> {
        self.slot
    }
}

/// Everything under the pool's one lock.
pub(super) struct Shared {
    pub(super) slots: Vec<Slot>,
    pub(super) idle: VecDeque<usize>,
    pub(super) waiters: VecDeque<Waiter>,
    pub(super) next_waiter: u64,
    /// A worker has been ready at least once since the master started.
    pub(super) ever_ready: bool,
    /// The last boot error logged in full, so the same PHP error from every
    /// slot and attempt is not printed again and again.
    pub(super) logged_boot_error: Option<String>,
    pub(super) pm: pm::PmState,
}

impl Shared {
    /// Whether no worker of the given slot (or of any slot) can serve and
    /// each one's last boot failed: a request would wait for nothing.
    pub(super) fn cannot_serve(&self, slot: Option<usize>) -> bool {
        let mut slots = self.slots.iter().enumerate();
        slots.all(|(i, s)| {
            slot.is_some_and(|want| want != i) || (!s.state.is_serving() && s.boot_failing)
        })
    }

    /// Answers every queued request with `error`.
    pub(super) fn refuse_waiters(&mut self, error: AcquireError) {
        for waiter in std::mem::take(&mut self.waiters) {
            let _ = waiter.tx.send(Err(error));
        }
    }
}

impl Pool {
    /// Takes an idle worker (any, or the given slot's), waiting in the FIFO
    /// queue when none is idle.
    pub async fn acquire(self: &Arc<Self>, slot: Option<usize>) -> Result<Lease, AcquireError> {
        let (id, mut rx) = {
            let mut shared = self.lock();
            let found = match slot {
                None => shared.idle.pop_front(),
                Some(s) => shared
                    .idle
                    .iter()
                    .position(|&i| i == s)
                    .and_then(|pos| shared.idle.remove(pos)),
            };
            if let Some(s) = found {
                return Ok(self.lease_idle(&mut shared, s));
            }
            if shared.cannot_serve(slot) {
                return Err(AcquireError::NoWorkers);
            }
            if shared.waiters.len() >= self.max_queue {
                return Err(AcquireError::QueueFull);
            }
            let id = shared.next_waiter;
            shared.next_waiter += 1;
            let (tx, rx) = oneshot::channel();
            // Every worker is busy and no slot is left to start another:
            // php-fpm's "max children reached".
            let maxed = shared.idle.is_empty() && !Self::has_room(&shared);
            shared.waiters.push_back(Waiter { id, slot, tx });
            self.fpm.queued(shared.waiters.len(), maxed);
            self.demand(&mut shared);
            (id, rx)
        };
        // Leaves the queue when the request gives up or its client goes.
        let _guard = WaiterGuard { pool: self, id };
        match tokio::time::timeout(self.queue_timeout, &mut rx).await {
            Ok(Ok(lease)) => lease,
            Ok(Err(_)) => Err(AcquireError::ShuttingDown),
            Err(_) => {
                self.remove_waiter(id);
                // A worker may have been handed over just as time ran out.
                rx.try_recv().unwrap_or(Err(AcquireError::Timeout))
            }
        }
    }

    fn remove_waiter(&self, id: u64) {
        let mut shared = self.lock();
        shared.waiters.retain(|w| w.id != id);
    }

    /// Marks slot `s` (which must be ready, or busy handing over, with a
    /// connection) busy and leases it.
    fn lease_idle(self: &Arc<Self>, shared: &mut Shared, s: usize) -> Lease {
        let slot = &mut shared.slots[s];
        slot.become_(SlotState::Busy);
        slot.leased = true;
        slot.idle_since = None;
        self.fpm.leased();
        Lease {
            pool: self.clone(),
            slot: s,
            generation: slot.worker.as_ref().map_or(0, |w| w.generation),
            conn: slot.conn.take(),
            sent: false,
            completed: false,
            retire: false,
            memory: None,
        }
    }

    /// Gives slot `s`'s idle worker to the first queued request that can
    /// take it, or puts it on the idle list. A busy slot goes from one
    /// request to the next without being idle in between; a slot whose
    /// worker just became ready (booted, took over, serves on) is `Ready`
    /// first.
    pub(super) fn hand_over(self: &Arc<Self>, shared: &mut Shared, s: usize) {
        if shared.slots[s].state != SlotState::Busy {
            shared.slots[s].become_(SlotState::Ready);
        }
        while let Some(pos) = shared
            .waiters
            .iter()
            .position(|w| w.slot.is_none() || w.slot == Some(s))
        {
            let Some(waiter) = shared.waiters.remove(pos) else {
                break;
            };
            let lease = self.lease_idle(shared, s);
            match waiter.tx.send(Ok(lease)) {
                Ok(()) => return,
                Err(Ok(mut lease)) => {
                    // That client left; take the worker back unused.
                    let slot = &mut shared.slots[s];
                    slot.conn = lease.conn.take();
                    slot.leased = false;
                }
                Err(Err(_)) => {}
            }
        }
        let slot = &mut shared.slots[s];
        slot.become_(SlotState::Ready);
        slot.idle_since = Some(Instant::now());
        shared.idle.push_back(s);
    }

    /// Slot `s`'s worker finished a request or became ready: it takes the
    /// next one, or, when it is retiring, waits for its replacement.
    pub(super) fn idle_again(self: &Arc<Self>, shared: &mut Shared, s: usize) {
        if shared.slots[s].retiring {
            shared.slots[s].become_(SlotState::Draining);
        } else {
            self.hand_over(shared, s);
        }
    }

    /// Takes back the worker of `lease`, which is being dropped, with its
    /// connection: reusable if the response was read to its end (or
    /// nothing was sent).
    pub(super) fn release(self: &Arc<Self>, lease: &Lease, conn: FrameConn) {
        let (s, generation) = (lease.slot, lease.generation);
        if lease.sent && !lease.completed {
            // The exchange counts the requests it saw to their end
            // (`FrameConn::finished`); one cut short is counted here, on
            // the same counter.
            conn.recycle.served.fetch_add(1, Ordering::Relaxed);
        }
        let reusable = lease.completed || !lease.sent;
        let mut shared = self.lock();
        let slot = &mut shared.slots[s];
        if let Some(pos) = slot
            .draining
            .iter()
            .position(|d| d.id.generation == generation)
        {
            // A replaced worker finished its last request.
            let drained = slot.draining.swap_remove(pos);
            slot.past_requests += drained.id.served();
            if let Some(done) = drained.done {
                let _ = done.send(());
            }
            return;
        }
        if !slot.serves(generation) || !slot.leased {
            return;
        }
        if let Some((memory, peak)) = lease.memory {
            slot.status.memory_bytes = memory;
            slot.status.peak_memory_bytes = peak;
        }
        slot.leased = false;
        slot.status.current_request = None;
        if lease.retire {
            slot.retiring = true;
        }
        if reusable && !conn.is_closed() {
            // The exchange read the worker's `Ready` before giving the
            // lease back: the worker is idle.
            slot.conn = Some(conn);
            self.idle_again(&mut shared, s);
        } else {
            // The worker may be fine but this connection is not; the slot
            // stays busy until its task has replaced the worker.
            drop(shared);
            self.command(s, SlotCommand::ConnectionBroke { generation });
        }
    }
}

struct WaiterGuard<'a> {
    pool: &'a Pool,
    id: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.pool.remove_waiter(self.id);
    }
}
