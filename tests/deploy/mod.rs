//! Helpers of the deployment tests (front proxies, systemd, the Docker
//! entrypoint): real programs started in process groups of their own,
//! always torn down, with a check that nothing of them is left.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use super::common::{http, root, settled_log, wait_until, Seen};

pub mod nginx;

/// A shipped file under docker/.
pub fn docker_file(name: &str) -> PathBuf {
    root().join("docker").join(name)
}

/// Renders a shipped template of docker/ with docker/render.sh (the same
/// step the compose file and the docs use), `vars` given as environment.
pub fn render(template: &str, vars: &[(&str, String)]) -> String {
    let out = Command::new("sh")
        .arg(docker_file("render.sh"))
        .arg(docker_file(template))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("docker/render.sh runs");
    assert!(
        out.status.success(),
        "render {template}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The pids of every process whose process group is `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name: state ppid pgrp ...
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            pids.push(pid);
        }
    }
    pids
}

/// A program the test started in a process group of its own (haproxy,
/// nginx and its workers, a shell); its output goes to a log file.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pgid: u32,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, command: &mut Command, log: &Path) -> Proc {
        let file = std::fs::File::create(log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        let pgid = child.id();
        Proc {
            name: name.to_string(),
            child: Some(child),
            pgid,
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pgid
    }

    pub fn log_text(&self) -> String {
        settled_log(&self.log)
    }

    /// Whether the program exited already (with its status).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Waits (bounded) for the program to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        wait_until(timeout, || child.try_wait().ok().flatten())
    }

    /// SIGTERM to the whole group, SIGKILL after a grace period; returns
    /// the pids of the group still alive afterwards (none, normally).
    fn teardown(&mut self) -> Vec<u32> {
        let group = Pid::from_raw(self.pgid as i32);
        let _ = killpg(group, Signal::SIGTERM);
        if let Some(child) = self.child.as_mut() {
            let exited = wait_until(Duration::from_secs(10), || child.try_wait().ok().flatten());
            if exited.is_none() {
                let _ = killpg(group, Signal::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.child = None;
        let gone = wait_until(Duration::from_secs(10), || {
            group_members(self.pgid).is_empty().then_some(())
        });
        if gone.is_none() {
            let _ = killpg(group, Signal::SIGKILL);
        }
        group_members(self.pgid)
    }

    /// Stops the program and asserts nothing of its process group is left.
    pub fn stop(mut self) {
        let left = self.teardown();
        assert!(
            left.is_empty(),
            "{} left processes behind: {left:?}",
            self.name
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.is_some() {
            let left = self.teardown();
            if !left.is_empty() && !std::thread::panicking() {
                panic!("{} left processes behind: {left:?}", self.name);
            }
        }
    }
}

/// Polls `url` until it answers `want` (bounded); returns whether it did.
pub fn wait_http_status(url: &str, want: u16, timeout: Duration) -> bool {
    let client = http();
    wait_until(timeout, || {
        let r = client
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .ok()?;
        (r.status().as_u16() == want).then_some(())
    })
    .is_some()
}

/// Asserts every response of a load run was a 200.
pub fn assert_no_failures(seen: &[Seen], what: &str) {
    let failed: Vec<_> = seen.iter().filter(|s| s.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{what}: {} of {} requests failed, first ones: {:?}",
        failed.len(),
        seen.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(!seen.is_empty(), "{what}: the load ran");
}

/// One line of figures about a load run, for the test output.
pub fn summary(seen: &[Seen], elapsed: Duration) -> String {
    let mut latencies: Vec<Duration> = Vec::new();
    let mut starts: Vec<_> = seen.iter().map(|s| s.started).collect();
    starts.sort();
    for pair in starts.windows(2) {
        latencies.push(pair[1] - pair[0]);
    }
    let longest_gap = latencies.iter().max().copied().unwrap_or_default();
    format!(
        "{} requests in {:.1}s ({:.0}/s), {} failed, longest gap between request starts {:?}",
        seen.len(),
        elapsed.as_secs_f64(),
        seen.len() as f64 / elapsed.as_secs_f64().max(0.001),
        seen.iter().filter(|s| s.status != 200).count(),
        longest_gap
    )
}

/// Kills a process (of this test) by pid with `signal`.
pub fn signal_pid(pid: u32, signal: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), signal);
}
