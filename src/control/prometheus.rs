//! The Prometheus text exposition of `GET /metrics`, over every pool.
//!
//! Each metric family is written once (one `# HELP`, one `# TYPE`), with
//! one series per pool; a named pool's series carry a `pool` label, the
//! single pool of a command line none (so its metrics read as before).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::metrics::{Histogram, Metrics, BUCKETS};
use crate::workers::pool::{PmStatus, SlotState, SlotStatus};

/// One pool's figures for a scrape.
pub struct Scrape<'a> {
    /// The `pool` label, for named pools.
    pub pool: Option<&'a str>,
    pub metrics: &'a Metrics,
    pub slots: &'a [SlotStatus],
    pub queue_length: usize,
    pub pm: &'a PmStatus,
}

/// A counter family: name, help, and how to read it from `T`.
type Family<T> = (&'static str, &'static str, fn(&T) -> u64);

/// A label set: the pool's label first, then `rest`; empty when both are.
fn labels(pool: Option<&str>, rest: &[(&str, &str)]) -> String {
    let pairs: Vec<String> = pool
        .map(|p| ("pool", p))
        .into_iter()
        .chain(rest.iter().copied())
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

/// The Prometheus text exposition of everything ppm measures.
pub fn render(pools: &[Scrape<'_>], master_rss: Option<u64>) -> String {
    let mut out = String::from(
        "# HELP ppm_requests_total Requests answered, by slot and status class.\n# TYPE ppm_requests_total counter\n",
    );
    for p in pools {
        for (row, counts) in p.metrics.requests.iter().enumerate() {
            let slot = if row == 0 {
                "none".to_string()
            } else {
                (row - 1).to_string()
            };
            for (class, count) in counts.iter().enumerate() {
                let code = format!("{}xx", class + 1);
                let _ = writeln!(
                    out,
                    "ppm_requests_total{} {}",
                    labels(p.pool, &[("slot", &slot), ("code", &code)]),
                    count.load(Ordering::Relaxed)
                );
            }
        }
    }
    let each = |h: fn(&Metrics) -> &Histogram| -> Vec<(Option<&str>, &Histogram)> {
        pools.iter().map(|p| (p.pool, h(p.metrics))).collect()
    };
    histogram(
        &mut out,
        "ppm_request_duration_seconds",
        "Time from request to response head.",
        &each(|m| &m.duration),
    );
    histogram(
        &mut out,
        "ppm_queue_wait_seconds",
        "Time requests waited for a worker.",
        &each(|m| &m.queue_wait),
    );
    gauge_header(
        &mut out,
        "ppm_queue_length",
        "Requests waiting for a worker.",
    );
    for p in pools {
        let _ = writeln!(
            out,
            "ppm_queue_length{} {}",
            labels(p.pool, &[]),
            p.queue_length
        );
    }
    gauge_header(&mut out, "ppm_workers", "Worker slots by state.");
    for p in pools {
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
            let count = p.slots.iter().filter(|s| s.state == state).count();
            let name = serde_json::to_value(state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "ppm_workers{} {count}",
                labels(p.pool, &[("state", &name)])
            );
        }
    }
    gauge_header(
        &mut out,
        "ppm_worker_memory_bytes",
        "PHP memory of each slot's worker after its last request.",
    );
    for p in pools {
        for s in p.slots {
            let slot = s.slot.to_string();
            let _ = writeln!(
                out,
                "ppm_worker_memory_bytes{} {}",
                labels(p.pool, &[("slot", &slot)]),
                s.memory_bytes
            );
        }
    }
    gauge_header(
        &mut out,
        "ppm_worker_rss_bytes",
        "Resident memory of each slot's worker.",
    );
    for p in pools {
        for s in p.slots {
            let slot = s.slot.to_string();
            let _ = writeln!(
                out,
                "ppm_worker_rss_bytes{} {}",
                labels(p.pool, &[("slot", &slot)]),
                s.rss_bytes
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP ppm_worker_restarts_total Workers replaced, by slot and reason.\n# TYPE ppm_worker_restarts_total counter"
    );
    for p in pools {
        for s in p.slots {
            let slot = s.slot.to_string();
            for (reason, count) in &s.restarts_by_reason {
                let _ = writeln!(
                    out,
                    "ppm_worker_restarts_total{} {count}",
                    labels(p.pool, &[("slot", &slot), ("reason", reason)])
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP ppm_worker_uncaught_exceptions_total Requests that ended with an uncaught PHP exception, by slot (native runtime).\n# TYPE ppm_worker_uncaught_exceptions_total counter"
    );
    for p in pools {
        for s in p.slots {
            let slot = s.slot.to_string();
            let _ = writeln!(
                out,
                "ppm_worker_uncaught_exceptions_total{} {}",
                labels(p.pool, &[("slot", &slot)]),
                s.uncaught_exceptions
            );
        }
    }
    gauge_header(
        &mut out,
        "ppm_pm_info",
        "The process manager's mode (--pm), as a label.",
    );
    for p in pools {
        let _ = writeln!(
            out,
            "ppm_pm_info{} 1",
            labels(p.pool, &[("mode", &p.pm.mode)])
        );
    }
    let counters: [Family<PmStatus>; 3] = [
        (
            "ppm_workers_spawned_total",
            "Workers started because requests or the spare minimum wanted one (--pm dynamic|ondemand).",
            |pm| pm.spawned,
        ),
        (
            "ppm_workers_retired_total",
            "Idle workers stopped (--pm dynamic|ondemand).",
            |pm| pm.retired,
        ),
        (
            "ppm_max_workers_reached_total",
            "Times a worker was wanted while every slot had one (php-fpm's max children reached).",
            |pm| pm.max_workers_reached,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for p in pools {
            let _ = writeln!(out, "{name}{} {}", labels(p.pool, &[]), value(p.pm));
        }
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
    for p in pools {
        let _ = writeln!(
            out,
            "ppm_client_connections{} {}",
            labels(p.pool, &[]),
            p.metrics.open_connections.load(Ordering::Relaxed).max(0)
        );
    }
    let totals: [Family<Metrics>; 2] = [
        (
            "ppm_received_bytes_total",
            "Request body bytes received from clients.",
            |m| m.bytes_in.load(Ordering::Relaxed),
        ),
        (
            "ppm_sent_bytes_total",
            "Response body bytes sent to clients.",
            |m| m.bytes_out.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, value) in totals {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for p in pools {
            let _ = writeln!(out, "{name}{} {}", labels(p.pool, &[]), value(p.metrics));
        }
    }
    out
}

fn gauge_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

fn histogram(out: &mut String, name: &str, help: &str, series: &[(Option<&str>, &Histogram)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (pool, histogram) in series {
        let (counts, sum) = histogram.snapshot();
        let mut cumulative = 0;
        for (i, count) in counts.iter().enumerate() {
            cumulative += count;
            let le = BUCKETS
                .get(i)
                .map(|b| b.to_string())
                .unwrap_or_else(|| "+Inf".into());
            let _ = writeln!(
                out,
                "{name}_bucket{} {cumulative}",
                labels(*pool, &[("le", &le)])
            );
        }
        let plain = labels(*pool, &[]);
        let _ = writeln!(
            out,
            "{name}_sum{plain} {sum}\n{name}_count{plain} {cumulative}"
        );
    }
}
