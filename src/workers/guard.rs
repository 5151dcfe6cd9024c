//! The guard: a small process beside the master that kills the workers'
//! process groups when the master dies without stopping them.
//!
//! The kernel kills each worker itself when the master dies (`spawner`),
//! but not what the PHP application started (`exec('… &')`,
//! `proc_open`): those run on in the worker's process group, and only a
//! living process can kill a group. The guard is that process: the
//! master re-runs its own binary as `ppm __guard` in a process group of
//! its own and tells it, on its stdin, each worker group that starts
//! (`+PGID`) and each it has killed and reaped (`-PGID`). When the
//! master dies, its end of the pipe closes; the guard kills every group
//! still listed and exits. A master that stops normally has emptied the
//! list, so the guard just exits.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// The pipe to this master's guard, once started.
static GUARD: OnceLock<Mutex<ChildStdin>> = OnceLock::new();

/// Starts the guard (once per process). Without it workers still die
/// with the master, their own children may not; so a failure is logged,
/// not fatal.
pub fn start() {
    if GUARD.get().is_some() {
        return;
    }
    let spawned = std::env::current_exe().and_then(|exe| {
        Command::new(exe)
            .arg("__guard")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            // It prints nothing; and a pipe it held would stay open after
            // the master's end (a test harness reading to EOF would wait).
            .stderr(Stdio::null())
            // Its own group: a Ctrl-C meant for the master does not end it.
            .process_group(0)
            .spawn()
    });
    match spawned {
        Ok(mut child) => {
            if let Some(stdin) = child.stdin.take() {
                let _ = GUARD.set(Mutex::new(stdin));
            }
            // It exits when the master does; nothing waits for it before.
            drop(child);
        }
        Err(err) => tracing::warn!(
            "cannot start the guard process ({err}): processes started by PHP code may outlive a killed master"
        ),
    }
}

fn tell(line: String) {
    if let Some(pipe) = GUARD.get() {
        let mut pipe = pipe.lock().unwrap_or_else(|e| e.into_inner());
        // A guard that died (only by a signal from outside) protects
        // nothing any more; the master goes on without it.
        let _ = pipe.write_all(line.as_bytes());
    }
}

/// A worker's process group started.
pub fn watch(pgid: u32) {
    if pgid != 0 {
        tell(format!("+{pgid}\n"));
    }
}

/// A worker's process group was killed and its leader reaped.
pub fn forget(pgid: u32) {
    if pgid != 0 {
        tell(format!("-{pgid}\n"));
    }
}

/// `ppm __guard`: reads the list of groups until the master's end of
/// stdin closes, then kills the groups still listed. Returns the exit code.
pub fn run() -> i32 {
    let mut groups = BTreeSet::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (add, number) = match line.split_at_checked(1) {
            Some(("+", n)) => (true, n),
            Some(("-", n)) => (false, n),
            _ => continue,
        };
        let Ok(pgid) = number.parse::<i32>() else {
            continue;
        };
        if pgid <= 1 {
            continue;
        }
        if add {
            groups.insert(pgid);
        } else {
            groups.remove(&pgid);
        }
    }
    for pgid in groups {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    0
}
