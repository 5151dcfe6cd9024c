//! `ppm php-worker` driven over its frame socket directly, the way a
//! master drives it: the frames of a request, and the worker's death when
//! the master's end of the socket closes, even in the middle of a request.

mod common;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ppm::workers::native::frames::{read_frame, Outcome, RequestHead, ToMaster, ToWorker};

struct Worker {
    child: Child,
    socket: Option<UnixStream>,
    buf: Vec<u8>,
}

impl Worker {
    fn spawn() -> Worker {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(PPM);
        cmd.args([
            "php-worker",
            "--fd",
            "3",
            "--bridge",
            "callable",
            "--bootstrap",
            "app.php",
        ])
        .arg(fixture("native"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only dup2 between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::dup2(fd, 3)?;
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(theirs);
        ours.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Worker {
            child,
            socket: Some(ours),
            buf: Vec::new(),
        }
    }

    fn next(&mut self) -> ToMaster {
        let socket = self.socket.as_mut().unwrap();
        let kind = read_frame(socket, &mut self.buf).expect("a frame from the worker");
        ToMaster::parse(kind, &self.buf).unwrap()
    }

    /// The next frame that is not a log line or a boot fact (PHP's
    /// settings, the files loaded).
    fn next_quiet(&mut self) -> ToMaster {
        loop {
            match self.next() {
                ToMaster::Log(_) | ToMaster::PhpInfo { .. } | ToMaster::Included(_) => continue,
                frame => return frame,
            }
        }
    }

    fn send(&mut self, frames: &[ToWorker]) {
        let mut out = Vec::new();
        for frame in frames {
            frame.encode(&mut out);
        }
        self.socket.as_mut().unwrap().write_all(&out).unwrap();
    }

    fn get(&mut self, target: &str) {
        self.send(&[
            ToWorker::Head(RequestHead {
                method: "GET".into(),
                target: target.into(),
                protocol: "HTTP/1.1".into(),
                remote_addr: "127.0.0.1".into(),
                remote_port: 5000,
                server_addr: "127.0.0.1".into(),
                server_port: 80,
                headers: vec![("Host".into(), b"frames.test".to_vec())],
                ..RequestHead::default()
            }),
            ToWorker::BodyEnd,
        ]);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_request_is_answered_with_head_body_end_then_stats_and_ready() {
    let mut worker = Worker::spawn();
    let boot = loop {
        match worker.next() {
            ToMaster::Log(_) => continue,
            frame => break frame,
        }
    };
    // PHP's memory_limit (php.ini's default here) before the first Ready.
    assert_eq!(
        boot,
        ToMaster::PhpInfo {
            memory_limit: "128M".into()
        }
    );
    assert_eq!(worker.next_quiet(), ToMaster::Ready, "ready once booted");
    worker.get("/");
    match worker.next_quiet() {
        ToMaster::Head { status, lines } => {
            assert_eq!(status, 200);
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with(b"Content-type: text/html")),
                "{lines:?}"
            );
        }
        other => panic!("expected a head, got {other:?}"),
    }
    assert_eq!(worker.next_quiet(), ToMaster::Body(b"hello".to_vec()));
    assert_eq!(
        worker.next_quiet(),
        ToMaster::End {
            flags: 0,
            outcome: Outcome::Normal
        }
    );
    assert!(
        matches!(worker.next_quiet(), ToMaster::Stats { memory, peak } if memory > 0 && peak >= memory)
    );
    assert_eq!(worker.next_quiet(), ToMaster::Ready);

    // exit(): the response end says so, and the worker is ready again
    // after restarting its script.
    worker.get("/exit");
    let mut end = None;
    while end.is_none() {
        if let ToMaster::End { outcome, .. } = worker.next_quiet() {
            end = Some(outcome);
        }
    }
    assert_eq!(end, Some(Outcome::Exit));
    assert_eq!(worker.next_quiet(), ToMaster::Ready);
}

#[test]
fn the_worker_exits_when_the_master_end_closes_mid_request() {
    let mut worker = Worker::spawn();
    assert_eq!(worker.next_quiet(), ToMaster::Ready);
    worker.get("/sleep?ms=20000");
    let pid = worker.child.id();
    let in_php = wait_until(Duration::from_secs(10), || sleeping(pid).then_some(()));
    assert!(in_php.is_some(), "the worker runs the request's usleep()");
    assert!(worker.child.try_wait().unwrap().is_none(), "busy, alive");
    let closed = Instant::now();
    worker.socket.take();
    let exited = wait_until(Duration::from_secs(5), || {
        worker.child.try_wait().ok().flatten()
    });
    assert!(exited.is_some(), "the worker outlived its master's socket");
    assert!(closed.elapsed() < Duration::from_secs(5));
}

#[test]
fn the_worker_exits_when_the_master_end_closes_while_idle() {
    let mut worker = Worker::spawn();
    assert_eq!(worker.next_quiet(), ToMaster::Ready);
    worker.socket.take();
    let exited = wait_until(Duration::from_secs(5), || {
        worker.child.try_wait().ok().flatten()
    });
    assert!(exited.is_some(), "the worker outlived its master's socket");
}

#[test]
fn sigusr1_gets_the_php_backtrace_of_the_running_request() {
    let mut worker = Worker::spawn();
    assert_eq!(worker.next_quiet(), ToMaster::Ready);
    let pid = worker.child.id();
    let idle_ticks = cpu_ticks(pid);
    worker.get("/spin?ms=3000");
    // Until it has spun for 200 ms of CPU: PHP is in the request's loop.
    let spinning = wait_until(Duration::from_secs(10), || {
        (cpu_ticks(pid) >= idle_ticks + 20).then_some(())
    });
    assert!(spinning.is_some(), "the worker spins in the request");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker.child.id() as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    let trace = loop {
        match worker.next_quiet() {
            ToMaster::Backtrace(trace) => break trace,
            ToMaster::End { .. } => panic!("the request ended without a backtrace"),
            _ => {}
        }
    };
    assert!(trace.contains("fixtures/native/app.php on line"), "{trace}");
    assert!(trace.contains("ppm_handle_request()"), "{trace}");
    // The request goes on and ends normally.
    loop {
        if let ToMaster::End { outcome, .. } = worker.next_quiet() {
            assert_eq!(outcome, Outcome::Normal);
            break;
        }
    }
}

#[test]
fn zend_memory_stays_flat_over_many_requests() {
    let mut worker = Worker::spawn();
    assert_eq!(worker.next_quiet(), ToMaster::Ready);
    let mut memory_at = Vec::new();
    for i in 0..1500 {
        // A form POST (php://input's temp stream, $_POST, the filter
        // extension's copies) with a cookie and a query string.
        let body = format!("a={i}&b[]=x&c=%C3%A9");
        worker.send(&[
            ToWorker::Head(RequestHead {
                method: "POST".into(),
                target: format!("/input?q={i}").into(),
                protocol: "HTTP/1.1".into(),
                content_length: Some(body.len() as u64),
                headers: vec![
                    (
                        "Content-Type".into(),
                        b"application/x-www-form-urlencoded".to_vec(),
                    ),
                    ("Cookie".into(), format!("s={i}; t=2").into_bytes()),
                ],
                ..RequestHead::default()
            }),
            ToWorker::Body(body.into_bytes()),
            ToWorker::BodyEnd,
        ]);
        loop {
            match worker.next_quiet() {
                ToMaster::Stats { memory, .. } => memory_at.push(memory),
                ToMaster::Ready => break,
                _ => {}
            }
        }
    }
    let (early, late) = (memory_at[200], memory_at[memory_at.len() - 1]);
    assert!(
        late <= early + 4096,
        "Zend memory grew from {early} to {late} bytes between request 200 and 1500"
    );
}
