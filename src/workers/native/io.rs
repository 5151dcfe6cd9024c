//! The worker's request source and response sink, used from PHP's thread
//! only.
//!
//! The SAPI's callbacks (`ffi`) land in [`WorkerIo`], which holds what is
//! the same wherever requests come from: the request PHP is handling (C
//! holds pointers into it), whether a response may still be written, and
//! what happens to output outside a request. Where requests come from and
//! responses go is a [`Link`]:
//!
//! - [`FrameLink`](super::frame_link::FrameLink): the master's frame
//!   socket (`ppm php-worker`);
//! - [`HttpLink`](super::http_link::HttpLink): HTTP clients served on
//!   PHP's own thread (`ppm worker --listen`), with no
//!   hop to another thread per request.

use super::frames::{FrameError, Outcome, ReadError, RequestHead, END_EARLY};
use super::request::{prepare, Prepared, Script};
use super::script::{DocRoot, Refusal};

/// Why the worker cannot go on: the master is gone, talks nonsense, or
/// the HTTP front failed.
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
    #[error("HTTP front: {0}")]
    Http(#[source] std::io::Error),
}

impl From<FrameError> for IoError {
    fn from(err: FrameError) -> IoError {
        IoError::Read(ReadError::Frame(err))
    }
}

/// Where a worker's requests come from and its responses go. The calls
/// of one request come in this order: [`next_request`](Link::next_request),
/// any [`read_body`](Link::read_body), [`send_head`](Link::send_head) once
/// before any [`write`](Link::write), one [`end`](Link::end); then the
/// next `next_request`. [`WorkerIo`] keeps to that order, and drops
/// output that comes after the end.
pub trait Link {
    /// Finishes the previous exchange (its unread body is dropped), says
    /// ready (with that request's memory figures), and waits for the
    /// next request; `None` when the worker is to stop.
    fn next_request(&mut self, stats: Option<(u64, u64)>) -> Result<Option<RequestHead>, IoError>;
    /// Copies body bytes into `buf`; 0 at the body's end.
    fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, IoError>;
    /// The response head: status and PHP's header lines.
    fn send_head(&mut self, status: u16, lines: &[&[u8]]) -> Result<(), IoError>;
    /// Response body bytes (not empty).
    fn write(&mut self, data: &[u8]) -> Result<(), IoError>;
    /// Sends what is buffered.
    fn flush(&mut self) -> Result<(), IoError>;
    /// PHP flushed during a response: what it wrote so far goes out now.
    /// A master is told too, so that it streams the response from here on
    /// instead of buffering it.
    fn php_flush(&mut self) -> Result<(), IoError> {
        self.flush()
    }
    /// The response is complete; with [`END_EARLY`] in `flags` it goes out
    /// now, before the work after `fastcgi_finish_request()`.
    fn end(&mut self, flags: u8, outcome: Outcome) -> Result<(), IoError>;
    /// A log line.
    fn log(&mut self, line: &str);
    /// The PHP backtrace asked for with SIGUSR1.
    fn backtrace(&mut self, trace: &str) -> Result<(), IoError>;
    /// The bootstrap failed.
    fn boot_error(&mut self, message: &str) -> Result<(), IoError>;
    /// The worker script ended and starts again; what it left is sent.
    fn script_ended(&mut self) -> Result<(), IoError>;
    /// Debug mode: files PHP loaded since the last report, for the
    /// master's reloads (sent with the next ready). Without a master,
    /// nobody is told.
    fn included(&mut self, _files: Vec<String>) {}
    /// PHP's `memory_limit` after the bootstrap, for the master's limit
    /// checks. Without a master, nobody is told.
    fn php_info(&mut self, _memory_limit: &str) {}
}

/// The worker's requests and responses, on top of its [`Link`].
pub struct WorkerIo {
    link: Box<dyn Link>,
    script: Script,
    /// The request PHP is handling (kept until the next one: C holds
    /// pointers into it).
    current: Option<Prepared>,
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
    /// Requests from `link`.
    pub fn new(link: Box<dyn Link>) -> WorkerIo {
        WorkerIo {
            link,
            script: Script::default(),
            current: None,
            in_request: false,
            ended: true,
            report_included: false,
            included: Vec::new(),
            classic: None,
        }
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
        self.link.php_info(memory_limit);
    }

    /// Document root and script name, from the bootstrap.
    pub fn set_script(&mut self, script: Script) {
        self.script = script;
    }

    /// Finishes the last request, says ready, and waits for the next
    /// request; `None` when the worker is to stop. With `--bridge=script`,
    /// a request that runs no script is answered here and the wait goes
    /// on.
    pub fn next_request(
        &mut self,
        mut stats: Option<(u64, u64)>,
    ) -> Result<Option<&Prepared>, IoError> {
        loop {
            self.in_request = false;
            if !self.included.is_empty() {
                self.link.included(std::mem::take(&mut self.included));
            }
            let Some(head) = self.link.next_request(stats.take())? else {
                return Ok(None);
            };
            self.in_request = true;
            self.ended = false;
            let prepared = match &self.classic {
                None => Ok(prepare(&head, &self.script)),
                Some(root) => classic_request(root, &head),
            };
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
            let mut line = b"Location: ".to_vec();
            line.extend_from_slice(location);
            lines.push(line);
        }
        let views: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        self.send_head(refusal.status, &views)?;
        self.write(refusal.body.as_bytes())?;
        self.end_response(0, Outcome::Normal)
    }

    /// Copies body bytes into `buf`; 0 at the body's end.
    pub fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, IoError> {
        if !self.in_request {
            return Ok(0);
        }
        self.link.read_body(buf)
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
        self.link.write(data)
    }

    /// The response head.
    pub fn send_head(&mut self, status: u16, lines: &[&[u8]]) -> Result<(), IoError> {
        if self.in_request && !self.ended {
            self.link.send_head(status, lines)?;
        }
        Ok(())
    }

    /// Ends the response (once).
    pub fn end_response(&mut self, flags: u8, outcome: Outcome) -> Result<(), IoError> {
        if !self.in_request || self.ended {
            return Ok(());
        }
        self.ended = true;
        self.link.end(flags & END_EARLY, outcome)
    }

    /// A log line.
    pub fn log(&mut self, line: &str) {
        self.link.log(line);
    }

    /// The PHP backtrace the master asked for (SIGUSR1).
    pub fn backtrace(&mut self, trace: &str) -> Result<(), IoError> {
        self.link.backtrace(trace)
    }

    /// The bootstrap failed.
    pub fn boot_error(&mut self, message: &str) -> Result<(), IoError> {
        self.link.boot_error(message)
    }

    /// The worker script ended and starts again: the response it left is
    /// sent before the new bootstrap.
    pub fn script_ended(&mut self, outcome: Outcome) -> Result<(), IoError> {
        self.log(&format!(
            "the worker script restarts after {}",
            outcome.as_str()
        ));
        self.in_request = false;
        self.link.script_ended()
    }

    /// PHP flushed (`flush()`): the output so far goes out at once, and
    /// through a master the response streams from here on.
    pub fn php_flush(&mut self) -> Result<(), IoError> {
        if self.in_request && !self.ended {
            self.link.php_flush()
        } else {
            self.link.flush()
        }
    }

    /// Sends what is buffered.
    pub fn flush(&mut self) -> Result<(), IoError> {
        self.link.flush()
    }
}

/// The script a request runs under `--bridge=script`, and its `$_SERVER`:
/// a FastCGI request names it in `SCRIPT_FILENAME`, an HTTP one in its
/// path.
fn classic_request(root: &DocRoot, head: &RequestHead) -> Result<Prepared, Refusal> {
    if !head.cgi.is_empty() {
        let filename = head
            .cgi
            .iter()
            .rev()
            .find(|(n, _)| n.as_slice() == b"SCRIPT_FILENAME")
            .map_or(&[][..], |(_, v)| v.as_slice());
        root.check_filename(filename)?;
        return Ok(prepare(head, &Script::default()));
    }
    let target = root.resolve(&head.method, &head.target)?;
    let script = Script {
        document_root: root.path().to_string_lossy().into_owned(),
        script_name: target.script_name,
        path_info: Some(target.path_info),
    };
    Ok(prepare(head, &script))
}
