//! Starting a native worker (`ppm php-worker`) for a slot and waiting for
//! its bootstrap.
//!
//! The worker is this binary, started through the spawner
//! (parent-death signal, `--user`, `--env`, its own process group,
//! the guard), with one end of a socket pair as its descriptor 3: the frame
//! socket, which is its only channel to the master. The bootstrap ends
//! with the worker's `Ready` frame, or its `BootError` (PHP's error text),
//! or its exit.

use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::sync::mpsc;

use super::conn::{ConnError, FrameConn};
use super::frames::ToMaster;
use crate::workers::process::{base_command, pass_as_fd3, start, Worker, WorkerEvent, WorkerSpec};

/// A booted native worker: the process, its connection, the slot events
/// its exchanges pass on.
pub struct Booted {
    pub worker: Worker,
    pub conn: FrameConn,
    pub events: mpsc::UnboundedReceiver<WorkerEvent>,
}

/// Starts a native worker for `slot` and waits up to `timeout` for its
/// bootstrap; the error is PHP's, or says how the worker ended.
pub async fn boot(
    spec: &WorkerSpec,
    slot: usize,
    label: String,
    timeout: Duration,
    on_started: impl FnOnce(u32),
) -> Result<Booted, String> {
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(|err| format!("socketpair: {err}"))?;
    let control = ours
        .try_clone()
        .and_then(|c| ours.set_nonblocking(true).map(|()| c))
        .map_err(|err| format!("frame socket: {err}"))?;
    let theirs: OwnedFd = theirs.into();
    let mut cmd = base_command(spec, &spec.program);
    cmd.arg("php-worker")
        .arg("--fd")
        .arg("3")
        .arg("--entry")
        .arg(&spec.entry)
        .arg("--slot")
        .arg(slot.to_string())
        .arg("--bridge")
        .arg(&spec.app.bridge)
        .arg("--bootstrap")
        .arg(&spec.app.bootstrap)
        .arg("--app-env")
        .arg(&spec.app.app_env)
        .arg(format!("--debug={}", spec.app.debug));
    for setting in &spec.app.php_ini {
        cmd.arg(format!("--php-ini={setting}"));
    }
    if let Some(root) = &spec.app.document_root {
        cmd.arg("--document-root").arg(spec.app_dir.join(root));
    }
    cmd.arg(&spec.app_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    pass_as_fd3(&mut cmd, &theirs);
    let started = start(cmd, vec![theirs], &label)
        .await
        .map_err(|err| format!("cannot run {}: {err}", spec.program.display()))?;
    let pid = started.1;
    let mut worker = Worker::with_frames(started, control);
    on_started(pid);
    let socket = tokio::net::UnixStream::from_std(ours).map_err(|err| err.to_string());
    let (tx, events) = mpsc::unbounded_channel();
    let mut conn = match socket {
        Ok(socket) => FrameConn::new(socket, label, tx),
        Err(err) => return Err(err),
    };
    let failed = |worker: &Worker, what: String| {
        let output = worker.recent_output();
        if output.is_empty() {
            what
        } else {
            format!("{what}; its last output:\n{output}")
        }
    };
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let outcome = tokio::select! {
        read = wait_ready(&mut conn) => match read {
            Ok(None) => Ok(()),
            Ok(Some(message)) => Err(message),
            Err(err) => {
                let exit = match tokio::time::timeout(Duration::from_secs(2), worker.wait()).await {
                    Ok(exit) => exit,
                    Err(_) => err.to_string(),
                };
                Err(failed(&worker, format!("the worker exited during bootstrap ({exit})")))
            }
        },
        _ = &mut deadline => Err(failed(&worker, format!(
            "the worker did not become ready within {timeout:?} (--bootstrap-timeout)"
        ))),
    };
    match outcome {
        Ok(()) => Ok(Booted {
            worker,
            conn,
            events,
        }),
        Err(message) => {
            worker.kill_group();
            let _ = worker.wait().await;
            Err(message)
        }
    }
}

/// Reads frames until `Ready` (None) or `BootError` (its text).
async fn wait_ready(conn: &mut FrameConn) -> Result<Option<String>, ConnError> {
    loop {
        match conn.next().await? {
            ToMaster::Ready => return Ok(None),
            ToMaster::BootError(message) => return Ok(Some(message)),
            ToMaster::PhpInfo { memory_limit } => conn.php_memory_limit = Some(memory_limit),
            _ => {}
        }
    }
}
