//! `ppm php-worker`: a worker process hosting PHP, driven by a master
//! over the frame socket it inherits. SIGUSR1 asks it for the PHP
//! backtrace of what it runs (a `Backtrace` frame).
//!
//! The worker ends when the master's end of the socket closes, even in
//! the middle of a request: a thread polls the socket for the hang-up and
//! ends the process, so no worker outlives its master, even after `kill
//! -9` of the master.

use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use super::frame_link::FrameLink;
use super::host;
use crate::config::AppOptions;
use crate::Error;

/// Runs the worker on the inherited socket `fd` (and shared queue
/// `queue_fd`); returns the exit status.
pub fn run(
    fd: RawFd,
    queue_fd: Option<RawFd>,
    app: &AppOptions,
    entry: Option<PathBuf>,
    slot: usize,
) -> Result<i32, Error> {
    if nix::sys::stat::fstat(fd).is_err() {
        return Err(Error::InvalidOption {
            option: "fd",
            message: format!("{fd} is not an open descriptor"),
        });
    }
    // SAFETY: the descriptor was inherited for this purpose and is owned
    // by nothing else in this process.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    let queue = match queue_fd {
        Some(q) if nix::sys::stat::fstat(q).is_ok() => {
            // SAFETY: as for the frame socket.
            Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(q) })
        }
        Some(q) => {
            return Err(Error::InvalidOption {
                option: "queue-fd",
                message: format!("{q} is not an open descriptor"),
            })
        }
        None => None,
    };
    let watched = stream.try_clone()?;
    std::thread::Builder::new()
        .name("master-watch".into())
        .spawn(move || watch_master(watched))?;
    let (_run_dir, entry) = match entry {
        Some(entry) => (None, entry),
        None => {
            let dir = crate::workers::rundir::RunDir::create()?;
            let entry = host::install_entry(dir.path())?;
            (Some(dir), entry)
        }
    };
    let mut link = FrameLink::new(stream)?;
    if let Some(queue) = queue {
        link = link.with_queue(queue)?;
    }
    host::run(Box::new(link), app, &entry, slot)
}

/// Ends the process when the master's end closes. POLLRDHUP reports the
/// peer's close without reading, so frames stay for the PHP thread.
fn watch_master(stream: UnixStream) {
    use nix::libc;
    let mut pfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, -1) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n != 0
            && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
        {
            // SAFETY: ends the process without running anything else;
            // there is no one left to answer.
            unsafe { libc::_exit(0) }
        }
    }
}
