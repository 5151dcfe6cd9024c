//! The reference stack of the differential tests (tests/superglobals.rs,
//! tests/native_superglobals.rs): nginx + php-fpm8.2 beside a ppm, the
//! same requests to both, and a readable diff of PHP's JSON dumps.

use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{HOST, SET_COOKIE};

use super::native::NativeServer;
use super::*;

pub const PHP_FPM: &str = "/usr/sbin/php-fpm8.2";

/// Both sides get this Host header: each listens on a port of its own, and
/// `HTTP_HOST` must not differ because of that.
pub const HOST_HEADER: &str = "superglobals.test:8080";

// ---------------------------------------------------------------------------
// Running the same request against both
// ---------------------------------------------------------------------------

/// Builds one request, given the base URL of either side.
pub type MakeRequest<'a> = &'a dyn Fn(&Client, &str) -> RequestBuilder;

/// A ppm cluster and the reference stack, side by side.
pub struct Both {
    // Declared first, dropped first: ppm stops before the reference.
    pub ppm: PpmSide,
    pub fpm: FpmStack,
}

/// The ppm side of a comparison: a cluster (`ppm start`), or one process
/// (`ppm worker --listen`).
pub enum PpmSide {
    Cluster(Cluster),
    Native(NativeServer),
}

impl PpmSide {
    pub fn url(&self, path: &str) -> String {
        match self {
            PpmSide::Cluster(cluster) => cluster.url(path),
            PpmSide::Native(server) => server.url(path),
        }
    }

    pub fn log_text(&self) -> String {
        match self {
            PpmSide::Cluster(cluster) => cluster.log_text(),
            PpmSide::Native(server) => server.log_text(),
        }
    }
}

impl Both {
    pub fn start() -> Both {
        // The reference first: a machine without nginx or php-fpm fails
        // straight away with the package to install.
        let fpm = FpmStack::start(&[]);
        let ppm = PpmSide::Cluster(Cluster::start(Setup::callable("basic", 1)));
        Both { ppm, fpm }
    }

    /// `ppm worker --listen` against php-fpm, both with the same extra
    /// php.ini settings.
    pub fn native(ini: &[&str]) -> Both {
        let fpm = FpmStack::start(ini);
        let mut args = vec!["--bridge", "callable", "--bootstrap", "app.php"];
        for setting in ini {
            args.extend(["--php-ini", setting]);
        }
        let ppm = PpmSide::Native(NativeServer::start(&fixture("basic"), &args));
        Both { ppm, fpm }
    }

    pub fn ppm_base(&self) -> String {
        self.ppm.url("")
    }

    /// The `/dump` answer of each side (ppm, php-fpm) to the same request.
    pub fn dumps(&self, request: MakeRequest) -> (Json, Json) {
        let client = http();
        let fetch = |side: &str, base: &str| {
            let response = request(&client, base)
                .header(HOST, HOST_HEADER)
                .send()
                .unwrap_or_else(|e| panic!("{side}: request failed: {e}\n{}", self.logs()));
            let status = response.status();
            let text = response.text().unwrap_or_default();
            assert_eq!(
                status,
                200,
                "{side} answered {status}:\n{text}\n{}",
                self.logs()
            );
            let mut dump: Json = serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!("{side} did not answer JSON ({e}):\n{text}\n{}", self.logs())
            });
            // FPM runs tests/fpm/front.php, so there SCRIPT_NAME and
            // PHP_SELF are "/front.php"; ppm's callable bridge has no
            // script per request and names its own entry point. Both are
            // legitimately different, so they are not compared.
            dump.remove(&["server", "SCRIPT_NAME"]);
            dump.remove(&["server", "PHP_SELF"]);
            dump
        };
        (
            fetch("ppm", &self.ppm_base()),
            fetch("php-fpm", &self.fpm.base()),
        )
    }

    /// Sends each request to both sides and fails, after all of them, with
    /// every difference found.
    pub fn assert_same_dumps(&self, requests: &[(&str, MakeRequest)]) {
        let reports: Vec<String> = requests
            .iter()
            .filter_map(|(what, request)| {
                let (ppm, fpm) = self.dumps(*request);
                self.differences(what, &ppm, &fpm)
            })
            .collect();
        assert!(
            reports.is_empty(),
            "{}\n{}",
            reports.join("\n\n"),
            self.logs()
        );
    }

    pub fn assert_same(&self, what: &str, ppm: &Json, fpm: &Json) {
        if let Some(report) = self.differences(what, ppm, fpm) {
            panic!("{report}\n{}", self.logs());
        }
    }

    /// A readable report of how the two dumps differ, if they do.
    pub fn differences(&self, what: &str, ppm: &Json, fpm: &Json) -> Option<String> {
        let mut differences = Vec::new();
        diff("", ppm, fpm, &mut differences);
        (!differences.is_empty()).then(|| {
            format!(
                "{what}: ppm and PHP-FPM disagree\n  {}\n\nppm:\n{}\n\nphp-fpm:\n{}\n",
                differences.join("\n  "),
                ppm.render(),
                fpm.render()
            )
        })
    }

    /// The logs of both sides, for failure messages.
    pub fn logs(&self) -> String {
        format!("--- ppm log:\n{}{}", self.ppm.log_text(), self.fpm.logs())
    }
}

/// What a client sees of a response, as far as the comparison goes.
#[derive(Debug, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub x_fixture: Option<String>,
    pub location: Option<String>,
    pub set_cookie: Vec<String>,
    pub body: String,
}

impl Answer {
    pub fn read(response: Response) -> Answer {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        Answer {
            status: response.status().as_u16(),
            content_type: header("content-type"),
            x_fixture: header("x-fixture"),
            location: header("location"),
            set_cookie: response
                .headers()
                .get_all(SET_COOKIE)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect(),
            body: response.text().unwrap_or_default(),
        }
    }
}

// ---------------------------------------------------------------------------
// The reference stack: nginx + php-fpm8.2
// ---------------------------------------------------------------------------

/// nginx in front of php-fpm8.2, each in its own process group, in a
/// temporary directory. Dropping it stops both and checks they are gone.
pub struct FpmStack {
    dir: tempfile::TempDir,
    port: u16,
    fpm: Option<Child>,
    nginx: Option<Child>,
}

impl FpmStack {
    pub fn start(ini: &[&str]) -> FpmStack {
        let nginx_bin = [
            "/usr/sbin/nginx",
            "/usr/local/sbin/nginx",
            "/usr/local/nginx/sbin/nginx",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
        assert!(
            Path::new(PHP_FPM).is_file(),
            "{PHP_FPM} is not installed; the reference stack needs it: apt-get install php-fpm"
        );
        let Some(nginx_bin) = nginx_bin else {
            panic!("nginx is not installed; the reference stack needs it: apt-get install nginx");
        };

        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path();
        let port = free_ports(1);
        let templates = root().join("tests/fpm");
        let app_dir = fixture("basic");
        let front = tmp.join("front.php");
        // Running as root, nginx would hand requests to workers running as
        // `nobody`, who cannot enter this 0700 directory for request body
        // temp files; elsewhere the directive would only cause a warning.
        let user = if nix::unistd::Uid::effective().is_root() {
            "user root;"
        } else {
            ""
        };
        let fill = |template: &str, out: &Path| {
            let text = std::fs::read_to_string(templates.join(template)).unwrap();
            let text = text
                .replace("{{TMP}}", path_str(tmp))
                .replace("{{PORT}}", &port.to_string())
                .replace("{{APP_DIR}}", path_str(&app_dir))
                .replace("{{APP}}", path_str(&app_dir.join("app.php")))
                .replace("{{FRONT}}", path_str(&front))
                .replace("{{USER}}", user);
            std::fs::write(out, text).unwrap();
        };
        fill("front.php", &front);
        fill("php-fpm.conf", &tmp.join("php-fpm.conf"));
        fill("nginx.conf", &tmp.join("nginx.conf"));

        let mut stack = FpmStack {
            port,
            fpm: None,
            nginx: None,
            dir,
        };
        let tmp = stack.dir.path().to_path_buf();
        stack.fpm = Some(spawn_in_own_group(
            Command::new(PHP_FPM)
                // Foreground, root allowed, our config, our prefix.
                .args(["-F", "-R", "-y"])
                .arg(tmp.join("php-fpm.conf"))
                .args(ini.iter().flat_map(|setting| ["-d", setting]))
                .arg("-p")
                .arg(&tmp),
            &tmp.join("php-fpm.out"),
        ));
        stack.nginx = Some(spawn_in_own_group(
            Command::new(&nginx_bin)
                .arg("-p")
                .arg(&tmp)
                // -e: the log nginx opens before reading its config.
                .arg("-e")
                .arg(tmp.join("error.log"))
                .arg("-c")
                .arg(tmp.join("nginx.conf"))
                .arg("-g")
                .arg(format!(
                    "daemon off; pid {}; error_log {};",
                    tmp.join("nginx.pid").display(),
                    tmp.join("error.log").display()
                )),
            &tmp.join("nginx.out"),
        ));

        // Up means the whole chain answers: nginx, php-fpm and the fixture.
        let client = http();
        let up = wait_until(Duration::from_secs(20), || {
            for child in [&mut stack.fpm, &mut stack.nginx].into_iter().flatten() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Some(Err(format!("exited early with {status}")));
                }
            }
            let response = client
                .get(format!("{}/status?code=200", stack.base()))
                .timeout(Duration::from_secs(2))
                .send()
                .ok()?;
            (response.status() == 200).then_some(Ok(()))
        });
        match up {
            Some(Ok(())) => stack,
            Some(Err(why)) => panic!("the reference stack {why}\n{}", stack.logs()),
            None => panic!(
                "the reference stack did not answer within 20 s\n{}",
                stack.logs()
            ),
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn logs(&self) -> String {
        let mut text = String::new();
        for name in [
            "php-fpm.out",
            "php-fpm.log",
            "php-errors.log",
            "nginx.out",
            "error.log",
        ] {
            if let Ok(log) = std::fs::read_to_string(self.dir.path().join(name)) {
                let _ = write!(text, "\n--- reference {name}:\n{log}");
            }
        }
        text
    }
}

impl Drop for FpmStack {
    fn drop(&mut self) {
        let mut groups = Vec::new();
        for child in [self.nginx.take(), self.fpm.take()].into_iter().flatten() {
            groups.push(child.id());
            stop(child);
        }
        // Each server is the leader of its group, so any worker it left
        // behind is still in that group.
        let left = wait_until(Duration::from_secs(10), || {
            let alive: Vec<u32> = groups.iter().flat_map(|&g| group_members(g)).collect();
            alive.is_empty().then_some(())
        });
        if left.is_none() {
            let alive: Vec<u32> = groups.iter().flat_map(|&g| group_members(g)).collect();
            for &group in &groups {
                let _ = killpg(Pid::from_raw(group as i32), Signal::SIGKILL);
            }
            // A second panic while unwinding would abort the whole run and
            // hide the first failure.
            if !std::thread::panicking() {
                panic!("reference processes left behind: {alive:?}{}", self.logs());
            }
        }
    }
}

pub fn spawn_in_own_group(command: &mut Command, output: &Path) -> Child {
    let out = File::create(output).unwrap();
    command
        .process_group(0)
        .stdin(Stdio::null())
        // Pipes nobody reads could block the servers; files also keep the
        // output for failure messages.
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"))
}

/// Asks a server to stop (both exit at once on SIGTERM and stop their
/// workers), kills its whole group if it has not within 10 s, and reaps it.
pub fn stop(mut child: Child) {
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    if wait_until(Duration::from_secs(10), || child.try_wait().ok().flatten()).is_none() {
        let _ = killpg(pid, Signal::SIGKILL);
    }
    let _ = child.wait();
}

/// Live (not zombie) processes in process group `group`.
pub fn group_members(group: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            // Fields after the command: state, ppid, pgrp, ...
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let fields: Vec<&str> = stat
                    .rsplit_once(')')
                    .map_or("", |(_, rest)| rest)
                    .split_whitespace()
                    .collect();
                fields.len() > 2 && fields[0] != "Z" && fields[2] == group.to_string()
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------

/// A multipart/form-data body with a fixed boundary, so both sides get the
/// same bytes and the same `CONTENT_TYPE`.
pub struct Multipart {
    body: Vec<u8>,
}

impl Multipart {
    const BOUNDARY: &'static str = "----ppm-superglobals-7MA4YWxkTrZu0gW";

    pub fn new() -> Multipart {
        Multipart { body: Vec::new() }
    }

    pub fn text(mut self, name: &str, value: &str) -> Multipart {
        let head = format!(
            "--{}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n",
            Self::BOUNDARY
        );
        self.body.extend_from_slice(head.as_bytes());
        self.body.extend_from_slice(value.as_bytes());
        self.body.extend_from_slice(b"\r\n");
        self
    }

    pub fn file(
        mut self,
        name: &str,
        filename: &str,
        content_type: Option<&str>,
        data: &[u8],
    ) -> Multipart {
        let mut head = format!(
            "--{}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n",
            Self::BOUNDARY
        );
        if let Some(content_type) = content_type {
            let _ = write!(head, "Content-Type: {content_type}\r\n");
        }
        head.push_str("\r\n");
        self.body.extend_from_slice(head.as_bytes());
        self.body.extend_from_slice(data);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    /// The Content-Type header and the body.
    pub fn finish(mut self) -> (String, Vec<u8>) {
        self.body
            .extend_from_slice(format!("--{}--\r\n", Self::BOUNDARY).as_bytes());
        (
            format!("multipart/form-data; boundary={}", Self::BOUNDARY),
            self.body,
        )
    }
}

/// `len` reproducible bytes covering every byte value, with CR LF, NUL and
/// near-boundaries sprinkled in: a naive multipart parser cuts the file short.
pub fn binary_blob(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut blob: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let near_boundary = format!(
        "\r\n--{}",
        &Multipart::BOUNDARY[..Multipart::BOUNDARY.len() - 1]
    );
    for offset in (1000..len.saturating_sub(100)).step_by(40_000) {
        blob[offset..offset + near_boundary.len()].copy_from_slice(near_boundary.as_bytes());
        blob[offset + 60..offset + 64].copy_from_slice(b"\r\n\0\r");
    }
    blob
}

// ---------------------------------------------------------------------------
// JSON that keeps key order, and a readable diff
// ---------------------------------------------------------------------------

/// A JSON value that keeps object keys in document order: PHP arrays are
/// ordered, so the order of keys in `$_GET` or `$_FILES` is part of what
/// must match.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value at `path` (object keys).
    pub fn get(&self, path: &[&str]) -> Option<&Json> {
        match (self, path.split_first()) {
            (_, None) => Some(self),
            (Json::Object(entries), Some((first, rest))) => {
                entries.iter().find(|(key, _)| key == first)?.1.get(rest)
            }
            _ => None,
        }
    }

    /// Removes and returns the value at `path` (object keys).
    pub fn remove(&mut self, path: &[&str]) -> Option<Json> {
        let Json::Object(entries) = self else {
            return None;
        };
        let index = entries.iter().position(|(key, _)| key == path[0])?;
        if path.len() == 1 {
            Some(entries.remove(index).1)
        } else {
            entries[index].1.remove(&path[1..])
        }
    }

    /// Compact JSON text.
    pub fn render(&self) -> String {
        match self {
            Json::Null => "null".into(),
            Json::Bool(b) => b.to_string(),
            Json::Number(n) => n.clone(),
            Json::String(s) => serde_json::to_string(s).unwrap(),
            Json::Array(items) => {
                format!(
                    "[{}]",
                    items.iter().map(Json::render).collect::<Vec<_>>().join(",")
                )
            }
            Json::Object(entries) => format!(
                "{{{}}}",
                entries
                    .iter()
                    .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), v.render()))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Json;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
                Ok(Json::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
                Ok(Json::Number(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
                Ok(Json::Number(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
                Ok(Json::Number(v.to_string()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Json, E> {
                Ok(Json::String(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Json::Object(entries))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Appends one line per difference between `ppm` and `fpm` at `path`,
/// written the way PHP code would reach the value.
pub fn diff(path: &str, ppm: &Json, fpm: &Json, out: &mut Vec<String>) {
    let name = |key: &str| {
        if path.is_empty() {
            match key {
                "get" => "$_GET".to_owned(),
                "post" => "$_POST".to_owned(),
                "cookie" => "$_COOKIE".to_owned(),
                "files" => "$_FILES".to_owned(),
                "request" => "$_REQUEST".to_owned(),
                "server" => "$_SERVER".to_owned(),
                other => other.to_owned(),
            }
        } else {
            format!("{path}[{key:?}]")
        }
    };
    match (ppm, fpm) {
        (Json::Object(a), Json::Object(b)) => {
            for (key, value) in a {
                match b.iter().find(|(k, _)| k == key) {
                    Some((_, other)) => diff(&name(key), value, other, out),
                    None => out.push(format!(
                        "{}: ppm {}, php-fpm has no such key",
                        name(key),
                        value.render()
                    )),
                }
            }
            for (key, value) in b {
                if !a.iter().any(|(k, _)| k == key) {
                    out.push(format!(
                        "{}: ppm has no such key, php-fpm {}",
                        name(key),
                        value.render()
                    ));
                }
            }
            let order = |entries: &[(String, Json)], other: &[(String, Json)]| {
                entries
                    .iter()
                    .filter(|(k, _)| other.iter().any(|(o, _)| o == k))
                    .map(|(k, _)| k.clone())
                    .collect::<Vec<_>>()
            };
            let (order_ppm, order_fpm) = (order(a, b), order(b, a));
            if order_ppm != order_fpm {
                out.push(format!(
                    "{}: keys in another order: ppm {order_ppm:?}, php-fpm {order_fpm:?}",
                    if path.is_empty() { "top level" } else { path }
                ));
            }
        }
        (Json::Array(a), Json::Array(b)) if a.len() == b.len() => {
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}[{index}]"), x, y, out);
            }
        }
        _ if ppm != fpm => out.push(format!(
            "{path}: ppm {}, php-fpm {}",
            ppm.render(),
            fpm.render()
        )),
        _ => {}
    }
}
