//! Log set-up: everything the master does, and every line workers print,
//! goes to the master's stderr.

use std::io::IsTerminal;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber with the level filter `default`
/// (`info`, or what `-v`/`-q` chose). `PPM_LOG` overrides it, e.g.
/// `PPM_LOG=debug`.
///
/// With `off_thread` (the master), lines are written by a thread of their
/// own: the master runs every request on one thread, and a stderr nobody
/// reads (a stalled pipe, a stopped logger) must not stop it; past
/// 128,000 waiting lines new ones are dropped rather than wait. The
/// returned guard writes what is waiting when dropped: hold it until the
/// process is about to exit. A worker writes its lines itself, so that
/// the last ones before a crash are not lost.
pub fn init(default: &str, off_thread: bool) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_from_env("PPM_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    if off_thread {
        let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
        let _ = builder.with_writer(writer).try_init();
        Some(guard)
    } else {
        let _ = builder.with_writer(std::io::stderr).try_init();
        None
    }
}
