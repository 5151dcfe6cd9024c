//! Options of `ppm start` and `ppm worker`, their defaults, validation and
//! the configuration file.
//!
//! The long option names are also the keys of `ppm.json`; keeping both in
//! one struct (`options`) keeps them in agreement. `file` reads and merges
//! `ppm.json` (command line beats file beats default), `validate` checks
//! what clap cannot, `phppm` understands PHP-PM's keys and values, and
//! `write` is `ppm config`.

mod file;
mod options;
mod phppm;
mod pools;
mod validate;
mod write;

pub use file::{start_options, ConfigFile, CONFIG_FILE};
pub use options::{AppOptions, PmMode, StartOptions};
pub use pools::{start_pools, PoolOptions, GLOBAL_KEYS};
pub use write::{merge, settings, show_option, Outcome};

#[cfg(test)]
mod tests;
