//! `ppm start --check` and `ppm configtest`: validate the configuration,
//! the PHP binary and the application's bootstrap without serving, the way
//! `nginx -t` and `php-fpm -t` do. One worker is booted and stopped
//! again; its PHP error, if any, is the answer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::StartOptions;
use crate::master::{make_run_dir, worker_spec};
use crate::Error;

/// `check` of every pool: one line per pool, or every pool's problem.
pub async fn check_pools(pools: &[crate::config::PoolOptions]) -> Result<String, Error> {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for pool in pools {
        match (check(&pool.options).await, &pool.name) {
            (Ok(line), None) => lines.push(line),
            (Ok(line), Some(name)) => lines.push(format!("pool {name}: {line}")),
            (Err(err), None) => errors.push(err),
            (Err(err), Some(name)) => errors.push(Error::Pool {
                pool: name.clone(),
                source: Box::new(err),
            }),
        }
    }
    Error::from_list(errors).map(|()| lines.join("\n"))
}

/// Checks everything `ppm start` would need; Ok means it would start.
pub async fn check(opts: &StartOptions) -> Result<String, Error> {
    opts.validate()?;
    if let Some(path) = &opts.pidfile {
        crate::master::pidfile::check(path)?;
    }
    check_ports(opts).await?;
    let run_dir = make_run_dir()?;
    let spec = worker_spec(&opts.app, run_dir.path())?;
    let started = Instant::now();
    let booted = crate::workers::native::spawn::boot(
        &spec,
        0,
        "check".into(),
        opts.bootstrap_timeout,
        |_| {},
    )
    .await
    .map_err(Error::Bootstrap)?;
    let booted_in = started.elapsed();
    let mut worker = booted.worker;
    worker.stop(Duration::from_secs(2)).await;
    Ok(summary(opts, booted_in))
}

fn summary(opts: &StartOptions, booted_in: Duration) -> String {
    format!(
        "configuration OK: {} workers, bridge {} ({}), the application booted in {} ms",
        opts.workers,
        opts.app.bridge,
        opts.app.bootstrap,
        booted_in.as_millis()
    )
}

/// Binds (and releases) every port `ppm start` would bind, so that a port
/// in use fails the check as it would fail the start; every busy port is
/// named. Sockets a service manager passes are not checked.
async fn check_ports(opts: &StartOptions) -> Result<(), Error> {
    if std::env::var_os("LISTEN_FDS").is_some() {
        return Ok(());
    }
    let mut ports = vec![
        (
            "control plane".to_string(),
            SocketAddr::new(opts.control_host, opts.control_port),
        ),
        (
            "balancer".to_string(),
            SocketAddr::new(opts.host, opts.port),
        ),
    ];
    for slot in 0..opts.workers {
        ports.push((
            format!("slot {slot}"),
            SocketAddr::new(opts.host, opts.slot_port(slot)),
        ));
    }
    let mut errors = Vec::new();
    for (what, addr) in ports {
        if let Err(source) = tokio::net::TcpListener::bind(addr).await {
            errors.push(Error::Bind { what, addr, source });
        }
    }
    Error::from_list(errors)
}
