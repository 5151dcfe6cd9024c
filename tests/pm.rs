//! The process manager (`--pm dynamic|ondemand`) with real PHP workers:
//! workers start when requests need them, idle ones retire, no request
//! fails on the way, and the figures say what happened.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The slots' states and pids in `/status`.
fn slots(cluster: &mut Cluster) -> Vec<(String, Option<u32>)> {
    cluster.status()["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["state"].as_str().unwrap_or_default().to_string(),
                w["pid"].as_u64().map(|p| p as u32),
            )
        })
        .collect()
}

fn serving(cluster: &mut Cluster) -> usize {
    slots(cluster)
        .iter()
        .filter(|(state, _)| state == "ready" || state == "busy")
        .count()
}

fn health(url: &str) -> u16 {
    http().get(url).send().unwrap().status().as_u16()
}

/// `n` requests of `ms` milliseconds sent at once to `url`; their statuses.
fn concurrent(url: &str, n: usize, ms: u64) -> Vec<u16> {
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let url = format!("{url}?ms={ms}");
            std::thread::spawn(move || {
                http()
                    .get(&url)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn ondemand(app: &str, workers: u16, idle_timeout: &str) -> Setup<'static> {
    Setup {
        wait_ready: false,
        ..Setup::callable(app, workers)
    }
    .arg("--pm=ondemand")
    .arg(format!("--worker-idle-timeout={idle_timeout}"))
}

#[test]
fn ondemand_runs_workers_only_while_requests_need_them() {
    let mut cluster = Cluster::start(ondemand("basic", 4, "2"));

    // No traffic: no worker, every slot empty; the slot ports exist and
    // their health path says 503, the balancer's 200 (a request boots one).
    std::thread::sleep(Duration::from_millis(500));
    let before = slots(&mut cluster);
    assert!(
        before
            .iter()
            .all(|(state, pid)| state == "empty" && pid.is_none()),
        "{before:?}"
    );
    for slot in 0..4 {
        assert_eq!(health(&cluster.slot_url(slot, "/_ppm/health")), 503);
    }
    assert_eq!(health(&cluster.url("/_ppm/health")), 200);
    assert_eq!(health(&cluster.control_url("/ready")), 200);

    // 8 concurrent 500 ms requests on 4 slots: all succeed, 4 workers run.
    let began = Instant::now();
    let statuses = concurrent(&cluster.url("/sleep"), 8, 500);
    let took = began.elapsed();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let after = slots(&mut cluster);
    let pids: Vec<u32> = after.iter().filter_map(|(_, pid)| *pid).collect();
    assert_eq!(pids.len(), 4, "4 workers run: {after:?}");
    println!("8 requests of 500 ms on 4 cold slots took {took:?}");
    let status = cluster.status();
    assert_eq!(status["pm"]["mode"], "ondemand");
    assert_eq!(status["pm"]["spawned"], 4);
    // Requests 5 to 8 found every slot with a worker.
    assert!(status["pm"]["max_workers_reached"].as_u64().unwrap() >= 1);
    let fpm: serde_json::Value = http()
        .get(cluster.control_url("/fpm-status?json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(fpm["process manager"], "ondemand");
    assert_eq!(
        fpm["max children reached"],
        status["pm"]["max_workers_reached"]
    );

    // Idle past --worker-idle-timeout: none again, the processes gone.
    let empty = wait_until(Duration::from_secs(10), || {
        let now = slots(&mut cluster);
        now.iter().all(|(state, _)| state == "empty").then_some(now)
    });
    assert!(
        empty.is_some(),
        "workers retired: {:?}",
        slots(&mut cluster)
    );
    let gone = wait_until(Duration::from_secs(10), || {
        pids.iter().all(|&p| !pid_alive(p)).then_some(())
    });
    assert!(gone.is_some(), "retired workers exited");
    assert_eq!(cluster.status()["pm"]["retired"], 4);

    // A request to an empty slot's own port boots that slot's worker.
    let r = http().get(cluster.slot_url(2, "/pid")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let pid: u32 = r.text().unwrap().trim().parse().unwrap();
    let now = slots(&mut cluster);
    assert_eq!(now[2].1, Some(pid), "{now:?}");
    assert_eq!(serving(&mut cluster), 1, "only that slot: {now:?}");
    assert_eq!(health(&cluster.slot_url(2, "/_ppm/health")), 200);

    // ppm status shows the mode.
    let port = cluster.control_port.to_string();
    let (code, out, err) = run_ppm(&["status", &port], Duration::from_secs(20));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("pm ondemand"), "{out}");
}

#[test]
fn ondemand_loses_no_request_across_idle_periods_and_a_rolling_restart() {
    let app = fixture_copy("versioned");
    std::fs::write(app.path().join("VERSION"), "v1").unwrap();
    let mut cluster = Cluster::start(Setup {
        app: app.path().to_path_buf(),
        ..ondemand("versioned", 4, "1")
    });
    // Bursts with pauses longer than the idle timeout: workers come and go.
    for _ in 0..2 {
        let statuses = concurrent(&cluster.url("/sleep"), 6, 200);
        assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
        let empty = wait_until(Duration::from_secs(10), || {
            (serving(&mut cluster) == 0).then_some(())
        });
        assert!(empty.is_some(), "workers retired between bursts");
    }
    // A steady load on 2 clients (so some slots stay empty) during a
    // rolling restart: nothing fails, and the new code answers after it.
    let load = Load::start(cluster.url("/sleep?ms=50"), 2);
    std::thread::sleep(Duration::from_millis(800));
    std::fs::write(app.path().join("VERSION"), "v2").unwrap();
    let port = cluster.control_port.to_string();
    let (code, out, err) = run_ppm(&["restart", &port], Duration::from_secs(90));
    assert_eq!(code, 0, "ppm restart: {out}{err}");
    let finished = Instant::now();
    std::thread::sleep(Duration::from_millis(800));
    let seen = load.stop();
    let failed: Vec<_> = seen.iter().filter(|s| s.status != 200).collect();
    assert!(failed.is_empty(), "{} failed: {:?}", failed.len(), failed);
    assert!(seen.iter().any(|s| s.body == "v1"), "the load ran before");
    let late: Vec<_> = seen.iter().filter(|s| s.started > finished).collect();
    assert!(!late.is_empty(), "the load ran after the restart");
    assert!(late.iter().all(|s| s.body == "v2"), "new code after it");
    // The idle-retired workers were stopped, not left behind.
    cluster.assert_pids_alive_are_current();
}

#[test]
fn dynamic_keeps_idle_workers_between_the_spare_bounds_and_shrinks_after_the_load() {
    let mut cluster = Cluster::start(
        Setup {
            wait_ready: false,
            ..Setup::callable("basic", 6)
        }
        .arg("--pm=dynamic")
        .arg("--min-spare-workers=1")
        .arg("--max-spare-workers=2")
        .arg("--worker-idle-timeout=2"),
    );
    // At rest: the spare minimum.
    let rest = wait_until(Duration::from_secs(20), || {
        (serving(&mut cluster) == 1).then_some(())
    });
    assert!(
        rest.is_some(),
        "one spare worker: {:?}",
        slots(&mut cluster)
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(serving(&mut cluster), 1, "and no more");

    // A load that needs 3 of the 6 workers.
    let load = Load::start(cluster.url("/sleep?ms=300"), 3);
    std::thread::sleep(Duration::from_secs(3));
    let (mut within, mut samples, mut most) = (0, 0, 0);
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let status = cluster.status();
        let idle = status["ready_workers"].as_u64().unwrap();
        let total = idle + status["busy_workers"].as_u64().unwrap();
        most = most.max(total);
        samples += 1;
        if (1..=2).contains(&idle) {
            within += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = load.stop();
    let failed = seen.iter().filter(|s| s.status != 200).count();
    println!(
        "dynamic 1..2 spare, 3 busy: idle within bounds in {within} of {samples} samples, at most {most} workers, {} requests",
        seen.len()
    );
    assert_eq!(failed, 0, "no request failed");
    // A sample may fall between one request's end and the next one's
    // start (a worker idle for a moment); the bounds hold otherwise.
    assert!(
        within * 10 >= samples * 8,
        "idle workers within 1..=2 in {within} of {samples} samples"
    );
    assert!(most <= 6, "never more than --workers");

    // After the load: back down to the minimum.
    let shrunk = wait_until(Duration::from_secs(15), || {
        (serving(&mut cluster) == 1).then_some(())
    });
    assert!(
        shrunk.is_some(),
        "retired to one: {:?}",
        slots(&mut cluster)
    );
    let status = cluster.status();
    assert_eq!(status["pm"]["mode"], "dynamic");
    assert!(
        status["pm"]["spawned"].as_u64().unwrap() >= 3,
        "{}",
        status["pm"]
    );
    assert!(
        status["pm"]["retired"].as_u64().unwrap() >= 2,
        "{}",
        status["pm"]
    );
    cluster.assert_pids_alive_are_current();
    let metrics = http()
        .get(cluster.control_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(metrics.contains("ppm_pm_info{mode=\"dynamic\"} 1"));
    assert!(
        metrics.contains("ppm_workers{state=\"empty\"} 5"),
        "{metrics}"
    );
}

#[test]
fn pool_mode_options_are_checked_together() {
    let app = fixture("basic");
    let args = start_args(
        &app,
        2,
        free_ports(4),
        &[
            "--pm=dynamic",
            "--min-spare-workers=3",
            "--max-spare-workers=1",
            "--max-spawn-rate=0",
            "--worker-idle-timeout=0",
        ],
    );
    let (code, out, err) = run_ppm(&args, Duration::from_secs(20));
    assert_ne!(code, 0, "{out}{err}");
    for option in [
        "min-spare-workers",
        "max-spare-workers",
        "max-spawn-rate",
        "worker-idle-timeout",
    ] {
        assert!(err.contains(option), "{option} named in one run: {err}");
    }
    let (code, _, err) = run_ppm(
        &start_args(&app, 2, free_ports(4), &["--pm=sometimes"]),
        Duration::from_secs(20),
    );
    assert_ne!(code, 0);
    assert!(err.contains("ondemand"), "the modes are listed: {err}");
}

#[test]
fn the_pool_mode_comes_from_ppm_json_too() {
    let app = fixture_copy("basic");
    std::fs::write(
        app.path().join("ppm.json"),
        r#"{"bridge": "callable", "bootstrap": "app.php", "pm": "ondemand", "worker-idle-timeout": 30}"#,
    )
    .unwrap();
    let mut cluster = Cluster::start(Setup {
        app: app.path().to_path_buf(),
        wait_ready: false,
        ..Setup::callable("basic", 2)
    });
    let status = cluster.status();
    assert_eq!(status["pm"]["mode"], "ondemand", "{}", status["pm"]);
    assert_eq!(status["pm"]["worker_idle_timeout"], 30.0);
    assert_eq!(serving(&mut cluster), 0);
}
