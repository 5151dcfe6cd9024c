//! The front door: what clients may and may not make the master believe.

mod common;

use common::*;

#[test]
fn a_spoofed_forwarded_for_from_an_untrusted_client_does_not_reach_remote_addr() {
    let cluster = Cluster::start(Setup::callable("basic", 1));
    let r: serde_json::Value = http()
        .get(cluster.url("/remote"))
        .header("X-Forwarded-For", "6.6.6.6")
        .header("X-Forwarded-Proto", "https")
        .header("X-Request-Id", "client-chosen")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["REMOTE_ADDR"], "127.0.0.1");
    assert_eq!(r["HTTP_X_FORWARDED_FOR"], "127.0.0.1");
    assert_eq!(r["HTTP_X_FORWARDED_PROTO"], "http");
    assert!(r["HTTPS"].is_null());
    assert_ne!(r["HTTP_X_REQUEST_ID"], "client-chosen");
}

#[test]
fn a_trusted_proxy_passes_on_the_client_address_scheme_and_request_id() {
    let cluster = Cluster::start(Setup::callable("basic", 1).arg("--trusted-proxies=127.0.0.0/8"));
    let r = http()
        .get(cluster.url("/remote"))
        .header("X-Forwarded-For", "203.0.113.9")
        .header("X-Forwarded-Proto", "https")
        .header("X-Request-Id", "from-the-proxy")
        .send()
        .unwrap();
    assert_eq!(
        r.headers()["x-request-id"],
        "from-the-proxy",
        "the id goes back to the client"
    );
    let r: serde_json::Value = r.json().unwrap();
    assert_eq!(r["REMOTE_ADDR"], "203.0.113.9");
    assert_eq!(r["HTTP_X_FORWARDED_FOR"], "203.0.113.9, 127.0.0.1");
    assert_eq!(r["HTTPS"], "on");
    assert_eq!(r["HTTP_X_REQUEST_ID"], "from-the-proxy");
}

#[test]
fn every_response_carries_a_request_id_the_app_saw_too() {
    let cluster = Cluster::start(Setup::callable("basic", 1));
    let r = http().get(cluster.url("/remote")).send().unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let r: serde_json::Value = r.json().unwrap();
    assert_eq!(r["HTTP_X_REQUEST_ID"], id.as_str());
    assert_eq!(id.len(), 32);
}

// ---------------------------------------------------------------------------
// Raw HTTP helpers

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Sends `bytes` on a new connection to `port` and reads until the server
/// closes (or 10 s pass). Write errors are ignored: the master may answer
/// and close before it has read everything.
fn raw(port: u16, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(bytes);
    read_all(&mut stream)
}

fn read_all(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw response ("HTTP/1.1 400 Bad Request…").
fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A copy of the basic fixture that records every request the app sees
/// in seen.log.
fn recording_app() -> tempfile::TempDir {
    let app = fixture_copy("basic");
    std::fs::write(app.path().join("seen.log"), "").unwrap();
    app
}

fn seen(app: &Path) -> Vec<String> {
    std::fs::read_to_string(app.join("seen.log"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn setup_in(app: &Path, workers: u16) -> Setup<'static> {
    let mut setup = Setup::callable("basic", workers);
    setup.app = app.to_path_buf();
    setup
}

// ---------------------------------------------------------------------------
// Malformed and ambiguous requests

/// Requests the master must refuse; each is complete, so the master can
/// decide without waiting for more bytes. (name, bytes)
fn malformed() -> Vec<(&'static str, Vec<u8>)> {
    let mut list: Vec<(&'static str, Vec<u8>)> = vec![
        ("CL.TE", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGPOST /smuggled HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("TE.CL", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n2c\r\nGPOST /smuggled HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n".to_vec()),
        ("TE.TE duplicate header", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n".to_vec()),
        ("TE.TE xchunked", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n".to_vec()),
        ("TE.TE space before colon", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n".to_vec()),
        ("TE.TE folded", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n".to_vec()),
        ("TE.TE list", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n".to_vec()),
        ("TE gzip", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec()),
        ("TE in HTTP/1.0", b"POST /smuggle HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec()),
        ("duplicate differing CL", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde".to_vec()),
        ("CL list", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 5\r\n\r\nabcde".to_vec()),
        ("CL negative", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec()),
        ("CL hex", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc".to_vec()),
        ("CL with inner space", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 1 0\r\n\r\n".to_vec()),
        ("CL overflow", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec()),
        ("chunk size not hex", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n".to_vec()),
        ("chunk size 0x prefix", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n".to_vec()),
        ("chunk size overflow", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nabc\r\n0\r\n\r\n".to_vec()),
        ("chunk size empty", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\r\nabc\r\n0\r\n\r\n".to_vec()),
        ("chunk extension without name", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;\r\nabc\r\n0\r\n\r\n".to_vec()),
        ("chunk extension with bare LF", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;a\nb\r\nabc\r\n0\r\n\r\n".to_vec()),
        ("chunk extension unterminated quote", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;a=\"b\r\nabc\r\n0\r\n\r\n".to_vec()),
        ("chunk longer than its size", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n".to_vec()),
        ("chunk size with bare LF", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n".to_vec()),
        ("bad trailer", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nno colon here\r\n\r\n".to_vec()),
        ("bare LF everywhere", b"GET /smuggle HTTP/1.1\nHost: x\n\n".to_vec()),
        ("bare LF in one header", b"GET /smuggle HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n".to_vec()),
        ("bare CR", b"GET /smuggle HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n".to_vec()),
        ("obs-fold", b"GET /smuggle HTTP/1.1\r\nHost: x\r\nX-A: b\r\n  c\r\n\r\n".to_vec()),
        ("NUL in a header value", b"GET /smuggle HTTP/1.1\r\nHost: x\r\nX-A: b\0c\r\n\r\n".to_vec()),
        ("NUL in the target", b"GET /smuggle\0 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("control byte in a header value", b"GET /smuggle HTTP/1.1\r\nHost: x\r\nX-A: b\x07c\r\n\r\n".to_vec()),
        ("space in a header name", b"GET /smuggle HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n".to_vec()),
        ("control byte in a header name", b"GET /smuggle HTTP/1.1\r\nHost: x\r\nX\x01A: b\r\n\r\n".to_vec()),
        ("empty header name", b"GET /smuggle HTTP/1.1\r\nHost: x\r\n: b\r\n\r\n".to_vec()),
        ("header without colon", b"GET /smuggle HTTP/1.1\r\nHost: x\r\nX-A b\r\n\r\n".to_vec()),
        ("invalid method", b"G(ET /smuggle HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("tab delimiter", b"GET\t/smuggle HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("double space", b"GET  /smuggle HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("space in the target", b"GET /smu ggle HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("relative target", b"GET smuggle HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("fragment in the target", b"GET /smuggle#x HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        // Bytes above 0x7F are accepted, as nginx does; DEL and controls are not.
        ("DEL in the target", b"GET /smuggle\x7f HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("control byte in the target", b"GET /smuggle?\x1b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("bad version", b"GET /smuggle HTTQ/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("missing Host", b"GET /smuggle HTTP/1.1\r\n\r\n".to_vec()),
        ("two Hosts", b"GET /smuggle HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec()),
        ("invalid Host", b"GET /smuggle HTTP/1.1\r\nHost: a b\r\n\r\n".to_vec()),
        ("CONNECT", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_vec()),
        ("unknown expectation", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx".to_vec()),
        ("CL past --max-body-size", b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".to_vec()),
    ];
    let mut long_line = b"GET /".to_vec();
    long_line.extend(std::iter::repeat_n(b'a', 9000));
    long_line.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
    list.push(("over-long request line", long_line));
    let mut long_header = b"GET /smuggle HTTP/1.1\r\nHost: x\r\nX-Long: ".to_vec();
    long_header.extend(std::iter::repeat_n(b'a', 40_000));
    long_header.extend_from_slice(b"\r\n\r\n");
    list.push(("over-long header", long_header));
    let mut many = b"GET /smuggle HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..150 {
        many.extend_from_slice(format!("X-H{i}: {i}\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    list.push(("too many headers", many));
    let mut chunked_too_large =
        b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked_too_large.extend_from_slice(b"400\r\n");
        chunked_too_large.extend(std::iter::repeat_n(b'a', 0x400));
        chunked_too_large.extend_from_slice(b"\r\n");
    }
    chunked_too_large.extend_from_slice(b"0\r\n\r\n");
    list.push(("chunked past --max-body-size", chunked_too_large));
    list
}

/// Runs the battery against `port`: each request gets a 4xx from the
/// master and a closed connection; a normal request to `check_port` right
/// after answers from `worker_pid`.
fn refuse_the_battery(cluster: &Cluster, port: u16, check_port: u16, worker_pid: &str) {
    let battery = malformed();
    assert!(battery.len() >= 30);
    for (name, bytes) in battery {
        let response = raw(port, &bytes);
        let status = status_of(&response);
        assert!(
            (400..500).contains(&status),
            "{name}: expected a 4xx, got {response:?}\nlog:\n{}",
            cluster.log_text()
        );
        assert!(
            response.to_ascii_lowercase().contains("connection: close"),
            "{name}: the master closes after a refusal: {response:?}"
        );
        assert_eq!(
            response.matches("HTTP/1.1 ").count(),
            1,
            "{name}: one answer only: {response:?}"
        );
        let pid = http()
            .get(format!("http://127.0.0.1:{check_port}/pid"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert_eq!(
            pid, worker_pid,
            "{name}: the worker answers normally after it"
        );
    }
}

#[test]
fn malformed_and_ambiguous_requests_are_refused_by_the_master_and_never_reach_php() {
    let app = recording_app();
    let cluster = Cluster::start(setup_in(app.path(), 1).arg("--max-body-size=2048"));
    let slot_port = cluster.port + 1;
    let pid = http()
        .get(cluster.slot_url(0, "/pid"))
        .send()
        .unwrap()
        .text()
        .unwrap();

    refuse_the_battery(&cluster, cluster.port, slot_port, &pid);
    refuse_the_battery(&cluster, slot_port, slot_port, &pid);

    let seen = seen(app.path());
    assert!(
        seen.iter().all(|line| line == "GET /pid"),
        "only the check requests reached PHP: {seen:?}"
    );
    assert_eq!(seen.len(), 2 * malformed().len() + 1);
}

#[test]
fn well_formed_edge_cases_are_forwarded_normalized() {
    let app = recording_app();
    let cluster = Cluster::start(setup_in(app.path(), 1));
    // chunked with extensions and trailers: the app gets the plain body
    // (with a Content-Length).
    let response = raw(
        cluster.port,
        b"POST /sha1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          3;name=value\r\nabc\r\n2;q=\"quoted; string\"\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.ends_with("5 03de6c570bfe24bfc328ccd7ca46b76eadaf4334"),
        "{response}"
    );
    // Pipelined requests on one connection each get their own answer.
    let response = raw(
        cluster.port,
        b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\nPOST /sha1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(response.matches("HTTP/1.1 200 OK").count(), 3, "{response}");
    // Expect: 100-continue gets its interim answer before the body is sent.
    let mut stream = TcpStream::connect(("127.0.0.1", cluster.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"PUT /sha1 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"abc").unwrap();
    let response = read_all(&mut stream);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // HTTP/1.0 without keep-alive: the answer ends with the connection.
    let response = raw(cluster.port, b"GET /pid HTTP/1.0\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = seen(app.path());
    assert_eq!(
        seen,
        [
            "POST /sha1",
            "GET /pid",
            "POST /sha1",
            "GET /pid",
            "PUT /sha1",
            "GET /pid"
        ]
    );
}

// ---------------------------------------------------------------------------
// Limits and timeouts

/// A client whose Connection header names Host: the hop-by-hop rule
/// drops its Host, and PHP gets the one the master fills in for a request
/// without one (the address it was reached on), never none at all.
#[test]
fn a_host_named_in_connection_is_replaced_as_a_missing_one() {
    let cluster = Cluster::start(Setup::callable("basic", 1));
    let response = raw(
        cluster.port,
        b"GET /cgi HTTP/1.1\r\nHost: client.test\r\nConnection: host, close\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let json = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let cgi: serde_json::Value = serde_json::from_str(json).expect(json);
    assert_eq!(
        cgi["HTTP_HOST"],
        format!("127.0.0.1:{}", cluster.port),
        "{cgi:#}"
    );
}

#[test]
fn a_slow_head_gets_408_and_a_silent_body_gets_408() {
    let cluster = Cluster::start(
        Setup::callable("basic", 1)
            .arg("--header-timeout=1")
            .arg("--body-timeout=1"),
    );
    let started = Instant::now();
    let response = raw(cluster.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    assert_eq!(status_of(&response), 408, "{response}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let response = raw(
        cluster.port,
        b"POST /sha1 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
    );
    assert_eq!(status_of(&response), 408, "{response}");
}

/// Sends one kept-alive request for `path`, reads its 200, then how long
/// the connection stays open, silent, until the master closes it.
fn idle_close_after(cluster: &Cluster, path: &str) -> Duration {
    let mut stream = TcpStream::connect(("127.0.0.1", cluster.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let started = Instant::now();
    let n = stream.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    started.elapsed()
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let cluster = Cluster::start(Setup::callable("basic", 1).arg("--idle-timeout=1"));
    let waited = idle_close_after(&cluster, "/pid");
    assert!(
        waited > Duration::from_millis(500) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

/// PHP's work after `fastcgi_finish_request()` runs on while the
/// connection waits for the client's next request: that wait is still
/// bounded by --idle-timeout, not by how long PHP works.
#[test]
fn a_kept_alive_connection_is_closed_after_the_idle_timeout_while_php_works_on() {
    let cluster = Cluster::start(Setup::callable("basic", 1).arg("--idle-timeout=1"));
    let waited = idle_close_after(&cluster, "/finish-then-sleep?ms=8000");
    assert!(
        waited > Duration::from_millis(500) && waited < Duration::from_secs(4),
        "the idle connection stayed open {waited:?} (PHP worked 8 s after its answer)"
    );
    // The worker still finishes its work and serves again.
    let started = Instant::now();
    let answered = http().get(cluster.url("/pid")).send().unwrap();
    assert_eq!(answered.status(), 200);
    assert!(
        started.elapsed() > Duration::from_secs(3),
        "the work after the answer was cut short"
    );
}

/// The same connection, idle while PHP works on, when the master is told
/// to stop: it is closed as the ports close, as any idle connection is,
/// not kept until --idle-timeout or the end of PHP's work.
#[test]
fn a_kept_alive_connection_is_closed_at_stop_while_php_works_on() {
    let cluster = Cluster::start(Setup::callable("basic", 1).arg("--idle-timeout=60"));
    let mut stream = TcpStream::connect(("127.0.0.1", cluster.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
        .write_all(b"GET /finish-then-sleep?ms=8000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let asked = Instant::now();
    cluster.signal(nix::sys::signal::Signal::SIGTERM);
    let n = stream.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "the idle connection stayed open {:?} after the stop (PHP worked 8 s after its answer)",
        asked.elapsed()
    );
}

#[test]
fn past_max_connections_a_new_connection_waits_a_moment_for_a_free_one() {
    let cluster = Cluster::start(
        Setup::callable("basic", 1)
            .arg("--max-connections=2")
            .arg("--max-connections-per-ip=2"),
    );
    let hold = |_| {
        let mut s = TcpStream::connect(("127.0.0.1", cluster.port)).unwrap();
        s.write_all(b"GET /pid HTTP/1.1\r\nHost: x\r\n").unwrap();
        s
    };
    let first: Vec<TcpStream> = (0..2).map(hold).collect();
    // Not polled: ppm_client_connections counts 1 of these 2 (reported).
    std::thread::sleep(Duration::from_millis(300));
    let mut third = TcpStream::connect(("127.0.0.1", cluster.port)).unwrap();
    third
        .write_all(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 1024];
    assert!(
        third.read(&mut buf).is_err(),
        "no answer while two connections are open"
    );
    // A connection freed within the moment (a second) the master waits
    // for one: the newcomer is served, not refused.
    let _ = first[0].shutdown(Shutdown::Both);
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let response = read_all(&mut third);
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
}

/// Opens a connection that sends `head` one byte per second, for at most
/// `for_how_long`.
fn slowloris(port: u16, for_how_long: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return;
        };
        let head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let until = Instant::now() + for_how_long;
        for byte in head {
            if Instant::now() >= until || s.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    })
}

/// Uploads a body at 1 KiB/s, for at most `for_how_long`.
fn slow_upload(port: u16, for_how_long: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return;
        };
        if s.write_all(b"POST /sha1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
            .is_err()
        {
            return;
        }
        let until = Instant::now() + for_how_long;
        while Instant::now() < until {
            if s.write_all(&[b'u'; 1024]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    })
}

#[test]
fn slow_clients_hold_no_worker() {
    let cluster = Cluster::start(Setup::callable("basic", 2));
    let run = Duration::from_secs(8);
    let mut threads = Vec::new();
    for i in 0..20 {
        // Half of them on the balancer, half on a slot port.
        let port = if i % 2 == 0 {
            cluster.port
        } else {
            cluster.port + 1
        };
        threads.push(slowloris(port, run));
        threads.push(slow_upload(port, run));
    }
    std::thread::sleep(Duration::from_secs(2));
    let client = http();
    for round in 0..3 {
        for url in [
            cluster.url("/pid"),
            cluster.slot_url(0, "/pid"),
            cluster.slot_url(1, "/pid"),
        ] {
            let started = Instant::now();
            let r = client.get(&url).send().unwrap();
            assert_eq!(r.status(), 200);
            let took = started.elapsed();
            assert!(
                took < Duration::from_secs(1),
                "round {round}: {url} took {took:?} with 40 slow clients"
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    for t in threads {
        t.join().unwrap();
    }
}

fn vm_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn fifty_concurrent_20_mib_uploads_arrive_whole_and_keep_the_master_small() {
    const SIZE: usize = 20 * 1024 * 1024;
    let cluster = Cluster::start(
        Setup::callable("basic", 2)
            .arg("--php-ini=memory_limit=256M")
            .arg("--queue-timeout=120"),
    );
    let master = cluster.master_pid();
    let before = vm_kib(master, "VmRSS:");
    let port = cluster.port;
    let threads: Vec<_> = (0..50u8)
        .map(|n| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
                s.write_all(
                    format!(
                        "POST /sha1 HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .unwrap();
                let mut hash = sha1_smol::Sha1::new();
                let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i as u8) ^ n).collect();
                for _ in 0..SIZE / chunk.len() {
                    s.write_all(&chunk).unwrap();
                    hash.update(&chunk);
                }
                let mut response = String::new();
                s.read_to_string(&mut response).unwrap();
                (response, hash.digest().to_string())
            })
        })
        .collect();
    let mut peak_rss = 0;
    let mut pending = threads;
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut results = Vec::new();
    while !pending.is_empty() && Instant::now() < deadline {
        peak_rss = peak_rss.max(vm_kib(master, "VmRSS:"));
        let (done, left): (Vec<_>, Vec<_>) = pending.into_iter().partition(|t| t.is_finished());
        results.extend(done.into_iter().map(|t| t.join().unwrap()));
        pending = left;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(pending.is_empty(), "uploads did not finish in time");
    for (response, sha1) in &results {
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response.ends_with(&format!("{SIZE} {sha1}")),
            "arrived whole: {response}"
        );
    }
    let hwm = vm_kib(master, "VmHWM:");
    eprintln!(
        "master RSS: {before} KiB before, peak sampled {peak_rss} KiB, VmHWM {hwm} KiB over 50 x 20 MiB uploads"
    );
    assert!(hwm < 150 * 1024, "master VmHWM {hwm} KiB");
}

// ---------------------------------------------------------------------------
// TLS and HTTP/2

fn certificate(dir: &Path) -> (PathBuf, PathBuf, String) {
    let key =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_pem = key.cert.pem();
    let cert = dir.join("cert.pem");
    let private = dir.join("key.pem");
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&private, key.key_pair.serialize_pem()).unwrap();
    (cert, private, cert_pem)
}

#[test]
fn https_serves_http1_and_http2_and_the_app_sees_https() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, pem) = certificate(dir.path());
    let cluster = Cluster::start(
        Setup::callable("basic", 1)
            .arg(format!("--tls-cert={}", cert.display()))
            .arg(format!("--tls-key={}", key.display())),
    );
    let root = reqwest::Certificate::from_pem(pem.as_bytes()).unwrap();
    let url = format!("https://localhost:{}/remote", cluster.port);
    for http1 in [true, false] {
        let mut builder = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(root.clone())
            .resolve("localhost", ([127, 0, 0, 1], cluster.port).into())
            .no_proxy()
            .timeout(Duration::from_secs(30));
        if http1 {
            builder = builder.http1_only();
        }
        let client = builder.build().unwrap();
        let response = client.get(&url).send().unwrap();
        let expected = if http1 {
            reqwest::Version::HTTP_11
        } else {
            reqwest::Version::HTTP_2
        };
        assert_eq!(response.version(), expected);
        let seen: serde_json::Value = response.json().unwrap();
        assert_eq!(seen["HTTPS"], "on", "{seen}");
        assert_eq!(seen["HTTP_X_FORWARDED_PROTO"], "https");
        // A body goes through HTTP/2 too.
        let r = client
            .post(format!("https://localhost:{}/sha1", cluster.port))
            .body("abc")
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert_eq!(r, "3 a9993e364706816aba3e25717850c26c9cd0d89d");
    }
    // The slot ports stay plain HTTP.
    let r = http().get(cluster.slot_url(0, "/remote")).send().unwrap();
    let seen: serde_json::Value = r.json().unwrap();
    assert!(seen["HTTPS"].is_null());
}

/// An HTTP/2 connection with no stream for --idle-timeout is closed, like
/// an idle HTTP/1 connection (the client itself would keep it 90 s).
#[test]
fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let cluster = Cluster::start(Setup::callable("basic", 1).arg("--idle-timeout=1"));
    let client = reqwest::blocking::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let response = client.get(cluster.url("/sleep?ms=1500")).send().unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let held = || {
        let text = http()
            .get(cluster.control_url("/metrics"))
            .send()
            .ok()?
            .text()
            .ok()?;
        metric_sum(&text, "ppm_client_connections")
    };
    assert_eq!(held(), Some(1.0), "the client keeps its connection");
    let started = Instant::now();
    let closed = wait_until(Duration::from_secs(10), || (held()? == 0.0).then_some(()));
    assert!(closed.is_some(), "the idle HTTP/2 connection is still open");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
}

#[test]
fn cleartext_http2_with_prior_knowledge_works_on_the_plain_ports() {
    let cluster = Cluster::start(Setup::callable("basic", 1));
    let client = reqwest::blocking::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    for url in [cluster.url("/sha1"), cluster.slot_url(0, "/sha1")] {
        let response = client.post(&url).body("abc").send().unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(
            response.text().unwrap(),
            "3 a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
    let seen: serde_json::Value = client
        .get(cluster.url("/remote"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(seen["HTTPS"].is_null());
}

#[test]
fn a_missing_or_bad_certificate_is_a_start_up_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = certificate(dir.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let missing = dir.path().join("missing.pem");
    let app = fixture("basic");
    let port = free_ports(4);
    for (cert, key, named) in [
        (&missing, &key, &missing),
        (&garbage, &key, &garbage),
        (&cert, &garbage, &garbage),
    ] {
        let (code, _, err) = run_ppm(
            &[
                "start",
                path_str(&app),
                "--bridge=callable",
                "--bootstrap=app.php",
                "--workers=1",
                &format!("--port={}", port + 1),
                &format!("--control-port={port}"),
                &format!("--tls-cert={}", cert.display()),
                &format!("--tls-key={}", key.display()),
            ],
            Duration::from_secs(20),
        );
        assert_ne!(code, 0);
        assert!(err.contains(&named.display().to_string()), "{err}");
    }
}

// ---------------------------------------------------------------------------
// Static files

fn static_app() -> tempfile::TempDir {
    let app = fixture_copy("basic");
    let public = app.path().join("public");
    std::fs::create_dir_all(public.join("docs")).unwrap();
    std::fs::create_dir_all(public.join("empty")).unwrap();
    std::fs::write(public.join("style.css"), "body { color: teal; }\n").unwrap();
    std::fs::write(public.join("style.css.gz"), b"\x1f\x8bpretend-gzip").unwrap();
    std::fs::write(public.join("app.js"), "console.log(1);\n").unwrap();
    std::fs::write(public.join("logo.svg"), "<svg/>").unwrap();
    std::fs::write(public.join("docs/index.html"), "<h1>docs</h1>").unwrap();
    std::fs::write(public.join("secret.php"), "<?php echo 'SOURCE';").unwrap();
    std::fs::write(public.join(".env"), "SECRET=DOTFILE").unwrap();
    app
}

#[test]
fn static_files_are_served_by_the_master_with_validators_ranges_and_variants() {
    let app = static_app();
    std::fs::write(app.path().join("seen.log"), "").unwrap();
    let cluster = Cluster::start(setup_in(app.path(), 1).arg("--static-directory=public"));
    let client = http();
    let css = client.get(cluster.url("/style.css")).send().unwrap();
    assert_eq!(css.status(), 200);
    assert_eq!(css.headers()["content-type"], "text/css");
    let etag = css.headers()["etag"].clone();
    let modified = css.headers()["last-modified"].clone();
    assert!(etag.to_str().unwrap().starts_with("W/\""));
    assert_eq!(css.text().unwrap(), "body { color: teal; }\n");

    let r = client
        .get(cluster.url("/style.css"))
        .header("If-None-Match", etag.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], etag);
    let r = client
        .get(cluster.url("/style.css"))
        .header("If-None-Match", "W/\"other\"")
        .header("If-Modified-Since", modified.clone())
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "If-None-Match decides over If-Modified-Since"
    );
    let r = client
        .get(cluster.url("/style.css"))
        .header("If-Modified-Since", modified)
        .send()
        .unwrap();
    assert_eq!(r.status(), 304);

    let r = client
        .get(cluster.url("/style.css"))
        .header("Range", "bytes=0-3")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 0-3/22");
    assert_eq!(r.text().unwrap(), "body");
    let r = client
        .get(cluster.url("/style.css"))
        .header("Range", "bytes=100-200")
        .send()
        .unwrap();
    assert_eq!(r.status(), 416);

    let r = client
        .get(cluster.url("/style.css"))
        .header("Accept-Encoding", "gzip")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_ne!(r.headers()["etag"], etag, "each variant has its own tag");
    assert_eq!(&r.bytes().unwrap()[..], b"\x1f\x8bpretend-gzip");

    for (path, mime) in [
        ("/app.js", "text/javascript"),
        ("/logo.svg", "image/svg+xml"),
    ] {
        let r = client.get(cluster.url(path)).send().unwrap();
        assert_eq!(r.headers()["content-type"], mime, "{path}");
    }
    let r = client.get(cluster.url("/docs/")).send().unwrap();
    assert_eq!(r.text().unwrap(), "<h1>docs</h1>");
    let r = client.head(cluster.url("/docs/")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "13");
    // Through a slot port too.
    let r = client
        .get(cluster.slot_url(0, "/style.css"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        seen(app.path()),
        Vec::<String>::new(),
        "no static request reached PHP"
    );

    // Misses, PHP files, dotfiles, directories without an index and
    // traversal go to PHP (which answers 404 "no route"), never as files.
    for path in [
        "/missing.css",
        "/secret.php",
        "/SECRET.PHP",
        "/.env",
        "/empty/",
        "/../app.php",
        "/%2e%2e/app.php",
        "/%2e%2e%2fapp.php",
        "/docs/..%2f..%2fapp.php",
        "/docs/%2E%2E/%2E%2E/app.php",
    ] {
        let response = raw(
            cluster.port,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(
            !response.contains("SOURCE")
                && !response.contains("DOTFILE")
                && !response.contains("<?php"),
            "{path}: {response}"
        );
        assert!(
            response.contains("no route") || status_of(&response) == 400,
            "{path} went to PHP: {response}"
        );
    }
}

#[test]
fn dotfiles_are_served_only_with_static_dotfiles() {
    let app = static_app();
    let cluster = Cluster::start(
        setup_in(app.path(), 1)
            .arg("--static-directory=public")
            .arg("--static-dotfiles"),
    );
    let r = http().get(cluster.url("/.env")).send().unwrap();
    assert_eq!(r.text().unwrap(), "SECRET=DOTFILE");
    let r = http().get(cluster.url("/secret.php")).send().unwrap();
    assert!(!r.text().unwrap().contains("SOURCE"));
}

// ---------------------------------------------------------------------------
// Access log

fn wait_lines(path: &Path, count: usize) -> Vec<String> {
    let lines = wait_until(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        (lines.len() >= count).then_some(lines)
    });
    lines.unwrap_or_else(|| {
        panic!(
            "{} has not {count} lines: {:?}",
            path.display(),
            std::fs::read_to_string(path)
        )
    })
}

#[test]
fn the_access_log_has_one_combined_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let app = static_app();
    let cluster = Cluster::start(
        setup_in(app.path(), 1)
            .arg("--static-directory=public")
            .arg(format!("--access-log={}", log.display())),
    );
    let client = http();
    client
        .get(cluster.url("/pid?x=1"))
        .header("User-Agent", "frontdoor-test")
        .header("Referer", "http://example.test/")
        .send()
        .unwrap();
    client.get(cluster.slot_url(0, "/missing")).send().unwrap();
    client.get(cluster.url("/style.css")).send().unwrap();
    raw(
        cluster.port,
        b"GET /x HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n",
    );
    client.get(cluster.url("/_ppm/health")).send().unwrap();
    let lines = wait_lines(&log, 5);
    assert_eq!(lines.len(), 5, "{lines:?}");
    // Lines are written as responses finish, so find each by its request.
    let line = |request: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!("\"{request} HTTP/1.1\"")))
            .unwrap_or_else(|| panic!("no line for {request}: {lines:?}"))
            .clone()
    };
    let pid = line("GET /pid?x=1");
    let (addr, request, status) = combined_fields(&pid);
    assert_eq!(addr, "127.0.0.1");
    assert_eq!(request, "GET /pid?x=1 HTTP/1.1");
    assert_eq!(status, "200");
    assert!(
        pid.contains("\"http://example.test/\" \"frontdoor-test\" rt="),
        "{pid}"
    );
    assert!(pid.contains(" slot=0 id="), "{pid}");
    let missing = line("GET /missing");
    assert!(
        missing.contains("\" 404 ") && missing.contains(" slot=0 "),
        "{missing}"
    );
    let css = line("GET /style.css");
    assert!(
        css.contains("\" 200 22 ") && css.contains("qt=- slot=- "),
        "{css}"
    );
    let refused = line("GET /x");
    assert!(refused.contains("\" 400 "), "{refused}");
    let health = line("GET /_ppm/health");
    assert!(health.contains("\" 200 3 "), "{health}");
    for l in &lines {
        combined_fields(l);
        assert!(
            l.contains(" rt=") && l.contains(" qt=") && l.contains(" id="),
            "{l}"
        );
    }
}

/// Splits a combined line into (address, request, status), checking its shape.
fn combined_fields(line: &str) -> (String, String, String) {
    let (addr, rest) = line.split_once(" - - [").expect(line);
    let (time, rest) = rest.split_once("] \"").expect(line);
    assert!(time.ends_with(" +0000") && time.len() == 26, "{line}");
    let (request, rest) = rest.split_once("\" ").expect(line);
    let status = rest.split(' ').next().unwrap();
    (addr.to_string(), request.to_string(), status.to_string())
}

#[test]
fn the_json_access_log_has_the_same_fields() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.json");
    let cluster = Cluster::start(
        Setup::callable("basic", 1)
            .arg("--log-format=json")
            .arg(format!("--access-log={}", log.display())),
    );
    let r = http().get(cluster.url("/pid")).send().unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let lines = wait_lines(&log, 1);
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["uri"], "/pid");
    assert_eq!(v["protocol"], "HTTP/1.1");
    assert_eq!(v["status"], 200);
    assert_eq!(v["slot"], 0);
    assert_eq!(v["request_id"], id.as_str());
    assert_eq!(v["remote_addr"], "127.0.0.1");
    assert!(v["request_time"].is_number() && v["queue_time"].is_number());
    assert!(v["bytes_sent"].as_u64().unwrap() > 0);
}

#[test]
fn sigusr1_after_moving_the_log_starts_a_new_file_and_loses_no_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let cluster =
        Cluster::start(Setup::callable("basic", 2).arg(format!("--access-log={}", log.display())));
    let port = cluster.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let load = std::thread::spawn(move || {
        let client = http();
        let (mut sent, mut answered) = (0, 0);
        let until = Instant::now() + Duration::from_secs(60);
        while !flag.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < until {
            sent += 1;
            if client
                .get(format!("http://127.0.0.1:{port}/pid"))
                .send()
                .is_ok_and(|r| r.status() == 200)
            {
                answered += 1;
            }
        }
        assert_eq!(sent, answered, "every request was answered");
        answered
    });
    wait_lines(&log, 20);
    std::fs::rename(&log, &rotated).unwrap();
    cluster.signal(nix::sys::signal::Signal::SIGUSR1);
    wait_lines(&log, 20);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = load.join().unwrap();
    let total = wait_until(Duration::from_secs(10), || {
        let count = |p: &Path| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .count()
        };
        let total = count(&rotated) + count(&log);
        (total == answered).then_some(total)
    });
    assert_eq!(
        total,
        Some(answered),
        "every answered request has exactly one line across both files"
    );
    assert!(cluster.child.is_some() && pid_alive(cluster.master_pid()));
}

#[test]
fn no_logging_writes_no_access_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let cluster = Cluster::start(
        Setup::callable("basic", 1)
            .arg("--no-logging")
            .arg(format!("--access-log={}", log.display())),
    );
    http().get(cluster.url("/pid")).send().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!log.exists());
    // SIGUSR1 without a log does not stop the master.
    cluster.signal(nix::sys::signal::Signal::SIGUSR1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        http().get(cluster.url("/pid")).send().unwrap().status(),
        200
    );
}
