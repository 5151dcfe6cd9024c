//! Request metrics, and their Prometheus text form for `GET /metrics`.
//!
//! Counters and histograms live here as atomics the request path updates
//! without locks; everything that is state (workers, memory, restarts) is
//! read from the pool when scraped, so nothing is counted twice.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

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
                at: crate::workers::pool::unix_now(),
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

/// Fills in the RSS of workers that have not reported it yet (it is
/// sampled after requests), so a worker's RSS is known from its boot.
pub async fn fill_missing_rss(slots: &mut [crate::workers::pool::SlotStatus]) {
    for slot in slots.iter_mut().filter(|s| s.rss_bytes == 0) {
        if let Some(pid) = slot.pid {
            slot.rss_bytes = process_rss(pid).await.unwrap_or(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::prometheus::{render, Scrape};

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

    #[test]
    fn requests_are_counted_by_slot_and_class() {
        let m = Metrics::new(2);
        m.request(Some(1), 200, Duration::from_millis(1), "GET", "/");
        m.request(None, 503, Duration::from_millis(1), "GET", "/x");
        let pm = crate::workers::pool::PmStatus::default();
        let scrape = |pool| Scrape {
            pool,
            metrics: &m,
            slots: &[],
            queue_length: 0,
            pm: &pm,
        };
        let text = render(&[scrape(None)], None);
        assert!(
            text.contains("ppm_requests_total{slot=\"1\",code=\"2xx\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ppm_requests_total{slot=\"none\",code=\"5xx\"} 1"),
            "{text}"
        );
        assert_eq!(m.requests_total(), 2);
        // Several pools: one HELP and TYPE per family, each series labelled.
        let text = render(&[scrape(Some("a")), scrape(Some("b"))], None);
        assert_eq!(text.matches("# TYPE ppm_requests_total counter").count(), 1);
        assert!(
            text.contains("ppm_requests_total{pool=\"b\",slot=\"1\",code=\"2xx\"} 1"),
            "{text}"
        );
        assert!(text.contains("ppm_queue_length{pool=\"a\"} 0"), "{text}");
        assert_eq!(m.recent_errors().len(), 1);
    }
}
