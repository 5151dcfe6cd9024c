//! Log set-up: everything the master does, and every line workers print,
//! goes to the master's stderr.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber with the level filter `default`
/// (`info`, or what `-v`/`-q` chose). `PPM_LOG` overrides it, e.g.
/// `PPM_LOG=debug`.
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_env("PPM_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
