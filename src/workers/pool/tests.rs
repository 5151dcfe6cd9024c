//! The dispatcher's bookkeeping and its transition table.

use super::*;
use SlotState::*;

#[test]
fn a_worker_boots_serves_and_exits() {
    for (from, to) in [
        (Exited, Starting),
        (Starting, Ready),
        (Ready, Busy),
        (Busy, Ready),
        (Busy, Starting),
        (Ready, Stopping),
        (Stopping, Exited),
    ] {
        assert!(from.can_become(to), "{from:?} -> {to:?}");
    }
}

#[test]
fn a_booting_worker_cannot_take_requests() {
    assert!(!Starting.can_become(Busy));
    assert!(!Backoff.can_become(Ready));
    assert!(!Exited.can_become(Ready));
    assert!(!Stopping.can_become(Ready));
}

#[test]
fn an_empty_slot_only_boots_or_stops_and_only_an_idle_retirement_empties_one() {
    assert!(Empty.can_become(Starting));
    assert!(Empty.can_become(Exited));
    assert!(!Empty.can_become(Ready));
    assert!(!Empty.can_become(Busy));
    assert!(Ready.can_become(Empty));
    assert!(!Busy.can_become(Empty));
    assert!(!Draining.can_become(Empty));
}

#[test]
fn exit_reasons_read_like_the_options() {
    assert_eq!(ExitReason::MaxRequests.to_string(), "max-requests");
    assert_eq!(ExitReason::Ttl.to_string(), "ttl");
}

// The dispatcher's bookkeeping, driven the way the slot tasks and the
// request path drive it. The workers' connections are real Unix sockets
// whose far ends stay silent: the pool never reads from them itself.

use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::{mpsc, oneshot};

use crate::workers::native::event::WorkerEvent;

const LONG: Duration = Duration::from_secs(30);

/// A static pool of `slots` slots, with the receivers of the commands the
/// pool sends its slot tasks.
fn pool_of(
    slots: usize,
    max_queue: usize,
    queue_timeout: Duration,
) -> (Arc<Pool>, Vec<UnboundedReceiver<SlotCommand>>) {
    let ports: Vec<u16> = (0..slots as u16).map(|i| 9000 + i).collect();
    Pool::new(
        &ports,
        max_queue,
        queue_timeout,
        1,
        None,
        PmSettings::fixed(),
        crate::shutdown::Shutdown::new(None).watch(),
    )
}

/// A connection to worker `id`, counting its requests on `id`'s counter
/// as the slot task sets it up, and the worker's end of it (kept open).
fn connection(id: &Arc<WorkerId>) -> (FrameConn, UnixStream) {
    let (master, worker) = UnixStream::pair().unwrap();
    let (events, _) = mpsc::unbounded_channel::<WorkerEvent>();
    let mut conn = FrameConn::new(master, "test".into(), events);
    conn.recycle.served = id.served.clone();
    (conn, worker)
}

fn pid(generation: u64) -> u32 {
    1000 + generation as u32
}

/// Worker `generation` of slot `s` boots as the slot task tells it: the
/// slot is starting, then the worker is ready with its connection.
fn boot(pool: &Arc<Pool>, s: usize, generation: u64) -> UnixStream {
    pool.booting(s);
    ready(pool, s, generation)
}

/// Worker `generation` of slot `s` is ready.
fn ready(pool: &Arc<Pool>, s: usize, generation: u64) -> UnixStream {
    let id = WorkerId::new(generation);
    let (conn, peer) = connection(&id);
    pool.ready(s, id, pid(generation), conn);
    peer
}

/// A replacement worker `generation` takes slot `s` over from the one
/// before it.
fn replace(pool: &Arc<Pool>, s: usize, generation: u64) -> (oneshot::Receiver<()>, UnixStream) {
    let id = WorkerId::new(generation);
    let (conn, peer) = connection(&id);
    (
        pool.swap(s, id, pid(generation), conn, pid(generation - 1)),
        peer,
    )
}

/// Plays one whole exchange on the lease as the exchange does (the request
/// counted when the worker's stats arrive) and gives the worker back.
fn serve(mut lease: Lease) {
    let mut conn = lease.take_conn().expect("the lease holds the connection");
    conn.recycle.finished(0, 0);
    lease.put_back(conn);
    lease.complete();
}

fn state(pool: &Pool, s: usize) -> SlotState {
    pool.lock().slots[s].state
}

fn idle(pool: &Pool) -> Vec<usize> {
    pool.lock().idle.iter().copied().collect()
}

/// A request waiting in the queue, as its own task.
fn queued(
    pool: &Arc<Pool>,
    slot: Option<usize>,
) -> tokio::task::JoinHandle<Result<Lease, AcquireError>> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.acquire(slot).await })
}

/// Waits (bounded) until `n` requests are queued.
async fn until_queued(pool: &Pool, n: usize) {
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        while pool.queue_len() != n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "{n} requests queued (have {})",
        pool.queue_len()
    );
}

async fn lease_of(task: tokio::task::JoinHandle<Result<Lease, AcquireError>>) -> Lease {
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the queued request got an answer")
        .unwrap()
        .expect("the queued request got a worker")
}

#[tokio::test]
async fn acquire_takes_idle_workers_in_turn_and_release_puts_one_at_the_back() {
    let (pool, _commands) = pool_of(2, 4, LONG);
    let _workers = [boot(&pool, 0, 1), boot(&pool, 1, 1)];
    assert_eq!(idle(&pool), [0, 1]);

    let first = pool.acquire(None).await.unwrap();
    assert_eq!((first.slot(), first.generation()), (0, 1));
    assert_eq!(state(&pool, 0), Busy);
    assert_eq!(idle(&pool), [1]);
    serve(first);
    assert_eq!(state(&pool, 0), Ready);
    assert_eq!(idle(&pool), [1, 0], "a released worker goes to the back");

    let second = pool.acquire(None).await.unwrap();
    assert_eq!(second.slot(), 1, "the other worker's turn");
    serve(second);
    let status = &pool.status()[0];
    assert_eq!((status.requests, status.worker_requests), (1, 1));
}

#[tokio::test]
async fn a_request_for_one_slot_takes_that_slots_worker_only() {
    let (pool, _commands) = pool_of(2, 4, Duration::from_millis(50));
    let _workers = [boot(&pool, 0, 1), boot(&pool, 1, 1)];
    let lease = pool.acquire(Some(1)).await.unwrap();
    assert_eq!(lease.slot(), 1);
    assert_eq!(idle(&pool), [0]);
    // Slot 0 is idle, but this request wants slot 1.
    assert_eq!(
        pool.acquire(Some(1)).await.err(),
        Some(AcquireError::Timeout)
    );
    assert_eq!(idle(&pool), [0]);
    assert_eq!(
        pool.queue_len(),
        0,
        "the request that gave up left the queue"
    );
}

#[tokio::test]
async fn a_released_worker_goes_straight_to_the_first_queued_request() {
    let (pool, _commands) = pool_of(1, 4, LONG);
    let _worker = boot(&pool, 0, 1);
    let first = pool.acquire(None).await.unwrap();
    let a = queued(&pool, None);
    until_queued(&pool, 1).await;
    let b = queued(&pool, Some(0));
    until_queued(&pool, 2).await;

    serve(first);
    let a = lease_of(a).await;
    assert_eq!(state(&pool, 0), Busy, "handed over, never idle in between");
    assert!(idle(&pool).is_empty());
    assert_eq!(pool.queue_len(), 1);
    serve(a);
    let b = lease_of(b).await;
    assert_eq!(pool.queue_len(), 0);
    serve(b);
    assert_eq!(state(&pool, 0), Ready);
    assert_eq!(idle(&pool), [0]);
    assert_eq!(pool.status()[0].requests, 3);
}

#[tokio::test]
async fn a_request_that_gives_up_leaves_the_queue_and_the_worker_goes_idle() {
    let (pool, _commands) = pool_of(1, 4, LONG);
    let _worker = boot(&pool, 0, 1);
    let lease = pool.acquire(None).await.unwrap();
    let gone = queued(&pool, None);
    until_queued(&pool, 1).await;
    // Its client went away: the request's future is dropped.
    gone.abort();
    assert!(gone.await.is_err_and(|e| e.is_cancelled()));
    assert_eq!(pool.queue_len(), 0);
    serve(lease);
    assert_eq!(idle(&pool), [0]);
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_and_a_queued_request_times_out() {
    let (pool, _commands) = pool_of(1, 1, Duration::from_millis(100));
    let _worker = boot(&pool, 0, 1);
    let _lease = pool.acquire(None).await.unwrap();
    let waiting = queued(&pool, None);
    until_queued(&pool, 1).await;
    assert_eq!(
        pool.acquire(None).await.err(),
        Some(AcquireError::QueueFull)
    );
    let answer = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.err(), Some(AcquireError::Timeout));
    assert_eq!(pool.queue_len(), 0);
}

#[tokio::test]
async fn an_exchange_cut_short_keeps_the_slot_busy_until_the_slot_task_reconnects() {
    let (pool, mut commands) = pool_of(1, 4, Duration::from_millis(50));
    let _worker = boot(&pool, 0, 1);
    let mut lease = pool.acquire(None).await.unwrap();
    let conn = lease.take_conn().unwrap();
    lease.put_back(conn);
    // Dropped without `complete`: the response was not read to its end.
    drop(lease);
    assert!(matches!(
        commands[0].try_recv(),
        Ok(SlotCommand::ConnectionBroke { generation: 1 })
    ));
    assert_eq!(state(&pool, 0), Busy);
    assert!(idle(&pool).is_empty());
    assert_eq!(pool.acquire(None).await.err(), Some(AcquireError::Timeout));
    assert_eq!(pool.status()[0].requests, 1, "the request was sent");
    // The slot task kills that worker and boots another at once.
    pool.worker_gone(0, ExitReason::Crash, "killed".into(), Starting);
    assert_eq!(state(&pool, 0), Starting);
    let _new = ready(&pool, 0, 2);
    assert_eq!(state(&pool, 0), Ready);
    assert_eq!(idle(&pool), [0]);
    let status = &pool.status()[0];
    assert_eq!((status.requests, status.worker_requests), (1, 0));
}

#[tokio::test]
async fn a_lease_given_back_unsent_counts_no_request() {
    let (pool, mut commands) = pool_of(1, 4, LONG);
    let _worker = boot(&pool, 0, 1);
    let mut lease = pool.acquire(None).await.unwrap();
    let conn = lease.take_conn().unwrap();
    lease.put_back(conn);
    lease.unsent();
    drop(lease);
    assert!(commands[0].try_recv().is_err(), "nothing to reconnect");
    assert_eq!(idle(&pool), [0]);
    assert_eq!(pool.status()[0].requests, 0);
}

#[tokio::test]
async fn a_swap_of_an_idle_worker_takes_over_at_once() {
    let (pool, _commands) = pool_of(1, 4, LONG);
    let _old = boot(&pool, 0, 1);
    let (mut done, _new) = replace(&pool, 0, 2);
    assert_eq!(
        done.try_recv(),
        Ok(()),
        "the old worker had nothing in flight"
    );
    assert_eq!(state(&pool, 0), Ready);
    assert_eq!(idle(&pool), [0], "on the idle list once");
    assert_eq!(pool.status()[0].pid, Some(1002));
    let lease = pool.acquire(None).await.unwrap();
    assert_eq!(lease.generation(), 2);
}

#[tokio::test]
async fn a_long_request_on_the_old_worker_finishes_across_a_swap_while_new_ones_go_to_the_new() {
    let (pool, _commands) = pool_of(1, 4, LONG);
    let _old = boot(&pool, 0, 1);
    let mut long = pool.acquire(None).await.unwrap();
    let mut old_conn = long.take_conn().unwrap();
    long.begin("GET", "/sleep");

    let (mut done, _new) = replace(&pool, 0, 2);
    assert!(done.try_recv().is_err(), "the old worker is still serving");
    assert_eq!(pool.status()[0].pid, Some(1002));
    // A new request does not wait for the long one.
    let fresh = pool.acquire(None).await.unwrap();
    assert_eq!(fresh.generation(), 2);
    assert_eq!(state(&pool, 0), Busy);

    // The long request ends on the old worker.
    old_conn.recycle.finished(0, 0);
    long.put_back(old_conn);
    long.complete();
    drop(long);
    assert_eq!(
        done.try_recv(),
        Ok(()),
        "the slot task hears the old worker is free"
    );
    assert_eq!(
        state(&pool, 0),
        Busy,
        "the new worker's request is untouched"
    );
    assert!(idle(&pool).is_empty());
    let status = &pool.status()[0];
    assert_eq!((status.requests, status.worker_requests), (1, 0));

    serve(fresh);
    assert_eq!(idle(&pool), [0]);
    let status = &pool.status()[0];
    assert_eq!((status.requests, status.worker_requests), (2, 1));
}

#[tokio::test]
async fn a_swap_hands_the_new_worker_to_a_queued_request() {
    let (pool, _commands) = pool_of(1, 4, LONG);
    let _old = boot(&pool, 0, 1);
    let busy = pool.acquire(None).await.unwrap();
    let waiting = queued(&pool, None);
    until_queued(&pool, 1).await;
    let (_done, _new) = replace(&pool, 0, 2);
    let lease = lease_of(waiting).await;
    assert_eq!(lease.generation(), 2);
    drop(busy);
    drop(lease);
}

#[tokio::test]
async fn a_retiring_worker_takes_no_request_after_its_last_and_its_replacement_does() {
    let (pool, _commands) = pool_of(1, 4, LONG);
    let _old = boot(&pool, 0, 1);
    let mut last = pool.acquire(None).await.unwrap();
    last.retire_after();
    serve(last);
    assert_eq!(state(&pool, 0), Draining);
    assert!(idle(&pool).is_empty());
    let waiting = queued(&pool, None);
    until_queued(&pool, 1).await;
    let (mut done, _new) = replace(&pool, 0, 2);
    assert_eq!(done.try_recv(), Ok(()));
    assert_eq!(lease_of(waiting).await.generation(), 2);
}

#[tokio::test]
async fn a_retiring_worker_whose_replacement_failed_serves_on() {
    let (pool, _commands) = pool_of(1, 4, LONG);
    let _old = boot(&pool, 0, 1);
    pool.retire(0);
    assert_eq!(state(&pool, 0), Draining);
    assert!(idle(&pool).is_empty());
    pool.keep_serving(0);
    assert_eq!(state(&pool, 0), Ready);
    assert_eq!(idle(&pool), [0]);
}

#[tokio::test]
async fn a_lease_on_a_worker_that_died_comes_back_without_touching_its_successor() {
    let (pool, mut commands) = pool_of(1, 4, LONG);
    let _old = boot(&pool, 0, 1);
    let mut lease = pool.acquire(None).await.unwrap();
    let conn = lease.take_conn().unwrap();
    // The worker died during the request; the slot task boots another.
    pool.worker_gone(0, ExitReason::Crash, "killed".into(), Starting);
    let _new = ready(&pool, 0, 2);
    lease.put_back(conn);
    drop(lease);
    assert!(
        commands[0].try_recv().is_err(),
        "no news of the new worker's connection"
    );
    assert_eq!(state(&pool, 0), Ready);
    assert_eq!(idle(&pool), [0]);
    let status = &pool.status()[0];
    assert_eq!(
        (
            status.pid,
            status.restarts,
            status.requests,
            status.worker_requests
        ),
        (Some(1002), 1, 1, 0),
        "the request cut short counts for the slot, not for the new worker"
    );
}

#[tokio::test]
async fn a_replacement_whose_worker_died_while_it_booted_takes_the_slot_as_a_fresh_boot() {
    let (pool, _commands) = pool_of(1, 4, LONG);
    let _old = boot(&pool, 0, 1);
    pool.replacement_started(0, pid(2));
    pool.worker_gone(0, ExitReason::Crash, "killed".into(), Starting);
    assert_eq!(state(&pool, 0), Starting);
    let _new = ready(&pool, 0, 2);
    assert_eq!(state(&pool, 0), Ready);
    let status = &pool.status()[0];
    assert_eq!(
        (status.pid, status.replacement_pid, status.restarts),
        (Some(pid(2)), None, 1)
    );
}

#[tokio::test]
async fn a_slot_without_a_worker_stops_in_one_move() {
    let (pool, _commands) = pool_of(1, 4, LONG);
    pool.booting(0);
    pool.stopped(0);
    assert_eq!(state(&pool, 0), Exited);
}

#[tokio::test]
async fn when_every_slot_fails_to_boot_queued_requests_are_answered_at_once() {
    let (pool, _commands) = pool_of(2, 4, LONG);
    pool.booting(0);
    pool.booting(1);
    let waiting = queued(&pool, None);
    until_queued(&pool, 1).await;
    assert!(pool.boot_failed(0, "Parse error", Backoff));
    assert_eq!(pool.queue_len(), 1, "slot 1 may still boot");
    assert!(
        !pool.boot_failed(1, "Parse error", Failed),
        "the same error, logged once"
    );
    let answer = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.err(), Some(AcquireError::NoWorkers));
    assert_eq!(
        pool.acquire(None).await.err(),
        Some(AcquireError::NoWorkers)
    );
    // One slot boots after all: requests are served again.
    pool.booting(1);
    let _worker = ready(&pool, 1, 2);
    assert_eq!(pool.acquire(None).await.unwrap().slot(), 1);
}

#[test]
fn the_transition_table_allows_exactly_these_moves() {
    let all = [
        Starting, Ready, Busy, Draining, Stopping, Exited, Backoff, Failed, Empty,
    ];
    // Written out pair by pair so that a change to the table is a change
    // to this list too.
    let allowed = [
        (Exited, Starting),
        (Backoff, Starting),
        (Failed, Starting),
        (Empty, Starting),
        (Ready, Starting),
        (Busy, Starting),
        (Draining, Starting),
        (Ready, Backoff),
        (Busy, Backoff),
        (Draining, Backoff),
        (Starting, Ready),
        (Starting, Backoff),
        (Starting, Failed),
        (Ready, Busy),
        (Busy, Ready),
        (Ready, Draining),
        (Busy, Draining),
        (Draining, Ready),
        (Ready, Stopping),
        (Busy, Stopping),
        (Draining, Stopping),
        (Stopping, Exited),
        (Starting, Exited),
        (Backoff, Exited),
        (Failed, Exited),
        (Empty, Exited),
        (Ready, Empty),
    ];
    for from in all {
        for to in all {
            assert_eq!(
                from.can_become(to),
                allowed.contains(&(from, to)),
                "{from:?} -> {to:?}"
            );
        }
    }
}

/// An illegal move is refused, in release builds too: the slot stays
/// where it was (and the bug is logged with both states).
#[test]
fn an_illegal_transition_is_refused() {
    let mut state = Starting;
    assert!(!state::transition(0, &mut state, Busy));
    assert_eq!(state, Starting);
    assert!(
        state::transition(0, &mut state, Starting),
        "staying is no move"
    );
    assert!(state::transition(0, &mut state, Ready));
    assert_eq!(state, Ready);
}

/// The same through the slot task's API: a slot that is still booting
/// cannot be stopping (it has no worker to stop), nor retired as idle.
#[tokio::test]
async fn a_slot_task_report_that_breaks_the_table_changes_nothing() {
    let (pool, _commands) = pool_of(1, 4, LONG);
    pool.booting(0);
    pool.stopping(0);
    assert_eq!(state(&pool, 0), Starting);
    assert!(!pool.retire_idle(0));
    assert_eq!(state(&pool, 0), Starting);
    let _worker = ready(&pool, 0, 1);
    assert_eq!(state(&pool, 0), Ready);
    pool.stopping(0);
    assert_eq!(state(&pool, 0), Stopping);
}
