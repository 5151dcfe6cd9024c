//! The worker's end of the frame socket, used from PHP's thread only.
//!
//! The SAPI's callbacks (`ffi`) land here: reading the request body as
//! PHP pulls it, buffering PHP's output into frames, and saying ready.
//! Output is written when PHP flushes, when the buffer passes
//! [`FLUSH_AT`], when the response ends early, and together with `Ready`,
//! so a small response costs one write.

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;

use super::frames::{
    self, read_frame, Outcome, ReadError, RequestHead, ToMaster, ToWorker, END_EARLY,
};
use super::request::{prepare, prepare_params, Prepared, Script};
use super::script::{DocRoot, Refusal};

/// Buffered output past this size is written without waiting for a flush.
const FLUSH_AT: usize = 64 << 10;

/// Why the worker cannot go on: the master is gone or talks nonsense.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("frame socket: {0}")]
    Read(#[from] ReadError),
    #[error("frame socket: writing: {0}")]
    Write(#[source] std::io::Error),
    #[error("frame socket: expected {expected}, got {got}")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
}

/// The state of the worker's connection to its master.
pub struct WorkerIo {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    out: Vec<u8>,
    frame: Vec<u8>,
    script: Script,
    /// The request PHP is handling (kept until the next one: C holds
    /// pointers into it).
    current: Option<Prepared>,
    body: Vec<u8>,
    body_pos: usize,
    body_done: bool,
    in_request: bool,
    ended: bool,
    /// Debug mode: report loaded files.
    report_included: bool,
    /// Loaded files not reported yet.
    included: Vec<String>,
    /// `--bridge=script`: each request names the script it runs.
    classic: Option<DocRoot>,
}

impl WorkerIo {
    /// Wraps the worker's end of the socket.
    pub fn new(stream: UnixStream) -> std::io::Result<WorkerIo> {
        Ok(WorkerIo {
            reader: BufReader::with_capacity(64 << 10, stream.try_clone()?),
            writer: stream,
            out: Vec::with_capacity(FLUSH_AT),
            frame: Vec::new(),
            script: Script::default(),
            current: None,
            body: Vec::new(),
            body_pos: 0,
            body_done: true,
            in_request: false,
            ended: true,
            report_included: false,
            included: Vec::new(),
            classic: None,
        })
    }

    /// `--bridge=script`: requests run the scripts under `root`; the
    /// ones that name none are answered here.
    pub fn run_scripts(&mut self, root: DocRoot) {
        self.classic = Some(root);
    }

    /// Debug mode: the files PHP loaded are reported to the master.
    pub fn report_included(&mut self, on: bool) {
        self.report_included = on;
    }

    /// A file PHP loaded, reported with the next `Ready` in debug mode.
    pub fn included(&mut self, path: &str) {
        if self.report_included {
            self.included.push(path.to_string());
        }
    }

    /// PHP's `memory_limit` after the bootstrap, for the master.
    pub fn php_info(&mut self, memory_limit: &str) {
        ToMaster::PhpInfo {
            memory_limit: memory_limit.to_string(),
        }
        .encode(&mut self.out);
    }

    /// Document root and script name, from the bootstrap.
    pub fn set_script(&mut self, script: Script) {
        self.script = script;
    }

    /// Finishes the last request (drains its unread body), says ready, and
    /// waits for the next request; `None` when the master closed. With
    /// `--bridge=script`, a request that runs no script is answered here
    /// and the wait goes on.
    pub fn next_request(
        &mut self,
        mut stats: Option<(u64, u64)>,
    ) -> Result<Option<&Prepared>, IoError> {
        loop {
            self.drain_body()?;
            self.in_request = false;
            if !self.included.is_empty() {
                ToMaster::Included(std::mem::take(&mut self.included)).encode(&mut self.out);
            }
            if let Some((memory, peak)) = stats.take() {
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
            let prepared = match &self.classic {
                None => match &head.params {
                    Some(params) => Ok(prepare_params(&head, params)),
                    None => Ok(prepare(&head, &self.script)),
                },
                Some(root) => classic_request(root, &head),
            };
            self.body.clear();
            self.body_pos = 0;
            self.body_done = false;
            self.in_request = true;
            self.ended = false;
            match prepared {
                Ok(prepared) => return Ok(Some(self.current.insert(prepared))),
                Err(refusal) => self.refuse(&refusal)?,
            }
        }
    }

    /// Answers a request that runs no script, as php-fpm words it.
    fn refuse(&mut self, refusal: &Refusal) -> Result<(), IoError> {
        let mut lines: Vec<Vec<u8>> = vec![b"Content-type: text/html; charset=UTF-8".to_vec()];
        if let Some(location) = &refusal.location {
            lines.push(format!("Location: {location}").into_bytes());
        }
        let views: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        self.send_head(refusal.status, &views);
        self.write(refusal.body.as_bytes())?;
        self.end_response(0, Outcome::Normal)
    }

    /// Copies body bytes into `buf`; 0 at the body's end.
    pub fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, IoError> {
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

    /// PHP's output for the current response; dropped once it ended, and
    /// logged when it comes outside a request (e.g. during the bootstrap).
    pub fn write(&mut self, data: &[u8]) -> Result<(), IoError> {
        if !self.in_request {
            let text = String::from_utf8_lossy(data);
            let text = text.trim_end();
            if !text.is_empty() {
                self.log(&format!("output outside a request: {text}"));
            }
            return Ok(());
        }
        if self.ended || data.is_empty() {
            return Ok(());
        }
        frames::encode_response_body(&mut self.out, data);
        if self.out.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    /// The response head.
    pub fn send_head(&mut self, status: u16, lines: &[&[u8]]) {
        if self.in_request && !self.ended {
            frames::encode_response_head(&mut self.out, status, lines);
        }
    }

    /// Ends the response (once); early ends are written at once.
    pub fn end_response(&mut self, flags: u8, outcome: Outcome) -> Result<(), IoError> {
        if !self.in_request || self.ended {
            return Ok(());
        }
        self.ended = true;
        ToMaster::End { flags, outcome }.encode(&mut self.out);
        if flags & END_EARLY != 0 {
            self.flush()?;
        }
        Ok(())
    }

    /// A log line for the master.
    pub fn log(&mut self, line: &str) {
        ToMaster::Log(line.to_string()).encode(&mut self.out);
    }

    /// The PHP backtrace the master asked for (SIGUSR1); written at once.
    pub fn backtrace(&mut self, trace: &str) -> Result<(), IoError> {
        ToMaster::Backtrace(trace.to_string()).encode(&mut self.out);
        self.flush()
    }

    /// The bootstrap failed; written at once.
    pub fn boot_error(&mut self, message: &str) -> Result<(), IoError> {
        ToMaster::BootError(message.to_string()).encode(&mut self.out);
        self.flush()
    }

    /// The worker script ended and starts again: the response it left is
    /// written before the new bootstrap.
    pub fn script_ended(&mut self, outcome: Outcome) -> Result<(), IoError> {
        self.log(&format!(
            "the worker script restarts after {}",
            outcome.as_str()
        ));
        self.in_request = false;
        self.flush()
    }

    /// Writes what is buffered.
    pub fn flush(&mut self) -> Result<(), IoError> {
        if !self.out.is_empty() {
            self.writer.write_all(&self.out).map_err(IoError::Write)?;
            self.out.clear();
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

/// The script a request runs under `--bridge=script`, and its `$_SERVER`.
fn classic_request(root: &DocRoot, head: &RequestHead) -> Result<Prepared, Refusal> {
    if let Some(params) = &head.params {
        let filename = params
            .iter()
            .rev()
            .find(|(n, _)| n.as_slice() == b"SCRIPT_FILENAME")
            .map_or(&[][..], |(_, v)| v.as_slice());
        root.check_filename(filename)?;
        return Ok(prepare_params(head, params));
    }
    let target = root.resolve(&head.method, &head.target)?;
    let script = Script {
        document_root: root.path().to_string_lossy().into_owned(),
        script_name: target.script_name,
        path_info: Some(target.path_info),
    };
    Ok(prepare(head, &script))
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
    use crate::native::frames::split;

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
        let mut io = WorkerIo::new(ours).unwrap();
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
        io.send_head(200, &[b"X-A: b"]);
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
        let mut io = WorkerIo::new(ours).unwrap();
        send(
            &mut master,
            &[ToWorker::Head(RequestHead::default()), ToWorker::BodyEnd],
        );
        io.next_request(None).unwrap().unwrap();
        io.send_head(200, &[]);
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
        let mut io = WorkerIo::new(ours).unwrap();
        send(&mut master, &[ToWorker::BodyEnd]);
        assert!(matches!(
            io.next_request(None),
            Err(IoError::Unexpected { .. })
        ));
    }
}
