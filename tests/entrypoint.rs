//! The Docker image's entrypoint (docker/entrypoint.sh), run outside Docker
//! against a real ppm: the command line it builds from PPM_* variables, the
//! exec that lets SIGTERM reach ppm itself, and exit statuses passed through.

mod common;
mod deploy;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use deploy::*;
use nix::sys::signal::Signal;

/// A PATH where `ppm` is the binary under test, as in the image.
fn path_with_ppm(dir: &Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("ppm");
    if !link.exists() {
        std::os::unix::fs::symlink(PPM, &link).unwrap();
    }
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn entrypoint(dir: &Path) -> Command {
    let mut command = Command::new(docker_file("entrypoint.sh"));
    command
        .env_clear()
        .env("PATH", path_with_ppm(dir))
        .env("HOME", dir)
        .env("PPM_LOG", "info")
        .current_dir(dir);
    command
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).to_string())
        .collect()
}

#[test]
fn the_entrypoint_execs_ppm_with_options_from_the_environment_and_sigterm_stops_it_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_ports(4);
    let app = fixture("basic");
    let mut command = entrypoint(dir.path());
    command
        .env("PPM_APP_DIR", &app)
        .env("PPM_WORKERS", "2")
        .env("PPM_HOST", "127.0.0.1")
        .env("PPM_PORT", (base + 1).to_string())
        .env("PPM_CONTROL_PORT", base.to_string())
        .env("PPM_BRIDGE", "callable")
        .env("PPM_BOOTSTRAP", "app.php")
        .env("PPM_MAX_REQUESTS", "500")
        .env("PPM_TTL", "")
        .env("PPM_PHP_INI", "memory_limit=200M\ndisplay_errors=0\n")
        .env("PPM_DEBUG", "0")
        .arg("--shutdown-timeout=10");
    let mut proc = Proc::spawn("entrypoint", &mut command, &dir.path().join("ppm.log"));
    let pid = proc.pid();
    let control = format!("http://127.0.0.1:{base}/status");
    let status = wait_until(Duration::from_secs(30), || {
        let status: serde_json::Value = http().get(&control).send().ok()?.json().ok()?;
        let serving = status["ready_workers"].as_u64()? + status["busy_workers"].as_u64()?;
        (serving == 2).then_some(status)
    })
    .unwrap_or_else(|| panic!("ppm came up; log:\n{}", proc.log_text()));
    let workers: Vec<u32> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["pid"].as_u64().map(|p| p as u32))
        .collect();

    // The shell replaced itself with ppm: same pid, ppm's binary.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(
        exe,
        PathBuf::from(PPM).canonicalize().unwrap(),
        "the entrypoint execs ppm"
    );
    assert_eq!(status["master_pid"].as_u64(), Some(pid as u64));
    let args = cmdline(pid);
    let app_dir = app.display().to_string();
    let expected = [
        "start",
        app_dir.as_str(),
        "--workers=2",
        "--host=127.0.0.1",
        "--max-requests=500",
        "--php-ini=memory_limit=200M",
        "--php-ini=display_errors=0",
        "--shutdown-timeout=10",
    ];
    for arg in expected {
        assert!(args.iter().any(|a| a == arg), "{arg} in {args:?}");
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--ttl")),
        "empty is unset: {args:?}"
    );
    assert!(
        !args.iter().any(|a| a == "--debug"),
        "PPM_DEBUG=0: {args:?}"
    );
    assert_eq!(
        args.last().map(String::as_str),
        Some("--shutdown-timeout=10"),
        "the caller's options come last"
    );

    // SIGTERM (docker stop) reaches ppm, which lets the running request
    // finish, stops its workers and exits 0.
    let url = format!("http://127.0.0.1:{}/sleep?ms=1500", base + 1);
    let in_flight = std::thread::spawn(move || {
        let r = http().get(url).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    });
    let running = wait_until(Duration::from_secs(10), || {
        let status = get_status(base, None)?;
        request_running(&status, Duration::from_millis(100)).then_some(())
    });
    assert!(running.is_some(), "the request reached PHP");
    signal_pid(pid, Signal::SIGTERM);
    let exited = proc.wait_exit(Duration::from_secs(30));
    assert_eq!(
        exited.and_then(|s| s.code()),
        Some(0),
        "ppm exited 0; log:\n{}",
        proc.log_text()
    );
    assert_eq!(in_flight.join().unwrap(), (200, "slept".to_string()));
    let log = proc.log_text();
    assert!(log.contains("SIGTERM received"), "{log}");
    let gone = wait_until(Duration::from_secs(10), || {
        (!workers.iter().any(|&p| pid_alive(p))).then_some(())
    });
    assert!(gone.is_some(), "workers {workers:?} stopped");
    proc.stop();
}

#[test]
fn the_entrypoint_exits_with_the_status_of_a_failing_ppm() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, _) = run_ppm(&["start", ".", "--workers=0"], Duration::from_secs(10));
    assert_ne!(code, 0);
    let out = entrypoint(dir.path())
        .env("PPM_APP_DIR", fixture("basic"))
        .env("PPM_WORKERS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(code), "ppm's own status");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("workers"), "ppm names the option: {err}");

    let out = entrypoint(dir.path())
        .env("PPM_DEBUG", "maybe")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a bad flag value is refused");
}

#[test]
fn the_entrypoint_runs_a_command_given_instead_of_options() {
    let dir = tempfile::tempdir().unwrap();
    let out = entrypoint(dir.path())
        .args(["sh", "-c", "echo custom; exit 7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "custom\n");
    let out = entrypoint(dir.path())
        .args(["ppm", "--version"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ppm "));
}
