//! PHP-PM 2.x compatibility: its `ppm.json` keys and values, and its
//! command-line spellings, mean what they meant there.
//!
//! - `debug`/`logging` as `0`/`1` (the bool options use clap's boolish
//!   parser, so `--debug=0` works too);
//! - `memory-limit: -1`, `ttl: null` or below 1, `static-directory: ""`,
//!   mean "off" / "not set";
//! - `bridge: "HttpKernel"` or a PHP-PM bridge class name, `bootstrap:
//!   "PHPPM\\Bootstraps\\Symfony"`, `host: "localhost"` or
//!   `"tcp://0.0.0.0"`;
//! - keys only PHP-PM has are accepted with one warning each saying what
//!   ppm does instead; `reload-timeout` becomes `shutdown-timeout`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// What to do with a key of `ppm.json` that only PHP-PM knows.
#[derive(Debug, Clone, PartialEq)]
pub enum Legacy {
    /// Ignore it, with this warning.
    Ignore(String),
    /// Use its value for this ppm key, with this warning.
    Rename(&'static str, String),
}

/// The PHP-PM-only key `key`, if it is one.
pub fn legacy_key(key: &str) -> Option<Legacy> {
    let ignore = |what: &str| {
        Some(Legacy::Ignore(format!(
            "\"{key}\" is a PHP-PM setting; ppm ignores it: {what}"
        )))
    };
    match key {
        "socket-path" => ignore(
            "each worker talks to the master over a socket pair of its own",
        ),
        "populate-server-var" => {
            ignore("$_SERVER is always filled from the request, as under PHP-FPM")
        }
        "decorate-workers-output" => {
            ignore("worker output goes to the master's log")
        }
        "limit-concurrent-requests" => {
            ignore("a worker takes one request at a time; see --max-queue for waiting requests")
        }
        "request-body-buffer" => ignore(
            "the master reads whole bodies (memory up to --body-buffer-size, then a temporary file) \
             up to --max-body-size, and answers 413 past it",
        ),
        "cgi-path" => ignore(
            "ppm hosts PHP itself, the PHP it was built against (README, \"Building against \
             another PHP\")",
        ),
        "reload-timeout" => Some(Legacy::Rename(
            "shutdown-timeout",
            "\"reload-timeout\" is PHP-PM's name; ppm uses its value as \"shutdown-timeout\" \
             (the time in-flight requests get on stop; restarts are surge-first and wait for them)"
                .into(),
        )),
        _ => None,
    }
}

/// A file value that means "not set" in PHP-PM's files: `null`, and the
/// `""`/`false` PHP-PM writes for options that are off.
pub fn means_unset(key: &str, value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Null => true,
        Value::String(s) if s.is_empty() => {
            matches!(key, "static-directory" | "pidfile" | "access-log")
        }
        Value::Bool(false) => key == "static-directory",
        _ => false,
    }
}

/// `--host`: an address, `localhost`, or PHP-PM's `tcp://ADDRESS`.
pub fn parse_host(text: &str) -> Result<IpAddr, String> {
    let bare = text.strip_prefix("tcp://").unwrap_or(text);
    let bare = bare
        .strip_prefix('[')
        .and_then(|b| b.strip_suffix(']'))
        .unwrap_or(bare);
    match bare {
        "localhost" => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        "ip6-localhost" => Ok(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        _ => bare
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address (or localhost, or tcp://ADDRESS)")),
    }
}

/// A path that may be given empty (PHP-PM's "off"); see `normalize`.
pub fn parse_path(text: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(text))
}

/// ppm's name for a PHP-PM bridge name or class.
pub fn bridge_name(bridge: &str) -> Option<&'static str> {
    match short_class(bridge, "PHPPM\\Bridges\\").as_str() {
        "httpkernel" => Some("httpKernel"),
        "staticbridge" | "static" => Some("static"),
        "psr15middleware" | "psr15" => Some("psr15"),
        "invokablemiddleware" | "callable" => Some("callable"),
        _ => None,
    }
}

/// ppm's name for a PHP-PM bootstrap class (`PHPPM\Bootstraps\Symfony`).
pub fn bootstrap_name(bootstrap: &str) -> Option<&'static str> {
    match short_class(bootstrap, "PHPPM\\Bootstraps\\").as_str() {
        "symfony" => Some("symfony"),
        "laravel" => Some("laravel"),
        _ => None,
    }
}

/// A class name without a leading `\` and PHP-PM's namespace `prefix`,
/// lower-cased (PHP class names ignore case).
fn short_class(name: &str, prefix: &str) -> String {
    let name = name.trim_start_matches('\\');
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// Maps PHP-PM's names to ppm's and resolves what is relative to the
/// application directory, after parsing and before validation.
pub fn normalize(options: &mut super::StartOptions) {
    if let Some(name) = bridge_name(&options.app.bridge) {
        options.app.bridge = name.to_string();
    }
    if let Some(name) = bootstrap_name(&options.app.bootstrap) {
        options.app.bootstrap = name.to_string();
    }
    for path in [
        &mut options.static_directory,
        &mut options.pidfile,
        &mut options.access_log,
    ] {
        if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            *path = None;
        }
    }
    // Like every other path of the application (PHP-PM's `.ppm/ppm.pid`
    // means the one inside the application), not the caller's directory.
    if let Some(pidfile) = &mut options.pidfile {
        if pidfile.is_relative() {
            *pidfile = options.app.dir.join(&*pidfile);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn php_pm_spellings_are_understood() {
        assert_eq!(
            parse_host("tcp://0.0.0.0"),
            Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        );
        assert_eq!(parse_host("localhost"), Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(parse_host("[::1]"), Ok(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert!(parse_host("example.org")
            .unwrap_err()
            .contains("example.org"));
        assert_eq!(bridge_name("HttpKernel"), Some("httpKernel"));
        assert_eq!(bridge_name("PHPPM\\Bridges\\StaticBridge"), Some("static"));
        assert_eq!(bridge_name("InvokableMiddleware"), Some("callable"));
        assert_eq!(bridge_name("Psr15Middleware"), Some("psr15"));
        assert_eq!(bridge_name("App\\Bridge"), None);
        assert_eq!(
            bootstrap_name("PHPPM\\Bootstraps\\Symfony"),
            Some("symfony")
        );
        assert_eq!(
            bootstrap_name("\\PHPPM\\Bootstraps\\Laravel"),
            Some("laravel")
        );
        assert_eq!(bootstrap_name("app.php"), None);
        assert!(matches!(
            legacy_key("reload-timeout"),
            Some(Legacy::Rename("shutdown-timeout", _))
        ));
        assert!(means_unset("ttl", &serde_json::Value::Null));
        assert!(means_unset("static-directory", &serde_json::json!("")));
        assert!(!means_unset("bridge", &serde_json::json!("")));
    }
}
