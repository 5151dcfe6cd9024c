//! The master process: binds every public socket, starts the pools, serves
//! their balancers and slot ports and the control plane, and shuts all of
//! it down in order on SIGTERM, SIGINT or `POST /stop`.

pub mod check;
pub mod pidfile;
pub mod reload;
pub mod served;

use std::net::{IpAddr, SocketAddr};

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::PoolOptions;
use crate::control::served::ServedPool;
use crate::control::{self, ControlState};
use crate::master::pidfile::PidFile;
use crate::master::served::Prepared;
use crate::shutdown::{Phase, Shutdown};
use crate::systemd::{Inherited, Notifier};

use crate::workers::rundir::RunDir;
use crate::Error;

/// Takes the listening socket for `ip:port` from the service manager, or
/// binds it.
pub(crate) async fn bind(
    inherited: &Inherited,
    ip: IpAddr,
    port: u16,
    what: &str,
) -> Result<TcpListener, Error> {
    let addr = SocketAddr::new(ip, port);
    let fail = |source| Error::Bind {
        what: what.to_string(),
        addr,
        source,
    };
    match inherited.take(addr) {
        Some(listener) => TcpListener::from_std(listener).map_err(fail),
        None => TcpListener::bind(addr).await.map_err(fail),
    }
}

/// Runs the master in the foreground until it is told to stop: one pool
/// per entry of `pools` (validated by `config::start_pools`).
pub async fn run(pools: Vec<PoolOptions>) -> Result<(), Error> {
    let Some(first) = pools.first() else {
        return Err(Error::Usage("no pool to run".into()));
    };
    // The master's own options are global: every pool carries the same.
    let mut global = first.options.clone();
    if std::env::args().any(|a| a == "--control-token" || a.starts_with("--control-token=")) {
        tracing::warn!(
            "--control-token on the command line is visible to every local user in ps; \
             use --control-token-file or PPM_CONTROL_TOKEN"
        );
    }
    let fd_limit = crate::workers::fdlimit::raise();
    let all_workers = pools.iter().map(|p| p.options.workers).sum();
    global.max_connections =
        crate::workers::fdlimit::connections_allowed(global.max_connections, fd_limit, all_workers);
    let pidfile = global.pidfile.as_deref().map(PidFile::create).transpose()?;
    let run_dir = RunDir::create()?;
    let mut prepared: Vec<Prepared> = Vec::with_capacity(pools.len());
    let mut errors = Vec::new();
    for mut pool in pools {
        pool.options.max_connections = global.max_connections;
        match Prepared::new(
            pool,
            run_dir.path(),
            prepared.first().map(|p| p.front_door()),
        ) {
            Ok(ready) => prepared.push(ready),
            Err(err) => errors.push(err),
        }
    }
    Error::from_list(errors)?;
    if prepared.len() > 1 && prepared.iter().any(Prepared::has_user) {
        // Each pool's subdirectory is its user's alone (0700); workers of
        // another user must still pass through the master's directory.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(run_dir.path(), std::fs::Permissions::from_mode(0o711))
            .map_err(Error::RunDir)?;
    }

    // Every public socket is bound before any worker starts, so a port in
    // use fails the start with nothing left behind.
    let inherited = Inherited::from_env()?;
    // After the inherited sockets are marked close-on-exec: the guard
    // must not hold them.
    crate::workers::guard::start();
    let control_listener = bind(
        &inherited,
        global.control_host,
        global.control_port,
        "control plane",
    )
    .await?;
    let mut bound = Vec::with_capacity(prepared.len());
    for pool in prepared {
        bound.push(pool.bind(&inherited).await?);
    }
    for addr in inherited.unused() {
        tracing::warn!(
            "the service manager passed a socket for {addr}, which no option names; it is not used"
        );
    }
    let notifier = Arc::new(Notifier::from_env());
    let control_addr = control_listener.local_addr()?;

    // One phase for the whole stop (crate::shutdown): asked for by a
    // signal, POST /stop or a cluster that never booted; moved on by this
    // function alone.
    let shutdown = Arc::new(Shutdown::new(global.drain_delay));
    let grace = global.shutdown_timeout;
    let mut served = Vec::with_capacity(bound.len());
    let mut servers = Vec::new();
    let mut slot_tasks = Vec::new();
    for pool in bound {
        let (pool, tasks) = pool.start(notifier.clone(), shutdown.watch())?;
        servers.extend(tasks.servers);
        slot_tasks.extend(tasks.slots);
        served.push(pool);
    }
    let access_log = served
        .first()
        .and_then(|p| p.balancer.front.access_log.clone());
    // Installed even without a log: SIGUSR1 must never kill the master.
    tokio::spawn(crate::proxy::access_log::reopen_on_sigusr1(
        access_log.clone(),
    ));
    tokio::spawn(notify_ready(served.clone(), notifier.clone()));
    tokio::spawn(restart_on_signals(served.clone()));
    // In debug mode a developer fixes the code and the reload boots it; in
    // production a cluster that cannot boot at all should fail its start.
    // An ondemand pool boots no worker until a request comes. With several
    // pools, one that cannot boot is left retrying while the others serve.
    let watched: Vec<Arc<ServedPool>> = served
        .iter()
        .filter(|p| !p.options.app.debug && p.boots_at_start())
        .cloned()
        .collect();
    let never_booted = (watched.len() == served.len()).then(|| {
        tokio::spawn(stop_unless_booted(
            watched,
            global.bootstrap_timeout,
            shutdown.clone(),
        ))
    });

    let state = Arc::new(ControlState {
        pools: served.clone(),
        token: global.control_token()?,
        public_read: global.control_public_read,
        shutdown: shutdown.clone(),
        started: Instant::now(),
        master_pid: std::process::id(),
        control: control_addr,
    });
    let mut control_stop = shutdown.watch();
    let control_server = tokio::spawn(async move {
        let served = axum::serve(control_listener, control::router(state))
            .with_graceful_shutdown(async move { control_stop.stopped().await })
            .await;
        if let Err(err) = served {
            tracing::error!("control plane failed: {err}");
        }
    });

    for pool in &served {
        let opts = &pool.options;
        let ports = pool.pool.status();
        tracing::info!(
            "ppm {} master {} {}serving {} with {} workers (pm {}, {}, bridge {}): balancer http://{}, slots {}-{}, control http://{control_addr}",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            pool.label(),
            pool.info.app_dir.display(),
            opts.workers,
            opts.pm.as_str(),
            pool.info.php.display(),
            opts.app.bridge,
            pool.info.balancer,
            ports.first().map(|s| s.port).unwrap_or_default(),
            ports.last().map(|s| s.port).unwrap_or_default(),
        );
    }

    let forced = wait_for_stop(&shutdown).await?;
    tokio::pin!(forced);
    notifier.notify("STOPPING=1");
    let mut at_once = false;
    if let Phase::Draining { until: Some(until) } = shutdown.phase() {
        // Load balancers see /ready and the health path fail while the
        // ports still serve, and take this host out before it closes.
        tracing::info!(
            "stopping: reporting not ready for {:?} before closing the ports (--drain-delay)",
            global.drain_delay.unwrap_or_default()
        );
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = &mut forced => at_once = true,
        }
    }
    let deadline = tokio::time::Instant::now() + grace;
    shutdown.advance(Phase::Closing { deadline });
    tracing::info!("stopping: finishing in-flight requests (up to {:?})", grace);
    let drain = async {
        for server in servers {
            let _ = server.await;
        }
    };
    if !at_once {
        tokio::select! {
            _ = drain => {}
            _ = tokio::time::sleep_until(deadline + Duration::from_secs(1)) => {
                tracing::warn!("in-flight requests did not finish within --shutdown-timeout");
            }
            _ = &mut forced => at_once = true,
        }
    }
    shutdown.advance(Phase::Stopping);
    let aborts: Vec<_> = slot_tasks.iter().map(|t| t.abort_handle()).collect();
    if at_once {
        stop_at_once(&aborts);
    } else {
        // Every pool stops at once; each stop is bounded by its slots'
        // grace periods.
        for pool in &served {
            pool.pool.stop_all();
        }
    }
    let stopped = async {
        for task in slot_tasks {
            let _ = task.await;
        }
    };
    tokio::select! {
        _ = stopped => {}
        _ = &mut forced, if !at_once => {
            stop_at_once(&aborts);
        }
    }
    shutdown.advance(Phase::Stopped);
    let _ = control_server.await;
    if let Some(log) = access_log {
        let _ = tokio::task::spawn_blocking(move || log.flush(Duration::from_secs(5))).await;
    }
    drop(served);
    drop(run_dir);
    drop(pidfile);
    if let Some(task) = never_booted {
        if task.is_finished() && task.await.unwrap_or(false) {
            tracing::info!("ppm stopped: no worker ever became ready");
            return Err(Error::NeverBooted(global.bootstrap_timeout));
        }
    }
    tracing::info!("ppm stopped");
    Ok(())
}

/// Stops the master when no worker of any pool has become ready within
/// `--bootstrap-timeout` of the start (a bridge name typo, a bootstrap
/// that cannot work). Returns whether it did. With several pools, each
/// pool that never booted is named in the log, and the master stops only
/// when none did: the pools that work keep serving.
async fn stop_unless_booted(
    pools: Vec<Arc<ServedPool>>,
    bootstrap_timeout: Duration,
    shutdown: Arc<Shutdown>,
) -> bool {
    // The slowest pool's last boot attempt started within its timeout
    // ends by this time.
    let longest = pools
        .iter()
        .map(|p| p.options.bootstrap_timeout)
        .max()
        .unwrap_or(bootstrap_timeout);
    tokio::time::sleep(longest + Duration::from_secs(1)).await;
    let never: Vec<&Arc<ServedPool>> = pools.iter().filter(|p| !p.pool.ever_ready()).collect();
    if never.len() < pools.len() {
        for pool in never {
            tracing::error!(
                "{}no PHP worker became ready within {:?} (--bootstrap-timeout); its workers keep \
                 being retried while the other pools serve",
                pool.label(),
                pool.options.bootstrap_timeout
            );
        }
        return false;
    }
    tracing::error!(
        "no PHP worker became ready within {bootstrap_timeout:?} (--bootstrap-timeout); stopping. {}",
        match pools.iter().find_map(|p| p.pool.last_boot_error()) {
            Some(_) => "The boot error is logged above.",
            None => "No boot attempt has ended yet.",
        }
    );
    shutdown.request();
    true
}

/// A second SIGTERM/SIGINT: end the slot tasks now. Each task owns its
/// workers, and dropping a worker kills its process group.
fn stop_at_once(tasks: &[tokio::task::AbortHandle]) {
    tracing::warn!("second signal: stopping at once");
    for task in tasks {
        task.abort();
    }
}

/// Tells the service manager the cluster is ready once every slot of
/// every pool is (in a dynamic or ondemand pool: every slot that should
/// have a worker).
async fn notify_ready(pools: Vec<Arc<ServedPool>>, notifier: Arc<Notifier>) {
    // Until the first wakes of a dynamic pool have been decided, an empty
    // slot does not mean "settled"; start_pool decides them before this.
    while !pools.iter().all(|p| p.pool.settled()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let serving: usize = pools
        .iter()
        .map(|p| {
            p.pool
                .status()
                .iter()
                .filter(|s| s.state.is_serving())
                .count()
        })
        .sum();
    let total: usize = pools.iter().map(|p| p.pool.len()).sum();
    let text = if serving == total {
        format!("{serving} workers ready")
    } else {
        format!("{serving} of {total} workers ready")
    };
    tracing::info!("{text}");
    notifier.notify(&format!("READY=1\nSTATUS={text}"));
}

/// SIGHUP and SIGUSR2 start a rolling restart of every pool.
async fn restart_on_signals(pools: Vec<Arc<ServedPool>>) {
    let (Ok(mut hup), Ok(mut usr2)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined2()),
    ) else {
        tracing::error!("cannot install the SIGHUP/SIGUSR2 handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => tracing::info!("SIGHUP received"),
            _ = usr2.recv() => tracing::info!("SIGUSR2 received"),
        }
        for pool in &pools {
            pool.restarts.start(None);
        }
    }
}

/// Waits for SIGTERM, SIGINT or a stop request, and leaves the master
/// `Draining`. Returns a future that completes on a second SIGTERM/SIGINT,
/// which cuts the graceful stop short.
async fn wait_for_stop(
    shutdown: &Shutdown,
) -> Result<impl std::future::Future<Output = ()>, Error> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut asked = shutdown.watch();
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
        _ = asked.going_away() => {}
    }
    shutdown.request();
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
