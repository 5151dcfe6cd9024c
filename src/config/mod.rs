//! Options of `ppm start` and `ppm worker`, their defaults, validation and
//! the configuration file.
//!
//! The long option names are also the keys of `ppm.json`; keeping both in
//! one struct (`options`) keeps them in agreement. Values are parsed into
//! their types once, as clap reads them (`values`): durations, sizes,
//! addresses and proxies; no module past config sees a raw number of
//! seconds or a 0 that means "off". `file` reads and merges `ppm.json`
//! (command line beats file beats default), `validate` checks what clap
//! cannot, `phppm` understands PHP-PM's keys and values, and `write` is
//! `ppm config`. `limits` holds the settings other modules are built with,
//! so that config imports none of them.

mod file;
mod limits;
mod options;
mod phppm;
mod pools;
mod token;
mod validate;
mod values;
mod write;

pub use file::{start_options, ConfigFile, CONFIG_FILE};
pub use limits::{PmSettings, RecycleLimits, RequestLimits};
pub use options::{AppOptions, LogFormat, PmMode, StartOptions};
pub use phppm::parse_host;
pub use pools::{start_pools, PoolOptions, GLOBAL_KEYS};
pub use token::read_token_file;
pub use validate::env_setting;
pub use values::{ListenAddress, TrustedProxies, DEFAULT_CONTROL_PORT, DEFAULT_HOST, DEFAULT_PORT};
pub use write::{merge, settings, show_option, Outcome};

#[cfg(test)]
mod tests;
