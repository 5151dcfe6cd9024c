//! Taking connections: each port's accept loop, and a connection's
//! protocol (TLS, HTTP/2 by its preface, else HTTP/1.x).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::{Balancer, ConnInfo, Target};
use crate::front::conn_limit::Admitted;
use crate::front::http1::{self};
use crate::front::tasks::ConnectionTasks;
use crate::shutdown::ShutdownWatch;

/// The first bytes of every HTTP/2 connection (RFC 9113 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Balancer {
    /// Accepts connections until `shutdown` turns true, then lets open
    /// connections finish their current request and close, until the
    /// shutdown deadline.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        target: Target,
        mut shutdown: ShutdownWatch,
    ) {
        let tasks = ConnectionTasks::new(self.metrics.clone());
        let tls = match target {
            Target::Any => self.front.tls.clone(),
            Target::Slot(_) => None,
        };
        // Set once a wait for a free connection timed out: from then on,
        // until one is free, new connections get a 503 without waiting.
        let mut at_limit = false;
        loop {
            let permit = match self.front.connections.try_permit() {
                Some(permit) => Some(permit),
                None if at_limit => None,
                None => tokio::select! {
                    permit = self.front.connections.permit() => match permit {
                        Ok(permit) => Some(permit),
                        Err(_) => break,
                    },
                    _ = tokio::time::sleep(crate::front::conn_limit::FULL_WAIT) => None,
                    _ = shutdown.closing() => break,
                },
            };
            at_limit = permit.is_none();
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!("accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.closing() => break,
            };
            let _ = stream.set_nodelay(true);
            let admitted = match permit {
                Some(permit) => self.front.connections.admit(peer.ip(), permit),
                None => Err(self.front.connections.refuse_full()),
            };
            let permit = match admitted {
                Ok(admitted) => admitted,
                Err(refused) => {
                    // A TLS client could not read a plain answer: it just
                    // sees the connection close.
                    if tls.is_none() {
                        let mut shutdown = shutdown.clone();
                        tokio::spawn(async move { refused.refuse(stream, &mut shutdown).await });
                    }
                    continue;
                }
            };
            let conn = ConnInfo {
                peer,
                local: stream.local_addr().unwrap_or(peer),
                tls: tls.is_some(),
                target,
            };
            let this = self.clone();
            let tls = tls.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                let _permit: Admitted = permit;
                this.connection(stream, conn, tls, shutdown).await;
            });
        }
        drop(listener);
        tasks.drain(&shutdown, "connections").await;
    }

    /// One client connection, whatever its protocol.
    async fn connection(
        self: &Arc<Self>,
        stream: TcpStream,
        conn: ConnInfo,
        tls: Option<TlsAcceptor>,
        shutdown: ShutdownWatch,
    ) {
        if let Some(acceptor) = tls {
            // An accepted connection is owed its first request, even if
            // the master began to close meanwhile (see `http1::serve`).
            let handshake =
                tokio::time::timeout(self.front.limits.header_timeout, acceptor.accept(stream))
                    .await;
            let Ok(Ok(stream)) = handshake else {
                return;
            };
            if stream.get_ref().1.alpn_protocol() == Some(crate::front::tls::ALPN_H2) {
                self.serve_h2(stream, conn, shutdown).await;
            } else {
                self.serve_h1(stream, BytesMut::new(), conn, shutdown).await;
            }
            return;
        }
        // Cleartext: HTTP/2 with prior knowledge starts with its preface;
        // anything else is HTTP/1.x.
        let mut stream = stream;
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let deadline = Instant::now()
            + self
                .front
                .limits
                .header_timeout
                .min(self.front.limits.request_timeout);
        while buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf) {
            let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await;
            match read {
                Ok(Ok(n)) if n > 0 => {}
                _ if buf.is_empty() => return,
                // Let the HTTP/1 reader answer what it has (408, 400).
                _ => break,
            }
        }
        if buf.starts_with(H2_PREFACE) {
            let io = Prefixed {
                prefix: buf.freeze(),
                io: stream,
            };
            self.serve_h2(io, conn, shutdown).await;
        } else {
            self.serve_h1(stream, buf, conn, shutdown).await;
        }
    }

    async fn serve_h1<IO>(
        self: &Arc<Self>,
        io: IO,
        buf: BytesMut,
        conn: ConnInfo,
        shutdown: ShutdownWatch,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let this = self.clone();
        http1::serve(
            io,
            buf,
            &self.front.limits,
            &self.front.spool,
            shutdown,
            move |arrival| {
                let this = this.clone();
                async move { this.arrived(arrival, conn).await }
            },
        )
        .await;
    }
}

/// An IO whose first bytes were already read (the sniffed HTTP/2 preface).
struct Prefixed<IO> {
    prefix: Bytes,
    io: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
