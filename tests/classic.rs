//! `--bridge=script`: real classic PHP applications from Debian's packages
//! (DokuWiki, phpLiteAdmin), each a copy of its own, run through ppm's
//! HTTP port and through nginx `fastcgi_pass` to ppm (the shipped
//! docker/nginx-classic.conf), and compared with the same application
//! under nginx + php-fpm (the same nginx configuration): each step of a
//! session (pages, a login, form submissions, other entry scripts,
//! static files) gives the same status, redirect and page.
//!
//! Needs `dokuwiki` and `phpliteadmin` (scripts/install-deps --tests).

mod common;
mod deploy;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use deploy::nginx::Nginx;
use deploy::Proc;

/// Every side sees this Host, so that pages built from it do not differ
/// by the port each side listens on.
const HOST: &str = "classic.test";
const PASSWORD: &str = "ppm-test-pass";

// ---------------------------------------------------------------------------
// The applications, copied from Debian's packages into a directory of
// their own (data written by a test stays there): DIR/www is the document
// root, everything else lies outside it.
// ---------------------------------------------------------------------------

fn copy_tree(from: &str, to: &Path) {
    let status = Command::new("cp")
        .arg("-rL")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -rL {from}: is the package installed? (scripts/install-deps --tests)"
    );
}

/// DokuWiki: doku.php, index.php, feed.php, lib/exe/*.php; its
/// configuration and pages outside the document root, as Debian lays it.
fn dokuwiki(dir: &Path) {
    copy_tree("/usr/share/dokuwiki", &dir.join("www"));
    copy_tree("/etc/dokuwiki", &dir.join("conf"));
    copy_tree("/var/lib/dokuwiki/data", &dir.join("data"));
    let d = dir.display();
    // DokuWiki's own hook for the configuration's location.
    std::fs::write(
        dir.join("www/inc/preload.php"),
        format!("<?php\ndefine('DOKU_CONF', '{d}/conf/');\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("conf/local.php"),
        format!(
            "<?php\n$conf['title'] = 'ppm wiki';\n$conf['savedir'] = '{d}/data';\n\
             $conf['useacl'] = 1;\n$conf['superuser'] = '@admin';\n"
        ),
    )
    .unwrap();
    // DokuWiki takes a bare MD5 hash.
    let hash = format!("{:x}", md5(PASSWORD.as_bytes()));
    std::fs::write(
        dir.join("conf/users.auth.php"),
        format!("admin:{hash}:Admin:admin@classic.test:admin,user\n"),
    )
    .unwrap();
}

/// phpLiteAdmin: one entry script that reads ./phpliteadmin.config.php
/// from its working directory (php-fpm changes to the script's).
fn phpliteadmin(dir: &Path) {
    let www = dir.join("www");
    std::fs::create_dir_all(dir.join("db")).unwrap();
    std::fs::create_dir_all(&www).unwrap();
    copy_tree("/usr/share/phpliteadmin/phpliteadmin.php", &www);
    copy_tree("/usr/share/phpliteadmin/languages", &www);
    std::fs::write(
        www.join("phpliteadmin.config.php"),
        format!(
            "<?php\n$password = '{PASSWORD}';\n$directory = '{}/db';\n$subdirectories = false;\n",
            dir.display()
        ),
    )
    .unwrap();
}

// ---------------------------------------------------------------------------
// The three sides
// ---------------------------------------------------------------------------

/// One way of running an application copy.
struct Side {
    name: &'static str,
    base: String,
    app: tempfile::TempDir,
    _ppm: Option<Cluster>,
    _nginx: Option<Nginx>,
    _fpm: Option<Proc>,
}

enum Via {
    PpmHttp,
    PpmNginx,
    FpmNginx,
}

fn start(via: Via, setup: fn(&Path)) -> Side {
    let app = tempfile::tempdir().unwrap();
    setup(app.path());
    let www = app.path().join("www");
    let nginx_to = |fastcgi: String| {
        let port = free_ports(1);
        let site = deploy::render(
            "nginx-classic.conf",
            &[
                ("PPM_FASTCGI", fastcgi),
                ("PROXY_LISTEN", format!("127.0.0.1:{port}")),
                ("PUBLIC_DIR", www.display().to_string()),
            ],
        );
        Nginx::with_site(port, &site)
    };
    match via {
        Via::PpmHttp | Via::PpmNginx => {
            let (ppm, fastcgi) = Cluster::start_fastcgi(Setup {
                app: app.path().to_path_buf(),
                bridge: "script",
                bootstrap: "symfony",
                workers: 2,
                extra: vec!["--document-root=www".into()],
                wait_ready: true,
            });
            if matches!(via, Via::PpmHttp) {
                Side {
                    name: "ppm's HTTP port",
                    base: ppm.url(""),
                    app,
                    _ppm: Some(ppm),
                    _nginx: None,
                    _fpm: None,
                }
            } else {
                let nginx = nginx_to(fastcgi);
                Side {
                    name: "nginx → ppm",
                    base: nginx.url(""),
                    app,
                    _ppm: Some(ppm),
                    _nginx: Some(nginx),
                    _fpm: None,
                }
            }
        }
        Via::FpmNginx => {
            let conf = app.path().join("php-fpm.conf");
            let socket = app.path().join("php-fpm.sock");
            std::fs::write(
                &conf,
                format!(
                    "[global]\nerror_log = {d}/php-fpm.log\ndaemonize = no\n\
                     [ref]\nlisten = {s}\nlisten.mode = 0666\npm = static\n\
                     pm.max_children = 2\nclear_env = no\ncatch_workers_output = yes\n",
                    d = app.path().display(),
                    s = socket.display()
                ),
            )
            .unwrap();
            let fpm = Proc::spawn(
                "php-fpm",
                Command::new(common::fpm::PHP_FPM)
                    .args(["-F", "-R", "-y"])
                    .arg(&conf)
                    .arg("-p")
                    .arg(app.path()),
                &app.path().join("php-fpm.out"),
            );
            let up = wait_until(Duration::from_secs(20), || socket.exists().then_some(()));
            assert!(up.is_some(), "php-fpm listens: {}", fpm.log_text());
            let nginx = nginx_to(format!("unix:{}", socket.display()));
            Side {
                name: "nginx → php-fpm",
                base: nginx.url(""),
                app,
                _ppm: None,
                _nginx: Some(nginx),
                _fpm: Some(fpm),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// A browser session, step by step
// ---------------------------------------------------------------------------

/// What one step gave, normalized: what differs between two copies of the
/// same application by nature (its directory, random tokens, the time) is
/// masked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    what: String,
    status: u16,
    location: Option<String>,
    content_type: String,
    body: String,
}

struct Browser<'a> {
    side: &'a Side,
    client: reqwest::blocking::Client,
    steps: Vec<Step>,
    last: String,
}

impl<'a> Browser<'a> {
    fn new(side: &'a Side) -> Self {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .no_proxy()
            .build()
            .unwrap();
        Browser {
            side,
            client,
            steps: Vec::new(),
            last: String::new(),
        }
    }

    fn get(&mut self, path: &str) -> &str {
        let request = self.client.get(format!("{}{path}", self.side.base));
        self.send(format!("GET {path}"), request)
    }

    fn post(&mut self, path: &str, form: &[(&str, &str)]) -> &str {
        let request = self
            .client
            .post(format!("{}{path}", self.side.base))
            .form(form);
        self.send(format!("POST {path}"), request)
    }

    fn send(&mut self, what: String, request: reqwest::blocking::RequestBuilder) -> &str {
        let response = request
            .header("Host", HOST)
            .send()
            .unwrap_or_else(|e| panic!("{} {what}: {e}", self.side.name));
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap_or("?").to_string())
        };
        let status = response.status().as_u16();
        let location = header("location");
        let content_type = header("content-type").unwrap_or_default().to_lowercase();
        let body = String::from_utf8_lossy(&response.bytes().unwrap()).into_owned();
        let app = self.side.app.path().display().to_string();
        self.steps.push(Step {
            what: normalize(&what, &app),
            status,
            location: location.map(|l| normalize(&l, &app)),
            content_type,
            body: normalize(&body, &app),
        });
        self.last = body;
        &self.last
    }

    /// The value of the form field `name` in the last page.
    fn field(&self, name: &str) -> String {
        field(&self.last, name).unwrap_or_else(|| {
            panic!(
                "{}: no field {name} in {}\n{}",
                self.side.name,
                self.steps.last().map_or("", |s| &s.what),
                self.last
            )
        })
    }

    /// The last answer is compared by its status only.
    fn status_only(&mut self) {
        let step = self.steps.last_mut().unwrap();
        step.content_type.clear();
        step.body.clear();
    }

    fn last_step(&self) -> &Step {
        self.steps.last().unwrap()
    }
}

/// `name="NAME" value="V"` (either quote) in `html`.
fn field(html: &str, name: &str) -> Option<String> {
    for quote in ['"', '\''] {
        let key = format!("name={quote}{name}{quote} value={quote}");
        if let Some(at) = html.find(&key) {
            let rest = &html[at + key.len()..];
            return rest.find(quote).map(|end| rest[..end].to_string());
        }
    }
    None
}

/// Masks the application's directory, runs of 16+ hex digits (tokens,
/// session ids, cache seeds), runs of 9+ digits (Unix times) and
/// `YYYY/MM/DD HH:MM` or `YYYY-MM-DD` dates.
fn normalize(text: &str, app_dir: &str) -> String {
    let text = text
        .replace(app_dir, "/APP")
        .replace(&app_dir.replace('/', "%2F"), "%2FAPP");
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let hex = chars[i..]
            .iter()
            .take_while(|c| c.is_ascii_hexdigit())
            .count();
        let digits = chars[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        let boundary = i == 0 || !chars[i - 1].is_ascii_alphanumeric();
        if boundary && hex >= 16 {
            out.push_str("<hex>");
            i += hex;
        } else if boundary && digits >= 9 {
            out.push_str("<n>");
            i += digits;
        } else if boundary && digits > 0 && is_fraction(&chars[i + digits..]) {
            // "Page generated in 0.0004 seconds."
            let fraction = chars[i + digits + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            out.push_str("<t>");
            i += digits + 1 + fraction;
        } else if boundary && digits == 4 && is_date(&chars[i..]) {
            out.push_str("<date>");
            i += 10;
            // ISO 8601's THH:MM:SS
            if chars.get(i) == Some(&'T') && chars.len() > i + 3 && is_time(&chars[i + 3..]) {
                out.push_str("T<time>");
                i += 6;
                if is_time(&chars[i..]) {
                    i += 3;
                }
            }
        } else if boundary && (1..=2).contains(&digits) && is_time(&chars[i + digits..]) {
            // 00:57, 00:57:54, 12:57am
            out.push_str("<time>");
            i += digits + 3;
            if is_time(&chars[i..]) {
                i += 3;
            }
        } else if boundary && hex > 0 {
            out.extend(&chars[i..i + hex]);
            i += hex;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    // Durations PHP printed as a whole number ("took 0 sec").
    out.replace("took 0 sec", "took <t> sec")
        .replace("in 0 seconds", "in <t> seconds")
}

fn is_time(c: &[char]) -> bool {
    c.len() >= 3 && c[0] == ':' && c[1].is_ascii_digit() && c[2].is_ascii_digit()
}

fn is_fraction(c: &[char]) -> bool {
    c.first() == Some(&'.') && c.len() > 3 && c[1..3].iter().all(|d| d.is_ascii_digit())
}

fn is_date(c: &[char]) -> bool {
    c.len() >= 10
        && (c[4] == '/' || c[4] == '-')
        && c[7] == c[4]
        && [0, 1, 2, 3, 5, 6, 8, 9]
            .iter()
            .all(|&k| c[k].is_ascii_digit())
}

/// MD5 (RFC 1321), for DokuWiki's password file.
fn md5(input: &[u8]) -> u128 {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4294967296.0) as u32)
        .collect();
    let mut msg = input.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((input.len() as u64) * 8).to_le_bytes());
    let mut h: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
    for chunk in msg.chunks(64) {
        let m: Vec<u32> = chunk
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let [mut a, mut b, mut c, mut d] = h;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut bytes = [0u8; 16];
    for (i, word) in h.iter().enumerate() {
        bytes[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
    }
    u128::from_be_bytes(bytes)
}

// ---------------------------------------------------------------------------
// The sessions
// ---------------------------------------------------------------------------

/// DokuWiki: the start page, a login, a page created through the edit
/// form, other entry scripts (index.php, feed.php, lib/exe/css.php) and a
/// static file.
fn dokuwiki_session(side: &Side) -> Vec<Step> {
    let mut b = Browser::new(side);
    let page = b.get("/doku.php?id=start");
    assert!(page.contains("<title>start [ppm wiki]</title>"), "{page}");
    assert_eq!(b.last_step().status, 200);
    b.get("/");
    assert_eq!(b.last_step().status, 302, "index.php sends to doku.php");
    b.get("/doku.php?id=start&do=login");
    let sectok = b.field("sectok");
    b.post(
        "/doku.php?id=start",
        &[
            ("sectok", &sectok),
            ("id", "start"),
            ("do", "login"),
            ("u", "admin"),
            ("p", PASSWORD),
        ],
    );
    assert_eq!(b.last_step().status, 302, "{}: login", side.name);
    let page = b.get("/doku.php?id=start");
    assert!(page.contains("Log Out"), "{}: logged in\n{page}", side.name);

    b.get("/doku.php?id=playground:ppm&do=edit");
    let form: Vec<(String, String)> = ["sectok", "rev", "date", "prefix", "suffix", "changecheck"]
        .iter()
        .map(|name| (name.to_string(), b.field(name)))
        .collect();
    let mut fields: Vec<(&str, &str)> =
        form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    fields.extend([
        ("id", "playground:ppm"),
        ("target", "section"),
        (
            "wikitext",
            "====== Hello from ppm ======\n\nSaved through a **form**.\n",
        ),
        ("summary", "created"),
        ("do[save]", "Save"),
    ]);
    b.post("/doku.php?id=playground:ppm&do=edit", &fields);
    assert_eq!(b.last_step().status, 302, "{}: saved", side.name);
    let page = b.get("/doku.php?id=playground:ppm");
    assert!(
        page.contains("Hello from ppm") && page.contains("<strong>form</strong>"),
        "{}: the saved page\n{page}",
        side.name
    );
    b.get("/doku.php/playground:ppm");
    b.get("/feed.php");
    assert!(b.last.contains("playground:ppm"), "{}: feed", side.name);
    b.get("/lib/exe/css.php?t=dokuwiki");
    assert!(b.last_step().content_type.starts_with("text/css"));
    b.get("/lib/tpl/dokuwiki/images/logo.png");
    assert_eq!(b.last_step().status, 200);
    b.get("/doku.php?id=start&do=logout");
    b.get("/no-such.php");
    assert_eq!(b.last_step().status, 404);
    // nginx answers this itself (try_files … =404) in words of its own.
    b.status_only();
    b.get("/conf/users.auth.php");
    b.status_only();
    b.steps
}

/// phpLiteAdmin: its login form (with a CSRF token), a database created
/// through a form, SQL run through another, the rows shown.
fn phpliteadmin_session(side: &Side) -> Vec<Step> {
    let mut b = Browser::new(side);
    let page = b.get("/phpliteadmin.php");
    assert!(
        page.contains("name='password'"),
        "{}: login form\n{page}",
        side.name
    );
    let token = b.field("token");
    b.post(
        "/phpliteadmin.php",
        &[
            ("token", &token),
            ("password", PASSWORD),
            ("login", "true"),
            ("remember", "yes"),
        ],
    );
    assert_eq!(b.last_step().status, 302, "{}: login", side.name);
    let page = b.get("/phpliteadmin.php");
    assert!(
        page.contains("Create New Database"),
        "{}: logged in\n{page}",
        side.name
    );
    let token = b.field("token");
    b.post(
        "/phpliteadmin.php?fulltexts=0&numRows=30",
        &[("token", &token), ("new_dbname", "notes")],
    );
    let db = format!("{}/db/notes", side.app.path().display());
    let db = format!("database={}", db.replace('/', "%2F"));
    b.get(&format!("/phpliteadmin.php?{db}&view=sql"));
    let token = b.field("token");
    b.post(
        &format!("/phpliteadmin.php?{db}&view=sql"),
        &[
            ("token", &token),
            (
                "queryval",
                "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT); \
                 INSERT INTO notes(body) VALUES('written through ppm');",
            ),
            ("delimiter", ";"),
            ("query", "Go"),
        ],
    );
    let page = b.get(&format!(
        "/phpliteadmin.php?{db}&table=notes&action=row_view"
    ));
    assert!(
        page.contains("written through ppm"),
        "{}: the row\n{page}",
        side.name
    );
    b.get("/phpliteadmin.php?logout=Logout");
    b.get("/phpliteadmin.config.php");
    b.steps
}

// ---------------------------------------------------------------------------

fn assert_same(reference: &[Step], side: &str, got: &[Step]) {
    assert_eq!(reference.len(), got.len());
    for (want, have) in reference.iter().zip(got) {
        if want == have {
            continue;
        }
        let at = want
            .body
            .chars()
            .zip(have.body.chars())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        let excerpt = |s: &Step| -> String {
            s.body
                .chars()
                .skip(at.saturating_sub(80))
                .take(240)
                .collect()
        };
        panic!(
            "{side} differs from nginx + php-fpm at {}:\n  php-fpm: {} {:?} {} ({} bytes)\n  {side}: {} {:?} {} ({} bytes)\n  from character {at}:\n  php-fpm: {:?}\n  {side}: {:?}",
            want.what,
            want.status,
            want.location,
            want.content_type,
            want.body.len(),
            have.status,
            have.location,
            have.content_type,
            have.body.len(),
            excerpt(want),
            excerpt(have),
        );
    }
}

fn compare(setup: fn(&Path), session: fn(&Side) -> Vec<Step>) {
    let reference = start(Via::FpmNginx, setup);
    let want = session(&reference);
    for via in [Via::PpmHttp, Via::PpmNginx] {
        let side = start(via, setup);
        let got = session(&side);
        assert_same(&want, side.name, &got);
    }
}

#[test]
fn dokuwiki_runs_as_under_php_fpm() {
    compare(dokuwiki, dokuwiki_session);
}

#[test]
fn phpliteadmin_runs_as_under_php_fpm() {
    compare(phpliteadmin, phpliteadmin_session);
}

#[test]
fn md5_matches_rfc_1321() {
    assert_eq!(
        format!("{:x}", md5(b"")),
        "d41d8cd98f00b204e9800998ecf8427e"
    );
    assert_eq!(
        format!("{:x}", md5(b"ppm-test-pass")),
        "2bdc0ed3d29951ffb6acaa922cddea39"
    );
}

// ---------------------------------------------------------------------------
// ppm's own duties with classic scripts
// ---------------------------------------------------------------------------

/// A site of small scripts, one worker, and ppm's limits: nothing of a
/// request is kept for the next, errors end their request only, a stuck
/// script is logged with its backtrace and its worker replaced, workers
/// recycle, and nothing outside the document root or hidden runs.
#[test]
fn scripts_run_afresh_within_ppms_limits() {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir_all(www.join("sub")).unwrap();
    let files = [
        // Redeclaring a function or finding the counter set would show a
        // request's state surviving into the next.
        (
            "state.php",
            "<?php function once() {} $GLOBALS['n'] = ($GLOBALS['n'] ?? 0) + 1; echo $n;",
        ),
        ("fatal.php", "<?php undefined_function();"),
        (
            "loop.php",
            "<?php function spin() { while (true) {} } spin();",
        ),
        (
            "sub/info.php",
            "<?php include 'beside.php'; echo getcwd(), ' ', PHP_SAPI, ' ', \
             var_export(opcache_get_status(false)['opcache_enabled'], true), ' ', $beside;",
        ),
        ("sub/beside.php", "<?php $beside = 'included';"),
        (".hidden.php", "<?php echo 'hidden';"),
        ("data.txt", "static data\n"),
    ];
    for (name, text) in files {
        std::fs::write(www.join(name), text).unwrap();
    }
    std::fs::write(dir.path().join("secret.php"), "<?php echo 'secret';").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.php"), www.join("link.php")).unwrap();

    let mut ppm = Cluster::start(Setup {
        app: dir.path().to_path_buf(),
        bridge: "script",
        bootstrap: "symfony",
        workers: 1,
        extra: vec![
            "--document-root=www".into(),
            "--max-execution-time=3".into(),
            "--slow-request-time=1".into(),
            "--max-requests=6".into(),
            "--recycle-jitter=0".into(),
        ],
        wait_ready: true,
    });
    let client = http();
    let base = ppm.url("");
    let get = |path: &str| {
        let response = client.get(format!("{base}{path}")).send().unwrap();
        let status = response.status().as_u16();
        (status, response.text().unwrap())
    };
    let first = ppm.worker_pids();
    for _ in 0..3 {
        assert_eq!(get("/state.php"), (200, "1".to_string()));
    }
    assert_eq!(get("/fatal.php").0, 500);
    let (status, info) = get("/sub/info.php");
    assert_eq!(status, 200);
    assert_eq!(
        info,
        format!(
            "{} cgi-fcgi true included",
            www.join("sub").canonicalize().unwrap().display()
        )
    );
    assert_eq!(ppm.worker_pids(), first, "one worker served all of it");

    assert_eq!(
        get("/link.php").0,
        404,
        "a symlink out of the document root"
    );
    assert_eq!(get("/.hidden.php").0, 404);
    assert_eq!(get("/data.txt"), (200, "static data\n".to_string()));
    assert!(!ppm.log_text().contains("secret"));

    // The sixth request was the worker's last (--max-requests=6).
    let replaced = wait_until(Duration::from_secs(10), || {
        let pids = ppm.worker_pids();
        (pids[0] != 0 && pids != first).then_some(pids)
    })
    .expect("the worker is recycled after --max-requests");

    let started = std::time::Instant::now();
    assert_eq!(get("/loop.php").0, 504);
    assert!(started.elapsed() < Duration::from_secs(10));
    let log = ppm.log_text();
    assert!(
        log.contains("slow request: GET /loop.php") && log.contains("loop.php"),
        "{log}"
    );
    assert!(
        log.contains("spin()"),
        "the backtrace names the function: {log}"
    );
    let after = wait_until(Duration::from_secs(10), || {
        let pids = ppm.worker_pids();
        (pids[0] != 0 && pids != replaced).then_some(pids)
    });
    assert!(after.is_some(), "the stuck worker is replaced");
    assert_eq!(get("/state.php"), (200, "1".to_string()));
}
