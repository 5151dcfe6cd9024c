//! Checks of option values that clap cannot make alone. Every problem is
//! collected, so that one run reports all of them, each naming its option.

use crate::Error;

use super::values::{MAX_MB, MAX_OFF_ABLE, MAX_TIMEOUT, OFF_ABLE_RANGE, TIMEOUT_RANGE};
use super::{AppOptions, StartOptions};

impl StartOptions {
    /// Checks values clap cannot check alone; every problem at once.
    pub fn validate(&self) -> Result<(), Error> {
        let mut errors = Vec::new();
        self.app.problems(&mut errors);
        self.problems(&mut errors);
        self.front_door_problems(&mut errors);
        self.port_overlaps(&mut errors);
        Error::from_list(errors)
    }

    /// Adds the problems of the general options to `errors`.
    fn problems(&self, errors: &mut Vec<Error>) {
        if self.workers == 0 || self.workers > 512 {
            errors.push(invalid("workers", "must be between 1 and 512"));
        }
        let first = self.first_worker_port();
        if u32::from(first) + (self.workers as u32).saturating_sub(1) > u32::from(u16::MAX) {
            errors.push(invalid(
                "worker-port",
                format!(
                    "{} workers from port {first} run past port 65535",
                    self.workers
                ),
            ));
        }
        if self.max_queue == 0 {
            errors.push(invalid("max-queue", "must be at least 1"));
        }
        for (name, value) in [
            ("queue-timeout", self.queue_timeout),
            ("shutdown-timeout", self.shutdown_timeout),
            ("bootstrap-timeout", self.bootstrap_timeout),
            ("worker-idle-timeout", self.worker_idle_timeout),
            ("header-timeout", self.header_timeout),
            ("body-timeout", self.body_timeout),
            ("request-timeout", self.request_timeout),
            ("idle-timeout", self.idle_timeout),
        ] {
            if value.is_zero() || value > MAX_TIMEOUT {
                errors.push(invalid(name, TIMEOUT_RANGE));
            }
        }
        for (name, value) in [
            ("drain-delay", self.drain_delay),
            ("ttl", self.ttl),
            ("max-execution-time", self.max_execution_time),
            ("slow-request-time", self.slow_request_time),
        ] {
            if value.is_some_and(|d| d > MAX_OFF_ABLE) {
                errors.push(invalid(name, OFF_ABLE_RANGE));
            }
        }
        for (name, value) in [
            ("memory-limit", self.memory_limit),
            ("rss-limit", self.rss_limit),
        ] {
            if value.is_some_and(|bytes| bytes > MAX_MB * 1024 * 1024) {
                errors.push(invalid(name, format!("is in MB; at most {MAX_MB}")));
            }
        }
        if !(self.recycle_jitter.is_finite() && (0.0..=90.0).contains(&self.recycle_jitter)) {
            errors.push(invalid(
                "recycle-jitter",
                "must be a percentage from 0 to 90",
            ));
        }
        if self.max_surge == 0 || self.max_surge > self.workers {
            errors.push(invalid(
                "max-surge",
                format!(
                    "must be between 1 and the number of workers ({})",
                    self.workers
                ),
            ));
        }
        self.pm_problems(errors);
        let token = match self.control_token() {
            Ok(token) => token,
            Err(err) => {
                errors.push(err);
                None
            }
        };
        match &token {
            Some(token)
                if token.len() < 16
                    || token.chars().any(|c| c.is_whitespace() || c.is_control()) =>
            {
                errors.push(invalid(
                    "control-token",
                    "must be at least 16 characters, without spaces or control characters",
                ));
            }
            None if !self.control_host.is_loopback() => {
                errors.push(invalid(
                    "control-token",
                    format!(
                        "is required when the control plane listens on {}, which is not a loopback address",
                        self.control_host
                    ),
                ));
            }
            _ => {}
        }
        if !self.health_path.is_empty() && !self.health_path.starts_with('/') {
            errors.push(invalid(
                "health-path",
                "must start with / (or be empty to turn it off)",
            ));
        }
    }

    /// Adds the problems of the process manager's options.
    fn pm_problems(&self, errors: &mut Vec<Error>) {
        if self.max_spawn_rate == 0 || self.max_spawn_rate > 1024 {
            errors.push(invalid("max-spawn-rate", "must be between 1 and 1024"));
        }
        // As php-fpm, the spare bounds matter (and are checked) only for
        // a dynamic pool.
        if self.pm != super::PmMode::Dynamic {
            return;
        }
        if self.min_spare_workers == 0 || self.min_spare_workers > self.workers {
            errors.push(invalid(
                "min-spare-workers",
                format!(
                    "must be between 1 and the number of workers ({}) with --pm dynamic",
                    self.workers
                ),
            ));
        }
        if self.max_spare_workers < self.min_spare_workers || self.max_spare_workers > self.workers
        {
            errors.push(invalid(
                "max-spare-workers",
                format!(
                    "must be between --min-spare-workers ({}) and the number of workers ({}) with --pm dynamic",
                    self.min_spare_workers, self.workers
                ),
            ));
        }
    }

    /// Adds the problems of the front door's options (limits, TLS, spool).
    fn front_door_problems(&self, errors: &mut Vec<Error>) {
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
                errors.push(invalid(name, format!("must be between {min} and {max}")));
            }
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => errors.push(invalid("tls-key", "is required with --tls-cert")),
            (None, Some(_)) => errors.push(invalid("tls-cert", "is required with --tls-key")),
            _ => {}
        }
        if let Some(dir) = &self.spool_directory {
            if !dir.is_dir() {
                errors.push(invalid(
                    "spool-directory",
                    format!("{} is not a directory", dir.display()),
                ));
            }
        }
    }
}

impl AppOptions {
    /// Checks the application options; every problem at once.
    pub fn validate(&self) -> Result<(), Error> {
        let mut errors = Vec::new();
        self.problems(&mut errors);
        Error::from_list(errors)
    }

    /// Adds the problems of the application options to `errors`.
    fn problems(&self, errors: &mut Vec<Error>) {
        if self.bridge.trim().is_empty() {
            errors.push(invalid("bridge", "must not be empty"));
        }
        // Bootstraps of httpKernel given as bridges (PHP-PM users and
        // readers of framework guides type them).
        if let Some(framework) = ["symfony", "laravel"]
            .into_iter()
            .find(|f| self.bridge.eq_ignore_ascii_case(f))
        {
            errors.push(invalid(
                "bridge",
                format!(
                    "{} is a bootstrap, not a bridge; did you mean `--bridge=httpKernel --bootstrap={framework}`?",
                    self.bridge
                ),
            ));
        }
        // The default bootstrap is httpKernel's; a file bridge needs a file.
        let file_bridge = matches!(self.bridge.as_str(), "callable" | "psr15");
        if file_bridge
            && matches!(self.bootstrap.as_str(), "symfony" | "laravel")
            && !self.dir.join(&self.bootstrap).is_file()
        {
            errors.push(invalid(
                "bootstrap",
                format!(
                    "--bridge={} needs --bootstrap=FILE, the PHP file (relative to the application \
                     directory) that returns the {}; `{}` is a bootstrap of --bridge=httpKernel",
                    self.bridge,
                    if self.bridge == "callable" {
                        "callable"
                    } else {
                        "PSR-15 request handler"
                    },
                    self.bootstrap
                ),
            ));
        }
        if let Some(root) = &self.document_root {
            if !self.dir.join(root).is_dir() {
                errors.push(invalid(
                    "document-root",
                    format!("{} is not a directory", self.dir.join(root).display()),
                ));
            }
        }
        for setting in &self.php_ini {
            match setting.split_once('=') {
                Some((key, _)) if !key.trim().is_empty() => {}
                _ => errors.push(invalid("php-ini", format!("{setting:?} is not KEY=VALUE"))),
            }
        }
        for bad in self.env.iter().filter(|s| env_setting(s).is_none()) {
            errors.push(invalid("env", format!("{bad:?} is not KEY=VALUE")));
        }
    }
}

impl StartOptions {
    /// Adds an error for each pair of ppm's own port ranges that overlap
    /// on a shared address: a failed bind at start would be the only hint.
    fn port_overlaps(&self, errors: &mut Vec<Error>) {
        let first = u32::from(self.first_worker_port());
        let slots_end = first + (self.workers as u32).max(1) - 1;
        let slot_option = if self.worker_port.is_some() {
            "worker-port"
        } else {
            "workers"
        };
        let ranges = [
            (
                "control-port",
                self.control_host,
                u32::from(self.control_port),
                u32::from(self.control_port),
            ),
            (
                "port",
                self.host,
                u32::from(self.port),
                u32::from(self.port),
            ),
            (slot_option, self.host, first, slots_end),
        ];
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                let shared_address = a.1 == b.1 || a.1.is_unspecified() || b.1.is_unspecified();
                if shared_address && a.2 <= b.3 && b.2 <= a.3 {
                    // Named after the second: the control port rarely moves.
                    errors.push(invalid(
                        b.0,
                        format!("{} overlaps {}", describe(b), describe(a)),
                    ));
                }
            }
        }
    }
}

/// A port range of `port_overlaps`, as the error names it.
fn describe(range: &(&'static str, std::net::IpAddr, u32, u32)) -> String {
    let (option, _, start, end) = range;
    match *option {
        "workers" | "worker-port" if start != end => {
            format!("the slot ports {start}-{end} (--port + 1 and --workers, or --worker-port)")
        }
        "workers" | "worker-port" => format!("the slot port {start}"),
        _ => format!("--{option} {start}"),
    }
}

/// Splits a `--env` setting into name and value; None when it is not
/// `KEY=VALUE` with a name the environment can hold.
pub fn env_setting(setting: &str) -> Option<(&str, &str)> {
    let (key, value) = setting.split_once('=')?;
    let valid = !key.is_empty() && !key.contains('\0') && !value.contains('\0');
    valid.then_some((key, value))
}

fn invalid(option: &'static str, message: impl Into<String>) -> Error {
    Error::InvalidOption {
        option,
        message: message.into(),
    }
}
