//! ppm: a process manager and load balancer for long-lived PHP workers.
//!
//! The folders are layers, top to bottom, and a layer imports only the
//! layers below it (`doc/architecture.md`, checked by `scripts/layers`):
//! `cli`; `master` (binds every public socket, wires the pools, shuts
//! down); `control` (the HTTP API, dashboard, status pages and the CLI's
//! client); `proxy` (a request to a response); `workers` (the PHP-hosting
//! worker processes, the slot tasks and the dispatcher); `front` (bytes
//! to a request: HTTP/1, FastCGI, TLS, limits, spooling, static files);
//! `config`; and the leaves (`body`, `error`, `logging`, `metrics`,
//! `shutdown`, `systemd`, `target`, `text`, `token`).

pub mod body;
pub mod cli;
pub mod config;
pub mod control;
pub mod error;
pub mod front;
pub mod logging;
pub mod master;
pub mod metrics;
pub mod proxy;
pub mod shutdown;
pub mod systemd;
pub mod target;
pub mod text;
pub mod token;
pub mod workers;

pub use error::Error;
