//! The cluster end to end: a real master, real PHP workers, real HTTP.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

#[test]
fn the_balancer_reaches_every_worker_round_robin() {
    let mut cluster = Cluster::start(Setup::callable("basic", 4));
    let client = http();
    let mut pids = HashMap::new();
    for _ in 0..40 {
        // Rotation is over idle workers: let the last one finish its
        // terminate work and reset first, so a loaded machine does not
        // turn a late `request_done` into a skipped turn.
        let idle = wait_until(Duration::from_secs(5), || {
            let status = cluster.try_status()?;
            (status["ready_workers"].as_u64()? == 4).then_some(())
        });
        assert!(idle.is_some(), "every worker is idle between requests");
        let body = client
            .get(cluster.url("/pid"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        *pids.entry(body).or_insert(0) += 1;
    }
    assert_eq!(pids.len(), 4, "every worker answered: {pids:?}");
    let status = cluster.status();
    let counts: Vec<u64> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["requests"].as_u64().unwrap())
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), 40);
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(
        max - min <= 1,
        "sequential requests rotate over idle workers: {counts:?}"
    );
}

#[test]
fn each_slot_port_reaches_its_own_worker() {
    let mut cluster = Cluster::start(Setup::callable("basic", 3));
    let pids = cluster.worker_pids();
    let client = http();
    for slot in 0..3u16 {
        for _ in 0..3 {
            let body = client
                .get(cluster.slot_url(slot, "/pid"))
                .send()
                .unwrap()
                .text()
                .unwrap();
            assert_eq!(body, pids[slot as usize].to_string(), "slot {slot}");
        }
    }
    // A request's memory figures come with the worker's stats, just after
    // its response.
    let status = wait_until(Duration::from_secs(5), || {
        let status = cluster.status();
        let workers = status["workers"].as_array()?;
        workers
            .iter()
            .all(|w| w["memory_bytes"].as_u64() > Some(0))
            .then_some(status)
    })
    .expect("every worker reports its memory");
    for w in status["workers"].as_array().unwrap() {
        assert_eq!(w["requests"], 3);
        // A worker's frame socket is a socket pair: no name to show.
        assert!(w.get("socket").is_none(), "{w}");
        assert_eq!(w["state"], "ready");
    }
}

#[test]
fn requests_beyond_the_worker_count_queue_and_complete() {
    let cluster = Cluster::start(Setup::callable("basic", 2));
    let started = Instant::now();
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let url = cluster.url("/sleep?ms=200");
            std::thread::spawn(move || http().get(url).send().map(|r| r.status().as_u16()))
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.join().unwrap().unwrap(), 200);
    }
    // 10 requests of 200 ms over 2 workers cannot finish in under 1 s.
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let cluster = Cluster::start(Setup::callable("basic", 1).arg("--max-queue=1"));
    let send = || {
        let url = cluster.url("/sleep?ms=800");
        std::thread::spawn(move || {
            let r = http().get(url).send().unwrap();
            (
                r.status().as_u16(),
                r.headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string()),
            )
        })
    };
    // One request on the worker, one in the queue, then two more.
    let mut handles = vec![send()];
    cluster.wait_request_running();
    handles.push(send());
    cluster.wait_queued(1);
    handles.extend([send(), send()]);
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        results.iter().filter(|r| r.0 == 200).count(),
        2,
        "{results:?}"
    );
    let rejected: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!(rejected.len(), 2, "{results:?}");
    assert!(rejected.iter().all(|r| r.1.as_deref() == Some("1")));
}

#[test]
fn a_request_waits_no_longer_than_the_queue_timeout() {
    let cluster = Cluster::start(Setup::callable("basic", 1).arg("--queue-timeout=0.5"));
    let slow = {
        let url = cluster.url("/sleep?ms=2000");
        std::thread::spawn(move || http().get(url).send().unwrap().status().as_u16())
    };
    cluster.wait_request_running();
    let started = Instant::now();
    let r = http().get(cluster.url("/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(slow.join().unwrap(), 200);
}

#[test]
fn php_failures_end_as_under_php_fpm_and_the_next_request_works() {
    let mut cluster = Cluster::start(Setup::callable("basic", 1));
    let client = http();

    let r = client.get(cluster.url("/error")).send().unwrap();
    assert_eq!(r.status().as_u16(), 500);
    assert!(
        cluster.log_text().contains("fixture error on purpose"),
        "the error is logged"
    );
    assert_eq!(
        client
            .get(cluster.url("/"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );

    let r = client.get(cluster.url("/redirect-exit")).send().unwrap();
    assert_eq!(r.status().as_u16(), 302);
    assert_eq!(r.headers()["location"], "/x");
    assert_eq!(r.text().unwrap(), "partial output before exit");
    // The worker that called exit() is replaced; the next request is served.
    let r = client.get(cluster.url("/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let before = cluster.worker_pids()[0];
    let r = client.get(cluster.url("/crash")).send().unwrap();
    assert_eq!(r.status().as_u16(), 502);
    let r = client.get(cluster.url("/pid")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_ne!(
        r.text().unwrap(),
        before.to_string(),
        "a fresh worker serves"
    );
}

#[test]
fn a_worker_killed_mid_request_gives_502_and_is_replaced() {
    let mut cluster = Cluster::start(Setup::callable("basic", 2));
    let pids = cluster.worker_pids();
    let victim = pids[0];
    let slow = {
        let url = cluster.slot_url(0, "/sleep?ms=3000");
        std::thread::spawn(move || http().get(url).send().unwrap().status().as_u16())
    };
    cluster.wait_request_running();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    assert_eq!(slow.join().unwrap(), 502);
    let replaced = wait_until(Duration::from_secs(10), || {
        let pid = cluster.worker_pids()[0];
        (pid != 0 && pid != victim).then_some(pid)
    });
    assert!(replaced.is_some(), "slot 0 got a new worker");
    assert_eq!(
        http()
            .get(cluster.slot_url(0, "/"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let status = cluster.status();
    assert_eq!(status["workers"][0]["restarts"], 1);
    assert!(status["workers"][0]["last_exit"]
        .as_str()
        .unwrap()
        .contains("signal 9"));
}

#[test]
fn a_broken_bootstrap_shows_the_php_error_and_is_retried_with_backoff() {
    let mut setup = Setup::callable("broken", 1);
    setup.wait_ready = false;
    let cluster = Cluster::start(setup);
    let status = wait_until(Duration::from_secs(15), || {
        let status = cluster.try_status()?;
        let error = status["workers"][0]["last_error"].as_str()?.to_string();
        (cluster.log_text().matches("failed to boot").count() >= 3).then_some((status, error))
    });
    let (status, error) =
        status.unwrap_or_else(|| panic!("no repeated boot failure; log:\n{}", cluster.log_text()));
    assert!(error.contains("syntax error"), "{error}");
    assert!(error.contains("app.php"), "{error}");
    assert!(
        matches!(
            status["workers"][0]["state"].as_str(),
            Some("backoff" | "starting")
        ),
        "{status}"
    );
    let log = cluster.log_text();
    assert!(
        log.contains("next attempt in 0.5s") && log.contains("next attempt in 1.0s"),
        "{log}"
    );
    let ready = http().get(cluster.control_url("/ready")).send().unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    assert_eq!(
        http()
            .get(cluster.control_url("/health"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

#[test]
fn ppm_stop_returns_once_everything_exited() {
    let mut cluster = Cluster::start(Setup::callable("basic", 3));
    let port = cluster.control_port.to_string();
    let (code, out, err) = run_ppm(&["stop", &port], Duration::from_secs(30));
    assert_eq!(code, 0, "{out}{err}");
    // `ppm stop` waited: the master is gone by now, and so are its workers.
    assert_eq!(cluster.wait_exit(Duration::from_secs(1)), Some(0));
    cluster.assert_no_workers_left(Duration::from_millis(100));
}

#[test]
fn sigterm_lets_the_in_flight_request_finish_then_exits_cleanly() {
    let mut cluster = Cluster::start(Setup::callable("basic", 2));
    let slow = {
        let url = cluster.url("/sleep?ms=1500");
        std::thread::spawn(move || {
            http()
                .get(url)
                .send()
                .map(|r| (r.status().as_u16(), r.text().unwrap()))
        })
    };
    cluster.wait_request_running();
    cluster.signal(Signal::SIGTERM);
    assert_eq!(slow.join().unwrap().unwrap(), (200, "slept".to_string()));
    assert_eq!(
        cluster.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        cluster.log_text()
    );
    cluster.assert_no_workers_left(Duration::from_secs(2));
}

#[test]
fn sigint_stops_the_master() {
    let mut cluster = Cluster::start(Setup::callable("basic", 2));
    cluster.signal(Signal::SIGINT);
    assert_eq!(cluster.wait_exit(Duration::from_secs(20)), Some(0));
    cluster.assert_no_workers_left(Duration::from_secs(2));
}

#[test]
fn kill_9_of_the_master_leaves_no_worker_behind() {
    let mut cluster = Cluster::start(Setup::callable("basic", 3));
    assert_eq!(cluster.worker_pids().len(), 3);
    cluster.signal(Signal::SIGKILL);
    cluster.wait_exit(Duration::from_secs(5));
    cluster.assert_no_workers_left(Duration::from_secs(2));
}

#[test]
fn a_port_in_use_fails_cleanly_naming_the_port() {
    let base = free_ports(4);
    let _taken = TcpListener::bind(("127.0.0.1", base + 1)).unwrap();
    let app = fixture("basic");
    let args = start_args(&app, 2, base, &[]);
    let (code, out, err) = run_ppm(&args, Duration::from_secs(10));
    assert_eq!(code, 1, "{out}{err}");
    let expected = format!("127.0.0.1:{}", base + 1);
    assert!(err.contains(&expected) && err.contains("balancer"), "{err}");
    assert!(
        !err.contains("starting worker"),
        "no worker was started: {err}"
    );
}

#[test]
fn ppm_status_prints_a_table_and_json() {
    let cluster = Cluster::start(Setup::callable("basic", 2));
    let port = cluster.control_port.to_string();
    let (code, out, err) = run_ppm(&["status", &port], Duration::from_secs(10));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("SLOT") && out.contains("STATE"), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.contains(" ready ")).count(),
        2,
        "{out}"
    );
    let (code, out, _) = run_ppm(&["status", &port, "--json"], Duration::from_secs(10));
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["workers"].as_array().unwrap().len(), 2);
    for key in [
        "slot",
        "pid",
        "port",
        "state",
        "requests",
        "memory_bytes",
        "started_at",
        "last_error",
    ] {
        assert!(json["workers"][0].get(key).is_some(), "status has {key}");
    }
    let (code, _, err) = run_ppm(&["status", "1"], Duration::from_secs(10));
    assert_eq!(code, 1);
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn worker_output_reaches_the_master_log_with_its_slot() {
    let cluster = Cluster::start(Setup::callable("basic", 1));
    http().get(cluster.url("/error")).send().unwrap();
    let log = cluster.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("[slot 0]") && l.contains("fixture error on purpose")),
        "{log}"
    );
}

#[test]
fn the_psr15_example_answers() {
    let cluster = Cluster::start(Setup {
        app: root().join("examples/psr15"),
        bridge: "psr15",
        bootstrap: "app.php",
        workers: 1,
        extra: vec![],
        wait_ready: true,
    });
    let r = http().get(cluster.url("/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().unwrap().contains("Hello from PSR-15"));
    let r = http().get(cluster.url("/json?name=ppm")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let json: serde_json::Value = r.json().unwrap();
    assert_eq!(json["name"], "ppm");
}

#[test]
fn the_hello_example_answers_through_ppm_worker_alone() {
    let app = root().join("examples/hello");
    // The port was free when picked; another test may take it before the
    // worker binds it, and then the worker exits at once: pick another.
    for _attempt in 0..3 {
        let port = free_ports(1);
        let mut child = std::process::Command::new(PPM)
            .args([
                "worker",
                path_str(&app),
                "--bridge=callable",
                "--bootstrap=app.php",
            ])
            .arg(format!("--listen=127.0.0.1:{port}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}/");
        let mut early_exit = false;
        let body = wait_until(Duration::from_secs(15), || {
            if let Ok(Some(_)) = child.try_wait() {
                early_exit = true;
                return Some(String::new());
            }
            http().get(&url).send().ok()?.text().ok()
        });
        if early_exit {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            assert!(
                stderr.contains("in use"),
                "ppm worker exited before answering: {stderr}"
            );
            continue;
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            Signal::SIGTERM,
        );
        let exited = wait_until(Duration::from_secs(10), || child.try_wait().ok().flatten());
        if exited.is_none() {
            let _ = child.kill();
        }
        assert!(body.unwrap_or_default().contains("Hello from ppm"));
        assert!(exited.is_some(), "ppm worker stops on SIGTERM");
        return;
    }
    panic!("no free port in three attempts");
}

#[test]
fn work_after_the_response_delays_neither_that_response_nor_other_requests() {
    let cluster = Cluster::start(Setup::callable("basic", 2));
    let client = http();
    let started = Instant::now();
    let r = client
        .get(cluster.url("/finish-then-sleep?ms=1500"))
        .send()
        .unwrap();
    assert_eq!(r.text().unwrap(), "answered");
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    // The other worker takes these while the first one finishes its work.
    for _ in 0..4 {
        let started = Instant::now();
        assert_eq!(
            client
                .get(cluster.url("/"))
                .send()
                .unwrap()
                .status()
                .as_u16(),
            200
        );
        assert!(
            started.elapsed() < Duration::from_millis(700),
            "waited {:?} behind terminate work",
            started.elapsed()
        );
    }
}
