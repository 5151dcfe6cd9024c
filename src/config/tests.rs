use std::ffi::OsString;
use std::time::Duration;

use super::file::{closest, edit_distance};
use super::*;

fn args(list: &[&str]) -> Vec<OsString> {
    list.iter().map(OsString::from).collect()
}

fn app_with(json: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(CONFIG_FILE), json).unwrap();
    dir
}

#[test]
fn command_line_beats_file_beats_default() {
    let dir =
        app_with(r#"{"workers": 3, "max-queue": 7, "debug": true, "php-ini": ["a=1", "b=2"]}"#);
    let d = dir.path().to_str().unwrap();
    let (o, file) = start_options(&args(&[d, "--workers=5"])).unwrap();
    assert!(file.is_some());
    assert_eq!(o.workers, 5, "command line wins");
    assert_eq!(o.max_queue, 7, "file beats default");
    assert!(o.app.debug);
    assert_eq!(o.app.php_ini, ["a=1", "b=2"]);
    assert_eq!(o.port, 5501, "default");
}

#[test]
fn an_unknown_key_is_named_with_a_suggestion() {
    let dir = app_with(r#"{"worker": 3}"#);
    let err = start_options(&args(&[dir.path().to_str().unwrap()]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("ppm.json"), "{err}");
    assert!(
        err.contains("unknown key \"worker\"") && err.contains("did you mean \"workers\""),
        "{err}"
    );
}

#[test]
fn the_removed_runtime_key_says_why() {
    let dir = app_with(r#"{"runtime": "cgi"}"#);
    let err = start_options(&args(&[dir.path().to_str().unwrap()]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"runtime\"") && err.contains("php-cgi runtime was removed"),
        "{err}"
    );
}

#[test]
fn a_wrong_type_names_file_and_key() {
    let dir = app_with(r#"{"workers": "many"}"#);
    let err = start_options(&args(&[dir.path().to_str().unwrap()]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ppm.json") && err.contains("--workers") && err.contains("many"),
        "{err}"
    );
    let dir = app_with(r#"{"static-dotfiles": "yes", "debug": "maybe"}"#);
    let err = start_options(&args(&[dir.path().to_str().unwrap()]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("key \"static-dotfiles\": expected true or false")
            && err.contains("key \"debug\"")
            && err.contains("maybe"),
        "{err}"
    );
    let dir = app_with(r#"[1, 2]"#);
    let err = start_options(&args(&[dir.path().to_str().unwrap()]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("must be a JSON object"), "{err}");
    let dir = app_with(r#"{"workers": 3,"#);
    let err = start_options(&args(&[dir.path().to_str().unwrap()]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not valid JSON"), "{err}");
}

#[test]
fn an_out_of_range_value_names_file_and_key() {
    let dir = app_with(r#"{"workers": 0}"#);
    let err = start_options(&args(&[dir.path().to_str().unwrap()]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ppm.json")
            && err.contains("key \"workers\"")
            && err.contains("between 1 and 512"),
        "{err}"
    );
}

#[test]
fn a_bad_value_from_the_command_line_is_not_blamed_on_the_file() {
    let dir = app_with(r#"{"workers": 4}"#);
    let err = start_options(&args(&[dir.path().to_str().unwrap(), "--workers=0"]))
        .unwrap_err()
        .to_string();
    assert!(!err.contains("ppm.json"), "{err}");
    assert!(err.contains("--workers"), "{err}");
}

#[test]
fn an_explicit_config_file_is_used_instead_of_the_app_one() {
    let app = app_with(r#"{"workers": 3}"#);
    let other = app_with(r#"{"workers": 4}"#);
    let file = other.path().join(CONFIG_FILE);
    let (o, _) = start_options(&args(&[
        app.path().to_str().unwrap(),
        "-c",
        file.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(o.workers, 4);
    let err = start_options(&args(&["-c", "/nonexistent/ppm.json"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/ppm.json") && err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn config_merges_into_the_file_and_keeps_every_other_key() {
    let dir = app_with(
        r#"{"bridge": "HttpKernel", "workers": 8, "reload-timeout": 30, "ttl": null, "max-queue": 7}"#,
    );
    let d = dir.path().to_str().unwrap();
    let path = dir.path().join(CONFIG_FILE);
    let before = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        merge(&args(&[d])).unwrap(),
        Outcome::Unchanged(path.clone(), Some(before.clone())),
        "no options: file untouched, shown"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    let outcome = merge(&args(&[d, "--workers=4", "--no-logging", "--php-ini=x=1"])).unwrap();
    assert!(
        matches!(outcome, Outcome::Written(_, ref keys, None) if keys.len() == 3),
        "{outcome:?}"
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        written,
        serde_json::json!({"bridge": "HttpKernel", "workers": 4, "reload-timeout": 30,
                "ttl": null, "max-queue": 7, "logging": false, "php-ini": ["x=1"]})
    );
    let (o, _) = start_options(&args(&[d])).unwrap();
    assert_eq!((o.workers, o.max_queue, o.logging()), (4, 7, false));
    let fresh = tempfile::tempdir().unwrap();
    let f = fresh.path().to_str().unwrap();
    assert_eq!(
        merge(&args(&[f])).unwrap(),
        Outcome::Unchanged(fresh.path().join(CONFIG_FILE), None)
    );
    merge(&args(&[f, "--debug"])).unwrap();
    let created = std::fs::read_to_string(fresh.path().join(CONFIG_FILE)).unwrap();
    assert_eq!(created.trim(), "{\n  \"debug\": true\n}");
    let err = merge(&args(&[f, "--workers=many"]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("many"), "{err}");
    assert_eq!(
        std::fs::read_to_string(fresh.path().join(CONFIG_FILE)).unwrap(),
        created,
        "a value that cannot be read is not written"
    );
    let outcome = merge(&args(&[f, "--bridge=callable"])).unwrap();
    assert!(
        matches!(outcome, Outcome::Written(_, _, Some(ref why)) if why.contains("--bootstrap=FILE")),
        "written, with what start would refuse: {outcome:?}"
    );
}

#[test]
fn show_option_prints_any_effective_value_in_command_line_form() {
    let dir =
        app_with(r#"{"workers": 3, "static-directory": "public", "php-ini": ["a=1", "b=2"]}"#);
    let d = dir.path().to_str().unwrap();
    let show = |name: &str| show_option(&args(&[d]), name).unwrap();
    assert_eq!(show("workers"), "3");
    assert_eq!(show("--static-directory"), "public");
    assert_eq!(show("max-queue"), "1024", "a default");
    assert_eq!(show("pidfile"), "", "unset");
    assert_eq!(show("logging"), "true");
    assert_eq!(show("php-ini"), "a=1\nb=2");
    assert_eq!(
        show_option(&args(&[d, "--workers=5"]), "workers").unwrap(),
        "5"
    );
    let err = show_option(&args(&[d]), "worker").unwrap_err().to_string();
    assert!(err.contains("did you mean \"workers\""), "{err}");
}

#[test]
fn logging_is_on_by_default_and_turned_off_by_flag_value_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let logging = |extra: &[&str]| {
        let mut list = vec![d];
        list.extend_from_slice(extra);
        start_options(&args(&list)).unwrap().0.logging()
    };
    assert!(logging(&[]));
    assert!(!logging(&["--no-logging"]));
    assert!(!logging(&["--logging=false"]));
    assert!(logging(&["--logging"]));
    assert!(logging(&["--no-logging", "--logging"]), "the last one wins");
    let dir = app_with(r#"{"logging": false, "log-format": "json"}"#);
    let d = dir.path().to_str().unwrap();
    let (o, _) = start_options(&args(&[d])).unwrap();
    assert!(!o.logging());
    assert_eq!(o.log_format, LogFormat::Json);
    let (o, _) = start_options(&args(&[d, "--logging"])).unwrap();
    assert!(o.logging(), "command line beats file");
}

#[test]
fn front_door_options_are_checked() {
    let err = |list: &[&str]| start_options(&args(list)).unwrap_err().to_string();
    assert!(err(&["--tls-cert=a.pem"]).contains("--tls-key"));
    assert!(err(&["--max-headers=0"]).contains("--max-headers"));
    assert!(err(&["--header-timeout=0"]).contains("--header-timeout"));
    assert!(err(&["--log-format=xml"]).contains("xml"));
    assert!(err(&["--spool-directory=/nonexistent"]).contains("spool-directory"));
}

#[test]
fn edit_distance_counts_single_edits() {
    assert_eq!(edit_distance("worker", "workers"), 1);
    assert_eq!(edit_distance("wrokers", "workers"), 2);
    assert_eq!(
        closest("max-qeue", &["max-queue", "workers"]),
        Some("max-queue")
    );
    assert_eq!(closest("zzz", &["max-queue", "workers"]), None);
}

/// The `ppm.json` PHP-PM 2.x's `ppm config` writes for a Symfony app.
pub(crate) const PHP_PM_JSON: &str = r#"{
    "bridge": "HttpKernel",
    "host": "127.0.0.1",
    "port": 8080,
    "workers": 8,
    "app-env": "dev",
    "debug": 1,
    "logging": 1,
    "static-directory": "",
    "bootstrap": "PHPPM\\Bootstraps\\Symfony",
    "max-requests": 1000,
    "populate-server-var": true,
    "socket-path": ".ppm\/run\/",
    "pidfile": ".ppm\/ppm.pid",
    "reload-timeout": 30,
    "cgi-path": "\/usr\/bin\/php-cgi8.2",
    "max-execution-time": 30,
    "memory-limit": -1,
    "ttl": null,
    "limit-concurrent-requests": null,
    "request-body-buffer": null,
    "decorate-workers-output": 1
}"#;

#[test]
fn php_pms_own_file_is_understood() {
    let dir = app_with(PHP_PM_JSON);
    let d = dir.path().to_str().unwrap();
    let file = ConfigFile::find(None, dir.path()).unwrap().unwrap();
    let warnings = file.warnings();
    assert_eq!(warnings.len(), 7, "{warnings:?}");
    assert!(warnings
        .iter()
        .any(|w| w.contains("cgi-path") && w.contains("built against")));
    assert!(warnings
        .iter()
        .any(|w| w.contains("reload-timeout") && w.contains("shutdown-timeout")));
    let (o, _) = start_options(&args(&[d, "--workers=2"])).unwrap();
    assert_eq!(o.app.bridge, "httpKernel");
    assert_eq!(o.app.bootstrap, "symfony");
    assert!(o.app.debug && o.logging());
    assert_eq!(
        (o.port, o.workers, o.memory_limit, o.ttl),
        (8080, 2, None, None)
    );
    assert_eq!(o.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(o.static_directory, None);
    assert_eq!(o.pidfile, Some(dir.path().join(".ppm/ppm.pid")));
    let (o, _) = start_options(&args(&[
        d,
        "--debug=0",
        "--logging=0",
        "--host=tcp://0.0.0.0",
        "--memory-limit=-1",
        "--control-host=localhost",
    ]))
    .unwrap();
    assert!(!o.app.debug && !o.logging());
    assert!(o.host.is_unspecified() && o.control_host.is_loopback());
}

#[test]
fn every_configuration_error_is_reported_in_one_pass() {
    let dir = app_with(
        r#"{"worker": 3, "max-queue": "lots", "static-dotfiles": "yes", "max-surge": 0, "port": 5500}"#,
    );
    let err = start_options(&args(&[dir.path().to_str().unwrap()]))
        .unwrap_err()
        .to_string();
    for key in ["\"worker\"", "\"max-queue\"", "\"static-dotfiles\""] {
        assert!(err.contains(key), "{key} missing from {err}");
    }
    let dir =
        app_with(r#"{"worker": 3, "max-surge": 0, "recycle-jitter": 99, "health-path": "x"}"#);
    let err = start_options(&args(&[dir.path().to_str().unwrap()]))
        .unwrap_err()
        .to_string();
    for key in [
        "\"worker\"",
        "\"max-surge\"",
        "\"recycle-jitter\"",
        "\"health-path\"",
    ] {
        assert!(err.contains(key), "{key} missing from {err}");
    }
}

#[test]
fn bridges_and_bootstraps_that_cannot_work_are_explained() {
    let err = |list: &[&str]| start_options(&args(list)).unwrap_err().to_string();
    let e = err(&["--bridge=callable"]);
    assert!(
        e.contains("--bootstrap=FILE") && e.contains("callable"),
        "{e}"
    );
    let e = err(&["--bridge=symfony"]);
    assert!(
        e.contains("did you mean `--bridge=httpKernel --bootstrap=symfony`"),
        "{e}"
    );
    let e = err(&["--bridge=Laravel"]);
    assert!(e.contains("--bootstrap=laravel"), "{e}");
}

#[test]
fn overlapping_ports_name_both_options() {
    let err = |list: &[&str]| start_options(&args(list)).unwrap_err().to_string();
    let e = err(&["--port=5500"]);
    assert!(
        e.contains("--control-port 5500") && e.contains("--port 5500"),
        "{e}"
    );
    let e = err(&["--port=6000", "--workers=4", "--control-port=6003"]);
    assert!(
        e.contains("--control-port 6003") && e.contains("slot ports 6001-6004"),
        "{e}"
    );
    let e = err(&["--port=6000", "--worker-port=5999", "--workers=2"]);
    assert!(
        e.contains("--port 6000") && e.contains("slot ports 5999-6000"),
        "{e}"
    );
    assert!(start_options(&args(&[
        "--port=6000",
        "--control-port=6000",
        "--control-host=127.0.0.2"
    ]))
    .is_ok());
}

#[test]
fn durations_sizes_and_proxies_reach_the_rest_of_ppm_typed() {
    let dir = app_with(
        r#"{"ttl": -1, "drain-delay": 2.5, "memory-limit": 64, "trusted-proxies": "10.0.0.0/8, ::1"}"#,
    );
    let d = dir.path().to_str().unwrap();
    let (o, _) = start_options(&args(&[d, "--max-execution-time=0"])).unwrap();
    assert_eq!(o.ttl, None, "PHP-PM's -1 is off");
    assert_eq!(o.drain_delay, Some(Duration::from_millis(2500)));
    assert_eq!(o.max_execution_time, None, "0 is off");
    assert_eq!(o.limits().memory_limit, Some(64 * 1024 * 1024));
    assert!(o.trusted_proxies().contains("10.1.2.3".parse().unwrap()));
    assert!(!o.trusted_proxies().contains("192.168.0.1".parse().unwrap()));
    assert_eq!(o.queue_timeout, Duration::from_secs(30), "a default");
    let shown = |name| show_option(&args(&[d]), name).unwrap();
    assert_eq!(shown("drain-delay"), "2.5", "shown as given");
    assert_eq!(shown("ttl"), "0.0");
    assert_eq!(shown("trusted-proxies"), "10.0.0.0/8, ::1");

    let bad = app_with(
        r#"{"drain-delay": -1, "idle-timeout": 0, "ttl": 1e9, "trusted-proxies": "nope"}"#,
    );
    let err = start_options(&args(&[bad.path().to_str().unwrap()]))
        .unwrap_err()
        .to_string();
    for (key, why) in [
        ("drain-delay", "0 to turn it off"),
        ("idle-timeout", "above 0"),
        ("ttl", "0 to turn it off"),
        ("trusted-proxies", "\"nope\" is not an IP address or CIDR"),
    ] {
        assert!(
            err.contains(&format!("key \"{key}\"")) && err.contains(why),
            "{key}: {err}"
        );
    }
}
