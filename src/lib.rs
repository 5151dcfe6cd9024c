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

pub mod access_log;
pub mod balancer;
pub mod body;
pub mod check;
pub mod cli;
pub mod config;
pub mod conn_limit;
pub mod control;
pub mod control_guard;
pub mod error;
pub mod fastcgi;
pub mod fdlimit;
pub mod forwarding;
pub mod fpm_status;
pub mod guard;
pub mod http1;
pub mod identify;
pub mod linger;
pub mod logging;
pub mod master;
pub mod metrics;
pub mod native;
pub mod native_exchange;
pub mod php;
pub mod pidfile;
pub mod pool;
pub mod privileges;
pub mod reload;
pub mod rolling;
pub mod rundir;
pub mod runtime;
pub mod shutdown;
pub mod slot;
pub mod spawner;
pub mod spool;
pub mod static_files;
pub mod status_table;
pub mod systemd;
pub mod target;
pub mod tls;
pub mod token;
pub mod worker;
pub mod worker_env;

pub use error::Error;
