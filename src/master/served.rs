//! One pool as the master serves it: its name and options, its
//! dispatcher (`Pool`) with the slot tasks, its balancer port and slot
//! ports, and its rolling restarts.
//!
//! # Theory of operation
//!
//! The master owns a list of `ServedPool`s (defined in
//! `control/served.rs`, the control plane reads them): one, unnamed, for a
//! command line; one per entry of `ppm.json`'s `pools`. Nothing is shared
//! between two pools but what belongs to the master: the run directory
//! (each named pool has its own subdirectory, owned by its `--user`),
//! the client connection limit and the access log. So a restart, a
//! crash or a pool that cannot boot stays in its pool; the control plane
//! finds a pool by its name (`?pool=NAME`).
//!
//! A pool starts in two steps, so that every public socket of every pool
//! is bound before any worker of any pool starts: `prepare` (worker spec,
//! front door) and `bind` (balancer, slot ports, `--fastcgi-listen`), then
//! `start`.

use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{PoolOptions, StartOptions};
use crate::control::served::{PoolInfo, ServedPool, DEFAULT_POOL};
use crate::proxy::{Balancer, FrontDoor, Target};
use crate::shutdown::ShutdownWatch;
use crate::systemd::{Inherited, Notifier};
use crate::workers::process::WorkerSpec;
use crate::workers::rolling::Restarts;
use crate::workers::slot::{start_pool, PoolConfig};
use crate::Error;

/// A pool whose workers can be described but have not started.
pub struct Prepared {
    name: Option<String>,
    options: StartOptions,
    spec: Arc<WorkerSpec>,
    front_door: FrontDoor,
}

/// A prepared pool with its sockets.
pub struct Bound {
    prepared: Prepared,
    balancer: TcpListener,
    slots: Vec<TcpListener>,
    /// `--fastcgi-listen`: the pool's FastCGI listeners.
    fastcgi: Vec<crate::front::fastcgi::Listener>,
}

/// The tasks of a running pool, which the master waits for on stop.
pub struct Tasks {
    pub servers: Vec<JoinHandle<()>>,
    pub slots: Vec<JoinHandle<()>>,
}

impl Prepared {
    /// Makes the worker spec and front door of one pool. `run_dir` is the
    /// master's; a named pool gets a subdirectory of its own. `first` is
    /// the first pool's front door, whose connection limit and access log
    /// every pool shares.
    pub fn new(
        pool: PoolOptions,
        run_dir: &Path,
        first: Option<&FrontDoor>,
    ) -> Result<Prepared, Error> {
        let in_pool = |error: Error| match &pool.name {
            Some(name) => Error::Pool {
                pool: name.clone(),
                source: Box::new(error),
            },
            None => error,
        };
        let dir = match &pool.name {
            Some(name) => {
                let dir = run_dir.join("pools").join(name);
                std::fs::create_dir_all(&dir).map_err(|e| in_pool(Error::RunDir(e)))?;
                dir
            }
            None => run_dir.to_path_buf(),
        };
        let options = pool.options;
        let spec =
            crate::workers::native::spawn::worker_spec(&options.app, &dir).map_err(&in_pool)?;
        let front_door = match first {
            None => FrontDoor::new(&options, &spec.app_dir).map_err(&in_pool)?,
            Some(first) => {
                // The access log is opened once, by the first pool.
                let mut own = options.clone();
                own.logging = false;
                let mut door = FrontDoor::new(&own, &spec.app_dir).map_err(&in_pool)?;
                door.connections = first.connections.clone();
                door.access_log = first.access_log.clone();
                door
            }
        };
        Ok(Prepared {
            name: pool.name,
            options,
            spec: Arc::new(spec),
            front_door,
        })
    }

    pub fn front_door(&self) -> &FrontDoor {
        &self.front_door
    }

    /// Whether the pool's workers run as another user.
    pub fn has_user(&self) -> bool {
        self.spec.run_as.is_some()
    }

    /// Binds (or takes from the service manager) the balancer and slot
    /// ports.
    pub async fn bind(self, inherited: &Inherited) -> Result<Bound, Error> {
        let opts = &self.options;
        let what = |port: &str| match &self.name {
            Some(name) => format!("pool {name} {port}"),
            None => port.to_string(),
        };
        let balancer =
            crate::master::bind(inherited, opts.host, opts.port, &what("balancer")).await?;
        let mut slots = Vec::with_capacity(opts.workers);
        for slot in 0..opts.workers {
            let port = opts.slot_port(slot);
            slots.push(
                crate::master::bind(inherited, opts.host, port, &what(&format!("slot {slot}")))
                    .await?,
            );
        }
        let fastcgi = crate::front::fastcgi::bind(&opts.fastcgi_listen, inherited).await?;
        Ok(Bound {
            prepared: self,
            balancer,
            slots,
            fastcgi,
        })
    }
}

impl Bound {
    /// Starts the pool's slots and serves its ports until the master's
    /// shutdown reaches `Closing`.
    pub fn start(
        self,
        notifier: Arc<Notifier>,
        shutdown: ShutdownWatch,
    ) -> Result<(Arc<ServedPool>, Tasks), Error> {
        let Bound {
            prepared,
            balancer: balancer_listener,
            slots: slot_listeners,
            fastcgi,
        } = self;
        let Prepared {
            name,
            options: opts,
            spec,
            front_door,
        } = prepared;
        let balancer_addr = balancer_listener.local_addr()?;
        let slot_ports: Vec<u16> = slot_listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<_, _>>()?;
        let (included_tx, included_rx) = mpsc::unbounded_channel();
        let (pool, slot_tasks) = start_pool(PoolConfig {
            spec: spec.clone(),
            slot_ports,
            max_queue: opts.max_queue,
            queue_timeout: opts.queue_timeout,
            max_surge: opts.max_surge,
            limits: opts.limits(),
            included_files: opts.app.debug.then_some(included_tx),
            pm: opts.pm(),
            shutdown: shutdown.clone(),
        });
        let restarts = Arc::new(Restarts::new(
            pool.clone(),
            opts.max_surge,
            notifier,
            name.clone(),
        ));
        if opts.app.debug {
            tokio::spawn(crate::master::reload::watch(
                spec.app_dir.clone(),
                restarts.clone(),
                included_rx,
            ));
        }
        let balancer = Balancer::new(pool.clone(), front_door, &opts);
        let balancer = Arc::new(balancer);
        let mut servers = vec![tokio::spawn(balancer.clone().serve(
            balancer_listener,
            Target::Any,
            shutdown.clone(),
        ))];
        for (slot, listener) in slot_listeners.into_iter().enumerate() {
            servers.push(tokio::spawn(balancer.clone().serve(
                listener,
                Target::Slot(slot),
                shutdown.clone(),
            )));
        }
        let fastcgi_settings = Arc::new(crate::front::fastcgi::Settings {
            limits: balancer.front.limits.clone(),
            spool: balancer.front.spool.clone(),
            connections: balancer.front.connections.clone(),
            metrics: balancer.metrics.clone(),
            capacity: crate::front::fastcgi::Capacity {
                max_conns: opts.max_connections,
            },
        });
        for listener in fastcgi {
            tracing::info!(
                "{}FastCGI listening on {}",
                name.as_deref()
                    .map(|n| format!("pool {n}: "))
                    .unwrap_or_default(),
                listener.describe()
            );
            let balancer = balancer.clone();
            let handler = move |arrival, conn| {
                let balancer = balancer.clone();
                async move { balancer.arrived(arrival, conn).await }
            };
            servers.push(tokio::spawn(crate::front::fastcgi::serve(
                listener,
                fastcgi_settings.clone(),
                handler,
                shutdown.clone(),
            )));
        }
        let info = PoolInfo {
            app_dir: spec.app_dir.clone(),
            bridge: opts.app.bridge.clone(),
            bootstrap: opts.app.bootstrap.clone(),
            runtime: "native".into(),
            php: spec.program.clone(),
            balancer: balancer_addr,
        };
        let served = Arc::new(ServedPool {
            named: name.is_some(),
            name: name.unwrap_or_else(|| DEFAULT_POOL.to_string()),
            options: opts,
            pool,
            balancer,
            restarts,
            info,
        });
        Ok((
            served,
            Tasks {
                servers,
                slots: slot_tasks,
            },
        ))
    }
}
