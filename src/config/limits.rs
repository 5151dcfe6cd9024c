//! The typed settings other modules are built with: the front door's
//! request limits, when workers are recycled, the process manager's
//! settings. They live here, below the modules that use them, so that
//! config builds them without importing those modules.

use std::time::Duration;

use super::PmMode;

/// The limits of the front door.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    /// Longest request line (method, target, version); 414 past it.
    pub max_request_line: usize,
    /// Largest header section (or trailer section), request line excluded; 431 past it.
    pub max_header_size: usize,
    /// Most header fields; 431 past it.
    pub max_headers: usize,
    /// From the first byte of a request to the end of its head; 408 past it.
    pub header_timeout: Duration,
    /// Longest silence while a body is read; 408 past it.
    pub body_timeout: Duration,
    /// From the first byte of a request to the end of its body; 408 past it.
    pub request_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request, and
    /// the longest a response write may make no progress.
    pub idle_timeout: Duration,
    /// Largest request body; 413 past it.
    pub max_body_size: u64,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_request_line: 8 * 1024,
            max_header_size: 32 * 1024,
            max_headers: 100,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(60),
            max_body_size: 64 * 1024 * 1024,
        }
    }
}

/// When workers are recycled.
#[derive(Debug, Clone)]
pub struct RecycleLimits {
    pub bootstrap_timeout: Duration,
    /// Requests per worker; None = unlimited.
    pub max_requests: Option<u64>,
    /// Lifetime of a worker.
    pub ttl: Option<Duration>,
    /// Bytes of PHP memory after which a worker is recycled.
    pub memory_limit: Option<u64>,
    /// Bytes of resident memory after which a worker is recycled.
    pub rss_limit: Option<u64>,
    /// Fraction (0..1) by which max-requests and ttl are lowered at random
    /// per worker, so workers do not all recycle together.
    pub jitter: f64,
}

/// The process manager's settings (`--pm` and its companions).
#[derive(Debug, Clone)]
pub struct PmSettings {
    pub mode: PmMode,
    pub min_spare: usize,
    pub max_spare: usize,
    pub max_spawn_rate: usize,
    pub idle_timeout: Duration,
}

impl PmSettings {
    /// A static pool (every slot always has a worker), for tests.
    #[cfg(test)]
    pub fn fixed() -> Self {
        PmSettings {
            mode: PmMode::Static,
            min_spare: 1,
            max_spare: 1,
            max_spawn_rate: 32,
            idle_timeout: Duration::from_secs(10),
        }
    }
}
