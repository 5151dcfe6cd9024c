//! A worker's end of its pool's shared request queue: a `SOCK_SEQPACKET`
//! socket the master writes each request into as one message and every
//! worker of the pool reads, so a request goes to the first worker that
//! is free (php-fpm's shared accept queue), and a busy worker finds its
//! next request waiting instead of sleeping until the master hands it one.
//!
//! The worker waits on the queue and on its own frame socket at once
//! (`Serve`, `Hold` and requests for this worker alone come there), with
//! `EPOLLEXCLUSIVE` on the queue so that a message wakes one idle worker,
//! not all of them.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{recv, MsgFlags};

/// Largest queue message a worker reads: a request head and the body
/// the master puts with it. The master keeps its messages below this.
pub const MESSAGE_MAX: usize = 256 << 10;

/// The worker's end of the queue, and what it waits on.
pub struct QueueEnd {
    queue: OwnedFd,
    epoll: Epoll,
    serving: bool,
    message: Vec<u8>,
}

impl QueueEnd {
    /// Waits on `queue` and on the worker's frame socket `own`; takes
    /// nothing from the queue until [`serve`](Self::serve).
    pub fn new(queue: OwnedFd, own: BorrowedFd<'_>) -> io::Result<QueueEnd> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(
            own,
            EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP, 0),
        )?;
        Ok(QueueEnd {
            queue,
            epoll,
            serving: false,
            message: vec![0; MESSAGE_MAX],
        })
    }

    /// Whether requests are taken from the queue.
    pub fn serving(&self) -> bool {
        self.serving
    }

    /// Starts or stops taking requests from the queue.
    pub fn serve(&mut self, on: bool) -> io::Result<()> {
        if on == self.serving {
            return Ok(());
        }
        if on {
            // Exclusive: a message wakes one of the waiting workers.
            let events = EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE;
            self.epoll.add(&self.queue, EpollEvent::new(events, 1))?;
        } else {
            self.epoll.delete(&self.queue)?;
        }
        self.serving = on;
        Ok(())
    }

    /// The next queue message, if one is waiting (never blocks).
    pub fn try_take(&mut self) -> io::Result<Option<&[u8]>> {
        let fd = self.queue.as_raw_fd();
        let n = loop {
            match recv(fd, &mut self.message, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => break n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(err) => return Err(err.into()),
            }
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the master closed the request queue",
            ));
        }
        if n == self.message.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a queue message of {MESSAGE_MAX} bytes or more"),
            ));
        }
        Ok(Some(&self.message[..n]))
    }

    /// Sleeps until the frame socket or (when serving) the queue may have
    /// something; the caller looks at both again.
    pub fn wait(&self) -> io::Result<()> {
        let mut events = [EpollEvent::empty(); 2];
        match self.epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

/// Whether bytes (or the peer's close) wait on stream socket `fd`.
pub fn has_input(fd: impl AsFd) -> io::Result<bool> {
    let mut byte = [0u8; 1];
    loop {
        match recv(
            fd.as_fd().as_raw_fd(),
            &mut byte,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(false),
            Err(err) => return Err(err.into()),
        }
    }
}

/// Now on `CLOCK_MONOTONIC`, which master and workers share, in
/// nanoseconds: queue deadlines are written in it.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{send, socketpair, AddressFamily, SockFlag, SockType};
    use std::os::unix::net::UnixStream;

    fn queue() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    #[test]
    fn messages_are_taken_whole_and_only_while_serving() {
        let (master, worker) = queue();
        let (own, _peer) = UnixStream::pair().unwrap();
        let mut end = QueueEnd::new(worker, own.as_fd()).unwrap();
        send(master.as_raw_fd(), b"first", MsgFlags::empty()).unwrap();
        send(master.as_raw_fd(), b"second", MsgFlags::empty()).unwrap();
        assert!(!end.serving());
        assert_eq!(end.try_take().unwrap(), Some(&b"first"[..]));
        assert_eq!(end.try_take().unwrap(), Some(&b"second"[..]));
        assert_eq!(end.try_take().unwrap(), None);
        end.serve(true).unwrap();
        end.serve(true).unwrap();
        end.serve(false).unwrap();
        drop(master);
        assert!(end.try_take().is_err(), "a closed queue is an error");
    }

    #[test]
    fn a_wait_ends_on_a_message_or_on_the_own_socket() {
        let (master, worker) = queue();
        let (own, mut peer) = UnixStream::pair().unwrap();
        let mut end = QueueEnd::new(worker, own.as_fd()).unwrap();
        end.serve(true).unwrap();
        send(master.as_raw_fd(), b"m", MsgFlags::empty()).unwrap();
        end.wait().unwrap();
        assert!(end.try_take().unwrap().is_some());
        assert!(!has_input(&own).unwrap());
        // Held: a queue message does not end the wait; the own socket does.
        end.serve(false).unwrap();
        send(master.as_raw_fd(), b"m", MsgFlags::empty()).unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            std::io::Write::write_all(&mut peer, b"x").unwrap();
            peer
        });
        let started = std::time::Instant::now();
        end.wait().unwrap();
        assert!(started.elapsed() >= std::time::Duration::from_millis(40));
        assert!(has_input(&own).unwrap());
        drop(writer.join().unwrap());
    }

    #[test]
    fn the_monotonic_clock_moves_on() {
        let a = monotonic_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(monotonic_ns() >= a + 1_000_000);
    }
}
