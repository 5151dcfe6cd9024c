//! The client side of the control plane: `ppm status`, `ppm restart`
//! and `ppm stop` talking to a running master.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use super::{render_table, ClusterStatus};
use crate::workers::rolling::{RestartState, RestartStatus};
use crate::Error;

/// `ppm restart [--pool NAME]`: starts (or joins) a rolling restart of
/// the pool, or of every pool one after the other, and follows it,
/// printing one line per replaced slot. Fails with PHP's error when a
/// replacement could not boot (after trying the other pools).
pub async fn restart_master(
    client: &ControlClient,
    timeout: Duration,
    pool: Option<&str>,
) -> Result<(), Error> {
    let pools: Vec<Option<String>> = match pool {
        Some(name) => vec![Some(name.to_string())],
        None => {
            let (code, body) = client.call("GET", "/status").await?;
            if code != 200 {
                return Err(client.fail(format!("GET /status answered {code}")));
            }
            let status: ClusterStatus = serde_json::from_slice(&body)
                .map_err(|e| client.fail(format!("unreadable status: {e}")))?;
            if status.pools.is_empty() {
                vec![None]
            } else {
                status.pools.into_iter().map(|p| Some(p.name)).collect()
            }
        }
    };
    let deadline = Instant::now() + timeout;
    let mut failures = Vec::new();
    for pool in &pools {
        if let Err(err) = restart_pool(client, deadline, timeout, pool.as_deref()).await {
            failures.push(err);
        }
    }
    Error::from_list(failures)
}

/// One pool's rolling restart (the only pool's when `pool` is None).
async fn restart_pool(
    client: &ControlClient,
    deadline: Instant,
    timeout: Duration,
    pool: Option<&str>,
) -> Result<(), Error> {
    let (query, prefix) = match pool {
        Some(name) => (format!("?pool={name}"), format!("pool {name}: ")),
        None => (String::new(), String::new()),
    };
    let fail = |message: String| client.fail(format!("{prefix}{message}"));
    let (code, body) = client.call("POST", &format!("/restart{query}")).await?;
    if code != 202 {
        return Err(fail(format!(
            "POST /restart{query} answered {code}: {}",
            String::from_utf8_lossy(&body).trim()
        )));
    }
    let started: RestartStatus =
        serde_json::from_slice(&body).map_err(|e| fail(format!("unreadable answer: {e}")))?;
    println!(
        "{prefix}rolling restart {} of {} slots",
        started.id,
        started.slots.len()
    );
    let mut reported = 0;
    loop {
        let (code, body) = client.call("GET", &format!("/status{query}")).await?;
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
                "{prefix}slot {slot}: new worker {pid} ready ({reported}/{})",
                restart.slots.len()
            );
        }
        match restart.state {
            RestartState::Succeeded => {
                println!(
                    "{prefix}restart done: {} workers replaced",
                    restart.done.len()
                );
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
    pub(super) fn fail(&self, message: String) -> Error {
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
