//! A team coming from PHP-PM keeps its `ppm.json` and its commands, and no
//! command meant for the control plane ever reaches the application.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The `ppm.json` PHP-PM 2.x's `ppm config` writes for a Symfony
/// application: every option with PHP-PM's defaults, the booleans as 0/1,
/// `cgi-path` autodetected, slashes escaped.
const PHP_PM_JSON: &str = r#"{
    "bridge": "HttpKernel",
    "host": "127.0.0.1",
    "port": 8080,
    "workers": 8,
    "app-env": "dev",
    "debug": 1,
    "logging": 1,
    "static-directory": "",
    "bootstrap": "PHPPM\\Bootstraps\\Symfony",
    "max-requests": 1000,
    "populate-server-var": true,
    "socket-path": ".ppm\/run\/",
    "pidfile": ".ppm\/ppm.pid",
    "reload-timeout": 30,
    "cgi-path": "\/usr\/bin\/php-cgi8.2",
    "max-execution-time": 30,
    "memory-limit": -1,
    "ttl": null,
    "limit-concurrent-requests": null,
    "request-body-buffer": null,
    "decorate-workers-output": 1
}"#;

/// The Symfony fixture seen through a directory of its own (symlinks), so
/// the test can put a `ppm.json` (and PHP-PM's `.ppm/`) beside it.
fn symfony_with(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture("symfony")).unwrap() {
        let entry = entry.unwrap();
        std::os::unix::fs::symlink(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    std::fs::write(dir.path().join("ppm.json"), config).unwrap();
    dir
}

fn ppm(args: &[&str]) -> (i32, String, String) {
    run_ppm(args, Duration::from_secs(60))
}

#[test]
fn php_pms_own_ppm_json_starts_ppm_unchanged_and_status_reload_stop_work_by_directory() {
    let base = free_ports(4);
    let (control, port) = (base, base + 1);
    // The one key PHP-PM has no counterpart for: a test cannot use the
    // default control port 5500, and `ppm status DIR` must find it.
    let config = PHP_PM_JSON.replacen('{', &format!("{{\n    \"control-port\": {control},"), 1);
    let app = symfony_with(&config);
    let dir = path_str(app.path());
    let log = app.path().join("ppm.log");
    let mut child = Command::new(PPM)
        .args(["start", dir, &format!("--port={port}"), "--workers=2"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(app.path().join("ppm.err")).unwrap())
        .spawn()
        .unwrap();
    let log_text = || {
        std::fs::read_to_string(app.path().join("ppm.err")).unwrap_or_default()
            + &std::fs::read_to_string(&log).unwrap_or_default()
    };
    let client = http();
    let hello = wait_until(Duration::from_secs(60), || {
        let response = client
            .get(format!("http://127.0.0.1:{port}/hello"))
            .send()
            .ok()?;
        (response.status() == 200).then(|| response.text().unwrap())
    });
    if hello.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "ppm did not serve with PHP-PM's ppm.json; log:\n{}",
            log_text()
        );
    }
    let pidfile = app.path().join(".ppm/ppm.pid");
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap().trim(),
        child.id().to_string(),
        "the relative pidfile lives in the application directory"
    );
    let warnings = log_text();
    for key in [
        "socket-path",
        "populate-server-var",
        "reload-timeout",
        "cgi-path",
    ] {
        assert_eq!(
            warnings.matches(&format!("\"{key}\" is")).count(),
            1,
            "one warning for {key}:\n{warnings}"
        );
    }

    let (code, out, err) = ppm(&["status", dir, "-v"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("workers: 2 total"), "{out}");
    let (code, out, err) = ppm(&["status", "-c", path_str(&app.path().join("ppm.json"))]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = ppm(&["reload", dir]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("restart done: 2 workers replaced"), "{out}");
    let (code, out, err) = ppm(&["stop", dir]);
    assert_eq!(code, 0, "{out}{err}");
    let exited = wait_until(Duration::from_secs(30), || child.try_wait().ok().flatten());
    if exited.is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
    assert!(exited.is_some_and(|s| s.success()), "{}", log_text());
    assert!(!pidfile.exists(), "the pidfile goes at exit");
}

#[test]
fn stop_and_status_on_the_balancer_or_a_slot_port_send_nothing_to_the_application() {
    let app = fixture_copy("basic");
    let seen = app.path().join("seen.log");
    std::fs::write(&seen, "").unwrap();
    let mut setup = Setup::callable("basic", 1);
    setup.app = app.path().to_path_buf();
    let mut cluster = Cluster::start(setup);
    let balancer = cluster.port.to_string();
    let slot = (cluster.port + 1).to_string();
    for args in [
        vec!["stop", balancer.as_str()],
        vec!["restart", balancer.as_str()],
        vec!["reload", slot.as_str()],
        vec!["status", balancer.as_str()],
    ] {
        let (code, out, err) = ppm(&args);
        assert_ne!(code, 0, "{args:?}: {out}{err}");
        assert!(
            err.contains("not its control plane") && err.contains("the control port is 5500"),
            "{args:?}: {err}"
        );
    }
    let (_, _, err) = ppm(&["stop", balancer.as_str()]);
    assert!(err.contains("balancer port"), "{err}");
    // A port where something else answers HTTP: the control plane of this
    // cluster is fine, the application's own port is not.
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        "",
        "the application saw a request"
    );
    assert!(cluster.try_status().is_some(), "still running");
    let control = cluster.control_port.to_string();
    let (code, out, err) = ppm(&["status", control.as_str()]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = ppm(&["stop", control.as_str()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(cluster.wait_exit(Duration::from_secs(30)), Some(0));
}

#[test]
fn a_port_that_is_no_ppm_at_all_is_named_and_gets_no_post() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut request = [0u8; 4096];
        let n = stream.read(&mut request).unwrap_or(0);
        stream
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .unwrap();
        String::from_utf8_lossy(&request[..n]).to_string()
    });
    let (code, _, err) = ppm(&["stop", &port.to_string()]);
    assert_ne!(code, 0);
    assert!(err.contains("is not a ppm control plane"), "{err}");
    let request = server.join().unwrap();
    assert!(request.starts_with("GET /_ppm/health "), "{request}");
}

#[test]
fn a_wrong_token_is_called_wrong_and_worker_rss_is_known_before_any_request() {
    let token = "0123456789abcdef0123";
    let cluster =
        Cluster::start(Setup::callable("basic", 2).arg(format!("--control-token={token}")));
    let status = cluster.try_status().unwrap();
    for worker in status["workers"].as_array().unwrap() {
        assert!(
            worker["rss_bytes"].as_u64().unwrap() > 1024 * 1024,
            "RSS known from boot: {worker}"
        );
    }
    assert_eq!(status["requests_total"], 0);
    let metrics = http()
        .get(cluster.control_url("/metrics"))
        .bearer_auth(token)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let rss_lines: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("ppm_worker_rss_bytes{"))
        .collect();
    assert_eq!(rss_lines.len(), 2, "{metrics}");
    assert!(
        rss_lines.iter().all(|l| !l.ends_with(" 0")),
        "{rss_lines:?}"
    );

    let control = cluster.control_port.to_string();
    let (code, _, err) = ppm(&["status", &control, "--control-token=wrong-token-but-long"]);
    assert_ne!(code, 0);
    assert!(err.contains("the control token was wrong"), "{err}");
    let (code, _, err) = ppm(&["status", &control]);
    assert_ne!(code, 0);
    assert!(err.contains("needs the control token"), "{err}");
    let (code, out, err) = ppm(&["status", &control, &format!("--control-token={token}")]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn status_shows_a_long_last_error_whole() {
    let error = format!(
        "PHP Fatal error:  Uncaught RuntimeException: {} in /srv/app/src/Controller/VeryLongControllerName.php:123",
        "x".repeat(80)
    );
    let status: ppm::control::ClusterStatus = serde_json::from_value(serde_json::json!({
        "master_pid": 1, "app_dir": "/srv/app", "bridge": "httpKernel", "bootstrap": "symfony",
        "php": "/usr/bin/php-cgi", "balancer": "127.0.0.1:5501", "control": "127.0.0.1:5500",
        "uptime_seconds": 1, "total_workers": 1, "ready_workers": 1, "busy_workers": 0,
        "queue_length": 0, "requests_total": 0, "latency_ms": {}, "recent_errors": [],
        "shutting_down": false, "restart": null,
        "workers": [{"slot": 0, "port": 5502, "state": "ready", "pid": 2, "requests": 1,
            "memory_bytes": 0, "restarts": 1, "last_error": error}],
    }))
    .unwrap();
    let table = ppm::control::render_table(&status, false);
    assert!(
        table.contains("VeryLongControllerName.php:123"),
        "file and line shown:\n{table}"
    );
}

#[test]
fn check_fails_when_start_would_fail() {
    let base = free_ports(4);
    let app = fixture("basic");
    let held = std::net::TcpListener::bind(("127.0.0.1", base + 2)).unwrap();
    let args = start_args(&app, 2, base, &["--check"]);
    let (code, out, err) = run_ppm(&args, Duration::from_secs(60));
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{}", base + 2)) && err.contains("slot 0"),
        "{err}"
    );
    drop(held);
    let blocker = tempfile::NamedTempFile::new().unwrap();
    let pidfile = blocker.path().join("ppm.pid");
    let args = start_args(
        &app,
        2,
        base,
        &["--check", &format!("--pidfile={}", pidfile.display())],
    );
    let (code, out, err) = run_ppm(&args, Duration::from_secs(60));
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("cannot create its directory"), "{err}");
    let (code, out, err) = run_ppm(
        &start_args(&app, 2, base, &["--check"]),
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "{out}{err}");
}

/// Sends `target` raw in a request line to `port`; returns the response.
fn raw_get(port: u16, target: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(&request).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).to_string()
}

fn dumped(response: &str) -> serde_json::Value {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body = body.trim();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
}

#[test]
fn quotes_brackets_and_utf8_in_the_target_reach_php_byte_exact_like_nginx() {
    let cluster = Cluster::start(Setup::callable("basic", 1));
    let query = "q=O'Reilly&h=<b>\"x\"</b>&j={a|b}&w=\\^`&u=caf\u{e9}";
    let target = format!("/dump?{query}");
    let response = raw_get(cluster.port, target.as_bytes());
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let server = &dumped(&response)["server"];
    assert_eq!(server["REQUEST_URI"], target.as_str(), "{response}");
    assert_eq!(server["QUERY_STRING"], query, "{response}");
    // In the path too (the fixture names unknown paths in its 404).
    let response = raw_get(cluster.port, "/\u{e9}t\u{e9}/<a>{b}|\\^`\"".as_bytes());
    assert!(
        response.ends_with("no route /\u{e9}t\u{e9}/<a>{b}|\\^`\"\n"),
        "{response}"
    );
    // Absolute-form too.
    let response = raw_get(
        cluster.port,
        format!("http://localhost/dump?{query}").as_bytes(),
    );
    assert_eq!(
        dumped(&response)["server"]["REQUEST_URI"],
        format!("/dump?{query}").as_str()
    );
    // What nginx refuses stays refused.
    for bad in [
        &b"/dump?a=\x01"[..],
        b"/dump?a=\x7f",
        b"/dump?a=\x00b",
        b"/dump#frag",
    ] {
        let response = raw_get(cluster.port, bad);
        assert!(response.starts_with("HTTP/1.1 400"), "{bad:?}: {response}");
    }
    let response = raw_get(cluster.port, b"/dump?a=b c");
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    // A client cannot make PHP see a target other than the one it sent.
    let mut stream = TcpStream::connect(("127.0.0.1", cluster.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(b"GET /dump?a=1 HTTP/1.1\r\nHost: localhost\r\nX-Ppm-Request-Target: /admin\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert_eq!(dumped(&response)["server"]["REQUEST_URI"], "/dump?a=1");
    // Through a real client: what reqwest leaves raw arrives raw.
    let url = reqwest::Url::parse(&cluster.url("/dump?j={a|b}^`\\&q=x")).unwrap();
    let sent = &url.as_str()[url.as_str().find("/dump").unwrap()..];
    let seen: serde_json::Value = http().get(url.clone()).send().unwrap().json().unwrap();
    assert_eq!(seen["server"]["REQUEST_URI"], sent);
    assert!(sent.contains("{a|b}^`\\"), "reqwest sent {sent}");
}

#[test]
fn over_http2_the_same_bytes_reach_php_and_a_client_sent_raw_target_is_not_believed() {
    let cluster = Cluster::start(Setup::callable("basic", 1));
    let port = cluster.port;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // What an HTTP/2 `:path` can hold (`http::Uri`): no `"`, `<`, `>`.
    let target = "/dump?q=O'Reilly&j={a|b}^`\\&u=caf\u{e9}";
    let seen = runtime.block_on(async move {
        use http_body_util::{BodyExt, Empty};
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let mut seen = Vec::new();
        for spoof in [None, Some("/admin")] {
            let mut request = hyper::Request::builder()
                .uri(format!("http://localhost{target}"))
                .header("x-ppm-request-target", spoof.unwrap_or("/other"));
            if spoof.is_none() {
                request = request.header("x-ppm-request-target", "/dump?not=this");
            }
            let request = request.body(Empty::<bytes::Bytes>::new()).unwrap();
            let response =
                tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(response.status(), 200);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            seen.push(serde_json::from_slice::<serde_json::Value>(&body).unwrap());
        }
        seen
    });
    for dump in seen {
        assert_eq!(dump["server"]["REQUEST_URI"], target, "{dump}");
        assert_eq!(
            dump["server"]["QUERY_STRING"],
            &target["/dump?".len()..],
            "{dump}"
        );
    }
}
