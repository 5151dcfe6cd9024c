//! The master's frame socket as a worker's [`Link`] (`ppm php-worker`).
//!
//! PHP pulls the request body as it reads it; output is buffered into
//! frames and written when PHP flushes, when the buffer passes
//! [`FLUSH_AT`], when the response ends early, and together with `Ready`,
//! so a small response costs one write.

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;

use super::frames::{
    self, read_frame, Outcome, ReadError, RequestHead, ToMaster, ToWorker, END_EARLY,
};
use super::io::{IoError, Link};

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
        })
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

    fn read(&mut self) -> Result<Option<ToWorker>, IoError> {
        match read_frame(&mut self.reader, &mut self.frame) {
            Ok(kind) => Ok(Some(
                ToWorker::parse(kind, &self.frame).map_err(ReadError::from)?,
            )),
            Err(ReadError::Closed) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }
}

impl Link for FrameLink {
    fn next_request(&mut self, stats: Option<(u64, u64)>) -> Result<Option<RequestHead>, IoError> {
        self.drain_body()?;
        if let Some((memory, peak)) = stats {
            ToMaster::Stats { memory, peak }.encode(&mut self.out);
        }
        ToMaster::Ready.encode(&mut self.out);
        match self.flush() {
            // The master closed between requests: time to stop.
            Err(IoError::Write(err))
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                return Ok(None)
            }
            other => other?,
        }
        let head = match self.read()? {
            None => return Ok(None),
            Some(ToWorker::Head(head)) => head,
            Some(other) => return Err(unexpected("a request head", &other)),
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
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workers::native::frames::split;
    use crate::workers::native::io::WorkerIo;

    fn frames_of(bytes: &[u8]) -> Vec<ToMaster> {
        let mut rest = bytes;
        let mut out = Vec::new();
        while let Some((kind, payload, used)) = split(rest).unwrap() {
            out.push(ToMaster::parse(kind, payload).unwrap());
            rest = &rest[used..];
        }
        out
    }

    fn send(stream: &mut UnixStream, frames: &[ToWorker]) {
        let mut out = Vec::new();
        for f in frames {
            f.encode(&mut out);
        }
        stream.write_all(&out).unwrap();
    }

    fn read_available(stream: &mut UnixStream) -> Vec<u8> {
        use std::io::Read;
        stream.set_nonblocking(true).unwrap();
        let mut all = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        stream.set_nonblocking(false).unwrap();
        all
    }

    #[test]
    fn an_unread_body_is_drained_before_ready() {
        let (ours, mut master) = UnixStream::pair().unwrap();
        let mut io = WorkerIo::new(Box::new(FrameLink::new(ours).unwrap()));
        let head = RequestHead {
            method: "POST".into(),
            target: "/".into(),
            protocol: "HTTP/1.1".into(),
            content_length: Some(6),
            ..RequestHead::default()
        };
        send(
            &mut master,
            &[
                ToWorker::Head(head.clone()),
                ToWorker::Body(b"abc".to_vec()),
                ToWorker::Body(b"def".to_vec()),
                ToWorker::BodyEnd,
                ToWorker::Head(RequestHead {
                    method: "GET".into(),
                    ..head
                }),
                ToWorker::BodyEnd,
            ],
        );
        io.next_request(None).unwrap().unwrap();
        let mut buf = [0u8; 2];
        assert_eq!(io.read_body(&mut buf).unwrap(), 2);
        assert_eq!(&buf, b"ab");
        io.send_head(200, &[b"X-A: b"]).unwrap();
        io.write(b"out").unwrap();
        io.end_response(0, Outcome::Normal).unwrap();
        // The rest of the first body is skipped: the next frame is a head.
        let next = io.next_request(Some((10, 20))).unwrap().unwrap();
        assert_eq!(next.get(next.method), b"GET");
        assert_eq!(io.read_body(&mut buf).unwrap(), 0);
        let got = frames_of(&read_available(&mut master));
        assert_eq!(
            got,
            vec![
                ToMaster::Ready,
                ToMaster::Head {
                    status: 200,
                    lines: vec![b"X-A: b".to_vec()]
                },
                ToMaster::Body(b"out".to_vec()),
                ToMaster::End {
                    flags: 0,
                    outcome: Outcome::Normal
                },
                ToMaster::Stats {
                    memory: 10,
                    peak: 20
                },
                ToMaster::Ready,
            ]
        );
        drop(master);
        assert!(io.next_request(None).unwrap().is_none());
    }

    #[test]
    fn output_after_an_early_end_is_dropped() {
        let (ours, mut master) = UnixStream::pair().unwrap();
        let mut io = WorkerIo::new(Box::new(FrameLink::new(ours).unwrap()));
        send(
            &mut master,
            &[ToWorker::Head(RequestHead::default()), ToWorker::BodyEnd],
        );
        io.next_request(None).unwrap().unwrap();
        io.send_head(200, &[]).unwrap();
        io.end_response(END_EARLY, Outcome::Normal).unwrap();
        io.write(b"late").unwrap();
        io.end_response(0, Outcome::Exception).unwrap();
        io.flush().unwrap();
        let got = frames_of(&read_available(&mut master));
        assert_eq!(
            got,
            vec![
                ToMaster::Ready,
                ToMaster::Head {
                    status: 200,
                    lines: vec![]
                },
                ToMaster::End {
                    flags: END_EARLY,
                    outcome: Outcome::Normal
                },
            ]
        );
    }

    #[test]
    fn a_frame_out_of_order_is_an_error() {
        let (ours, mut master) = UnixStream::pair().unwrap();
        let mut io = WorkerIo::new(Box::new(FrameLink::new(ours).unwrap()));
        send(&mut master, &[ToWorker::BodyEnd]);
        assert!(matches!(
            io.next_request(None),
            Err(IoError::Unexpected { .. })
        ));
    }
}
