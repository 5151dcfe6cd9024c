//! `ppm start --check` and `ppm configtest`: validate the configuration,
//! the PHP binary and the application's bootstrap without serving, the way
//! `nginx -t` and `php-fpm -t` do. One worker is booted on a private
//! socket and stopped again; its PHP error, if any, is the answer.

use std::time::{Duration, Instant};

use crate::config::StartOptions;
use crate::master::{make_run_dir, worker_spec};
use crate::worker::{reported_boot_error, Listen, Worker, WorkerEvent};
use crate::Error;

/// Checks everything `ppm start` would need; Ok means it would start.
pub async fn check(opts: &StartOptions) -> Result<String, Error> {
    opts.validate()?;
    let run_dir = make_run_dir()?;
    let spec = worker_spec(&opts.app, run_dir.path())?;
    let socket = run_dir.path().join("check.sock");
    let started = Instant::now();
    let (mut worker, mut events) = Worker::spawn(&spec, &Listen::Unix(socket), 0, "check".into())
        .await
        .map_err(Error::Spawn)?;
    let deadline = tokio::time::sleep(opts.bootstrap_timeout());
    tokio::pin!(deadline);
    let outcome = loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(WorkerEvent::Ready { .. }) => break Ok(()),
                Some(WorkerEvent::BootstrapError { message }) => break Err(message),
                Some(_) => {}
                None => {
                    let exit = worker.wait().await;
                    break Err(format!("the worker exited during bootstrap ({exit})\n{}", worker.recent_output()));
                }
            },
            exit = worker.wait() => {
                break Err(reported_boot_error(&mut events)
                    .await
                    .unwrap_or_else(|| format!("the worker exited during bootstrap ({exit})\n{}", worker.recent_output())));
            }
            _ = &mut deadline => break Err(format!(
                "the worker did not become ready within {:?} (--bootstrap-timeout)",
                opts.bootstrap_timeout()
            )),
        }
    };
    let booted_in = started.elapsed();
    worker.stop(Duration::from_secs(2)).await;
    outcome.map_err(Error::Bootstrap)?;
    Ok(format!(
        "configuration OK: {} workers, bridge {} ({}), {}, the application booted in {} ms",
        opts.workers,
        opts.app.bridge,
        opts.app.bootstrap,
        spec.php.path.display(),
        booted_in.as_millis()
    ))
}
