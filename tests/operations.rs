//! Operating ppm: configuration file, control plane security.

mod common;

use std::time::Duration;

use common::*;

const TOKEN: &str = "s3cret-token-for-tests";

#[test]
fn a_non_loopback_control_address_without_a_token_refuses_to_start() {
    let base = free_ports(4);
    let app = fixture("basic");
    let args = start_args(&app, 1, base, &["--control-host=0.0.0.0"]);
    let (code, out, err) = run_ppm(&args, Duration::from_secs(10));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("--control-token") && err.contains("0.0.0.0"),
        "{err}"
    );
}

#[test]
fn with_a_token_mutating_requests_need_it() {
    let cluster = Cluster::start(
        Setup::callable("basic", 1)
            .arg("--control-host=0.0.0.0")
            .arg(format!("--control-token={TOKEN}")),
    );
    let client = http();
    let r = client.post(cluster.control_url("/restart")).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client.get(cluster.control_url("/status")).send().unwrap();
    assert_eq!(
        r.status().as_u16(),
        401,
        "reads need the token too by default"
    );
    let r = client.get(cluster.control_url("/health")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "probes stay open");
    let r = client
        .post(cluster.control_url("/restart"))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client
        .post(cluster.control_url("/restart"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);

    // The CLI passes the token from the environment or --control-token.
    let port = cluster.control_port.to_string();
    let (code, _, err) = run_ppm(&["status", &port], Duration::from_secs(10));
    assert_eq!(code, 1);
    assert!(err.contains("PPM_CONTROL_TOKEN"), "{err}");
    let (code, out, err) = run_ppm(
        &["status", &port, "--control-token", TOKEN],
        Duration::from_secs(10),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("SLOT"));
}

#[test]
fn public_read_leaves_status_open_but_not_the_mutating_endpoints() {
    let cluster = Cluster::start(
        Setup::callable("basic", 1)
            .arg("--control-host=0.0.0.0")
            .arg(format!("--control-token={TOKEN}"))
            .arg("--control-public-read"),
    );
    let client = http();
    assert_eq!(
        client
            .get(cluster.control_url("/status"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        client
            .post(cluster.control_url("/stop"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        401
    );
}

#[test]
fn a_cross_origin_browser_request_cannot_change_the_cluster() {
    let cluster = Cluster::start(Setup::callable("basic", 1));
    let client = http();
    let r = client
        .post(cluster.control_url("/restart"))
        .header("Origin", "http://evil.example")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = client
        .post(cluster.control_url("/restart"))
        .header(
            "Origin",
            format!("http://127.0.0.1:{}", cluster.control_port),
        )
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let r = client.get(cluster.control_url("/restart")).send().unwrap();
    assert_eq!(
        r.status().as_u16(),
        405,
        "mutating endpoints only accept POST"
    );
}

#[test]
fn ppm_json_in_the_app_directory_configures_start_and_the_cli() {
    let app = fixture_copy("basic");
    let base = free_ports(5);
    let settings = serde_json::json!({
        "bridge": "callable",
        "bootstrap": "app.php",
        "workers": 2,
        "port": base + 1,
        "control-port": base,
    });
    std::fs::write(app.path().join("ppm.json"), settings.to_string()).unwrap();
    let mut child = std::process::Command::new(PPM)
        .args(["start", path_str(app.path()), "--workers=3"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{base}/status");
    let status = wait_until(Duration::from_secs(20), || {
        let status: serde_json::Value = http().get(&url).send().ok()?.json().ok()?;
        (status["ready_workers"] == 3).then_some(status)
    });
    // ppm stop without a port finds the master through ./ppm.json.
    let stop = std::process::Command::new(PPM)
        .arg("stop")
        .current_dir(app.path())
        .output()
        .unwrap();
    let exited = wait_until(Duration::from_secs(20), || child.try_wait().ok().flatten());
    if exited.is_none() {
        let _ = child.kill();
    }
    let status = status.expect("the cluster came up with 3 workers (command line beats file)");
    assert_eq!(status["workers"][2]["port"], base + 4);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert!(exited.is_some());
}

#[test]
fn ppm_config_writes_the_file_and_shows_settings() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run_ppm(
        &[
            "config",
            path_str(dir.path()),
            "--workers=3",
            "--bridge=callable",
            "--max-requests=1000",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(code, 0, "{out}{err}");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("ppm.json")).unwrap())
            .unwrap();
    assert_eq!(
        written,
        serde_json::json!({"workers": 3, "bridge": "callable", "max-requests": 1000}),
        "the options given, also one equal to its default"
    );
    let (code, out, _) = run_ppm(
        &["config", path_str(dir.path()), "--show-option", "workers"],
        Duration::from_secs(10),
    );
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "3");
    let (code, out, _) = run_ppm(
        &["config", path_str(dir.path()), "--show-option", "max-queue"],
        Duration::from_secs(10),
    );
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "1024", "a default");
}

#[test]
fn a_bad_config_file_names_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ppm.json"), r#"{"max-qeue": 5}"#).unwrap();
    let (code, _, err) = run_ppm(&["start", path_str(dir.path())], Duration::from_secs(10));
    assert_eq!(code, 1);
    assert!(
        err.contains("ppm.json") && err.contains("max-qeue") && err.contains("max-queue"),
        "{err}"
    );
}

/// Parses Prometheus text with the reference Python client's parser and
/// returns {sample name with labels: value}.
fn parse_metrics(text: &str) -> serde_json::Value {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    python_json(
        script,
        text,
        "the Prometheus parser rejected /metrics (pip install prometheus_client?)",
    )
}

#[test]
fn metrics_parse_as_prometheus_text_and_count_every_request() {
    let cluster = Cluster::start(Setup::callable("basic", 2));
    let client = http();
    for _ in 0..17 {
        assert_eq!(
            client
                .get(cluster.url("/"))
                .send()
                .unwrap()
                .status()
                .as_u16(),
            200
        );
    }
    for _ in 0..3 {
        assert_eq!(
            client
                .get(cluster.url("/missing"))
                .send()
                .unwrap()
                .status()
                .as_u16(),
            404
        );
    }
    assert_eq!(
        client
            .get(cluster.slot_url(1, "/error"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        500
    );
    let text = client
        .get(cluster.control_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let m = parse_metrics(&text);
    let sum = |prefix: &str| -> f64 {
        m.as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.as_f64().unwrap())
            .sum()
    };
    assert_eq!(sum("ppm_requests_total{"), 21.0, "{text}");
    assert_eq!(sum("ppm_requests_total{code=2xx"), 17.0);
    assert_eq!(sum("ppm_requests_total{code=4xx"), 3.0);
    assert_eq!(m["ppm_requests_total{code=5xx,slot=1}"], 1.0);
    assert_eq!(m["ppm_request_duration_seconds_count{}"], 21.0);
    assert_eq!(m["ppm_queue_wait_seconds_count{}"], 21.0);
    assert_eq!(m["ppm_workers{state=ready}"], 2.0);
    assert!(m["ppm_worker_memory_bytes{slot=0}"].as_f64().unwrap() > 0.0);
    assert!(m["ppm_master_rss_bytes{}"].as_f64().unwrap() > 0.0);
    assert!(m["ppm_sent_bytes_total{}"].as_f64().unwrap() > 0.0);
    let status = cluster.try_status().unwrap();
    assert_eq!(status["requests_total"], 21);
    assert!(status["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert_eq!(status["recent_errors"][0]["path"], "/error");
}

#[test]
fn worker_restarts_are_counted_by_reason_in_metrics() {
    let cluster = Cluster::start(Setup::callable("basic", 1).arg("--max-requests=3"));
    let client = http();
    for _ in 0..3 {
        client.get(cluster.url("/")).send().unwrap();
    }
    let counted = wait_until(Duration::from_secs(10), || {
        let text = client
            .get(cluster.control_url("/metrics"))
            .send()
            .ok()?
            .text()
            .ok()?;
        let m = parse_metrics(&text);
        (m["ppm_worker_restarts_total{reason=max-requests,slot=0}"] == 1.0).then_some(())
    });
    assert!(counted.is_some());
}

fn write_version(app: &std::path::Path, body: &str) {
    // Write then rename, as editors and deploy tools do.
    let tmp = app.join(".version.php.tmp");
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, app.join("version.php")).unwrap();
}

/// Two workers of a copy of the reload fixture, in debug mode, once the
/// watcher has the files a worker reported as included (logged at debug).
fn debug_cluster(app: &tempfile::TempDir) -> Cluster {
    let setup = Setup {
        app: app.path().to_path_buf(),
        ..Setup::callable("reload", 2).arg("--debug")
    };
    let cluster = Cluster::start_with(setup, |command| {
        command.env("PPM_LOG", "info,ppm::master::reload=debug");
    });
    cluster.wait_log("more included files");
    cluster
}

fn restart_id(cluster: &Cluster) -> u64 {
    cluster.try_status().unwrap()["restart"]["id"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn debug_mode_picks_up_an_edited_file_within_two_seconds_without_failures() {
    let app = fixture_copy("reload");
    let cluster = debug_cluster(&app);
    let load = Load::start(cluster.url("/"), 4);
    std::thread::sleep(Duration::from_millis(500));
    write_version(app.path(), "<?php return 'v2';\n");
    let changed = std::time::Instant::now();
    let seen_v2 = wait_until(Duration::from_secs(5), || {
        (http().get(cluster.url("/")).send().ok()?.text().ok()? == "v2")
            .then_some(changed.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let seen = load.stop();
    let took = seen_v2.expect("the new code answers");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(seen.iter().all(|s| s.status == 200), "no request failed");
}

#[test]
fn a_burst_of_writes_gives_one_restart() {
    let app = fixture_copy("reload");
    let cluster = debug_cluster(&app);
    let before = restart_id(&cluster);
    for i in 0..200 {
        write_version(app.path(), &format!("<?php return 'burst{i}';\n"));
    }
    let done = cluster
        .wait_restart("succeeded", Duration::from_secs(10))
        .map(|_| ());
    assert!(done.is_some());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        restart_id(&cluster),
        before + 1,
        "one roll for the whole burst"
    );
    assert_eq!(
        http().get(cluster.url("/")).send().unwrap().text().unwrap(),
        "burst199"
    );
}

#[test]
fn a_syntax_error_keeps_the_old_code_answering_and_fixing_it_recovers() {
    let app = fixture_copy("reload");
    let cluster = debug_cluster(&app);
    write_version(app.path(), "<?php return 'broken'\n");
    let failed = cluster
        .wait_restart("failed", Duration::from_secs(10))
        .expect("the roll failed");
    assert!(
        failed["restart"]["error"]
            .as_str()
            .unwrap()
            .contains("syntax error"),
        "{failed}"
    );
    assert!(
        failed["workers"][0]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("syntax error"),
        "{failed:#}\n{}",
        cluster.log_text()
    );
    assert!(cluster.log_text().contains("syntax error"));
    for _ in 0..5 {
        assert_eq!(
            http().get(cluster.url("/")).send().unwrap().text().unwrap(),
            "v1"
        );
    }
    write_version(app.path(), "<?php return 'fixed';\n");
    let fixed = wait_until(Duration::from_secs(10), || {
        (http().get(cluster.url("/")).send().ok()?.text().ok()? == "fixed").then_some(())
    });
    assert!(
        fixed.is_some(),
        "the fix was picked up; log:\n{}",
        cluster.log_text()
    );
}

#[test]
fn sigusr2_rolls_the_workers_like_sighup() {
    let mut cluster = Cluster::start(Setup::callable("basic", 2));
    let before = cluster.worker_pids();
    cluster.signal(nix::sys::signal::Signal::SIGUSR2);
    let rolled = cluster
        .wait_restart("succeeded", Duration::from_secs(20))
        .map(|_| ());
    assert!(rolled.is_some());
    let after = cluster.worker_pids();
    assert!(
        before.iter().all(|p| !after.contains(p)),
        "{before:?} -> {after:?}"
    );
}

#[test]
fn a_second_sigint_stops_at_once_without_waiting_for_requests() {
    let mut cluster = Cluster::start(Setup::callable("basic", 1).arg("--shutdown-timeout=30"));
    let slow = {
        let url = cluster.url("/sleep?ms=20000");
        std::thread::spawn(move || http().get(url).send().map(|r| r.status().as_u16()))
    };
    cluster.wait_request_running();
    cluster.signal(nix::sys::signal::Signal::SIGINT);
    cluster.wait_log("stopping: finishing in-flight requests");
    let started = std::time::Instant::now();
    cluster.signal(nix::sys::signal::Signal::SIGINT);
    let code = cluster.wait_exit(Duration::from_secs(5));
    assert!(
        code.is_some(),
        "the master stopped within 5 s of the second SIGINT"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    cluster.assert_no_workers_left(Duration::from_secs(2));
    let outcome = slow.join().unwrap();
    assert!(
        outcome.map(|s| s != 200).unwrap_or(true),
        "the in-flight request was cut"
    );
}

#[test]
fn the_pidfile_is_written_locked_against_a_second_master_and_removed_at_exit() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("ppm.pid");
    let mut cluster =
        Cluster::start(Setup::callable("basic", 1).arg(format!("--pidfile={}", pidfile.display())));
    let written = std::fs::read_to_string(&pidfile).unwrap();
    assert_eq!(written.trim(), cluster.master_pid().to_string());
    let base = free_ports(3);
    let app = fixture("basic");
    let pid_arg = format!("--pidfile={}", pidfile.display());
    let args = start_args(&app, 1, base, &[&pid_arg]);
    let (code, _, err) = run_ppm(&args, Duration::from_secs(10));
    assert_eq!(code, 1);
    assert!(
        err.contains("another ppm master") && err.contains(&cluster.master_pid().to_string()),
        "{err}"
    );
    cluster.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(cluster.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(!pidfile.exists(), "removed at exit");
}

#[test]
fn ppm_status_watch_refreshes_the_table() {
    let cluster = Cluster::start(Setup::callable("basic", 1));
    let mut child = std::process::Command::new(PPM)
        .args(["status", &cluster.control_port.to_string(), "--watch"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let (out, mut stdout) = (out.clone(), child.stdout.take().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut stdout, &mut buf) {
                out.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    // Until it has printed the table twice (or 10 s).
    let slots = || {
        String::from_utf8_lossy(&out.lock().unwrap())
            .matches("SLOT")
            .count()
    };
    wait_until(Duration::from_secs(10), || (slots() >= 2).then_some(()));
    let _ = child.kill();
    let _ = child.wait();
    reader.join().unwrap();
    let output = out.lock().unwrap().clone();
    let text = String::from_utf8_lossy(&output);
    assert!(text.matches("SLOT").count() >= 2, "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "no colours or cursor codes when not on a terminal"
    );
}

#[test]
fn check_passes_a_good_app_and_shows_the_php_error_of_a_broken_one() {
    let good = fixture("basic");
    let (code, out, err) = run_ppm(
        &[
            "start",
            path_str(&good),
            "--bridge=callable",
            "--bootstrap=app.php",
            "--check",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("configuration OK"), "{out}");
    let broken = fixture("broken");
    let (code, _, err) = run_ppm(
        &[
            "configtest",
            path_str(&broken),
            "--bridge=callable",
            "--bootstrap=app.php",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("syntax error") && err.contains("app.php"),
        "{err}"
    );
    // The php-cgi runtime's options are gone, and say what replaced them.
    for (option, says) in [
        ("--cgi-path=/usr/bin/php-cgi", "php-config"),
        ("--runtime=cgi", "host PHP in a ppm process"),
    ] {
        let (code, _, err) = run_ppm(
            &[
                "configtest",
                path_str(&good),
                "--bridge=callable",
                "--bootstrap=app.php",
                option,
            ],
            Duration::from_secs(30),
        );
        assert_eq!(code, 2, "{option}: {err}");
        let name = option.split('=').next().unwrap();
        assert!(
            err.contains(&format!("{name} is gone")) && err.contains(says),
            "{option}: {err}"
        );
    }
}

#[test]
fn drain_delay_reports_not_ready_while_the_ports_still_serve() {
    let mut cluster = Cluster::start(Setup::callable("basic", 1).arg("--drain-delay=2"));
    let client = http();
    assert_eq!(
        client
            .get(cluster.slot_url(0, "/_ppm/health"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    cluster.signal(nix::sys::signal::Signal::SIGTERM);
    let not_ready = wait_until(Duration::from_secs(5), || {
        let r = client.get(cluster.control_url("/ready")).send().ok()?;
        (r.status().as_u16() == 503).then_some(())
    });
    assert!(not_ready.is_some(), "/ready says 503 once stopping");
    assert_eq!(
        client
            .get(cluster.slot_url(0, "/_ppm/health"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        503
    );
    assert_eq!(
        client
            .get(cluster.url("/"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200,
        "requests are still served during the drain delay"
    );
    assert_eq!(cluster.wait_exit(Duration::from_secs(20)), Some(0));
    cluster.assert_no_workers_left(Duration::from_secs(2));
}
