//! Starting child processes that die with the master.
//!
//! Each worker is started with the parent-death signal set to SIGKILL
//! (`PR_SET_PDEATHSIG`), so the kernel kills it the moment the master
//! dies, however it dies (`kill -9` included) and whatever the worker is
//! doing: a worker busy in a long request never reads the EOF of its
//! control channel, so that alone does not stop it.
//!
//! The signal fires when the *thread* that forked the child exits, not
//! the process. Tokio's threads come and go (blocking threads retire
//! after 10 s idle; a worker thread that ran `block_in_place` may too), so
//! children are forked by one dedicated thread that is never told to end:
//! its job queue's sender lives in a static. It only forks; the spawns
//! are short, and the caller awaits the result without blocking.

use std::io;
use std::sync::mpsc;
use std::sync::OnceLock;

use nix::sys::signal::Signal;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// The queue of the forking thread, started on first use.
fn queue() -> io::Result<&'static mpsc::Sender<Job>> {
    static QUEUE: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    if let Some(queue) = QUEUE.get() {
        return Ok(queue);
    }
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("ppm-spawner".into())
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                job();
            }
        })?;
    // Two first callers may race: the loser's thread ends at once (its
    // sender is dropped) before it forked anything.
    Ok(QUEUE.get_or_init(|| tx))
}

/// Spawns `cmd` from the long-lived forking thread, as a process the
/// kernel kills when the master dies. `cmd` is dropped after the fork,
/// closing the master's copies of the descriptors it passes on.
pub async fn spawn_tied(mut cmd: Command) -> io::Result<Child> {
    let master = std::process::id();
    // SAFETY: between fork and exec only async-signal-safe system calls
    // are made (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Some(Signal::SIGKILL))?;
            // The master may have died between the fork and the prctl, in
            // which case the signal will never come.
            if nix::unistd::getppid().as_raw() as u32 != master {
                // No allocation between fork and exec: a plain errno.
                return Err(nix::errno::Errno::ESRCH.into());
            }
            crate::workers::fdlimit::restore_for_child()?;
            Ok(())
        });
    }
    let runtime = tokio::runtime::Handle::current();
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move || {
        // tokio registers the child for SIGCHLD in the runtime's context.
        let _context = runtime.enter();
        let spawned = cmd.spawn();
        drop(cmd);
        let _ = tx.send(spawned);
    });
    queue()?
        .send(job)
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    rx.await
        .map_err(|_| io::Error::other("the spawner thread dropped a spawn"))?
}
