//! What the control plane knows (the pools and the master's facts), and
//! which pools a request is about (`?pool=NAME`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::control::served::ServedPool;
use crate::shutdown::Shutdown;

/// What the control plane knows: the pools and the master's facts.
pub struct ControlState {
    /// Every pool, in the order of the configuration.
    pub pools: Vec<Arc<ServedPool>>,
    /// The token mutating (and, unless `public_read`, reading) requests need.
    pub token: Option<String>,
    pub public_read: bool,
    /// The master's shutdown: `POST /stop` asks for it, and nothing is
    /// restarted once it was asked for.
    pub shutdown: Arc<Shutdown>,
    pub started: Instant,
    pub master_pid: u32,
    /// The control plane's own address.
    pub control: SocketAddr,
}

/// The value of `pool=` in a query string.
pub(crate) fn pool_param(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("pool="))
        .filter(|name| !name.is_empty())
}

impl ControlState {
    /// The pools a request is about: the one `?pool=NAME` names, else all.
    /// A name that is no pool's is a 404 naming the pools.
    #[allow(clippy::result_large_err)]
    pub fn select(&self, query: Option<&str>) -> Result<Vec<Arc<ServedPool>>, Response> {
        match pool_param(query) {
            None => Ok(self.pools.clone()),
            Some(name) => self.named(name).map(|p| vec![p]),
        }
    }

    /// The one pool a request is about: the one `?pool=NAME` names, else
    /// the only pool; with several and no name, `first` decides: the
    /// first pool (a page that shows one pool), or a 400.
    #[allow(clippy::result_large_err)]
    pub fn one(&self, query: Option<&str>, first: bool) -> Result<Arc<ServedPool>, Response> {
        match (pool_param(query), self.pools.as_slice()) {
            (Some(name), _) => self.named(name),
            (None, [only]) => Ok(only.clone()),
            (None, [head, ..]) if first => Ok(head.clone()),
            (None, _) => Err((
                StatusCode::BAD_REQUEST,
                format!(
                    "this master runs several pools ({}); name one with ?pool=NAME\n",
                    self.names()
                ),
            )
                .into_response()),
        }
    }

    #[allow(clippy::result_large_err)]
    fn named(&self, name: &str) -> Result<Arc<ServedPool>, Response> {
        self.pools
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .ok_or_else(|| {
                (
                    StatusCode::NOT_FOUND,
                    format!("no pool {name:?}; the pools are {}\n", self.names()),
                )
                    .into_response()
            })
    }

    fn names(&self) -> String {
        self.pools
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
