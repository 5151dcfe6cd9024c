//! Workers as another user (`--user`), and the workers' environment
//! (`--env`, `--clear-env`). The `--user` tests need root, as ppm does
//! for it: run elsewhere they say so and pass without checking.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use nix::unistd::{Uid, User};
use serde_json::Value as Json;

fn is_root() -> bool {
    if Uid::effective().is_root() {
        return true;
    }
    eprintln!("not root: the --user tests are skipped");
    false
}

/// `count` consecutive free ports between 600 and 1000, which only root may bind.
fn low_ports(count: u16) -> u16 {
    (600..1000 - count)
        .find(|&base| {
            let held: Vec<_> = (0..count)
                .map_while(|i| TcpListener::bind(("127.0.0.1", base + i)).ok())
                .collect();
            held.len() == count as usize
        })
        .expect("free ports between 600 and 1000")
}

/// A master started directly (Cluster always picks high ports), stopped
/// and reaped on drop.
struct Master {
    child: Child,
    control: u16,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl Master {
    fn start(args: &[String]) -> Master {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(PPM)
            .args(args)
            .env("PPM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let control = arg_value(args, "--control-port=").parse().unwrap();
        let port = arg_value(args, "--port=").parse().unwrap();
        let master = Master {
            child,
            control,
            port,
            log,
        };
        let up = wait_until(Duration::from_secs(30), || {
            let status = master.status()?;
            (status["ready_workers"].as_u64()? == status["total_workers"].as_u64()?).then_some(())
        });
        assert!(
            up.is_some(),
            "the master did not come up:\n{}",
            master.log()
        );
        master
    }

    fn status(&self) -> Option<Json> {
        get_status(self.control, None)
    }

    fn get(&self, path: &str) -> (u16, String) {
        let response = http()
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .send()
            .unwrap();
        (response.status().as_u16(), response.text().unwrap())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(15));
    }
}

fn arg_value<'a>(args: &'a [String], prefix: &str) -> &'a str {
    args.iter()
        .find_map(|a| a.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("{prefix} in {args:?}"))
}

/// The fields of a `/proc/PID/status` line such as `Uid:`.
fn proc_ids(pid: u64, key: &str) -> Vec<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn workers_run_as_nobody_behind_a_privileged_port() {
    if !is_root() {
        return;
    }
    let nobody = User::from_name("nobody").unwrap().expect("user nobody");
    let port = low_ports(3);
    let args = start_args(
        &fixture("privileges"),
        2,
        free_ports(1),
        &[
            "--user=nobody",
            &format!("--worker-port={}", port + 1),
            "--body-buffer-size=1024",
        ],
    );
    // start_args puts the balancer next to the control port: move it below 1024.
    let args: Vec<String> = args
        .into_iter()
        .map(|a| {
            if a.starts_with("--port=") {
                format!("--port={port}")
            } else {
                a
            }
        })
        .collect();
    let master = Master::start(&args);

    // The master, still root, answers on the low ports.
    assert_eq!(master.get("/"), (200, "ok".into()), "{}", master.log());
    let status = master.status().unwrap();
    let workers = status["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    let id = nobody.uid.to_string();
    let gid = nobody.gid.to_string();
    for worker in workers {
        let pid = worker["pid"].as_u64().unwrap();
        assert_eq!(proc_ids(pid, "Uid:"), [id.as_str(); 4], "worker {pid}");
        assert_eq!(proc_ids(pid, "Gid:"), [gid.as_str(); 4], "worker {pid}");
        assert!(
            proc_ids(pid, "Groups:").is_empty(),
            "worker {pid} kept groups"
        );
    }
    let master_pid = master.child.id() as u64;
    assert_eq!(
        proc_ids(master_pid, "Uid:")[1],
        "0",
        "the master stays root"
    );

    // PHP reads what nobody may read, and not a root-only file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (open, secret) = (dir.path().join("open"), dir.path().join("secret"));
    std::fs::write(&open, "anyone").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&secret, "root only").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        master.get(&format!("/read?path={}", path_str(&open))),
        (200, "anyone".into())
    );
    assert_eq!(
        master.get(&format!("/read?path={}", path_str(&secret))),
        (403, "unreadable".into())
    );

    // A body spooled to disk by the master (past --body-buffer-size)
    // reaches PHP whole, as an upload the worker can read.
    let upload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let form = reqwest::blocking::multipart::Form::new().part(
        "file",
        reqwest::blocking::multipart::Part::bytes(upload.clone()).file_name("big.bin"),
    );
    let answer = http()
        .post(format!("http://127.0.0.1:{port}/upload"))
        .multipart(form)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let digest = sha1_smol::Sha1::from(&upload).digest().to_string();
    assert_eq!(answer, format!("200000 {digest}"));

    assert_eq!(status["runtime"], "native");
    // A native worker's only channel is a socket pair inherited as its
    // descriptor 3: it has no name, so no one else can connect to it.
    for worker in workers {
        assert!(worker.get("socket").is_none(), "{worker}");
        let pid = worker["pid"].as_u64().unwrap();
        let link = std::fs::read_link(format!("/proc/{pid}/fd/3")).unwrap();
        let link = link.to_string_lossy().to_string();
        let inode = link
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'))
            .unwrap_or_else(|| panic!("worker {pid}'s fd 3 is {link}"));
        let table = std::fs::read_to_string("/proc/net/unix").unwrap();
        // Num RefCount Protocol Flags Type St Inode [Path]
        let entry = table
            .lines()
            .find(|line| line.split_whitespace().nth(6) == Some(inode))
            .unwrap_or_else(|| panic!("socket {inode} of worker {pid}"));
        assert_eq!(
            entry.split_whitespace().count(),
            7,
            "worker {pid}'s frame socket has a name: {entry}"
        );
        // The run directory (the worker script the worker runs is in its
        // runtime/) is the workers' user's alone.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let entry = args
            .iter()
            .skip_while(|a| *a != "--entry")
            .nth(1)
            .unwrap_or_else(|| panic!("worker {pid} has no --entry: {args:?}"));
        let run_dir = Path::new(entry).parent().and_then(Path::parent).unwrap();
        let meta = std::fs::metadata(run_dir).unwrap();
        assert_eq!(meta.uid(), nobody.uid.as_raw());
        assert_eq!(meta.mode() & 0o777, 0o700, "{}", run_dir.display());
    }
}

#[test]
fn check_refuses_user_without_root_and_names_an_unknown_user() {
    if !is_root() {
        return;
    }
    let app = fixture("privileges");
    let base = free_ports(4);
    let args = start_args(&app, 1, base, &["--check", "--user=nobody"]);
    // As nobody, with the user from ppm.json: a clear error, before any
    // worker starts.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("ppm.json");
    std::fs::write(
        &config,
        r#"{"user": "nobody", "env": ["A=1"], "clear-env": true}"#,
    )
    .unwrap();
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", PPM])
        .args(start_args(
            &app,
            1,
            base,
            &["--check", "-c", path_str(&config)],
        ))
        .output()
        .expect("setpriv runs");
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("--user") && err.contains("root"), "{err}");

    // As root: the check boots a worker as nobody.
    let (code, out, err) = run_ppm(&args, Duration::from_secs(60));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("configuration OK"), "{out}");

    for (option, name) in [("--user", "no-such-user-x"), ("--group", "no-such-group-x")] {
        let mut extra = vec!["--check".to_string(), format!("{option}={name}")];
        if option == "--group" {
            extra.push("--user=nobody".into());
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let (code, _, err) = run_ppm(&start_args(&app, 1, base, &extra), Duration::from_secs(30));
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(option) && err.contains(name), "{err}");
    }
}

/// The environment a worker of `cluster` sees: `getenv()` and `$_SERVER`.
fn worker_env(cluster: &Cluster) -> (BTreeMap<String, String>, Json) {
    let dump: Json = http().get(cluster.url("/")).send().unwrap().json().unwrap();
    let getenv = dump["getenv"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    (getenv, dump["server"].clone())
}

#[test]
fn env_settings_reach_php_and_clear_env_drops_the_masters() {
    let master_env = |cmd: &mut Command| {
        cmd.env("FROM_MASTER", "master-value");
    };
    let kept = Cluster::start_with(
        Setup::callable("environ", 1)
            .arg("--env=POOL_SETTING=a=b")
            .arg("--env=COPIED=$FROM_MASTER"),
        master_env,
    );
    let (env, server) = worker_env(&kept);
    assert_eq!(env.get("POOL_SETTING").map(String::as_str), Some("a=b"));
    assert_eq!(env.get("COPIED").map(String::as_str), Some("master-value"));
    assert_eq!(
        env.get("FROM_MASTER").map(String::as_str),
        Some("master-value")
    );
    assert_eq!(server["POOL_SETTING"], "a=b");
    drop(kept);

    let cleared = Cluster::start_with(
        Setup::callable("environ", 1)
            .arg("--clear-env")
            .arg("--env=POOL_SETTING=1")
            .arg("--env=COPIED=$FROM_MASTER"),
        master_env,
    );
    let (env, server) = worker_env(&cleared);
    assert_eq!(env.get("POOL_SETTING").map(String::as_str), Some("1"));
    assert_eq!(env.get("COPIED").map(String::as_str), Some("master-value"));
    assert_eq!(server["POOL_SETTING"], "1");
    assert!(env.contains_key("PATH"), "{env:?}");
    for name in ["FROM_MASTER", "HOME", "PPM_LOG"] {
        assert!(
            !env.contains_key(name),
            "{name} survived --clear-env: {env:?}"
        );
        assert!(server.get(name).is_none(), "{name} in $_SERVER: {server}");
    }
}
