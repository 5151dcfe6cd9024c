//! ppm under systemd: readiness notifications on a `NOTIFY_SOCKET` the test
//! listens on (as a `Type=notify` unit would have), and listening sockets
//! passed the socket-activation way (`LISTEN_FDS`, `LISTEN_PID`, fds 3…),
//! including a second ppm taking over the same sockets, which is how the
//! ppm binary is replaced without refusing a connection.

mod common;
mod deploy;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use deploy::*;
use nix::sys::signal::Signal;

/// A `ppm start` this test spawned itself (with its own environment or
/// descriptors), torn down with its workers.
struct Master {
    proc: Proc,
    control_port: u16,
    workers_seen: Vec<u32>,
}

impl Master {
    fn spawn(command: &mut Command, control_port: u16, log: &Path) -> Master {
        command.env("PPM_LOG", "info");
        Master {
            proc: Proc::spawn("ppm", command, log),
            control_port,
            workers_seen: Vec::new(),
        }
    }

    fn status(&mut self) -> Option<serde_json::Value> {
        let status = get_status(self.control_port, None)?;
        note_worker_pids(&status, &mut self.workers_seen);
        Some(status)
    }

    /// Ready and busy workers, from /status.
    fn serving(&mut self) -> Option<u64> {
        serving_in(&self.status()?)
    }

    fn wait_ready(&mut self, workers: u64) {
        let ready = wait_until(Duration::from_secs(30), || {
            (self.serving()? == workers).then_some(())
        });
        assert!(
            ready.is_some(),
            "ppm came up; log:\n{}",
            self.proc.log_text()
        );
    }

    /// SIGTERM, then: exits 0 within the bound, no worker left.
    fn terminate(mut self) {
        self.status();
        signal_pid(self.proc.pid(), Signal::SIGTERM);
        let exited = self.proc.wait_exit(Duration::from_secs(40));
        assert!(
            exited.is_some_and(|s| s.success()),
            "ppm exited 0 on SIGTERM ({exited:?}); log:\n{}",
            self.proc.log_text()
        );
        self.assert_no_workers_left();
    }

    fn assert_no_workers_left(&self) {
        assert_workers_gone(&self.workers_seen, Duration::from_secs(15), || {
            self.proc.log_text()
        });
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if self.proc.exited().is_none() {
            signal_pid(self.proc.pid(), Signal::SIGTERM);
            let _ = self.proc.wait_exit(Duration::from_secs(15));
        }
        kill_all(&self.workers_seen);
    }
}

/// `ppm start` of the `app` directory on `control_port`, `port`.
fn start_command(app: &Path, workers: u16, control_port: u16, port: u16) -> Command {
    let mut command = Command::new(PPM);
    command
        .arg("start")
        .arg(app)
        .args(["--bridge", "callable", "--bootstrap", "app.php"])
        .args(["--workers", &workers.to_string()])
        .args(["--port", &port.to_string()])
        .args(["--control-port", &control_port.to_string()]);
    command
}

/// The next notification, within `timeout`.
fn next_notification(socket: &UnixDatagram, timeout: Duration) -> Option<String> {
    socket.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).to_string())
}

fn monotonic_usec() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000
}

#[test]
fn notify_socket_hears_ready_reloading_and_stopping_at_the_right_moments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let base = free_ports(6);
    let app = fixture_copy("versioned");
    let mut master = Master::spawn(
        start_command(app.path(), 4, base, base + 1).env("NOTIFY_SOCKET", &path),
        base,
        &dir.path().join("ppm.log"),
    );

    // READY=1 is the first word, once every worker is ready.
    let first = next_notification(&socket, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no notification; log:\n{}", master.proc.log_text()));
    assert!(first.lines().any(|l| l == "READY=1"), "{first:?}");
    assert!(first.lines().any(|l| l.starts_with("STATUS=")), "{first:?}");
    assert_eq!(
        master.serving(),
        Some(4),
        "all 4 workers were ready when READY=1 was sent"
    );

    // A rolling restart: RELOADING=1 with the monotonic timestamp systemd
    // wants, then READY=1 once every slot has its new worker.
    let port = base.to_string();
    let restart = std::thread::spawn(move || run_ppm(&["restart", &port], Duration::from_secs(90)));
    let reloading = next_notification(&socket, Duration::from_secs(30)).expect("RELOADING=1");
    let now = monotonic_usec();
    assert!(
        reloading.lines().any(|l| l == "RELOADING=1"),
        "{reloading:?}"
    );
    let stamp: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("MONOTONIC_USEC in {reloading:?}"));
    assert!(
        stamp <= now && now - stamp < 30_000_000,
        "MONOTONIC_USEC={stamp} is CLOCK_MONOTONIC of the moment (now {now})"
    );
    let ready = next_notification(&socket, Duration::from_secs(60)).expect("READY=1 again");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    let status = master.status().unwrap();
    assert_eq!(
        status["restart"]["done"].as_array().map(Vec::len),
        Some(4),
        "READY=1 came after every slot was replaced: {}",
        status["restart"]
    );
    let (code, out, err) = restart.join().unwrap();
    assert_eq!(code, 0, "ppm restart: {out}{err}");

    // ppm stop: STOPPING=1, then the master exits 0.
    let (code, out, err) = run_ppm(&["stop", &base.to_string()], Duration::from_secs(60));
    assert_eq!(code, 0, "ppm stop: {out}{err}");
    let stopping = next_notification(&socket, Duration::from_secs(10)).expect("STOPPING=1");
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let exited = master.proc.wait_exit(Duration::from_secs(30));
    assert!(exited.is_some_and(|s| s.success()));
    assert_eq!(
        next_notification(&socket, Duration::from_millis(300)),
        None,
        "nothing after STOPPING=1"
    );
    master.assert_no_workers_left();
}

#[test]
fn notify_socket_in_the_abstract_namespace_is_understood() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("ppm-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base = free_ports(3);
    let mut master = Master::spawn(
        start_command(&fixture("basic"), 1, base, base + 1)
            .env("NOTIFY_SOCKET", format!("@{name}")),
        base,
        &dir.path().join("ppm.log"),
    );
    let first = next_notification(&socket, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no notification; log:\n{}", master.proc.log_text()));
    assert!(first.lines().any(|l| l == "READY=1"), "{first:?}");
    master.status();
    master.terminate();
    let stopping = next_notification(&socket, Duration::from_secs(5)).expect("STOPPING=1");
    assert!(stopping.lines().any(|l| l == "STOPPING=1"));
}

/// `ppm start` the way systemd starts a socket-activated service: the
/// listening sockets `listeners` become descriptors 3, 4, … of the new
/// process, `LISTEN_FDS` counts them and `LISTEN_PID` is the pid of ppm
/// itself (set by the shell that then execs ppm, keeping its pid).
fn activated(command: Command, listeners: &[&TcpListener]) -> Command {
    // Copies above 10, so that putting them at 3, 4, … cannot overwrite
    // one another; the parent's copies close when `held` drops after spawn.
    let held: Vec<OwnedFd> = listeners
        .iter()
        .map(|l| {
            let fd = nix::fcntl::fcntl(l.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
                .unwrap();
            // SAFETY: fcntl just returned this new descriptor; we own it.
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .collect();
    let raw: Vec<RawFd> = held.iter().map(|fd| fd.as_raw_fd()).collect();
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
    let envs: Vec<_> = command
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
        .collect();
    let mut shell = Command::new("/bin/sh");
    shell
        .arg("-c")
        .arg(r#"LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@""#)
        .arg(program)
        .args(args)
        .envs(envs)
        .env("LISTEN_FDS", raw.len().to_string())
        .env_remove("LISTEN_PID");
    // SAFETY: dup2 is async-signal-safe; the closure allocates nothing.
    unsafe {
        shell.pre_exec(move || {
            let _keep = &held;
            for (i, &fd) in raw.iter().enumerate() {
                if nix::libc::dup2(fd, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    shell
}

fn listen(port: u16) -> TcpListener {
    TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("bind {port}: {e}"))
}

#[test]
fn ppm_serves_through_listening_sockets_passed_by_socket_activation() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_ports(4);
    let (control, balancer) = (listen(base), listen(base + 1));
    // The test keeps its own copies open: had ppm tried to bind these
    // ports itself, it would have failed with "address in use".
    let mut master = Master::spawn(
        &mut activated(
            start_command(&fixture("basic"), 2, base, base + 1),
            &[&balancer, &control],
        ),
        base,
        &dir.path().join("ppm.log"),
    );
    master.wait_ready(2);
    let log = master.proc.log_text();
    assert!(
        log.contains("took 2 listening sockets"),
        "ppm took the passed sockets: {log}"
    );
    let status = master.status().unwrap();
    assert_eq!(
        status["master_pid"].as_u64(),
        Some(master.proc.pid() as u64)
    );
    let r = http()
        .get(format!("http://127.0.0.1:{}/pid", base + 1))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The slot ports, which were not passed, ppm bound itself.
    let r = http()
        .get(format!("http://127.0.0.1:{}/pid", base + 3))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    master.terminate();
    drop((control, balancer));
}

#[test]
fn systemd_socket_activate_starts_ppm_on_the_first_connection_and_it_answers() {
    let tool = "/usr/bin/systemd-socket-activate";
    if !Path::new(tool).exists() {
        println!("SKIPPED: {tool} is not installed (Debian package systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = free_ports(3);
    let mut command = Command::new(tool);
    command
        .args(["-l", &format!("127.0.0.1:{}", base + 1)])
        .args(["-l", &format!("127.0.0.1:{base}")])
        .args(["-E", "PPM_LOG=info", PPM, "start"])
        .arg(fixture("basic"))
        .args(["--bridge", "callable", "--bootstrap", "app.php"])
        .args(["--workers", "1", "--port", &(base + 1).to_string()])
        .args(["--control-port", &base.to_string()]);
    let mut master = Master::spawn(&mut command, base, &dir.path().join("ppm.log"));
    let listening = wait_until(Duration::from_secs(10), || {
        master
            .proc
            .log_text()
            .contains(&format!("Listening on 127.0.0.1:{base}"))
            .then_some(())
    });
    assert!(listening.is_some(), "{}", master.proc.log_text());
    assert!(
        !master.proc.log_text().contains("took"),
        "ppm is not started before the first connection"
    );
    // The first request waits in the kernel's queue while ppm starts.
    let started = Instant::now();
    let r = http()
        .get(format!("http://127.0.0.1:{}/pid", base + 1))
        .send()
        .unwrap();
    println!(
        "first request answered in {:?}, ppm started by it",
        started.elapsed()
    );
    assert_eq!(r.status().as_u16(), 200);
    assert!(master.proc.log_text().contains("took 2 listening sockets"));
    master.status();
    master.terminate();
}

fn raw_get(addr: SocketAddr, request: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[test]
fn a_new_ppm_takes_over_the_passed_sockets_without_refusing_a_connection() {
    let dir = tempfile::tempdir().unwrap();
    let app = fixture_copy("versioned");
    std::fs::write(app.path().join("VERSION"), "v1").unwrap();
    // Every public socket comes from the "service manager" (this test),
    // which keeps them open across the two ppm processes, as a .socket
    // unit does across `systemctl restart`.
    let base = free_ports(4);
    let sockets: Vec<TcpListener> = (0..4).map(|i| listen(base + i)).collect();
    let passed: Vec<&TcpListener> = sockets.iter().collect();

    let mut first = Master::spawn(
        &mut activated(start_command(app.path(), 2, base, base + 1), &passed),
        base,
        &dir.path().join("ppm-1.log"),
    );
    first.wait_ready(2);
    let began = Instant::now();
    // One connection per request (`Connection: close`), so that every
    // request is a new connection the kernel has to queue.
    let addr = SocketAddr::from(([127, 0, 0, 1], base + 1));
    let request = format!("GET /sleep?ms=20 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let load = Load::start_with(4, || {
        let request = request.clone();
        move || raw_get(addr, &request).unwrap_or_else(|e| (0, e.to_string()))
    });
    std::thread::sleep(Duration::from_millis(500));

    // The old ppm stops (SIGTERM, as systemctl stop/restart sends); the
    // new one starts on the same sockets, with the new code.
    first.terminate();
    std::fs::write(app.path().join("VERSION"), "v2").unwrap();
    let handover = Instant::now();
    let mut second = Master::spawn(
        &mut activated(start_command(app.path(), 2, base, base + 1), &passed),
        base,
        &dir.path().join("ppm-2.log"),
    );
    second.wait_ready(2);
    let took_over = handover.elapsed();
    let ready = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let seen = load.stop();

    let failed: Vec<_> = seen.iter().filter(|s| s.status != 200).collect();
    let slowest = seen.iter().map(|s| s.took).max().unwrap_or_default();
    println!(
        "binary handover: {} requests in {:.1}s, {} failed, new ppm ready {took_over:?} after the old one exited, slowest request {slowest:?}",
        seen.len(),
        began.elapsed().as_secs_f64(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, first: {:?}",
        failed.len(),
        seen.len(),
        failed
            .iter()
            .take(3)
            .map(|s| (s.status, &s.body))
            .collect::<Vec<_>>()
    );
    assert!(seen.iter().any(|s| s.body == "v1"), "the old ppm served");
    assert!(seen.iter().any(|s| s.body == "v2"), "the new ppm served");
    assert!(
        seen.iter()
            .filter(|s| s.started > ready)
            .all(|s| s.body == "v2"),
        "only the new ppm serves after the handover"
    );
    second.terminate();
    drop(sockets);
}
