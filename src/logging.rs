//! Log set-up: everything the master does, and every line workers print,
//! goes to the master's stderr.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `PPM_LOG` overrides the level filter
/// (`info` by default), e.g. `PPM_LOG=debug`.
pub fn init() {
    let filter = EnvFilter::try_from_env("PPM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
