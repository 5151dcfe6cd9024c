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
pub mod tls;
