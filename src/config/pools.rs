//! Several pools in one master: `ppm.json`'s `"pools": {"NAME": {…}}`.
//!
//! Each pool's options are made the way a single pool's are, from one
//! file: the top level's keys (without `pools`) overlaid with the pool's
//! own, then the command line over both, so a top-level value is every
//! pool's default and a command-line option applies to every pool. The
//! keys of the master itself (control plane, pid file, stop timing, the
//! connection limits and the access log) are global: only the top level
//! may set them, so every pool carries the same values. `app-dir`, the
//! pool's application directory, is relative to the file's directory.
//!
//! Every problem of every pool is collected in one pass, each prefixed
//! with its pool's name, as `validate` does for one pool.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::file::{checked, merged, ConfigFile};
use super::StartOptions;
use crate::Error;

/// The key of the pools in `ppm.json`.
pub(super) const POOLS_KEY: &str = "pools";
/// A pool's application directory, in its object.
const APP_DIR_KEY: &str = "app-dir";
/// Keys of the master, not of a pool: only the top level may set them.
pub const GLOBAL_KEYS: [&str; 15] = [
    "control-host",
    "control-port",
    "control-token",
    "control-token-file",
    "control-public-read",
    "pidfile",
    "shutdown-timeout",
    "drain-delay",
    "max-connections",
    "max-connections-per-ip",
    "trusted-proxies",
    "logging",
    "no-logging",
    "access-log",
    "log-format",
];

/// One pool's options.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Its name in `pools`; None for the single pool of a command line or
    /// of a file without `pools`.
    pub name: Option<String>,
    pub options: StartOptions,
}

/// `ppm start`'s pools: one per entry of the file's `pools`, else the
/// single pool of `start_options`.
pub fn start_pools(args: &[OsString]) -> Result<(Vec<PoolOptions>, Option<ConfigFile>), Error> {
    let (_, first) = super::file::parse(args)?;
    let file = ConfigFile::find(first.config.as_deref(), &first.app.dir)?;
    let Some(pools) = file.as_ref().and_then(|f| f.values.get(POOLS_KEY).cloned()) else {
        let (options, file) = super::file::options_with(args, file)?;
        return Ok((
            vec![PoolOptions {
                name: None,
                options,
            }],
            file,
        ));
    };
    let file = file.expect("pools come from a file");
    for warning in file.warnings() {
        tracing::warn!("{}: {warning}", file.path.display());
    }
    let serde_json::Value::Object(pools) = pools else {
        return Err(file.error(format!(
            "\"{POOLS_KEY}\" must be an object of pool names and their options"
        )));
    };
    if pools.is_empty() {
        return Err(file.error(format!("\"{POOLS_KEY}\" names no pool")));
    }
    let mut errors = Vec::new();
    let mut result = Vec::new();
    for (name, values) in &pools {
        match pool_options(&file, name, values, args) {
            Ok(options) => result.push(PoolOptions {
                name: Some(name.clone()),
                options,
            }),
            Err(list) => errors.extend(list.into_iter().map(|e| in_pool(name, e))),
        }
    }
    overlaps(&result, &mut errors);
    Error::from_list(errors).map(|()| (result, Some(file)))
}

fn in_pool(name: &str, error: Error) -> Error {
    Error::Pool {
        pool: name.to_string(),
        source: Box::new(error),
    }
}

/// Whether `name` can name a pool: it shows in labels, URLs and paths.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
}

/// One pool's options, or every problem they have.
fn pool_options(
    file: &ConfigFile,
    name: &str,
    values: &serde_json::Value,
    args: &[OsString],
) -> Result<StartOptions, Vec<Error>> {
    let mut errors = Vec::new();
    if !valid_name(name) {
        errors.push(file.error(
            "a pool name is 1 to 64 letters, digits, '-', '_' or '.' (not first)".to_string(),
        ));
    }
    let serde_json::Value::Object(own) = values else {
        errors.push(file.error("must be an object of option names and values".into()));
        return Err(errors);
    };
    let mut values = file.values.clone();
    values.remove(POOLS_KEY);
    let mut app_dir = None;
    for (key, value) in own {
        if key == APP_DIR_KEY {
            match value.as_str() {
                Some(dir) => app_dir = Some(resolve(&file.path, dir)),
                None => errors.push(file.error(format!(
                    "key \"{APP_DIR_KEY}\": expected a directory name, found {value}"
                ))),
            }
        } else if GLOBAL_KEYS.contains(&key.as_str()) {
            errors.push(file.error(format!(
                "key \"{key}\" is the master's, not a pool's: set it at the top level"
            )));
        } else {
            values.insert(key.clone(), value.clone());
        }
    }
    let pool_file = ConfigFile {
        path: file.path.clone(),
        values,
    };
    let (mut options, matches, keys, file_errors) = match merged(args, Some(&pool_file)) {
        Ok(merged) => merged,
        Err(err) => {
            errors.extend(err.into_list());
            return Err(errors);
        }
    };
    if let Some(dir) = app_dir {
        if !dir.is_dir() {
            errors.push(file.error(format!(
                "key \"{APP_DIR_KEY}\": {} is not a directory",
                dir.display()
            )));
        }
        options.app.dir = dir;
    }
    errors.extend(checked(
        &options,
        &matches,
        &keys,
        Some(&pool_file),
        file_errors,
    ));
    if errors.is_empty() {
        Ok(options)
    } else {
        Err(errors)
    }
}

/// `dir` relative to the directory of the file at `file`.
fn resolve(file: &Path, dir: &str) -> PathBuf {
    let dir = Path::new(dir);
    if dir.is_absolute() {
        return dir.to_path_buf();
    }
    file.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(dir)
}

/// Adds an error for each pair of pools whose ports overlap on a shared
/// address (each pool checked its own ports and the control port).
fn overlaps(pools: &[PoolOptions], errors: &mut Vec<Error>) {
    let ranges: Vec<(&str, IpAddr, u32, u32)> = pools
        .iter()
        .flat_map(|p| {
            let o = &p.options;
            let name = p.name.as_deref().unwrap_or_default();
            let first = u32::from(o.first_worker_port());
            [
                (name, o.host, u32::from(o.port), u32::from(o.port)),
                (name, o.host, first, first + (o.workers as u32).max(1) - 1),
            ]
        })
        .collect();
    let mut reported = Vec::new();
    for (i, a) in ranges.iter().enumerate() {
        for b in &ranges[i + 1..] {
            let shared = a.1 == b.1 || a.1.is_unspecified() || b.1.is_unspecified();
            if a.0 != b.0 && shared && a.2 <= b.3 && b.2 <= a.3 && !reported.contains(&(a.0, b.0)) {
                reported.push((a.0, b.0));
                errors.push(in_pool(
                    b.0,
                    Error::InvalidOption {
                        option: "port",
                        message: format!(
                            "its ports ({}-{}) overlap pool \"{}\"'s ({}-{}); give each pool its own --port and --worker-port",
                            b.2, b.3, a.0, a.2, a.3
                        ),
                    },
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    /// A directory with `ppm.json` and the application directories `a`
    /// and `b`.
    fn config(json: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(super::super::CONFIG_FILE), json).unwrap();
        for app in ["a", "b"] {
            std::fs::create_dir(dir.path().join(app)).unwrap();
        }
        dir
    }

    #[test]
    fn each_pool_has_its_own_options_over_the_top_levels() {
        let dir = config(
            r#"{"control-port": 7000, "max-requests": 50, "bridge": "callable", "bootstrap": "app.php",
                "pools": {
                  "web": {"app-dir": "a", "port": 7100, "workers": 2, "pm": "ondemand"},
                  "api": {"app-dir": "b", "port": 7200, "workers": 3, "max-requests": 9}
                }}"#,
        );
        let d = dir.path().to_str().unwrap();
        let (pools, file) = start_pools(&args(&[d, "--max-queue=5"])).unwrap();
        assert!(file.is_some());
        let names: Vec<_> = pools.iter().map(|p| p.name.as_deref().unwrap()).collect();
        assert_eq!(names, ["web", "api"], "in the file's order");
        let (web, api) = (&pools[0].options, &pools[1].options);
        assert_eq!(web.app.dir, dir.path().join("a"));
        assert_eq!(api.app.dir, dir.path().join("b"));
        assert_eq!((web.workers, api.workers), (2, 3));
        assert_eq!(web.pm, super::super::PmMode::Ondemand);
        assert_eq!(
            (web.max_requests, api.max_requests),
            (50, 9),
            "the pool's own beats the top level"
        );
        assert_eq!((web.control_port, api.control_port), (7000, 7000), "global");
        assert_eq!(
            (web.max_queue, api.max_queue),
            (5, 5),
            "the command line applies to every pool"
        );
        assert_eq!(web.app.bridge, "callable");
    }

    #[test]
    fn a_file_without_pools_is_the_single_pool() {
        let dir = config(r#"{"workers": 3}"#);
        let (pools, _) = start_pools(&args(&[dir.path().to_str().unwrap()])).unwrap();
        assert_eq!(pools.len(), 1);
        assert!(pools[0].name.is_none());
        assert_eq!(pools[0].options.workers, 3);
    }

    #[test]
    fn every_problem_of_every_pool_is_named_in_one_pass() {
        let dir = config(
            r#"{"pools": {
                  "a": {"app-dir": "a", "port": 7100, "workers": 0},
                  "b": {"app-dir": "missing", "port": 7100, "control-port": 1, "wokers": 2},
                  "bad name": {"app-dir": "b", "port": 7300}
                }}"#,
        );
        let err = start_pools(&args(&[dir.path().to_str().unwrap()])).unwrap_err();
        let list: Vec<String> = err.into_list().iter().map(ToString::to_string).collect();
        let has = |pool: &str, text: &str| {
            list.iter()
                .any(|e| e.starts_with(&format!("pool \"{pool}\": ")) && e.contains(text))
        };
        assert!(
            has("a", "key \"workers\": must be between 1 and 512"),
            "{list:#?}"
        );
        assert!(has("a", "--max-surge"), "{list:#?}");
        assert!(has("b", "\"control-port\" is the master's"), "{list:#?}");
        assert!(
            has("b", "unknown key \"wokers\"; did you mean \"workers\"?"),
            "{list:#?}"
        );
        assert!(has("b", "missing is not a directory"), "{list:#?}");
        assert!(has("bad name", "a pool name is"), "{list:#?}");
        assert_eq!(list.len(), 6, "{list:#?}");
    }

    #[test]
    fn pools_on_the_same_ports_are_refused() {
        let dir = config(
            r#"{"pools": {
                  "a": {"app-dir": "a", "port": 7100, "workers": 4},
                  "b": {"app-dir": "b", "port": 7103, "workers": 2}
                }}"#,
        );
        let err = start_pools(&args(&[dir.path().to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pool \"b\": invalid option --port: its ports (7103-7103) overlap pool \"a\"'s (7101-7104)"), "{err}");
        let bad = config(r#"{"pools": []}"#);
        let err = start_pools(&args(&[bad.path().to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be an object of pool names"), "{err}");
    }
}
