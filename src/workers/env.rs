//! The environment PHP workers get: the master's (minus what `worker`
//! removes), or with `--clear-env` only `PATH` and PHP's own start-up
//! variables, plus the `--env KEY=VALUE` settings, as php-fpm's
//! `clear_env` and `env[KEY] = VALUE` do. A value `$NAME` takes the
//! master's variable NAME, as in php-fpm's pool files.

use tokio::process::Command;

/// What `--clear-env` keeps: the search path, and the variables that
/// tell PHP which php.ini files to read (ppm's workers need the same
/// configuration whatever the environment).
const KEPT: [&str; 3] = ["PATH", "PHPRC", "PHP_INI_SCAN_DIR"];
/// `PATH` when the master has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

use crate::config::env_setting as parse;

/// A setting's value: `$NAME` is the master's variable (empty when unset).
fn value(raw: &str) -> std::ffi::OsString {
    match raw.strip_prefix('$') {
        Some(name)
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            std::env::var_os(name).unwrap_or_default()
        }
        _ => raw.into(),
    }
}

/// Starts the environment of `cmd` afresh when `clear`, then adds `settings`.
pub fn apply(cmd: &mut Command, settings: &[String], clear: bool) {
    if clear {
        cmd.env_clear();
        for name in KEPT {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        if std::env::var_os("PATH").is_none() {
            cmd.env("PATH", DEFAULT_PATH);
        }
    }
    for (key, raw) in settings.iter().filter_map(|s| parse(s)) {
        cmd.env(key, value(raw));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_key_equals_value() {
        assert_eq!(parse("A=1"), Some(("A", "1")));
        assert_eq!(parse("A=b=c"), Some(("A", "b=c")));
        assert_eq!(parse("A="), Some(("A", "")));
        assert_eq!(parse("=1"), None);
        assert_eq!(parse("A"), None);
    }

    #[test]
    fn a_dollar_name_takes_the_masters_variable() {
        assert_eq!(value("$PATH"), std::env::var_os("PATH").unwrap());
        assert_eq!(value("$"), "$");
        assert_eq!(value("a$b"), "a$b");
        assert_eq!(value("$NO_SUCH_VARIABLE_HERE_X"), "");
    }
}
