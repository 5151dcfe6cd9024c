//! php-fpm's status page (`pm.status_path`) on the control plane, at
//! `GET /fpm-status`, so dashboards and exporters written for php-fpm
//! read ppm unchanged.
//!
//! The formats, field names and value formats are php-fpm 8.2's: plain
//! text by default, `?json`, `?xml`, `?html` and `?openmetrics`, with
//! `?full` adding one entry per worker process. How ppm's facts map onto
//! php-fpm's words:
//!
//! - `listen queue` is the balancer's queue of requests waiting for a
//!   worker (php-fpm's is the socket backlog); `listen queue len` is its
//!   bound, `--max-queue`; `max listen queue` its longest since start.
//! - `process manager` is `--pm` (static, dynamic or ondemand).
//! - `max children reached` counts the requests that had to queue because
//!   no worker was idle and no slot was left to start one (every slot of
//!   `--workers` had a worker), plus, in a dynamic pool, each time the
//!   spare minimum could not be kept for the same reason: the moments
//!   php-fpm would want another child and may not have one.
//! - `slow requests` counts requests still running after
//!   `--slow-request-time` (php-fpm's `request_slowlog_timeout`).
//! - `idle processes` are ready workers, `active processes` busy ones,
//!   exactly `/status`'s `ready_workers` and `busy_workers`; `total
//!   processes` is their sum, as in php-fpm (booting and stopping workers
//!   are not counted). `accepted conn` is the requests workers served,
//!   the sum of `/status`'s per-worker `requests`.
//! - Per process: what ppm does not track (the CPU time of the last
//!   request, its user and script, the content length, an idle worker's
//!   last request) is shown as php-fpm shows a process that has none: 0
//!   and `-`.
//! - The pool: php-fpm shows one pool per status page, so `?pool=NAME`
//!   picks one of `ppm.json`'s `pools` (the first by default); the
//!   single pool of a command line is php-fpm's default `www`.
//!
//! The counters the pool keeps for this page are a few atomics
//! (`crate::metrics::PoolCounters`), touched once per request at most.

mod render;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;

use crate::control::guard::{sees_everything, without_query};
use crate::control::state::ControlState;
use crate::metrics::PoolCounters;
use crate::workers::pool::{SlotState, SlotStatus};

/// The pool's line of the page.
#[derive(Debug, Clone, PartialEq)]
pub struct FpmStatus {
    pub pool: String,
    pub process_manager: String,
    /// Unix time the master started.
    pub start_time: u64,
    pub start_since: u64,
    pub accepted_conn: u64,
    pub listen_queue: usize,
    pub max_listen_queue: usize,
    pub listen_queue_len: usize,
    pub idle_processes: usize,
    pub active_processes: usize,
    pub total_processes: usize,
    pub max_active_processes: usize,
    pub max_children_reached: u64,
    pub slow_requests: u64,
    pub processes: Vec<FpmProcess>,
}

/// One worker process, with `?full`.
#[derive(Debug, Clone, PartialEq)]
pub struct FpmProcess {
    pub pid: u32,
    /// php-fpm's request stage: `Idle`, `Running` or `Finishing`.
    pub state: &'static str,
    pub start_time: u64,
    pub start_since: u64,
    pub requests: u64,
    /// Microseconds the running request has taken (0 when idle).
    pub request_duration: u64,
    pub request_method: String,
    pub request_uri: String,
    pub content_length: u64,
    pub user: String,
    pub script: String,
    /// Percent; ppm does not measure it.
    pub last_request_cpu: f64,
    pub last_request_memory: u64,
}

/// The facts the page shows, from one snapshot of the slots.
pub struct Snapshot<'a> {
    /// The pool's name: its name in `pools`, else php-fpm's default
    /// `www`, which is what dashboards expect.
    pub pool: &'a str,
    pub slots: &'a [SlotStatus],
    pub counters: &'a PoolCounters,
    /// `static`, `dynamic` or `ondemand`.
    pub process_manager: &'a str,
    pub queue_len: usize,
    pub start_time: u64,
    /// Unix time in milliseconds.
    pub now_ms: u64,
}

impl Snapshot<'_> {
    /// The page's figures.
    pub fn status(&self, full: bool) -> FpmStatus {
        let count = |s: SlotState| self.slots.iter().filter(|w| w.state == s).count();
        let (idle, active) = (count(SlotState::Ready), count(SlotState::Busy));
        let now = self.now_ms / 1000;
        let counters = self.counters;
        FpmStatus {
            pool: self.pool.into(),
            process_manager: self.process_manager.into(),
            start_time: self.start_time,
            start_since: now.saturating_sub(self.start_time),
            accepted_conn: self.slots.iter().map(|w| w.requests).sum(),
            listen_queue: self.queue_len,
            max_listen_queue: counters
                .max_queue
                .load(Ordering::Relaxed)
                .max(self.queue_len),
            listen_queue_len: counters.queue_bound,
            idle_processes: idle,
            active_processes: active,
            total_processes: idle + active,
            max_active_processes: counters.max_leased.load(Ordering::Relaxed).max(active),
            max_children_reached: counters.queued_all_busy.load(Ordering::Relaxed),
            slow_requests: counters.slow.load(Ordering::Relaxed),
            processes: if full {
                self.slots.iter().filter_map(|w| self.process(w)).collect()
            } else {
                Vec::new()
            },
        }
    }

    fn process(&self, slot: &SlotStatus) -> Option<FpmProcess> {
        let state = match (slot.state, &slot.current_request) {
            (SlotState::Ready, _) => "Idle",
            (SlotState::Busy, Some(_)) => "Running",
            // Leased but not yet sent, or after the response: terminate work.
            (SlotState::Busy, None) => "Finishing",
            _ => return None,
        };
        let start_time = slot.started_at.unwrap_or(self.start_time);
        let request = slot.current_request.as_ref();
        Some(FpmProcess {
            pid: slot.pid?,
            state,
            start_time,
            start_since: (self.now_ms / 1000).saturating_sub(start_time),
            requests: slot.worker_requests,
            request_duration: request
                .map(|r| self.now_ms.saturating_sub(r.started_at_ms) * 1000)
                .unwrap_or(0),
            request_method: request.map_or_else(|| "-".into(), |r| r.method.clone()),
            request_uri: request.map_or_else(|| "-".into(), |r| r.path.clone()),
            content_length: 0,
            user: "-".into(),
            script: "-".into(),
            last_request_cpu: 0.0,
            last_request_memory: if request.is_some() {
                0
            } else {
                slot.peak_memory_bytes
            },
        })
    }
}

/// The formats of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Xml,
    Html,
    OpenMetrics,
}

/// The format and `full` flag a query string asks for. Like php-fpm, only
/// the presence of a key counts (`?json`, `?full=1`, …).
pub fn parse_query(query: Option<&str>) -> (Format, bool) {
    let keys: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .map(|pair| pair.split_once('=').map_or(pair, |(k, _)| k))
        .collect();
    let has = |key: &str| keys.contains(&key);
    // php-fpm's order of precedence.
    let format = if has("html") {
        Format::Html
    } else if has("xml") {
        Format::Xml
    } else if has("json") {
        Format::Json
    } else if has("openmetrics") {
        Format::OpenMetrics
    } else {
        Format::Text
    };
    (format, has("full"))
}

/// `GET /fpm-status`.
pub async fn handler(
    State(state): State<Arc<ControlState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> axum::response::Response {
    let (format, full) = parse_query(query.as_deref());
    // php-fpm shows one pool per status page: `?pool=NAME` picks it, the
    // first pool by default.
    let pool = match state.one(query.as_deref(), true) {
        Ok(pool) => pool,
        Err(response) => return response,
    };
    let slots = pool.pool.status();
    let now_ms = crate::metrics::unix_now_ms();
    let mut status = Snapshot {
        pool: &pool.name,
        slots: &slots,
        counters: &pool.pool.fpm,
        process_manager: pool.pool.pm_mode().as_str(),
        queue_len: pool.pool.queue_len(),
        start_time: (now_ms / 1000).saturating_sub(state.started.elapsed().as_secs()),
        now_ms,
    }
    .status(full);
    if !sees_everything(&state, &headers) {
        for process in &mut status.processes {
            process.request_uri = without_query(&process.request_uri).to_string();
        }
    }
    let (content_type, body) = render::render(&status, format);
    (
        [
            (header::EXPIRES, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (
                header::CACHE_CONTROL,
                "no-cache, no-store, must-revalidate, max-age=0",
            ),
            (header::CONTENT_TYPE, content_type),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_picks_the_format_like_php_fpm() {
        assert_eq!(parse_query(None), (Format::Text, false));
        assert_eq!(parse_query(Some("json")), (Format::Json, false));
        assert_eq!(parse_query(Some("full&json")), (Format::Json, true));
        assert_eq!(parse_query(Some("json&full=1")), (Format::Json, true));
        assert_eq!(
            parse_query(Some("openmetrics")),
            (Format::OpenMetrics, false)
        );
        assert_eq!(parse_query(Some("xml&json")), (Format::Xml, false));
        assert_eq!(parse_query(Some("html")), (Format::Html, false));
        assert_eq!(parse_query(Some("jsonp")), (Format::Text, false));
    }

    #[test]
    fn counters_keep_their_maxima() {
        let c = PoolCounters::default();
        c.leased();
        c.leased();
        c.released();
        c.leased();
        c.released();
        c.released();
        assert_eq!(c.max_leased.load(Ordering::Relaxed), 2);
        assert_eq!(c.leased.load(Ordering::Relaxed), 0);
        c.queued(3, true);
        c.queued(1, false);
        assert_eq!(c.max_queue.load(Ordering::Relaxed), 3);
        assert_eq!(c.queued_all_busy.load(Ordering::Relaxed), 1);
    }
}
