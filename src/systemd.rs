//! systemd integration: readiness notifications through `NOTIFY_SOCKET`
//! (for `Type=notify` units) and listening sockets passed by socket
//! activation (`LISTEN_FDS`), which let the ppm binary itself be replaced
//! while the kernel keeps queueing connections.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{getsockopt, sockopt};

use crate::Error;

/// Sends `sd_notify` messages when the service manager asked for them.
#[derive(Debug, Default)]
pub struct Notifier {
    socket: Option<String>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`; without it every notification is a no-op.
    pub fn from_env() -> Self {
        Self {
            socket: std::env::var("NOTIFY_SOCKET")
                .ok()
                .filter(|s| !s.is_empty()),
        }
    }

    /// Sends one notification, e.g. `READY=1`. Failures are logged: the
    /// service keeps running either way.
    pub fn notify(&self, state: &str) {
        let Some(path) = &self.socket else { return };
        if let Err(err) = send(path, state) {
            tracing::warn!("cannot notify systemd at {path}: {err}");
        }
    }

    /// `RELOADING=1` with the timestamp systemd's `notify-reload` wants.
    pub fn reloading(&self) {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
            .unwrap_or_default();
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={now}"));
    }
}

fn send(path: &str, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}

/// Listening sockets handed over by the service manager, taken by address.
#[derive(Debug, Default)]
pub struct Inherited {
    listeners: Mutex<Vec<(SocketAddr, TcpListener)>>,
}

/// The first file descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

impl Inherited {
    /// Takes the sockets of `LISTEN_FDS` when `LISTEN_PID` is this process.
    pub fn from_env() -> Result<Self, Error> {
        let ours = std::env::var("LISTEN_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|p| p == std::process::id());
        let count: RawFd = match std::env::var("LISTEN_FDS")
            .ok()
            .and_then(|n| n.parse().ok())
        {
            Some(n) if ours => n,
            _ => return Ok(Self::default()),
        };
        let mut listeners = Vec::new();
        for fd in LISTEN_FDS_START..LISTEN_FDS_START + count {
            // SAFETY: the service manager passed these descriptors to us
            // and nothing else in this process owns them.
            let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let listening = getsockopt(&borrowed, sockopt::AcceptConn).unwrap_or(false);
            if !listening {
                return Err(Error::Php(format!(
                    "LISTEN_FDS: descriptor {fd} is not a listening socket"
                )));
            }
            // Workers must not inherit the public sockets.
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(std::io::Error::from)?;
            // SAFETY: as above; from here on the listener owns the descriptor.
            let listener = unsafe { TcpListener::from_raw_fd(fd) };
            listener.set_nonblocking(true)?;
            let addr = listener.local_addr()?;
            listeners.push((addr, listener));
        }
        tracing::info!(
            "took {} listening sockets from the service manager",
            listeners.len()
        );
        Ok(Self {
            listeners: Mutex::new(listeners),
        })
    }

    /// The inherited socket bound to `addr`, if there is one.
    pub fn take(&self, addr: SocketAddr) -> Option<TcpListener> {
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        let pos = listeners.iter().position(|(a, _)| *a == addr)?;
        Some(listeners.remove(pos).1)
    }

    /// Addresses of inherited sockets nothing asked for.
    pub fn unused(&self) -> Vec<SocketAddr> {
        let listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        listeners.iter().map(|(a, _)| *a).collect()
    }
}
