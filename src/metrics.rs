//! Request metrics, and their Prometheus text form for `GET /metrics`.
//!
//! Counters and histograms live here as atomics the request path updates
//! without locks; everything that is state (workers, memory, restarts) is
//! read from the pool when scraped, so nothing is counted twice.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::pool::{SlotState, SlotStatus};

/// Upper bounds (seconds) of the duration histograms' buckets.
/// They reach past the default queue timeout and execution limit (30 s),
/// so slow answers are not all reported as the last bound.
const BUCKETS: [f64; 16] = [
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

    fn snapshot(&self) -> (Vec<u64>, f64) {
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
        let (counts, _) = self.snapshot();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut seen = 0u64;
        for (i, &count) in counts.iter().enumerate() {
            if count > 0 && (seen + count) as f64 >= rank {
                let lower = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
                let longest = self.max_micros.load(Ordering::Relaxed) as f64 / 1e6;
                let upper = BUCKETS.get(i).copied().unwrap_or(longest.max(lower));
                let within = (rank - seen as f64) / count as f64;
                return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
            }
            seen += count;
        }
        BUCKETS.last().copied()
    }
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
}

/// Everything the request path counts.
pub struct Metrics {
    /// Per slot (index slot + 1; 0 = answered without a worker) and status
    /// class (index 0 = 1xx … 4 = 5xx).
    requests: Vec<[AtomicU64; 5]>,
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
                at: crate::pool::unix_now(),
                status,
                method: method.to_string(),
                path: path.chars().take(200).collect(),
                slot,
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

    /// The Prometheus text exposition of everything ppm measures.
    pub fn render(
        &self,
        slots: &[SlotStatus],
        queue_length: usize,
        master_rss: Option<u64>,
        pm: &crate::pool::PmStatus,
    ) -> String {
        let mut out = String::from(
            "# HELP ppm_requests_total Requests answered, by slot and status class.\n# TYPE ppm_requests_total counter\n",
        );
        for (row, counts) in self.requests.iter().enumerate() {
            let slot = if row == 0 {
                "none".to_string()
            } else {
                (row - 1).to_string()
            };
            for (class, count) in counts.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "ppm_requests_total{{slot=\"{slot}\",code=\"{}xx\"}} {}",
                    class + 1,
                    count.load(Ordering::Relaxed)
                );
            }
        }
        histogram(
            &mut out,
            "ppm_request_duration_seconds",
            "Time from request to response head.",
            &self.duration,
        );
        histogram(
            &mut out,
            "ppm_queue_wait_seconds",
            "Time requests waited for a worker.",
            &self.queue_wait,
        );
        gauge_header(
            &mut out,
            "ppm_queue_length",
            "Requests waiting for a worker.",
        );
        let _ = writeln!(out, "ppm_queue_length {queue_length}");
        gauge_header(&mut out, "ppm_workers", "Worker slots by state.");
        for state in [
            SlotState::Starting,
            SlotState::Ready,
            SlotState::Busy,
            SlotState::Draining,
            SlotState::Stopping,
            SlotState::Exited,
            SlotState::Backoff,
            SlotState::Failed,
            SlotState::Empty,
        ] {
            let count = slots.iter().filter(|s| s.state == state).count();
            let name = serde_json::to_value(state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let _ = writeln!(out, "ppm_workers{{state=\"{name}\"}} {count}");
        }
        gauge_header(
            &mut out,
            "ppm_worker_memory_bytes",
            "PHP memory of each slot's worker after its last request.",
        );
        for s in slots {
            let _ = writeln!(
                out,
                "ppm_worker_memory_bytes{{slot=\"{}\"}} {}",
                s.slot, s.memory_bytes
            );
        }
        gauge_header(
            &mut out,
            "ppm_worker_rss_bytes",
            "Resident memory of each slot's worker.",
        );
        for s in slots {
            let _ = writeln!(
                out,
                "ppm_worker_rss_bytes{{slot=\"{}\"}} {}",
                s.slot, s.rss_bytes
            );
        }
        let _ = writeln!(
            out,
            "# HELP ppm_worker_restarts_total Workers replaced, by slot and reason.\n# TYPE ppm_worker_restarts_total counter"
        );
        for s in slots {
            for (reason, count) in &s.restarts_by_reason {
                let _ = writeln!(
                    out,
                    "ppm_worker_restarts_total{{slot=\"{}\",reason=\"{reason}\"}} {count}",
                    s.slot
                );
            }
        }
        gauge_header(
            &mut out,
            "ppm_pm_info",
            "The process manager's mode (--pm), as a label.",
        );
        let _ = writeln!(out, "ppm_pm_info{{mode=\"{}\"}} 1", pm.mode);
        for (name, help, value) in [
            (
                "ppm_workers_spawned_total",
                "Workers started because requests or the spare minimum wanted one (--pm dynamic|ondemand).",
                pm.spawned,
            ),
            (
                "ppm_workers_retired_total",
                "Idle workers stopped (--pm dynamic|ondemand).",
                pm.retired,
            ),
            (
                "ppm_max_workers_reached_total",
                "Times a worker was wanted while every slot had one (php-fpm's max children reached).",
                pm.max_workers_reached,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        if let Some(rss) = master_rss {
            gauge_header(
                &mut out,
                "ppm_master_rss_bytes",
                "Resident memory of the master process.",
            );
            let _ = writeln!(out, "ppm_master_rss_bytes {rss}");
        }
        gauge_header(
            &mut out,
            "ppm_client_connections",
            "Open client connections.",
        );
        let _ = writeln!(
            out,
            "ppm_client_connections {}",
            self.open_connections.load(Ordering::Relaxed).max(0)
        );
        for (name, help, value) in [
            (
                "ppm_received_bytes_total",
                "Request body bytes received from clients.",
                &self.bytes_in,
            ),
            (
                "ppm_sent_bytes_total",
                "Response body bytes sent to clients.",
                &self.bytes_out,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// The resident set size of a process, read off the async threads
/// (sysinfo's refresh blocks).
pub async fn process_rss(pid: u32) -> Option<u64> {
    tokio::task::spawn_blocking(move || {
        use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
        let mut system = System::new();
        let pid = Pid::from_u32(pid);
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            true,
            ProcessRefreshKind::nothing().with_memory(),
        );
        system.process(pid).map(|p| p.memory())
    })
    .await
    .ok()
    .flatten()
}

/// Fills in the RSS of workers that have not reported it yet (it is
/// sampled after requests), so a worker's RSS is known from its boot.
pub async fn fill_missing_rss(slots: &mut [crate::pool::SlotStatus]) {
    for slot in slots.iter_mut().filter(|s| s.rss_bytes == 0) {
        if let Some(pid) = slot.pid {
            slot.rss_bytes = process_rss(pid).await.unwrap_or(0);
        }
    }
}

fn gauge_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

fn histogram(out: &mut String, name: &str, help: &str, histogram: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let (counts, sum) = histogram.snapshot();
    let mut cumulative = 0;
    for (i, count) in counts.iter().enumerate() {
        cumulative += count;
        let le = BUCKETS
            .get(i)
            .map(|b| b.to_string())
            .unwrap_or_else(|| "+Inf".into());
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
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

    #[test]
    fn requests_are_counted_by_slot_and_class() {
        let m = Metrics::new(2);
        m.request(Some(1), 200, Duration::from_millis(1), "GET", "/");
        m.request(None, 503, Duration::from_millis(1), "GET", "/x");
        let text = m.render(&[], 0, None, &crate::pool::PmStatus::default());
        assert!(
            text.contains("ppm_requests_total{slot=\"1\",code=\"2xx\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ppm_requests_total{slot=\"none\",code=\"5xx\"} 1"),
            "{text}"
        );
        assert_eq!(m.requests_total(), 2);
        assert_eq!(m.recent_errors().len(), 1);
    }
}
