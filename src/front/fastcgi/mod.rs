//! The FastCGI front door (`--fastcgi-listen`): nginx's `fastcgi_pass`,
//! Apache's `mod_proxy_fcgi` and `cgi-fcgi` talk to ppm as they talk to
//! php-fpm, and their requests take the balancer's request path (the
//! master passes it in as the listener's handler).
//!
//! `records` is the wire format, `server` one connection in the responder
//! role, `params` how the web server's parameters become the worker's
//! request and PHP's `$_SERVER`. This module binds the listeners (before
//! any worker starts, like every public socket) and accepts connections.
//!
//! A Unix socket is created with mode 0660 (php-fpm's default
//! `listen.mode`): the web server must run as ppm's user or group. A
//! socket file left by a master that died is replaced; one a running
//! process still answers on is an error, like a port in use. The file is
//! removed when the listener closes.

pub mod params;
pub mod records;
pub mod server;

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::Response;

use tokio::net::{TcpListener, UnixListener};

use crate::body::ProxyBody;
use crate::front::http1::Arrival;
use crate::front::tasks::ConnectionTasks;
use crate::front::ConnInfo;
use crate::shutdown::ShutdownWatch;
use crate::systemd::Inherited;
use crate::Error;

pub use params::CgiVars;
pub use server::{Capacity, Settings};

/// Mode of a FastCGI Unix socket.
const SOCKET_MODE: u32 = 0o660;

/// Where a FastCGI listener listens (parsed by config).
pub use crate::config::ListenAddress as Address;

/// A bound FastCGI listener.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, SocketFile),
}

impl Listener {
    /// Where it listens, for the log.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "?".into(), |a| format!("fastcgi://{a}")),
            Listener::Unix(_, file) => format!("unix:{}", file.path.display()),
        }
    }
}

/// A Unix socket's file, removed on drop if it is still this socket's.
pub struct SocketFile {
    path: PathBuf,
    inode: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds every `--fastcgi-listen` address.
pub async fn bind(addresses: &[Address], inherited: &Inherited) -> Result<Vec<Listener>, Error> {
    let mut listeners = Vec::with_capacity(addresses.len());
    for address in addresses {
        listeners.push(match address.clone() {
            Address::Tcp(addr) => {
                let fail = |source| Error::Bind {
                    what: "FastCGI".into(),
                    addr,
                    source,
                };
                let listener = match inherited.take(addr) {
                    Some(listener) => TcpListener::from_std(listener).map_err(fail)?,
                    None => TcpListener::bind(addr).await.map_err(fail)?,
                };
                Listener::Tcp(listener)
            }
            Address::Unix(path) => bind_unix(&path)?,
        });
    }
    Ok(listeners)
}

fn bind_unix(path: &Path) -> Result<Listener, Error> {
    let fail = |message: String| Error::Listen {
        addr: format!("unix:{}", path.display()),
        message,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(fail("the path exists and is not a socket".into()));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(fail("another process is listening on it".into())),
            // Nobody answers: left behind by a process that died.
            Err(_) => std::fs::remove_file(path)
                .map_err(|e| fail(format!("cannot remove the stale socket: {e}")))?,
        }
    }
    let listener = UnixListener::bind(path).map_err(|e| fail(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(|e| fail(format!("cannot set its mode: {e}")))?;
    let inode = std::fs::symlink_metadata(path)
        .map_err(|e| fail(e.to_string()))?
        .ino();
    Ok(Listener::Unix(
        listener,
        SocketFile {
            path: path.to_path_buf(),
            inode,
        },
    ))
}

/// Accepts connections until `shutdown` turns true, then lets open
/// connections finish their current request, until the shutdown deadline.
/// `handler` answers every request (the master passes the balancer's).
pub async fn serve<H, F>(
    listener: Listener,
    settings: Arc<Settings>,
    handler: H,
    mut shutdown: ShutdownWatch,
) where
    H: Fn(Arrival, ConnInfo) -> F + Clone + Send + 'static,
    F: Future<Output = Response<ProxyBody>> + Send,
{
    let tasks = ConnectionTasks::new(settings.metrics.clone());
    loop {
        // The web server is one peer for many clients: only the total of
        // --max-connections applies, not the per-address share.
        let permit = tokio::select! {
            permit = settings.connections.permit() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = shutdown.closing() => break,
        };
        let accepted = tokio::select! {
            accepted = accept(&listener) => accepted,
            _ = shutdown.closing() => break,
        };
        let (reader, writer) = match accepted {
            Ok(halves) => halves,
            Err(err) => {
                tracing::warn!("FastCGI accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let settings = settings.clone();
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let _permit = permit;
            server::serve(settings, handler, reader, writer, shutdown).await;
        });
    }
    drop(listener);
    tasks.drain(&shutdown, "FastCGI connections").await;
}

type Reader = Box<dyn tokio::io::AsyncRead + Unpin + Send>;
type Writer = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;

async fn accept(listener: &Listener) -> std::io::Result<(Reader, Writer)> {
    Ok(match listener {
        Listener::Tcp(l) => {
            let (stream, _) = l.accept().await?;
            let _ = stream.set_nodelay(true);
            let (r, w) = stream.into_split();
            (Box::new(r), Box::new(w))
        }
        Listener::Unix(l, _) => {
            let (stream, _) = l.accept().await?;
            let (r, w) = stream.into_split();
            (Box::new(r), Box::new(w))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_port_or_unix_paths() {
        assert_eq!(
            "127.0.0.1:9000".parse(),
            Ok(Address::Tcp("127.0.0.1:9000".parse().unwrap()))
        );
        assert_eq!(
            "localhost:9000".parse(),
            Ok(Address::Tcp("127.0.0.1:9000".parse().unwrap()))
        );
        assert_eq!(
            "[::1]:9000".parse(),
            Ok(Address::Tcp("[::1]:9000".parse().unwrap()))
        );
        assert_eq!(
            "unix:/run/ppm.sock".parse(),
            Ok(Address::Unix("/run/ppm.sock".into()))
        );
        assert!("unix:relative.sock".parse::<Address>().is_err());
        assert!("9000".parse::<Address>().is_err());
    }

    #[test]
    fn a_stale_socket_file_is_replaced_and_a_live_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fcgi.sock");
        // Left behind: bound, then the listener is gone (the file stays).
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = bind_unix(&path).expect("the stale socket is replaced");
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, SOCKET_MODE);
            let err = bind_unix(&path).err().expect("a live socket is refused");
            assert!(err.to_string().contains("another process"), "{err}");
            drop(listener);
            assert!(!path.exists(), "the socket file is removed on close");
            std::fs::write(&path, "not a socket").unwrap();
            let err = bind_unix(&path).err().expect("a regular file is refused");
            assert!(err.to_string().contains("not a socket"), "{err}");
        });
    }
}
