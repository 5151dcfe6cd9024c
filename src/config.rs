//! Options of `ppm start` and `ppm worker`, their defaults, validation and
//! the configuration file.
//!
//! The long option names are also the keys of `ppm.json`; keeping both in
//! one struct keeps them in agreement. The file is merged at the argument
//! level: every key the command line did not give becomes `--key=value`,
//! and the result is parsed again by clap, so a value from the file is
//! checked exactly like one from the command line. Command line beats file
//! beats default.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches};
use serde::Serialize;

use crate::Error;

/// The configuration file's name, looked up in the application directory.
pub const CONFIG_FILE: &str = "ppm.json";

/// What every PHP worker needs to know about the application.
#[derive(Args, Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AppOptions {
    /// Application directory; the workers' working directory.
    #[arg(default_value = ".")]
    #[serde(skip)]
    pub dir: PathBuf,
    /// Bridge between the worker runtime and the application:
    /// httpKernel, psr15, callable, static, or a PHP class name.
    #[arg(long, default_value = "httpKernel")]
    pub bridge: String,
    /// What the bridge bootstraps: `symfony`/`laravel` for httpKernel, a PHP
    /// file (relative to DIR) for callable and psr15.
    #[arg(long, default_value = "symfony")]
    pub bootstrap: String,
    /// Application environment passed to the bootstrap (APP_ENV).
    #[arg(long, default_value = "prod")]
    pub app_env: String,
    /// Debug mode: errors are shown in responses.
    #[arg(long)]
    pub debug: bool,
    /// PHP binary for workers; php-cgi on PATH by default, falling back to php.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgi_path: Option<PathBuf>,
    /// php.ini setting passed to every worker as KEY=VALUE (repeatable).
    #[arg(long = "php-ini", value_name = "KEY=VALUE")]
    pub php_ini: Vec<String>,
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
    /// Number of worker slots.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// Address of the balancer and the slot ports.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Balancer port.
    #[arg(long, default_value_t = 5501)]
    pub port: u16,
    /// FastCGI listener for nginx `fastcgi_pass` and the like: HOST:PORT
    /// or unix:/path (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub fastcgi_listen: Vec<String>,
    /// Address of the control plane.
    #[arg(long, default_value = "127.0.0.1")]
    pub control_host: IpAddr,
    /// Control plane port.
    #[arg(long, default_value_t = 5500)]
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
    #[arg(long, default_value_t = 30.0)]
    pub queue_timeout: f64,
    /// Largest request body accepted, in bytes; 413 past it.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub max_body_size: u64,
    /// Seconds in-flight requests get to finish on stop before workers are killed.
    #[arg(long, default_value_t = 30.0)]
    pub shutdown_timeout: f64,
    /// Seconds to keep serving after a stop request while `/ready` and the
    /// health path already answer 503, so load balancers take this host out
    /// before its ports close (0 = close at once).
    #[arg(long, default_value_t = 0.0)]
    pub drain_delay: f64,
    /// Seconds a worker may take to bootstrap before it counts as failed.
    #[arg(long, default_value_t = 60.0)]
    pub bootstrap_timeout: f64,
    /// Requests a worker serves before it is replaced (0 = unlimited).
    #[arg(long, default_value_t = 1000)]
    pub max_requests: u64,
    /// Seconds a worker lives before it is replaced (0 = forever).
    #[arg(long, default_value_t = 0.0)]
    pub ttl: f64,
    /// MB of PHP memory or RSS after which a worker is replaced (0 = no limit).
    #[arg(long, default_value_t = 0)]
    pub memory_limit: u64,
    /// Percent by which --max-requests and --ttl are lowered at random per
    /// worker, so workers do not all recycle together.
    #[arg(long, default_value_t = 10.0)]
    pub recycle_jitter: f64,
    /// Seconds a request may run in PHP, from dispatch; 504 and the worker
    /// is killed and replaced past it (0 = no limit).
    #[arg(long, default_value_t = 30.0)]
    pub max_execution_time: f64,
    /// Seconds after which a running request's PHP backtrace is logged (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub slow_request_time: f64,
    /// Replacement workers that may boot at once beside the ones they replace.
    #[arg(long, default_value_t = 1)]
    pub max_surge: usize,
    /// Write the master's pid to FILE (locked against a second master,
    /// removed at exit).
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pidfile: Option<PathBuf>,
    /// Proxies (addresses or CIDRs, repeatable or comma-separated) whose
    /// X-Forwarded-For/-Proto/-Host/-Port and X-Request-Id are believed;
    /// from anyone else these headers are replaced.
    #[arg(long, value_name = "CIDR")]
    pub trusted_proxies: Vec<String>,
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
    #[arg(long, default_value_t = 10.0)]
    pub header_timeout: f64,
    /// Seconds a request body may go without a byte arriving; 408 past it.
    #[arg(long, default_value_t = 30.0)]
    pub body_timeout: f64,
    /// Seconds from a request's first byte to the end of its body (head
    /// and body together); 408 and the connection closed past it.
    #[arg(long, default_value_t = 300.0)]
    pub request_timeout: f64,
    /// Seconds a kept-alive connection may wait for its next request (and
    /// a response write may stall) before it is closed.
    #[arg(long, default_value_t = 60.0)]
    pub idle_timeout: f64,
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
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_directory: Option<PathBuf>,
    /// Serve dotfiles (names starting with ".") from --static-directory too.
    #[arg(long)]
    pub static_dotfiles: bool,
    /// Access log, one line per request (--no-logging or --logging=false
    /// to turn it off).
    #[arg(
        long,
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_name = "BOOL",
        overrides_with = "no_logging"
    )]
    pub logging: bool,
    /// Turn the access log off.
    #[arg(long, overrides_with = "logging")]
    #[serde(skip)]
    pub no_logging: bool,
    /// Write the access log to FILE instead of stdout (reopened on SIGUSR1).
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<PathBuf>,
    /// Access log format: combined (nginx's, plus request time, queue
    /// time, slot and request id) or json.
    #[arg(long, default_value = "combined", value_parser = ["combined", "json"])]
    pub log_format: String,
}

impl StartOptions {
    /// Checks values clap cannot check alone.
    pub fn validate(&self) -> Result<(), Error> {
        self.app.validate()?;
        if self.workers == 0 || self.workers > 512 {
            return Err(invalid("workers", "must be between 1 and 512"));
        }
        let first = self.first_worker_port();
        if u32::from(first) + self.workers as u32 - 1 > u32::from(u16::MAX) {
            return Err(invalid(
                "worker-port",
                format!(
                    "{} workers from port {first} run past port 65535",
                    self.workers
                ),
            ));
        }
        if self.max_queue == 0 {
            return Err(invalid("max-queue", "must be at least 1"));
        }
        for (name, value) in [
            ("queue-timeout", self.queue_timeout),
            ("shutdown-timeout", self.shutdown_timeout),
            ("bootstrap-timeout", self.bootstrap_timeout),
        ] {
            if !(value.is_finite() && value > 0.0 && value <= 86_400.0) {
                return Err(invalid(name, "must be a number of seconds above 0"));
            }
        }
        for (name, value) in [
            ("drain-delay", self.drain_delay),
            ("ttl", self.ttl),
            ("max-execution-time", self.max_execution_time),
            ("slow-request-time", self.slow_request_time),
        ] {
            if !(value.is_finite() && (0.0..=31_536_000.0).contains(&value)) {
                return Err(invalid(
                    name,
                    "must be a number of seconds, 0 to turn it off",
                ));
            }
        }
        if !(self.recycle_jitter.is_finite() && (0.0..=90.0).contains(&self.recycle_jitter)) {
            return Err(invalid(
                "recycle-jitter",
                "must be a percentage from 0 to 90",
            ));
        }
        if self.max_surge == 0 || self.max_surge > self.workers {
            return Err(invalid(
                "max-surge",
                format!(
                    "must be between 1 and the number of workers ({})",
                    self.workers
                ),
            ));
        }
        match &self.control_token()? {
            Some(token)
                if token.len() < 16
                    || token.chars().any(|c| c.is_whitespace() || c.is_control()) =>
            {
                return Err(invalid(
                    "control-token",
                    "must be at least 16 characters, without spaces or control characters",
                ));
            }
            None if !self.control_host.is_loopback() => {
                return Err(invalid(
                    "control-token",
                    format!(
                        "is required when the control plane listens on {}, which is not a loopback address",
                        self.control_host
                    ),
                ));
            }
            _ => {}
        }
        crate::forwarding::TrustedProxies::parse(&self.trusted_proxies)
            .map_err(|message| invalid("trusted-proxies", message))?;
        if !self.health_path.is_empty() && !self.health_path.starts_with('/') {
            return Err(invalid(
                "health-path",
                "must start with / (or be empty to turn it off)",
            ));
        }
        if self.memory_limit > 1024 * 1024 {
            return Err(invalid("memory-limit", "is in MB; at most 1048576"));
        }
        self.validate_front_door()
    }

    /// Checks the options of the front door (limits, TLS, static files, log).
    fn validate_front_door(&self) -> Result<(), Error> {
        for (name, value, min, max) in [
            ("max-request-line", self.max_request_line, 64, 1024 * 1024),
            (
                "max-header-size",
                self.max_header_size,
                256,
                16 * 1024 * 1024,
            ),
            ("max-headers", self.max_headers, 8, 10_000),
            ("max-connections", self.max_connections, 1, 1_000_000),
            (
                "body-buffer-size",
                self.body_buffer_size,
                0,
                1024 * 1024 * 1024,
            ),
        ] {
            if !(min..=max).contains(&value) {
                return Err(invalid(name, format!("must be between {min} and {max}")));
            }
        }
        for (name, value) in [
            ("header-timeout", self.header_timeout),
            ("body-timeout", self.body_timeout),
            ("request-timeout", self.request_timeout),
            ("idle-timeout", self.idle_timeout),
        ] {
            if !(value.is_finite() && value > 0.0 && value <= 86_400.0) {
                return Err(invalid(name, "must be a number of seconds above 0"));
            }
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return Err(invalid("tls-key", "is required with --tls-cert")),
            (None, Some(_)) => return Err(invalid("tls-cert", "is required with --tls-key")),
            _ => {}
        }
        if let Some(dir) = &self.spool_directory {
            if !dir.is_dir() {
                return Err(invalid(
                    "spool-directory",
                    format!("{} is not a directory", dir.display()),
                ));
            }
        }
        Ok(())
    }

    /// The control token, from --control-token (or `PPM_CONTROL_TOKEN`)
    /// or read from --control-token-file.
    pub fn control_token(&self) -> Result<Option<String>, Error> {
        match (&self.control_token, &self.control_token_file) {
            (Some(_), Some(_)) => Err(invalid(
                "control-token-file",
                "give the token one way: --control-token-file, or --control-token / PPM_CONTROL_TOKEN",
            )),
            (Some(token), None) => Ok(Some(token.clone())),
            (None, Some(path)) => crate::token::read_token_file(path).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The front door's limits.
    pub fn front_door_limits(&self) -> crate::http1::Limits {
        crate::http1::Limits {
            max_request_line: self.max_request_line,
            max_header_size: self.max_header_size,
            max_headers: self.max_headers,
            header_timeout: Duration::from_secs_f64(self.header_timeout),
            body_timeout: Duration::from_secs_f64(self.body_timeout),
            request_timeout: Duration::from_secs_f64(self.request_timeout),
            idle_timeout: Duration::from_secs_f64(self.idle_timeout),
            max_body_size: self.max_body_size,
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

    /// Whether the access log is on (`--logging`, `--no-logging`).
    pub fn logging(&self) -> bool {
        self.logging && !self.no_logging
    }

    /// When workers are recycled.
    pub fn limits(&self) -> crate::slot::Limits {
        let seconds = |s: f64| (s > 0.0).then(|| Duration::from_secs_f64(s));
        crate::slot::Limits {
            bootstrap_timeout: self.bootstrap_timeout(),
            max_requests: self.max_requests,
            ttl: seconds(self.ttl),
            memory_limit: (self.memory_limit > 0).then_some(self.memory_limit * 1024 * 1024),
            jitter: self.recycle_jitter / 100.0,
        }
    }

    /// `--max-execution-time`, when set.
    pub fn max_execution_time(&self) -> Option<Duration> {
        (self.max_execution_time > 0.0).then(|| Duration::from_secs_f64(self.max_execution_time))
    }

    /// `--drain-delay`, when set.
    pub fn drain_delay(&self) -> Option<Duration> {
        (self.drain_delay > 0.0).then(|| Duration::from_secs_f64(self.drain_delay))
    }

    /// `--slow-request-time`, when set.
    pub fn slow_request_time(&self) -> Option<Duration> {
        (self.slow_request_time > 0.0).then(|| Duration::from_secs_f64(self.slow_request_time))
    }

    /// The port of slot 0.
    pub fn first_worker_port(&self) -> u16 {
        self.worker_port
            .unwrap_or_else(|| self.port.saturating_add(1))
    }

    /// The port of slot `slot`.
    pub fn slot_port(&self, slot: usize) -> u16 {
        self.first_worker_port() + slot as u16
    }

    pub fn queue_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.queue_timeout)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.shutdown_timeout)
    }

    pub fn bootstrap_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.bootstrap_timeout)
    }
}

impl AppOptions {
    /// Checks the application options.
    pub fn validate(&self) -> Result<(), Error> {
        if self.bridge.trim().is_empty() {
            return Err(invalid("bridge", "must not be empty"));
        }
        for setting in &self.php_ini {
            match setting.split_once('=') {
                Some((key, _)) if !key.trim().is_empty() => {}
                _ => return Err(invalid("php-ini", format!("{setting:?} is not KEY=VALUE"))),
            }
        }
        Ok(())
    }
}

fn invalid(option: &'static str, message: impl Into<String>) -> Error {
    Error::InvalidOption {
        option,
        message: message.into(),
    }
}

/// Names that are options of `ppm start` but not keys of `ppm.json`.
const NOT_KEYS: [&str; 3] = ["config", "dir", "check"];

/// A `ppm.json` file, read.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub values: serde_json::Map<String, serde_json::Value>,
}

impl ConfigFile {
    /// Reads `explicit`, else `dir/ppm.json` if it exists.
    pub fn find(explicit: Option<&Path>, dir: &Path) -> Result<Option<ConfigFile>, Error> {
        let path = match explicit {
            Some(path) => path.to_path_buf(),
            None => {
                let candidate = dir.join(CONFIG_FILE);
                if !candidate.is_file() {
                    return Ok(None);
                }
                candidate
            }
        };
        let fail = |message: String| Error::Config {
            file: path.clone(),
            message,
        };
        let text =
            std::fs::read_to_string(&path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| fail(format!("not valid JSON: {e}")))?;
        let serde_json::Value::Object(values) = value else {
            return Err(fail(
                "must be a JSON object of option names and values".into(),
            ));
        };
        Ok(Some(ConfigFile { path, values }))
    }

    fn error(&self, message: String) -> Error {
        Error::Config {
            file: self.path.clone(),
            message,
        }
    }

    /// The file's settings as command-line arguments, leaving out the
    /// options the command line gave (`given`).
    fn to_args(&self, given: &ArgMatches) -> Result<Vec<OsString>, Error> {
        let command = StartOptions::augment_args(clap::Command::new("ppm"));
        let mut args = Vec::new();
        for (key, value) in &self.values {
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(key.as_str()) && !NOT_KEYS.contains(&key.as_str()));
            let Some(arg) = arg else {
                let known: Vec<&str> = command
                    .get_arguments()
                    .filter_map(|a| a.get_long())
                    .filter(|l| !NOT_KEYS.contains(l))
                    .collect();
                let hint = closest(key, &known)
                    .map(|k| format!("; did you mean \"{k}\"?"))
                    .unwrap_or_default();
                return Err(self.error(format!("unknown key \"{key}\"{hint}")));
            };
            if given.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
                continue;
            }
            let flag = !arg.get_action().takes_values();
            let values: Vec<&serde_json::Value> = match value {
                serde_json::Value::Array(items) if !flag => items.iter().collect(),
                other => vec![other],
            };
            for item in values {
                let text = match (item, flag) {
                    (serde_json::Value::Bool(true), true) => {
                        args.push(OsString::from(format!("--{key}")));
                        continue;
                    }
                    (serde_json::Value::Bool(false), true) => continue,
                    (_, true) => {
                        return Err(self.error(format!(
                            "key \"{key}\": expected true or false, found {item}"
                        )))
                    }
                    (serde_json::Value::String(s), false) => s.clone(),
                    (serde_json::Value::Bool(b), false) => b.to_string(),
                    (serde_json::Value::Number(n), false) => n.to_string(),
                    (other, false) => {
                        return Err(self.error(format!(
                            "key \"{key}\": expected a string or a number, found {other}"
                        )))
                    }
                };
                args.push(OsString::from(format!("--{key}={text}")));
            }
        }
        Ok(args)
    }
}

/// The option closest to a misspelt key, if any is close.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// `ppm start`'s options with `ppm.json` merged in: command line beats
/// file beats default. `args` are the arguments after the subcommand.
pub fn start_options(args: &[OsString]) -> Result<(StartOptions, Option<ConfigFile>), Error> {
    let command =
        || StartOptions::augment_args(clap::Command::new("ppm start").no_binary_name(true));
    let matches = command()
        .try_get_matches_from(args)
        .map_err(|e| Error::Usage(e.render().to_string()))?;
    let first = StartOptions::from_arg_matches(&matches)
        .map_err(|e| Error::Usage(e.render().to_string()))?;
    let Some(file) = ConfigFile::find(first.config.as_deref(), &first.app.dir)? else {
        first.validate()?;
        return Ok((first, None));
    };
    let mut merged = file.to_args(&matches)?;
    merged.extend(args.iter().cloned());
    let merged_matches = command()
        .try_get_matches_from(&merged)
        .map_err(|e| file.error(clap_message(&e)))?;
    let options = StartOptions::from_arg_matches(&merged_matches)
        .map_err(|e| file.error(clap_message(&e)))?;
    match options.validate() {
        // Blame the file only for a value that came from it.
        Err(Error::InvalidOption { option, message })
            if file.values.contains_key(option) && !on_command_line(&matches, option) =>
        {
            Err(file.error(format!("key \"{option}\": {message}")))
        }
        other => other.map(|()| (options, Some(file))),
    }
}

/// Whether the command line gave the option with long name `long`.
fn on_command_line(matches: &ArgMatches, long: &str) -> bool {
    let command = StartOptions::augment_args(clap::Command::new("ppm"));
    let id = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .map(|a| a.get_id().clone());
    id.is_some_and(|id| matches.value_source(id.as_str()) == Some(ValueSource::CommandLine))
}

/// clap's error text without its usage footer.
fn clap_message(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    first.trim_start_matches("error: ").to_string()
}

/// `ppm config`: the settings the command line gave that differ from the
/// defaults, as the JSON object `ppm.json` holds.
pub fn changed_settings(
    args: &[OsString],
) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
    let command = StartOptions::augment_args(clap::Command::new("ppm config").no_binary_name(true));
    let matches = command
        .clone()
        .try_get_matches_from(args)
        .map_err(|e| Error::Usage(e.render().to_string()))?;
    let options = StartOptions::from_arg_matches(&matches)
        .map_err(|e| Error::Usage(e.render().to_string()))?;
    options.validate()?;
    let defaults = StartOptions::from_arg_matches(
        &command
            .try_get_matches_from(Vec::<OsString>::new())
            .map_err(|e| Error::Usage(e.render().to_string()))?,
    )
    .map_err(|e| Error::Usage(e.render().to_string()))?;
    let to_map = |o: &StartOptions| match serde_json::to_value(o) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (chosen, defaults) = (to_map(&options), to_map(&defaults));
    Ok(chosen
        .into_iter()
        .filter(|(key, value)| defaults.get(key) != Some(value))
        .collect())
}

/// Every setting of `options` as `ppm.json` would name it.
pub fn settings(options: &StartOptions) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(options) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn app_with(json: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), json).unwrap();
        dir
    }

    #[test]
    fn command_line_beats_file_beats_default() {
        let dir =
            app_with(r#"{"workers": 3, "max-queue": 7, "debug": true, "php-ini": ["a=1", "b=2"]}"#);
        let d = dir.path().to_str().unwrap();
        let (o, file) = start_options(&args(&[d, "--workers=5"])).unwrap();
        assert!(file.is_some());
        assert_eq!(o.workers, 5, "command line wins");
        assert_eq!(o.max_queue, 7, "file beats default");
        assert!(o.app.debug);
        assert_eq!(o.app.php_ini, ["a=1", "b=2"]);
        assert_eq!(o.port, 5501, "default");
    }

    #[test]
    fn an_unknown_key_is_named_with_a_suggestion() {
        let dir = app_with(r#"{"worker": 3}"#);
        let err = start_options(&args(&[dir.path().to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ppm.json"), "{err}");
        assert!(
            err.contains("unknown key \"worker\"") && err.contains("did you mean \"workers\""),
            "{err}"
        );
    }

    #[test]
    fn a_wrong_type_names_file_and_key() {
        let dir = app_with(r#"{"workers": "many"}"#);
        let err = start_options(&args(&[dir.path().to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ppm.json") && err.contains("--workers") && err.contains("many"),
            "{err}"
        );
        let dir = app_with(r#"{"debug": "yes"}"#);
        let err = start_options(&args(&[dir.path().to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("key \"debug\": expected true or false"),
            "{err}"
        );
        let dir = app_with(r#"[1, 2]"#);
        let err = start_options(&args(&[dir.path().to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be a JSON object"), "{err}");
        let dir = app_with(r#"{"workers": 3,"#);
        let err = start_options(&args(&[dir.path().to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn an_out_of_range_value_names_file_and_key() {
        let dir = app_with(r#"{"workers": 0}"#);
        let err = start_options(&args(&[dir.path().to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ppm.json")
                && err.contains("key \"workers\"")
                && err.contains("between 1 and 512"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_value_from_the_command_line_is_not_blamed_on_the_file() {
        let dir = app_with(r#"{"workers": 4}"#);
        let err = start_options(&args(&[dir.path().to_str().unwrap(), "--workers=0"]))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("ppm.json"), "{err}");
        assert!(err.contains("--workers"), "{err}");
    }

    #[test]
    fn an_explicit_config_file_is_used_instead_of_the_app_one() {
        let app = app_with(r#"{"workers": 3}"#);
        let other = app_with(r#"{"workers": 4}"#);
        let file = other.path().join(CONFIG_FILE);
        let (o, _) = start_options(&args(&[
            app.path().to_str().unwrap(),
            "-c",
            file.to_str().unwrap(),
        ]))
        .unwrap();
        assert_eq!(o.workers, 4);
        let err = start_options(&args(&["-c", "/nonexistent/ppm.json"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/ppm.json") && err.contains("cannot read"),
            "{err}"
        );
    }

    #[test]
    fn config_writes_only_what_differs_from_the_defaults_and_reads_back() {
        let changed = changed_settings(&args(&[
            "--workers=3",
            "--port=5501",
            "--debug",
            "--php-ini=x=1",
        ]))
        .unwrap();
        assert_eq!(changed.get("workers"), Some(&serde_json::json!(3)));
        assert_eq!(changed.get("debug"), Some(&serde_json::json!(true)));
        assert_eq!(changed.get("php-ini"), Some(&serde_json::json!(["x=1"])));
        assert!(!changed.contains_key("port"), "same as the default");
        let dir = app_with(&serde_json::Value::Object(changed).to_string());
        let (o, _) = start_options(&args(&[dir.path().to_str().unwrap()])).unwrap();
        assert_eq!(o.workers, 3);
        assert!(o.app.debug);
        assert_eq!(o.app.php_ini, ["x=1"]);
    }

    #[test]
    fn logging_is_on_by_default_and_turned_off_by_flag_value_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let logging = |extra: &[&str]| {
            let mut list = vec![d];
            list.extend_from_slice(extra);
            start_options(&args(&list)).unwrap().0.logging()
        };
        assert!(logging(&[]));
        assert!(!logging(&["--no-logging"]));
        assert!(!logging(&["--logging=false"]));
        assert!(logging(&["--logging"]));
        assert!(logging(&["--no-logging", "--logging"]), "the last one wins");
        let dir = app_with(r#"{"logging": false, "log-format": "json"}"#);
        let d = dir.path().to_str().unwrap();
        let (o, _) = start_options(&args(&[d])).unwrap();
        assert!(!o.logging());
        assert_eq!(o.log_format, "json");
        let (o, _) = start_options(&args(&[d, "--logging"])).unwrap();
        assert!(o.logging(), "command line beats file");
        let changed = changed_settings(&args(&["--no-logging"])).unwrap();
        assert!(!changed.contains_key("no-logging"));
    }

    #[test]
    fn front_door_options_are_checked() {
        let err = |list: &[&str]| start_options(&args(list)).unwrap_err().to_string();
        assert!(err(&["--tls-cert=a.pem"]).contains("--tls-key"));
        assert!(err(&["--max-headers=0"]).contains("--max-headers"));
        assert!(err(&["--header-timeout=0"]).contains("--header-timeout"));
        assert!(err(&["--log-format=xml"]).contains("xml"));
        assert!(err(&["--spool-directory=/nonexistent"]).contains("spool-directory"));
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("worker", "workers"), 1);
        assert_eq!(edit_distance("wrokers", "workers"), 2);
        assert_eq!(
            closest("max-qeue", &["max-queue", "workers"]),
            Some("max-queue")
        );
        assert_eq!(closest("zzz", &["max-queue", "workers"]), None);
    }
}
