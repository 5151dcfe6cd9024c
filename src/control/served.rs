//! One running pool as the control plane sees it: its name, options,
//! dispatcher, balancer (for its metrics) and rolling restarts. The master
//! builds it (`master::served`) and hands the list to the control plane.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::StartOptions;
use crate::proxy::Balancer;
use crate::workers::pool::Pool;
use crate::workers::rolling::Restarts;

/// php-fpm's name of its default pool: the name of the single pool of a
/// command line, as `/fpm-status` shows it.
pub const DEFAULT_POOL: &str = "www";

/// Fixed facts about a pool, for `/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolInfo {
    pub app_dir: PathBuf,
    pub bridge: String,
    pub bootstrap: String,
    /// How workers run PHP: always `native` (PHP hosted in ppm's worker
    /// processes); kept for the readers of `/status`.
    #[serde(default)]
    pub runtime: String,
    pub php: PathBuf,
    pub balancer: SocketAddr,
}

/// One running pool.
pub struct ServedPool {
    /// The pool's name (`DEFAULT_POOL` for an unnamed one).
    pub name: String,
    /// Whether it came from `pools` (then it shows its name everywhere).
    pub named: bool,
    pub options: StartOptions,
    pub pool: Arc<Pool>,
    pub balancer: Arc<Balancer>,
    pub restarts: Arc<Restarts>,
    pub info: PoolInfo,
}

impl ServedPool {
    /// Whether this pool starts workers before any request comes.
    pub fn boots_at_start(&self) -> bool {
        self.options.pm != crate::config::PmMode::Ondemand
    }

    /// How the log names this pool: empty for an unnamed one.
    pub fn label(&self) -> String {
        if self.named {
            format!("pool {}: ", self.name)
        } else {
            String::new()
        }
    }
}
