//! Test harness: starts a real `ppm` master with real PHP workers on ports
//! of its own, and checks that nothing is left running afterwards.
#![allow(dead_code)]

pub mod control;
pub mod fpm;
pub mod native;

pub use control::*;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub const PPM: &str = env!("CARGO_BIN_EXE_ppm");

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture application under tests/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

static NEXT_BASE: AtomicU16 = AtomicU16::new(0);

/// Finds `count` consecutive free TCP ports on 127.0.0.1. Tests run in
/// parallel processes, so each process starts from a different offset.
pub fn free_ports(count: u16) -> u16 {
    let start = 20000 + (std::process::id() % 400) as u16 * 100;
    let _ = NEXT_BASE.compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let base = NEXT_BASE.fetch_add(count + 1, Ordering::SeqCst);
        let base = if base > 64000 {
            20000 + base % 40000
        } else {
            base
        };
        let held: Vec<_> = (0..count)
            .map_while(|i| TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == count as usize {
            return base;
        }
    }
}

/// Polls `check` until it returns Some or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A master's log file once it has stopped growing for a moment (at most
/// half a second): the master writes its log lines from a thread of their
/// own, a little after what they tell of.
pub fn settled_log(path: &Path) -> String {
    let read = || std::fs::read_to_string(path).unwrap_or_default();
    let mut text = read();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(25));
        let again = read();
        if again.len() == text.len() {
            return again;
        }
        text = again;
    }
    text
}

pub fn pid_alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; count it as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Whether a thread of `pid` is blocked in `nanosleep`, where PHP's
/// `sleep()` and `usleep()` wait: a worker inside a request (or bootstrap)
/// that sleeps is, one waiting for work is not.
pub fn sleeping(pid: u32) -> bool {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter();
    tasks.flatten().flatten().any(|task| {
        std::fs::read_to_string(task.path().join("wchan")).is_ok_and(|w| w.contains("nanosleep"))
    })
}

/// The pids of `pid`'s child processes.
pub fn children(pid: u32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter();
    tasks
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The CPU time `pid` has used so far (user and system), in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command's ")": state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum()
}

pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

/// A running `ppm start`.
pub struct Cluster {
    pub child: Option<Child>,
    /// The control token the cluster was started with, if any.
    pub token: Option<String>,
    pub control_port: u16,
    pub port: u16,
    pub workers: u16,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
    seen_pids: Vec<u32>,
}

/// Options for `Cluster::start`.
#[derive(Clone)]
pub struct Setup<'a> {
    pub app: PathBuf,
    pub bridge: &'a str,
    pub bootstrap: &'a str,
    pub workers: u16,
    pub extra: Vec<String>,
    /// Wait until every worker is ready (else: until the master answers).
    pub wait_ready: bool,
}

impl<'a> Setup<'a> {
    pub fn callable(app: &str, workers: u16) -> Self {
        Setup {
            app: fixture(app),
            bridge: "callable",
            bootstrap: "app.php",
            workers,
            extra: Vec::new(),
            wait_ready: true,
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra.push(arg.into());
        self
    }
}

impl Cluster {
    pub fn start(setup: Setup) -> Cluster {
        Cluster::start_with(setup, |_| {})
    }

    /// Like `start`, with `configure` adjusting the master's command (its
    /// environment, limits) before it runs. The control token is found in
    /// `--control-token=`, `--control-token-file=` or `PPM_CONTROL_TOKEN`.
    pub fn start_with(setup: Setup, configure: impl Fn(&mut Command)) -> Cluster {
        // Ports are picked free, but another test may take one before the
        // master binds it: then the master says so and exits, and a new
        // set of ports is tried.
        for _ in 0..3 {
            if let Some(cluster) = Cluster::try_start_with(&setup, &configure) {
                return cluster;
            }
        }
        panic!("three sets of free ports were taken before the master could bind them");
    }

    /// Like `start`, with `--fastcgi-listen` on a port picked free for
    /// each attempt (so one another test takes first is retried with a
    /// new one, as the master's own ports are): the cluster and the
    /// FastCGI address, `127.0.0.1:PORT`.
    pub fn start_fastcgi(setup: Setup) -> (Cluster, String) {
        (0..3)
            .find_map(|_| {
                let fastcgi = format!("127.0.0.1:{}", free_ports(1));
                let mut setup = setup.clone();
                setup.extra.push(format!("--fastcgi-listen={fastcgi}"));
                Some((Cluster::try_start(&setup)?, fastcgi))
            })
            .expect("three FastCGI ports were taken before the master could bind them")
    }

    /// One start on fresh ports; None when one of them (or a port the
    /// setup names itself) was taken before the master could bind it.
    pub fn try_start(setup: &Setup) -> Option<Cluster> {
        Cluster::try_start_with(setup, &|_: &mut Command| {})
    }

    fn try_start_with(setup: &Setup, configure: &impl Fn(&mut Command)) -> Option<Cluster> {
        let dir = tempfile::tempdir().unwrap();
        let base = free_ports(setup.workers + 2);
        let (control_port, port) = (base, base + 1);
        let log = dir.path().join("ppm.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(PPM);
        command
            .arg("start")
            .arg(&setup.app)
            .args(["--bridge", setup.bridge, "--bootstrap", setup.bootstrap])
            .args(["--workers", &setup.workers.to_string()])
            .args([
                "--port",
                &port.to_string(),
                "--control-port",
                &control_port.to_string(),
            ])
            .args(&setup.extra)
            .env("PPM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        configure(&mut command);
        let from_env = command
            .get_envs()
            .find(|(k, _)| *k == "PPM_CONTROL_TOKEN")
            .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()));
        let child = command.spawn().expect("ppm starts");
        let token = setup
            .extra
            .iter()
            .find_map(|a| {
                a.strip_prefix("--control-token=")
                    .map(str::to_string)
                    .or_else(|| {
                        let file = a.strip_prefix("--control-token-file=")?;
                        Some(std::fs::read_to_string(file).ok()?.trim_end().to_string())
                    })
            })
            .or(from_env);
        let mut cluster = Cluster {
            child: Some(child),
            token,
            control_port,
            port,
            workers: setup.workers,
            log,
            _dir: dir,
            seen_pids: Vec::new(),
        };
        let want = if setup.wait_ready {
            setup.workers as u64
        } else {
            0
        };
        let ok = wait_until(Duration::from_secs(30), || {
            if let Some(child) = cluster.child.as_mut() {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return Some(false);
                }
            }
            (serving_in(&cluster.try_status()?)? >= want).then_some(true)
        });
        if ok != Some(true) {
            let log = cluster.log_text();
            if ok == Some(false) && log.contains("Address already in use") {
                return None;
            }
            panic!("cluster did not come up; log:\n{log}");
        }
        cluster.remember_pids();
        Some(cluster)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn slot_url(&self, slot: u16, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port + 1 + slot)
    }

    pub fn control_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.control_port)
    }

    pub fn try_status(&self) -> Option<serde_json::Value> {
        get_status(self.control_port, self.token.as_deref())
    }

    pub fn status(&mut self) -> serde_json::Value {
        let status = self.try_status().expect("GET /status answers");
        note_worker_pids(&status, &mut self.seen_pids);
        status
    }

    pub fn remember_pids(&mut self) {
        if let Some(status) = self.try_status() {
            note_worker_pids(&status, &mut self.seen_pids);
        }
    }

    /// The pid of each slot's worker.
    pub fn worker_pids(&mut self) -> Vec<u32> {
        worker_pids_in(&self.status())
    }

    pub fn master_pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        settled_log(&self.log)
    }

    /// Waits for the master to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let code = wait_until(timeout, || child.try_wait().ok().flatten())?;
        self.child = None;
        Some(code.code().unwrap_or(-1))
    }

    /// Asserts every worker this cluster ever had is gone within `timeout`.
    pub fn assert_no_workers_left(&self, timeout: Duration) {
        assert_workers_gone(&self.seen_pids, timeout, || self.log_text());
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.master_pid() as i32), sig).unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.remember_pids();
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(15));
        }
        // Leave nothing behind even if a test failed half-way.
        kill_all(&self.seen_pids);
    }
}

/// Runs `ppm` with `args` to completion (bounded), returning (code, stdout, stderr).
pub fn run_ppm<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(
    args: &[S],
    timeout: Duration,
) -> (i32, String, String) {
    let mut child = Command::new(PPM)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_until(timeout, || child.try_wait().ok().flatten());
    let status = match status {
        Some(s) => s,
        None => {
            let _ = child.kill();
            panic!("ppm {args:?} did not finish within {timeout:?}");
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code().unwrap_or(-1), out, err)
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Copies a fixture application into a temporary directory the test may change.
pub fn fixture_copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

/// One response seen by a load client.
#[derive(Debug, Clone)]
pub struct Seen {
    pub status: u16,
    pub body: String,
    pub started: Instant,
    pub took: Duration,
}

/// A steady load of concurrent clients looping over one request until
/// stopped (bounded by a maximum duration), counting every response.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<Seen>>>,
}

impl Load {
    /// `clients` reqwest clients (keeping their connections) GETting `url`.
    pub fn start(url: String, clients: usize) -> Load {
        Load::start_with(clients, move || {
            let client = http();
            let url = url.clone();
            move || match client.get(&url).send() {
                Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
                Err(e) => (0, e.to_string()),
            }
        })
    }

    /// `clients` threads, each calling the request function `client()`
    /// made for it (status and body; 0 and the error if it failed).
    pub fn start_with<F>(clients: usize, client: impl Fn() -> F) -> Load
    where
        F: FnMut() -> (u16, String) + Send + 'static,
    {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let mut request = client();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let until = Instant::now() + Duration::from_secs(120);
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                        let started = Instant::now();
                        let (status, body) = request();
                        seen.push(Seen {
                            status,
                            body,
                            started,
                            took: started.elapsed(),
                        });
                    }
                    seen
                })
            })
            .collect();
        Load { stop, threads }
    }

    pub fn stop(self) -> Vec<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    }
}

/// Samples `/status` until stopped; returns the fewest ready-or-busy
/// workers seen.
pub struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u64, usize)>,
}

impl Sampler {
    pub fn start(control_url: String) -> Sampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let client = http();
            let (mut fewest, mut samples) = (u64::MAX, 0);
            let until = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                if let Ok(status) = client
                    .get(&control_url)
                    .send()
                    .and_then(|r| r.json::<serde_json::Value>())
                {
                    let serving = status["ready_workers"].as_u64().unwrap_or(0)
                        + status["busy_workers"].as_u64().unwrap_or(0);
                    fewest = fewest.min(serving);
                    samples += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (fewest, samples)
        });
        Sampler { stop, thread }
    }

    /// (fewest serving workers seen, number of samples)
    pub fn stop(self) -> (u64, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

impl Cluster {
    /// Asserts the only live workers are the ones `/status` lists: replaced
    /// workers were stopped.
    pub fn assert_pids_alive_are_current(&mut self) {
        let current = self.worker_pids();
        let replaced: Vec<u32> = self
            .seen_pids
            .iter()
            .copied()
            .filter(|p| !current.contains(p))
            .collect();
        if let Err(alive) = wait_all_gone(&replaced, Duration::from_secs(10)) {
            panic!("replaced workers still running: {alive:?}");
        }
    }
}

impl Cluster {
    /// Waits (bounded) until a worker is running a request sent on another
    /// thread, for a moment already: it is in PHP.
    pub fn wait_request_running(&self) {
        let running = wait_until(Duration::from_secs(10), || {
            let status = self.try_status()?;
            request_running(&status, Duration::from_millis(100)).then_some(())
        });
        assert!(
            running.is_some(),
            "a worker ran the request; log:\n{}",
            self.log_text()
        );
    }

    /// Waits (bounded) until `n` requests wait in the queue.
    pub fn wait_queued(&self, n: u64) {
        let queued = wait_until(Duration::from_secs(10), || {
            (self.try_status()?["queue_length"].as_u64()? == n).then_some(())
        });
        assert!(queued.is_some(), "{n} requests queued");
    }

    /// Waits (bounded) until the master holds at least `n` client
    /// connections (`ppm_client_connections`).
    pub fn wait_connections(&self, n: u64) {
        let mut last = String::new();
        let held = wait_until(Duration::from_secs(10), || {
            last = match http().get(self.control_url("/metrics")).send() {
                Ok(r) => r.text().unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            (metric_sum(&last, "ppm_client_connections")? >= n as f64).then_some(())
        });
        let line = last
            .lines()
            .find(|l| l.starts_with("ppm_client_connections"))
            .unwrap_or(&last);
        assert!(held.is_some(), "the master holds {n} connections: {line}");
    }

    /// Waits (bounded) until the master's log contains `text`.
    pub fn wait_log(&self, text: &str) {
        let logged = wait_until(Duration::from_secs(10), || {
            self.log_text().contains(text).then_some(())
        });
        assert!(
            logged.is_some(),
            "the log says {text:?}; log:\n{}",
            self.log_text()
        );
    }

    /// Waits until the last rolling restart reached `state` ("succeeded",
    /// "failed"); returns the status that showed it.
    pub fn wait_restart(&self, state: &str, timeout: Duration) -> Option<serde_json::Value> {
        wait_until(timeout, || {
            let status = self.try_status()?;
            (status["restart"]["state"] == state).then_some(status)
        })
    }
}

/// `ppm start` arguments for a callable fixture on ports from `base`
/// (control) and `base + 1` (balancer), followed by `extra`.
pub fn start_args(app: &Path, workers: u16, base: u16, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "start".into(),
        path_str(app).into(),
        "--bridge=callable".into(),
        "--bootstrap=app.php".into(),
        format!("--workers={workers}"),
        format!("--control-port={base}"),
        format!("--port={}", base + 1),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// Runs a Python `script` with `input` on its stdin and parses the JSON it
/// prints; a failing script fails the test with `what` and its stderr.
pub fn python_json(script: &str, input: &str, what: &str) -> serde_json::Value {
    use std::io::Write;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{what}: {}\n{input}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}
