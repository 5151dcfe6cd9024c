//! Several pools in one master (`ppm.json`'s `pools`), with real PHP:
//! the hello app (callable bridge) and the Symfony fixture side by side,
//! each on its own ports, and nothing one pool goes through (a restart,
//! dead workers, a bootstrap that cannot work) reaching the other.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A master running the pools of a `ppm.json` written for the test.
struct Master {
    child: Option<Child>,
    control: u16,
    /// Each pool's balancer port, by name.
    ports: Vec<(String, u16)>,
    config: PathBuf,
    log: PathBuf,
    seen: Vec<u32>,
    _dir: tempfile::TempDir,
}

/// A pool of the test's `ppm.json`: name, app, bridge, bootstrap, workers.
struct PoolSpec {
    name: &'static str,
    app: PathBuf,
    bridge: &'static str,
    bootstrap: &'static str,
    workers: u16,
}

fn hello(workers: u16) -> PoolSpec {
    PoolSpec {
        name: "hello",
        app: fixture("basic"),
        bridge: "callable",
        bootstrap: "app.php",
        workers,
    }
}

fn symfony(workers: u16) -> PoolSpec {
    PoolSpec {
        name: "symfony",
        app: fixture("symfony"),
        bridge: "httpKernel",
        bootstrap: "symfony",
        workers,
    }
}

impl Master {
    /// Starts the pools with `top` merged into the file's top level, and
    /// waits until the control plane answers.
    fn start(pools: &[PoolSpec], top: serde_json::Value) -> Master {
        let dir = tempfile::tempdir().unwrap();
        let needed: u16 = 1 + pools.iter().map(|p| p.workers + 1).sum::<u16>();
        let control = free_ports(needed);
        let mut next = control + 1;
        let mut ports = Vec::new();
        let mut entries = serde_json::Map::new();
        for pool in pools {
            entries.insert(
                pool.name.into(),
                serde_json::json!({
                    "app-dir": pool.app,
                    "bridge": pool.bridge,
                    "bootstrap": pool.bootstrap,
                    "workers": pool.workers,
                    "port": next,
                }),
            );
            ports.push((pool.name.to_string(), next));
            next += pool.workers + 1;
        }
        let mut file = serde_json::json!({"control-port": control, "pools": entries});
        for (key, value) in top.as_object().unwrap() {
            file[key] = value.clone();
        }
        let config = dir.path().join("ppm.json");
        std::fs::write(&config, file.to_string()).unwrap();
        let log = dir.path().join("ppm.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ppm"))
            .args(["start", "-c", path_str(&config)])
            .env("PPM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut master = Master {
            child: Some(child),
            control,
            ports,
            config,
            log,
            seen: Vec::new(),
            _dir: dir,
        };
        if wait_until(Duration::from_secs(30), || master.try_status()).is_none() {
            panic!("the master did not come up; log:\n{}", master.log_text());
        }
        master
    }

    fn port(&self, pool: &str) -> u16 {
        self.ports.iter().find(|(n, _)| n == pool).unwrap().1
    }

    fn url(&self, pool: &str, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port(pool))
    }

    fn slot_url(&self, pool: &str, slot: u16, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port(pool) + 1 + slot)
    }

    fn control_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.control)
    }

    fn try_status(&mut self) -> Option<serde_json::Value> {
        let status = get_status(self.control, None)?;
        note_worker_pids(&status, &mut self.seen);
        Some(status)
    }

    fn status(&mut self) -> serde_json::Value {
        self.try_status().expect("GET /status answers")
    }

    /// The pids of `pool`'s workers (0 for a slot without one).
    fn pids(&mut self, pool: &str) -> Vec<u32> {
        self.status()["workers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["pool"] == pool)
            .map(|w| w["pid"].as_u64().unwrap_or(0) as u32)
            .collect()
    }

    /// Waits until every slot of `pool` has a ready or busy worker.
    fn wait_serving(&mut self, pool: &str) {
        let ok = wait_until(Duration::from_secs(60), || {
            let status = self.try_status()?;
            let entry = status["pools"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == pool)?
                .clone();
            let serving = entry["ready_workers"].as_u64()? + entry["busy_workers"].as_u64()?;
            (serving == entry["total_workers"].as_u64()?).then_some(())
        });
        if ok.is_none() {
            panic!("pool {pool} did not come up; log:\n{}", self.log_text());
        }
    }

    fn log_text(&self) -> String {
        settled_log(&self.log)
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.try_status();
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(15));
        }
        kill_all(&self.seen);
    }
}

fn get(url: &str) -> (u16, String) {
    match http().get(url).timeout(Duration::from_secs(10)).send() {
        Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

#[test]
fn two_pools_serve_on_their_own_ports_and_the_control_plane_covers_both() {
    let mut master = Master::start(&[hello(2), symfony(2)], serde_json::json!({}));
    master.wait_serving("hello");
    master.wait_serving("symfony");

    let (code, body) = get(&master.url("hello", "/"));
    assert_eq!(code, 200);
    assert!(body.starts_with("Hello from worker"), "{body}");
    let (code, body) = get(&master.url("symfony", "/hello"));
    assert_eq!((code, body.as_str()), (200, "Hello from Symfony\n"));
    for slot in 0..2 {
        assert!(get(&master.slot_url("hello", slot, "/"))
            .1
            .starts_with("Hello from worker"));
        assert_eq!(
            get(&master.slot_url("symfony", slot, "/hello")).1,
            "Hello from Symfony\n"
        );
    }

    // /status: the master's totals, each pool's figures, each row's pool.
    let status = master.status();
    assert_eq!(status["total_workers"], 4);
    let names: Vec<_> = status["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["hello", "symfony"]);
    assert_eq!(status["pools"][1]["bridge"], "httpKernel");
    assert_eq!(status["pools"][1]["requests_total"], 3);
    let pools_of_rows: Vec<_> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pool"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(pools_of_rows, ["hello", "hello", "symfony", "symfony"]);
    let one: serde_json::Value = http()
        .get(master.control_url("/status?pool=symfony"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(one["total_workers"], 2);
    assert_eq!(one["bridge"], "httpKernel");
    assert_eq!(get(&master.control_url("/status?pool=nope")).0, 404);

    // /metrics: one family each, every series with its pool.
    let (_, metrics) = get(&master.control_url("/metrics"));
    assert_eq!(metrics.matches("# TYPE ppm_workers gauge").count(), 1);
    for pool in ["hello", "symfony"] {
        assert!(
            metrics.contains(&format!("ppm_workers{{pool=\"{pool}\",state=\"ready\"}} 2")),
            "{metrics}"
        );
    }
    assert!(
        metrics.contains("ppm_requests_total{pool=\"symfony\",slot=\"0\",code=\"2xx\"}"),
        "{metrics}"
    );

    // /fpm-status: one pool per page, as php-fpm.
    let fpm = |query: &str| -> serde_json::Value {
        http()
            .get(master.control_url(&format!("/fpm-status?json{query}")))
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    assert_eq!(fpm("")["pool"], "hello");
    let page = fpm("&pool=symfony");
    assert_eq!(page["pool"], "symfony");
    assert_eq!(page["total processes"], 2);
    assert_eq!(get(&master.control_url("/fpm-status?pool=nope")).0, 404);

    // A slot restart must name its pool.
    let post = |path: &str| {
        http()
            .post(master.control_url(path))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(post("/workers/0/restart"), 400);
    assert_eq!(post("/workers/0/restart?pool=hello"), 202);

    // `ppm status` shows both pools.
    let (code, out, err) = run_ppm(
        &["status", "-c", path_str(&master.config)],
        Duration::from_secs(20),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("pool hello") && out.contains("pool symfony"),
        "{out}"
    );
}

#[test]
fn restarting_one_pool_under_load_changes_only_its_workers_and_loses_nothing() {
    let mut master = Master::start(&[hello(2), symfony(2)], serde_json::json!({}));
    master.wait_serving("hello");
    master.wait_serving("symfony");
    let hello_before = master.pids("hello");
    let symfony_before = master.pids("symfony");

    let hello_load = Load::start(master.url("hello", "/"), 3);
    let symfony_load = Load::start(master.url("symfony", "/hello"), 3);
    std::thread::sleep(Duration::from_millis(300));
    let (code, out, err) = run_ppm(
        &[
            "restart",
            "-c",
            path_str(&master.config),
            "--pool",
            "symfony",
        ],
        Duration::from_secs(120),
    );
    std::thread::sleep(Duration::from_millis(300));
    let hello_seen = hello_load.stop();
    let symfony_seen = symfony_load.stop();
    assert_eq!(code, 0, "{out}\n{err}\n{}", master.log_text());
    assert!(
        out.contains("pool symfony: restart done: 2 workers replaced"),
        "{out}"
    );

    let symfony_after = master.pids("symfony");
    assert_eq!(
        master.pids("hello"),
        hello_before,
        "the other pool was not touched"
    );
    assert!(
        symfony_after
            .iter()
            .all(|p| !symfony_before.contains(p) && *p != 0),
        "{symfony_before:?} -> {symfony_after:?}"
    );
    for (pool, seen) in [("hello", &hello_seen), ("symfony", &symfony_seen)] {
        let failed: Vec<_> = seen.iter().filter(|s| s.status != 200).collect();
        assert!(
            failed.is_empty(),
            "{pool}: {} of {} failed: {:?}",
            failed.len(),
            seen.len(),
            failed.first()
        );
        assert!(seen.len() > 20, "{pool}: only {} requests", seen.len());
    }
    let status = master.status();
    assert_eq!(status["pools"][1]["restart"]["state"], "succeeded");
    assert_eq!(status["pools"][1]["restart"]["pool"], "symfony");
    assert!(status["pools"][0]["restart"].is_null());
}

#[test]
fn killing_every_worker_of_one_pool_leaves_the_other_serving() {
    let mut master = Master::start(&[hello(2), symfony(2)], serde_json::json!({}));
    master.wait_serving("hello");
    master.wait_serving("symfony");
    let symfony_before = master.pids("symfony");
    let hello_before = master.pids("hello");

    let symfony_load = Load::start(master.url("symfony", "/hello"), 2);
    std::thread::sleep(Duration::from_millis(200));
    for &pid in &hello_before {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // The hello pool replaces its workers; symfony serves throughout.
    let replaced = wait_until(Duration::from_secs(30), || {
        let pids = master.pids("hello");
        pids.iter()
            .all(|p| *p != 0 && !hello_before.contains(p))
            .then_some(())
    });
    master.wait_serving("hello");
    std::thread::sleep(Duration::from_millis(200));
    let seen = symfony_load.stop();
    assert!(replaced.is_some(), "{}", master.log_text());
    let failed: Vec<_> = seen.iter().filter(|s| s.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(seen.len() > 10, "only {} requests", seen.len());
    assert_eq!(master.pids("symfony"), symfony_before);
    assert!(get(&master.url("hello", "/"))
        .1
        .starts_with("Hello from worker"));
}

#[test]
fn a_pool_that_cannot_boot_leaves_the_other_serving() {
    let broken = PoolSpec {
        name: "broken",
        app: fixture("broken"),
        bridge: "callable",
        bootstrap: "app.php",
        workers: 1,
    };
    let started = Instant::now();
    let mut master = Master::start(
        &[hello(2), broken],
        serde_json::json!({"bootstrap-timeout": 3}),
    );
    master.wait_serving("hello");
    // Past the bootstrap timeout a single broken pool would stop the master.
    let past = Duration::from_secs(5).saturating_sub(started.elapsed());
    std::thread::sleep(past);
    assert!(
        master.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the master stopped:\n{}",
        master.log_text()
    );
    assert!(get(&master.url("hello", "/"))
        .1
        .starts_with("Hello from worker"));
    let status = master.status();
    let broken = &status["pools"][1];
    assert_eq!(broken["name"], "broken");
    assert_eq!(broken["ever_ready"], false);
    assert!(
        broken["boot_error"]
            .as_str()
            .unwrap_or_default()
            .contains("syntax error"),
        "{broken}"
    );
    assert_eq!(status["pools"][0]["ever_ready"], true);
    // Its port answers, but no worker will: 503 once its queue gives up,
    // and /ready says which pool is not.
    assert_eq!(get(&master.url("broken", "/_ppm/health")).0, 503);
    assert_eq!(get(&master.control_url("/ready?pool=hello")).0, 200);
    assert_eq!(get(&master.control_url("/ready")).0, 503);
    let log = master.log_text();
    assert!(
        log.contains("pool broken: no PHP worker became ready"),
        "{log}"
    );
}

#[test]
fn every_configuration_error_of_every_pool_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ppm.json");
    let json = serde_json::json!({
        "pools": {
            "a": {"app-dir": fixture("basic"), "workers": 0, "port": 7001},
            "b": {"app-dir": fixture("basic"), "pidfile": "/tmp/x.pid", "max-queue": 0},
        }
    });
    std::fs::write(&config, json.to_string()).unwrap();
    let (code, out, err) = run_ppm(&["start", "-c", path_str(&config)], Duration::from_secs(20));
    assert_ne!(code, 0, "{out}");
    for text in [
        "pool \"a\": ",
        "key \"workers\": must be between 1 and 512",
        "pool \"b\": ",
        "key \"pidfile\" is the master's",
        "key \"max-queue\": must be at least 1",
    ] {
        assert!(err.contains(text), "{text:?} not in:\n{err}");
    }
}
