//! Request metrics: the counters the request path and the pool bump.
//! Their Prometheus text form for `GET /metrics` is `control::prometheus`.
//!
//! Counters and histograms live here as atomics the request path updates
//! without locks; everything that is state (workers, memory, restarts) is
//! read from the pool when scraped, so nothing is counted twice.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Upper bounds (seconds) of the duration histograms' buckets.
/// They reach past the default queue timeout and execution limit (30 s),
/// so slow answers are not all reported as the last bound.
pub(crate) const BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// How many recent errors `/status` keeps.
const RECENT_ERRORS: usize = 20;

/// A histogram with fixed buckets.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    /// The longest duration seen: the upper end of the last bucket.
    max_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = elapsed.as_micros().min(u64::MAX as u128) as u64;
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.max_micros.fetch_max(micros, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> (Vec<u64>, f64) {
        let counts = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        (counts, self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6)
    }

    /// Estimates the `q` quantile (0..1) in seconds by linear interpolation
    /// inside its bucket, as Prometheus' `histogram_quantile` does.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        quantile_of(&[self], q)
    }
}

/// The `q` quantile of several histograms taken together (the pools'
/// request durations, for the master's figure).
pub fn quantile_of(histograms: &[&Histogram], q: f64) -> Option<f64> {
    let mut counts = vec![0u64; BUCKETS.len() + 1];
    for h in histograms {
        for (sum, c) in counts.iter_mut().zip(&h.counts) {
            *sum += c.load(Ordering::Relaxed);
        }
    }
    let longest = histograms
        .iter()
        .map(|h| h.max_micros.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0) as f64
        / 1e6;
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut seen = 0u64;
    for (i, &count) in counts.iter().enumerate() {
        if count > 0 && (seen + count) as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
            let upper = BUCKETS.get(i).copied().unwrap_or(longest.max(lower));
            let within = (rank - seen as f64) / count as f64;
            return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
        }
        seen += count;
    }
    BUCKETS.last().copied()
}

/// A 5xx answer, for the dashboard's list of recent errors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecentError {
    /// Unix time in seconds.
    pub at: u64,
    pub status: u16,
    pub method: String,
    pub path: String,
    pub slot: Option<usize>,
    /// The slot's pool, when the master runs named pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// Everything the request path counts.
pub struct Metrics {
    /// Per slot (index slot + 1; 0 = answered without a worker) and status
    /// class (index 0 = 1xx … 4 = 5xx).
    pub(crate) requests: Vec<[AtomicU64; 5]>,
    pub duration: Histogram,
    pub queue_wait: Histogram,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub open_connections: AtomicI64,
    recent_errors: Mutex<VecDeque<RecentError>>,
}

impl Metrics {
    pub fn new(slots: usize) -> Self {
        Self {
            requests: (0..=slots).map(|_| Default::default()).collect(),
            duration: Histogram::default(),
            queue_wait: Histogram::default(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            open_connections: AtomicI64::new(0),
            recent_errors: Mutex::new(VecDeque::new()),
        }
    }

    /// Counts one answered request.
    pub fn request(
        &self,
        slot: Option<usize>,
        status: u16,
        elapsed: Duration,
        method: &str,
        path: &str,
    ) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        let row = slot.map(|s| s + 1).unwrap_or(0);
        if let Some(counts) = self.requests.get(row) {
            counts[class].fetch_add(1, Ordering::Relaxed);
        }
        self.duration.observe(elapsed);
        if status >= 500 {
            let mut recent = self.recent_errors.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == RECENT_ERRORS {
                recent.pop_front();
            }
            recent.push_back(RecentError {
                at: unix_now(),
                status,
                method: method.to_string(),
                path: path.chars().take(200).collect(),
                slot,
                pool: None,
            });
        }
    }

    /// Requests answered so far.
    pub fn requests_total(&self) -> u64 {
        self.requests
            .iter()
            .flat_map(|row| row.iter())
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// The last 5xx answers, newest last.
    pub fn recent_errors(&self) -> Vec<RecentError> {
        self.recent_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// The resident set size of a process, from `/proc/PID/statm` (one small
/// read; a process-table scan per sample cost more than the requests
/// between two samples).
pub async fn process_rss(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |size| size as u64);
    Some(pages * page_size)
}

/// What a pool counts for `/fpm-status` besides its slots' states.
#[derive(Debug, Default)]
pub struct PoolCounters {
    /// Leases out now (requests holding a worker).
    pub(crate) leased: AtomicUsize,
    pub(crate) max_leased: AtomicUsize,
    pub(crate) max_queue: AtomicUsize,
    pub(crate) queued_all_busy: AtomicU64,
    pub(crate) slow: AtomicU64,
    /// The queue's bound, `--max-queue`.
    pub(crate) queue_bound: usize,
}

impl PoolCounters {
    /// Counters of a pool whose queue holds at most `queue_bound` requests.
    pub fn new(queue_bound: usize) -> Self {
        Self {
            queue_bound,
            ..Self::default()
        }
    }

    /// A request joined the wait queue, which is now `len` long; `all_busy`
    /// when no worker at all was idle and none could be started.
    pub fn queued(&self, len: usize, all_busy: bool) {
        self.max_queue.fetch_max(len, Ordering::Relaxed);
        if all_busy {
            self.queued_all_busy.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The process manager wanted a worker and every slot had one.
    pub fn children_maxed(&self) {
        self.queued_all_busy.fetch_add(1, Ordering::Relaxed);
    }

    /// php-fpm's `max children reached`.
    pub fn max_children_reached(&self) -> u64 {
        self.queued_all_busy.load(Ordering::Relaxed)
    }

    /// A worker was leased to a request.
    pub fn leased(&self) {
        let now = self.leased.fetch_add(1, Ordering::Relaxed) + 1;
        if now > self.max_leased.load(Ordering::Relaxed) {
            self.max_leased.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// A lease ended.
    pub fn released(&self) {
        self.leased.fetch_sub(1, Ordering::Relaxed);
    }

    /// A request ran past `--slow-request-time`.
    pub fn slow_request(&self) {
        self.slow.fetch_add(1, Ordering::Relaxed);
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    unix_now_ms() / 1000
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let h = Histogram::default();
        for _ in 0..100 {
            h.observe(Duration::from_millis(3));
        }
        let p50 = h.quantile(0.5).unwrap();
        assert!((0.001..=0.005).contains(&p50), "{p50}");
        assert!(Histogram::default().quantile(0.5).is_none());
    }

    #[test]
    fn slow_answers_are_not_capped_at_ten_seconds() {
        let h = Histogram::default();
        for _ in 0..10 {
            h.observe(Duration::from_secs(20));
        }
        let p50 = h.quantile(0.5).unwrap();
        assert!((10.0..=30.0).contains(&p50), "{p50}");
        let h = Histogram::default();
        for _ in 0..10 {
            h.observe(Duration::from_secs(400));
        }
        let p99 = h.quantile(0.99).unwrap();
        assert!((300.0..=400.0).contains(&p99), "{p99}");
    }
}
