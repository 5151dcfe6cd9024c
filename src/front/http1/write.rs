//! The response writer: HTTP/1.x framing of what the handler answered.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Body;
use hyper::header::{self};
use hyper::{Method, Response, StatusCode, Version};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::Limits;
use crate::body::ProxyBody;

/// Writes all of `data`, allowing `stall` without progress.
async fn write<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    data: Vec<u8>,
    stall: Duration,
) -> std::io::Result<()> {
    match tokio::time::timeout(stall, io.write_all(&data)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Flush the write buffer when it grows past this.
const WRITE_BUFFER: usize = 64 * 1024;

thread_local! {
    /// The `Date` header's value, made once a second.
    static HTTP_DATE: crate::text::PerSecond = const { crate::text::PerSecond::new() };
}

/// Writes `response` for a request with `method` and `version`. Returns
/// whether the connection may serve another request.
pub async fn write_response<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    response: Response<ProxyBody>,
    method: &Method,
    version: Version,
    keep_alive: bool,
    limits: &Limits,
) -> std::io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    let no_body = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let length = declared.or_else(|| body.size_hint().exact());
    // Chunked only for HTTP/1.1 clients; the server answers HTTP/1.1, and
    // 1.0 clients get a body delimited by the connection's close.
    let chunked = !no_body && length.is_none() && version != Version::HTTP_10;
    let mut keep_alive = keep_alive && (no_body || length.is_some() || chunked);

    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if matches!(
            *name,
            header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::CONNECTION
        ) || name == "keep-alive"
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        HTTP_DATE.with(|date| {
            date.push(
                &mut out,
                std::time::SystemTime::now(),
                httpdate::fmt_http_date,
            )
        });
        out.extend_from_slice(b"\r\n");
    }
    let omit_length = status.is_informational() || status == StatusCode::NO_CONTENT;
    match length {
        Some(len) if !omit_length && (!no_body || declared.is_some() || len > 0) => {
            out.extend_from_slice(b"content-length: ");
            crate::text::push_u64(&mut out, len);
            out.extend_from_slice(b"\r\n");
        }
        _ if chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");

    if no_body {
        drop(body);
        write(io, out, limits.idle_timeout).await?;
        io.flush().await?;
        return Ok(keep_alive);
    }
    let mut sent: u64 = 0;
    // A small body of known length goes out with its head in one write;
    // anything else is flushed as soon as the body has nothing more ready
    // at once, so a streamed response is not held back.
    let gather = length.is_some_and(|len| len <= WRITE_BUFFER as u64);
    loop {
        let frame = tokio::select! {
            biased;
            frame = body.frame() => frame,
            _ = std::future::ready(()), if !out.is_empty() && !gather => {
                write(io, std::mem::take(&mut out), limits.idle_timeout).await?;
                body.frame().await
            }
        };
        match frame {
            None => break,
            Some(Err(err)) => {
                // The worker broke off: the client can only tell from the
                // connection closing early.
                if !out.is_empty() {
                    let _ = write(io, out, limits.idle_timeout).await;
                }
                return Err(std::io::Error::other(err));
            }
            Some(Ok(frame)) => {
                let Ok(mut data) = frame.into_data() else {
                    continue;
                };
                if let Some(len) = length {
                    if sent + data.len() as u64 > len {
                        data.truncate((len - sent) as usize);
                        keep_alive = false;
                    }
                }
                if data.is_empty() {
                    continue;
                }
                sent += data.len() as u64;
                if chunked {
                    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                }
                out.extend_from_slice(&data);
                if chunked {
                    out.extend_from_slice(b"\r\n");
                }
                if out.len() >= WRITE_BUFFER {
                    write(io, std::mem::take(&mut out), limits.idle_timeout).await?;
                }
            }
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    if !out.is_empty() {
        write(io, out, limits.idle_timeout).await?;
    }
    io.flush().await?;
    if length.is_some_and(|len| sent < len) {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(keep_alive)
}
