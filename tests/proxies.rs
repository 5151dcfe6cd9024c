//! ppm behind real front proxies: Debian's haproxy and nginx, started by
//! each test on loopback ports of its own with the configuration files
//! shipped in docker/ (rendered by docker/render.sh with the test's ports),
//! under a steady load of concurrent clients that counts every response.

mod common;
mod deploy;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use deploy::*;
use nix::sys::signal::Signal;

/// Concurrent clients of the load runs: modest, the machine is shared.
const CLIENTS: usize = 5;

/// A dynamic pool: one spare worker at rest, more as the load needs them,
/// idle ones retired after a second (so the load sees workers come and go).
const DYNAMIC: &[&str] = &[
    "--pm=dynamic",
    "--min-spare-workers=1",
    "--max-spare-workers=2",
    "--worker-idle-timeout=1",
];

/// The three ways a proxy is put in front of ppm.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    /// haproxy, one server per slot port, maxconn 1 (docker/haproxy.cfg).
    HaproxySlots,
    /// nginx, an upstream over the slot ports (docker/nginx-slots.conf).
    NginxSlots,
    /// nginx in front of the balancer port alone (docker/nginx-balancer.conf).
    NginxBalancer,
}

/// A running haproxy or nginx in front of a ppm.
struct Front {
    layout: Layout,
    proc: Proc,
    port: u16,
    stats_port: u16,
    dir: tempfile::TempDir,
}

impl Front {
    /// Starts `layout` in front of `cluster`, waits until it serves.
    fn start(layout: Layout, cluster: &Cluster) -> Front {
        Front::start_for(layout, cluster, true)
    }

    /// As `start`; haproxy waits for every server to be up only when
    /// `all_up` (a dynamic pool's empty slots are down until needed).
    fn start_for(layout: Layout, cluster: &Cluster, all_up: bool) -> Front {
        let vars = vec![
            ("PPM_PORT", cluster.port.to_string()),
            ("PPM_WORKERS", cluster.workers.to_string()),
        ];
        let front = match layout {
            Layout::HaproxySlots => Front::haproxy("haproxy.cfg", vars, all_up),
            Layout::NginxSlots => Front::nginx("nginx-slots.conf", vars),
            Layout::NginxBalancer => Front::nginx("nginx-balancer.conf", vars),
        };
        Front { layout, ..front }
    }

    /// haproxy with the shipped `template`; waits until every server
    /// (or, without `all_up`, one) passed its health check.
    fn haproxy(template: &str, mut vars: Vec<(&str, String)>, all_up: bool) -> Front {
        let dir = tempfile::tempdir().unwrap();
        let base = free_ports(2);
        vars.push(("PROXY_LISTEN", format!("127.0.0.1:{base}")));
        vars.push(("PROXY_STATS_LISTEN", format!("127.0.0.1:{}", base + 1)));
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, render(template, &vars)).unwrap();
        let proc = Proc::spawn(
            "haproxy",
            Command::new("haproxy").arg("-db").arg("-f").arg(&cfg),
            &dir.path().join("haproxy.log"),
        );
        let front = Front {
            layout: Layout::HaproxySlots,
            proc,
            port: base,
            stats_port: base + 1,
            dir,
        };
        let up = wait_until(Duration::from_secs(30), || {
            let servers = front.haproxy_servers()?;
            let up =
                |s: &HashMap<String, String>| s["status"] == "UP" && s["check_status"] == "L7OK";
            let enough = if all_up {
                servers.iter().all(up)
            } else {
                servers.iter().any(up)
            };
            (!servers.is_empty() && enough).then_some(())
        });
        assert!(
            up.is_some(),
            "haproxy's servers came up: {:?}\n{}",
            front.haproxy_servers(),
            front.proc.log_text()
        );
        front
    }

    /// nginx with the shipped `template` included in a minimal main
    /// configuration of the test's own (paths in its temporary directory,
    /// an access log that shows each upstream attempt).
    fn nginx(template: &str, mut vars: Vec<(&str, String)>) -> Front {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let port = free_ports(1);
        vars.push(("PROXY_LISTEN", format!("127.0.0.1:{port}")));
        std::fs::write(dir.path().join("site.conf"), render(template, &vars)).unwrap();
        std::fs::write(
            dir.path().join("nginx.conf"),
            format!(
                "worker_processes 1;\n\
                 pid {d}/nginx.pid;\n\
                 error_log {d}/error.log info;\n\
                 events {{ worker_connections 512; }}\n\
                 http {{\n\
                 include /etc/nginx/mime.types;\n\
                 log_format attempts '$status $request_uri upstream=$upstream_status';\n\
                 access_log {d}/access.log attempts;\n\
                 client_body_temp_path {d}/body;\n\
                 proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\n\
                 uwsgi_temp_path {d}/uwsgi;\n\
                 scgi_temp_path {d}/scgi;\n\
                 include {d}/site.conf;\n\
                 }}\n"
            ),
        )
        .unwrap();
        let proc = Proc::spawn(
            "nginx",
            Command::new("nginx")
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(dir.path().join("nginx.conf"))
                .args(["-g", "daemon off;"]),
            &dir.path().join("nginx.out"),
        );
        let front = Front {
            layout: Layout::NginxSlots,
            proc,
            port,
            stats_port: 0,
            dir,
        };
        let url = front.url("/");
        let serving = wait_until(Duration::from_secs(20), || {
            http()
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .ok()
                .map(|_| ())
        });
        assert!(
            serving.is_some(),
            "nginx serves: {}\n{}",
            front.proc.log_text(),
            std::fs::read_to_string(front.dir.path().join("error.log")).unwrap_or_default()
        );
        front
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// haproxy's statistics (the CSV of the shipped stats page), one map
    /// per row.
    fn haproxy_stats(&self) -> Option<Vec<HashMap<String, String>>> {
        let text = http()
            .get(format!("http://127.0.0.1:{}/;csv", self.stats_port))
            .timeout(Duration::from_secs(2))
            .send()
            .ok()?
            .text()
            .ok()?;
        let mut lines = text.lines();
        let header: Vec<String> = lines
            .next()?
            .trim_start_matches("# ")
            .split(',')
            .map(str::to_string)
            .collect();
        Some(
            lines
                .filter(|l| !l.is_empty())
                .map(|l| {
                    header
                        .iter()
                        .cloned()
                        .zip(l.split(',').map(str::to_string))
                        .collect()
                })
                .collect(),
        )
    }

    /// The rows of the `ppm` backend's servers.
    fn haproxy_servers(&self) -> Option<Vec<HashMap<String, String>>> {
        Some(
            self.haproxy_stats()?
                .into_iter()
                .filter(|r| r["pxname"] == "ppm" && r["svname"] != "BACKEND")
                .collect(),
        )
    }

    /// A counter of the `ppm` backend row.
    fn haproxy_backend_counter(&self, name: &str) -> u64 {
        self.haproxy_stats()
            .unwrap_or_default()
            .into_iter()
            .find(|r| r["pxname"] == "ppm" && r["svname"] == "BACKEND")
            .and_then(|r| r.get(name)?.parse().ok())
            .unwrap_or(0)
    }

    fn nginx_access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Evidence that the proxy saw a failed attempt and sent the request
    /// again: haproxy's retry and redispatch counters, nginx's access log
    /// lines with more than one upstream status (e.g. `502, 200`).
    fn retried_requests(&self) -> u64 {
        match self.layout {
            Layout::HaproxySlots => {
                self.haproxy_backend_counter("wretr") + self.haproxy_backend_counter("wredis")
            }
            Layout::NginxSlots | Layout::NginxBalancer => self
                .nginx_access_log()
                .lines()
                .filter(|l| l.starts_with("200 ") && l.contains(", "))
                .count() as u64,
        }
    }

    fn stop(self) {
        self.proc.stop();
    }
}

/// The sum of the request counters of every worker in `/status`.
fn worker_requests(cluster: &mut Cluster) -> u64 {
    cluster.status()["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["requests"].as_u64().unwrap_or(0))
        .sum()
}

/// With a dynamic pool, the load made it start workers beyond its one
/// spare: the proxy met slots that came up during the run.
fn assert_grew(cluster: &Cluster, pm: &[&str]) {
    if pm.is_empty() {
        return;
    }
    let status = cluster.try_status().expect("GET /status answers");
    assert_eq!(status["pm"]["mode"], "dynamic");
    assert!(
        status["pm"]["spawned"].as_u64().unwrap_or(0) >= 2,
        "the load started more workers: {}",
        status["pm"]
    );
}

/// `ppm restart` while clients go through the proxy: not one fails, and
/// the new code answers once the restart is done.
fn restart_behind(layout: Layout, pm: &[&str]) {
    let app = fixture_copy("versioned");
    std::fs::write(app.path().join("VERSION"), "v1").unwrap();
    let mut setup = Setup {
        app: app.path().to_path_buf(),
        wait_ready: pm.is_empty(),
        ..Setup::callable("versioned", 4)
    };
    setup.extra.extend(pm.iter().map(|a| a.to_string()));
    let cluster = Cluster::start(setup);
    let front = Front::start_for(layout, &cluster, pm.is_empty());
    let began = Instant::now();
    let load = Load::start(front.url("/sleep?ms=20"), CLIENTS);
    std::thread::sleep(Duration::from_millis(500));

    std::fs::write(app.path().join("VERSION"), "v2").unwrap();
    let port = cluster.control_port.to_string();
    let (code, out, err) = run_ppm(&["restart", &port], Duration::from_secs(90));
    assert_eq!(code, 0, "ppm restart: {out}{err}");
    let finished = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let seen = load.stop();
    println!(
        "{layout:?} {pm:?}, ppm restart: {}",
        summary(&seen, began.elapsed())
    );

    assert_no_failures(&seen, &format!("{layout:?} during ppm restart"));
    assert_grew(&cluster, pm);
    assert!(
        seen.iter().any(|s| s.body == "v1"),
        "the load ran before the restart"
    );
    let late: Vec<_> = seen.iter().filter(|s| s.started > finished).collect();
    assert!(!late.is_empty(), "the load ran after the restart");
    assert!(
        late.iter().all(|s| s.body == "v2"),
        "after the restart only the new code answers"
    );
    front.stop();
}

/// `kill -9` of busy workers while clients go through the proxy: the
/// request that was running gets a 502 from ppm, which the proxy hides
/// by sending it again; not one client sees a failure.
fn kill_behind(layout: Layout, pm: &[&str]) {
    let mut setup = Setup {
        wait_ready: pm.is_empty(),
        ..Setup::callable("basic", 4)
    };
    setup.extra.extend(pm.iter().map(|a| a.to_string()));
    let mut cluster = Cluster::start(setup);
    let front = Front::start_for(layout, &cluster, pm.is_empty());
    let began = Instant::now();
    let load = Load::start(front.url("/sleep?ms=50"), CLIENTS);
    std::thread::sleep(Duration::from_millis(500));

    // Kill busy workers (their request in flight): two, and more until the
    // proxy has had to retry at least once; at most five.
    let mut kills = 0;
    while kills < 2 || (kills < 5 && front.retried_requests() == 0) {
        let status = cluster.status();
        let busy = status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["state"] == "busy")
            .map(|w| {
                (
                    w["slot"].as_u64().unwrap(),
                    w["pid"].as_u64().unwrap() as u32,
                )
            });
        let Some((slot, pid)) = busy else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let retried_before = front.retried_requests();
        signal_pid(pid, Signal::SIGKILL);
        kills += 1;
        let replaced = wait_until(Duration::from_secs(30), || {
            let status = cluster.try_status()?;
            let w = &status["workers"][slot as usize];
            let serving = w["state"] == "ready" || w["state"] == "busy";
            (serving && w["pid"].as_u64()? as u32 != pid).then_some(())
        });
        assert!(
            replaced.is_some(),
            "slot {slot} got a new worker; log:\n{}",
            cluster.log_text()
        );
        cluster.remember_pids();
        // Until the proxy's logs or counters show it sent the killed
        // request again (bounded: a kill may have caught none in flight).
        wait_until(Duration::from_secs(2), || {
            (front.retried_requests() > retried_before).then_some(())
        });
    }
    std::thread::sleep(Duration::from_millis(300));
    let seen = load.stop();
    let retried = front.retried_requests();
    println!(
        "{layout:?} {pm:?}, kill -9: {kills} workers killed, {retried} requests retried by the proxy; {}",
        summary(&seen, began.elapsed())
    );

    assert_no_failures(&seen, &format!("{layout:?} with workers killed"));
    assert_grew(&cluster, pm);
    assert!(
        retried >= 1,
        "a killed worker had a request in flight that the proxy sent again \
         ({kills} kills); ppm log:\n{}",
        cluster.log_text()
    );
    assert!(
        cluster
            .log_text()
            .contains("worker failed during the request"),
        "ppm saw the worker die during a request"
    );
    front.stop();
}

#[test]
fn haproxy_over_the_slot_ports_hides_a_rolling_restart() {
    restart_behind(Layout::HaproxySlots, &[]);
}

#[test]
fn haproxy_over_the_slot_ports_with_a_dynamic_pool_hides_a_rolling_restart() {
    restart_behind(Layout::HaproxySlots, DYNAMIC);
}

#[test]
fn haproxy_over_the_slot_ports_hides_a_killed_worker() {
    kill_behind(Layout::HaproxySlots, &[]);
}

#[test]
fn haproxy_over_the_slot_ports_with_a_dynamic_pool_hides_a_killed_worker() {
    kill_behind(Layout::HaproxySlots, DYNAMIC);
}

#[test]
fn nginx_over_the_slot_ports_hides_a_rolling_restart() {
    restart_behind(Layout::NginxSlots, &[]);
}

#[test]
fn nginx_over_the_slot_ports_with_a_dynamic_pool_hides_a_rolling_restart() {
    restart_behind(Layout::NginxSlots, DYNAMIC);
}

#[test]
fn nginx_over_the_slot_ports_hides_a_killed_worker() {
    kill_behind(Layout::NginxSlots, &[]);
}

#[test]
fn nginx_over_the_slot_ports_with_a_dynamic_pool_hides_a_killed_worker() {
    kill_behind(Layout::NginxSlots, DYNAMIC);
}

#[test]
fn nginx_over_the_balancer_port_hides_a_rolling_restart() {
    restart_behind(Layout::NginxBalancer, &[]);
}

#[test]
fn nginx_over_the_balancer_port_with_a_dynamic_pool_hides_a_rolling_restart() {
    restart_behind(Layout::NginxBalancer, DYNAMIC);
}

#[test]
fn nginx_over_the_balancer_port_hides_a_killed_worker() {
    kill_behind(Layout::NginxBalancer, &[]);
}

#[test]
fn nginx_over_the_balancer_port_with_a_dynamic_pool_hides_a_killed_worker() {
    kill_behind(Layout::NginxBalancer, DYNAMIC);
}

#[test]
fn haproxy_health_checks_are_answered_by_ppm_and_never_reach_php() {
    let mut cluster = Cluster::start(Setup::callable("basic", 4));
    let front = Front::start(Layout::HaproxySlots, &cluster);
    let before = worker_requests(&mut cluster);

    // The health path on every port, asked directly and through haproxy.
    let client = http();
    let mut urls: Vec<String> = (0..4)
        .map(|s| cluster.slot_url(s, "/_ppm/health"))
        .collect();
    urls.push(cluster.url("/_ppm/health"));
    urls.push(front.url("/_ppm/health"));
    for url in &urls {
        let r = client.get(url).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{url}");
        assert_eq!(r.text().unwrap(), "ok\n", "{url}");
    }
    // haproxy checks every slot once a second: let it check a few times.
    // A fixed wait: its statistics count failed checks only, and what
    // follows is that none of them reached PHP.
    std::thread::sleep(Duration::from_millis(3500));
    let servers = front.haproxy_servers().unwrap();
    assert_eq!(servers.len(), 4, "one haproxy server per slot");
    for s in &servers {
        assert_eq!(s["status"], "UP", "{s:?}");
        assert_eq!(s["check_status"], "L7OK", "{s:?}");
        assert_eq!(s["slim"], "1", "maxconn 1: {s:?}");
    }
    assert_eq!(
        worker_requests(&mut cluster),
        before,
        "no health check reached a PHP worker"
    );

    // A real request does reach PHP and is counted.
    let r = client.get(front.url("/pid")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let counted = wait_until(Duration::from_secs(5), || {
        (worker_requests(&mut cluster) == before + 1).then_some(())
    });
    assert!(counted.is_some(), "the worker counted the real request");
    front.stop();
}

#[test]
fn haproxy_takes_a_slot_without_a_ready_worker_out_of_rotation() {
    let app = fixture_copy("versioned");
    let mut cluster = Cluster::start(Setup {
        app: app.path().to_path_buf(),
        ..Setup::callable("versioned", 3)
    });
    let front = Front::start(Layout::HaproxySlots, &cluster);
    // Slot 1's worker dies and its replacement cannot boot (a broken
    // deploy): the slot has no ready worker, its health check answers 503.
    std::fs::write(
        app.path().join("app.php"),
        "<?php\nreturn function () { echo 'v2' }\n",
    )
    .unwrap();
    let pid = cluster.worker_pids()[1];
    signal_pid(pid, Signal::SIGKILL);
    let r = wait_until(Duration::from_secs(20), || {
        let r = http()
            .get(cluster.slot_url(1, "/_ppm/health"))
            .send()
            .ok()?;
        (r.status().as_u16() == 503).then_some(())
    });
    assert!(r.is_some(), "the slot's health path answers 503");
    let down = wait_until(Duration::from_secs(20), || {
        let servers = front.haproxy_servers()?;
        (servers[1]["status"] == "DOWN").then_some(servers)
    });
    assert!(
        down.is_some(),
        "haproxy marked the slot down: {:?}",
        front.haproxy_servers()
    );
    let sent_before: u64 = front.haproxy_servers().unwrap()[1]["stot"].parse().unwrap();

    let load = Load::start(front.url("/"), 4);
    std::thread::sleep(Duration::from_secs(2));
    let seen = load.stop();
    assert_no_failures(&seen, "two of three slots up");
    assert!(seen.iter().all(|s| s.body == "v1"));
    let servers = front.haproxy_servers().unwrap();
    let sent_after: u64 = servers[1]["stot"].parse().unwrap();
    assert_eq!(sent_after, sent_before, "no request went to the down slot");
    assert!(servers[0]["status"] == "UP" && servers[2]["status"] == "UP");
    front.stop();
}

#[test]
fn nginx_serves_the_public_directory_and_passes_the_rest_to_ppm() {
    let app = fixture_copy("basic");
    let public = app.path().join("public");
    std::fs::create_dir(&public).unwrap();
    std::fs::write(public.join("hello.txt"), "static hello\n").unwrap();
    std::fs::write(public.join("style.css"), "body { color: teal }\n").unwrap();
    std::fs::write(public.join("index.php"), "<?php // secret source\n").unwrap();
    std::fs::write(public.join(".env"), "SECRET=hunter2\n").unwrap();
    // nginx's workers run as an unprivileged user: let them in.
    use std::os::unix::fs::PermissionsExt;
    for dir in [app.path(), public.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut cluster = Cluster::start(Setup {
        app: app.path().to_path_buf(),
        ..Setup::callable("basic", 2)
    });
    let front = Front::nginx(
        "nginx-static.conf",
        vec![
            ("PPM_PORT", cluster.port.to_string()),
            ("PUBLIC_DIR", public.display().to_string()),
        ],
    );
    let before = worker_requests(&mut cluster);
    let client = http();
    let get = |path: &str| {
        let r = client.get(front.url(path)).send().unwrap();
        let status = r.status().as_u16();
        let from_ppm = r.headers().get("x-request-id").is_some();
        let ctype = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (status, from_ppm, ctype, r.text().unwrap())
    };

    let (status, from_ppm, ctype, body) = get("/hello.txt");
    assert_eq!((status, body.as_str()), (200, "static hello\n"));
    assert!(!from_ppm, "nginx served the static file itself");
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    let (status, from_ppm, ctype, _) = get("/style.css");
    assert_eq!(status, 200);
    assert!(!from_ppm && ctype.starts_with("text/css"), "{ctype}");
    assert_eq!(
        worker_requests(&mut cluster),
        before,
        "static files never reach PHP"
    );

    let (status, from_ppm, _, body) = get("/pid");
    assert_eq!(status, 200);
    assert!(from_ppm, "a dynamic route is answered by ppm");
    assert!(body.parse::<u32>().is_ok(), "{body}");
    let (status, from_ppm, _, body) = get("/index.php");
    assert!(
        from_ppm,
        "a .php file goes to ppm, it is not served as a file"
    );
    assert!(!body.contains("secret source"), "{body}");
    assert_eq!(status, 404, "the fixture app has no /index.php route");
    let (status, _, _, body) = get("/.env");
    assert_eq!(status, 404);
    assert!(!body.contains("hunter2"), "hidden files are never served");

    // Both at once, under load.
    let started = Instant::now();
    let statics = Load::start(front.url("/hello.txt"), 2);
    let dynamics = Load::start(front.url("/sleep?ms=5"), 2);
    std::thread::sleep(Duration::from_secs(1));
    let (statics, dynamics) = (statics.stop(), dynamics.stop());
    println!(
        "static: {}; dynamic: {}",
        summary(&statics, started.elapsed()),
        summary(&dynamics, started.elapsed())
    );
    assert_no_failures(&statics, "static files under load");
    assert_no_failures(&dynamics, "dynamic routes under load");
    assert!(statics.iter().all(|s| s.body == "static hello\n"));
    assert!(dynamics.iter().all(|s| s.body == "slept"));
    front.stop();
}

/// A network namespace made by the test; deleted (with anything still
/// running in it) when dropped.
struct Netns {
    name: String,
}

impl Netns {
    fn add(name: String) -> Result<Netns, String> {
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| format!("cannot run ip: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        Ok(ns)
    }

    /// `ip -n NS ARGS`, which must succeed.
    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip -n {} {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A command run inside the namespace.
    fn exec(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// The processes running inside the namespace.
    fn pids(&self) -> Vec<u32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `ppm ARGS` inside the namespace, to completion (bounded).
    fn ppm(&self, args: &[&str], timeout: Duration) -> (bool, String) {
        let mut child = self
            .exec(PPM)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_until(timeout, || child.try_wait().ok().flatten());
        if status.is_none() {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        (
            status.is_some_and(|s| s.success()),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Only what this test started runs in its namespaces.
        kill_all(&self.pids());
        let _ = wait_until(Duration::from_secs(10), || {
            self.pids().is_empty().then_some(())
        });
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The calling thread, moved into a network namespace (threads and
/// processes it starts are born there); moved back when dropped.
struct InNetns {
    home: std::fs::File,
}

impl InNetns {
    fn enter(name: &str) -> InNetns {
        use std::os::fd::AsRawFd;
        let home = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
        let target = std::fs::File::open(format!("/var/run/netns/{name}")).unwrap();
        // SAFETY: setns on descriptors this function owns; it changes only
        // the calling thread's network namespace.
        let rc = unsafe { nix::libc::setns(target.as_raw_fd(), nix::libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        InNetns { home }
    }
}

impl Drop for InNetns {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: as above.
        unsafe { nix::libc::setns(self.home.as_raw_fd(), nix::libc::CLONE_NEWNET) };
    }
}

/// One ppm "host": a namespace joined to the load balancer's namespace by
/// a veth pair, its ppm on the default ports of its own address.
struct Host {
    // Dropped in this order: ppm first, then its namespace.
    ppm: Option<Proc>,
    ns: Netns,
    addr: String,
    _app: tempfile::TempDir,
}

impl Host {
    fn start(ns: Netns, lb: &Netns, index: u8, version: &str, dir: &Path) -> Host {
        // 10.231.0.(4i)/30: .1 on the balancer's side, .2 on the host's.
        let (lb_addr, addr) = (
            format!("10.231.0.{}", 4 * index + 1),
            format!("10.231.0.{}", 4 * index + 2),
        );
        let lb_if = format!("to-host{index}");
        lb.ip(&[
            "link", "add", &lb_if, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        lb.ip(&["addr", "add", &format!("{lb_addr}/30"), "dev", &lb_if]);
        lb.ip(&["link", "set", &lb_if, "up"]);
        ns.ip(&["addr", "add", &format!("{addr}/30"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);

        let app = fixture_copy("versioned");
        std::fs::write(app.path().join("VERSION"), version).unwrap();
        let ppm = Proc::spawn(
            &format!("ppm on {addr}"),
            ns.exec(PPM)
                .arg("start")
                .arg(app.path())
                .args(["--bridge", "callable", "--bootstrap", "app.php"])
                .args(["--workers", "2", "--host", &addr])
                .env("PPM_LOG", "info"),
            &dir.join(format!("ppm-{version}.log")),
        );
        let host = Host {
            ns,
            addr,
            ppm: Some(ppm),
            _app: app,
        };
        let ready = wait_until(Duration::from_secs(30), || {
            let (ok, out) = host.ns.ppm(&["status", "--json"], Duration::from_secs(5));
            let status: serde_json::Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
            (serving_in(&status)? == 2).then_some(())
        });
        assert!(
            ready.is_some(),
            "ppm in {} came up: {}",
            host.ns.name,
            host.ppm.as_ref().unwrap().log_text()
        );
        host
    }
}

#[test]
fn two_ppm_hosts_behind_one_haproxy_lose_nothing_when_one_stops() {
    let prefix = format!("ppmt{}", std::process::id());
    let lb = match Netns::add(format!("{prefix}-lb")) {
        Ok(ns) => ns,
        Err(err) => {
            println!(
                "SKIPPED: cannot make network namespaces here ({err}); \
                 this test needs root or CAP_SYS_ADMIN and iproute2"
            );
            return;
        }
    };
    let logs = tempfile::tempdir().unwrap();
    let mut hosts = Vec::new();
    for (index, version) in ["a", "b"].into_iter().enumerate() {
        let ns = Netns::add(format!("{prefix}-{version}")).expect("a second namespace");
        hosts.push(Host::start(ns, &lb, index as u8, version, logs.path()));
    }

    // From here on this thread, haproxy, the load's clients and the
    // statistics requests live in the load balancer's namespace: its only
    // links are the veth pairs to the two hosts, so no packet can leave
    // the machine.
    let inside = InNetns::enter(&lb.name);
    let front = Front::haproxy(
        "haproxy.cfg",
        vec![
            ("PPM_HOSTS", format!("{} {}", hosts[0].addr, hosts[1].addr)),
            ("PPM_WORKERS", "2".to_string()),
        ],
        true,
    );
    assert_eq!(
        front.haproxy_servers().unwrap().len(),
        4,
        "2 hosts x 2 slots"
    );

    let began = Instant::now();
    let load = Load::start(front.url("/sleep?ms=20"), CLIENTS);
    std::thread::sleep(Duration::from_millis(1000));
    // Host a stops gracefully, as `systemctl stop` or a rolling deploy would.
    let (ok, out) = hosts[0].ns.ppm(&["stop"], Duration::from_secs(60));
    assert!(ok, "ppm stop in host a: {out}");
    let stopped = Instant::now();
    let exited = hosts[0]
        .ppm
        .as_mut()
        .unwrap()
        .wait_exit(Duration::from_secs(30));
    assert!(exited.is_some_and(|s| s.success()), "host a's ppm exited 0");
    std::thread::sleep(Duration::from_millis(1500));
    let seen = load.stop();
    println!(
        "two hosts, one stopped under load: {}; haproxy retried {} and redispatched {}",
        summary(&seen, began.elapsed()),
        front.haproxy_backend_counter("wretr"),
        front.haproxy_backend_counter("wredis")
    );

    if seen.iter().any(|s| s.status != 200) {
        println!("haproxy log:\n{}", front.proc.log_text());
    }
    assert_no_failures(&seen, "one of two ppm hosts stopping");
    assert!(
        seen.iter()
            .filter(|s| s.started < stopped)
            .any(|s| s.body == "a"),
        "host a served before it stopped"
    );
    assert!(seen.iter().any(|s| s.body == "b"), "host b served");
    let late: Vec<_> = seen.iter().filter(|s| s.started > stopped).collect();
    assert!(!late.is_empty() && late.iter().all(|s| s.body == "b"));
    let down = wait_until(Duration::from_secs(10), || {
        let servers = front.haproxy_servers()?;
        servers
            .iter()
            .filter(|s| s["svname"].starts_with("ppm0-"))
            .all(|s| s["status"] == "DOWN")
            .then_some(())
    });
    assert!(down.is_some(), "haproxy marked host a's slots down");

    front.stop();
    drop(inside);
    for host in &mut hosts {
        if let Some(ppm) = host.ppm.take() {
            ppm.stop();
        }
        let empty = wait_until(Duration::from_secs(15), || {
            host.ns.pids().is_empty().then_some(())
        });
        assert!(
            empty.is_some(),
            "nothing left running in {}: {:?}",
            host.ns.name,
            host.ns.pids()
        );
    }
    assert!(lb.pids().is_empty());
}

#[test]
fn the_shipped_configurations_render_to_ppms_default_ports_and_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let haproxy = render("haproxy.cfg", &[]);
    for port in 5502..=5509 {
        assert!(
            haproxy.contains(&format!(" 127.0.0.1:{port}\n")),
            "slot port {port}:\n{haproxy}"
        );
    }
    assert!(!haproxy.contains(":5510"), "8 slots by default, like ppm");
    assert!(haproxy.contains("option httpchk GET /_ppm/health"));
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, &haproxy).unwrap();
    let out = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for (template, expect) in [
        ("nginx-slots.conf", "server 127.0.0.1:5509 "),
        ("nginx-balancer.conf", "server 127.0.0.1:5501 "),
        ("nginx-static.conf", "root /srv/app/public;"),
    ] {
        let text = render(template, &[]);
        assert!(text.contains(expect), "{template}: {expect}\n{text}");
        assert!(text.contains("listen 0.0.0.0:8080;"), "{template}");
        let d = dir.path().display();
        std::fs::write(dir.path().join("site.conf"), &text).unwrap();
        std::fs::write(
            dir.path().join("nginx.conf"),
            format!(
                "pid {d}/nginx.pid;\nevents {{}}\nhttp {{ include /etc/nginx/mime.types; \
                 access_log off; include {d}/site.conf; }}\n"
            ),
        )
        .unwrap();
        let out = Command::new("nginx")
            .arg("-t")
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{template}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // An unknown placeholder is an error, not a silently broken file.
    let bad = dir.path().join("bad.cfg");
    std::fs::write(&bad, "server {{HOST}}:{{SLOT_PROT}}\n").unwrap();
    let out = Command::new("sh")
        .arg(docker_file("render.sh"))
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown placeholder"));
}

#[test]
fn the_front_proxy_guide_quotes_the_shipped_files_verbatim() {
    let guide = std::fs::read_to_string(root().join("doc/front-proxies.md")).unwrap();
    let mut quoted = 0;
    for part in guide.split("<!-- quote ").skip(1) {
        let (file, rest) = part.split_once(" -->").unwrap();
        let block = rest
            .split_once("```")
            .and_then(|(_, b)| b.split_once('\n'))
            .and_then(|(_, b)| b.split_once("```"))
            .map(|(b, _)| b)
            .unwrap_or_else(|| panic!("a fenced block after the quote of {file}"));
        let shipped = std::fs::read_to_string(root().join(file)).unwrap();
        assert_eq!(
            block, shipped,
            "doc/front-proxies.md quotes {file} as shipped"
        );
        quoted += 1;
    }
    assert_eq!(quoted, 4, "haproxy.cfg and the three nginx files");
}
