//! One PHP worker process: spawning it, its logs and its end.
//!
//! A worker is this binary (`ppm php-worker`, see `native::spawn`) with
//! one end of a socket pair as its descriptor 3: the frame socket, its
//! only channel to the master. Shutting that socket down tells it to exit,
//! and the kernel kills it when the master dies (`spawner`), so no worker
//! outlives its master, even after `kill -9` of the master. Each worker
//! leads its own process group, so stopping it kills the whole group,
//! grandchildren included.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::config::AppOptions;

/// How many of a worker's last output lines are kept to explain a failure.
const KEPT_LINES: usize = 20;

/// Everything needed to start workers of one application.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// The program workers run: this binary (`ppm php-worker`).
    pub program: PathBuf,
    /// The worker script in the run directory.
    pub entry: PathBuf,
    pub app: AppOptions,
    /// Absolute application directory.
    pub app_dir: PathBuf,
    /// The user and group workers run as (`--user`), if not the master's.
    pub run_as: Option<crate::workers::privileges::RunAs>,
}

/// What a worker's exchanges and frame connection pass on to its slot.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    /// The PHP backtrace of the running request, asked for with SIGUSR1.
    Backtrace { trace: String },
    /// Debug mode: files the application loaded since the last report.
    IncludedFiles { files: Vec<std::path::PathBuf> },
    /// The worker finished a request (it is idle again already), with
    /// PHP's memory figures after it: sent when it reached a recycle limit
    /// and otherwise at most every quarter second (`FrameConn::finished`).
    Finished { memory: u64, peak_memory: u64 },
    /// The worker's script restarted in-process after a request ended
    /// this way (`exit()`, a fatal error, PHP's timeout, out of memory):
    /// counted like a worker restart.
    ScriptRestarted {
        outcome: crate::workers::native::frames::Outcome,
    },
    /// A request ended with an uncaught exception (the app's handler or
    /// PHP's 500 answered; the script goes on).
    UncaughtException,
}

/// A running PHP worker process.
pub struct Worker {
    child: Child,
    pid: u32,
    /// The master's copy of the frame socket; shutting it down tells the
    /// worker to exit.
    control: Option<std::os::unix::net::UnixStream>,
    output: Arc<Mutex<VecDeque<String>>>,
    /// The process has been waited for: its pid (and group id) may be
    /// reused by now, so the group is not signalled any more.
    reaped: bool,
}

impl Worker {
    /// A worker whose control channel is the frame socket: `control` is
    /// the master's copy, shut down to stop it.
    pub(crate) fn with_frames(
        (child, pid, output): Started,
        control: std::os::unix::net::UnixStream,
    ) -> Worker {
        Worker {
            child,
            pid,
            control: Some(control),
            output,
            reaped: false,
        }
    }

    /// The worker's process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the process to exit and describes how it ended.
    pub async fn wait(&mut self) -> String {
        match self.child.wait().await {
            Ok(status) => {
                if !self.reaped {
                    // Grandchildren it left behind go with its group, now,
                    // before the group id can be reused.
                    self.signal_group(Signal::SIGKILL);
                    self.reaped = true;
                    crate::workers::guard::forget(self.pid);
                }
                describe_exit(status)
            }
            Err(err) => format!("wait failed: {err}"),
        }
    }

    /// The last lines the worker printed, for error reports.
    pub fn recent_output(&self) -> String {
        let lines = self.output.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Stops the worker: closes its control channel so it exits by itself;
    /// if it has not after `grace`, SIGTERM to its process group, and one
    /// second later SIGKILL. Returns how it ended.
    pub async fn stop(&mut self, grace: Duration) -> String {
        if let Some(socket) = self.control.take() {
            // Other copies of the frame socket (the pool's) stay open:
            // shutting it down is seen through all of them.
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
        if let Ok(Ok(status)) = tokio::time::timeout(grace, self.child.wait()).await {
            // Grandchildren the worker left behind go with its group.
            self.kill_group();
            return describe_exit(status);
        }
        self.signal_group(Signal::SIGTERM);
        if let Ok(Ok(status)) =
            tokio::time::timeout(Duration::from_secs(1), self.child.wait()).await
        {
            self.kill_group();
            return describe_exit(status);
        }
        self.kill_group();
        self.wait().await
    }

    /// Sends a signal to the worker's whole process group.
    pub fn signal_group(&self, signal: Signal) {
        if self.pid != 0 && !self.reaped {
            // ESRCH (already gone) is expected after an exit.
            let _ = killpg(Pid::from_raw(self.pid as i32), signal);
        }
    }

    /// Asks the worker for the PHP backtrace of what it is running; it
    /// answers with a `Backtrace` event.
    pub fn ask_backtrace(&self) {
        if self.pid != 0 && !self.reaped {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.pid as i32), Signal::SIGUSR1);
        }
    }

    /// Kills the worker's whole process group at once.
    pub fn kill_group(&self) {
        self.signal_group(Signal::SIGKILL);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill_group();
            crate::workers::guard::forget(self.pid);
        }
    }
}

/// A spawned process: its handle, pid and kept output lines.
pub(crate) type Started = (Child, u32, Arc<Mutex<VecDeque<String>>>);

/// A worker command: the privileges of
/// `--user`, the environment, the working directory, its own process
/// group, stderr captured.
pub(crate) fn base_command(spec: &WorkerSpec, program: &std::path::Path) -> Command {
    let mut cmd = Command::new(program);
    if let Some(run_as) = spec.run_as {
        // SAFETY: only system calls between fork and exec. This runs
        // before `spawn_tied` sets the parent-death signal, which a
        // change of credentials would clear.
        unsafe {
            cmd.pre_exec(move || crate::workers::privileges::switch(run_as));
        }
    }
    cmd.current_dir(&spec.app_dir)
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for var in [
        // CGI request variables in the master's environment (a master
        // started from a CGI context) describe no request of a worker.
        "REQUEST_METHOD",
        "GATEWAY_INTERFACE",
        "SCRIPT_FILENAME",
        "PHP_FCGI_CHILDREN",
        "FCGI_WEB_SERVER_ADDRS",
        // The service manager's variables are the master's, not the workers'.
        "NOTIFY_SOCKET",
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
    ]
    .into_iter()
    // Secrets of the master: PHP would show them in `$_SERVER`.
    .chain(crate::token::SECRET_ENV)
    {
        cmd.env_remove(var);
    }
    crate::workers::env::apply(&mut cmd, &spec.app.env, spec.app.clear_env);
    cmd
}

/// Has the child inherit `fd` as its descriptor 3.
pub(crate) fn pass_as_fd3(cmd: &mut Command, fd: &OwnedFd) {
    let their_fd = fd.as_raw_fd();
    // SAFETY: between fork and exec only async-signal-safe calls
    // are made: dup2 and fcntl on a descriptor we own.
    unsafe {
        cmd.pre_exec(move || {
            if their_fd == 3 {
                let flags = nix::fcntl::fcntl(3, nix::fcntl::FcntlArg::F_GETFD)?;
                let mut flags = nix::fcntl::FdFlag::from_bits_truncate(flags);
                flags.remove(nix::fcntl::FdFlag::FD_CLOEXEC);
                nix::fcntl::fcntl(3, nix::fcntl::FcntlArg::F_SETFD(flags))?;
            } else {
                nix::unistd::dup2(their_fd, 3)?;
            }
            Ok(())
        });
    }
}

/// Spawns `cmd` tied to the master (`spawner`), registers it with the
/// guard and forwards its output lines to the log under `label`. `keep`
/// (descriptors the child inherits) is closed once it has its copies.
pub(crate) async fn start(
    cmd: Command,
    keep: Vec<OwnedFd>,
    label: &str,
) -> std::io::Result<Started> {
    // `spawn_tied` drops `cmd`, closing our copies of the worker's end,
    // so that its death is seen as EOF on the control channel.
    let mut child = crate::workers::spawner::spawn_tied(cmd).await?;
    drop(keep);
    let pid = child.id().unwrap_or_default();
    crate::workers::guard::watch(pid);
    let output = Arc::new(Mutex::new(VecDeque::with_capacity(KEPT_LINES)));
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(forward_lines(stdout, label.to_string(), output.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(forward_lines(stderr, label.to_string(), output.clone()));
    }
    Ok((child, pid, output))
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => {
            let name = Signal::try_from(sig)
                .map(|s| s.as_str())
                .unwrap_or("unknown");
            format!("killed by signal {sig} ({name})")
        }
        _ => "ended".to_string(),
    }
}

async fn forward_lines(
    stream: impl tokio::io::AsyncRead + Unpin,
    label: String,
    kept: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        tracing::info!("[{label}] {line}");
        let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() == KEPT_LINES {
            kept.pop_front();
        }
        kept.push_back(line);
    }
}
