//! The options of `ppm start` and `ppm worker`: one struct per command,
//! whose long option names are also the keys of `ppm.json`, and the
//! figures the rest of ppm reads from them.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::Args;
use serde::Serialize;

use super::phppm::{parse_host, parse_path};
use super::values::{
    megabytes_or_off, seconds, seconds_or_off, seconds_or_php_pm_off, write_megabytes_or_off,
    write_seconds, write_seconds_or_off, ListenAddress, ProxyList, TrustedProxies,
    DEFAULT_CONTROL_PORT, DEFAULT_HOST, DEFAULT_PORT,
};
use super::{PmSettings, RecycleLimits, RequestLimits};

/// How many workers run (php-fpm's `pm`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PmMode {
    /// --workers workers, always.
    Static,
    /// Between --min-spare-workers and --max-spare-workers idle workers,
    /// at most --workers.
    Dynamic,
    /// No worker until a request comes; idle ones stop after
    /// --worker-idle-timeout.
    Ondemand,
}

impl PmMode {
    /// php-fpm's word for the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            PmMode::Static => "static",
            PmMode::Dynamic => "dynamic",
            PmMode::Ondemand => "ondemand",
        }
    }
}

/// The access log's line format (`--log-format`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// nginx `combined` plus `rt= qt= slot= id=`.
    Combined,
    Json,
}

/// What every PHP worker needs to know about the application.
#[derive(Args, Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AppOptions {
    /// Application directory; the workers' working directory.
    #[arg(default_value = ".")]
    #[serde(skip)]
    pub dir: PathBuf,
    /// Bridge between the worker runtime and the application:
    /// httpKernel, psr15, callable, static, script (classic PHP scripts,
    /// each request a full PHP request as under php-fpm; native runtime
    /// only), or a PHP class name.
    #[arg(long, default_value = "httpKernel")]
    pub bridge: String,
    /// What the bridge bootstraps: `symfony`/`laravel` for httpKernel, a PHP
    /// file (relative to DIR) for callable and psr15.
    #[arg(long, default_value = "symfony")]
    pub bootstrap: String,
    /// `--bridge=script`: the directory whose `.php` files run (relative
    /// to DIR; default DIR/public when it exists, else DIR). Nothing
    /// outside it runs; its other files are served by the master.
    #[arg(long, value_name = "DIR", value_parser = parse_path)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_root: Option<PathBuf>,
    /// Application environment passed to the bootstrap (APP_ENV).
    #[arg(long, default_value = "prod")]
    pub app_env: String,
    /// Debug mode: errors are shown in responses, workers restart when a
    /// PHP file changes (`--debug`, `--debug=1`, `--debug=0`).
    #[arg(
        long,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_name = "BOOL",
        value_parser = BoolishValueParser::new()
    )]
    pub debug: bool,
    /// php.ini setting passed to every worker as KEY=VALUE (repeatable).
    #[arg(long = "php-ini", value_name = "KEY=VALUE")]
    pub php_ini: Vec<String>,
    /// Run workers as this user (name or uid); the master must be root.
    #[arg(long, value_name = "USER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Group of the workers (name or gid; default: --user's group).
    #[arg(long, value_name = "GROUP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Environment variable for every worker as KEY=VALUE (repeatable);
    /// a value `$NAME` takes the master's NAME.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Workers get only PATH, PHPRC, PHP_INI_SCAN_DIR and --env, not the
    /// master's environment (php-fpm's clear_env).
    #[arg(long)]
    pub clear_env: bool,
}

impl AppOptions {
    /// The bridge that runs each request as a classic PHP script.
    pub const SCRIPT_BRIDGE: &'static str = "script";

    /// Whether requests run classic PHP scripts (`--bridge=script`).
    pub fn runs_scripts(&self) -> bool {
        self.bridge == Self::SCRIPT_BRIDGE
    }

    /// The document root of `--bridge=script` for the application in
    /// `app_dir`: `--document-root` (relative to it), else its `public`
    /// directory when there is one, else `app_dir` itself.
    pub fn document_root(&self, app_dir: &std::path::Path) -> PathBuf {
        match &self.document_root {
            Some(root) => app_dir.join(root),
            None if app_dir.join("public").is_dir() => app_dir.join("public"),
            None => app_dir.to_path_buf(),
        }
    }
}

/// Options of `ppm start`.
#[derive(Args, Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StartOptions {
    /// Configuration file (default: DIR/ppm.json when it exists).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Only check the configuration, the PHP binary and the bootstrap
    /// (one worker boots and stops), then exit 0 or 1.
    #[arg(long)]
    #[serde(skip)]
    pub check: bool,
    #[command(flatten)]
    #[serde(flatten)]
    pub app: AppOptions,
    /// Number of worker slots: the most workers that run at once.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// Process manager (php-fpm's `pm`): `static` (--workers workers at
    /// all times), `dynamic` (idle workers kept between
    /// --min-spare-workers and --max-spare-workers) or `ondemand` (workers
    /// start when requests come, stop after --worker-idle-timeout idle).
    #[arg(long, value_enum, default_value_t = PmMode::Static)]
    pub pm: PmMode,
    /// `--pm dynamic`: fewest idle workers; below it more are started
    /// (php-fpm's pm.min_spare_servers).
    #[arg(long, default_value_t = 1)]
    pub min_spare_workers: usize,
    /// `--pm dynamic`: most idle workers; idle ones past it are stopped
    /// (php-fpm's pm.max_spare_servers).
    #[arg(long, default_value_t = 3)]
    pub max_spare_workers: usize,
    /// `--pm dynamic|ondemand`: most workers started per second
    /// (php-fpm's pm.max_spawn_rate).
    #[arg(long, default_value_t = 32)]
    pub max_spawn_rate: usize,
    /// `--pm ondemand|dynamic`: seconds a worker may stay idle before it is
    /// stopped (dynamic: only down to --min-spare-workers; php-fpm's
    /// pm.process_idle_timeout).
    #[arg(long, default_value = "10", value_parser = seconds)]
    #[serde(serialize_with = "write_seconds")]
    pub worker_idle_timeout: Duration,
    /// Address of the balancer and the slot ports.
    #[arg(long, default_value = DEFAULT_HOST, value_parser = parse_host)]
    pub host: IpAddr,
    /// Balancer port.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// FastCGI listener for nginx `fastcgi_pass` and the like: HOST:PORT
    /// or unix:/path (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub fastcgi_listen: Vec<ListenAddress>,
    /// Address of the control plane.
    #[arg(long, default_value = DEFAULT_HOST, value_parser = parse_host)]
    pub control_host: IpAddr,
    /// Control plane port.
    #[arg(long, default_value_t = DEFAULT_CONTROL_PORT)]
    pub control_port: u16,
    /// Token the control plane requires as `Authorization: Bearer TOKEN`
    /// (required when --control-host is not a loopback address). Any
    /// local user sees it in `ps`: prefer --control-token-file.
    #[arg(long, env = "PPM_CONTROL_TOKEN", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_token: Option<String>,
    /// File holding the control token (a trailing line break is ignored);
    /// the safe way to pass it.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_token_file: Option<PathBuf>,
    /// With a token: let GET /status, /metrics and the dashboard be read
    /// without it (mutating endpoints still need it).
    #[arg(long)]
    pub control_public_read: bool,
    /// First slot port (slot N listens on worker-port + N); default port + 1.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_port: Option<u16>,
    /// Requests that may wait for a worker at once; 503 past it.
    #[arg(long, default_value_t = 1024)]
    pub max_queue: usize,
    /// Seconds a request may wait for a worker; 503 past it.
    #[arg(long, default_value = "30", value_parser = seconds)]
    #[serde(serialize_with = "write_seconds")]
    pub queue_timeout: Duration,
    /// Largest request body accepted, in bytes; 413 past it.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub max_body_size: u64,
    /// Seconds in-flight requests get to finish on stop before workers are killed.
    #[arg(long, default_value = "30", value_parser = seconds)]
    #[serde(serialize_with = "write_seconds")]
    pub shutdown_timeout: Duration,
    /// Seconds to keep serving after a stop request while `/ready` and the
    /// health path already answer 503, so load balancers take this host out
    /// before its ports close (0 = close at once).
    #[arg(long, default_value = "0", value_parser = seconds_or_off)]
    #[serde(serialize_with = "write_seconds_or_off")]
    pub drain_delay: ::std::option::Option<Duration>,
    /// Seconds a worker may take to bootstrap before it counts as failed.
    #[arg(long, default_value = "60", value_parser = seconds)]
    #[serde(serialize_with = "write_seconds")]
    pub bootstrap_timeout: Duration,
    /// Requests a worker serves before it is replaced (0 = unlimited).
    #[arg(long, default_value_t = 1000)]
    pub max_requests: u64,
    /// Seconds a worker lives before it is replaced (0 = forever).
    #[arg(long, default_value = "0", allow_negative_numbers = true, value_parser = seconds_or_php_pm_off)]
    #[serde(serialize_with = "write_seconds_or_off")]
    pub ttl: ::std::option::Option<Duration>,
    /// MB of PHP memory (memory_get_usage, as PHP-PM means it) after which
    /// a worker is replaced (0 = no limit).
    #[arg(long, default_value = "0", allow_negative_numbers = true, value_parser = megabytes_or_off)]
    #[serde(serialize_with = "write_megabytes_or_off")]
    pub memory_limit: ::std::option::Option<u64>,
    /// MB of resident memory (RSS, as the kernel counts it: PHP's heap plus
    /// code, opcache and libraries) after which a worker is replaced
    /// (0 = no limit).
    #[arg(long, default_value = "0", allow_negative_numbers = true, value_parser = megabytes_or_off)]
    #[serde(serialize_with = "write_megabytes_or_off")]
    pub rss_limit: ::std::option::Option<u64>,
    /// Percent by which --max-requests and --ttl are lowered at random per
    /// worker, so workers do not all recycle together.
    #[arg(long, default_value_t = 10.0)]
    pub recycle_jitter: f64,
    /// Seconds a request may run in PHP, from dispatch; 504 and the worker
    /// is killed and replaced past it (0 = no limit).
    #[arg(long, default_value = "30", value_parser = seconds_or_off)]
    #[serde(serialize_with = "write_seconds_or_off")]
    pub max_execution_time: ::std::option::Option<Duration>,
    /// Seconds after which a running request's PHP backtrace is logged (0 = off).
    #[arg(long, default_value = "0", value_parser = seconds_or_off)]
    #[serde(serialize_with = "write_seconds_or_off")]
    pub slow_request_time: ::std::option::Option<Duration>,
    /// Replacement workers that may boot at once beside the ones they replace.
    #[arg(long, default_value_t = 1)]
    pub max_surge: usize,
    /// Write the master's pid to FILE (locked against a second master,
    /// removed at exit).
    #[arg(long, value_name = "FILE", value_parser = parse_path)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pidfile: Option<PathBuf>,
    /// Proxies (addresses or CIDRs, repeatable or comma-separated) whose
    /// X-Forwarded-For/-Proto/-Host/-Port and X-Request-Id are believed;
    /// from anyone else these headers are replaced.
    #[arg(long, value_name = "CIDR")]
    pub trusted_proxies: Vec<ProxyList>,
    /// Path the master answers itself on the balancer and every slot port
    /// (200 while a worker is ready, else 503), for load balancer health
    /// checks; never sent to PHP. Empty to turn it off.
    #[arg(long, default_value = "/_ppm/health")]
    pub health_path: String,
    /// Longest request line (method, target and version) in bytes; 414 past it.
    #[arg(long, default_value_t = 8 * 1024)]
    pub max_request_line: usize,
    /// Largest request header section in bytes (request line excluded); 431 past it.
    #[arg(long, default_value_t = 32 * 1024)]
    pub max_header_size: usize,
    /// Most header fields in a request; 431 past it.
    #[arg(long, default_value_t = 100)]
    pub max_headers: usize,
    /// Seconds from a request's first byte to the end of its headers; 408
    /// and the connection closed past it.
    #[arg(long, default_value = "10", value_parser = seconds)]
    #[serde(serialize_with = "write_seconds")]
    pub header_timeout: Duration,
    /// Seconds a request body may go without a byte arriving; 408 past it.
    #[arg(long, default_value = "30", value_parser = seconds)]
    #[serde(serialize_with = "write_seconds")]
    pub body_timeout: Duration,
    /// Seconds from a request's first byte to the end of its body (head
    /// and body together); 408 and the connection closed past it.
    #[arg(long, default_value = "300", value_parser = seconds)]
    #[serde(serialize_with = "write_seconds")]
    pub request_timeout: Duration,
    /// Seconds a kept-alive connection may wait for its next request (and
    /// a response write may stall) before it is closed.
    #[arg(long, default_value = "60", value_parser = seconds)]
    #[serde(serialize_with = "write_seconds")]
    pub idle_timeout: Duration,
    /// Client connections open at once, over all ports; past it new
    /// connections wait in the listen backlog.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// Client connections one address may hold open at once, over all
    /// ports (default: half of --max-connections; 0 = no limit); past it
    /// a new connection from that address gets 503 at once. Addresses in
    /// --trusted-proxies are exempt.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_ip: Option<usize>,
    /// Request bodies up to this many bytes are held in memory; larger
    /// ones are spooled to an anonymous temporary file.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub body_buffer_size: usize,
    /// Directory of the temporary files of large request bodies (default:
    /// the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_directory: Option<PathBuf>,
    /// PEM certificate chain: the balancer port serves HTTPS (HTTP/2 and
    /// HTTP/1.1 by ALPN). Needs --tls-key.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Directory of static files the master serves itself (relative paths
    /// are relative to the application directory); a miss goes to PHP.
    #[arg(long, value_name = "DIR", value_parser = parse_path)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_directory: Option<PathBuf>,
    /// Serve dotfiles (names starting with ".") from --static-directory too.
    #[arg(long)]
    pub static_dotfiles: bool,
    /// Access log, one line per request (--no-logging, --logging=false or
    /// --logging=0 to turn it off).
    #[arg(
        long,
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_name = "BOOL",
        value_parser = BoolishValueParser::new(),
        overrides_with = "no_logging"
    )]
    pub logging: bool,
    /// Turn the access log off.
    #[arg(long, overrides_with = "logging")]
    #[serde(skip)]
    pub no_logging: bool,
    /// Write the access log to FILE instead of stdout (reopened on SIGUSR1).
    #[arg(long, value_name = "FILE", value_parser = parse_path)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<PathBuf>,
    /// Access log format: combined (nginx's, plus request time, queue
    /// time, slot and request id) or json.
    #[arg(long, value_enum, default_value_t = LogFormat::Combined)]
    pub log_format: LogFormat,
}

impl StartOptions {
    /// The front door's limits.
    pub fn front_door_limits(&self) -> RequestLimits {
        RequestLimits {
            max_request_line: self.max_request_line,
            max_header_size: self.max_header_size,
            max_headers: self.max_headers,
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            request_timeout: self.request_timeout,
            idle_timeout: self.idle_timeout,
            max_body_size: self.max_body_size,
        }
    }

    /// The control token, from --control-token (or `PPM_CONTROL_TOKEN`)
    /// or read from --control-token-file.
    pub fn control_token(&self) -> Result<Option<String>, crate::Error> {
        match (&self.control_token, &self.control_token_file) {
            (Some(_), Some(_)) => Err(crate::Error::InvalidOption {
                option: "control-token-file",
                message: "give the token one way: --control-token-file, or --control-token / PPM_CONTROL_TOKEN".into(),
            }),
            (Some(token), None) => Ok(Some(token.clone())),
            (None, Some(path)) => super::token::read_token_file(path).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// `--max-connections-per-ip`, or its default (half of
    /// `--max-connections`, at least 1); None for no limit.
    pub fn connections_per_ip(&self) -> Option<usize> {
        match self.max_connections_per_ip {
            Some(0) => None,
            Some(limit) => Some(limit),
            None => Some(self.max_connections.div_ceil(2)),
        }
    }

    /// Every `--trusted-proxies` value, together.
    pub fn trusted_proxies(&self) -> TrustedProxies {
        TrustedProxies::new(&self.trusted_proxies)
    }

    /// `--health-path`, unless turned off (empty).
    pub fn health_path(&self) -> Option<String> {
        (!self.health_path.is_empty()).then(|| self.health_path.clone())
    }

    /// Whether the access log is on (`--logging`, `--no-logging`).
    pub fn logging(&self) -> bool {
        self.logging && !self.no_logging
    }

    /// When workers are recycled.
    pub fn limits(&self) -> RecycleLimits {
        RecycleLimits {
            bootstrap_timeout: self.bootstrap_timeout,
            max_requests: (self.max_requests > 0).then_some(self.max_requests),
            ttl: self.ttl,
            memory_limit: self.memory_limit,
            rss_limit: self.rss_limit,
            jitter: self.recycle_jitter / 100.0,
        }
    }

    /// The process manager's settings.
    pub fn pm(&self) -> PmSettings {
        PmSettings {
            mode: self.pm,
            min_spare: self.min_spare_workers,
            max_spare: self.max_spare_workers,
            max_spawn_rate: self.max_spawn_rate,
            idle_timeout: self.worker_idle_timeout,
        }
    }

    /// The port of slot 0: `--worker-port`, else the one after `--port`.
    pub fn first_worker_port(&self) -> u16 {
        self.worker_port
            .unwrap_or_else(|| self.port.saturating_add(1))
    }

    /// The port of slot `slot`.
    pub fn slot_port(&self, slot: usize) -> u16 {
        self.first_worker_port() + slot as u16
    }
}
