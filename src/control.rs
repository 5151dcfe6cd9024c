//! The control plane (port 5500): status, health, readiness and stop over
//! HTTP, and the client side used by `ppm status` and `ppm stop`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::control_guard::{self, guard, sees_everything, without_query};
use crate::metrics::{Metrics, RecentError};
use crate::pool::{Pool, SlotState, SlotStatus};
use crate::rolling::{RestartState, RestartStatus, Restarts};
use crate::Error;

pub use crate::status_table::render_table;

/// What the control plane knows besides the pool.
pub struct ControlState {
    pub pool: Arc<Pool>,
    pub metrics: Arc<Metrics>,
    pub restarts: Arc<Restarts>,
    /// The token mutating (and, unless `public_read`, reading) requests need.
    pub token: Option<String>,
    pub public_read: bool,
    /// Set to true to stop the master.
    pub shutdown: watch::Sender<bool>,
    pub started: Instant,
    pub info: ClusterInfo,
}

/// Fixed facts about the running cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub master_pid: u32,
    pub app_dir: PathBuf,
    pub bridge: String,
    pub bootstrap: String,
    pub php: PathBuf,
    pub balancer: SocketAddr,
    pub control: SocketAddr,
}

/// The body of `GET /status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    #[serde(flatten)]
    pub info: ClusterInfo,
    pub uptime_seconds: u64,
    pub total_workers: usize,
    pub ready_workers: usize,
    pub busy_workers: usize,
    pub queue_length: usize,
    pub requests_total: u64,
    /// The process manager (`--pm`): its mode, workers spawned and retired,
    /// and how often every slot was in use when another worker was wanted.
    #[serde(default)]
    pub pm: crate::pool::PmStatus,
    /// Estimated request latency percentiles (p50, p90, p99) in milliseconds.
    pub latency_ms: Latency,
    /// The last 5xx answers.
    pub recent_errors: Vec<RecentError>,
    pub shutting_down: bool,
    /// The last rolling restart, running or finished.
    pub restart: Option<RestartStatus>,
    pub workers: Vec<WorkerRow>,
}

/// Request latency percentiles in milliseconds (None before any request).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

/// One slot in `GET /status`: `SlotStatus`, kept as plain JSON so that
/// the client side needs no knowledge of the pool's types.
pub type WorkerRow = serde_json::Value;

/// The control plane's routes.
pub fn router(state: Arc<ControlState>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/fpm-status", get(crate::fpm_status::handler))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/stop", post(stop))
        .route("/restart", post(restart))
        .route("/workers/{slot}/restart", post(restart_slot))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        // After the guard: the page holds no data and asks for the token itself.
        .route("/", get(dashboard))
        .route(crate::identify::PROBE_PATH, get(health))
        .layer(axum::middleware::map_response(
            crate::identify::mark_control,
        ))
        // Every route, the dashboard and unknown paths included.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            control_guard::host_guard,
        ))
        .with_state(state)
}

/// `GET /`: the dashboard, one self-contained page that polls `/status`.
async fn dashboard() -> impl IntoResponse {
    let csp = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
               connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
    let html = [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")];
    (
        html,
        [(axum::http::header::CONTENT_SECURITY_POLICY, csp)],
        include_str!("dashboard.html"),
    )
}

async fn cluster_status(state: &ControlState) -> ClusterStatus {
    let mut slots: Vec<SlotStatus> = state.pool.status();
    crate::metrics::fill_missing_rss(&mut slots).await;
    let count = |s: SlotState| slots.iter().filter(|w| w.state == s).count();
    ClusterStatus {
        info: state.info.clone(),
        uptime_seconds: state.started.elapsed().as_secs(),
        total_workers: slots.len(),
        ready_workers: count(SlotState::Ready),
        busy_workers: count(SlotState::Busy),
        queue_length: state.pool.queue_len(),
        requests_total: state.metrics.requests_total(),
        pm: state.pool.pm_status(),
        latency_ms: Latency {
            p50: state.metrics.duration.quantile(0.5).map(|s| s * 1000.0),
            p90: state.metrics.duration.quantile(0.9).map(|s| s * 1000.0),
            p99: state.metrics.duration.quantile(0.99).map(|s| s * 1000.0),
        },
        recent_errors: state.metrics.recent_errors(),
        shutting_down: *state.shutdown.borrow(),
        restart: state.restarts.last(),
        workers: slots
            .iter()
            .map(|w| serde_json::to_value(w).unwrap_or_default())
            .collect(),
    }
}

async fn status(
    State(state): State<Arc<ControlState>>,
    headers: axum::http::HeaderMap,
) -> Json<ClusterStatus> {
    let mut status = cluster_status(&state).await;
    if !sees_everything(&state, &headers) {
        redact_queries(&mut status);
    }
    Json(status)
}

/// Leaves only the paths of running and failed requests, for readers
/// without the token.
fn redact_queries(status: &mut ClusterStatus) {
    for worker in &mut status.workers {
        if let Some(serde_json::Value::String(path)) = worker
            .get_mut("current_request")
            .and_then(|r| r.get_mut("path"))
        {
            *path = without_query(path).to_string();
        }
    }
    for error in &mut status.recent_errors {
        error.path = without_query(&error.path).to_string();
    }
}

async fn metrics(State(state): State<Arc<ControlState>>) -> impl IntoResponse {
    let master_rss = crate::metrics::process_rss(std::process::id()).await;
    let mut slots = state.pool.status();
    crate::metrics::fill_missing_rss(&mut slots).await;
    let text = state.metrics.render(
        &slots,
        state.pool.queue_len(),
        master_rss,
        &state.pool.pm_status(),
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(state): State<Arc<ControlState>>) -> impl IntoResponse {
    if state.pool.available() && !state.pool.is_going_away() && !*state.shutdown.borrow() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn stop(State(state): State<Arc<ControlState>>) -> impl IntoResponse {
    tracing::info!("stop requested through the control plane");
    state.shutdown.send_replace(true);
    (StatusCode::ACCEPTED, "stopping\n")
}

async fn restart(State(state): State<Arc<ControlState>>) -> impl IntoResponse {
    if *state.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response();
    }
    (StatusCode::ACCEPTED, Json(state.restarts.start(None))).into_response()
}

async fn restart_slot(
    State(state): State<Arc<ControlState>>,
    Path(slot): Path<String>,
) -> impl IntoResponse {
    let Some(slot) = slot.parse::<usize>().ok().filter(|s| *s < state.pool.len()) else {
        let message = format!(
            "no slot {slot}: slots are 0 to {}\n",
            state.pool.len().saturating_sub(1)
        );
        return (StatusCode::NOT_FOUND, message).into_response();
    };
    if *state.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response();
    }
    (
        StatusCode::ACCEPTED,
        Json(state.restarts.start(Some(vec![slot]))),
    )
        .into_response()
}

/// `ppm restart`: starts (or joins) a rolling restart and follows it,
/// printing one line per replaced slot. Fails with PHP's error when a
/// replacement could not boot.
pub async fn restart_master(client: &ControlClient, timeout: Duration) -> Result<(), Error> {
    let fail = |message: String| client.fail(message);
    let (code, body) = client.call("POST", "/restart").await?;
    if code != 202 {
        return Err(fail(format!(
            "POST /restart answered {code}: {}",
            String::from_utf8_lossy(&body).trim()
        )));
    }
    let started: RestartStatus =
        serde_json::from_slice(&body).map_err(|e| fail(format!("unreadable answer: {e}")))?;
    println!(
        "rolling restart {} of {} slots",
        started.id,
        started.slots.len()
    );
    let deadline = Instant::now() + timeout;
    let mut reported = 0;
    loop {
        let (code, body) = client.call("GET", "/status").await?;
        if code != 200 {
            return Err(fail(format!("GET /status answered {code}")));
        }
        let status: ClusterStatus =
            serde_json::from_slice(&body).map_err(|e| fail(format!("unreadable status: {e}")))?;
        let Some(restart) = status.restart.filter(|r| r.id == started.id) else {
            return Err(fail("the restart disappeared from /status".into()));
        };
        for &slot in restart.done.iter().skip(reported) {
            let pid = status
                .workers
                .get(slot)
                .and_then(|w| w["pid"].as_u64())
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into());
            reported += 1;
            println!(
                "slot {slot}: new worker {pid} ready ({reported}/{})",
                restart.slots.len()
            );
        }
        match restart.state {
            RestartState::Succeeded => {
                println!("restart done: {} workers replaced", restart.done.len());
                return Ok(());
            }
            RestartState::Failed => {
                return Err(fail(format!(
                    "restart failed; the old workers keep serving.\n{}",
                    restart.error.unwrap_or_default()
                )));
            }
            RestartState::Running => {}
        }
        if Instant::now() >= deadline {
            return Err(fail(format!(
                "restart still running after {}s",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where a running master's control plane is, and the token it may want.
#[derive(Debug, Clone)]
pub struct ControlClient {
    pub addr: String,
    pub token: Option<String>,
}

impl ControlClient {
    fn fail(&self, message: String) -> Error {
        Error::Control {
            addr: self.addr.clone(),
            message,
        }
    }

    /// Makes one HTTP request to the control plane; returns status and body.
    pub async fn call(&self, method: &str, path: &str) -> Result<(u16, Bytes), Error> {
        let (code, _, body) = call(&self.addr, self.token.as_deref(), method, path).await?;
        if code == 401 {
            return Err(self.fail(match self.token {
                Some(_) => format!(
                    "{method} {path}: the control token was wrong (the master refused it); \
                     check --control-token-file, --control-token, PPM_CONTROL_TOKEN or the token in ppm.json"
                ),
                None => format!(
                    "{method} {path} needs the control token: pass --control-token-file or --control-token, or set PPM_CONTROL_TOKEN"
                ),
            }));
        }
        Ok((code, body))
    }
}

/// Makes one HTTP request to a control plane and returns status, headers
/// and body.
pub(crate) async fn call(
    addr: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
) -> Result<(u16, hyper::HeaderMap, Bytes), Error> {
    let fail = |message: String| Error::Control {
        addr: addr.to_string(),
        message,
    };
    let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| fail("connection timed out".into()))?
        .map_err(|e| fail(format!("cannot connect ({e}); is ppm running there?")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail(e.to_string()))?;
    tokio::spawn(conn);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr);
    if let Some(token) = token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(e.to_string()))?;
    let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
        .await
        .map_err(|_| fail("no answer within 30 s".into()))?
        .map_err(|e| fail(e.to_string()))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| fail(e.to_string()))?
        .to_bytes();
    Ok((status, headers, body))
}

/// `ppm status`: prints the cluster as a table, or its JSON; with
/// `watch`, refreshes it in place every second until interrupted.
pub async fn print_status(client: &ControlClient, json: bool, watch: bool) -> Result<(), Error> {
    use std::io::IsTerminal;
    let terminal = std::io::stdout().is_terminal();
    loop {
        let (code, body) = client.call("GET", "/status").await?;
        if code != 200 {
            return Err(client.fail(format!("GET /status answered {code}")));
        }
        let text = if json {
            format!("{}\n", String::from_utf8_lossy(&body))
        } else {
            let status: ClusterStatus = serde_json::from_slice(&body)
                .map_err(|e| client.fail(format!("unreadable status: {e}")))?;
            render_table(&status, terminal)
        };
        if watch && terminal {
            // Home and clear, so the table refreshes in place.
            print!("\x1b[H\x1b[2J");
        }
        print!("{text}");
        if !watch {
            return Ok(());
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `ppm stop`: asks the master to stop and waits until it has exited.
pub async fn stop_master(client: &ControlClient, timeout: Duration) -> Result<(), Error> {
    let addr = client.addr.as_str();
    let (code, _) = client.call("POST", "/stop").await?;
    if code != 202 {
        return Err(client.fail(format!("POST /stop answered {code}")));
    }
    let deadline = Instant::now() + timeout;
    // The master closes the control port last, after every worker exited.
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(Error::Control {
        addr: addr.to_string(),
        message: format!(
            "still running {}s after the stop request",
            timeout.as_secs()
        ),
    })
}
