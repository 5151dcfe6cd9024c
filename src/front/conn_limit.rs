//! Client connection limits: `--max-connections` over all ports, and
//! `--max-connections-per-ip`, so that one address cannot take them all.
//!
//! # Theory of operation
//!
//! Each accept loop takes a permit of the shared total (`permit`) before
//! it accepts, so past `--max-connections` new connections wait in the
//! kernel's backlog instead of costing memory, but only for a moment
//! (`FULL_WAIT`): when every connection is held (slow clients from many
//! addresses, or a flood), waiting clients would otherwise see nothing
//! until a request timeout frees one, and a load balancer would keep
//! sending them. So once a wait for a permit times out, the loop accepts
//! without one and answers 503 (`refuse_full`), at once for every
//! connection that follows, until a permit is free again. An accepted connection is
//! then counted against its peer's address (`admit`). An address already
//! holding its share gets a 503 at once and its connection closed, and
//! the total permit goes back at once: slow clients from one address
//! (a slowloris, a stuck client pool) can hold at most that share, and
//! the rest of `--max-connections` stays free for everyone else. The
//! default share is half of `--max-connections`. Trusted proxies
//! (`--trusted-proxies`) are exempt: every client behind them shares their
//! address, and they limit their own clients.
//!
//! Refusing costs a task and a socket for a moment (the answer, then a
//! short lingering close), so refusals in progress are bounded too
//! (`REFUSING`); past that, a refused connection is closed without an
//! answer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

use crate::config::TrustedProxies;
use crate::front::linger::{self, Linger};
use crate::shutdown::ShutdownWatch;

/// Connections being refused (answered 503 and lingering) at once.
const REFUSING: usize = 256;

/// How a refused connection is drained: it has sent at most a request
/// head, so a moment is enough for the answer to leave.
const REFUSED_LINGER: Linger = Linger {
    total: Duration::from_secs(2),
    silence: Duration::from_millis(500),
    max_bytes: 1024 * 1024,
};

/// The body of the answer to a connection past its address's share.
const TOO_MANY: &str = "too many connections from your address\n";

/// The body of the answer to a connection past `--max-connections`.
const FULL: &str = "the server holds as many connections as it may; try again\n";

/// How long the accept loop waits for a free connection before it
/// answers new ones 503 instead.
pub const FULL_WAIT: Duration = Duration::from_secs(1);

/// The connection limits shared by every client port.
pub struct ConnLimit {
    total: Arc<Semaphore>,
    per_ip: Option<usize>,
    exempt: TrustedProxies,
    open: Mutex<HashMap<IpAddr, usize>>,
    refusing: Arc<Semaphore>,
    /// When the last refusal was logged (seconds since the epoch), so a
    /// flood makes one line a second, not one per connection.
    last_warned: AtomicU64,
}

/// An admitted connection: its share of both limits, given back on drop.
pub struct Admitted {
    _total: OwnedSemaphorePermit,
    ip: Option<(Arc<ConnLimit>, IpAddr)>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some((limit, ip)) = self.ip.take() {
            let mut open = limit.open.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = open.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&ip);
                }
            }
        }
    }
}

/// A connection past its address's share or past the total, to be
/// answered 503 (`refuse`).
pub struct Refused {
    refusing: Option<OwnedSemaphorePermit>,
    body: &'static str,
}

impl ConnLimit {
    /// `total` connections over all ports, `per_ip` of them (None: no
    /// limit) per address outside `exempt`.
    pub fn new(total: usize, per_ip: Option<usize>, exempt: TrustedProxies) -> Self {
        Self {
            total: Arc::new(Semaphore::new(total)),
            per_ip,
            exempt,
            open: Mutex::new(HashMap::new()),
            refusing: Arc::new(Semaphore::new(REFUSING)),
            last_warned: AtomicU64::new(0),
        }
    }

    /// Waits for a free connection of the total, before accepting.
    pub async fn permit(&self) -> Result<OwnedSemaphorePermit, AcquireError> {
        self.total.clone().acquire_owned().await
    }

    /// A free connection of the total if there is one now.
    pub fn try_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.total.clone().try_acquire_owned().ok()
    }

    /// A connection accepted past `--max-connections`, to be answered 503.
    pub fn refuse_full(&self) -> Refused {
        self.warn_full();
        Refused {
            refusing: self.refusing.clone().try_acquire_owned().ok(),
            body: FULL,
        }
    }

    /// Counts a connection from `ip` that holds `permit`, or refuses it
    /// when `ip` already holds its share (the permit is given back).
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        permit: OwnedSemaphorePermit,
    ) -> Result<Admitted, Refused> {
        let limit = match self.per_ip {
            Some(limit) if !self.exempt.contains(ip) => limit,
            _ => {
                return Ok(Admitted {
                    _total: permit,
                    ip: None,
                })
            }
        };
        let ip = canonical(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= limit {
            drop(open);
            drop(permit);
            self.warn(ip, limit);
            return Err(Refused {
                refusing: self.refusing.clone().try_acquire_owned().ok(),
                body: TOO_MANY,
            });
        }
        *count += 1;
        Ok(Admitted {
            _total: permit,
            ip: Some((self.clone(), ip)),
        })
    }

    /// Connections `ip` holds open now.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&canonical(ip)).copied().unwrap_or(0)
    }

    fn warn(&self, ip: IpAddr, limit: usize) {
        if self.first_this_second() {
            tracing::warn!(
                "{ip} holds {limit} connections (--max-connections-per-ip): new ones get 503; \
                 list a proxy in front of ppm in --trusted-proxies to exempt it"
            );
        }
    }

    fn warn_full(&self) {
        if self.first_this_second() {
            tracing::warn!(
                "every connection allowed (--max-connections) is held: new ones get 503 \
                 until one closes"
            );
        }
    }

    /// True for the first call in each second, so that a flood logs one
    /// line a second, not one per connection.
    fn first_this_second(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_warned.swap(now, Ordering::Relaxed) != now
    }
}

impl Refused {
    /// Answers 503 and closes the lingering way, or closes at once when
    /// too many refusals are already in progress.
    pub async fn refuse<IO: AsyncRead + AsyncWrite + Unpin>(
        self,
        mut io: IO,
        shutdown: &mut ShutdownWatch,
    ) {
        if self.refusing.is_none() {
            return;
        }
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
             retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{}",
            self.body.len(),
            self.body
        );
        let written =
            tokio::time::timeout(Duration::from_secs(1), io.write_all(answer.as_bytes())).await;
        if matches!(written, Ok(Ok(()))) {
            linger::close(&mut io, REFUSED_LINGER, shutdown).await;
        }
    }
}

/// One key per host: an IPv4 address seen as IPv6 (`::ffff:a.b.c.d`) is
/// the same client as its IPv4 form.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn an_address_gets_its_share_and_the_rest_stays_free_for_others() {
        let limit = Arc::new(ConnLimit::new(4, Some(2), TrustedProxies::default()));
        let a1 = limit.admit(ip("10.0.0.1"), limit.permit().await.unwrap());
        let a2 = limit.admit(ip("::ffff:10.0.0.1"), limit.permit().await.unwrap());
        assert!(a1.is_ok() && a2.is_ok());
        let refused = limit.admit(ip("10.0.0.1"), limit.permit().await.unwrap());
        assert!(refused.is_err(), "past the share");
        assert_eq!(
            limit.total.available_permits(),
            2,
            "the refused permit is back"
        );
        let other = limit.admit(ip("10.0.0.2"), limit.permit().await.unwrap());
        assert!(other.is_ok());
        drop(a1);
        assert_eq!(limit.open_from(ip("10.0.0.1")), 1);
        let again = limit.admit(ip("10.0.0.1"), limit.permit().await.unwrap());
        assert!(again.is_ok(), "a closed connection frees its share");
        drop((a2, again, other));
        assert_eq!(limit.open_from(ip("10.0.0.1")), 0);
        assert!(
            limit.open.lock().unwrap().is_empty(),
            "no entry is left behind"
        );
        assert_eq!(limit.total.available_permits(), 4);
    }

    #[tokio::test]
    async fn trusted_proxies_and_no_limit_are_exempt() {
        let proxies = TrustedProxies::parse(&["10.0.0.9".into()]).unwrap();
        let limit = Arc::new(ConnLimit::new(8, Some(1), proxies));
        let mut held = Vec::new();
        for _ in 0..3 {
            let permit = limit.permit().await.unwrap();
            held.push(limit.admit(ip("10.0.0.9"), permit).ok().unwrap());
        }
        let unlimited = Arc::new(ConnLimit::new(8, None, TrustedProxies::default()));
        for _ in 0..3 {
            let permit = unlimited.permit().await.unwrap();
            held.push(unlimited.admit(ip("10.0.0.1"), permit).ok().unwrap());
        }
    }

    #[tokio::test]
    async fn a_refused_connection_reads_503() {
        use tokio::io::AsyncReadExt;
        let limit = Arc::new(ConnLimit::new(2, Some(1), TrustedProxies::default()));
        let _held = limit.admit(ip("10.0.0.1"), limit.permit().await.unwrap());
        let Err(refused) = limit.admit(ip("10.0.0.1"), limit.permit().await.unwrap()) else {
            panic!("admitted past the share");
        };
        let (server, mut client) = tokio::io::duplex(4096);
        let (_stop, mut shutdown) = crate::shutdown::Shutdown::running();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let refusing = tokio::spawn(async move { refused.refuse(server, &mut shutdown).await });
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.ends_with(TOO_MANY), "{answer}");
        drop(client);
        refusing.await.unwrap();
    }
}
