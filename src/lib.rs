//! ppm: a process manager and load balancer for long-lived PHP workers.
//!
//! The master (`master`) binds every public socket, starts one PHP worker
//! per slot (`worker`, `pool`), forwards HTTP requests to idle workers
//! (`balancer`) and answers the control plane (`control`). What clients
//! send is read by the front door: `http1` (the strict HTTP/1 reader),
//! `spool` (request bodies), `linger` (closing after an early answer),
//! `conn_limit` (connections per address and in all), `tls`,
//! `static_files` and `access_log`; `fastcgi` is the FastCGI front door. The
//! PHP side of a worker ships in `bridges/` and is embedded in the binary
//! (`runtime`).

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
