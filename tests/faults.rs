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
