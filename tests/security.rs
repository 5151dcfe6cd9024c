//! Hostile conditions around the master: DNS rebinding against the control
//! plane, the control token's reach, a master killed with `kill -9`, file
//! descriptors running out, and what public readers of `/status` see.

mod common;
mod deploy;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use deploy::group_members;

/// One HTTP/1.1 request over a fresh connection with exactly the given
/// head lines; returns the status code and the body.
fn raw(port: u16, method: &str, path: &str, lines: &[String]) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for line in lines {
        head.push_str(line);
        head.push_str("\r\n");
    }
    if method == "POST" {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[test]
fn rebinding_host_names_are_refused_on_every_control_endpoint_and_the_master_keeps_running() {
    let mut cluster = Cluster::start(Setup::callable("basic", 2));
    let pids = cluster.worker_pids();
    let port = cluster.control_port;
    let evil = [
        format!("Host: evil.example:{port}"),
        format!("Origin: http://evil.example:{port}"),
    ];
    for (method, path) in [
        ("GET", "/status"),
        ("GET", "/"),
        ("GET", "/metrics"),
        ("GET", "/health"),
        ("GET", "/ready"),
        ("GET", "/no-such-page"),
        ("POST", "/restart"),
        ("POST", "/workers/0/restart"),
        ("POST", "/stop"),
    ] {
        let (code, body) = raw(port, method, path, &evil);
        assert_eq!(code, 421, "{method} {path} with a rebinding Host: {body}");
        assert!(body.contains("DNS rebinding"), "{body}");
    }
    // An address that is no loopback one is refused as well.
    let (code, _) = raw(port, "GET", "/status", &["Host: 10.1.2.3".into()]);
    assert_eq!(code, 421);

    // Loopback names and addresses still work, with or without a port.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".to_string(),
        format!("[::1]:{port}"),
    ] {
        let (code, body) = raw(port, "GET", "/status", &[format!("Host: {host}")]);
        assert_eq!(code, 200, "Host {host}: {body}");
    }
    let (code, body) = raw(port, "GET", "/", &[format!("Host: localhost:{port}")]);
    assert_eq!(code, 200, "{body}");

    // Nothing was stopped or restarted, and the cluster serves.
    let child = cluster.child.as_mut().unwrap();
    assert!(child.try_wait().unwrap().is_none(), "the master is running");
    assert_eq!(cluster.worker_pids(), pids, "no worker was restarted");
    let answer = http().get(cluster.url("/")).send().unwrap();
    assert_eq!(answer.status(), 200);
}

/// Every worker's environment (from /proc) and what PHP shows of it.
fn assert_token_out_of_workers(cluster: &mut Cluster, token: &str) {
    let pids = cluster.worker_pids();
    assert!(pids.iter().all(|&p| p != 0), "{pids:?}");
    for pid in &pids {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let environ = String::from_utf8_lossy(&environ);
        assert!(
            environ.contains("PPM_LOG="),
            "the worker inherits the rest of the environment"
        );
        assert!(
            !environ.contains(token) && !environ.contains("PPM_CONTROL_TOKEN"),
            "worker {pid}'s environment holds the token"
        );
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(!String::from_utf8_lossy(&cmdline).contains(token));
    }
    for slot in 0..cluster.workers {
        let text = http()
            .get(cluster.slot_url(slot, "/"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        let shown: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(
            shown["server"]["PPM_LOG"].is_string(),
            "the fixture shows $_SERVER: {text}"
        );
        assert!(!text.contains(token), "PHP sees the token: {text}");
        assert!(!text.contains("PPM_CONTROL_TOKEN"), "{text}");
    }
    // The token is in force all the same.
    let refused = http().get(cluster.control_url("/status")).send().unwrap();
    assert_eq!(refused.status(), 401);
    assert!(cluster.try_status().is_some(), "the token opens /status");
}

#[test]
fn a_token_from_the_environment_reaches_no_worker() {
    let token = "env-token-0123456789abcdef";
    let mut cluster = Cluster::start_with(Setup::callable("environ", 2), |cmd| {
        cmd.env("PPM_CONTROL_TOKEN", token);
    });
    assert_token_out_of_workers(&mut cluster, token);
}

#[test]
fn a_token_from_a_file_is_used_and_reaches_no_worker() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let token = "file-token-0123456789abcdef";
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let setup =
        Setup::callable("environ", 2).arg(format!("--control-token-file={}", path_str(&file)));
    let mut cluster = Cluster::start(setup);
    assert_token_out_of_workers(&mut cluster, token);
    let (code, _) = raw(
        cluster.control_port,
        "GET",
        "/status",
        &[format!("Authorization: Bearer {token}")],
    );
    assert_eq!(code, 200, "the newline at the end is not part of the token");
}

#[test]
fn a_missing_or_empty_token_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let app = fixture("environ");
    for (file, says) in [
        (dir.path().join("missing"), "cannot read"),
        (empty, "is empty"),
    ] {
        let (code, _, err) = run_ppm(
            &[
                "start".to_string(),
                path_str(&app).to_string(),
                format!("--control-token-file={}", path_str(&file)),
            ],
            Duration::from_secs(20),
        );
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("--control-token-file") && err.contains(says),
            "{err}"
        );
    }
}

/// The run directories (`ppm-*`) in `tmp`.
fn run_dirs(tmp: &Path) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ppm-"))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn kill_9_of_the_master_takes_busy_workers_along_and_the_next_master_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = tmp.path().to_path_buf();
    let setup = || {
        Setup::callable("environ", 2)
            .arg("--max-execution-time=120")
            .arg("--max-requests=0")
    };
    let mut cluster = Cluster::start_with(setup(), |cmd| {
        cmd.env("TMPDIR", &tmp_path);
    });
    let pids = cluster.worker_pids();
    let dead_dirs = run_dirs(tmp.path());
    assert_eq!(dead_dirs.len(), 1, "{dead_dirs:?}");

    // A 40 s request keeps slot 0's worker busy in PHP, after it started
    // a process of its own.
    let url = cluster.slot_url(0, "/sleep?ms=40000&spawn=1");
    let long = std::thread::spawn(move || http().get(url).send().map(|r| r.status()));
    let busy = wait_until(Duration::from_secs(10), || {
        let status = cluster.try_status()?;
        status["workers"][0]["current_request"]
            .is_object()
            .then_some(())
    });
    assert!(busy.is_some(), "the long request runs");
    let group = wait_until(Duration::from_secs(5), || {
        let members = group_members(pids[0]);
        (members.len() >= 2).then_some(members)
    })
    .expect("the worker's own child runs in its group");

    cluster.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(cluster.wait_exit(Duration::from_secs(5)).is_some());
    let killed = Instant::now();
    let left = wait_until(Duration::from_secs(3), || {
        (pids.iter().all(|&p| !pid_alive(p)) && group_members(pids[0]).is_empty()).then_some(())
    });
    assert!(
        left.is_some(),
        "workers still alive {:?} and of slot 0's group {:?} (was {group:?}) after kill -9 of the master",
        pids.iter().filter(|&&p| pid_alive(p)).collect::<Vec<_>>(),
        group_members(pids[0]),
    );
    eprintln!("workers gone {:?} after the master", killed.elapsed());
    assert!(
        long.join().unwrap().is_err(),
        "the client sees its connection end"
    );
    assert_eq!(
        run_dirs(tmp.path()),
        dead_dirs,
        "kill -9 leaves the directory"
    );
    drop(cluster);

    let tmp_path = tmp.path().to_path_buf();
    let next = Cluster::start_with(setup(), |cmd| {
        cmd.env("TMPDIR", &tmp_path);
    });
    let now = run_dirs(tmp.path());
    assert_eq!(now.len(), 1, "only the new master's: {now:?}");
    assert!(!now.contains(&dead_dirs[0]), "{now:?}");
    assert!(next.log_text().contains("master that is gone"));
}

/// Starts `cmd` with the given soft and hard open-file limits.
fn open_file_limit(cmd: &mut std::process::Command, soft: u64, hard: u64) {
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            use nix::sys::resource::{setrlimit, Resource};
            setrlimit(Resource::RLIMIT_NOFILE, soft, hard)?;
            Ok(())
        });
    }
}

#[test]
fn health_answers_and_workers_restart_while_idle_clients_hold_every_connection() {
    let mut cluster = Cluster::start_with(Setup::callable("basic", 2), |cmd| {
        open_file_limit(cmd, 256, 256)
    });
    assert!(
        cluster
            .log_text()
            .contains("exceeds what the open-file limit"),
        "a warning says --max-connections cannot be met:\n{}",
        cluster.log_text()
    );
    // More idle connections than the master has descriptors.
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(("127.0.0.1", cluster.port)).unwrap())
        .collect();
    // Not polled: the master stops taking these at its per-address or its
    // descriptor limit, whichever comes first, so "full" is no one count.
    std::thread::sleep(Duration::from_millis(500));

    let health = http()
        .get(cluster.control_url("/health"))
        .timeout(Duration::from_secs(3))
        .send();
    assert!(
        health.as_ref().is_ok_and(|r| r.status() == 200),
        "/health while the balancer is full: {health:?}\n{}",
        cluster.log_text()
    );

    let before = cluster.worker_pids()[0];
    let mut restart = http().post(cluster.control_url("/workers/0/restart"));
    if let Some(token) = &cluster.token {
        restart = restart.bearer_auth(token);
    }
    assert_eq!(restart.send().unwrap().status(), 202);
    let replaced = wait_until(Duration::from_secs(15), || {
        let status = cluster.try_status()?;
        let worker = &status["workers"][0];
        let pid = worker["pid"].as_u64()? as u32;
        (pid != before && worker["state"] == "ready").then_some(())
    });
    assert!(
        replaced.is_some(),
        "slot 0 restarted with descriptors short:\n{}",
        cluster.log_text()
    );

    drop(idle);
    let answer = wait_until(Duration::from_secs(10), || {
        let r = http()
            .get(cluster.url("/"))
            .timeout(Duration::from_secs(2))
            .send()
            .ok()?;
        (r.status() == 200).then_some(())
    });
    assert!(answer.is_some(), "the balancer serves again");
}

#[test]
fn public_readers_see_no_query_strings_and_the_bearer_scheme_is_case_insensitive() {
    let token = "public-read-token-0123456789";
    let mut cluster = Cluster::start(
        Setup::callable("basic", 1)
            .arg(format!("--control-token={token}"))
            .arg("--control-public-read"),
    );
    let url = cluster.slot_url(0, "/sleep?ms=3000&api_key=s3cr3t");
    let running = std::thread::spawn(move || http().get(url).send().map(|r| r.status()));
    let port = cluster.control_port;
    let current = |auth: Option<&str>| {
        let lines: Vec<String> = auth
            .map(|a| format!("Authorization: {a}"))
            .into_iter()
            .collect();
        wait_until(Duration::from_secs(10), || {
            let (code, body) = raw(port, "GET", "/status", &lines);
            assert_eq!(code, 200, "{body}");
            let status: serde_json::Value = serde_json::from_str(&body).ok()?;
            status["workers"][0]["current_request"]["path"]
                .as_str()
                .map(str::to_string)
        })
        .expect("the request shows in /status")
    };
    assert_eq!(current(None), "/sleep", "public readers get the path only");
    assert_eq!(
        current(Some(&format!("bearer {token}"))),
        "/sleep?ms=3000&api_key=s3cr3t",
        "with the token (lower-case scheme) everything"
    );
    assert_eq!(current(Some("Bearer wrong-token-0123456789")), "/sleep");
    assert_eq!(running.join().unwrap().unwrap(), 200);

    // A failed request is listed among the recent errors, by path only.
    let failed = http()
        .get(cluster.slot_url(0, "/error?api_key=s3cr3t"))
        .send()
        .unwrap();
    assert_eq!(failed.status(), 500);
    let (_, body) = raw(port, "GET", "/status", &[]);
    assert!(body.contains("\"/error\""), "{body}");
    assert!(!body.contains("s3cr3t"), "{body}");
    let (code, body) = raw(
        port,
        "POST",
        "/restart",
        &[format!("Authorization: BEARER {token}")],
    );
    assert_eq!(code, 202, "{body}");
    cluster.remember_pids();
}

/// The soft and hard open-file limits of a process, from /proc.
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_string(), fields[4].to_string())
}

#[test]
fn the_master_raises_its_open_file_limit_and_workers_keep_the_original() {
    let mut cluster = Cluster::start_with(Setup::callable("basic", 1), |cmd| {
        open_file_limit(cmd, 512, 4096)
    });
    assert_eq!(
        open_file_limits(cluster.master_pid()),
        ("4096".into(), "4096".into())
    );
    let worker = cluster.worker_pids()[0];
    assert_eq!(open_file_limits(worker), ("512".into(), "4096".into()));
}
