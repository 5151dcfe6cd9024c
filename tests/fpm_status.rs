//! `/fpm-status` against the real thing: a php-fpm8.2 with
//! `pm.status_path`, asked over FastCGI for its own status page, gives the
//! key sets and metric names ppm's page must have; ppm's figures must
//! agree with its `/status` under a small load.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value as Json;

const PHP_FPM: &str = "/usr/sbin/php-fpm8.2";
const TOKEN: &str = "fpm-status-token-0123456789";

/// A php-fpm8.2 with one static pool and its status page at `/status`,
/// in its own process group and temporary directory.
struct Fpm {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Fpm {
    fn start() -> Fpm {
        assert!(
            Path::new(PHP_FPM).is_file(),
            "{PHP_FPM} is not installed: apt-get install php-fpm"
        );
        let dir = tempfile::tempdir().unwrap();
        let tmp = path_str(dir.path());
        let config = format!(
            "[global]\nerror_log = {tmp}/php-fpm.log\ndaemonize = no\n\
             [www]\nlisten = {tmp}/php-fpm.sock\npm = static\npm.max_children = 2\n\
             pm.status_path = /status\n"
        );
        std::fs::write(dir.path().join("php-fpm.conf"), config).unwrap();
        let child = Command::new(PHP_FPM)
            .args(["-F", "-R", "-y"])
            .arg(dir.path().join("php-fpm.conf"))
            .arg("-p")
            .arg(dir.path())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("php-fpm starts");
        let fpm = Fpm {
            dir,
            child: Some(child),
        };
        let up = wait_until(Duration::from_secs(20), || {
            fpm.try_page("json").filter(|page| page.contains("pool"))
        });
        assert!(up.is_some(), "php-fpm did not answer its status page");
        fpm
    }

    /// The body of php-fpm's status page for `query`, over FastCGI.
    fn try_page(&self, query: &str) -> Option<String> {
        let mut stream = UnixStream::connect(self.dir.path().join("php-fpm.sock")).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let params: Vec<u8> = [
            ("SCRIPT_NAME", "/status"),
            ("SCRIPT_FILENAME", "/status"),
            ("REQUEST_METHOD", "GET"),
            ("QUERY_STRING", query),
            ("REQUEST_URI", &format!("/status?{query}")),
        ]
        .iter()
        .flat_map(|(k, v)| {
            // Names and values here are all under 128 bytes.
            let mut pair = vec![k.len() as u8, v.len() as u8];
            pair.extend_from_slice(k.as_bytes());
            pair.extend_from_slice(v.as_bytes());
            pair
        })
        .collect();
        let mut request = record(1, &[0, 1, 0, 0, 0, 0, 0, 0]); // BEGIN_REQUEST, responder
        request.extend(record(4, &params));
        request.extend(record(4, &[]));
        request.extend(record(5, &[])); // empty STDIN
        stream.write_all(&request).ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).ok()?;
        let mut stdout = Vec::new();
        let mut at = 0;
        while at + 8 <= answer.len() {
            let kind = answer[at + 1];
            let length = u16::from_be_bytes([answer[at + 4], answer[at + 5]]) as usize;
            let padding = answer[at + 6] as usize;
            let content = answer.get(at + 8..at + 8 + length)?;
            if kind == 6 {
                stdout.extend_from_slice(content);
            }
            at += 8 + length + padding;
        }
        let text = String::from_utf8(stdout).ok()?;
        Some(text.split_once("\r\n\r\n")?.1.to_string())
    }

    fn page(&self, query: &str) -> String {
        self.try_page(query)
            .unwrap_or_else(|| panic!("php-fpm's ?{query} page"))
    }
}

impl Drop for Fpm {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            if wait_until(Duration::from_secs(10), || child.try_wait().ok().flatten()).is_none() {
                let _ = killpg(pid, Signal::SIGKILL);
            }
            let _ = child.wait();
        }
    }
}

/// One FastCGI record of request 1.
fn record(kind: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![1, kind, 0, 1];
    out.extend_from_slice(&(content.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(content);
    out
}

fn keys(value: &Json) -> BTreeSet<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect()
}

/// The labels of a plain-text page, in order.
fn text_labels(page: &str) -> Vec<String> {
    page.lines()
        .filter_map(|line| Some(line.split_once(':')?.0.to_string()))
        .collect()
}

/// (name, type) of each metric family, by the Prometheus client's parser.
fn families(text: &str) -> Vec<(String, String)> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
print(json.dumps([[f.name, f.type] for f in text_string_to_metric_families(sys.stdin.read())]))
"#;
    let parsed = python_json(
        script,
        text,
        "the Prometheus parser rejected the page (pip install prometheus_client?)",
    );
    serde_json::from_value(parsed).unwrap()
}

fn get(cluster: &Cluster, path: &str, token: bool) -> reqwest::blocking::Response {
    let mut request = http().get(cluster.control_url(path));
    if token {
        request = request.bearer_auth(TOKEN);
    }
    request.send().unwrap()
}

fn get_json(cluster: &Cluster, path: &str) -> Json {
    let response = get(cluster, path, true);
    assert_eq!(response.status(), 200, "{path}");
    response.json().unwrap()
}

#[test]
fn fpm_status_has_php_fpms_fields_and_agrees_with_status() {
    let fpm = Fpm::start();
    let mut cluster = Cluster::start(
        Setup::callable("environ", 2)
            .arg(format!("--control-token={TOKEN}"))
            .arg("--control-public-read")
            .arg("--slow-request-time=0.1"),
    );

    // Three 600 ms requests on two workers: one waits.
    let client = http();
    let sleepers: Vec<_> = (0..3)
        .map(|i| {
            let (client, url) = (client.clone(), cluster.url(&format!("/sleep?ms=600&n={i}")));
            std::thread::spawn(move || client.get(url).send().map(|r| r.status().as_u16()))
        })
        .collect();
    let busy = wait_until(Duration::from_secs(10), || {
        let page = get_json(&cluster, "/fpm-status?full&json");
        (page["active processes"] == 2 && page["listen queue"] == 1).then_some(page)
    })
    .expect("two running requests and one queued show on /fpm-status");
    let running: Vec<&Json> = busy["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "Running")
        .collect();
    assert_eq!(running.len(), 2, "{busy}");
    for process in &running {
        assert!(
            process["request uri"]
                .as_str()
                .unwrap()
                .starts_with("/sleep?ms=600&n="),
            "{busy}"
        );
        assert_eq!(process["request method"], "GET");
    }
    // Readers without the token see no query strings, as on /status.
    let public: Json = get(&cluster, "/fpm-status?full&json", false)
        .json()
        .unwrap();
    for process in public["processes"].as_array().unwrap() {
        assert!(
            !process["request uri"].as_str().unwrap().contains('?'),
            "{public}"
        );
    }
    for sleeper in sleepers {
        assert_eq!(sleeper.join().unwrap().unwrap(), 200);
    }

    // Idle again: the counts agree with /status.
    let (page, status) = wait_until(Duration::from_secs(10), || {
        let page = get_json(&cluster, "/fpm-status?full&json");
        let status = cluster.status();
        (page["idle processes"] == 2 && status["ready_workers"] == 2).then_some((page, status))
    })
    .expect("both workers idle again");
    let served: u64 = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(page["accepted conn"], served, "{page}\n{status}");
    assert_eq!(served, 3);
    assert_eq!(page["idle processes"], status["ready_workers"]);
    assert_eq!(page["active processes"], status["busy_workers"]);
    assert_eq!(page["total processes"], 2);
    assert_eq!(page["listen queue"], status["queue_length"]);
    assert_eq!(page["max active processes"], 2, "{page}");
    assert_eq!(page["max listen queue"], 1, "{page}");
    assert_eq!(page["max children reached"], 1, "{page}");
    assert_eq!(page["slow requests"], 3, "{page}");
    assert_eq!(page["listen queue len"], 1024);
    assert_eq!(page["process manager"], "static");
    let pids: BTreeSet<u64> = page["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    let status_pids: BTreeSet<u64> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids, status_pids);

    // The same names as php-fpm's own page, in every format compared.
    let theirs: Json = serde_json::from_str(&fpm.page("json")).unwrap();
    let ours = get_json(&cluster, "/fpm-status?json");
    assert_eq!(keys(&ours), keys(&theirs));
    let theirs: Json = serde_json::from_str(&fpm.page("full&json")).unwrap();
    assert_eq!(keys(&page), keys(&theirs));
    assert_eq!(
        keys(&page["processes"][0]),
        keys(&theirs["processes"][0]),
        "per-process keys"
    );

    let response = get(&cluster, "/fpm-status?openmetrics", true);
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let ours = response.text().unwrap();
    let theirs = fpm.page("openmetrics");
    assert_eq!(families(&ours), families(&theirs), "\n{ours}\n{theirs}");
    assert!(ours.ends_with("# EOF\n"));

    let ours = get(&cluster, "/fpm-status?full", true).text().unwrap();
    assert_eq!(text_labels(&ours), {
        // php-fpm lists its two processes; ppm its two workers.
        text_labels(&fpm.page("full"))
    });
    for (format, field) in [
        ("xml", "<max-children-reached>1</max-children-reached>"),
        ("html", "<tr><th>max children reached</th><td>1</td></tr>"),
    ] {
        let response = get(&cluster, &format!("/fpm-status?{format}"), true);
        assert_eq!(response.status(), 200);
        let page = response.text().unwrap();
        assert!(page.contains(field), "{page}");
        assert!(fpm.page(format).contains(&field.replace(">1<", ">0<")));
    }
}

#[test]
fn fpm_status_needs_the_token_like_status() {
    let cluster =
        Cluster::start(Setup::callable("basic", 1).arg(format!("--control-token={TOKEN}")));
    assert_eq!(get(&cluster, "/fpm-status", false).status(), 401);
    let page = get(&cluster, "/fpm-status", true).text().unwrap();
    assert!(page.starts_with("pool:                 www\n"), "{page}");
}
