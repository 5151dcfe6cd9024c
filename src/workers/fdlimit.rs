//! The open-file limit: raised to its hard maximum at start, budgeted so
//! that client connections cannot take the descriptors the control
//! plane and worker (re)starts need, and put back for PHP workers.
//!
//! Every client connection costs the master a descriptor (two while its
//! body is spooled to a file). When they run out, `accept` fails on every
//! port, the control plane's included, and spawning a worker fails for
//! want of pipes. So `--max-connections` is held below the limit by a
//! reserve for everything else.

use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// The soft limit ppm found at start, if it raised it (else `u64::MAX`).
static ORIGINAL_SOFT: AtomicU64 = AtomicU64::new(u64::MAX);

/// Descriptors kept for all but client connections: the listeners and
/// the control plane, logs, spool files, and per worker its control
/// channel, output pipes and connections, twice over during a recycle.
pub fn reserve(workers: usize) -> u64 {
    64 + 1 + workers as u64 * 9
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the limit
/// now in force.
pub fn raise() -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return u64::MAX;
    };
    if soft >= hard {
        return soft;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            ORIGINAL_SOFT.store(soft, Ordering::SeqCst);
            tracing::debug!("open-file limit raised from {soft} to {hard}");
            hard
        }
        Err(err) => {
            tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {err}");
            soft
        }
    }
}

/// In a freshly forked worker: the soft limit the master started with.
/// PHP code (and libraries using `select()`) may not cope with
/// descriptors past 1024; the master's raise is for the master alone.
/// Only async-signal-safe calls: it runs between fork and exec.
pub fn restore_for_child() -> std::io::Result<()> {
    let original = ORIGINAL_SOFT.load(Ordering::SeqCst);
    if original == u64::MAX {
        return Ok(());
    }
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, original, hard)?;
    Ok(())
}

/// The client connections the master can hold with `limit` descriptors
/// and `workers` slots: `wanted` (`--max-connections`), or fewer, with a
/// warning, when the limit cannot carry that many.
pub fn connections_allowed(wanted: usize, limit: u64, workers: usize) -> usize {
    let room = limit.saturating_sub(reserve(workers)).max(1);
    if wanted as u64 <= room {
        return wanted;
    }
    tracing::warn!(
        "--max-connections={wanted} exceeds what the open-file limit of {limit} allows with {workers} workers; \
         holding at most {room} client connections so the control plane and worker restarts keep \
         descriptors (raise the hard limit, e.g. LimitNOFILE= in systemd or ulimit -Hn)"
    );
    room as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_stay_below_the_limit_by_the_reserve() {
        assert_eq!(connections_allowed(10_000, 1_048_576, 8), 10_000);
        let room = 256 - reserve(2);
        assert_eq!(connections_allowed(10_000, 256, 2), room as usize);
        assert_eq!(connections_allowed(10, 256, 2), 10);
        assert_eq!(connections_allowed(10, 16, 8), 1, "never zero");
    }
}
