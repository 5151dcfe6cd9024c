//! The HTTP server of `ppm worker --listen`, which PHP's
//! own thread runs (src/workers/native/http_link.rs): several clients at once,
//! keep-alive, pipelining, streamed responses, stopping, and a process
//! whose memory does not grow with the requests it serves.
//!
//! Requests go over raw TCP, so the test controls exactly what each
//! connection sends and when.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::native::NativeServer;
use common::*;

fn start(extra: &[&str]) -> NativeServer {
    let mut args = vec!["--bridge", "callable", "--bootstrap", "app.php"];
    args.extend_from_slice(extra);
    NativeServer::start(&fixture("native"), &args)
}

/// One client connection, reading responses as HTTP/1.1 frames them.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(server: &NativeServer) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, raw: &str) {
        self.stream.write_all(raw.as_bytes()).unwrap();
    }

    fn get(&mut self, path: &str) -> (u16, String) {
        self.send(&format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"));
        self.response()
    }

    /// Reads more into the buffer; panics on a timeout or a close.
    fn fill(&mut self) {
        let mut chunk = [0u8; 16384];
        let n = self
            .stream
            .read(&mut chunk)
            .unwrap_or_else(|e| panic!("reading a response: {e}"));
        assert!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// Waits until `text` has arrived; what came so far.
    fn wait_for(&mut self, text: &str) -> String {
        while !String::from_utf8_lossy(&self.buf).contains(text) {
            self.fill();
        }
        String::from_utf8_lossy(&self.buf).into_owned()
    }

    /// The next response: status and body (Content-Length or chunked).
    fn response(&mut self) -> (u16, String) {
        let end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            self.fill();
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
        self.buf.drain(..end);
        let status = head[9..12].parse().unwrap();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse::<usize>().unwrap());
        let mut body = Vec::new();
        if let Some(length) = length {
            while self.buf.len() < length {
                self.fill();
            }
            body.extend(self.buf.drain(..length));
        } else {
            assert!(head.contains("transfer-encoding: chunked"), "{head}");
            loop {
                let line_end = loop {
                    if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break at;
                    }
                    self.fill();
                };
                let size = usize::from_str_radix(
                    String::from_utf8_lossy(&self.buf[..line_end]).trim(),
                    16,
                )
                .unwrap();
                while self.buf.len() < line_end + 2 + size + 2 {
                    self.fill();
                }
                body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    break;
                }
            }
        }
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

#[test]
fn idle_and_half_sent_connections_do_not_hold_up_other_clients() {
    let server = start(&[]);
    let mut idle = Conn::open(&server);
    assert_eq!(idle.get("/"), (200, "hello".into()));
    let mut half = Conn::open(&server);
    half.send("GET /sleep?ms=1 HTTP/1.1\r\nHost: t\r\n");
    // Meanwhile another client is served, request after request.
    let started = Instant::now();
    let mut other = Conn::open(&server);
    for _ in 0..3 {
        assert_eq!(other.get("/"), (200, "hello".into()));
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "other clients waited {:?}",
        started.elapsed()
    );
    // The idle connection is still alive, and the half-sent request is
    // answered once it is complete.
    assert_eq!(idle.get("/"), (200, "hello".into()));
    half.send("\r\n");
    assert_eq!(half.response(), (200, "slept".into()));
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let server = start(&[]);
    let mut conn = Conn::open(&server);
    conn.send(concat!(
        "GET /sleep?ms=20 HTTP/1.1\r\nHost: t\r\n\r\n",
        "POST /input HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\n",
        "Content-Length: 7\r\n\r\na=1&b=2",
        "GET / HTTP/1.1\r\nHost: t\r\n\r\n",
    ));
    assert_eq!(conn.response(), (200, "slept".into()));
    let (status, input) = conn.response();
    assert_eq!(status, 200);
    assert!(input.contains(r#""post":{"a":"1","b":"2"}"#), "{input}");
    assert_eq!(conn.response(), (200, "hello".into()));
}

#[test]
fn a_flushed_response_reaches_the_client_while_php_goes_on() {
    let server = start(&[]);
    let mut conn = Conn::open(&server);
    let started = Instant::now();
    conn.send("GET /stream?ms=1500 HTTP/1.1\r\nHost: t\r\n\r\n");
    conn.wait_for("first;");
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "the flushed part came after {:?}",
        started.elapsed()
    );
    assert_eq!(conn.response(), (200, "first;second".into()));
    assert!(started.elapsed() >= Duration::from_millis(1500));
    // The connection is still usable after a streamed response.
    assert_eq!(conn.get("/"), (200, "hello".into()));
}

#[test]
fn a_stop_lets_the_request_in_progress_finish_and_closes_idle_connections() {
    let mut server = start(&[]);
    // A keep-alive connection that is idle at the stop does not hold the
    // process up.
    let mut idle = Conn::open(&server);
    assert_eq!(idle.get("/"), (200, "hello".into()));
    let mut conn = Conn::open(&server);
    conn.send("GET /sleep?ms=800 HTTP/1.1\r\nHost: t\r\n\r\n");
    let in_php = wait_until(Duration::from_secs(5), || {
        sleeping(server.pid()).then_some(())
    });
    assert!(in_php.is_some(), "the request runs its usleep()");
    let pid = nix::unistd::Pid::from_raw(server.pid() as i32);
    let stopped = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(conn.response(), (200, "slept".into()));
    assert_eq!(
        server.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        server.log_text()
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "the stop took {:?}",
        stopped.elapsed()
    );
    let mut rest = Vec::new();
    assert_eq!(idle.stream.read_to_end(&mut rest).ok(), Some(0));
}

/// A field of /proc/PID/status in KiB (`VmRSS:`, `VmHWM:`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

#[test]
fn a_large_chunked_upload_goes_to_a_temporary_file_not_memory() {
    let server = start(&[
        "--php-ini",
        "upload_max_filesize=100M",
        "--php-ini",
        "post_max_size=100M",
    ]);
    let mut conn = Conn::open(&server);
    for _ in 0..20 {
        assert_eq!(conn.get("/"), (200, "hello".into()));
    }
    let idle = rss_kib(server.pid());
    let data: Vec<u8> = (0..24 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let digest = sha1_smol::Sha1::from(&data).digest().to_string();
    let mut body =
        b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"big.bin\"\r\n\r\n".to_vec();
    body.extend_from_slice(&data);
    body.extend_from_slice(b"\r\n--b--\r\n");
    conn.send(
        "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=b\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
    );
    for chunk in body.chunks(256 * 1024) {
        conn.stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .unwrap();
        conn.stream.write_all(chunk).unwrap();
        conn.stream.write_all(b"\r\n").unwrap();
    }
    conn.send("0\r\n\r\n");
    let (status, upload) = conn.response();
    assert_eq!(status, 200, "{upload}");
    assert!(upload.contains(r#""is_uploaded":true"#), "{upload}");
    assert!(
        upload.contains(&format!(r#""sha1":"{digest}""#)),
        "{upload}"
    );
    let peak = status_kib(server.pid(), "VmHWM:");
    assert!(
        peak < idle + 12 * 1024,
        "peak RSS {peak} KiB for a 24 MB chunked upload, idle {idle} KiB: the body was held in memory"
    );
}

/// The short version of bench/native-rss.sh (1,000,000 requests): a
/// per-request leak anywhere in the process (PHP's request state, the
/// SAPI, the HTTP server) shows in its RSS after 20,000 requests.
#[test]
fn the_process_does_not_grow_over_20000_requests() {
    let server = start(&[]);
    let mut conn = Conn::open(&server);
    let mut rss_at_2000 = 0;
    for i in 0..20_000 {
        if i % 2 == 0 {
            assert_eq!(conn.get("/"), (200, "hello".into()));
        } else {
            // A form POST: php://input's temp stream, $_POST, the filter
            // extension's copies, a cookie, a query string.
            let body = format!("a={i}&b[]=x&c=%C3%A9");
            conn.send(&format!(
                "POST /input?q={i} HTTP/1.1\r\nHost: t\r\nCookie: s={i}; t=2\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
            let (status, _) = conn.response();
            assert_eq!(status, 200);
        }
        if i == 2_000 {
            rss_at_2000 = rss_kib(server.pid());
        }
    }
    let rss_at_end = rss_kib(server.pid());
    assert!(
        rss_at_end * 100 <= rss_at_2000 * 105,
        "RSS grew from {rss_at_2000} KiB after 2,000 requests to {rss_at_end} KiB after 20,000"
    );
}
