//! Hostile and careless clients at the front door: early answers reach
//! clients that write before they read (lingering close), slow requests
//! are cut at `--request-timeout`, and one address cannot take every
//! connection (`--max-connections-per-ip`).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1024 * 1024;

/// Connects to `port` on 127.0.0.1 from the loopback address `local`
/// (127.0.0.2 is another client as far as the master can tell).
fn connect_from(local: &str, port: u16) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
        let server = format!("127.0.0.1:{port}").parse().unwrap();
        let stream = socket.connect(server).await.unwrap().into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream
    })
}

/// Reads until the server closes, an error, or `within` passes.
fn read_answer(stream: &mut TcpStream, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Writes `head` and then `body_len` bytes, all of it before reading a
/// byte, as Python's http.client and most SDKs do; then reads the answer.
/// A write error (the master reset the connection) is the failure this
/// guards against, so it fails the test.
fn write_all_then_read(port: u16, head: &[u8], body_len: usize) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(head)
        .unwrap_or_else(|e| panic!("head: {e}"));
    let chunk = vec![b'x'; MIB];
    let mut left = body_len;
    while left > 0 {
        let n = left.min(chunk.len());
        if let Err(err) = stream.write_all(&chunk[..n]) {
            panic!(
                "writing the body failed after {} bytes: {err}",
                body_len - left
            );
        }
        left -= n;
    }
    read_answer(&mut stream, Duration::from_secs(10))
}

#[test]
fn a_client_writing_a_20_mib_body_before_reading_reads_413_on_every_port() {
    let cluster = Cluster::start(Setup::callable("basic", 1).arg("--max-body-size=1048576"));
    let slot_port = cluster.port + 1;
    let length = format!(
        "POST /sha1 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        20 * MIB
    );
    // A chunked body passes the limit part way: refused mid-body.
    let chunked = format!(
        "POST /sha1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        20 * MIB
    );
    for port in [cluster.port, slot_port] {
        for head in [&length, &chunked] {
            let started = Instant::now();
            let answer = write_all_then_read(port, head.as_bytes(), 20 * MIB);
            assert_eq!(status_of(&answer), 413, "port {port}, {head:?}: {answer:?}");
            assert!(answer.contains("connection: close"), "{answer}");
            assert!(started.elapsed() < Duration::from_secs(15));
        }
    }
    // The same with a real client library that sends before it reads.
    let python = r#"
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=20)
try:
    c.request("POST", "/sha1", body=b"x" * (20 * 1024 * 1024))
    print(c.getresponse().status)
except OSError as e:
    print("error", repr(e))
"#;
    for port in [cluster.port, slot_port] {
        let out = Command::new("python3")
            .args(["-c", python, &port.to_string()])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.trim(), "413", "python http.client on port {port}");
    }
    // The worker is still free and the master still serves.
    let r = http().get(cluster.url("/pid")).send().unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn every_early_answer_reaches_a_client_that_writes_before_reading() {
    let spool = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(
        Setup::callable("basic", 1)
            .arg("--body-buffer-size=65536")
            .arg(format!("--spool-directory={}", path_str(spool.path()))),
    );
    // The spool directory goes away: bodies past the memory buffer cannot
    // be stored (as when its disk is full), 507.
    std::fs::remove_dir(spool.path()).unwrap();
    let body = 20 * MIB;
    let cases: [(&str, String, u16); 3] = [
        (
            "spool full",
            format!("POST /sha1 HTTP/1.1\r\nHost: x\r\nContent-Length: {body}\r\n\r\n"),
            507,
        ),
        (
            "bad head",
            format!(
                "POST /sha1 HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\nContent-Length: {body}\r\n\r\n"
            ),
            400,
        ),
        // A head that never ends: 20 MiB of header field.
        (
            "huge head",
            "POST /sha1 HTTP/1.1\r\nHost: x\r\nX-Big: ".into(),
            431,
        ),
    ];
    for (name, head, status) in cases {
        for port in [cluster.port, cluster.port + 1] {
            let answer = write_all_then_read(port, head.as_bytes(), body);
            assert_eq!(status_of(&answer), status, "{name} on {port}: {answer:?}");
        }
    }
}

/// A client that sends `head`, then one byte a second, and reads what
/// comes back: the status and when it came (None: nothing in `give_up`).
fn trickle(port: u16, head: &'static [u8], give_up: Duration) -> Option<(u16, Duration)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(head).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < give_up {
        let _ = stream.write_all(b"a");
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
        if got.windows(4).any(|w| w == b"\r\n\r\n") {
            return Some((status_of(&String::from_utf8_lossy(&got)), started.elapsed()));
        }
    }
    None
}

#[test]
fn requests_trickling_a_byte_a_second_are_cut_at_the_request_timeout() {
    let cluster = Cluster::start(
        Setup::callable("basic", 1)
            .arg("--request-timeout=3")
            .arg("--header-timeout=60")
            .arg("--body-timeout=60"),
    );
    let port = cluster.port;
    let clients: Vec<_> = (0..20)
        .map(|i| {
            let head: &'static [u8] = if i % 4 == 0 {
                // A head that never ends.
                b"GET /pid HTTP/1.1\r\nHost: x\r\nX-Slow: "
            } else {
                b"POST /sha1 HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
            };
            let port = if i % 2 == 0 { port } else { port + 1 };
            std::thread::spawn(move || trickle(port, head, Duration::from_secs(10)))
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        let Some((status, after)) = client.join().unwrap() else {
            panic!("client {i} was never cut off");
        };
        assert_eq!(status, 408, "client {i}");
        assert!(
            after > Duration::from_millis(2500) && after < Duration::from_secs(6),
            "client {i} cut after {after:?}"
        );
    }
}

/// Holds a connection from `local` sending a body a byte a second until
/// `stop` (the master is expected to keep it open).
fn slow_body_from(local: &'static str, port: u16, hold: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut s = connect_from(local, port);
        let until = Instant::now() + hold;
        let _ = s.write_all(b"POST /sha1 HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n");
        while Instant::now() < until && s.write_all(b"a").is_ok() {
            std::thread::sleep(Duration::from_millis(500));
        }
    })
}

#[test]
fn slow_clients_from_one_address_cannot_take_every_connection() {
    // Half of 4 connections per address by default.
    let cluster = Cluster::start(Setup::callable("basic", 1).arg("--max-connections=4"));
    let hold = Duration::from_secs(8);
    let holders: Vec<_> = (0..4)
        .map(|_| slow_body_from("127.0.0.1", cluster.port, hold))
        .collect();
    // Two of them are let in, the other two turned away.
    cluster.wait_connections(2);

    // Another connection from the same address: a fast 503.
    let started = Instant::now();
    let mut same = connect_from("127.0.0.1", cluster.port);
    same.write_all(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let answer = read_answer(&mut same, Duration::from_secs(3));
    assert_eq!(status_of(&answer), 503, "{answer:?}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(1));

    // A client from another address is served at once, on every port.
    for port in [cluster.port, cluster.port + 1] {
        let started = Instant::now();
        let mut other = connect_from("127.0.0.2", port);
        other
            .write_all(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let answer = read_answer(&mut other, Duration::from_secs(3));
        assert_eq!(status_of(&answer), 200, "port {port}: {answer:?}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    for holder in holders {
        holder.join().unwrap();
    }
}

#[test]
fn past_max_connections_new_clients_get_a_fast_503_until_one_is_free() {
    // Every connection may come from one address here, so the slow clients
    // take them all: the total limit is what answers.
    let cluster = Cluster::start(
        Setup::callable("basic", 1)
            .arg("--max-connections=4")
            .arg("--max-connections-per-ip=4"),
    );
    let holders: Vec<_> = (0..4)
        .map(|_| slow_body_from("127.0.0.1", cluster.port, Duration::from_secs(4)))
        .collect();
    // Not polled: ppm_client_connections counts 3 of these 4 (reported).
    std::thread::sleep(Duration::from_millis(500));

    // The first newcomer waits a moment for a free connection, then reads
    // a 503; those right behind it read theirs at once.
    for (attempt, within) in [(1, 2500), (2, 500), (3, 500)] {
        let started = Instant::now();
        let mut newcomer = connect_from("127.0.0.2", cluster.port);
        let _ = newcomer.write_all(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
        let answer = read_answer(&mut newcomer, Duration::from_secs(5));
        assert_eq!(status_of(&answer), 503, "newcomer {attempt}: {answer:?}");
        assert!(answer.contains("try again"), "{answer}");
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(within),
            "newcomer {attempt} took {took:?}"
        );
    }

    // Once the slow clients are gone, a newcomer is served again.
    for holder in holders {
        holder.join().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut client = connect_from("127.0.0.2", cluster.port);
        let _ = client.write_all(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = read_answer(&mut client, Duration::from_secs(3));
        if status_of(&answer) == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {answer:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
