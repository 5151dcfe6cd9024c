//! Lingering close: how a connection ends after an early answer.
//!
//! When the front door answers before it has read the whole request (a
//! 400 for a bad head, 413 for a body past `--max-body-size`, 408, 431,
//! 507 when the spool is full, a 503 past a connection limit), the client
//! may still be writing. Many clients (Python's `http.client`, most SDKs,
//! `curl` without `Expect`) write the whole request before they read a
//! byte of the answer. If the master closed the socket at once, the
//! kernel would answer the unread bytes with a reset: the client's write
//! fails with a broken pipe and it never sees the status. So, like nginx's
//! lingering close, the master sends the answer, shuts its write side
//! (the client sees the end of the answer) and keeps reading and
//! discarding what the client sends until the client closes, bounded by a
//! total time, a silence and a byte count; then it closes.
//!
//! The bounds depend on why the answer came early. After a refusal of
//! what the client sent (400, 413, 431, 507, 503) the client is typically
//! still pushing its request at full speed, so it gets nginx's bounds
//! (`lingering_time` 30 s, `lingering_timeout` 5 s). After a timeout
//! (408) the client is slow by definition; waiting 30 s for it would hand
//! a slow client the very connection time the deadline took away, so it
//! gets a brief drain, enough for the answer to leave before the close.

use std::time::Duration;

use crate::shutdown::ShutdownWatch;
use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// How long, and how much, a connection is drained before it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linger {
    /// Longest time from the answer to the close (nginx's `lingering_time`).
    pub total: Duration,
    /// Longest time without a byte from the client (`lingering_timeout`).
    pub silence: Duration,
    /// Most bytes read and discarded.
    pub max_bytes: u64,
}

impl Linger {
    /// After a refusal of what the client sent: it may be writing a
    /// large body at full speed, so it gets time to finish (nginx's
    /// defaults), up to four times the default `--max-body-size`.
    pub const REFUSED: Linger = Linger {
        total: Duration::from_secs(30),
        silence: Duration::from_secs(5),
        max_bytes: 256 * 1024 * 1024,
    };

    /// After a timeout: the client is slow, so only long enough for the
    /// answer to leave before the close.
    pub const TIMED_OUT: Linger = Linger {
        total: Duration::from_secs(2),
        silence: Duration::from_secs(1),
        max_bytes: 1024 * 1024,
    };

    /// The bounds after an early answer with `status`.
    pub fn after(status: StatusCode) -> Linger {
        if status == StatusCode::REQUEST_TIMEOUT {
            Self::TIMED_OUT
        } else {
            Self::REFUSED
        }
    }
}

/// Shuts the write side of `io` (the answer must already be written),
/// then reads and discards its input until the client closes, a bound of
/// `linger` is reached, or `shutdown` turns true. Returns the bytes
/// discarded.
pub async fn close<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    linger: Linger,
    shutdown: &mut ShutdownWatch,
) -> u64 {
    let drain = async {
        if io.shutdown().await.is_err() {
            return 0;
        }
        let mut scratch = vec![0u8; 64 * 1024];
        let mut drained = 0u64;
        let until = Instant::now() + linger.total;
        while drained < linger.max_bytes {
            let silent_until = until.min(Instant::now() + linger.silence);
            match tokio::time::timeout_at(silent_until, io.read(&mut scratch)).await {
                Ok(Ok(n)) if n > 0 => drained += n as u64,
                _ => break,
            }
        }
        drained
    };
    tokio::select! {
        drained = drain => drained,
        // A stopping master does not wait for lingering clients.
        _ = shutdown.closing() => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test]
    async fn the_input_is_drained_until_the_client_closes() {
        let (mut server, mut client) = duplex(64 * 1024);
        let (_stop, mut shutdown) = crate::shutdown::Shutdown::running();
        let writer = tokio::spawn(async move {
            let chunk = vec![7u8; 100 * 1024];
            for _ in 0..50 {
                client.write_all(&chunk).await.unwrap();
            }
            // The server's write side was shut: the client reads the end.
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.unwrap();
            rest.len()
        });
        let drained = close(&mut server, Linger::REFUSED, &mut shutdown).await;
        assert_eq!(drained, 50 * 100 * 1024);
        assert_eq!(writer.await.unwrap(), 0);
    }

    /// Bounds short enough for a test in real time.
    const QUICK: Linger = Linger {
        total: Duration::from_millis(600),
        silence: Duration::from_millis(200),
        max_bytes: 1024 * 1024,
    };

    #[tokio::test]
    async fn a_silent_client_is_closed_after_the_silence_bound() {
        let (mut server, _client) = duplex(1024);
        let (_stop, mut shutdown) = crate::shutdown::Shutdown::running();
        let started = Instant::now();
        close(&mut server, QUICK, &mut shutdown).await;
        let took = started.elapsed();
        assert!(took >= QUICK.silence && took < QUICK.total, "{took:?}");
    }

    #[tokio::test]
    async fn a_trickling_client_is_closed_after_the_total_bound() {
        let (mut server, mut client) = duplex(1024);
        let (_stop, mut shutdown) = crate::shutdown::Shutdown::running();
        tokio::spawn(async move {
            while client.write_all(b"x").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let started = Instant::now();
        close(&mut server, QUICK, &mut shutdown).await;
        let took = started.elapsed();
        assert!(took >= QUICK.total, "{took:?}");
        assert!(took < QUICK.total + Duration::from_millis(300), "{took:?}");
    }

    #[tokio::test]
    async fn a_stopping_master_does_not_wait_for_lingering_clients() {
        let (mut server, _client) = duplex(1024);
        let (stop, mut shutdown) = crate::shutdown::Shutdown::running();
        let started = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stop.close_now();
        });
        close(&mut server, Linger::REFUSED, &mut shutdown).await;
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn draining_stops_at_the_byte_bound() {
        let (mut server, mut client) = duplex(64 * 1024);
        let (_stop, mut shutdown) = crate::shutdown::Shutdown::running();
        tokio::spawn(async move {
            let chunk = vec![0u8; 64 * 1024];
            while client.write_all(&chunk).await.is_ok() {}
        });
        let bound = Linger {
            max_bytes: 1024 * 1024,
            ..Linger::REFUSED
        };
        let drained = close(&mut server, bound, &mut shutdown).await;
        assert!((1024 * 1024..1024 * 1024 + 64 * 1024).contains(&drained));
    }

    #[test]
    fn a_timeout_lingers_briefly_and_a_refusal_long() {
        assert_eq!(
            Linger::after(StatusCode::REQUEST_TIMEOUT),
            Linger::TIMED_OUT
        );
        for status in [400, 413, 431, 503, 507] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(Linger::after(status), Linger::REFUSED);
        }
    }
}
