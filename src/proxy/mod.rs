//! The request path: a complete request in, its response out, on the
//! balancer port and the slot ports.
//!
//! # Theory of operation
//!
//! `accept.rs` takes connections: each port's accept loop takes a permit
//! of the shared `--max-connections` limit (`front::conn_limit`), then
//! the connection is TLS (ALPN picks `h2` or `http/1.1`), HTTP/2 with
//! prior knowledge (its preface is recognised on the first bytes;
//! `h2.rs`, hyper), or HTTP/1.x (ppm's own strict reader,
//! `front::http1`). Either way a complete request arrives here: its whole
//! body is in hand (in memory or spooled, `front::spool`) before a worker
//! is taken, so a slow client never holds a worker.
//!
//! `request.rs` reads top to bottom as a request's life: the health path
//! and `--static-directory` files are answered by the master; anything
//! else gets its worker head frame, encoded once from the parsed request
//! (`front::forwarding` decides what the worker is told), takes an idle
//! worker (`workers::pool`), and runs its exchange (`exchange.rs`) in the
//! connection's own task: frames written, the response read, buffered up
//! to `RESPONSE_BUFFER` so that a slow reader releases the worker early.
//! What the exchange still has to do once the response is known (the
//! worker's clean-up up to its `Ready`, or feeding a streamed body) is the
//! response's `Tail` (`body.rs`), which the HTTP/1 connection finishes
//! while it writes the response and waits for the next request, and which
//! anyone else hands to a task of its own: no task hop on a request's way,
//! yet a client that hangs up never leaves a worker half-way through a
//! request. Every answer gets its access log line once its last byte is
//! sent (`access_log.rs`). `responses.rs` holds the master's own answers.

mod accept;
pub mod access_log;
pub mod exchange;
mod h2;
mod request;
pub mod responses;

use std::sync::Arc;
use std::time::Duration;

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use tokio_rustls::TlsAcceptor;

pub use crate::front::{ConnInfo, Target};
use responses::error_response;

use crate::front::conn_limit::ConnLimit;
use crate::front::forwarding::TrustedProxies;
use crate::front::http1::Limits;
use crate::front::spool::SpoolConfig;
use crate::front::static_files::StaticFiles;
use crate::metrics::Metrics;
use crate::proxy::access_log::AccessLog;
use crate::workers::pool::Pool;

use crate::body::ProxyBody;

/// The front door's settings, made from the options before any worker
/// starts: every file they name (certificate, key, static directory,
/// access log) is opened here, so a bad one stops the start with nothing
/// left running.
pub struct FrontDoor {
    pub limits: Limits,
    pub spool: Arc<SpoolConfig>,
    pub connections: Arc<ConnLimit>,
    pub tls: Option<TlsAcceptor>,
    pub static_files: Option<StaticFiles>,
    pub access_log: Option<Arc<AccessLog>>,
}

impl FrontDoor {
    pub fn new(
        opts: &crate::config::StartOptions,
        app_dir: &std::path::Path,
    ) -> Result<Self, crate::Error> {
        let invalid = |option, message| crate::Error::InvalidOption { option, message };
        let tls = match (&opts.tls_cert, &opts.tls_key) {
            (Some(cert), Some(key)) => Some(crate::front::tls::acceptor(cert, key)?),
            _ => None,
        };
        // --bridge=script serves the document root's other files, as the
        // web server in front of php-fpm would.
        let static_dir = match &opts.static_directory {
            Some(dir) => Some(("static-directory", app_dir.join(dir))),
            None if opts.app.runs_scripts() => {
                Some(("document-root", opts.app.document_root(app_dir)))
            }
            None => None,
        };
        let static_files = match static_dir {
            Some((option, dir)) => {
                let files = StaticFiles::new(&dir, opts.static_dotfiles)
                    .map_err(|err| invalid(option, format!("{}: {err}", dir.display())))?;
                Some(files)
            }
            None => None,
        };
        let access_log = if opts.logging() {
            let log =
                AccessLog::start(opts.access_log.clone(), opts.log_format).map_err(|err| {
                    let file = opts.access_log.as_deref().unwrap_or("stdout".as_ref());
                    invalid("access-log", format!("{}: {err}", file.display()))
                })?;
            Some(Arc::new(log))
        } else {
            None
        };
        Ok(Self {
            limits: opts.front_door_limits(),
            spool: Arc::new(SpoolConfig {
                memory_limit: opts.body_buffer_size,
                directory: opts.spool_directory.clone(),
            }),
            connections: Arc::new(ConnLimit::new(
                opts.max_connections,
                opts.connections_per_ip(),
                opts.trusted_proxies(),
            )),
            tls,
            static_files,
            access_log,
        })
    }
}

/// Shared state of the request path.
pub struct Balancer {
    pool: Arc<Pool>,
    max_execution_time: Option<Duration>,
    /// `--slow-request-time`: log the PHP backtrace of requests running longer.
    slow_request_time: Option<Duration>,
    /// Path the master answers itself on every port, for load balancers'
    /// health checks (never sent to PHP).
    health_path: Option<String>,
    trusted: TrustedProxies,
    request_ids: request::RequestIds,
    pub metrics: Arc<Metrics>,
    /// Limits, spooling, connection budget, TLS, static files, access log.
    pub front: FrontDoor,
}

impl Balancer {
    /// The request path of one pool: its dispatcher, its front door and
    /// the options that shape each request.
    pub fn new(pool: Arc<Pool>, front_door: FrontDoor, opts: &crate::config::StartOptions) -> Self {
        Self {
            trusted: opts.trusted_proxies(),
            max_execution_time: opts.max_execution_time,
            slow_request_time: opts.slow_request_time,
            health_path: opts.health_path(),
            request_ids: request::RequestIds::new(),
            metrics: Arc::new(Metrics::new(pool.len())),
            pool,
            front: front_door,
        }
    }

    /// The health check answer: 200 while the port has a ready worker
    /// (any worker for the balancer, its own for a slot port), else 503.
    fn health(&self, target: Target) -> Response<ProxyBody> {
        // While stopping, report down at once so that load balancers take
        // this host out before its ports close.
        let up = !self.pool.is_going_away()
            && match target {
                // An ondemand pool with no worker yet still serves.
                Target::Any => self.pool.available(),
                Target::Slot(slot) => self.pool.slot_serving(slot),
            };
        let mut response = if up {
            error_response(StatusCode::OK, "ok\n")
        } else {
            error_response(StatusCode::SERVICE_UNAVAILABLE, "no ready worker\n")
        };
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // So that `ppm stop <this port>` can say it is no control plane.
        response.headers_mut().insert(
            crate::front::LISTENER_HEADER,
            HeaderValue::from_static(match target {
                Target::Any => "balancer",
                Target::Slot(_) => "slot",
            }),
        );
        response
    }
}
