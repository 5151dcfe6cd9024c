//! The control plane (port 5500): status, health, readiness, restarts and
//! stop over HTTP for every pool of the master, and (in `client`) the
//! side used by `ppm status`, `ppm restart` and `ppm stop`.
//!
//! A request about one pool names it with `?pool=NAME`; without it, a
//! read covers every pool and a restart restarts every pool, one pool's
//! slots never waiting for another's.

mod client;
pub mod fpm_status;
pub mod guard;
pub mod identify;
pub mod prometheus;
pub mod served;
mod state;
mod status;
pub mod status_table;

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::control::guard::{guard, sees_everything, without_query};

pub use crate::control::status_table::render_table;
pub use client::{print_status, restart_master, stop_master, ControlClient};
pub use state::ControlState;
pub use status::{ClusterInfo, ClusterStatus, Latency, PoolStatus, WorkerRow};

/// The control plane's routes.
pub fn router(state: Arc<ControlState>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/fpm-status", get(crate::control::fpm_status::handler))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/stop", post(stop))
        .route("/restart", post(restart))
        .route("/workers/{slot}/restart", post(restart_slot))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        // After the guard: the page holds no data and asks for the token itself.
        .route("/", get(dashboard))
        .route(crate::control::identify::PROBE_PATH, get(health))
        .layer(axum::middleware::map_response(
            crate::control::identify::mark_control,
        ))
        // Every route, the dashboard and unknown paths included.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::host_guard,
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

async fn status(
    State(state): State<Arc<ControlState>>,
    RawQuery(query): RawQuery,
    headers: axum::http::HeaderMap,
) -> Response {
    let pools = match state.select(query.as_deref()) {
        Ok(pools) => pools,
        Err(response) => return response,
    };
    let mut status = status::cluster_status(&state, &pools).await;
    if !sees_everything(&state, &headers) {
        redact_queries(&mut status);
    }
    Json(status).into_response()
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
    let mut figures = Vec::with_capacity(state.pools.len());
    for pool in &state.pools {
        let mut slots = pool.pool.status();
        status::fill_missing_rss(&mut slots).await;
        figures.push((pool, slots, pool.pool.pm_status()));
    }
    let scrapes: Vec<_> = figures
        .iter()
        .map(|(pool, slots, pm)| crate::control::prometheus::Scrape {
            pool: pool.named.then_some(pool.name.as_str()),
            metrics: &pool.balancer.metrics,
            slots,
            queue_length: pool.pool.queue_len(),
            pm,
        })
        .collect();
    let text = crate::control::prometheus::render(&scrapes, master_rss);
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

/// `GET /ready`: 200 while every pool (or the one `?pool=` names) can
/// serve and the master is not stopping.
async fn ready(State(state): State<Arc<ControlState>>, RawQuery(query): RawQuery) -> Response {
    let pools = match state.select(query.as_deref()) {
        Ok(pools) => pools,
        Err(response) => return response,
    };
    let up = pools.iter().all(|p| p.pool.available());
    if up && !state.shutdown.phase().is_going_away() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn stop(State(state): State<Arc<ControlState>>) -> impl IntoResponse {
    tracing::info!("stop requested through the control plane");
    state.shutdown.request();
    (StatusCode::ACCEPTED, "stopping\n")
}

/// `POST /restart[?pool=NAME]`: a rolling restart of that pool, or of
/// every pool (each rolls on its own). The answer is the restart's
/// status; for several pools, a list of them.
async fn restart(State(state): State<Arc<ControlState>>, RawQuery(query): RawQuery) -> Response {
    let pools = match state.select(query.as_deref()) {
        Ok(pools) => pools,
        Err(response) => return response,
    };
    if state.shutdown.phase().is_going_away() {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response();
    }
    let started: Vec<_> = pools.iter().map(|p| p.restarts.start(None)).collect();
    match started.as_slice() {
        [only] => (StatusCode::ACCEPTED, Json(only)).into_response(),
        _ => (StatusCode::ACCEPTED, Json(started)).into_response(),
    }
}

async fn restart_slot(
    State(state): State<Arc<ControlState>>,
    Path(slot): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let pool = match state.one(query.as_deref(), false) {
        Ok(pool) => pool,
        Err(response) => return response,
    };
    let Some(slot) = slot.parse::<usize>().ok().filter(|s| *s < pool.pool.len()) else {
        let message = format!(
            "no slot {slot}: slots are 0 to {}\n",
            pool.pool.len().saturating_sub(1)
        );
        return (StatusCode::NOT_FOUND, message).into_response();
    };
    if state.shutdown.phase().is_going_away() {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response();
    }
    (
        StatusCode::ACCEPTED,
        Json(pool.restarts.start(Some(vec![slot]))),
    )
        .into_response()
}
