//! The dashboard (`GET /` on the control port) in headless Chromium against a
//! running cluster. Chromium is driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: JSON messages separated by NUL bytes on file
//! descriptors 3 and 4), so the test needs nothing but Debian's `chromium`.
//! Screenshots are kept as artifacts in `target/dashboard-*.png`.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::*;

/// How long one DevTools command may take.
const CDP_TIMEOUT: Duration = Duration::from_secs(30);

/// A headless Chromium with a fresh profile, killed (with every process it
/// started) when dropped.
struct Browser {
    child: Child,
    to_browser: std::fs::File,
    from_browser: mpsc::Receiver<Value>,
    next_id: u64,
    /// Events received while waiting for answers, oldest first.
    events: Vec<Value>,
    log: PathBuf,
    _profile: tempfile::TempDir,
}

fn chromium_path() -> PathBuf {
    let path = std::env::var_os("PPM_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "{} not found: ./scripts/install-deps --tests installs Debian's chromium",
        path.display()
    );
    path
}

impl Browser {
    fn launch() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let log = profile.path().join("chromium.log");
        // Pipe A: we write, Chromium reads on fd 3. Pipe B: Chromium writes
        // on fd 4, we read. Our ends are close-on-exec.
        let (a_read, a_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (b_read, b_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (child_in, child_out) = (a_read.as_raw_fd(), b_write.as_raw_fd());
        let mut command = Command::new(chromium_path());
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                "--password-store=basic",
                "--hide-scrollbars",
                "--mute-audio",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            // Its own process group, so that every renderer goes with it.
            .process_group(0);
        unsafe {
            command.pre_exec(move || {
                // Move both ends out of the way first, in case either is
                // already fd 3 or 4; dup2 clears close-on-exec.
                let high_in = nix::fcntl::fcntl(child_in, nix::fcntl::FcntlArg::F_DUPFD(10))?;
                let high_out = nix::fcntl::fcntl(child_out, nix::fcntl::FcntlArg::F_DUPFD(10))?;
                nix::unistd::dup2(high_in, 3)?;
                nix::unistd::dup2(high_out, 4)?;
                Ok(())
            });
        }
        let child = command.spawn().expect("chromium starts");
        drop((a_read, b_write));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || read_messages(b_read, tx));
        let mut browser = Browser {
            child,
            to_browser: std::fs::File::from(a_write),
            from_browser: rx,
            next_id: 0,
            events: Vec::new(),
            log,
            _profile: profile,
        };
        browser.call(None, "Browser.getVersion", json!({}));
        browser
    }

    /// Sends one DevTools command and waits (bounded) for its answer.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        if let Err(e) = self.to_browser.write_all(&bytes) {
            panic!("writing to chromium: {e}\n{}", self.log_text());
        }
        let deadline = Instant::now() + CDP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = match self.from_browser.recv_timeout(left) {
                Ok(answer) => answer,
                Err(e) => panic!("no answer to {method} ({e})\n{}", self.log_text()),
            };
            if answer["id"].as_u64() == Some(id) {
                if let Some(error) = answer.get("error") {
                    panic!("{method} failed: {error}");
                }
                return answer["result"].clone();
            }
            if answer.get("method").is_some() {
                self.events.push(answer);
            }
        }
    }

    /// Opens a new tab and returns it.
    fn tab(&mut self, width: u32, height: u32) -> Tab {
        let target = self.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let target_id = target["targetId"].as_str().unwrap().to_string();
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        let tab = Tab {
            session: attached["sessionId"].as_str().unwrap().to_string(),
        };
        self.call(Some(&tab.session), "Page.enable", json!({}));
        self.call(Some(&tab.session), "Network.enable", json!({}));
        tab.viewport(self, width, height);
        tab
    }

    fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "chromium's last log lines:\n{}",
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .to_browser
            .write_all(b"{\"id\":999999,\"method\":\"Browser.close\",\"params\":{}}\0");
        let closed = wait_until(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten()
        });
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        if closed.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Splits what Chromium writes into NUL-separated JSON messages.
fn read_messages(from: OwnedFd, to: mpsc::Sender<Value>) {
    let mut file = std::fs::File::from(from);
    let mut pending = Vec::new();
    let mut buffer = [0u8; 65536];
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buffer[..n]);
        while let Some(end) = pending.iter().position(|&b| b == 0) {
            let message: Vec<u8> = pending.drain(..=end).collect();
            if let Ok(value) = serde_json::from_slice(&message[..end]) {
                if to.send(value).is_err() {
                    return;
                }
            }
        }
    }
}

/// One tab, addressed by its DevTools session.
struct Tab {
    session: String,
}

impl Tab {
    fn viewport(&self, browser: &mut Browser, width: u32, height: u32) {
        browser.call(
            Some(&self.session),
            "Emulation.setDeviceMetricsOverride",
            json!({
                "width": width,
                "height": height,
                "deviceScaleFactor": 1,
                "mobile": width < 600,
            }),
        );
    }

    fn navigate(&self, browser: &mut Browser, url: &str) {
        let answer = browser.call(Some(&self.session), "Page.navigate", json!({ "url": url }));
        assert!(
            answer.get("errorText").is_none(),
            "navigating to {url}: {answer}"
        );
        let loaded = wait_until(Duration::from_secs(15), || {
            (self.eval(browser, "document.readyState") == "complete").then_some(())
        });
        assert!(loaded.is_some(), "{url} did not load within 15 s");
    }

    /// Evaluates a JavaScript expression (awaiting a promise) and returns its
    /// value as JSON.
    fn eval(&self, browser: &mut Browser, expression: &str) -> Value {
        let answer = browser.call(
            Some(&self.session),
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(exception) = answer.get("exceptionDetails") {
            panic!("{expression} threw: {exception}");
        }
        answer["result"]["value"].clone()
    }

    /// Waits (bounded) until `expression` is truthy; returns its value.
    fn wait_for(&self, browser: &mut Browser, expression: &str, timeout: Duration) -> Value {
        let value = wait_until(timeout, || {
            let value = self.eval(browser, expression);
            let truthy = !matches!(value, Value::Null | Value::Bool(false))
                && value != json!(0)
                && value != json!("");
            truthy.then_some(value)
        });
        value.unwrap_or_else(|| panic!("still false after {timeout:?}: {expression}"))
    }

    /// A real mouse click in the middle of the element `selector` matches.
    fn click(&self, browser: &mut Browser, selector: &str) {
        // The page disables its buttons while a restart runs.
        self.wait_for(
            browser,
            &format!("!document.querySelector({selector:?}).disabled"),
            Duration::from_secs(10),
        );
        let at = self.eval(
            browser,
            &format!(
                "(() => {{ const e = document.querySelector({selector:?}); \
                 e.scrollIntoView({{ block: 'center' }}); const r = e.getBoundingClientRect(); \
                 return {{ x: r.x + r.width / 2, y: r.y + r.height / 2, disabled: !!e.disabled }}; }})()"
            ),
        );
        assert_eq!(at["disabled"], json!(false), "{selector} is disabled");
        for kind in ["mousePressed", "mouseReleased"] {
            browser.call(
                Some(&self.session),
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": at["x"], "y": at["y"], "button": "left", "clickCount": 1 }),
            );
        }
    }

    /// Saves a screenshot of the viewport (or of the whole page) as PNG.
    fn screenshot(&self, browser: &mut Browser, path: &Path, full_page: bool) {
        let mut params = json!({ "format": "png" });
        if full_page {
            let metrics = browser.call(Some(&self.session), "Page.getLayoutMetrics", json!({}));
            let size = &metrics["cssContentSize"];
            params["captureBeyondViewport"] = json!(true);
            params["clip"] = json!({
                "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1
            });
        }
        let shot = browser.call(Some(&self.session), "Page.captureScreenshot", params);
        let png = base64_decode(shot["data"].as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).unwrap();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .map(value)
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | (d as u32) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// Where the screenshots go: the target directory the test binary runs from.
fn artifact(name: &str) -> PathBuf {
    let target = Path::new(PPM)
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root().join("target"));
    target.join(name)
}

/// What the page shows per slot and in total, read from the DOM.
const READ_PAGE: &str = r##"(() => {
  const n = (text) => { const m = /[\d,]+/.exec(text || ""); return m ? Number(m[0].replace(/,/g, "")) : null; };
  const slots = [...document.querySelectorAll("#workers-body tr.slot-row")].map((tr) => ({
    slot: Number(tr.dataset.slot),
    pid: n(tr.querySelector(".c-pid").textContent),
    state: tr.querySelector(".c-state").textContent,
    requests: n(tr.querySelector(".c-requests").textContent),
    memory: tr.querySelector(".c-memory").textContent,
    rss: tr.querySelector(".c-rss").textContent,
    uptime: tr.querySelector(".c-uptime").textContent,
    restarts: tr.querySelector(".c-restarts").textContent,
    current: tr.querySelector(".c-current").textContent,
  }));
  return {
    slots,
    total: n(document.getElementById("t-requests").textContent),
    rps: document.getElementById("t-rps").textContent,
    p50: document.getElementById("t-p50").textContent,
    conn: document.getElementById("conn").className,
  };
})()"##;

fn page_pids(page: &Value) -> Vec<u32> {
    page["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pid"].as_u64().unwrap_or(0) as u32)
        .collect()
}

#[test]
fn the_dashboard_lists_every_slot_with_live_numbers() {
    let mut cluster = Cluster::start(Setup::callable("basic", 3));
    let pids = cluster.worker_pids();
    let mut browser = Browser::launch();
    let tab = browser.tab(1280, 800);
    tab.navigate(&mut browser, &cluster.control_url("/"));
    tab.wait_for(
        &mut browser,
        "document.querySelectorAll('#workers-body tr.slot-row').length === 3",
        Duration::from_secs(10),
    );
    let page = tab.eval(&mut browser, READ_PAGE);
    assert_eq!(page_pids(&page), pids, "{page}");

    let fast = Load::start(cluster.url("/"), 2);
    let slow = Load::start(cluster.url("/sleep?ms=400"), 1);
    // A request in progress shows with its method, path and age.
    tab.wait_for(
        &mut browser,
        "[...document.querySelectorAll('.c-current')].some((c) => /GET \\/sleep\\?ms=400 for \\d/.test(c.textContent))",
        Duration::from_secs(10),
    );
    let first = tab.eval(&mut browser, READ_PAGE);
    // Until the page's refreshes show the load's requests (or 10 s).
    let per_slot = |page: &Value| -> u64 {
        page["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["requests"].as_u64().unwrap())
            .sum()
    };
    let grown = |page: &Value| {
        let rps: f64 = page["rps"].as_str().unwrap_or("").parse().unwrap_or(0.0);
        page["total"].as_u64().unwrap_or(0) > first["total"].as_u64().unwrap_or(0) + 10
            && rps > 1.0
            && page["p50"] != "–"
            && per_slot(page) > per_slot(&first)
    };
    let second = wait_until(Duration::from_secs(10), || {
        Some(tab.eval(&mut browser, READ_PAGE)).filter(grown)
    })
    .unwrap_or_else(|| tab.eval(&mut browser, READ_PAGE));
    let http = http();
    assert_eq!(
        http.get(cluster.url("/error")).send().unwrap().status(),
        500
    );
    tab.wait_for(
        &mut browser,
        "document.getElementById('errors-body').textContent.includes('GET /error')",
        Duration::from_secs(10),
    );
    tab.screenshot(&mut browser, &artifact("dashboard-1280x800.png"), false);
    let seen = fast.stop();
    slow.stop();

    assert!(seen.iter().all(|s| s.status == 200));
    assert_eq!(first["conn"], "live", "{first}");
    let (first_total, second_total) = (
        first["total"].as_u64().unwrap(),
        second["total"].as_u64().unwrap(),
    );
    assert!(
        second_total > first_total + 10,
        "requests did not grow: {first} then {second}"
    );
    let rps: f64 = second["rps"].as_str().unwrap().parse().unwrap_or(0.0);
    assert!(rps > 1.0, "requests per second shown: {}", second["rps"]);
    assert_ne!(second["p50"], "–", "latency shown: {second}");
    assert!(
        per_slot(&second) > per_slot(&first),
        "{first} then {second}"
    );
    for slot in second["slots"].as_array().unwrap() {
        for key in ["memory", "rss"] {
            assert!(slot[key].as_str().unwrap().contains("B"), "{key} of {slot}");
        }
        assert!(
            slot["uptime"].as_str().unwrap().ends_with('s'),
            "uptime of {slot}"
        );
    }
    assert_eq!(page_pids(&second), pids);

    // At a phone's width the table turns into one card per slot, and
    // nothing is wider than the screen.
    tab.viewport(&mut browser, 390, 844);
    let layout = tab.wait_for(
        &mut browser,
        "getComputedStyle(document.querySelector('#workers thead')).display === 'none' && \
         { width: document.documentElement.scrollWidth, \
           cards: [...document.querySelectorAll('#workers-body tr.slot-row')].map((tr) => tr.getBoundingClientRect().width) }",
        Duration::from_secs(5),
    );
    assert!(
        layout["width"].as_f64().unwrap() <= 390.0,
        "wider than the phone: {layout}"
    );
    for card in layout["cards"].as_array().unwrap() {
        assert!(card.as_f64().unwrap() <= 390.0, "{layout}");
    }
    tab.screenshot(&mut browser, &artifact("dashboard-390x844.png"), false);
    tab.screenshot(&mut browser, &artifact("dashboard-390-full.png"), true);
}

#[test]
fn the_restart_buttons_roll_the_workers_and_show_the_progress() {
    let app = fixture_copy("basic");
    let mut setup = Setup::callable("basic", 3);
    setup.app = app.path().to_path_buf();
    let mut cluster = Cluster::start(setup);
    let before = cluster.worker_pids();
    let mut browser = Browser::launch();
    let tab = browser.tab(1280, 800);
    tab.navigate(&mut browser, &cluster.control_url("/"));
    tab.wait_for(
        &mut browser,
        "document.querySelectorAll('#workers-body tr.slot-row').length === 3",
        Duration::from_secs(10),
    );
    let load = Load::start(cluster.url("/"), 2);

    // The rolling restart button replaces every worker, one after another;
    // with a bootstrap that takes a while, the page shows how far it got.
    let script = std::fs::read_to_string(app.path().join("app.php")).unwrap();
    let slow = script.replacen("$booted = ", "usleep(800000);\n$booted = ", 1);
    assert_ne!(script, slow);
    std::fs::write(app.path().join("app.php"), slow).unwrap();
    tab.click(&mut browser, "#restart-all");
    let progress = tab.wait_for(
        &mut browser,
        "(() => { const t = document.getElementById('restart-text').textContent; \
         const bar = document.getElementById('restart-progress'); \
         const tags = [...document.querySelectorAll('.c-state .tag')].map((e) => e.textContent); \
         return !bar.hidden && t.includes('running') && tags.includes('restarting…') && \
           { text: t, tags, disabled: document.getElementById('restart-all').disabled }; })()",
        Duration::from_secs(10),
    );
    assert!(
        progress["text"].as_str().unwrap().contains("/3 replaced"),
        "{progress}"
    );
    assert_eq!(progress["disabled"], true, "{progress}");
    tab.screenshot(
        &mut browser,
        &artifact("dashboard-restart-running.png"),
        false,
    );
    let status = cluster
        .wait_restart("succeeded", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no rolling restart:\n{}", cluster.log_text()));
    let after = worker_pids_in(&status);
    for (old, new) in before.iter().zip(&after) {
        assert_ne!(
            old, new,
            "a worker was not replaced: {before:?} → {after:?}"
        );
    }
    let text = tab.wait_for(
        &mut browser,
        "(() => { const t = document.getElementById('restart-text').textContent; \
         return t.includes('succeeded, 3/3 replaced') && t; })()",
        Duration::from_secs(5),
    );
    assert!(text.as_str().unwrap().starts_with("Restart #1 "), "{text}");
    tab.wait_for(
        &mut browser,
        &format!(
            "JSON.stringify({READ_PAGE}.slots.map((s) => s.pid)) === {:?}",
            serde_json::to_string(&after).unwrap()
        ),
        Duration::from_secs(5),
    );

    // A slot's own button replaces that slot's worker only.
    tab.click(&mut browser, "button.slot-restart[data-slot='1']");
    let status = wait_until(Duration::from_secs(30), || {
        let status = cluster.try_status()?;
        (status["restart"]["id"] == 2 && status["restart"]["state"] == "succeeded")
            .then_some(status)
    })
    .unwrap_or_else(|| panic!("no restart of slot 1:\n{}", cluster.log_text()));
    let again = worker_pids_in(&status);
    assert_eq!(again[0], after[0]);
    assert_ne!(again[1], after[1]);
    assert_eq!(again[2], after[2]);
    assert_eq!(status["restart"]["slots"], json!([1]));

    // A bootstrap that no longer parses: the restart fails, the old workers
    // keep serving, and PHP's error is readable on the page.
    std::fs::copy(
        fixture("broken").join("app.php"),
        app.path().join("app.php"),
    )
    .unwrap();
    tab.click(&mut browser, "#restart-all");
    let shown = tab.wait_for(
        &mut browser,
        "(() => { const e = document.getElementById('restart-error'); \
         const slot = document.querySelector(\"tr.err-row[data-slot='0']\"); \
         return !e.hidden && e.textContent.includes('Parse error') && !slot.hidden && \
           { restart: e.textContent, slot: slot.textContent, \
             text: document.getElementById('restart-text').textContent }; })()",
        Duration::from_secs(30),
    );
    assert!(
        shown["slot"].as_str().unwrap().contains("syntax error"),
        "{shown}"
    );
    assert!(
        shown["text"]
            .as_str()
            .unwrap()
            .contains("the old workers keep serving"),
        "{shown}"
    );
    assert_eq!(worker_pids_in(&cluster.status()), again);
    tab.screenshot(
        &mut browser,
        &artifact("dashboard-restart-failed.png"),
        false,
    );
    let seen = load.stop();
    let failed = seen.iter().filter(|s| s.status != 200).count();
    assert_eq!(failed, 0, "requests failed during the restarts");
}

#[test]
fn with_a_control_token_the_page_asks_for_it_and_sends_it() {
    let token = "dashboard-test-token";
    let mut cluster =
        Cluster::start(Setup::callable("basic", 2).arg(format!("--control-token={token}")));
    let before = cluster.worker_pids();
    let mut browser = Browser::launch();
    let tab = browser.tab(1280, 800);

    // Without the token the page loads, but asks for it.
    tab.navigate(&mut browser, &cluster.control_url("/"));
    tab.wait_for(
        &mut browser,
        "!document.getElementById('token-panel').hidden",
        Duration::from_secs(10),
    );
    assert_eq!(tab.eval(&mut browser, READ_PAGE)["slots"], json!([]));

    // Typed into the prompt, it is used at once.
    tab.eval(
        &mut browser,
        &format!(
            "document.getElementById('token-input').value = {token:?}; \
             document.querySelector('#token-form button[type=submit]').click(); true"
        ),
    );
    tab.wait_for(
        &mut browser,
        "document.querySelectorAll('#workers-body tr.slot-row').length === 2 && \
         document.getElementById('token-panel').hidden",
        Duration::from_secs(10),
    );

    // In a fresh tab, `/#token=…` works too, and leaves the address bar.
    let tab = browser.tab(1280, 800);
    tab.navigate(
        &mut browser,
        &cluster.control_url(&format!("/#token={token}")),
    );
    tab.wait_for(
        &mut browser,
        "document.querySelectorAll('#workers-body tr.slot-row').length === 2",
        Duration::from_secs(10),
    );
    assert_eq!(tab.eval(&mut browser, "location.hash"), json!(""));
    tab.click(&mut browser, "button.slot-restart[data-slot='0']");
    let status = cluster
        .wait_restart("succeeded", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the restart with the token did not happen"));
    let after = worker_pids_in(&status);
    assert_ne!(after[0], before[0]);
    assert_eq!(after[1], before[1]);
}

#[test]
fn with_public_read_a_refused_button_asks_for_the_token() {
    let token = "dashboard-test-token";
    let mut cluster = Cluster::start(
        Setup::callable("basic", 2)
            .arg(format!("--control-token={token}"))
            .arg("--control-public-read"),
    );
    let before = cluster.worker_pids();
    let mut browser = Browser::launch();
    let tab = browser.tab(1280, 800);
    tab.navigate(&mut browser, &cluster.control_url("/"));
    tab.wait_for(
        &mut browser,
        "document.querySelectorAll('#workers-body tr.slot-row').length === 2",
        Duration::from_secs(10),
    );
    assert_eq!(
        tab.eval(
            &mut browser,
            "document.getElementById('token-panel').hidden"
        ),
        json!(true)
    );
    tab.click(&mut browser, "#restart-all");
    let message = tab.wait_for(
        &mut browser,
        "!document.getElementById('token-panel').hidden && \
         document.getElementById('action-msg').textContent",
        Duration::from_secs(10),
    );
    assert!(message.as_str().unwrap().contains("token"), "{message}");
    // The panel stays up across refreshes until a token is given.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        tab.eval(
            &mut browser,
            "document.getElementById('token-panel').hidden"
        ),
        json!(false)
    );
    assert_eq!(cluster.status()["restart"], Value::Null);
    tab.eval(
        &mut browser,
        &format!(
            "document.getElementById('token-input').value = {token:?}; \
             document.querySelector('#token-form button[type=submit]').click(); true"
        ),
    );
    tab.wait_for(
        &mut browser,
        "document.getElementById('token-panel').hidden",
        Duration::from_secs(10),
    );
    tab.click(&mut browser, "#restart-all");
    cluster
        .wait_restart("succeeded", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the restart with the token did not happen"));
    // /status reads the slots before the restart's state: the status that
    // first says "succeeded" may show a slot from just before its swap.
    let after = worker_pids_in(&cluster.status());
    assert!(
        before.iter().zip(&after).all(|(a, b)| a != b),
        "every worker replaced: {before:?} -> {after:?}; log:\n{}",
        cluster.log_text()
    );
}

/// Serves one HTML page on a port of its own until dropped: the "other
/// origin" a malicious page would come from.
struct OtherOrigin {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OtherOrigin {
    fn serve(html: String) -> OtherOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let (code, body) = if request.starts_with(b"GET / ") {
                    ("200 OK", html.as_str())
                } else {
                    ("404 Not Found", "")
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        OtherOrigin {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for OtherOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn a_post_from_another_origin_is_refused() {
    let mut cluster = Cluster::start(Setup::callable("basic", 2));
    let before = cluster.worker_pids();
    let restart = cluster.control_url("/restart");
    let other = OtherOrigin::serve(format!(
        r#"<!doctype html><title>elsewhere</title>
<form id="form" method="POST" action="{restart}"></form>
<script>
fetch("{restart}", {{ method: "POST", mode: "no-cors" }})
  .then(() => {{ document.title = "fetch sent"; }}, (e) => {{ document.title = "fetch failed: " + e; }});
</script>"#
    ));
    let mut browser = Browser::launch();
    let tab = browser.tab(1280, 800);
    let page = format!("http://127.0.0.1:{}/", other.port);
    tab.navigate(&mut browser, &page);
    tab.wait_for(
        &mut browser,
        "document.title.startsWith('fetch')",
        Duration::from_secs(10),
    );
    // The browser did send the fetch, and the control plane answered 403.
    let refused = wait_until(Duration::from_secs(5), || {
        let _ = tab.eval(&mut browser, "1");
        browser.events.iter().find_map(|e| {
            let response = &e["params"]["response"];
            (e["method"] == "Network.responseReceived"
                && response["url"].as_str() == Some(restart.as_str()))
            .then(|| response["status"].as_u64())
            .flatten()
        })
    });
    assert_eq!(refused, Some(403), "the cross-origin fetch was not refused");

    // A plain form POST from that page is refused as well: the browser
    // shows the control plane's 403 page.
    tab.eval(
        &mut browser,
        "document.getElementById('form').submit(); true",
    );
    let shown = tab.wait_for(
        &mut browser,
        "location.href.endsWith('/restart') && document.readyState === 'complete' && \
         { status: performance.getEntriesByType('navigation')[0].responseStatus, \
           text: document.body.innerText }",
        Duration::from_secs(10),
    );
    assert_eq!(shown["status"], 403, "{shown}");
    assert!(
        shown["text"]
            .as_str()
            .unwrap()
            .contains("cross-origin requests may not change the cluster"),
        "{shown}"
    );

    std::thread::sleep(Duration::from_millis(500));
    let status = cluster.status();
    assert_eq!(status["restart"], Value::Null, "a restart was started");
    assert_eq!(cluster.worker_pids(), before);
}
