//! The native runtime: workers that host PHP through ppm's own SAPI
//! (`libphp8.2-embed`), so PHP's C code fills every request as under
//! PHP-FPM.
//!
//! - `sapi.c`/`sapi.h`: the C shim (built by `build.rs`): the SAPI, the
//!   per-request startup and teardown, `ppm_handle_request()`,
//!   `fastcgi_finish_request()`, `getallheaders()`.
//! - [`ffi`]: the shim's entry points and the Rust callbacks it calls.
//! - [`frames`]: the binary protocol between master and worker.
//! - [`io`]: the worker's request source and response sink, a [`io::Link`]:
//!   [`frame_link`] (the master's frame socket) or [`http_link`] (HTTP
//!   clients served on PHP's own thread); [`http_head`]: hyper's request
//!   and response heads as PHP sees them.
//! - [`request`]: `$_SERVER` and `SG(request_info)` from a request head.
//! - [`script`] and `classic.c`: `--bridge=script`, a full PHP request
//!   per request running the script the URI or `SCRIPT_FILENAME` names.
//! - [`host`]: running PHP in this process; [`worker`]: `ppm php-worker`;
//!   [`standalone`]: `ppm worker --listen`, one process
//!   and one thread serving HTTP with PHP.
//!
//! The PHP side is `bridges/native.php` and `bridges/src/Native*.php`.

pub mod conn;
pub mod event;
pub mod ffi;
pub mod frame_link;
pub mod frames;
pub mod head_frame;
pub mod host;
pub mod http_head;
pub mod http_link;
pub mod io;
pub mod queue;
pub mod request;
pub mod script;
pub mod spawn;
pub mod standalone;
mod wire;
pub mod worker;
