//! The FastCGI front door (`--fastcgi-listen`), spoken to by a raw client
//! written here (records as the specification lays them out) and by nginx.
//!
//! The `basic` fixture runs in a copy whose `seen.log` gets a line for
//! every request PHP sees: what the front door refuses must never appear
//! there. After each refusal the listener must still serve.
//!
//! The differential test sends the same requests through one nginx to
//! php-fpm8.2 and to ppm, both with nginx's stock `fastcgi_params`, and
//! compares the CGI variables of `$_SERVER`.

mod common;
mod deploy;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use deploy::nginx::Nginx;
use deploy::Proc;

const BEGIN_REQUEST: u8 = 1;
const ABORT_REQUEST: u8 = 2;
const END_REQUEST: u8 = 3;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;
const STDOUT: u8 = 6;
const GET_VALUES: u8 = 9;
const GET_VALUES_RESULT: u8 = 10;
const UNKNOWN_TYPE: u8 = 11;

// ---------------------------------------------------------------------------
// The specification
// ---------------------------------------------------------------------------

#[test]
fn requests_follow_each_other_on_a_kept_connection_and_management_records_are_answered() {
    let served = Served::start(&[]);
    let mut conn = served.connect();
    conn.send(&record(
        GET_VALUES,
        0,
        &pairs(&[
            ("FCGI_MAX_CONNS", ""),
            ("FCGI_MAX_REQS", ""),
            ("FCGI_MPXS_CONNS", ""),
            ("SOMETHING_ELSE", ""),
        ]),
    ));
    let (kind, id, content) = conn.read().expect("GET_VALUES_RESULT");
    assert_eq!((kind, id), (GET_VALUES_RESULT, 0));
    let values = parse_pairs(&content);
    assert_eq!(values["FCGI_MPXS_CONNS"], "0", "{values:?}");
    assert!(values["FCGI_MAX_CONNS"].parse::<u32>().unwrap() > 0);
    assert_eq!(values["FCGI_MAX_CONNS"], values["FCGI_MAX_REQS"]);
    assert_eq!(values.len(), 3, "unknown names are left out: {values:?}");

    // An unknown record type is named back; another role is refused.
    conn.send(&record(42, 0, &[0; 8]));
    let (kind, _, content) = conn.read().expect("UNKNOWN_TYPE");
    assert_eq!((kind, content[0]), (UNKNOWN_TYPE, 42));
    conn.send(&record(BEGIN_REQUEST, 9, &[0, 2, 1, 0, 0, 0, 0, 0]));
    let (kind, id, content) = conn.read().expect("END_REQUEST");
    assert_eq!(
        (kind, id, content[4]),
        (END_REQUEST, 9, 3),
        "FCGI_UNKNOWN_ROLE"
    );

    for n in 1..=3u16 {
        let answer = conn.request(n, true, &get(&format!("/kept-{n}")), b"");
        assert!(answer.stdout.starts_with("Status: 404"), "{answer:?}");
        assert!(answer.stdout.contains(&format!("no route /kept-{n}")));
        assert_eq!(answer.end, Some(0), "{answer:?}");
    }
    // Without FCGI_KEEP_CONN the connection ends with the request.
    let answer = conn.request(4, false, &get("/"), b"");
    assert!(
        answer.stdout.starts_with("Status: 200 OK\r\n"),
        "{answer:?}"
    );
    assert!(answer.stdout.contains("\r\n\r\nHello from worker"));
    assert!(
        conn.read().is_none(),
        "closed after a request without keep-conn"
    );
    assert_eq!(
        served.seen(),
        ["GET /kept-1", "GET /kept-2", "GET /kept-3", "GET /"]
    );
}

#[test]
fn malformed_records_close_the_connection_with_a_log_line_and_never_reach_php() {
    let served = Served::start(&[]);
    let params = |uri: &str| pairs(&get(uri));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a record of version 2", {
            let mut r = begin(1, true);
            r.extend(record(PARAMS, 1, &params("/bad-version")));
            r.extend(record(PARAMS, 1, b""));
            r[16] = 2; // the PARAMS record's version byte
            r.extend(record(STDIN, 1, b""));
            r
        }),
        ("a name-value pair running past its stream", {
            let mut r = begin(1, true);
            let mut p = params("/bad-pair");
            p.extend([5, 100, b'N', b'A']); // name 5 bytes, value 100: truncated
            r.extend(record(PARAMS, 1, &p));
            r.extend(record(PARAMS, 1, b""));
            r.extend(record(STDIN, 1, b""));
            r
        }),
        ("STDOUT from the web server", {
            let mut r = begin(1, true);
            r.extend(record(PARAMS, 1, &params("/bad-direction")));
            r.extend(record(STDOUT, 1, b"hello"));
            r.extend(record(PARAMS, 1, b""));
            r.extend(record(STDIN, 1, b""));
            r
        }),
        ("STDIN before the parameters ended", {
            let mut r = begin(1, true);
            r.extend(record(PARAMS, 1, &params("/bad-order")));
            r.extend(record(STDIN, 1, b"x"));
            r
        }),
        (
            "a BEGIN_REQUEST body of 3 bytes",
            record(BEGIN_REQUEST, 1, &[0, 1, 0]),
        ),
        ("PARAMS of a request never begun", {
            let mut r = record(PARAMS, 7, &params("/bad-stray"));
            r.extend(record(PARAMS, 7, b""));
            r
        }),
        ("a connection cut inside a record", {
            let mut r = begin(1, false);
            r.extend(&record(PARAMS, 1, &params("/bad-cut"))[..20]);
            r
        }),
    ];
    for (what, bytes) in &cases {
        let mut conn = served.connect();
        conn.send(bytes);
        if what.contains("cut") {
            conn.stream.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let mut answered = Vec::new();
        while let Some(record) = conn.read() {
            answered.push(record);
        }
        assert!(
            answered.iter().all(|(kind, _, _)| *kind != STDOUT),
            "{what}: no response, the connection is closed: {answered:?}"
        );
    }
    // The master's log lines are written by a thread of their own.
    let logged = |log: &str| {
        log.matches("FastCGI: closing a connection that sent a malformed record")
            .count()
            >= cases.len() - 1
            && log.contains("record version 2")
    };
    wait_until(Duration::from_secs(5), || {
        logged(&served.cluster.log_text()).then_some(())
    });
    let log = served.cluster.log_text();
    assert!(logged(&log), "each malformed stream is logged:\n{log}");
    assert!(log.contains("record version 2"), "{log}");
    assert!(served.seen().is_empty(), "PHP saw {:?}", served.seen());
    // And the listener still serves.
    let answer = served.connect().request(1, false, &get("/"), b"");
    assert!(answer.stdout.starts_with("Status: 200"), "{answer:?}");
}

#[test]
fn oversized_parameters_and_bodies_are_refused_like_their_http_twins() {
    let served = Served::start(&[
        "--max-request-line=256",
        "--max-header-size=1024",
        "--max-headers=10",
        "--max-body-size=10000",
        "--body-buffer-size=1024",
        "--header-timeout=1",
    ]);
    let refused = |params: Vec<(String, String)>, body: &[u8]| {
        let mut conn = served.connect();
        let params: Vec<(&str, &str)> = params
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        conn.request(1, true, &params, body).stdout
    };
    let with = |uri: &str, extra: &[(String, String)]| {
        let mut params: Vec<(String, String)> = get(uri)
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect();
        params.extend(extra.iter().cloned());
        params
    };

    let big = with("/big-params", &[("HTTP_X_BIG".into(), "x".repeat(2000))]);
    let answer = refused(big, b"");
    assert!(answer.starts_with("Status: 431"), "{answer}");
    let many: Vec<(String, String)> = (0..11)
        .map(|i| (format!("HTTP_X_H{i}"), "v".to_string()))
        .collect();
    let answer = refused(with("/many-headers", &many), b"");
    assert!(answer.starts_with("Status: 431"), "{answer}");
    let declared = with("/declared", &[("CONTENT_LENGTH".into(), "10001".into())]);
    let answer = refused(declared, b"");
    assert!(answer.starts_with("Status: 413"), "{answer}");
    // A body past the limit without a declared length.
    let sent = with("/undeclared", &[]);
    let answer = refused(sent, &vec![b'b'; 10001]);
    assert!(answer.starts_with("Status: 413"), "{answer}");

    // Parameters that never end: 408 after --header-timeout.
    let mut conn = served.connect();
    conn.send(&begin(1, true));
    conn.send(&record(PARAMS, 1, &pairs(&get("/slow-head"))));
    let started = Instant::now();
    let answer = conn.answer(1);
    assert!(answer.stdout.starts_with("Status: 408"), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A body past --body-buffer-size is spooled and arrives whole.
    let body: Vec<u8> = (0..9000u32).map(|i| (i % 251) as u8).collect();
    let mut params = get("/sha1");
    params.push(("CONTENT_LENGTH", body.len().to_string()));
    params.push(("CONTENT_TYPE", "application/octet-stream".to_string()));
    let answer = served.connect().request(1, false, &params, &body);
    let text = answer.stdout.rsplit("\r\n\r\n").next().unwrap().to_string();
    assert!(text.starts_with("9000 "), "{answer:?}");
    assert_eq!(served.seen(), ["POST /sha1"], "only the good request ran");
}

#[test]
fn an_abort_drops_a_queued_request_and_lets_a_running_one_finish() {
    let served = Served::start(&[]);
    // The only worker is busy for 1.5 s.
    let mut busy = served.connect();
    busy.send_request(1, false, &get("/sleep?ms=1500"), b"");
    served.cluster.wait_request_running();

    // Queued behind it, then aborted: ended at once, never run.
    let mut queued = served.connect();
    queued.send_request(1, true, &get("/queued-then-aborted"), b"");
    served.cluster.wait_queued(1);
    let started = Instant::now();
    queued.send(&record(ABORT_REQUEST, 1, b""));
    let answer = queued.answer(1);
    assert_eq!(answer.end, Some(0), "{answer:?}");
    assert!(answer.stdout.is_empty(), "{answer:?}");
    assert!(started.elapsed() < Duration::from_millis(800));
    // The kept connection serves on.
    let next = queued.request(2, false, &get("/after-abort"), b"");
    assert!(next.stdout.contains("no route /after-abort"), "{next:?}");
    assert!(busy.answer(1).stdout.contains("slept"));

    // Running, then aborted: the request ends for the web server, the
    // worker finishes it (PHP saw it) and serves the next.
    let mut running = served.connect();
    running.send_request(1, true, &get("/sleep?ms=700"), b"");
    served.cluster.wait_request_running();
    running.send(&record(ABORT_REQUEST, 1, b""));
    let answer = running.answer(1);
    assert!(answer.stdout.is_empty(), "{answer:?}");
    let next = served.connect().request(1, false, &get("/"), b"");
    assert!(next.stdout.contains("Hello from worker"), "{next:?}");
    assert_eq!(
        served.seen(),
        [
            "GET /sleep?ms=1500",
            "GET /after-abort",
            "GET /sleep?ms=700",
            "GET /"
        ]
    );
}

#[test]
fn a_unix_socket_listener_from_ppm_json_serves_with_mode_0660_and_a_port_in_use_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ppm-fastcgi.sock");
    // From ppm.json, as a string (a list works too).
    let config = dir.path().join("ppm.json");
    let json = serde_json::json!({ "fastcgi-listen": format!("unix:{}", socket.display()) });
    std::fs::write(&config, json.to_string()).unwrap();
    let cluster =
        Cluster::start(Setup::callable("basic", 1).arg(format!("--config={}", config.display())));
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut conn = Client::new(stream);
    let answer = conn.request(1, false, &get("/"), b"");
    assert!(answer.stdout.contains("Hello from worker"), "{answer:?}");
    drop(cluster);
    assert!(!socket.exists(), "the socket file is removed at stop");

    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let base = free_ports(3);
    let app = fixture("basic");
    let fastcgi = format!("--fastcgi-listen=127.0.0.1:{port}");
    let (code, _, err) = run_ppm(
        &start_args(&app, 1, base, &[&fastcgi]),
        Duration::from_secs(30),
    );
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port} (FastCGI)")),
        "{err}"
    );
}

#[test]
fn nginx_to_ppm_gives_php_the_cgi_variables_nginx_to_php_fpm_gives() {
    let fpm_dir = tempfile::tempdir().unwrap();
    let tmp = fpm_dir.path();
    let front = tmp.join("front.php");
    let fill = |template: &str| {
        std::fs::read_to_string(root().join("tests/fpm").join(template))
            .unwrap()
            .replace("{{TMP}}", path_str(tmp))
            .replace("{{APP}}", path_str(&fixture("basic").join("app.php")))
    };
    std::fs::write(&front, fill("front.php")).unwrap();
    std::fs::write(tmp.join("php-fpm.conf"), fill("php-fpm.conf")).unwrap();
    let _fpm = Proc::spawn(
        "php-fpm",
        Command::new("/usr/sbin/php-fpm8.2")
            .args(["-F", "-R", "-y"])
            .arg(tmp.join("php-fpm.conf"))
            .arg("-p")
            .arg(tmp),
        &tmp.join("php-fpm.out"),
    );
    let (_cluster, fastcgi) = Cluster::start_fastcgi(Setup::callable("basic", 1));
    // One server, so that both sides get the same SERVER_PORT; the
    // X-Backend header picks the upstream and is blanked for both.
    let port = free_ports(1);
    let site = format!(
        "upstream fpm {{ server unix:{sock}; }}\n\
         upstream ppm {{ server {fastcgi}; }}\n\
         map $http_x_backend $backend {{ default fpm; ppm ppm; }}\n\
         server {{\n\
           listen 127.0.0.1:{port};\n\
           server_name differential.test;\n\
           root {root};\n\
           location /cgi {{\n\
             fastcgi_split_path_info ^(/cgi)(/.*)$;\n\
             include fastcgi_params;\n\
             fastcgi_param SCRIPT_FILENAME {front};\n\
             fastcgi_param PATH_INFO $fastcgi_path_info;\n\
             fastcgi_param HTTP_X_BACKEND \"\";\n\
             fastcgi_pass $backend;\n\
           }}\n\
         }}\n",
        sock = tmp.join("php-fpm.sock").display(),
        root = fixture("basic").display(),
        front = front.display(),
    );
    let nginx = Nginx::with_site(port, &site);
    let client = http();
    let fetch = |backend: &str, request: &MakeRequest| {
        let response = request(&nginx.url(""))
            .header("X-Backend", backend)
            .send()
            .unwrap();
        let text = response.text().unwrap();
        let mut vars: BTreeMap<String, serde_json::Value> = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{backend}: not JSON: {text}\n{}", nginx.logs()));
        // Documented: each request has its own client port.
        vars.insert("REMOTE_PORT".into(), "(differs)".into());
        vars
    };
    let requests: Vec<(&str, Box<MakeRequest>)> = vec![
        (
            "GET with a query",
            Box::new(|base: &str| client.get(format!("{base}/cgi?a=1&b[]=x%20y"))),
        ),
        (
            "GET with PATH_INFO",
            Box::new(|base: &str| client.get(format!("{base}/cgi/extra/path?q"))),
        ),
        (
            "POST with headers and basic auth",
            Box::new(|base: &str| {
                client
                    .post(format!("{base}/cgi"))
                    .basic_auth("ada", Some("secret"))
                    .header("X-Custom", "one")
                    .header("Cookie", "a=1; b=2")
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body("field=value")
            }),
        ),
    ];
    for (what, request) in &requests {
        let fpm = fetch("fpm", request.as_ref());
        let ppm = fetch("ppm", request.as_ref());
        assert!(fpm.contains_key("SCRIPT_FILENAME"), "{fpm:?}");
        assert_eq!(
            serde_json::to_string_pretty(&ppm).unwrap(),
            serde_json::to_string_pretty(&fpm).unwrap(),
            "{what}: left is nginx → ppm, right is nginx → php-fpm"
        );
    }
}

#[test]
fn the_php_fpm_guide_quotes_the_shipped_nginx_configuration_verbatim() {
    let guide = std::fs::read_to_string(root().join("doc/from-php-fpm.md")).unwrap();
    let (_, rest) = guide
        .split_once("<!-- quote docker/nginx-fastcgi.conf -->\n```nginx\n")
        .expect("the guide quotes docker/nginx-fastcgi.conf");
    let (quoted, _) = rest.split_once("```").unwrap();
    let shipped = std::fs::read_to_string(root().join("docker/nginx-fastcgi.conf")).unwrap();
    assert_eq!(quoted, shipped);
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Makes a request to the given base URL.
type MakeRequest<'a> = dyn Fn(&str) -> reqwest::blocking::RequestBuilder + 'a;

/// A one-worker cluster of a copy of the `basic` fixture with a FastCGI
/// listener, and the requests its PHP saw.
struct Served {
    cluster: Cluster,
    fastcgi: String,
    app: tempfile::TempDir,
}

impl Served {
    fn start(extra: &[&str]) -> Served {
        let app = fixture_copy("basic");
        std::fs::write(app.path().join("seen.log"), "").unwrap();
        let mut setup = Setup {
            app: app.path().to_path_buf(),
            ..Setup::callable("basic", 1)
        };
        for arg in extra {
            setup = setup.arg(*arg);
        }
        let (cluster, fastcgi) = Cluster::start_fastcgi(setup);
        Served {
            cluster,
            fastcgi,
            app,
        }
    }

    fn connect(&self) -> Client<TcpStream> {
        let stream = TcpStream::connect(&self.fastcgi).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client::new(stream)
    }

    /// "METHOD URI" of each request PHP saw.
    fn seen(&self) -> Vec<String> {
        std::fs::read_to_string(self.app.path().join("seen.log"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// The parameters nginx's stock fastcgi_params sends for `GET uri`, the
/// way a request reaches ppm (or POST when the test adds a body).
fn get(uri: &str) -> Vec<(&'static str, String)> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    vec![
        ("QUERY_STRING", query.to_string()),
        (
            "REQUEST_METHOD",
            if path == "/sha1" { "POST" } else { "GET" }.to_string(),
        ),
        ("SCRIPT_NAME", "/app.php".to_string()),
        ("SCRIPT_FILENAME", "/srv/app/app.php".to_string()),
        ("REQUEST_URI", uri.to_string()),
        ("SERVER_PROTOCOL", "HTTP/1.1".to_string()),
        ("GATEWAY_INTERFACE", "CGI/1.1".to_string()),
        ("REMOTE_ADDR", "127.0.0.1".to_string()),
        ("REMOTE_PORT", "40000".to_string()),
        ("SERVER_ADDR", "127.0.0.1".to_string()),
        ("SERVER_PORT", "80".to_string()),
        ("SERVER_NAME", "fastcgi.test".to_string()),
        ("HTTP_HOST", "fastcgi.test".to_string()),
    ]
}

fn record(kind: u8, id: u16, content: &[u8]) -> Vec<u8> {
    let mut out = vec![1, kind];
    out.extend(id.to_be_bytes());
    out.extend((content.len() as u16).to_be_bytes());
    // Padding to a multiple of 8, as the specification recommends.
    let padding = (8 - content.len() % 8) % 8;
    out.extend([padding as u8, 0]);
    out.extend(content);
    out.extend(std::iter::repeat_n(0, padding));
    out
}

fn begin(id: u16, keep_conn: bool) -> Vec<u8> {
    record(
        BEGIN_REQUEST,
        id,
        &[0, 1, u8::from(keep_conn), 0, 0, 0, 0, 0],
    )
}

fn pairs<N: AsRef<str>, V: AsRef<str>>(pairs: &[(N, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in pairs {
        for len in [name.as_ref().len(), value.as_ref().len()] {
            if len < 128 {
                out.push(len as u8);
            } else {
                out.extend((len as u32 | 0x8000_0000).to_be_bytes());
            }
        }
        out.extend(name.as_ref().as_bytes());
        out.extend(value.as_ref().as_bytes());
    }
    out
}

fn parse_pairs(mut data: &[u8]) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let len = |data: &mut &[u8]| {
        if data[0] < 128 {
            let l = data[0] as usize;
            *data = &data[1..];
            l
        } else {
            let l = u32::from_be_bytes([data[0] & 0x7f, data[1], data[2], data[3]]) as usize;
            *data = &data[4..];
            l
        }
    };
    while !data.is_empty() {
        let (n, v) = (len(&mut data), len(&mut data));
        let name = String::from_utf8_lossy(&data[..n]).into_owned();
        let value = String::from_utf8_lossy(&data[n..n + v]).into_owned();
        map.insert(name, value);
        data = &data[n + v..];
    }
    map
}

/// A raw FastCGI client on one connection.
struct Client<S> {
    stream: S,
}

/// What came back for one request.
#[derive(Debug)]
struct Answer {
    stdout: String,
    /// END_REQUEST's protocol status; None if the connection closed first.
    end: Option<u8>,
}

impl<S: Read + Write> Client<S> {
    fn new(stream: S) -> Self {
        Client { stream }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn send_request<N: AsRef<str>, V: AsRef<str>>(
        &mut self,
        id: u16,
        keep_conn: bool,
        params: &[(N, V)],
        body: &[u8],
    ) {
        let mut out = begin(id, keep_conn);
        for chunk in pairs(params).chunks(65535) {
            out.extend(record(PARAMS, id, chunk));
        }
        out.extend(record(PARAMS, id, b""));
        for chunk in body.chunks(65535) {
            out.extend(record(STDIN, id, chunk));
        }
        out.extend(record(STDIN, id, b""));
        // A refused request may be answered while its body is still sent.
        let _ = self.stream.write_all(&out);
    }

    fn request<N: AsRef<str>, V: AsRef<str>>(
        &mut self,
        id: u16,
        keep_conn: bool,
        params: &[(N, V)],
        body: &[u8],
    ) -> Answer {
        self.send_request(id, keep_conn, params, body);
        self.answer(id)
    }

    /// STDOUT of request `id` until its END_REQUEST (or the end of the
    /// connection).
    fn answer(&mut self, id: u16) -> Answer {
        let mut stdout = Vec::new();
        while let Some((kind, rid, content)) = self.read() {
            assert_eq!(rid, id, "a record for another request");
            match kind {
                STDOUT => stdout.extend(content),
                END_REQUEST => {
                    return Answer {
                        stdout: String::from_utf8_lossy(&stdout).into_owned(),
                        end: Some(content[4]),
                    }
                }
                other => panic!("unexpected record type {other}"),
            }
        }
        Answer {
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            end: None,
        }
    }

    /// The next record; None at the end of the connection (or after 10 s).
    fn read(&mut self) -> Option<(u8, u16, Vec<u8>)> {
        let mut header = [0u8; 8];
        self.read_exact(&mut header)?;
        let len = u16::from_be_bytes([header[4], header[5]]) as usize;
        let mut content = vec![0u8; len + header[6] as usize];
        self.read_exact(&mut content)?;
        content.truncate(len);
        Some((
            header[1],
            u16::from_be_bytes([header[2], header[3]]),
            content,
        ))
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Option<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut at = 0;
        while at < buf.len() {
            assert!(Instant::now() < deadline, "no answer within 10 s");
            match self.stream.read(&mut buf[at..]) {
                Ok(0) | Err(_) => return None,
                Ok(n) => at += n,
            }
        }
        Some(())
    }
}
