//! The binary protocol between a master and a native worker, over the
//! worker's private Unix stream socket.
//!
//! Every frame is `u32 length (big-endian) | u8 kind | payload`, where the
//! length counts the kind byte and the payload. Strings and byte strings
//! inside a payload are `u32 length | bytes`; a body chunk's payload is the
//! bytes themselves.
//!
//! Master → worker, per request: one [`ToWorker::Head`], any number of
//! [`ToWorker::Body`] chunks, then [`ToWorker::BodyEnd`], always (an empty
//! body is just the end). The worker reads the body only as PHP asks for
//! it, so an upload streams into PHP's temporary file; socket back-pressure
//! holds the master.
//!
//! With a pool's shared request queue (a `SOCK_SEQPACKET` socket every
//! worker of the pool reads, see `queue.rs`), a request is one queue
//! message: a [`ToWorker::Dispatch`] frame naming it, its head, and its
//! body chunks and end when they fit; a body that did not fit follows on
//! the worker's own socket once the worker said [`ToMaster::Took`]. A
//! worker takes from the queue only between [`ToWorker::Serve`] and
//! [`ToWorker::Hold`] (answered with [`ToMaster::Held`] once no request
//! runs); a request past its deadline is answered [`ToMaster::Expired`]
//! without running. Requests on the worker's own socket (a request for
//! this worker alone) are served held or not.
//!
//! Worker → master: [`ToMaster::Ready`] once booted and after every
//! request (after terminate work and reset, preceded by
//! [`ToMaster::Stats`]); per request a [`ToMaster::Head`], body chunks as
//! PHP writes and flushes, and one [`ToMaster::End`], which may come long
//! before `Ready` (`fastcgi_finish_request()`). Log lines, boot errors and
//! backtraces may come at any time.

use super::head_frame::HeadFrame;
use std::io::{self, Read};

/// Largest accepted frame (kind byte plus payload).
pub const MAX_FRAME: usize = 16 << 20;

/// Bytes before the payload: length and kind.
pub const PREFIX: usize = 5;

/// Largest body chunk the writers put in one frame.
pub const BODY_CHUNK: usize = 256 << 10;

use super::wire::HEAD;
use super::wire::{begin, finish, put_str};
const BODY: u8 = 2;
const BODY_END: u8 = 3;
const RESPONSE_HEAD: u8 = 16;
const RESPONSE_BODY: u8 = 17;
const RESPONSE_END: u8 = 18;
const READY: u8 = 19;
const STATS: u8 = 20;
const LOG: u8 = 21;
const BOOT_ERROR: u8 = 22;
const BACKTRACE: u8 = 23;
const INCLUDED: u8 = 24;
const PHP_INFO: u8 = 25;
const FLUSH: u8 = 26;
const SERVE: u8 = 4;
const HOLD: u8 = 5;
const DISPATCH: u8 = 6;
const TOOK: u8 = 27;
const EXPIRED: u8 = 28;
const HELD: u8 = 29;

/// A frame that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    Oversized(usize),
    #[error("empty frame (no kind byte)")]
    Empty,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame kind {kind} is malformed: {what}")]
    Malformed { kind: u8, what: &'static str },
}

/// The request line, connection facts and headers of one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestHead {
    pub method: String,
    /// The request target as sent (path and query), byte for byte: nginx
    /// passes bytes above 0x7F and some non-URI characters on as they are.
    pub target: Vec<u8>,
    /// e.g. `HTTP/1.1`.
    pub protocol: String,
    pub remote_addr: String,
    pub remote_port: u16,
    pub server_addr: String,
    pub server_port: u16,
    /// The client reached ppm over TLS.
    pub tls: bool,
    /// The body's length; `None` when the request has no body framing.
    pub content_length: Option<u64>,
    /// Header names and values in the order received, hop-by-hop removed.
    pub headers: Vec<(String, Vec<u8>)>,
    /// A request that came over FastCGI: the web server's parameters as
    /// sent (`FCGI_ROLE` first), which are then `$_SERVER`, as under
    /// php-fpm. Empty for an HTTP request.
    pub cgi: Vec<(Vec<u8>, Vec<u8>)>,
}

/// How a request ended (with its response end), and why a worker script
/// restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Outcome {
    Normal = 0,
    /// `exit()`/`die()`: the response is what the app built; the script restarts.
    Exit = 1,
    /// An uncaught exception; the worker continues. Under
    /// `--bridge=script`: any fatal error, which ends only its request.
    Exception = 2,
    /// A fatal error; the script restarts.
    Fatal = 3,
    /// `max_execution_time`; the script restarts.
    Timeout = 4,
    /// `memory_limit`; the script restarts.
    OutOfMemory = 5,
}

impl Outcome {
    /// From the shim's `ppm_outcome` value.
    pub fn from_u8(value: u8) -> Option<Outcome> {
        Some(match value {
            0 => Outcome::Normal,
            1 => Outcome::Exit,
            2 => Outcome::Exception,
            3 => Outcome::Fatal,
            4 => Outcome::Timeout,
            5 => Outcome::OutOfMemory,
            _ => return None,
        })
    }

    /// Whether the worker script restarts after this outcome.
    pub fn restarts(self) -> bool {
        !matches!(self, Outcome::Normal | Outcome::Exception)
    }

    /// A short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Normal => "normal",
            Outcome::Exit => "exit",
            Outcome::Exception => "exception",
            Outcome::Fatal => "fatal error",
            Outcome::Timeout => "timeout",
            Outcome::OutOfMemory => "out of memory",
        }
    }
}

/// [`ToMaster::End`] flag: the app called `fastcgi_finish_request()`.
pub const END_EARLY: u8 = 1;

/// A frame from the master to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToWorker {
    Head(RequestHead),
    Body(Vec<u8>),
    BodyEnd,
    /// Take requests from the shared queue.
    Serve,
    /// Take no more requests from the shared queue.
    Hold,
    /// Opens a queue message: request `id`, to be answered `Expired`
    /// instead of run once `CLOCK_MONOTONIC` passed `deadline_ns` (0:
    /// never).
    Dispatch {
        id: u64,
        deadline_ns: u64,
    },
}

/// A frame from a worker to the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToMaster {
    /// Status and PHP's header lines (`Name: value`).
    Head {
        status: u16,
        lines: Vec<Vec<u8>>,
    },
    Body(Vec<u8>),
    /// PHP flushed (`flush()`, implicit flush): what came so far should
    /// reach the client now, so the response streams.
    Flush,
    End {
        flags: u8,
        outcome: Outcome,
    },
    /// Ready for the next request (booted, or done with the last one).
    Ready,
    /// Zend memory after the last request, and the peak so far.
    Stats {
        memory: u64,
        peak: u64,
    },
    Log(String),
    BootError(String),
    Backtrace(String),
    /// Debug mode: files PHP loaded since the last report (for reloads).
    Included(Vec<String>),
    /// PHP's settings the master checks its limits against, once per
    /// bootstrap: `memory_limit` as written in php.ini (`128M`, `-1`).
    PhpInfo {
        memory_limit: String,
    },
    /// The worker took queued request `id`: its response follows.
    Took(u64),
    /// Queued request `id` was past its deadline: it did not run.
    Expired(u64),
    /// The worker takes no more requests from the queue (after `Hold`).
    Held,
}

impl ToWorker {
    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ToWorker::Head(head) => HeadFrame {
                method: &head.method,
                target: &head.target,
                protocol: &head.protocol,
                remote_addr: &head.remote_addr,
                remote_port: head.remote_port,
                server_addr: &head.server_addr,
                server_port: head.server_port,
                tls: head.tls,
                content_length: head.content_length,
            }
            .encode(
                out,
                |sink| {
                    for (name, value) in &head.headers {
                        sink.exact(name, value);
                    }
                },
                head.cgi.iter().map(|(n, v)| (&n[..], &v[..])),
            ),
            ToWorker::Body(data) => encode_body(out, BODY, data),
            ToWorker::BodyEnd => empty(out, BODY_END),
            ToWorker::Serve => empty(out, SERVE),
            ToWorker::Hold => empty(out, HOLD),
            ToWorker::Dispatch { id, deadline_ns } => {
                let start = begin(out, DISPATCH);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&deadline_ns.to_be_bytes());
                finish(out, start);
            }
        }
    }

    /// Decodes one frame's kind and payload.
    pub fn parse(kind: u8, payload: &[u8]) -> Result<ToWorker, FrameError> {
        let mut c = Cursor {
            kind,
            rest: payload,
        };
        let frame = match kind {
            HEAD => {
                let method = c.string()?;
                let target = c.bytes()?.to_vec();
                let protocol = c.string()?;
                let remote_addr = c.string()?;
                let remote_port = c.u16()?;
                let server_addr = c.string()?;
                let server_port = c.u16()?;
                let flags = c.u8()?;
                let length = c.u64()?;
                let count = c.u32()? as usize;
                // Each header takes at least 8 bytes: refuse a count the
                // payload cannot hold before allocating for it.
                if count > c.rest.len() / 8 {
                    return Err(c.malformed("header count exceeds the frame"));
                }
                let mut headers = Vec::with_capacity(count);
                for _ in 0..count {
                    let name = c.string()?;
                    headers.push((name, c.bytes()?.to_vec()));
                }
                let count = c.u32()? as usize;
                if count > c.rest.len() / 8 {
                    return Err(c.malformed("parameter count exceeds the frame"));
                }
                let mut cgi = Vec::with_capacity(count);
                for _ in 0..count {
                    let name = c.bytes()?.to_vec();
                    cgi.push((name, c.bytes()?.to_vec()));
                }
                ToWorker::Head(RequestHead {
                    method,
                    target,
                    protocol,
                    remote_addr,
                    remote_port,
                    server_addr,
                    server_port,
                    tls: flags & 1 != 0,
                    content_length: (flags & 2 != 0).then_some(length),
                    headers,
                    cgi,
                })
            }
            BODY => return Ok(ToWorker::Body(payload.to_vec())),
            BODY_END => ToWorker::BodyEnd,
            SERVE => ToWorker::Serve,
            HOLD => ToWorker::Hold,
            DISPATCH => ToWorker::Dispatch {
                id: c.u64()?,
                deadline_ns: c.u64()?,
            },
            other => return Err(FrameError::UnknownKind(other)),
        };
        c.end()?;
        Ok(frame)
    }
}

impl ToMaster {
    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ToMaster::Head { status, lines } => encode_response_head(out, *status, lines),
            ToMaster::Body(data) => encode_body(out, RESPONSE_BODY, data),
            ToMaster::End { flags, outcome } => {
                let start = begin(out, RESPONSE_END);
                out.push(*flags);
                out.push(*outcome as u8);
                finish(out, start);
            }
            ToMaster::Ready => empty(out, READY),
            ToMaster::Flush => empty(out, FLUSH),
            ToMaster::Held => empty(out, HELD),
            ToMaster::Took(id) => {
                let start = begin(out, TOOK);
                out.extend_from_slice(&id.to_be_bytes());
                finish(out, start);
            }
            ToMaster::Expired(id) => {
                let start = begin(out, EXPIRED);
                out.extend_from_slice(&id.to_be_bytes());
                finish(out, start);
            }
            ToMaster::Stats { memory, peak } => {
                let start = begin(out, STATS);
                out.extend_from_slice(&memory.to_be_bytes());
                out.extend_from_slice(&peak.to_be_bytes());
                finish(out, start);
            }
            ToMaster::Log(text) => encode_text(out, LOG, text.as_bytes()),
            ToMaster::BootError(text) => encode_text(out, BOOT_ERROR, text.as_bytes()),
            ToMaster::Backtrace(text) => encode_text(out, BACKTRACE, text.as_bytes()),
            ToMaster::Included(files) => {
                let start = begin(out, INCLUDED);
                out.extend_from_slice(&(files.len() as u32).to_be_bytes());
                for file in files {
                    put_str(out, file.as_bytes());
                }
                finish(out, start);
            }
            ToMaster::PhpInfo { memory_limit } => {
                encode_text(out, PHP_INFO, memory_limit.as_bytes())
            }
        }
    }

    /// Decodes one frame's kind and payload.
    pub fn parse(kind: u8, payload: &[u8]) -> Result<ToMaster, FrameError> {
        let mut c = Cursor {
            kind,
            rest: payload,
        };
        let frame = match kind {
            RESPONSE_HEAD => {
                let status = c.u16()?;
                let count = c.u32()? as usize;
                if count > c.rest.len() / 4 {
                    return Err(c.malformed("line count exceeds the frame"));
                }
                let mut lines = Vec::with_capacity(count);
                for _ in 0..count {
                    lines.push(c.bytes()?.to_vec());
                }
                ToMaster::Head { status, lines }
            }
            RESPONSE_BODY => return Ok(ToMaster::Body(payload.to_vec())),
            RESPONSE_END => {
                let flags = c.u8()?;
                let outcome =
                    Outcome::from_u8(c.u8()?).ok_or_else(|| c.malformed("unknown outcome"))?;
                ToMaster::End { flags, outcome }
            }
            READY => ToMaster::Ready,
            FLUSH => ToMaster::Flush,
            HELD => ToMaster::Held,
            TOOK => ToMaster::Took(c.u64()?),
            EXPIRED => ToMaster::Expired(c.u64()?),
            STATS => ToMaster::Stats {
                memory: c.u64()?,
                peak: c.u64()?,
            },
            LOG => return Ok(ToMaster::Log(lossy(payload))),
            BOOT_ERROR => return Ok(ToMaster::BootError(lossy(payload))),
            BACKTRACE => return Ok(ToMaster::Backtrace(lossy(payload))),
            INCLUDED => {
                let count = c.u32()? as usize;
                if count > c.rest.len() / 4 {
                    return Err(c.malformed("file count exceeds the frame"));
                }
                let mut files = Vec::with_capacity(count);
                for _ in 0..count {
                    files.push(c.string()?);
                }
                ToMaster::Included(files)
            }
            PHP_INFO => {
                return Ok(ToMaster::PhpInfo {
                    memory_limit: lossy(payload),
                })
            }
            other => return Err(FrameError::UnknownKind(other)),
        };
        c.end()?;
        Ok(frame)
    }
}

/// Appends a response head frame built from borrowed header lines.
pub fn encode_response_head<L: AsRef<[u8]>>(out: &mut Vec<u8>, status: u16, lines: &[L]) {
    let start = begin(out, RESPONSE_HEAD);
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(&(lines.len() as u32).to_be_bytes());
    for line in lines {
        put_str(out, line.as_ref());
    }
    finish(out, start);
}

/// Appends response body frames for `data` (split at [`BODY_CHUNK`]).
pub fn encode_response_body(out: &mut Vec<u8>, data: &[u8]) {
    encode_body(out, RESPONSE_BODY, data);
}

/// A complete frame at the start of a buffer: kind, payload, bytes used.
pub type Split<'a> = (u8, &'a [u8], usize);

/// Splits the first complete frame off `buf`: its kind, its payload and
/// the bytes it used; `None` until the frame is complete.
pub fn split(buf: &[u8]) -> Result<Option<Split<'_>>, FrameError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    check_len(len)?;
    if buf.len() < 4 + len {
        return Ok(None);
    }
    Ok(Some((buf[4], &buf[5..4 + len], 4 + len)))
}

/// Why reading a frame from a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the peer closed the socket")]
    Closed,
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Reads one frame from a blocking stream into `buf` (reused): its kind;
/// the payload is left in `buf`.
pub fn read_frame(stream: &mut impl Read, buf: &mut Vec<u8>) -> Result<u8, ReadError> {
    let mut prefix = [0u8; 4];
    match stream.read_exact(&mut prefix) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Err(ReadError::Closed),
        Err(err) => return Err(err.into()),
    }
    let len = u32::from_be_bytes(prefix) as usize;
    check_len(len)?;
    buf.clear();
    buf.resize(len, 0);
    stream.read_exact(buf).map_err(|err| {
        if err.kind() == io::ErrorKind::UnexpectedEof {
            ReadError::Closed
        } else {
            err.into()
        }
    })?;
    let kind = buf[0];
    buf.remove(0);
    Ok(kind)
}

fn check_len(len: usize) -> Result<(), FrameError> {
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > MAX_FRAME {
        return Err(FrameError::Oversized(len));
    }
    Ok(())
}

fn encode_body(out: &mut Vec<u8>, kind: u8, data: &[u8]) {
    for chunk in data.chunks(BODY_CHUNK) {
        let start = begin(out, kind);
        out.extend_from_slice(chunk);
        finish(out, start);
    }
}

/// A frame with no payload.
fn empty(out: &mut Vec<u8>, kind: u8) {
    let start = begin(out, kind);
    finish(out, start);
}

fn encode_text(out: &mut Vec<u8>, kind: u8, text: &[u8]) {
    let text = &text[..text.len().min(MAX_FRAME - 1)];
    let start = begin(out, kind);
    out.extend_from_slice(text);
    finish(out, start);
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

struct Cursor<'a> {
    kind: u8,
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn malformed(&self, what: &'static str) -> FrameError {
        FrameError::Malformed {
            kind: self.kind,
            what,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.rest.len() < n {
            return Err(self.malformed("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn bytes(&mut self) -> Result<&'a [u8], FrameError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, FrameError> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.malformed("a string is not UTF-8"))
    }

    fn end(&self) -> Result<(), FrameError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.malformed("trailing bytes"))
        }
    }
}

#[cfg(test)]
#[path = "frames_tests.rs"]
mod tests;
