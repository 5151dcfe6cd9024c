//! Zero-downtime restarts and recycling, each under a steady load of
//! concurrent clients that counts every response.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

/// How a rolling restart is triggered.
enum Trigger {
    Command,
    Sighup,
    Post,
}

fn rolling_restart_drops_nothing(trigger: Trigger) {
    let app = fixture_copy("versioned");
    std::fs::write(app.path().join("VERSION"), "v1").unwrap();
    let mut cluster = Cluster::start(Setup {
        app: app.path().to_path_buf(),
        ..Setup::callable("versioned", 4)
    });
    let load = Load::start(cluster.url("/sleep?ms=20"), 6);
    let sampler = Sampler::start(cluster.control_url("/status"));
    std::thread::sleep(Duration::from_millis(300));

    std::fs::write(app.path().join("VERSION"), "v2").unwrap();
    match trigger {
        Trigger::Command => {
            let port = cluster.control_port.to_string();
            let (code, out, err) = run_ppm(&["restart", &port], Duration::from_secs(60));
            assert_eq!(code, 0, "{out}{err}");
            assert_eq!(
                out.matches("new worker").count(),
                4,
                "one progress line per slot: {out}"
            );
        }
        Trigger::Sighup => cluster.signal(Signal::SIGHUP),
        Trigger::Post => {
            let r = http().post(cluster.control_url("/restart")).send().unwrap();
            assert_eq!(r.status().as_u16(), 202);
        }
    }
    let done = cluster
        .wait_restart("succeeded", Duration::from_secs(60))
        .map(|_| ());
    assert!(
        done.is_some(),
        "restart finished; log:\n{}",
        cluster.log_text()
    );
    let finished = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let seen = load.stop();
    let (fewest, samples) = sampler.stop();

    let failed: Vec<_> = seen.iter().filter(|s| s.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        seen.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(seen.iter().all(|s| s.body == "v1" || s.body == "v2"));
    let late: Vec<_> = seen.iter().filter(|s| s.started > finished).collect();
    assert!(!late.is_empty());
    assert!(
        late.iter().all(|s| s.body == "v2"),
        "after the restart only v2 answers"
    );
    assert!(
        seen.iter().any(|s| s.body == "v1"),
        "the load ran before the restart too"
    );
    assert!(
        samples > 10,
        "status was sampled during the roll ({samples})"
    );
    assert!(
        fewest >= 4,
        "capacity never dropped below 4 workers (saw {fewest})"
    );
    let status = cluster.status();
    for w in status["workers"].as_array().unwrap() {
        assert_eq!(w["last_reason"], "restart");
    }
    cluster.assert_pids_alive_are_current();
}

#[test]
fn ppm_restart_replaces_every_worker_without_failing_a_request() {
    rolling_restart_drops_nothing(Trigger::Command);
}

#[test]
fn sighup_rolls_the_workers_without_failing_a_request() {
    rolling_restart_drops_nothing(Trigger::Sighup);
}

#[test]
fn post_restart_rolls_the_workers_without_failing_a_request() {
    rolling_restart_drops_nothing(Trigger::Post);
}

#[test]
fn a_broken_deploy_stops_the_roll_and_the_old_workers_keep_serving() {
    let app = fixture_copy("versioned");
    let mut cluster = Cluster::start(Setup {
        app: app.path().to_path_buf(),
        ..Setup::callable("versioned", 2)
    });
    let load = Load::start(cluster.url("/"), 4);
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(
        app.path().join("app.php"),
        "<?php\nreturn function () { echo 'v2' }\n",
    )
    .unwrap();
    let port = cluster.control_port.to_string();
    let (code, out, err) = run_ppm(&["restart", &port], Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(200));
    let seen = load.stop();
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("syntax error"),
        "the PHP parse error is shown: {err}"
    );
    assert!(
        seen.iter().all(|s| s.status == 200 && s.body == "v1"),
        "v1 kept answering"
    );
    assert!(http().get(cluster.url("/")).send().unwrap().text().unwrap() == "v1");
    let status = cluster.status();
    assert_eq!(status["restart"]["state"], "failed");
    assert_eq!(
        status["ready_workers"].as_u64().unwrap() + status["busy_workers"].as_u64().unwrap(),
        2
    );
    assert!(status["workers"][0]["last_error"]
        .as_str()
        .unwrap()
        .contains("syntax error"));
}

/// A worker recycled by --max-requests whose replacement fails to boot
/// serves on (and is retried later), including the requests past its
/// limit: it is not left draining with no replacement coming.
#[test]
fn a_worker_whose_recycle_failed_serves_on_past_its_limit() {
    let app = fixture_copy("versioned");
    let cluster = Cluster::start(
        Setup {
            app: app.path().to_path_buf(),
            ..Setup::callable("versioned", 1)
        }
        .arg("--max-requests=2"),
    );
    std::fs::write(
        app.path().join("app.php"),
        "<?php\nreturn function () { echo 'v2' }\n",
    )
    .unwrap();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let get = || client.get(cluster.url("/")).send().and_then(|r| r.text());
    for _ in 0..2 {
        assert_eq!(get().unwrap(), "v1");
    }
    cluster.wait_log("replacement failed to boot");
    for n in 3..=6 {
        let answer = get();
        assert!(
            answer.as_deref().is_ok_and(|body| body == "v1"),
            "request {n} past --max-requests=2 with a failed replacement: {answer:?}\nlog:\n{}",
            cluster.log_text()
        );
    }
}

#[test]
fn a_restart_request_during_a_roll_joins_it() {
    let cluster = Cluster::start(Setup::callable("versioned", 3));
    let first: serde_json::Value = http()
        .post(cluster.control_url("/restart"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let second: serde_json::Value = http()
        .post(cluster.control_url("/restart"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(first["id"], second["id"]);
    let r = http()
        .post(cluster.control_url("/workers/7/restart"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[test]
fn one_slot_can_be_restarted_alone() {
    let mut cluster = Cluster::start(Setup::callable("versioned", 3));
    let before = cluster.worker_pids();
    let r = http()
        .post(cluster.control_url("/workers/1/restart"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let after = wait_until(Duration::from_secs(20), || {
        let pids = cluster.worker_pids();
        (pids[1] != before[1] && pids[1] != 0).then_some(pids)
    })
    .expect("slot 1 got a new worker");
    assert_eq!(after[0], before[0]);
    assert_eq!(after[2], before[2]);
}

#[test]
fn max_requests_recycles_workers_at_spread_out_times_without_failures() {
    let mut cluster = Cluster::start(
        Setup::callable("versioned", 4)
            .arg("--max-requests=50")
            .arg("--recycle-jitter=50"),
    );
    let load = Load::start(cluster.url("/"), 4);
    let recycled = wait_until(Duration::from_secs(60), || {
        let status = cluster.try_status()?;
        let restarts: u64 = status["workers"]
            .as_array()?
            .iter()
            .map(|w| w["restarts"].as_u64().unwrap_or(0))
            .sum();
        (restarts >= 12).then_some(())
    });
    let seen = load.stop();
    assert!(
        recycled.is_some(),
        "workers were recycled; log:\n{}",
        cluster.log_text()
    );
    assert!(seen.iter().all(|s| s.status == 200), "no request failed");
    let status = cluster.status();
    assert!(status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|w| w["last_reason"] == "max-requests"));
    // The jitter gives each worker its own limit between 25 and 50.
    let log = cluster.log_text();
    let counts: Vec<u64> = log
        .lines()
        .filter_map(|l| l.split("(max-requests, ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect();
    assert!(counts.len() >= 12, "{log}");
    assert!(counts.iter().all(|&c| (25..=50).contains(&c)), "{counts:?}");
    let distinct: std::collections::HashSet<_> = counts.iter().collect();
    assert!(
        distinct.len() >= 4,
        "limits differ between workers: {counts:?}"
    );
}

#[test]
fn memory_limit_recycles_a_leaking_worker_without_failures() {
    let cluster = Cluster::start(
        Setup::callable("versioned", 1)
            .arg("--memory-limit=48")
            .arg("--php-ini=memory_limit=256M"),
    );
    let client = http();
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(
            client
                .get(cluster.url("/leak?mb=4"))
                .send()
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    // The replaced worker counts once it has been stopped.
    let slot = wait_until(Duration::from_secs(10), || {
        let status = cluster.try_status()?;
        let slot = status["workers"][0].clone();
        (slot["restarts"].as_u64()? >= 1).then_some(slot)
    })
    .expect("the leaking worker was replaced");
    assert_eq!(slot["last_reason"], "memory");
}

#[test]
fn a_request_past_max_execution_time_gets_504_and_the_slot_recovers() {
    let mut cluster = Cluster::start(Setup::callable("versioned", 1).arg("--max-execution-time=2"));
    let victim = cluster.worker_pids()[0];
    let started = Instant::now();
    let r = http().get(cluster.url("/sleep?ms=10000")).send().unwrap();
    let took = started.elapsed();
    assert_eq!(r.status().as_u16(), 504);
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let r = http().get(cluster.slot_url(0, "/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(!pid_alive(victim), "the stuck worker was killed");
    let status = cluster.status();
    assert_eq!(status["workers"][0]["last_reason"], "timeout");
}

#[test]
fn time_spent_waiting_in_the_queue_does_not_count_as_execution_time() {
    let cluster = Cluster::start(Setup::callable("versioned", 1).arg("--max-execution-time=2"));
    let first = {
        let url = cluster.url("/sleep?ms=1500");
        std::thread::spawn(move || http().get(url).send().unwrap().status().as_u16())
    };
    cluster.wait_request_running();
    // Waits ~1.4 s for the worker, then runs 1.5 s: 2.9 s in all, but only
    // 1.5 s of it in PHP.
    let started = Instant::now();
    let second = http()
        .get(cluster.url("/sleep?ms=1500"))
        .send()
        .unwrap()
        .status()
        .as_u16();
    assert!(started.elapsed() > Duration::from_millis(2500));
    assert_eq!(first.join().unwrap(), 200);
    assert_eq!(second, 200);
}

#[test]
fn killing_one_worker_under_load_fails_only_its_in_flight_request() {
    let mut cluster = Cluster::start(Setup::callable("versioned", 4));
    let load = Load::start(cluster.url("/sleep?ms=30"), 6);
    std::thread::sleep(Duration::from_millis(300));
    let victim = cluster.worker_pids()[2];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    let replaced = wait_until(Duration::from_secs(10), || {
        let pid = cluster.worker_pids()[2];
        (pid != 0 && pid != victim).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let seen = load.stop();
    assert!(replaced.is_some());
    let failed: Vec<_> = seen.iter().filter(|s| s.status != 200).collect();
    assert!(
        failed.len() <= 1,
        "only the in-flight request may fail: {failed:?}"
    );
    assert!(failed.iter().all(|s| s.status == 502));
    assert!(seen.len() > 50);
}

#[test]
fn a_slow_request_leaves_its_php_backtrace_in_the_log() {
    let cluster = Cluster::start(Setup::callable("versioned", 1).arg("--slow-request-time=1"));
    let r = http()
        .get(cluster.url("/slow-function?s=3"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The master logs the backtrace as it arrives, which may be after the
    // response has left.
    let found = wait_until(Duration::from_secs(5), || {
        let log = cluster.log_text();
        let at = log
            .lines()
            .position(|l| l.contains("slow request: GET /slow-function"))?;
        Some((log, at))
    });
    let (log, at) =
        found.unwrap_or_else(|| panic!("no slow-request line:\n{}", cluster.log_text()));
    let trace: Vec<&str> = log.lines().skip(at).take(8).collect();
    assert!(
        trace
            .iter()
            .any(|l| l.contains("fixture_sleeping_function")),
        "the backtrace names the sleeping function:\n{}",
        trace.join("\n")
    );
}

#[test]
fn a_timed_out_request_logs_the_backtrace_of_the_killed_worker() {
    let cluster = Cluster::start(Setup::callable("versioned", 1).arg("--max-execution-time=1"));
    let r = http()
        .get(cluster.url("/slow-function?s=5"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 504);
    let found = wait_until(Duration::from_secs(5), || {
        let log = cluster.log_text();
        (log.contains("killing worker") && log.contains("fixture_sleeping_function")).then_some(())
    });
    assert!(found.is_some(), "{}", cluster.log_text());
}

#[test]
fn a_client_that_gives_up_does_not_charge_the_next_request_for_its_php_time() {
    // The first client leaves while PHP still runs its request; the worker
    // is busy until PHP reports it done, so the next request waits in the
    // queue (not charged) instead of being sent to a busy worker and timed
    // out there. (The abandoned request still runs within
    // --max-execution-time: a client leaving does not lift the limit.)
    let cluster = Cluster::start(Setup::callable("versioned", 1).arg("--max-execution-time=3"));
    let gone = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .get(cluster.url("/sleep?ms=2000"))
        .send();
    assert!(gone.is_err(), "the first client gave up");
    let r = http().get(cluster.url("/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let status = cluster.try_status().unwrap();
    assert_eq!(
        status["workers"][0]["restarts"], 0,
        "no worker was killed: {status}"
    );
}

#[test]
fn terminate_work_past_max_execution_time_gets_the_worker_replaced() {
    let mut cluster = Cluster::start(Setup::callable("basic", 1).arg("--max-execution-time=1"));
    let stuck = cluster.worker_pids()[0];
    let r = http()
        .get(cluster.url("/finish-then-sleep?ms=30000"))
        .send()
        .unwrap();
    assert_eq!(
        r.text().unwrap(),
        "answered",
        "the client had its answer at once"
    );
    let replaced = wait_until(Duration::from_secs(10), || {
        let pid = cluster.worker_pids()[0];
        (pid != 0 && pid != stuck).then_some(())
    });
    assert!(replaced.is_some(), "the stuck worker was replaced");
    assert!(!pid_alive(stuck));
    assert_eq!(
        http()
            .get(cluster.url("/"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

#[test]
fn a_restart_during_a_recycle_boot_still_gets_a_fresh_worker() {
    // A max-requests recycle may be booting when a deploy's restart comes;
    // that worker read the code from before the deploy, so the restart
    // boots another one after it.
    let app = fixture_copy("versioned");
    let mut cluster = Cluster::start(Setup {
        app: app.path().to_path_buf(),
        ..Setup::callable("versioned", 1)
            .arg("--max-requests=1")
            .arg("--recycle-jitter=0")
    });
    let _ = cluster.worker_pids();
    std::fs::write(app.path().join("BOOT_DELAY_MS"), "1500").unwrap();
    // This request makes the worker recycle; its replacement reads v1,
    // then boots slowly.
    assert_eq!(
        http().get(cluster.url("/")).send().unwrap().text().unwrap(),
        "v1"
    );
    // Until the replacement sleeps in its bootstrap: it has read v1.
    let master = cluster.master_pid();
    let booting = wait_until(Duration::from_secs(10), || {
        children(master).into_iter().find(|&pid| sleeping(pid))
    });
    assert!(
        booting.is_some(),
        "the replacement worker started its slow bootstrap; log:\n{}",
        cluster.log_text()
    );
    std::fs::write(app.path().join("VERSION"), "v2").unwrap();
    std::fs::write(app.path().join("BOOT_DELAY_MS"), "0").unwrap();
    let port = cluster.control_port.to_string();
    let (code, out, err) = run_ppm(&["restart", &port], Duration::from_secs(60));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        http().get(cluster.url("/")).send().unwrap().text().unwrap(),
        "v2"
    );
}

#[test]
fn a_long_request_on_the_old_worker_finishes_with_its_200_across_a_rolling_restart() {
    let app = fixture_copy("versioned");
    std::fs::write(app.path().join("VERSION"), "v1").unwrap();
    let mut cluster = Cluster::start(Setup {
        app: app.path().to_path_buf(),
        ..Setup::callable("versioned", 1)
    });
    let old = cluster.worker_pids()[0];
    let url = cluster.url("/sleep?ms=4000");
    let long = std::thread::spawn(move || {
        let r = http().get(url).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    });
    let running = wait_until(Duration::from_secs(10), || {
        let status = cluster.try_status()?;
        (!status["workers"][0]["current_request"].is_null()).then_some(())
    });
    assert!(running.is_some(), "the long request reached the worker");

    std::fs::write(app.path().join("VERSION"), "v2").unwrap();
    let r = http().post(cluster.control_url("/restart")).send().unwrap();
    assert_eq!(r.status().as_u16(), 202);
    // The replacement takes the slot over while the old worker still
    // serves the long request.
    let swapped = wait_until(Duration::from_secs(30), || {
        let status = cluster.try_status()?;
        let slot = &status["workers"][0];
        let draining = slot["draining_pids"].as_array()?;
        (slot["pid"].as_u64()? != old as u64 && draining.contains(&old.into())).then_some(())
    });
    assert!(
        swapped.is_some(),
        "the new worker took over, the old one drains; log:\n{}",
        cluster.log_text()
    );
    let r = http().get(cluster.url("/")).send().unwrap();
    assert_eq!(r.text().unwrap(), "v2", "new requests go to the new worker");
    assert!(
        !long.is_finished(),
        "the new request did not wait for the long one"
    );

    let (status, body) = long.join().unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "v1"),
        "the long request ended where it began"
    );
    assert!(cluster
        .wait_restart("succeeded", Duration::from_secs(30))
        .is_some());
    if let Err(left) = wait_all_gone(&[old], Duration::from_secs(10)) {
        panic!("the old worker stopped once its request ended: {left:?}");
    }
    let forgotten = wait_until(Duration::from_secs(5), || {
        let status = cluster.try_status()?;
        (status["workers"][0]["draining_pids"] == serde_json::json!([])).then_some(())
    });
    assert!(
        forgotten.is_some(),
        "/status no longer lists the old worker"
    );
}
