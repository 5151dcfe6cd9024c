//! The native runtime, end to end: `ppm worker` hosts PHP
//! in its own process through ppm's SAPI, and each outcome of a request
//! (normal, exit(), uncaught exception, fatal error, timeout,
//! out-of-memory) has its defined answer (doc/bridges.md).

mod common;

use std::time::{Duration, Instant};

use common::native::NativeServer;
use common::*;
use serde_json::Value;

fn start(extra: &[&str]) -> NativeServer {
    let mut args = vec!["--bridge", "callable", "--bootstrap", "app.php"];
    args.extend_from_slice(extra);
    NativeServer::start(&fixture("native"), &args)
}

fn get(server: &NativeServer, path: &str) -> (u16, String) {
    let response = http()
        .get(server.url(path))
        .send()
        .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", server.log_text()));
    let status = response.status().as_u16();
    (status, response.text().unwrap_or_default())
}

fn json(server: &NativeServer, path: &str) -> Value {
    let (status, body) = get(server, path);
    assert_eq!(status, 200, "GET {path}: {body}\n{}", server.log_text());
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

fn whoami(server: &NativeServer) -> (u64, String) {
    let me = json(server, "/whoami");
    (
        me["pid"].as_u64().unwrap(),
        me["generation"].as_str().unwrap().to_string(),
    )
}

#[test]
fn php_runs_inside_the_worker_process_as_cgi_fcgi_with_opcache() {
    let server = start(&[]);
    assert_eq!(get(&server, "/"), (200, "hello".into()));
    let (pid, _) = whoami(&server);
    assert_eq!(
        pid,
        u64::from(server.pid()),
        "PHP runs in the ppm process itself"
    );
    assert_eq!(get(&server, "/sapi"), (200, "cgi-fcgi 1".into()));
}

#[test]
fn exit_sends_what_the_app_built_and_restarts_the_script_in_process() {
    let server = start(&[]);
    let (pid, generation) = whoami(&server);
    let response = http().get(server.url("/exit")).send().unwrap();
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(response.headers()["x-built"], "before-exit");
    assert_eq!(response.text().unwrap(), "partial output before exit");
    let (pid_after, generation_after) = whoami(&server);
    assert_eq!(pid_after, pid, "no new process");
    assert_ne!(generation_after, generation, "the worker script restarted");
    // exit() in a loop keeps working.
    for _ in 0..5 {
        assert_eq!(get(&server, "/exit").0, 202);
        assert_eq!(get(&server, "/").1, "hello");
    }
}

#[test]
fn an_uncaught_exception_answers_500_and_the_worker_continues() {
    let server = start(&[]);
    let (pid, generation) = whoami(&server);
    let (status, _) = get(&server, "/exception");
    assert_eq!(status, 500);
    assert_eq!(
        whoami(&server),
        (pid, generation.clone()),
        "same script, same bootstrap"
    );
    assert!(
        wait_until(Duration::from_secs(5), || server
            .log_text()
            .contains("Uncaught RuntimeException: fixture exception")
            .then_some(()))
        .is_some(),
        "PHP's own error reached the log:\n{}",
        server.log_text()
    );
    // The app's own handler, when it set one, answers instead.
    assert_eq!(
        get(&server, "/exception-handled"),
        (503, "handled: for the handler".into())
    );
    assert_eq!(whoami(&server), (pid, generation));
}

#[test]
fn fatal_errors_timeouts_and_out_of_memory_answer_500_and_restart_in_process() {
    let server = start(&["--php-ini", "display_errors=0"]);
    for path in ["/fatal", "/timeout", "/oom"] {
        let (pid, generation) = whoami(&server);
        let started = Instant::now();
        let (status, _) = get(&server, path);
        assert_eq!(status, 500, "{path}\n{}", server.log_text());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path} took too long"
        );
        let (pid_after, generation_after) = whoami(&server);
        assert_eq!(pid_after, pid, "{path}: same process");
        assert_ne!(generation_after, generation, "{path}: the script restarted");
    }
    let log = server.log_text();
    for expected in [
        "Cannot declare class FixtureTwice",
        "Maximum execution time of 1 second exceeded",
        "Allowed memory size",
    ] {
        assert!(log.contains(expected), "log lacks {expected:?}:\n{log}");
    }
}

#[test]
fn uploads_and_php_input_are_php_s_own() {
    let server = start(&[]);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let form = reqwest::blocking::multipart::Form::new().part(
        "f",
        reqwest::blocking::multipart::Part::bytes(data.clone()).file_name("blob.bin"),
    );
    let upload: Value = http()
        .post(server.url("/upload"))
        .multipart(form)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(upload["name"], "blob.bin");
    assert_eq!(upload["size"], 300_000);
    assert_eq!(upload["is_uploaded"], true, "{upload}");
    assert_eq!(upload["moved"], true, "{upload}");
    assert_eq!(
        upload["sha1"],
        sha1_smol::Sha1::from(&data).digest().to_string()
    );

    for method in [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::PATCH,
    ] {
        let input: Value = http()
            .request(method.clone(), server.url("/input"))
            .header("Content-Type", "application/json")
            .body(r#"{"a":[1,2],"b":"c"}"#)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(input["method"], method.as_str());
        assert_eq!(input["json"]["a"][1], 2, "{method}: {input}");
        assert_eq!(input["post"], serde_json::json!([]));
    }
}

#[test]
fn an_unread_body_does_not_reach_the_next_request() {
    let server = start(&[]);
    // The route ignores the body; the next request must parse cleanly.
    let body = "x".repeat(200_000);
    let (status, text) = {
        let r = http().post(server.url("/")).body(body).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    assert_eq!((status, text.as_str()), (200, "hello"));
    assert_eq!(get(&server, "/"), (200, "hello".into()));
}

#[test]
fn fastcgi_finish_request_answers_before_the_work_after_it_ends() {
    let server = start(&[]);
    let started = Instant::now();
    let (status, body) = get(&server, "/finish?ms=1500");
    assert_eq!((status, body.as_str()), (200, "answered"));
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "the answer waited for the work after fastcgi_finish_request(): {:?}",
        started.elapsed()
    );
    // The next request waits until that work is done (the worker is not
    // ready before), and is answered normally.
    assert_eq!(get(&server, "/"), (200, "hello".into()));
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

#[test]
fn two_users_interleaving_see_nothing_of_each_other() {
    let server = start(&[]);
    let alice = reqwest::blocking::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let bob = reqwest::blocking::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let session = |client: &reqwest::blocking::Client, query: &str| -> Value {
        client
            .get(server.url(&format!("/session{query}")))
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let mut ids = Vec::new();
    for round in 0..100 {
        let a = session(&alice, &format!("?set=alice{round}"));
        assert_eq!(a["before"], "unset", "round {round}: {a}");
        assert_eq!(a["user"], format!("alice{round}"));
        let b = session(&bob, "");
        assert_eq!(
            b["before"], "unset",
            "round {round}: bob sees a session before session_start(): {b}"
        );
        if round == 0 {
            assert_eq!(b["user"], Value::Null, "bob never set a user: {b}");
            ids.push(b["id"].clone());
        } else {
            assert_eq!(b["id"], ids[0], "bob keeps his own session");
            assert_eq!(b["user"], Value::Null, "round {round}: {b}");
        }
        // Status, headers, ini and an open output buffer do not leak either.
        let (status, _) = get(&server, "/leaky");
        assert_eq!(status, 299);
        let state = json(&server, "/state");
        assert_eq!(state["status"], 200, "{state}");
        assert_eq!(
            state["headers"],
            serde_json::json!(["Content-Type: application/json"]),
            "{state}"
        );
        assert_eq!(state["precision"], "14", "{state}");
        assert_eq!(state["ob_level"], 1, "only PHP's default buffer: {state}");
        assert_eq!(state["last_error"], Value::Null, "{state}");
    }
}

#[test]
fn getallheaders_lists_the_request_headers_like_php_fpm() {
    let server = start(&[]);
    let headers: Value = http()
        .get(server.url("/headers"))
        .header("X-Custom-Thing", "1")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(headers["X-Custom-Thing"], "1", "{headers}");
    assert_eq!(headers["Content-Type"], "", "{headers}");
}

#[test]
fn a_boot_failure_is_reported_with_php_s_message() {
    let (code, _, err) = run_ppm(
        &[
            "worker",
            path_str(&fixture("native")),
            "--bridge",
            "callable",
            "--bootstrap",
            "missing.php",
            "--listen",
            &format!("127.0.0.1:{}", free_ports(1)),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("bootstrap file not found"), "{err}");
}

#[test]
fn the_worker_stops_on_sigterm() {
    let mut server = start(&[]);
    assert_eq!(get(&server, "/"), (200, "hello".into()));
    let pid = nix::unistd::Pid::from_raw(server.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(
        server.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        server.log_text()
    );
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Uploads 60 MB to the fixture's `/upload`, which checks it with
/// is_uploaded_file(), moves it with move_uploaded_file() and hashes it.
fn upload_60_mb(url: &str, log: impl Fn() -> String) {
    let data: Vec<u8> = (0..60 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let digest = sha1_smol::Sha1::from(&data).digest().to_string();
    let form = reqwest::blocking::multipart::Form::new().part(
        "f",
        reqwest::blocking::multipart::Part::bytes(data).file_name("big.bin"),
    );
    let upload: Value = http()
        .post(url)
        .multipart(form)
        .timeout(Duration::from_secs(60))
        .send()
        .and_then(|response| response.json())
        .unwrap_or_else(|e| panic!("uploading 60 MB: {e}\n{}", log()));
    assert_eq!(upload["is_uploaded"], true, "{upload}");
    assert_eq!(upload["moved"], true, "{upload}");
    assert_eq!(upload["sha1"], digest.as_str(), "{upload}");
}

#[test]
fn a_60_mb_upload_streams_into_php_s_temp_file_without_being_held_in_memory() {
    let server = start(&[
        "--php-ini",
        "upload_max_filesize=100M",
        "--php-ini",
        "post_max_size=100M",
    ]);
    for _ in 0..20 {
        get(&server, "/");
    }
    let (idle, _) = rss_kib(server.pid());
    upload_60_mb(&server.url("/upload"), || server.log_text());
    let (_, peak) = rss_kib(server.pid());
    assert!(
        peak < idle * 2,
        "peak RSS {peak} KiB during a 60 MB upload, idle {idle} KiB: the body was held in memory"
    );
}

#[test]
fn a_60_mb_upload_through_the_master_keeps_the_master_and_the_worker_small() {
    let mut cluster = Cluster::start(
        Setup::callable("native", 1)
            .arg("--php-ini=upload_max_filesize=100M")
            .arg("--php-ini=post_max_size=100M")
            .arg("--max-body-size=104857600"),
    );
    for _ in 0..20 {
        let hello = http().get(cluster.url("/")).send().unwrap();
        assert_eq!(hello.status(), 200, "{}", cluster.log_text());
    }
    let master = cluster.master_pid();
    let worker = cluster.worker_pids()[0];
    let (master_idle, _) = rss_kib(master);
    let (worker_idle, _) = rss_kib(worker);
    upload_60_mb(&cluster.url("/upload"), || cluster.log_text());
    // The same worker answered (its peak is the one measured).
    assert_eq!(cluster.worker_pids(), vec![worker]);
    for (what, pid, idle) in [
        ("master", master, master_idle),
        ("worker", worker, worker_idle),
    ] {
        let (_, peak) = rss_kib(pid);
        eprintln!("{what}: RSS idle {idle} KiB, peak {peak} KiB");
        assert!(
            peak < idle * 2,
            "{what}: peak RSS {peak} KiB during a 60 MB upload, idle {idle} KiB"
        );
    }
}

#[test]
fn a_location_header_redirects_like_php_fpm() {
    let server = start(&[]);
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = client.get(server.url("/redirect")).send().unwrap();
    assert_eq!(get.status().as_u16(), 302);
    assert_eq!(get.headers()["location"], "/elsewhere");
    // A POST too: PHP's 303 needs a protocol above HTTP/1.0, which
    // php-fpm never tells it (tests/superglobals.rs compares).
    let post = client
        .post(server.url("/redirect"))
        .body("x")
        .send()
        .unwrap();
    assert_eq!(post.status().as_u16(), 302);
    assert_eq!(post.headers()["location"], "/elsewhere");
}
