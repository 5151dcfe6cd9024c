//! The front door: bytes from a client to a request. `http1` (the strict
//! HTTP/1 reader), `fastcgi` (the FastCGI listener), `tls`, `conn_limit`
//! (connections per address and in all), `linger` (closing after an early
//! answer), `spool` (request bodies), `forwarding` (who the client is and
//! the headers a worker gets) and `static_files`.

pub mod conn_limit;
pub mod fastcgi;
pub mod forwarding;
pub mod http1;
pub mod linger;
pub mod spool;
pub mod static_files;
pub mod tasks;
pub mod tls;

use std::net::SocketAddr;

/// Marks the master's own health answers on the balancer (`balancer`) and
/// slot ports (`slot`), so `ppm status 8080` can tell them from PHP's and
/// from the control plane's.
pub const LISTENER_HEADER: hyper::header::HeaderName =
    hyper::header::HeaderName::from_static("x-ppm-listener");

/// Which workers a listener serves.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// The balancer: any idle worker.
    Any,
    /// A slot port: only that slot's worker.
    Slot(usize),
}

/// What the master knows about one client connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
    pub target: Target,
}
