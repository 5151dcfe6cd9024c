//! What every test that starts a master of its own needs from it: its
//! `/status`, the worker pids it ever listed (so that none is left behind)
//! and a bounded stop. `Cluster`, and the masters the systemd, pools and
//! privileges tests spawn themselves, all go through these.

use std::process::Child;
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use super::{http, pid_alive, wait_until};

/// `GET /status` of the control plane on `control_port` (with the bearer
/// `token` if there is one); None while it does not answer.
pub fn get_status(control_port: u16, token: Option<&str>) -> Option<Value> {
    let mut request = http()
        .get(format!("http://127.0.0.1:{control_port}/status"))
        .timeout(Duration::from_secs(5));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().ok()?.json().ok()
}

/// The pid of each slot's worker in a `/status` answer (0 for a slot
/// without one), in slot order.
pub fn worker_pids_in(status: &Value) -> Vec<u32> {
    status["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| w["pid"].as_u64().unwrap_or(0) as u32)
        .collect()
}

/// Ready plus busy workers in a `/status` answer: the ones serving.
pub fn serving_in(status: &Value) -> Option<u64> {
    Some(status["ready_workers"].as_u64()? + status["busy_workers"].as_u64()?)
}

/// Adds the worker pids of a `/status` answer to `seen`, once each.
pub fn note_worker_pids(status: &Value, seen: &mut Vec<u32>) {
    for pid in worker_pids_in(status) {
        if pid != 0 && !seen.contains(&pid) {
            seen.push(pid);
        }
    }
}

/// SIGTERM to `child`, then SIGKILL if it has not exited within `grace`;
/// reaped either way.
pub fn stop_child(child: &mut Child, grace: Duration) {
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    if wait_until(grace, || child.try_wait().ok().flatten()).is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Kills every process in `pids` that is still alive, and their groups
/// (PHP workers run in groups of their own); for teardown paths.
pub fn kill_all(pids: &[u32]) {
    for &pid in pids {
        if pid_alive(pid) {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Waits (bounded) until none of `pids` is alive; the ones still alive
/// after `timeout` otherwise.
pub fn wait_all_gone(pids: &[u32], timeout: Duration) -> Result<(), Vec<u32>> {
    let alive = || -> Vec<u32> { pids.iter().copied().filter(|&p| pid_alive(p)).collect() };
    match wait_until(timeout, || alive().is_empty().then_some(())) {
        Some(()) => Ok(()),
        None => Err(alive()),
    }
}

/// Asserts none of the worker `pids` is alive within `timeout`; the
/// failure shows the master's `log`.
pub fn assert_workers_gone(pids: &[u32], timeout: Duration, log: impl FnOnce() -> String) {
    if let Err(alive) = wait_all_gone(pids, timeout) {
        panic!("worker processes left behind: {alive:?}\nlog:\n{}", log());
    }
}

/// Whether a worker has been running a request for at least `running_for`
/// (long enough that the request has reached PHP, not just been handed to
/// the worker), in a `/status` answer.
pub fn request_running(status: &Value, running_for: Duration) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    status["workers"].as_array().into_iter().flatten().any(|w| {
        w["current_request"]["started_at_ms"]
            .as_u64()
            .is_some_and(|started| now.saturating_sub(started) >= running_for.as_millis() as u64)
    })
}

/// The sum of a metric's series (every label set) in a Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}
