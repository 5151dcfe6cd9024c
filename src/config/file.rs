//! `ppm.json` and how it is merged with the command line.
//!
//! The file is merged at the argument level: every key the command line
//! did not give becomes `--key=value`, and the result is parsed again by
//! clap, so a value from the file is checked exactly like one from the
//! command line. Command line beats file beats default. Each key is also
//! parsed alone first, so that one run names every bad key.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches};

use super::phppm::{self, Legacy};
use super::StartOptions;
use crate::Error;

/// The configuration file's name, looked up in the application directory.
pub const CONFIG_FILE: &str = "ppm.json";

/// Names that are options of `ppm start` but not keys of `ppm.json`.
pub(super) const NOT_KEYS: [&str; 3] = ["config", "dir", "check"];

/// A `ppm.json` file, read.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub values: serde_json::Map<String, serde_json::Value>,
}

/// `ppm start`'s options without an application.
pub(super) fn command(name: &'static str) -> clap::Command {
    StartOptions::augment_args(clap::Command::new(name).no_binary_name(true))
}

impl ConfigFile {
    /// Reads `explicit`, else `dir/ppm.json` if it exists.
    pub fn find(explicit: Option<&Path>, dir: &Path) -> Result<Option<ConfigFile>, Error> {
        let path = match explicit {
            Some(path) => path.to_path_buf(),
            None => {
                let candidate = dir.join(CONFIG_FILE);
                if !candidate.is_file() {
                    return Ok(None);
                }
                candidate
            }
        };
        Self::read(&path).map(Some)
    }

    /// Reads the file at `path`.
    pub fn read(path: &Path) -> Result<ConfigFile, Error> {
        let fail = |message: String| Error::Config {
            file: path.to_path_buf(),
            message,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| fail(format!("not valid JSON: {e}")))?;
        let serde_json::Value::Object(values) = value else {
            return Err(fail(
                "must be a JSON object of option names and values".into(),
            ));
        };
        Ok(ConfigFile {
            path: path.to_path_buf(),
            values,
        })
    }

    pub(super) fn error(&self, message: String) -> Error {
        Error::Config {
            file: self.path.clone(),
            message,
        }
    }

    /// One warning per PHP-PM-only key of the file.
    pub fn warnings(&self) -> Vec<String> {
        self.values
            .keys()
            .filter_map(|key| match phppm::legacy_key(key)? {
                Legacy::Ignore(text) | Legacy::Rename(_, text) => Some(text),
            })
            .collect()
    }

    /// A string setting of the file, e.g. `control-port`, as text.
    pub fn text(&self, key: &str) -> Option<String> {
        self.values.get(key).filter(|v| !v.is_null()).map(|v| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        })
    }

    /// The file's usable settings as command-line arguments, leaving out
    /// the options the command line gave (`given`), with the file key each
    /// came from, and the problems of the others.
    fn to_args(&self, given: &ArgMatches) -> (Vec<OsString>, Keys, Vec<Error>) {
        let command = command("ppm");
        let mut args = Vec::new();
        let mut keys = Keys::new();
        let mut errors = Vec::new();
        for (file_key, value) in &self.values {
            // Read by `pools`, which makes one file of each pool's keys.
            if file_key == super::pools::POOLS_KEY {
                continue;
            }
            let key = match phppm::legacy_key(file_key) {
                Some(Legacy::Ignore(_)) => continue,
                // The ppm name wins when the file has both.
                Some(Legacy::Rename(new, _)) if self.values.contains_key(new) => continue,
                Some(Legacy::Rename(new, _)) => new,
                None => file_key.as_str(),
            };
            if phppm::means_unset(key, value) {
                continue;
            }
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(key) && !NOT_KEYS.contains(&key));
            let Some(arg) = arg else {
                if key == "runtime" {
                    errors.push(self.error(
                        "key \"runtime\": the php-cgi runtime was removed, workers always host \
                         PHP in a ppm process; remove the key"
                            .into(),
                    ));
                    continue;
                }
                let known: Vec<&str> = command
                    .get_arguments()
                    .filter_map(|a| a.get_long())
                    .filter(|l| !NOT_KEYS.contains(l))
                    .collect();
                let hint = closest(key, &known)
                    .map(|k| format!("; did you mean \"{k}\"?"))
                    .unwrap_or_default();
                errors.push(self.error(format!("unknown key \"{file_key}\"{hint}")));
                continue;
            };
            if given.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
                continue;
            }
            match key_args(key, value, !arg.get_action().takes_values()) {
                Ok(these) => {
                    // Parsed alone, so that every bad value is named.
                    if let Err(e) = command.clone().try_get_matches_from(&these) {
                        errors
                            .push(self.error(format!("key \"{file_key}\": {}", clap_message(&e))));
                        continue;
                    }
                    keys.insert(key.to_string(), file_key.clone());
                    args.extend(these);
                }
                Err(message) => {
                    errors.push(self.error(format!("key \"{file_key}\": {message}")));
                }
            }
        }
        (args, keys, errors)
    }
}

/// The ppm option each file setting went to, and the file key it came
/// from (they differ for PHP-PM's renamed keys).
pub(super) type Keys = BTreeMap<String, String>;

/// The command-line arguments of one file setting.
fn key_args(key: &str, value: &serde_json::Value, flag: bool) -> Result<Vec<OsString>, String> {
    use serde_json::Value;
    let values: Vec<&Value> = match value {
        Value::Array(items) if !flag => items.iter().collect(),
        other => vec![other],
    };
    let mut args = Vec::new();
    for item in values {
        let text = match (item, flag) {
            (Value::Bool(true), true) => {
                args.push(OsString::from(format!("--{key}")));
                continue;
            }
            (Value::Bool(false), true) => continue,
            // PHP-PM writes booleans as 0 and 1.
            (Value::Number(n), true) if n.as_u64() == Some(1) => {
                args.push(OsString::from(format!("--{key}")));
                continue;
            }
            (Value::Number(n), true) if n.as_u64() == Some(0) => continue,
            (_, true) => return Err(format!("expected true or false, found {item}")),
            (Value::String(s), false) => s.clone(),
            (Value::Bool(b), false) => b.to_string(),
            (Value::Number(n), false) => n.to_string(),
            (other, false) => return Err(format!("expected a string or a number, found {other}")),
        };
        args.push(OsString::from(format!("--{key}={text}")));
    }
    Ok(args)
}

/// The option closest to a misspelt key, if any is close.
pub(super) fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| k)
}

pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// `ppm start`'s options with `ppm.json` merged in: command line beats
/// file beats default. `args` are the arguments after the subcommand.
/// Warnings about the file (PHP-PM-only keys) are logged.
pub fn start_options(args: &[OsString]) -> Result<(StartOptions, Option<ConfigFile>), Error> {
    let (_, first) = parse(args)?;
    let file = ConfigFile::find(first.config.as_deref(), &first.app.dir)?;
    options_with(args, file)
}

/// The command line alone.
pub(super) fn parse(args: &[OsString]) -> Result<(ArgMatches, StartOptions), Error> {
    let matches = command("ppm start")
        .try_get_matches_from(args)
        .map_err(|e| Error::Usage(e.render().to_string()))?;
    let options = StartOptions::from_arg_matches(&matches)
        .map_err(|e| Error::Usage(e.render().to_string()))?;
    Ok((matches, options))
}

/// `start_options` with the configuration file already read.
pub(super) fn options_with(
    args: &[OsString],
    file: Option<ConfigFile>,
) -> Result<(StartOptions, Option<ConfigFile>), Error> {
    let (options, matches, keys, errors) = merged(args, file.as_ref())?;
    if let Some(file) = &file {
        for warning in file.warnings() {
            tracing::warn!("{}: {warning}", file.path.display());
        }
    }
    let errors = checked(&options, &matches, &keys, file.as_ref(), errors);
    Error::from_list(errors).map(|()| (options, file))
}

/// `errors` with the problems `validate` finds in `options`; a problem of
/// a value that came from `file` names the file and its key.
pub(super) fn checked(
    options: &StartOptions,
    matches: &ArgMatches,
    keys: &Keys,
    file: Option<&ConfigFile>,
    mut errors: Vec<Error>,
) -> Vec<Error> {
    let problems = options
        .validate()
        .err()
        .map_or_else(Vec::new, Error::into_list);
    // Blame the file only for a value that came from it.
    let problems = problems.into_iter().map(|e| match (e, file) {
        (Error::InvalidOption { option, message }, Some(file)) => match keys.get(option) {
            Some(file_key) if !on_command_line(matches, option) => {
                file.error(format!("key \"{file_key}\": {message}"))
            }
            _ => Error::InvalidOption { option, message },
        },
        (other, _) => other,
    });
    errors.extend(problems);
    errors
}

/// The command line merged with `file`, normalized but not validated;
/// with the command line's matches and the file keys used.
pub(super) fn unchecked(
    args: &[OsString],
    file: Option<&ConfigFile>,
) -> Result<(StartOptions, ArgMatches, Keys), Error> {
    let (options, matches, keys, errors) = merged(args, file)?;
    Error::from_list(errors).map(|()| (options, matches, keys))
}

/// `unchecked`, with the file keys that could not be used as errors
/// beside the options made of the rest.
pub(super) fn merged(
    args: &[OsString],
    file: Option<&ConfigFile>,
) -> Result<(StartOptions, ArgMatches, Keys, Vec<Error>), Error> {
    let (matches, first) = parse(args)?;
    let Some(file) = file else {
        let mut options = first;
        phppm::normalize(&mut options);
        return Ok((options, matches, Keys::new(), Vec::new()));
    };
    let (mut merged, keys, errors) = file.to_args(&matches);
    merged.extend(args.iter().cloned());
    let merged_matches = command("ppm start")
        .try_get_matches_from(&merged)
        .map_err(|e| file.error(clap_message(&e)))?;
    let mut options = StartOptions::from_arg_matches(&merged_matches)
        .map_err(|e| file.error(clap_message(&e)))?;
    phppm::normalize(&mut options);
    Ok((options, matches, keys, errors))
}

/// Whether the command line gave the option with long name `long`.
pub(super) fn on_command_line(matches: &ArgMatches, long: &str) -> bool {
    let command = command("ppm");
    let id = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .map(|a| a.get_id().clone());
    id.is_some_and(|id| matches.value_source(id.as_str()) == Some(ValueSource::CommandLine))
}

/// clap's error text without its usage footer.
pub(super) fn clap_message(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    first.trim_start_matches("error: ").to_string()
}
