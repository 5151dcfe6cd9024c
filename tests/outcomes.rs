//! The defined outcomes of a request on the native runtime under `ppm
//! start` (doc/bridges.md, "Defined outcomes"): `exit()` sends what the
//! app built and restarts the script in-process; an uncaught exception
//! answers through the app's handler or a logged 500 and the script goes
//! on; a fatal error, PHP's timeout or out-of-memory answers 500 with the
//! output PHP kept and restarts the script; only a worker process that
//! dies by itself is a crash. Each is counted in `/status` and the metrics.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;

fn native(workers: u16) -> Cluster {
    Cluster::start(Setup::callable("native", workers).arg("--php-ini=display_errors=0"))
}

fn get(url: &str) -> (u16, String) {
    let response = http().get(url).send().unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

/// (pid, generation) of the worker answering on slot 0: the generation
/// changes each time the worker script starts again.
fn whoami(cluster: &Cluster) -> (u64, String) {
    let (status, body) = get(&cluster.slot_url(0, "/whoami"));
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    (
        seen["pid"].as_u64().unwrap(),
        seen["generation"].as_str().unwrap().to_string(),
    )
}

fn metrics(cluster: &Cluster) -> String {
    http()
        .get(cluster.control_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

#[test]
fn every_outcome_answers_as_defined_and_is_counted_in_status_and_metrics() {
    let mut cluster = native(1);
    let (pid, mut generation) = whoami(&cluster);

    // exit(): what the app built, then the script starts again in-process.
    let response = http().get(cluster.slot_url(0, "/exit")).send().unwrap();
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(response.headers()["x-built"], "before-exit");
    assert_eq!(response.text().unwrap(), "partial output before exit");
    let (pid_now, generation_now) = whoami(&cluster);
    assert_eq!(pid_now, pid, "exit(): no new process");
    assert_ne!(generation_now, generation, "exit(): the script restarted");
    generation = generation_now;

    // An uncaught exception: a logged 500, or the app's handler; the script
    // goes on.
    assert_eq!(get(&cluster.slot_url(0, "/exception")).0, 500);
    assert_eq!(
        get(&cluster.slot_url(0, "/exception-handled")),
        (503, "handled: for the handler".into())
    );
    assert_eq!(whoami(&cluster), (pid, generation.clone()), "same script");
    assert!(
        wait_until(Duration::from_secs(5), || cluster
            .log_text()
            .contains("Uncaught RuntimeException: fixture exception")
            .then_some(()))
        .is_some(),
        "PHP's error reached the log:\n{}",
        cluster.log_text()
    );

    // A fatal error, PHP's own timeout and out-of-memory: 500 with what PHP
    // kept, then the script starts again in the same process.
    for path in ["/fatal", "/timeout", "/oom"] {
        let started = Instant::now();
        let (status, body) = get(&cluster.slot_url(0, path));
        assert_eq!(status, 500, "{path}: {body}\n{}", cluster.log_text());
        if path == "/fatal" {
            assert_eq!(body, "before fatal ", "the output PHP kept");
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path} took too long"
        );
        let (pid_now, generation_now) = whoami(&cluster);
        assert_eq!(pid_now, pid, "{path}: no new process");
        assert_ne!(generation_now, generation, "{path}: the script restarted");
        generation = generation_now;
    }

    let status = cluster.status();
    let worker = &status["workers"][0];
    assert_eq!(worker["pid"], pid, "{worker}");
    assert_eq!(
        worker["restarts_by_reason"],
        serde_json::json!({"exit": 1, "fatal": 1, "php-timeout": 1, "out-of-memory": 1}),
        "{worker}"
    );
    assert_eq!(worker["uncaught_exceptions"], 2, "{worker}");
    let text = metrics(&cluster);
    for line in [
        "ppm_worker_restarts_total{slot=\"0\",reason=\"exit\"} 1",
        "ppm_worker_restarts_total{slot=\"0\",reason=\"fatal\"} 1",
        "ppm_worker_restarts_total{slot=\"0\",reason=\"php-timeout\"} 1",
        "ppm_worker_restarts_total{slot=\"0\",reason=\"out-of-memory\"} 1",
        "ppm_worker_uncaught_exceptions_total{slot=\"0\"} 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "metrics lack {line}:\n{text}"
        );
    }
    assert!(!text.contains("reason=\"crash\""), "{text}");

    // Only a worker process that dies by itself is a crash.
    let dead = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(dead, Signal::SIGKILL).unwrap();
    let replaced = wait_until(Duration::from_secs(30), || {
        let status = cluster.try_status()?;
        let w = &status["workers"][0];
        (w["state"] == "ready" && w["pid"].as_u64()? != pid).then_some(status)
    })
    .unwrap_or_else(|| panic!("a new worker; log:\n{}", cluster.log_text()));
    cluster.remember_pids();
    assert_eq!(
        replaced["workers"][0]["restarts_by_reason"]["crash"], 1,
        "{replaced:#}"
    );
    assert!(metrics(&cluster)
        .lines()
        .any(|l| l == "ppm_worker_restarts_total{slot=\"0\",reason=\"crash\"} 1"));
}

/// The `p`th percentile of `values` (0..=100).
fn percentile(values: &mut [Duration], p: usize) -> Duration {
    values.sort();
    values[(values.len() * p / 100).min(values.len() - 1)]
}

#[test]
fn exit_in_a_loop_neither_backs_a_slot_off_nor_slows_the_other_requests() {
    let mut cluster = native(2);
    // Warm up both workers (opcache, first-request costs are not exit()'s).
    for _ in 0..20 {
        assert_eq!(get(&cluster.url("/")).0, 200);
    }
    let backoff_seen = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (backoff_seen, done) = (backoff_seen.clone(), done.clone());
        let url = cluster.control_url("/status");
        std::thread::spawn(move || {
            let client = http();
            let until = Instant::now() + Duration::from_secs(120);
            while !done.load(Ordering::Relaxed) && Instant::now() < until {
                if let Ok(text) = client.get(&url).send().and_then(|r| r.text()) {
                    if text.contains("\"backoff\"") || text.contains("\"failed\"") {
                        backoff_seen.store(true, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // Two clients with normal requests all along.
    let normal: Vec<_> = (0..2)
        .map(|_| {
            let (url, done) = (cluster.url("/"), done.clone());
            std::thread::spawn(move || {
                let client = http();
                let until = Instant::now() + Duration::from_secs(120);
                let mut took = Vec::new();
                while !done.load(Ordering::Relaxed) && Instant::now() < until {
                    let started = Instant::now();
                    let response = client.get(&url).send().unwrap();
                    assert_eq!(response.status().as_u16(), 200);
                    assert_eq!(response.text().unwrap(), "hello");
                    took.push(started.elapsed());
                }
                took
            })
        })
        .collect();
    // exit() 50 times in a row, beside them.
    let client = http();
    for _ in 0..50 {
        let response = client.get(cluster.url("/exit")).send().unwrap();
        assert_eq!(response.status().as_u16(), 202);
        assert_eq!(response.text().unwrap(), "partial output before exit");
    }
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let mut took: Vec<Duration> = normal.into_iter().flat_map(|t| t.join().unwrap()).collect();

    let log = cluster.log_text();
    assert!(
        !backoff_seen.load(Ordering::Relaxed),
        "a slot went into backoff; log:\n{log}"
    );
    let status = cluster.status();
    let workers = status["workers"].as_array().unwrap();
    let exits: u64 = workers
        .iter()
        .map(|w| w["restarts_by_reason"]["exit"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(exits, 50, "{status:#}");
    for w in workers {
        assert!(w["restarts_by_reason"].get("crash").is_none(), "{w}");
    }
    let (p50, p99) = (percentile(&mut took, 50), percentile(&mut took, 99));
    eprintln!(
        "{} normal requests beside 50 exit(): p50 {p50:?}, p99 {p99:?}",
        took.len()
    );
    assert!(took.len() >= 50, "only {} normal requests", took.len());
    assert!(
        p99 < Duration::from_millis(50),
        "p99 of the normal requests beside exit() is {p99:?} (p50 {p50:?})"
    );
}
