//! Options of `ppm start` and `ppm worker`, their defaults and validation.
//!
//! The long option names are also the keys of `ppm.json` (a later step);
//! keeping them in one struct keeps the two in agreement.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::Error;

/// What every PHP worker needs to know about the application.
#[derive(Args, Debug, Clone)]
pub struct AppOptions {
    /// Application directory; the workers' working directory.
    #[arg(default_value = ".")]
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
    pub cgi_path: Option<PathBuf>,
    /// php.ini setting passed to every worker as KEY=VALUE (repeatable).
    #[arg(long = "php-ini", value_name = "KEY=VALUE")]
    pub php_ini: Vec<String>,
}

/// Options of `ppm start`.
#[derive(Args, Debug, Clone)]
pub struct StartOptions {
    #[command(flatten)]
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
    /// Address of the control plane.
    #[arg(long, default_value = "127.0.0.1")]
    pub control_host: IpAddr,
    /// Control plane port.
    #[arg(long, default_value_t = 5500)]
    pub control_port: u16,
    /// First slot port (slot N listens on worker-port + N); default port + 1.
    #[arg(long)]
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
    /// Path the master answers itself on the balancer and every slot port
    /// (200 while a worker is ready, else 503), for load balancer health
    /// checks; never sent to PHP. Empty to turn it off.
    #[arg(long, default_value = "/_ppm/health")]
    pub health_path: String,
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
        if !self.health_path.is_empty() && !self.health_path.starts_with('/') {
            return Err(invalid(
                "health-path",
                "must start with / (or be empty to turn it off)",
            ));
        }
        if self.memory_limit > 1024 * 1024 {
            return Err(invalid("memory-limit", "is in MB; at most 1048576"));
        }
        Ok(())
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
