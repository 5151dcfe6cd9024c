//! `ppm worker --listen ADDR`: one process that serves
//! HTTP with PHP hosted in it, for debugging an application and as the
//! benchmark baseline.
//!
//! PHP runs on the main thread (it has no stack guard, and spawned threads
//! have small stacks), and serves HTTP itself through an
//! [`HttpLink`](super::http_link::HttpLink): no other thread touches a
//! request. A second thread only waits for SIGTERM or SIGINT: it tells
//! PHP's thread to stop after the request in progress, and ends the
//! process if that request is still running [`STOP_GRACE`] later.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::watch;

use super::host;
use super::http_link::HttpLink;
use crate::config::AppOptions;
use crate::Error;

/// How long a stop waits for the request in progress.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Serves `app` on `listen` until SIGTERM or SIGINT; returns the exit status.
pub fn run(app: AppOptions, listen: SocketAddr) -> Result<i32, Error> {
    app.validate()?;
    let run_dir = crate::master::make_run_dir()?;
    let entry = host::install_entry(run_dir.path())?;
    let listener = std::net::TcpListener::bind(listen).map_err(|source| Error::Bind {
        what: "worker".into(),
        addr: listen,
        source,
    })?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || watch_signals(stop_tx, ready_tx))?;
    // The signal handlers must exist before PHP's first request startup,
    // which chains PHP's own handlers to them.
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return Err(err.into()),
        Err(_) => return Err(Error::Php("the signal thread ended".into())),
    }
    let boot_error = Rc::new(RefCell::new(None));
    let link = HttpLink::new(
        listener,
        app.dir.display().to_string(),
        stop_rx,
        boot_error.clone(),
    )?;
    let status = host::run(Box::new(link), &app, &entry, 0)?;
    match boot_error.take() {
        Some(message) => Err(Error::Bootstrap(message)),
        None => Ok(status),
    }
}

/// Waits for SIGTERM or SIGINT, asks PHP's thread to stop, and ends the
/// process if it has not stopped within [`STOP_GRACE`].
fn watch_signals(stop: watch::Sender<bool>, ready: std::sync::mpsc::Sender<std::io::Result<()>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            let _ = ready.send(Err(err));
            return;
        }
    };
    rt.block_on(async {
        let signals = signal(SignalKind::terminate())
            .and_then(|term| Ok((term, signal(SignalKind::interrupt())?)));
        let (mut term, mut int) = match signals {
            Ok(signals) => signals,
            Err(err) => {
                let _ = ready.send(Err(err));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = stop.send(true);
        tokio::time::sleep(STOP_GRACE).await;
        tracing::error!(
            "the request in progress did not finish within {}s of the stop; exiting",
            STOP_GRACE.as_secs()
        );
        // SAFETY: ends the process without running anything else; PHP's
        // thread is busy and will not answer.
        unsafe { nix::libc::_exit(1) }
    });
}
