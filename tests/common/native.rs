//! `ppm worker --listen`: one process hosting PHP,
//! started on a port of its own and stopped (and checked gone) on drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_ports, wait_until, PPM};

/// A running native worker.
pub struct NativeServer {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl NativeServer {
    /// Serves `app` (a directory) with `args` (bridge, bootstrap, ...).
    pub fn start(app: &Path, args: &[&str]) -> NativeServer {
        Self::try_start(app, args)
            .unwrap_or_else(|log| panic!("native worker did not start:\n{log}"))
    }

    /// Like `start`, but returns the log when the server never answers.
    pub fn try_start(app: &Path, args: &[&str]) -> Result<NativeServer, String> {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ppm.log");
        let port = free_ports(1);
        let file = File::create(&log).unwrap();
        let child = Command::new(PPM)
            .arg("worker")
            .arg(app)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut server = NativeServer {
            child,
            port,
            log,
            _dir: dir,
        };
        // Up when this process says so (a probe of the port could reach
        // another test's server that took the port first).
        let listening = format!("on http://127.0.0.1:{port} ");
        let up = wait_until(Duration::from_secs(20), || {
            if server.child.try_wait().ok().flatten().is_some() {
                return Some(false);
            }
            server.log_text().contains(&listening).then_some(true)
        });
        if up == Some(true) {
            Ok(server)
        } else {
            Err(server.log_text())
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit; its status code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        wait_until(timeout, || self.child.try_wait().ok().flatten()).map(|s| s.code().unwrap_or(-1))
    }
}

impl Drop for NativeServer {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if self.wait_exit(Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
