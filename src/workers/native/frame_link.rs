//! The master's frame socket as a worker's [`Link`] (`ppm php-worker`).
//!
//! PHP pulls the request body as it reads it; output is buffered into
//! frames and written when PHP flushes, when the buffer passes
//! [`FLUSH_AT`], when the response ends early, and together with `Ready`,
//! so a small response costs one write.
//!
//! With the pool's shared queue (`--queue-fd`), the worker takes requests
//! from it while the master lets it (`Serve` .. `Hold`), and those sent to
//! it alone from its own socket; see `queue.rs`.

use std::io::{BufReader, Cursor, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use super::frames::{
    self, read_frame, split, Outcome, ReadError, RequestHead, ToMaster, ToWorker, END_EARLY,
};
use super::io::{IoError, Link};
use super::queue::{self, QueueEnd};

/// Buffered output past this size is written without waiting for a flush.
pub const FLUSH_AT: usize = 64 << 10;

/// The worker's end of the frame socket.
pub struct FrameLink {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    out: Vec<u8>,
    frame: Vec<u8>,
    body: Vec<u8>,
    body_pos: usize,
    body_done: bool,
    /// The pool's shared request queue, when the master uses one.
    queue: Option<QueueEnd>,
    /// The frames of the queue message being served, read before the
    /// socket's.
    queued: Cursor<Vec<u8>>,
    /// What the master last said: take from the queue (`Serve`) or not
    /// (`Hold`); applied between requests.
    serve: bool,
    /// A `Hold` came: `Held` is owed once no request runs.
    held_owed: bool,
}

impl FrameLink {
    /// Wraps the worker's end of the socket.
    pub fn new(stream: UnixStream) -> std::io::Result<FrameLink> {
        Ok(FrameLink {
            reader: BufReader::with_capacity(64 << 10, stream.try_clone()?),
            writer: stream,
            out: Vec::with_capacity(FLUSH_AT),
            frame: Vec::new(),
            body: Vec::new(),
            body_pos: 0,
            body_done: true,
            queue: None,
            queued: Cursor::new(Vec::new()),
            serve: false,
            held_owed: false,
        })
    }

    /// Takes requests from the pool's shared queue too, once told to.
    pub fn with_queue(mut self, queue: OwnedFd) -> std::io::Result<FrameLink> {
        self.queue = Some(QueueEnd::new(
            queue,
            std::os::fd::AsFd::as_fd(&self.writer),
        )?);
        Ok(self)
    }

    /// Writes what is buffered between requests; false when the master
    /// closed its end: time to stop.
    fn flush_between(&mut self) -> Result<bool, IoError> {
        match self.flush() {
            Err(IoError::Write(err))
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                Ok(false)
            }
            other => other.map(|()| true),
        }
    }

    /// The next request head: from the worker's own socket, or (when the
    /// master lets it) from the shared queue, whichever has one first.
    fn next_head(&mut self) -> Result<Option<RequestHead>, IoError> {
        loop {
            if let Some(queue) = &mut self.queue {
                queue.serve(self.serve).map_err(ReadError::from)?;
            }
            if std::mem::take(&mut self.held_owed) {
                ToMaster::Held.encode(&mut self.out);
            }
            let own = match &self.queue {
                // Without a queue there is only the own socket to wait on.
                None => true,
                Some(_) => {
                    !self.reader.buffer().is_empty()
                        || queue::has_input(&self.writer).map_err(ReadError::from)?
                }
            };
            if own {
                if !self.flush_between()? {
                    return Ok(None);
                }
                // One frame at a time: after a `Serve` the queue may have
                // the next request.
                match self.read_one()? {
                    None => return Ok(None),
                    Some(ToWorker::Head(head)) => return Ok(Some(head)),
                    Some(ToWorker::Serve | ToWorker::Hold) => continue,
                    Some(other) => return Err(unexpected("a request head", &other)),
                }
            }
            if let Some(head) = self.take_queued()? {
                return Ok(Some(head));
            }
            if !self.flush_between()? {
                return Ok(None);
            }
            if let Some(queue) = &self.queue {
                queue.wait().map_err(ReadError::from)?;
            }
        }
    }

    /// A request from the queue, if one waits and the worker serves it:
    /// `Took` goes to the master at once (it times and routes the
    /// request from there), `Expired` instead when its deadline passed.
    fn take_queued(&mut self) -> Result<Option<RequestHead>, IoError> {
        let Some(queue) = self.queue.as_mut().filter(|q| q.serving()) else {
            return Ok(None);
        };
        let Some(message) = queue.try_take().map_err(ReadError::from)? else {
            return Ok(None);
        };
        let (kind, payload, used) =
            split(message)?.ok_or_else(|| IoError::from(frames::FrameError::Empty))?;
        let (id, deadline_ns) = match ToWorker::parse(kind, payload)? {
            ToWorker::Dispatch { id, deadline_ns } => (id, deadline_ns),
            other => return Err(unexpected("a dispatch", &other)),
        };
        if deadline_ns != 0 && queue::monotonic_ns() > deadline_ns {
            ToMaster::Expired(id).encode(&mut self.out);
            return Ok(None);
        }
        self.queued = Cursor::new(message[used..].to_vec());
        ToMaster::Took(id).encode(&mut self.out);
        self.flush()?;
        match self.read()? {
            Some(ToWorker::Head(head)) => Ok(Some(head)),
            None => Err(ReadError::Closed.into()),
            Some(other) => Err(unexpected("a request head", &other)),
        }
    }

    /// What PHP did not read is read and dropped, so the next request's
    /// frames start where they should.
    fn drain_body(&mut self) -> Result<(), IoError> {
        while !self.body_done {
            self.body_pos = self.body.len();
            let mut sink = [0u8; 0];
            self.read_body(&mut sink)?;
        }
        Ok(())
    }

    /// The next frame for the request: from the queue message being
    /// served, then from the socket. `Serve` and `Hold`, which may come
    /// at any time, are noted and skipped.
    fn read(&mut self) -> Result<Option<ToWorker>, IoError> {
        loop {
            match self.read_one()? {
                Some(ToWorker::Serve | ToWorker::Hold) => {}
                other => return Ok(other),
            }
        }
    }

    /// The next frame, `Serve` and `Hold` noted but returned too.
    fn read_one(&mut self) -> Result<Option<ToWorker>, IoError> {
        let queued = (self.queued.position() as usize) < self.queued.get_ref().len();
        let kind = if queued {
            read_frame(&mut self.queued, &mut self.frame)
        } else {
            read_frame(&mut self.reader, &mut self.frame)
        };
        let frame = match kind {
            Ok(kind) => ToWorker::parse(kind, &self.frame).map_err(ReadError::from)?,
            Err(ReadError::Closed) => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        match frame {
            ToWorker::Serve => self.serve = true,
            ToWorker::Hold => {
                self.serve = false;
                self.held_owed = true;
            }
            _ => {}
        }
        Ok(Some(frame))
    }
}

impl Link for FrameLink {
    fn next_request(&mut self, stats: Option<(u64, u64)>) -> Result<Option<RequestHead>, IoError> {
        self.drain_body()?;
        if let Some((memory, peak)) = stats {
            ToMaster::Stats { memory, peak }.encode(&mut self.out);
        }
        ToMaster::Ready.encode(&mut self.out);
        let Some(head) = self.next_head()? else {
            return Ok(None);
        };
        self.body.clear();
        self.body_pos = 0;
        self.body_done = false;
        Ok(Some(head))
    }

    fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, IoError> {
        while self.body_pos == self.body.len() {
            if self.body_done {
                return Ok(0);
            }
            match self.read()? {
                Some(ToWorker::Body(chunk)) => {
                    self.body = chunk;
                    self.body_pos = 0;
                }
                Some(ToWorker::BodyEnd) => self.body_done = true,
                None => return Err(ReadError::Closed.into()),
                Some(other) => return Err(unexpected("a body chunk", &other)),
            }
        }
        let n = buf.len().min(self.body.len() - self.body_pos);
        buf[..n].copy_from_slice(&self.body[self.body_pos..self.body_pos + n]);
        self.body_pos += n;
        Ok(n)
    }

    fn write(&mut self, data: &[u8]) -> Result<(), IoError> {
        frames::encode_response_body(&mut self.out, data);
        if self.out.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    fn send_head(&mut self, status: u16, lines: &[&[u8]]) -> Result<(), IoError> {
        frames::encode_response_head(&mut self.out, status, lines);
        Ok(())
    }

    fn end(&mut self, flags: u8, outcome: Outcome) -> Result<(), IoError> {
        ToMaster::End { flags, outcome }.encode(&mut self.out);
        if flags & END_EARLY != 0 {
            self.flush()?;
        }
        Ok(())
    }

    fn log(&mut self, line: &str) {
        ToMaster::Log(line.to_string()).encode(&mut self.out);
    }

    fn backtrace(&mut self, trace: &str) -> Result<(), IoError> {
        ToMaster::Backtrace(trace.to_string()).encode(&mut self.out);
        self.flush()
    }

    fn boot_error(&mut self, message: &str) -> Result<(), IoError> {
        ToMaster::BootError(message.to_string()).encode(&mut self.out);
        self.flush()
    }

    fn included(&mut self, files: Vec<String>) {
        ToMaster::Included(files).encode(&mut self.out);
    }

    fn php_info(&mut self, memory_limit: &str) {
        ToMaster::PhpInfo {
            memory_limit: memory_limit.to_string(),
        }
        .encode(&mut self.out);
    }

    fn script_ended(&mut self) -> Result<(), IoError> {
        self.flush()
    }

    fn php_flush(&mut self) -> Result<(), IoError> {
        ToMaster::Flush.encode(&mut self.out);
        self.flush()
    }

    fn flush(&mut self) -> Result<(), IoError> {
        if !self.out.is_empty() {
            self.writer.write_all(&self.out).map_err(IoError::Write)?;
            self.out.clear();
        }
        Ok(())
    }
}

fn unexpected(expected: &'static str, got: &ToWorker) -> IoError {
    IoError::Unexpected {
        expected,
        got: match got {
            ToWorker::Head(_) => "a request head",
            ToWorker::Body(_) => "a body chunk",
            ToWorker::BodyEnd => "a body end",
            ToWorker::Serve => "serve",
            ToWorker::Hold => "hold",
            ToWorker::Dispatch { .. } => "a dispatch",
        },
    }
}

#[cfg(test)]
#[path = "frame_link_tests.rs"]
mod tests;
