//! Faults and hostile clients: nothing wedges.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// How an aborting client ends its connection.
#[derive(Clone, Copy)]
enum Abort {
    /// A FIN right after the request.
    Close,
    /// An RST right after the request (SO_LINGER 0).
    Reset,
}

/// Sends `GET /path` to `port` and hangs up at once, without reading.
fn abort_one(port: u16, path: &str, how: Abort) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    if let Abort::Reset = how {
        let linger = nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        let _ = nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::Linger, &linger);
    }
    drop(stream);
}

/// `total` aborted requests spread over `ports`, `parallel` at a time.
fn abort_many(ports: &[u16], total: usize, parallel: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..parallel)
        .map(|_| {
            let next = next.clone();
            let ports = ports.to_vec();
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let how = if i % 2 == 0 {
                    Abort::Close
                } else {
                    Abort::Reset
                };
                // Some hit a route that takes a little while, so that the
                // client is gone at every stage of the request's life.
                let path = if i % 3 == 0 { "/sleep?ms=2" } else { "/" };
                abort_one(ports[i % ports.len()], path, how);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// A GET answered within `limit`, or why not.
fn answered_within(url: &str, limit: Duration) -> Result<Duration, String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(limit)
        .no_proxy()
        .build()
        .unwrap();
    let started = Instant::now();
    match client.get(url).send() {
        Ok(r) if r.status() == 200 => Ok(started.elapsed()),
        Ok(r) => Err(format!("{url}: status {}", r.status())),
        Err(e) => Err(format!("{url}: {e}")),
    }
}

/// After the storm: no slot stays busy, every port answers at once.
fn assert_all_slots_free(cluster: &mut Cluster) {
    let settled = wait_until(Duration::from_secs(10), || {
        let status = cluster.try_status()?;
        let workers = status["workers"].as_array()?;
        workers
            .iter()
            .all(|w| w["state"] == "ready" && w["current_request"].is_null())
            .then_some(())
    });
    assert!(
        settled.is_some(),
        "slots stayed busy after the clients left: {:#}\nlog:\n{}",
        cluster.status()["workers"],
        cluster.log_text()
    );
    for slot in 0..cluster.workers {
        if let Err(e) = answered_within(&cluster.slot_url(slot, "/"), Duration::from_secs(1)) {
            panic!("slot {slot} does not answer at once: {e}");
        }
    }
    for _ in 0..cluster.workers * 2 {
        if let Err(e) = answered_within(&cluster.url("/"), Duration::from_secs(1)) {
            panic!("the balancer does not answer at once: {e}");
        }
    }
}

fn all_ports(cluster: &Cluster) -> Vec<u16> {
    std::iter::once(cluster.port)
        .chain((0..cluster.workers).map(|s| cluster.port + 1 + s))
        .collect()
}

#[test]
fn clients_that_hang_up_right_after_their_request_never_wedge_a_slot() {
    let mut cluster = Cluster::start(Setup::callable("basic", 4).arg("--queue-timeout=5"));
    abort_many(&all_ports(&cluster), 4000, 100);
    assert_all_slots_free(&mut cluster);
}

#[test]
fn aborting_clients_beside_normal_ones_fail_none_of_the_normal_ones() {
    let mut cluster = Cluster::start(Setup::callable("basic", 4).arg("--queue-timeout=5"));
    let load = Load::start(cluster.url("/"), 4);
    abort_many(&all_ports(&cluster), 4000, 50);
    let seen = load.stop();
    let failed: Vec<_> = seen.iter().filter(|s| s.status != 200).collect();
    assert!(!seen.is_empty(), "the normal clients got no answer at all");
    assert!(
        failed.is_empty(),
        "{} of {} normal requests failed, first: {:?}",
        failed.len(),
        seen.len(),
        failed.first()
    );
    assert_all_slots_free(&mut cluster);
    // Nothing to read back from the aborted ones; the log must not show a
    // slot that lost track of its worker.
    let mut log = String::new();
    std::fs::File::open(&cluster.log)
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(!log.contains("bug:"), "log reports a bug:\n{log}");
}

/// The `p`th percentile of `values` (0..=100).
fn percentile(values: &mut [Duration], p: usize) -> Duration {
    values.sort();
    values[(values.len() * p / 100).min(values.len() - 1)]
}

#[test]
fn exit_in_a_request_is_never_counted_as_a_crash_and_never_backs_a_slot_off() {
    let mut cluster = Cluster::start(Setup::callable("basic", 2));
    let client = http();
    let backoff_seen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (backoff_seen, stop) = (backoff_seen.clone(), stop.clone());
        let url = cluster.control_url("/status");
        std::thread::spawn(move || {
            let client = http();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(text) = client.get(&url).send().and_then(|r| r.text()) {
                    if text.contains("\"backoff\"") || text.contains("\"failed\"") {
                        backoff_seen.store(true, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut normal = Vec::new();
    for _ in 0..50 {
        let r = client.get(cluster.url("/redirect-exit")).send().unwrap();
        assert_eq!(r.status().as_u16(), 302);
        assert_eq!(r.text().unwrap(), "partial output before exit");
        let started = Instant::now();
        let r = client.get(cluster.url("/")).send().unwrap();
        assert_eq!(r.status().as_u16(), 200);
        normal.push(started.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let log = cluster.log_text();
    assert!(
        !backoff_seen.load(Ordering::Relaxed),
        "a slot went into backoff; log:\n{log}"
    );
    assert!(
        !log.contains(", crash)"),
        "exit() logged as a crash:\n{log}"
    );
    let status = cluster.status();
    for w in status["workers"].as_array().unwrap() {
        assert!(
            w["restarts_by_reason"].get("crash").is_none(),
            "exit() counted as a crash: {w}"
        );
    }
    let exits: u64 = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["restarts_by_reason"]["exit"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(exits, 50, "{status:#}");
    eprintln!(
        "normal requests beside exit(): p50 {:?}, p99 {:?}",
        percentile(&mut normal, 50),
        percentile(&mut normal, 99)
    );
}

#[test]
fn when_no_worker_can_boot_requests_get_503_at_once() {
    let mut setup = Setup::callable("broken", 2);
    setup.wait_ready = false;
    let cluster = Cluster::start(setup.arg("--queue-timeout=20"));
    let failed = wait_until(Duration::from_secs(20), || {
        let status = cluster.try_status()?;
        status["workers"]
            .as_array()?
            .iter()
            .all(|w| w["last_error"].is_string())
            .then_some(())
    });
    assert!(failed.is_some(), "log:\n{}", cluster.log_text());
    for url in [cluster.url("/"), cluster.slot_url(1, "/")] {
        let started = Instant::now();
        let r = http().get(&url).send().unwrap();
        assert_eq!(r.status().as_u16(), 503, "{url}");
        assert!(r.headers().contains_key("retry-after"));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{url} took {:?}",
            started.elapsed()
        );
        assert!(r.text().unwrap().contains("No PHP worker can start"));
    }
}

#[test]
fn ppm_start_gives_up_when_no_worker_boots_within_the_bootstrap_timeout() {
    let base = free_ports(4);
    let started = Instant::now();
    let (code, _out, err) = run_ppm(
        &[
            "start",
            path_str(&fixture("broken")),
            "--bridge=callable",
            "--bootstrap=app.php",
            "--workers=2",
            "--bootstrap-timeout=3",
            &format!("--control-port={base}"),
            &format!("--port={}", base + 1),
        ],
        Duration::from_secs(20),
    );
    assert_ne!(code, 0, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.contains("--bootstrap-timeout"), "{err}");
    assert_eq!(
        err.matches("syntax error").count(),
        1,
        "PHP's error is printed once:\n{err}"
    );
}

#[test]
fn max_requests_is_a_limit_even_while_the_replacement_boots() {
    let cluster = Cluster::start(
        Setup::callable("basic", 2)
            .arg("--max-requests=2")
            .arg("--recycle-jitter=0"),
    );
    let client = http();
    let mut served: std::collections::HashMap<String, usize> = Default::default();
    // Concurrent clients, so that a worker at its limit would be offered
    // the next request while its replacement boots.
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let url = if i % 2 == 0 {
                cluster.url("/pid")
            } else {
                cluster.slot_url(0, "/pid")
            };
            let client = client.clone();
            std::thread::spawn(move || {
                (0..8)
                    .map(|_| {
                        let r = client.get(&url).send().unwrap();
                        assert_eq!(r.status().as_u16(), 200);
                        r.text().unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        for pid in t.join().unwrap() {
            *served.entry(pid).or_default() += 1;
        }
    }
    let over: Vec<_> = served.iter().filter(|(_, &n)| n > 2).collect();
    assert!(
        over.is_empty(),
        "workers served more than --max-requests=2: {over:?}\nlog:\n{}",
        cluster.log_text()
    );
}

#[test]
fn a_worker_past_its_memory_limit_takes_no_further_request() {
    let cluster = Cluster::start(Setup::callable("basic", 2).arg("--memory-limit=20"));
    const MB: u64 = 1 << 20;
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let url = cluster.url("/leak?mb=6");
            std::thread::spawn(move || {
                let client = http();
                (0..8)
                    .map(|_| {
                        let r = client.get(&url).send().unwrap();
                        assert_eq!(r.status().as_u16(), 200);
                        r.text().unwrap().trim().parse::<u64>().unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let most = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .max()
        .unwrap();
    // A worker is retired once a request leaves it past 20 MB; one more
    // request of 6 MB would take it past 26 MB.
    assert!(
        most < 26 * MB,
        "a worker past --memory-limit took another request: {} MB\nlog:\n{}",
        most / MB,
        cluster.log_text()
    );
    assert!(cluster.log_text().contains("past --memory-limit=20"));
}

#[test]
fn memory_limit_is_php_memory_and_rss_has_a_limit_of_its_own() {
    // PHP-PM's --memory-limit means PHP memory: a worker using well under
    // 8 MB of it (but more RSS) is never recycled for memory.
    let mut cluster = Cluster::start(Setup::callable("basic", 1).arg("--memory-limit=8"));
    let client = http();
    for _ in 0..10 {
        assert_eq!(client.get(cluster.url("/")).send().unwrap().status(), 200);
    }
    let status = cluster.status();
    assert!(
        status["workers"][0]["rss_bytes"].as_u64().unwrap() > 8 << 20,
        "{status}"
    );
    assert_eq!(status["workers"][0]["restarts"], 0, "{status}");
    drop(cluster);

    let cluster = Cluster::start(Setup::callable("basic", 1).arg("--rss-limit=8"));
    let first = client
        .get(cluster.url("/pid"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let replaced = wait_until(Duration::from_secs(10), || {
        let pid = client.get(cluster.url("/pid")).send().ok()?.text().ok()?;
        (pid != first).then_some(())
    });
    assert!(replaced.is_some(), "log:\n{}", cluster.log_text());
    assert!(
        cluster.log_text().contains("past --rss-limit=8"),
        "{}",
        cluster.log_text()
    );
}

#[test]
fn a_memory_limit_above_php_own_is_reported_at_start() {
    let cluster = Cluster::start(
        Setup::callable("basic", 1)
            .arg("--memory-limit=200")
            .arg("--php-ini=memory_limit=64M"),
    );
    let warned = wait_until(Duration::from_secs(5), || {
        cluster
            .log_text()
            .contains("is not below PHP's memory_limit (64M)")
            .then_some(())
    });
    assert!(warned.is_some(), "{}", cluster.log_text());
}

#[test]
fn a_stderr_nobody_reads_does_not_stop_the_master() {
    // The master's stderr is a pipe this test never reads: once it is
    // full, a master that wrote its log lines itself would stop there,
    // and with it every request (it runs them all on one thread).
    let cluster = Cluster::start_with(Setup::callable("native", 2), |command| {
        command.stderr(std::process::Stdio::piped());
    });
    for _ in 0..3 {
        answered_within(&cluster.url("/noisy"), Duration::from_secs(10)).unwrap();
    }
    for path in ["/", "/whoami", "/noisy"] {
        answered_within(&cluster.url(path), Duration::from_secs(5)).unwrap();
    }
    answered_within(&cluster.control_url("/status"), Duration::from_secs(5)).unwrap();
    assert!(cluster.try_status().is_some());
}
