//! The master process: binds every public socket, starts the pool, serves
//! the balancer, the slot ports and the control plane, and shuts all of it
//! down in order on SIGTERM, SIGINT or `POST /stop`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::balancer::{Balancer, FrontDoor, Target};
use crate::config::{AppOptions, Runtime, StartOptions};
use crate::control::{self, ClusterInfo, ControlState};
use crate::forwarding::TrustedProxies;
use crate::php::PhpBinary;
use crate::pidfile::PidFile;
use crate::pool::{Pool, PoolConfig};
use crate::rolling::Restarts;
use crate::rundir::RunDir;
use crate::systemd::{Inherited, Notifier};
use crate::worker::{reported_boot_error, Listen, Worker, WorkerEvent, WorkerSpec};
use crate::{runtime, Error};

/// Takes the listening socket for `ip:port` from the service manager, or
/// binds it.
async fn bind(
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

/// The private directory for worker sockets and the runtime files.
pub(crate) fn make_run_dir() -> Result<RunDir, Error> {
    RunDir::create()
}

/// The application directory, absolute.
pub(crate) fn app_dir(app: &AppOptions) -> Result<PathBuf, Error> {
    app.dir
        .canonicalize()
        .ok()
        .filter(|d| d.is_dir())
        .ok_or_else(|| Error::AppDir(app.dir.clone()))
}

pub(crate) fn worker_spec(
    app: &AppOptions,
    runtime: Runtime,
    run_dir: &Path,
) -> Result<WorkerSpec, Error> {
    let run_as = crate::privileges::resolve(app.user.as_deref(), app.group.as_deref())?;
    let app_dir = app_dir(app)?;
    let (php, entry) = match runtime {
        Runtime::Cgi => (
            PhpBinary::locate(app.cgi_path.as_deref())?,
            runtime::install(run_dir).map_err(Error::RunDir)?,
        ),
        Runtime::Native => (
            PhpBinary {
                path: std::env::current_exe()?,
                is_cgi: false,
            },
            crate::native::host::install_entry(run_dir)?,
        ),
    };
    if let Some(run_as) = run_as {
        let lock = run_dir.join(crate::rundir::LOCK);
        crate::privileges::hand_over(run_dir, run_as, &lock).map_err(Error::RunDir)?;
    }
    Ok(WorkerSpec {
        php,
        entry,
        run_as,
        app: app.clone(),
        app_dir,
        runtime,
    })
}

/// Runs the master in the foreground until it is told to stop.
pub async fn run(mut opts: StartOptions) -> Result<(), Error> {
    opts.validate()?;
    if std::env::args().any(|a| a == "--control-token" || a.starts_with("--control-token=")) {
        tracing::warn!(
            "--control-token on the command line is visible to every local user in ps; \
             use --control-token-file or PPM_CONTROL_TOKEN"
        );
    }
    let fd_limit = crate::fdlimit::raise();
    opts.max_connections =
        crate::fdlimit::connections_allowed(opts.max_connections, fd_limit, opts.workers);
    let pidfile = opts.pidfile.as_deref().map(PidFile::create).transpose()?;
    let run_dir = make_run_dir()?;
    let spec = Arc::new(worker_spec(&opts.app, opts.runtime, run_dir.path())?);
    let front_door = FrontDoor::new(&opts, &spec.app_dir)?;

    // Every public socket is bound before any worker starts, so a port in
    // use fails the start with nothing left behind.
    let inherited = Inherited::from_env()?;
    // After the inherited sockets are marked close-on-exec: the guard
    // must not hold them.
    crate::guard::start();
    let control_listener = bind(
        &inherited,
        opts.control_host,
        opts.control_port,
        "control plane",
    )
    .await?;
    let balancer_listener = bind(&inherited, opts.host, opts.port, "balancer").await?;
    let mut slot_listeners = Vec::with_capacity(opts.workers);
    for slot in 0..opts.workers {
        slot_listeners.push(
            bind(
                &inherited,
                opts.host,
                opts.slot_port(slot),
                &format!("slot {slot}"),
            )
            .await?,
        );
    }
    let fastcgi_listeners = crate::fastcgi::bind(&opts.fastcgi_listen, &inherited).await?;
    for addr in inherited.unused() {
        tracing::warn!(
            "the service manager passed a socket for {addr}, which no option names; it is not used"
        );
    }
    let notifier = Arc::new(Notifier::from_env());
    let balancer_addr = balancer_listener.local_addr()?;
    let control_addr = control_listener.local_addr()?;
    let slot_ports: Vec<u16> = slot_listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?;

    let limits = opts.limits();
    let bootstrap_timeout = limits.bootstrap_timeout;
    let (included_tx, included_rx) = tokio::sync::mpsc::unbounded_channel();
    let (pool, slot_tasks) = Pool::start(PoolConfig {
        spec: spec.clone(),
        run_dir: run_dir.path().to_path_buf(),
        slot_ports: slot_ports.clone(),
        max_queue: opts.max_queue,
        queue_timeout: opts.queue_timeout(),
        max_surge: opts.max_surge,
        limits,
        max_execution_time: opts.max_execution_time(),
        included_files: opts.app.debug.then_some(included_tx),
        pm: opts.pm(),
    });

    let restarts = Arc::new(Restarts::new(
        pool.clone(),
        opts.max_surge,
        notifier.clone(),
    ));
    tokio::spawn(notify_ready(pool.clone(), notifier.clone()));
    if opts.app.debug {
        tokio::spawn(crate::reload::watch(
            spec.app_dir.clone(),
            restarts.clone(),
            included_rx,
        ));
    }
    // `shutdown`: a stop was asked for (signal or POST /stop); `closing`:
    // the ports stop accepting, after --drain-delay.
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (closing_tx, closing_rx) = watch::channel(false);
    tokio::spawn(restart_on_signals(restarts.clone()));
    // In debug mode a developer fixes the code and the reload boots it; in
    // production a cluster that cannot boot at all should fail its start.
    // An ondemand pool boots no worker until a request comes.
    let boots_at_start = opts.pm != crate::config::PmMode::Ondemand;
    let never_booted = (!opts.app.debug && boots_at_start).then(|| {
        tokio::spawn(stop_unless_booted(
            pool.clone(),
            bootstrap_timeout,
            shutdown_tx.clone(),
        ))
    });
    let mut balancer = Balancer::new(
        pool.clone(),
        opts.max_body_size,
        opts.max_execution_time(),
        (!opts.health_path.is_empty()).then(|| opts.health_path.clone()),
        TrustedProxies::parse(&opts.trusted_proxies).map_err(|message| Error::InvalidOption {
            option: "trusted-proxies",
            message,
        })?,
    );
    balancer.slow_request_time = opts.slow_request_time();
    balancer.set_front_door(front_door);
    tokio::spawn(crate::access_log::reopen_on_sigusr1(
        balancer.access_log.clone(),
    ));
    let balancer = Arc::new(balancer);
    let grace = opts.shutdown_timeout();
    let mut servers = vec![tokio::spawn(balancer.clone().serve(
        balancer_listener,
        Target::Any,
        closing_rx.clone(),
        grace,
    ))];
    for (slot, listener) in slot_listeners.into_iter().enumerate() {
        servers.push(tokio::spawn(balancer.clone().serve(
            listener,
            Target::Slot(slot),
            closing_rx.clone(),
            grace,
        )));
    }
    let capacity = crate::fastcgi::Capacity {
        max_conns: opts.max_connections,
    };
    for listener in fastcgi_listeners {
        tracing::info!("FastCGI listening on {}", listener.describe());
        servers.push(tokio::spawn(crate::fastcgi::serve(
            listener,
            balancer.clone(),
            capacity,
            closing_rx.clone(),
            grace,
        )));
    }

    let state = Arc::new(ControlState {
        pool: pool.clone(),
        metrics: balancer.metrics.clone(),
        restarts,
        token: opts.control_token()?,
        public_read: opts.control_public_read,
        shutdown: shutdown_tx.clone(),
        started: Instant::now(),
        info: ClusterInfo {
            master_pid: std::process::id(),
            app_dir: spec.app_dir.clone(),
            bridge: opts.app.bridge.clone(),
            bootstrap: opts.app.bootstrap.clone(),
            php: spec.php.path.clone(),
            balancer: balancer_addr,
            control: control_addr,
        },
    });
    let (control_stop_tx, mut control_stop_rx) = watch::channel(false);
    let control_server = tokio::spawn(async move {
        let served = axum::serve(control_listener, control::router(state))
            .with_graceful_shutdown(async move {
                crate::until_true(&mut control_stop_rx).await;
            })
            .await;
        if let Err(err) = served {
            tracing::error!("control plane failed: {err}");
        }
    });

    tracing::info!(
        "ppm {} master {} serving {} with {} workers (pm {}, {}, bridge {}): balancer http://{balancer_addr}, slots {}-{}, control http://{control_addr}",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        spec.app_dir.display(),
        opts.workers,
        opts.pm.as_str(),
        spec.php.path.display(),
        opts.app.bridge,
        slot_ports.first().copied().unwrap_or_default(),
        slot_ports.last().copied().unwrap_or_default(),
    );

    let forced = wait_for_stop(shutdown_rx.clone()).await?;
    tokio::pin!(forced);
    notifier.notify("STOPPING=1");
    shutdown_tx.send_replace(true);
    let mut at_once = false;
    if let Some(delay) = opts.drain_delay() {
        // Load balancers see /ready and the health path fail while the
        // ports still serve, and take this host out before it closes.
        pool.start_draining();
        tracing::info!(
            "stopping: reporting not ready for {delay:?} before closing the ports (--drain-delay)"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut forced => at_once = true,
        }
    }
    closing_tx.send_replace(true);
    pool.close();
    tracing::info!("stopping: finishing in-flight requests (up to {:?})", grace);
    let drain = async {
        for server in servers {
            let _ = server.await;
        }
    };
    if !at_once {
        tokio::select! {
            _ = drain => {}
            _ = tokio::time::sleep(grace + Duration::from_secs(1)) => {
                tracing::warn!("in-flight requests did not finish within --shutdown-timeout");
            }
            _ = &mut forced => at_once = true,
        }
    }
    let aborts: Vec<_> = slot_tasks.iter().map(|t| t.abort_handle()).collect();
    if at_once {
        stop_at_once(&aborts);
    } else {
        pool.stop_all().await;
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
    control_stop_tx.send_replace(true);
    let _ = control_server.await;
    if let Some(log) = balancer.access_log.clone() {
        let _ = tokio::task::spawn_blocking(move || log.flush(Duration::from_secs(5))).await;
    }
    drop(run_dir);
    drop(pidfile);
    if let Some(task) = never_booted {
        if task.is_finished() && task.await.unwrap_or(false) {
            tracing::info!("ppm stopped: no worker ever became ready");
            return Err(Error::NeverBooted(bootstrap_timeout));
        }
    }
    tracing::info!("ppm stopped");
    Ok(())
}

/// Stops the master when no worker has become ready within
/// `--bootstrap-timeout` of the start (a bridge name typo, a bootstrap that
/// cannot work). Returns whether it did.
async fn stop_unless_booted(
    pool: Arc<Pool>,
    bootstrap_timeout: Duration,
    shutdown: watch::Sender<bool>,
) -> bool {
    // The last boot attempt started within the timeout ends by this time.
    tokio::time::sleep(bootstrap_timeout + Duration::from_secs(1)).await;
    if pool.ever_ready() {
        return false;
    }
    tracing::error!(
        "no PHP worker became ready within {bootstrap_timeout:?} (--bootstrap-timeout); stopping. {}",
        match pool.last_boot_error() {
            Some(_) => "The boot error is logged above.",
            None => "No boot attempt has ended yet.",
        }
    );
    shutdown.send_replace(true);
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

/// Tells the service manager the cluster is ready once every slot is (in
/// a dynamic or ondemand pool: every slot that should have a worker).
async fn notify_ready(pool: Arc<Pool>, notifier: Arc<Notifier>) {
    // Until the first wakes of a dynamic pool have been decided, an empty
    // slot does not mean "settled"; Pool::start decides them before this.
    while !pool.settled() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let serving = pool
        .status()
        .iter()
        .filter(|s| s.state.is_serving())
        .count();
    let text = if serving == pool.len() {
        format!("{serving} workers ready")
    } else {
        format!("{serving} of {} workers ready", pool.len())
    };
    tracing::info!("{text}");
    notifier.notify(&format!("READY=1\nSTATUS={text}"));
}

/// SIGHUP and SIGUSR2 start a rolling restart.
async fn restart_on_signals(restarts: Arc<Restarts>) {
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
        restarts.start(None);
    }
}

/// Waits for SIGTERM, SIGINT or a stop request. Returns a future that
/// completes on a second SIGTERM/SIGINT, which cuts the graceful stop short.
async fn wait_for_stop(
    mut shutdown: watch::Receiver<bool>,
) -> Result<impl std::future::Future<Output = ()>, Error> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
        _ = crate::until_true(&mut shutdown) => {}
    }
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// `ppm worker`: one PHP worker answering HTTP on `listen` directly, with
/// no master in between (for debugging an app, and as a benchmark baseline).
pub async fn run_standalone(app: AppOptions, listen: SocketAddr) -> Result<(), Error> {
    app.validate()?;
    let run_dir = make_run_dir()?;
    let spec = worker_spec(&app, Runtime::Cgi, run_dir.path())?;
    let (mut worker, mut events) = Worker::spawn(&spec, &Listen::Tcp(listen), 0, "worker".into())
        .await
        .map_err(Error::Spawn)?;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(WorkerEvent::Ready { pid, .. }) => {
                    tracing::info!("worker {pid} serving {} on http://{listen}", spec.app_dir.display());
                    break;
                }
                Some(WorkerEvent::BootstrapError { message }) => {
                    worker.kill_group();
                    return Err(Error::Bootstrap(message));
                }
                Some(_) => {}
                None => {
                    let exit = worker.wait().await;
                    return Err(Error::Bootstrap(format!("the worker exited during bootstrap ({exit})\n{}", worker.recent_output())));
                }
            },
            exit = worker.wait() => {
                if let Some(message) = reported_boot_error(&mut events).await {
                    return Err(Error::Bootstrap(message));
                }
                return Err(Error::Bootstrap(format!(
                    "the worker exited during bootstrap ({exit})\n{}",
                    worker.recent_output()
                )));
            }

        }
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut events_open = true;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            exit = worker.wait() => {
                tracing::warn!("worker exited ({exit})");
                return Ok(());
            }
            // Nothing uses them here; read them so they do not pile up.
            event = events.recv(), if events_open => events_open = event.is_some(),
        }
    }
    let exit = worker.stop(Duration::from_secs(5)).await;
    tracing::info!("worker stopped ({exit})");
    Ok(())
}

/// Where the runtime lives for a run directory (used by tests).
pub fn runtime_entry(run_dir: &Path) -> PathBuf {
    run_dir.join("runtime").join("worker.php")
}
